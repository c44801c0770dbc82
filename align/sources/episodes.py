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

Under rollout.max_staleness = k >= 1 whole episodes, environment calls included, are played in the
ahead thread (align/sources/ahead.py) while an earlier step trains; what they give (`Played`) is
plain JSON, so a checkpoint carries the next k steps' episodes and a resumed run trains the same ones.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from align.algos import GroupBatch
from align.envs import EnvError, GuardedEnv, environment_tasks, load_environment_class, make_environment
from align.rollout import SamplingSettings
from align.rollout.base import Completion
from align.rollout.multiturn import ACTION, PROMPT, Episode, run_episodes
from align.sources.ahead import GenerateAhead, staleness_metrics
from align.sources.base import Collected, RolloutSource
from align.sources.prompts import PromptStream


@dataclass
class Played:
    """One step's episodes on this rank's tasks, as the batch and the sample log need them; JSON-able,
    because under rollout.max_staleness >= 1 they are made ahead and checkpointed.

    tasks         per task: its index in the environment's task list (a task itself may not be JSON)
    rows          per task: the first observation and the task's text, for the sample log
    episodes      G per task, task-major
    observations  per episode: observations[t] = what action t saw (the guard's record)
    keys          per episode: (state_key, action_key) of each step, SALT's trajectory graph
    """

    tasks: list[int]
    rows: list[dict]
    episodes: list[Episode]
    observations: list[list[str]]
    keys: list[list[tuple]]

    def to_json(self) -> dict:
        return {"tasks": self.tasks, "rows": self.rows, "episodes": [asdict(e) for e in self.episodes],
                "observations": self.observations, "keys": [[key_to_json(k) for k in ks] for ks in self.keys]}

    @staticmethod
    def from_json(state: dict) -> Played:
        return Played(state["tasks"], state["rows"], [Episode(**e) for e in state["episodes"]], state["observations"],
                      [[key_from_json(k) for k in ks] for ks in state["keys"]])

    def group(self, p: int, g: int) -> slice:
        return slice(p * g, (p + 1) * g)


_KEY_TYPES = (str, int, float, bool, type(None))


def key_to_json(key):
    """A state or action key as JSON: tuples become lists (a key never holds a list: it is unhashable)."""
    if isinstance(key, tuple):
        return [key_to_json(k) for k in key]
    if not isinstance(key, _KEY_TYPES):
        raise EnvError(f"a state_key()/action_key() returned a {type(key).__name__}; rollout.max_staleness >= 1 "
                       "checkpoints the episodes played ahead, so return a str, int, float, bool, None or a tuple of them")
    return key


def key_from_json(value):
    return tuple(key_from_json(v) for v in value) if isinstance(value, list) else value


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
        self.tasks = environment_tasks(self.env_class, e.name, e.train_split, cfg.train.seed, e.options)
        # The stream draws task indices (the same order as drawing the tasks): they go into checkpoints.
        self.prompts = PromptStream(list(range(len(self.tasks))), cfg.train.seed, rank, world)
        self._eval_tasks = None
        k, n_prompts = cfg.rollout.max_staleness, cfg.train.batch_size // cfg.rollout.num_generations
        self.ahead = GenerateAhead(k, lambda: self.prompts.next_share(n_prompts), self.play, Played.from_json,
                                   rank, world) if k else None

    def state_dict(self) -> dict:
        state = self.prompts.state_dict()
        if self.ahead is not None:  # the episodes played for the next k steps, every rank's (a collective)
            state["ahead"] = self.ahead.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.prompts.load_state_dict(state)
        if self.ahead is not None:
            self.ahead.load_state_dict(state.get("ahead", []))

    def wait_for_generation(self) -> dict[str, float]:
        return self.ahead.wait() if self.ahead is not None else {}

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

    def play(self, step: int, tasks: list[int], positions: list[int] | None = None) -> Played:
        """G episodes on each of the tasks (indices) of `step`, from the policy the engine holds now.
        (`positions`, the places in the global draw that the ahead queue passes, are not needed here.)"""
        g = self.cfg.rollout.num_generations
        seed = (self.cfg.train.seed * 1_000_003 + step * 1009 + self.rank * 31) % (2**31)
        episodes, guards = self.run([self.tasks[i] for i in tasks], g, seed)
        played = Played(list(tasks), [{"prompt": guards[p * g].observations[0], "task": str(self.tasks[i])}
                                      for p, i in enumerate(tasks)],
                        episodes, [list(guard.observations) for guard in guards], [list(guard.keys) for guard in guards])
        if self.ahead is not None:  # a key that cannot be checkpointed fails now, not at the next save
            for keys in played.keys:
                for key in keys:
                    key_to_json(key)
        return played

    def _taken(self, step: int) -> tuple[Played, int]:
        """`step`'s episodes from the ahead queue, and how many of its groups were too stale.

        Under the schedule no episode is older than rollout.max_staleness; a group that is (a checkpoint
        of a run with a larger bound) is never trained on: it is counted and played again, now."""
        played, g = self.ahead.take(step), self.cfg.rollout.num_generations
        too_old = [p for p in range(len(played.tasks))
                   if any(self.engine.weight_version - v > self.ahead.k
                          for episode in played.episodes[played.group(p, g)] for v in episode.weight_versions)]
        if too_old:
            fresh = self.play(step, [played.tasks[p] for p in too_old])
            for j, p in enumerate(too_old):
                old, new = played.group(p, g), fresh.group(j, g)
                played.rows[p] = fresh.rows[j]
                played.episodes[old], played.observations[old], played.keys[old] = (
                    fresh.episodes[new], fresh.observations[new], fresh.keys[new])
        self.ahead.start(step)
        return played, len(too_old)

    def collect(self, step: int, n_prompts: int, timers: dict[str, float]) -> Collected:
        g = self.cfg.rollout.num_generations
        t0 = time.perf_counter()
        if self.ahead is not None:  # played while an earlier step trained
            played, stale = self._taken(step)
        else:
            played, stale = self.play(step, self.prompts.next_rows(n_prompts)), 0
        timers["generate"] += time.perf_counter() - t0
        episodes = played.episodes
        batch = episodes_to_batch(played, g, self.cfg.env.name)
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
        if self.ahead is not None:
            metrics |= staleness_metrics(self.engine.weight_version, [v for ep in episodes for v in ep.weight_versions],
                                         stale)
        # For the sample log: each episode as one "completion" whose text is its transcript.
        completions = [Completion(prompt_ids=batch.prompt_ids[r // g], token_ids=batch.completion_ids[r],
                                  logprobs=batch.engine_logprobs[r], text=transcript(observations, episode),
                                  finish_reason="done" if episode.done else "max_turns",
                                  weight_version=episode.weight_versions[0] if episode.weight_versions else 0)
                       for r, (observations, episode) in enumerate(zip(played.observations, episodes))]
        return Collected(batch, metrics, played.rows, completions)

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


def transcript(observations: list[str], episode: Episode) -> str:
    """A short text of one episode for the samples log: action -> observation, turn by turn."""
    turns = [f"{a.strip()!r} -> {o}" for a, o in zip(episode.actions, observations[1:])]
    return " | ".join(turns)[-400:]


def episodes_to_batch(played: Played, g: int, env_name: str) -> GroupBatch:
    """P*G episodes (task-major) -> a GroupBatch with action-only token mask, step ids and steps."""
    prompt_ids, completion_ids, token_mask, step_ids, engine_logprobs, steps = [], [], [], [], [], []
    episodes = played.episodes
    for r, (episode, observations, keys) in enumerate(zip(episodes, played.observations, played.keys)):
        n_prompt = episode.labels.index(ACTION) if ACTION in episode.labels else len(episode.labels)
        if any(label != PROMPT for label in episode.labels[:n_prompt]):
            raise EnvError(f"env {env_name}: episode {r} has observation tokens before the first action")
        prompt = episode.token_ids[:n_prompt]
        if r % g == 0:
            prompt_ids.append(prompt)
        elif prompt != prompt_ids[-1]:
            raise EnvError(f"env {env_name}: reset(task) gave different first observations for the same task "
                           f"({played.observations[r - r % g][0][:60]!r} vs {observations[0][:60]!r}); "
                           "reset must be deterministic for a task (G episodes of a task form one group)")
        labels = episode.labels[n_prompt:]
        completion_ids.append(episode.token_ids[n_prompt:])
        token_mask.append([int(label == ACTION) for label in labels])
        step_ids.append([s - 1 if label == ACTION else -1 for s, label in zip(episode.steps[n_prompt:], labels)])
        engine_logprobs.append([lp if label == ACTION else 0.0 for lp, label in zip(episode.logprobs[n_prompt:], labels)])
        if len(keys) != len(episode.actions):
            raise EnvError(f"env {env_name}: episode {r} has {len(episode.actions)} actions but {len(keys)} steps")
        steps.append(list(keys))
    rewards = torch.tensor([sum(ep.rewards) for ep in episodes], dtype=torch.float32).view(-1, g)
    return GroupBatch(prompt_ids=prompt_ids, completion_ids=completion_ids, rewards=rewards, token_mask=token_mask,
                      step_ids=step_ids, steps=steps, engine_logprobs=engine_logprobs)
