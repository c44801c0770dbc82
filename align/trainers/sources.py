"""Rollout sources: where a step's `GroupBatch` comes from. The loop calls one method,

    collect(step, n_prompts, timers) -> Collected     this rank's share of the step's n_prompts groups

and never knows which source it talks to. Two are built in:

- `GenerationSource` (rollout.source=generate): G completions per prompt sampled by the engine from
  the current policy, scored by the algorithm; DAPO's overlong penalty and dynamic sampling.
- `OfflineSource` (rollout.source=offline): fixed (prompt, completion, reward) rows from a file
  (align/data/offline.py); no engine, no generation, no weight sync.

An episode source for agents (SALT) plugs in here too: it runs environments through
`align.rollout.multiturn`, puts each episode's policy tokens in `completion_ids` with
`token_mask` = 1 on action tokens only and `step_ids` = the step of each token, and the loop
needs nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Protocol

import torch

from align.algos import GroupBatch
from align.data.offline import group_offline_rows
from align.rollout import SamplingSettings
from align.trainers.algorithm import Scores
from align.trainers.prompts import PromptStream, encode_prompt
from align.trainers.shaping import informative_groups, overlong_penalty


@dataclass
class Collected:
    """What a source returns: the batch, this rank's rollout metrics, a few samples to log."""

    batch: GroupBatch
    metrics: dict[str, float]
    samples: list[dict]


class RolloutSource(Protocol):
    uses_engine: bool  # False: the loop builds no engine for training and never syncs weights

    def collect(self, step: int, n_prompts: int, timers: dict[str, float]) -> Collected: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def encode_answer(tokenizer, text: str) -> list[int]:
    """Token ids of a reference answer as the policy would produce it: the text, then EOS."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


class GenerationSource:
    """Single-turn generation: this rank's prompts -> engine.generate(n=G) -> algorithm.score."""

    uses_engine = True

    def __init__(self, cfg, algorithm, engine, tokenizer, dataset, rank: int, world: int):
        self.cfg, self.algo, self.engine, self.tokenizer = cfg, algorithm, engine, tokenizer
        self.rank, self.world = rank, world
        self.answer_column = getattr(algorithm, "reference_column", None) if algorithm.needs.reference_answer else None
        if self.answer_column and self.answer_column not in dataset.column_names:
            from align.data import DatasetSourceError

            raise DatasetSourceError(
                f"algo={algorithm.name} needs a reference-answer column {self.answer_column!r}; data.source="
                f"{cfg.data.source!r} has {', '.join(dataset.column_names)}; set {cfg.algo}.reference_column=<one of them>"
            )
        self.prompts = PromptStream(dataset, cfg.train.seed, rank, world)

    def state_dict(self) -> dict:
        return self.prompts.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.prompts.load_state_dict(state)

    def _generate(self, step: int, rows: list[dict], g: int, round_: int):
        r = self.cfg.rollout
        prompt_ids = [encode_prompt(self.tokenizer, row["prompt"]) for row in rows]
        seed = (self.cfg.train.seed * 1_000_003 + step * 1009 + self.rank * 31 + round_) % (2**31)
        sampling = SamplingSettings(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                                    top_k=r.top_k, stop=list(r.stop), seed=seed)
        if not r.seed_per_prompt:
            return self.engine.generate(prompt_ids, g, sampling)
        # rows are this rank's slice of the round's global draw (PromptStream.next_rows), so
        # rank * len(rows) + i is prompt i's global position: seeds that ignore the rank split.
        first = self.rank * len(rows)
        base = (self.cfg.train.seed * 1_000_003 + step * 1009 + round_ * 7919) % (2**31)
        from dataclasses import replace

        return [self.engine.generate([ids], g, replace(sampling, seed=(base + (first + i) * 104_729) % (2**31)))[0]
                for i, ids in enumerate(prompt_ids)]

    def _score(self, step: int, rows: list[dict], groups, g: int):
        flat = [c for group in groups for c in group]
        prompts = [row["prompt"] for row in rows for _ in range(g)]
        chat = isinstance(rows[0]["prompt"], list)
        completions = [[{"role": "assistant", "content": c.text}] if chat else c.text for c in flat]
        columns = {k: [row[k] for row in rows for _ in range(g)] for k in rows[0] if k != "prompt"}
        scores = self.algo.score(prompts, completions, columns, [c.token_ids for c in flat], g,
                                 trainer_state=SimpleNamespace(global_step=step))
        return flat, scores

    def collect(self, step: int, n_prompts: int, timers: dict[str, float]) -> Collected:
        """Generate and score this rank's share of prompts.

        With dynamic sampling (DAPO), groups whose rewards are all equal carry no policy gradient:
        they are dropped and more prompts are generated, for up to `dynamic_sampling_max_rounds`
        rounds; if that is not enough, dropped groups fill the rest so the batch keeps its size.
        """
        lc, g = self.cfg.loss, self.cfg.rollout.num_generations
        local = n_prompts // self.world
        kept: list[tuple] = []  # (row, completions, rewards [G], valid [G], components {name: [G]}) per prompt
        dropped: list[tuple] = []
        zero_std = total = 0
        for round_ in range(lc.dynamic_sampling_max_rounds if lc.dynamic_sampling else 1):
            t0 = time.perf_counter()
            rows = self.prompts.next_rows((local - len(kept)) * self.world)
            groups = self._generate(step, rows, g, round_)
            timers["generate"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            flat, scores = self._score(step, rows, groups, g)
            lengths = torch.tensor([len(c.token_ids) for c in flat], dtype=torch.float32).view(-1, g)
            rewards = scores.rewards + overlong_penalty(lengths, self.cfg.rollout.max_tokens, lc.overlong_buffer, lc.overlong_penalty)
            timers["reward"] += time.perf_counter() - t0
            informative = informative_groups(rewards, scores.valid)
            zero_std += int((~informative).sum())
            total += len(rows)
            for i, row in enumerate(rows):
                keep = informative[i] or not lc.dynamic_sampling
                components = {name: values[i] for name, values in scores.components.items()}
                (kept if keep else dropped).append((row, groups[i], rewards[i], scores.valid[i], components))
            if len(kept) == local:
                break
        kept += dropped[: local - len(kept)]
        rows, groups, rewards, valid, components = zip(*kept)
        flat = [c for group in groups for c in group]
        lengths = torch.tensor([len(c.token_ids) for c in flat], dtype=torch.float32)
        # Reward statistics of the batch that is trained on (not of dropped groups).
        kept_scores = Scores(torch.stack(rewards), torch.stack(valid),
                             {name: torch.stack([c[name] for c in components]) for name in components[0]})
        metrics = self.algo.batch_metrics(kept_scores)
        metrics |= {
            "zero_std_frac": zero_std / max(total, 1),
            "completion_len/mean": lengths.mean().item(),
            "completion_len/max": lengths.max().item(),
            "truncated_frac": sum(c.finish_reason == "length" for c in flat) / len(flat),
            "tokens_per_s/generate": lengths.sum().item() / max(timers["generate"], 1e-9),
            "weight_version": float(flat[0].weight_version),
        }
        samples = [{"prompt": str(row["prompt"])[-200:], "completion": group[0].text, "reward": float(rew[0])}
                   for row, group, rew in zip(rows, groups, rewards)]
        batch = GroupBatch(
            prompt_ids=[group[0].prompt_ids for group in groups],
            completion_ids=[c.token_ids for c in flat],
            rewards=kept_scores.rewards, valid=kept_scores.valid,
            truncated=torch.tensor([c.finish_reason == "length" for c in flat]).view(-1, g),
            engine_logprobs=[c.logprobs for c in flat],
            answer_ids=[encode_answer(self.tokenizer, row[self.answer_column]) for row in rows] if self.answer_column else None,
            components=kept_scores.components,
        )
        return Collected(batch, metrics, samples)


class OfflineSource:
    """Fixed rows, grouped by prompt: every step takes the next n_prompts groups (seeded order, epochs).

    A group uses up to G = rollout.num_generations of its prompt's rows; a prompt with fewer rows is
    padded with invalid members (no loss, left out of group statistics); rows beyond G are unused.
    """

    uses_engine = False

    def __init__(self, cfg, algorithm, tokenizer, dataset, rank: int, world: int):
        self.cfg, self.algo, self.tokenizer = cfg, algorithm, tokenizer
        self.groups = group_offline_rows(dataset, f"offline data {cfg.data.source!r}")
        self.unused_rows = sum(max(len(group.rows) - cfg.rollout.num_generations, 0) for group in self.groups)
        self.prompts = PromptStream(self.groups, cfg.train.seed, rank, world)

    def state_dict(self) -> dict:
        return self.prompts.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.prompts.load_state_dict(state)

    def _completion_ids(self, group, i: int) -> list[int]:
        if group.completion_ids is not None:
            return group.completion_ids[i]
        return encode_answer(self.tokenizer, group.completions[i])

    def collect(self, step: int, n_prompts: int, timers: dict[str, float]) -> Collected:
        g = self.cfg.rollout.num_generations
        t0 = time.perf_counter()
        groups = self.prompts.next_rows(n_prompts)
        completion_ids, rewards, valid = [], torch.zeros(len(groups), g), torch.zeros(len(groups), g, dtype=torch.bool)
        for p, group in enumerate(groups):
            used = min(len(group.rows), g)
            completion_ids += [self._completion_ids(group, i) for i in range(used)] + [[]] * (g - used)
            rewards[p, :used] = torch.tensor(group.rewards[:used])
            valid[p, :used] = True
        batch = GroupBatch(prompt_ids=[encode_prompt(self.tokenizer, group.prompt) for group in groups],
                           completion_ids=completion_ids, rewards=rewards, valid=valid,
                           components={"offline_reward": torch.where(valid, rewards, torch.nan)})
        timers["read"] += time.perf_counter() - t0
        lengths = torch.tensor([float(len(ids)) for ids in completion_ids])[valid.flatten()]
        metrics = {
            "reward/offline_reward/mean": rewards[valid].mean().item(),
            "completion_len/mean": lengths.mean().item(),
            "completion_len/max": lengths.max().item(),
            "offline/members_mean": valid.sum(1).float().mean().item(),
        }
        samples = [{"prompt": str(group.prompt)[-200:], "completion": group.completions[0], "reward": group.rewards[0]}
                   for group in groups]
        return Collected(batch, metrics, samples)
