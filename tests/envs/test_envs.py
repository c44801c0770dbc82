"""The environment API: loading a user class from a file, the guard's one-line errors (raises,
malformed output, hangs), episodes capped at max_turns, and the built-in grid task's rules."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from align.envs import EnvError, GuardedEnv, environment_tasks, load_environment_class
from align.envs.grid import GridEnv, all_tasks
from align.rollout import SamplingSettings
from align.rollout.base import Completion
from align.rollout.multiturn import run_episodes

FILE = Path(__file__).with_name("envs_for_tests.py")


class ScriptedEngine:
    """Answers every prompt with the same action text (no model): the episode logic alone is tested."""

    def __init__(self, text: str = "n"):
        self.text, self.calls = text, 0

    def generate(self, prompts, n, sampling):
        self.calls += 1
        return [[Completion(list(p), [ord(c) for c in self.text], [-0.5] * len(self.text), self.text, "stop", 0)]
                for p in prompts for _ in range(n)]


class CharTokenizer:
    """Just enough of a tokenizer for run_episodes with an explicit observation formatter."""

    eos_token_id = 0
    chat_template = "x"

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return "".join(m["content"] for m in messages)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def episodes_of(cls_name: str, max_turns: int = 3, timeout_s: float = 30.0, text: str = "a"):
    cls = load_environment_class(f"{FILE}:{cls_name}")
    guards = [GuardedEnv(cls(), "task0", cls_name, timeout_s)]
    format_observation = lambda obs, eos: [ord(c) for c in obs]  # noqa: E731
    return run_episodes(ScriptedEngine(text), CharTokenizer(), guards, SamplingSettings(max_tokens=2), max_turns,
                        format_observation=format_observation), guards


def test_user_env_class_from_a_file_runs_episodes_with_keys():
    cls = load_environment_class(f"{FILE}:Echo")
    assert cls.__name__ == "Echo" and environment_tasks(cls, "x", "train", 0, {})[0] == "task0"
    episodes, guards = episodes_of("Echo", text="  Aa ")
    assert len(episodes[0].actions) == 2 and episodes[0].done and episodes[0].rewards == [0.2, 0.2]  # one lower-case vowel in 5 characters
    # default keys: normalised observation (state) and normalised action text
    assert guards[0].keys == [("start task0", "aa"), ("turn 1", "aa")]


@pytest.mark.parametrize("cls_name, message", [
    ("Raises", r"env Raises: step\(\) \(task 'task0', turn 1\) raised KeyError: 'door'"),
    ("TwoTuple", r"step\(\) .* must return \(observation: str, reward: float, done: bool\), got tuple \('obs', 1.0\)"),
    ("NoneReward", r"returned reward None; it must be a finite number"),
    ("NanReward", r"returned reward nan; it must be a finite number"),
    ("BytesObservation", r"returned an observation of type bytes; it must be str"),
])
def test_bad_environment_is_a_one_line_error_naming_the_call(cls_name, message):
    with pytest.raises(EnvError, match=message) as err:
        episodes_of(cls_name)
    assert "\n" not in str(err.value)


def test_env_that_never_ends_stops_at_max_turns():
    cls = load_environment_class(f"{FILE}:Endless")
    cls.calls = 0
    episodes, guards = episodes_of("Endless", max_turns=4)
    assert len(episodes[0].actions) == 4 and not episodes[0].done and cls.calls == 4
    assert len(guards[0].keys) == 4


def test_env_step_that_hangs_is_an_error_not_a_hang():
    t0 = time.monotonic()
    with pytest.raises(EnvError, match=r"env Hangs: step\(\) .* did not return within env.step_timeout_s=0.5s"):
        episodes_of("Hangs", timeout_s=0.5)
    assert time.monotonic() - t0 < 10


def test_loader_errors_name_the_fix():
    with pytest.raises(EnvError, match="unknown env.name='gird': did you mean grid\\?"):
        load_environment_class("gird")
    with pytest.raises(EnvError, match="NoStep has no step\\(\\) method"):
        load_environment_class(f"{FILE}:NoStep")
    with pytest.raises(EnvError, match="does not exist"):
        load_environment_class("nowhere/env.py:Env")


def test_grid_rules_goal_pit_wall_and_invalid_answers():
    env = GridEnv()
    task = {"start": [0, 0], "goal": [0, 2], "pit": [1, 1]}
    assert env.reset(task) == "goal 2e pit 1s 1e"  # offsets from the agent, in moves
    assert env.step("n") == ("goal 2e pit 1s 1e", 0.0, False)  # a wall: stays
    assert env.step("hello") == ("goal 2e pit 1s 1e", 0.0, False)  # unreadable: a wasted turn
    assert env.action_key("hello") == ("<invalid>", "hello") and env.action_key(" E ") == "e"
    assert env.expert_moves() == ["e"]
    assert env.step("e") == ("goal 1e pit 1s", 0.0, False)
    assert env.step("e") == ("goal here pit 1s 1w", 1.0, True)
    env.reset(task)
    env.step("s")
    assert env.step("e") == ("goal 1n 1e pit here", 0.0, True)  # the pit ends the episode


def test_grid_train_and_test_tasks_are_disjoint_and_cover_all():
    train, test = GridEnv.tasks("train"), GridEnv.tasks("test")
    key = lambda t: (tuple(t["start"]), tuple(t["goal"]), tuple(t["pit"]))  # noqa: E731
    assert not {key(t) for t in train} & {key(t) for t in test}
    assert len(train) + len(test) == len(all_tasks(4)) and len(test) > 100
    with pytest.raises(ValueError, match="splits 'train' and 'test'"):
        GridEnv.tasks("dev")


def test_env_options_reach_the_class_and_a_bad_one_is_named():
    from align.envs import make_environment

    cls = load_environment_class(f"{FILE}:Echo")
    env = make_environment(cls, {"turns": 1}, "Echo")
    env.reset("t")
    assert env.step("a")[2] is True  # env.options={turns: 1}: done after one action (default 2)
    with pytest.raises(EnvError, match=r"Echo\(\*\*env.options=\{'door': 1\}\) raised TypeError"):
        make_environment(cls, {"door": 1}, "Echo")


def test_the_large_grid_recipes_differ_only_in_the_advantage_and_match_their_warm_start():
    # SALT's harder setting is a comparison: the two recipes may differ in the algorithm alone, and the
    # warm start must have walked the room they train in (its size and turn budget).
    from dataclasses import asdict

    from align.algorithms import load_config
    from align.demo.warm_start_grid import LARGE_GRID

    salt, grpo = (asdict(load_config([f"recipe={name}"])) for name in ("salt_grid_large", "grpo_grid_large"))
    differing = {key for key in salt.keys() | grpo.keys() if salt.get(key) != grpo.get(key)}
    assert differing <= {"algo", "salt", "recipe"}, differing
    assert salt["env"]["options"]["size"] == LARGE_GRID["size"] == 6 and salt["env"]["max_turns"] <= LARGE_GRID["max_turns"]
    assert salt["model"]["name"] == "tiny-grid-large" and salt["env"]["eval_tasks"] >= 256
    assert len(GridEnv.tasks("test", size=LARGE_GRID["size"])) >= 4 * salt["env"]["eval_tasks"]
