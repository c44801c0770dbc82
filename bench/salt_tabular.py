"""Does step-level credit help on the grid environment? A model-free check in seconds.

    .venv/bin/python bench/salt_tabular.py --seeds 0 1 2 --steps 300

A tabular softmax policy (one logit vector per observation) on `env=grid` training tasks, trained by
REINFORCE with either GRPO's per-episode advantages or SALT's per-step advantages (the same
`align.algos` functions the trainer uses: group_advantages -> salt_step_advantages), equal steps,
equal samples. Reports the sampled success rate on a fixed set of training tasks before and after.
It isolates the credit-assignment question from the language model (no tokens, no warm start).
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict

import torch

from align import algos
from align.envs.grid import MOVES, GridEnv

ACTIONS = list(MOVES)


def run_episode(policy, task, rng: random.Random, max_turns: int = 6):
    env = GridEnv()
    obs, steps, ret = env.reset(task), [], 0.0
    for _ in range(max_turns):
        probs = torch.softmax(policy[obs], 0).tolist()
        action = rng.choices(ACTIONS, probs)[0]
        steps.append((obs, action))
        obs, reward, done = env.step(action)
        ret += reward
        if done:
            break
    return steps, ret


def success(policy, tasks, rng, samples: int = 4) -> float:
    return sum(run_episode(policy, t, rng)[1] > 0 for t in tasks for _ in range(samples)) / (len(tasks) * samples)


def train(method: str, seed: int, steps: int, tasks: list, P: int, G: int, lr: float) -> tuple[float, float]:
    rng = random.Random(seed)
    policy = defaultdict(lambda: torch.zeros(len(ACTIONS)))
    probe = tasks[:64]
    before = success(policy, probe, random.Random(seed + 1))
    for _ in range(steps):
        batch = rng.sample(tasks, P)
        for task in batch:
            episodes = [run_episode(policy, task, rng) for _ in range(G)]
            rewards = torch.tensor([[ret for _, ret in episodes]])
            adv = algos.group_advantages(rewards, torch.ones_like(rewards, dtype=torch.bool))[0]
            traj = [s for s, _ in episodes]
            if method == "salt":
                step_adv = algos.salt_step_advantages(adv, traj)
            else:
                step_adv = [[float(adv[i])] * len(s) for i, s in enumerate(traj)]
            for s, values in zip(traj, step_adv):
                for (obs, action), a in zip(s, values):
                    grad = -torch.softmax(policy[obs], 0)
                    grad[ACTIONS.index(action)] += 1.0
                    policy[obs] = policy[obs] + lr * a * grad / (P * G)
    return before, success(policy, probe, random.Random(seed + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=64, help="training tasks (few, so that states recur)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--lr", type=float, default=20.0)
    args = parser.parse_args()
    tasks = GridEnv.tasks("train")[: args.tasks]
    print(f"{'seed':>4} {'method':>6} {'before':>7} {'after':>7}")
    for seed in args.seeds:
        for method in ("grpo", "salt"):
            before, after = train(method, seed, args.steps, tasks, args.prompts, args.group, args.lr)
            print(f"{seed:>4} {method:>6} {before:>7.3f} {after:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
