"""`env=grid`: a small room with a goal and a pit, the built-in agent task (pure Python, no network).

The agent stands on a cell of an N x N grid (rows top to bottom, columns left to right) and moves
one cell per turn with n / s / e / w. Reaching the goal ends the episode with reward 1; stepping on
the pit ends it with 0; a move into a wall or an unreadable answer wastes the turn. The observation
is where the goal and the pit lie from the agent, in moves ("goal 2s 1e pit 1s"): within one task
that is a function of the cell, so trajectories that reach the same cell see the same text and
SALT merges their steps. Offsets rather than absolute cells ("at r0c1 goal r2c2"), because a
0.8M-parameter model never learnt to compare coordinates in a short warm start (its moves stayed
uniform, loss ln(4) per move), while naming a direction it reads in the observation it learns.

Why it suits step-level credit: every trajectory of a task shares its first states; most moves
only cost time (the turn budget leaves slack to wander and recover), and a few decide the outcome
(the step onto the pit, the last wasted turn). GRPO blames every step of a failed run equally.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque

MOVES = {"n": (-1, 0), "s": (1, 0), "e": (0, 1), "w": (0, -1)}
INVALID = "<invalid>"


def offset(frm: tuple[int, int], to: tuple[int, int]) -> str:
    """Where `to` lies from `frm`, in moves: "2s 1e", "1w", or "here"."""
    dr, dc = to[0] - frm[0], to[1] - frm[1]
    parts = ([f"{abs(dr)}{'s' if dr > 0 else 'n'}"] if dr else []) + ([f"{abs(dc)}{'e' if dc > 0 else 'w'}"] if dc else [])
    return " ".join(parts) or "here"


def parse_action(text: str) -> str | None:
    """The move an answer names: its first non-space character if that is n/s/e/w, else None."""
    stripped = text.strip().lower()
    return stripped[0] if stripped and stripped[0] in MOVES and (len(stripped) == 1 or not stripped[1].isalpha()) else None


def shortest_moves(size: int, start, goal, pit) -> dict[tuple[int, int], list[str]]:
    """For every cell that can reach the goal without the pit: the moves that start a shortest path."""
    dist = {tuple(goal): 0}
    queue = deque([tuple(goal)])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES.values():
            nxt = (r - dr, c - dc)
            if 0 <= nxt[0] < size and 0 <= nxt[1] < size and nxt != tuple(pit) and nxt not in dist:
                dist[nxt] = dist[(r, c)] + 1
                queue.append(nxt)
    best = {}
    for (r, c), d in dist.items():
        if d:
            best[(r, c)] = [m for m, (dr, dc) in MOVES.items() if dist.get((r + dr, c + dc), -1) == d - 1]
    return best


def all_tasks(size: int) -> list[dict]:
    """Every (start, goal, pit) with the goal 2..size cells away and reachable around the pit."""
    cells = [(r, c) for r in range(size) for c in range(size)]
    tasks = []
    for start in cells:
        for goal in cells:
            if not 2 <= abs(start[0] - goal[0]) + abs(start[1] - goal[1]) <= size:
                continue
            for pit in cells:
                if pit in (start, goal):
                    continue
                if start in shortest_moves(size, start, goal, pit):
                    tasks.append({"start": list(start), "goal": list(goal), "pit": list(pit)})
    return tasks


def _held_out(task: dict) -> bool:
    digest = hashlib.sha256(repr(sorted(task.items())).encode()).digest()
    return digest[0] % 5 == 0  # a fixed 20% of tasks never seen in training


class GridEnv:
    """One episode of the grid task (see the module doc). Options: size (default 4)."""

    max_turns = 6

    def __init__(self, size: int = 4):
        if size < 3:
            raise ValueError(f"env=grid size={size}: must be >= 3")
        self.size = size
        self.pos = self.goal = self.pit = None

    @classmethod
    def tasks(cls, split: str, seed: int = 0, size: int = 4) -> list[dict]:
        """"train" (80% of all tasks) or "test" (the other 20%, held out), in a seeded order."""
        if split not in ("train", "test"):
            raise ValueError(f"env=grid has splits 'train' and 'test', not {split!r}")
        chosen = [t for t in all_tasks(size) if _held_out(t) == (split == "test")]
        random.Random(seed).shuffle(chosen)
        return chosen

    def observe(self) -> str:
        return f"goal {offset(self.pos, self.goal)} pit {offset(self.pos, self.pit)}"

    def reset(self, task: dict) -> str:
        self.pos, self.goal, self.pit = tuple(task["start"]), tuple(task["goal"]), tuple(task["pit"])
        return self.observe()

    def step(self, action: str) -> tuple[str, float, bool]:
        move = parse_action(action)
        if move is not None:
            dr, dc = MOVES[move]
            r, c = self.pos[0] + dr, self.pos[1] + dc
            if 0 <= r < self.size and 0 <= c < self.size:
                self.pos = (r, c)
        if self.pos == self.goal:
            return self.observe(), 1.0, True
        if self.pos == self.pit:
            return self.observe(), 0.0, True
        return self.observe(), 0.0, False

    def state_key(self, observation: str) -> str:
        return observation  # the observation is exactly the state

    def action_key(self, action: str):
        move = parse_action(action)
        return move if move is not None else (INVALID, action.strip().lower())

    def expert_moves(self) -> list[str]:
        """The moves that start a shortest safe path from the current cell (for warm-start demos)."""
        return shortest_moves(self.size, self.pos, self.goal, self.pit).get(self.pos, [])
