"""Small user environments for the tests, loaded by file path like a user's own (env.name=FILE:Class)."""

import time


class Echo:
    """Two turns; the state is the turn number, the reward favours answers with many 'a's (varies by sample)."""

    max_turns = 3

    def __init__(self, turns: int = 2):
        self.turns, self.t = turns, 0

    @classmethod
    def tasks(cls, split, seed=0, turns=2):
        return [f"task{i}" for i in range(8)] if split == "train" else ["held0", "held1"]

    def reset(self, task):
        self.t = 0
        return f"start {task}"

    def step(self, action):
        self.t += 1
        reward = float(sum(c in "aeiou" for c in action)) / max(len(action), 1)
        return f"turn {self.t}", reward, self.t >= self.turns


class Raises(Echo):
    def step(self, action):
        raise KeyError("door")


class TwoTuple(Echo):
    def step(self, action):
        return "obs", 1.0


class NoneReward(Echo):
    def step(self, action):
        return "obs", None, False


class NanReward(Echo):
    def step(self, action):
        return "obs", float("nan"), False


class BytesObservation(Echo):
    def step(self, action):
        return b"obs", 0.0, False


class Endless(Echo):
    """Never says done: the episode must stop at max_turns."""

    calls = 0

    def step(self, action):
        Endless.calls += 1
        return "still going", 0.0, False


class Hangs(Echo):
    def step(self, action):
        time.sleep(60)
        return "late", 0.0, True


class NoStep:
    def reset(self, task):
        return "x"
