"""The episode source (rollout.source=episodes): multi-turn agent episodes into the training loop.

Each step takes this rank's share of tasks from the environment's task list, runs G episodes per
task with the current policy (`align.rollout.multiturn.run_episodes`, every environment call
guarded by `align.envs.GuardedEnv`) and returns them as a `GroupBatch`:

  prompt_ids        the first observation, rendered with the chat template (shared by the G episodes)
  completion_ids    everything after it: actions AND the observations between them, as one sequence
  token_mask        1 on action tokens only: observations carry no loss (and, in the loop, no
                    importance correction: their engine "log-prob" is not a policy probability)
  step_ids          the step of each action token (0-based), -1 on observation tokens
  steps             (state_key, action_key) per step, for SALT's trajectory graph
  rewards [P,G]     the episode return (sum of the environment's step rewards)

GRPO trains on the same batch with one advantage per episode; SALT with one per step.
"""

from __future__ import annotations

import time

import torch

from align.algos import GroupBatch
from align.envs import EnvError, GuardedEnv, environment_tasks, load_environment_class, make_environment
from align.rollout import SamplingSettings
from align.rollout.base import Completion
from align.rollout.multiturn import ACTION, PROMPT, run_episodes
from align.sources.base import Collected, RolloutSource
from align.sources.prompts import PromptStream


class EpisodeSource(RolloutSource):
    uses_engine = True

    def __init__(self, cfg, algorithm, engine, tokenizer, dataset, accelerator):
        self.cfg, self.algo, self.engine, self.tokenizer = cfg, algorithm, engine, tokenizer
        rank, world = accelerator.process_index, accelerator.num_processes
        self.rank, self.world = rank, world
        e = cfg.env
        self.env_class = load_environment_class(e.name)
        self.max_turns = e.max_turns or getattr(self.env_class, "max_turns", None)
        if not isinstance(self.max_turns, int) or self.max_turns < 1:
            raise EnvError(f"env.name={e.name!r} sets no max_turns; set env.max_turns=N (actions per episode)")
        tasks = environment_tasks(self.env_class, e.name, e.train_split, cfg.train.seed, e.options)
        self.prompts = PromptStream(tasks, cfg.train.seed, rank, world)
        self._eval_tasks = None

    def state_dict(self) -> dict:
        return self.prompts.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.prompts.load_state_dict(state)

    def _sampling(self, seed: int) -> SamplingSettings:
        r = self.cfg.rollout
        return SamplingSettings(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                stop=list(r.stop), seed=seed)

    def run(self, tasks: list, g: int, seed: int) -> tuple[list, list[GuardedEnv]]:
        """G guarded episodes per task, in one lockstep batch; returns (episodes, guards) task-major."""
        e = self.cfg.env
        guards = [GuardedEnv(make_environment(self.env_class, e.options, e.name), task, e.name, e.step_timeout_s)
                  for task in tasks for _ in range(g)]
        episodes = run_episodes(self.engine, self.tokenizer, guards, self._sampling(seed), self.max_turns,
                                system_prompt=e.system_prompt)
        return episodes, guards

    def collect(self, step: int, n_prompts: int, timers: dict[str, float]) -> Collected:
        g = self.cfg.rollout.num_generations
        t0 = time.perf_counter()
        tasks = self.prompts.next_rows(n_prompts)
        seed = (self.cfg.train.seed * 1_000_003 + step * 1009 + self.rank * 31) % (2**31)
        episodes, guards = self.run(tasks, g, seed)
        timers["generate"] += time.perf_counter() - t0
        batch = episodes_to_batch(episodes, guards, g, self.cfg.env.name)
        returns = batch.rewards.flatten()
        actions = sum(len(ep.actions) for ep in episodes)
        metrics = {
            "episode/return_mean": returns.mean().item(),
            "episode/success": (returns > 0).float().mean().item(),
            "episode/turns_mean": actions / len(episodes),
            "episode/unfinished_frac": sum(not ep.done for ep in episodes) / len(episodes),
            "completion_len/mean": float(sum(len(ids) for ids in batch.completion_ids)) / len(episodes),
            "completion_len/max": float(max(len(ids) for ids in batch.completion_ids)),
            "tokens_per_s/generate": sum(sum(ep.action_mask) for ep in episodes) / max(timers["generate"], 1e-9),
            "weight_version": float(episodes[0].weight_versions[0]) if episodes[0].weight_versions else 0.0,
        }
        # For the sample log: each episode as one "completion" whose text is its transcript.
        rows = [{"prompt": guards[p * g].observations[0], "task": str(task)} for p, task in enumerate(tasks)]
        completions = [Completion(prompt_ids=batch.prompt_ids[r // g], token_ids=batch.completion_ids[r],
                                  logprobs=batch.engine_logprobs[r], text=transcript(guard, episode),
                                  finish_reason="done" if episode.done else "max_turns",
                                  weight_version=episode.weight_versions[0] if episode.weight_versions else 0)
                       for r, (guard, episode) in enumerate(zip(guards, episodes))]
        return Collected(batch, metrics, rows, completions)

    def evaluate(self) -> dict[str, float]:
        """Success rate (return > 0) and mean return on held-out tasks, one sampled episode each."""
        e = self.cfg.env
        if self._eval_tasks is None:
            tasks = environment_tasks(self.env_class, e.name, e.eval_split, self.cfg.train.seed, e.options)
            self._eval_tasks = tasks[: e.eval_tasks]
        # Every rank runs the same held-out tasks (cheap, and the numbers need no reduction).
        episodes, _ = self.run(self._eval_tasks, 1, self.cfg.train.seed + 7)
        returns = torch.tensor([sum(ep.rewards) for ep in episodes])
        return {"eval/success": (returns > 0).float().mean().item(), "eval/return_mean": returns.mean().item(),
                "eval/turns_mean": sum(len(ep.actions) for ep in episodes) / len(episodes)}


def transcript(guard: GuardedEnv, episode) -> str:
    """A short text of one episode for the samples log: action -> observation, turn by turn."""
    turns = [f"{a.strip()!r} -> {o}" for a, o in zip(episode.actions, guard.observations[1:])]
    return " | ".join(turns)[-400:]


def episodes_to_batch(episodes, guards: list[GuardedEnv], g: int, env_name: str) -> GroupBatch:
    """P*G episodes (task-major) -> a GroupBatch with action-only token mask, step ids and steps."""
    prompt_ids, completion_ids, token_mask, step_ids, engine_logprobs, steps = [], [], [], [], [], []
    for r, (episode, guard) in enumerate(zip(episodes, guards)):
        n_prompt = episode.labels.index(ACTION) if ACTION in episode.labels else len(episode.labels)
        if any(label != PROMPT for label in episode.labels[:n_prompt]):
            raise EnvError(f"env {env_name}: episode {r} has observation tokens before the first action")
        prompt = episode.token_ids[:n_prompt]
        if r % g == 0:
            prompt_ids.append(prompt)
        elif prompt != prompt_ids[-1]:
            raise EnvError(f"env {env_name}: reset(task) gave different first observations for the same task "
                           f"({guards[r - r % g].observations[0][:60]!r} vs {guard.observations[0][:60]!r}); "
                           "reset must be deterministic for a task (G episodes of a task form one group)")
        labels = episode.labels[n_prompt:]
        completion_ids.append(episode.token_ids[n_prompt:])
        token_mask.append([int(label == ACTION) for label in labels])
        step_ids.append([s - 1 if label == ACTION else -1 for s, label in zip(episode.steps[n_prompt:], labels)])
        engine_logprobs.append([lp if label == ACTION else 0.0 for lp, label in zip(episode.logprobs[n_prompt:], labels)])
        if len(guard.keys) != len(episode.actions):
            raise EnvError(f"env {env_name}: episode {r} has {len(episode.actions)} actions but {len(guard.keys)} steps")
        steps.append(list(guard.keys))
    rewards = torch.tensor([sum(ep.rewards) for ep in episodes], dtype=torch.float32).view(-1, g)
    return GroupBatch(prompt_ids=prompt_ids, completion_ids=completion_ids, rewards=rewards, token_mask=token_mask,
                      step_ids=step_ids, steps=steps, engine_logprobs=engine_logprobs)
