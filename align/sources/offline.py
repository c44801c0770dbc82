"""rollout.source=offline: fixed (prompt, completion, reward) rows from a file (align/data/offline.py);
no engine, no generation, no weight sync (docs/OFFLINE.md)."""

from __future__ import annotations

import time

import torch

from align.algos import GroupBatch
from align.data.offline import group_offline_rows
from align.rollout import Completion
from align.sources.base import Collected, RolloutSource
from align.sources.generate import encode_answer
from align.sources.prompts import PromptStream, encode_prompt


class OfflineSource(RolloutSource):
    """Fixed rows, grouped by prompt: every step takes the next n_prompts groups (seeded order, epochs).

    A group uses up to G = rollout.num_generations of its prompt's rows; a prompt with fewer rows is
    padded with invalid members (no loss, left out of group statistics); rows beyond G are unused.
    """

    uses_engine = False

    def __init__(self, cfg, algorithm, engine, tokenizer, dataset, accelerator):
        self.cfg, self.algo, self.tokenizer = cfg, algorithm, tokenizer  # the engine (if any) only evaluates
        self.groups = group_offline_rows(dataset, f"offline data {cfg.data.source!r}")
        self.unused_rows = sum(max(len(group.rows) - cfg.rollout.num_generations, 0) for group in self.groups)
        self.prompts = PromptStream(self.groups, cfg.train.seed, accelerator.process_index, accelerator.num_processes)

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
        completions = []  # for the sample log: the rows as completions (padding members have no text)
        for p, group in enumerate(groups):
            for i in range(g):
                text = group.completions[i] if i < len(group.rows) else ""
                completions.append(Completion(batch.prompt_ids[p], completion_ids[p * g + i], [], text,
                                              "offline" if i < len(group.rows) else "padding", 0))
        return Collected(batch, metrics, [{"prompt": group.prompt, **group.columns} for group in groups], completions)
