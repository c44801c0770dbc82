"""rollout.source=generate: G completions per prompt sampled by the engine from the current policy,
scored by the algorithm; DAPO's overlong penalty and dynamic sampling."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from types import SimpleNamespace

import torch

from align.algorithms.base import Scores
from align.algos import GroupBatch
from align.rollout import Completion, SamplingSettings
from align.runtime.seeds import derived_seed
from align.sources.ahead import GenerateAhead, staleness_metrics
from align.sources.base import Collected, RolloutSource, gathered
from align.sources.prompts import PromptStream, check_all_prompt_lengths, check_prompt_lengths, encode_prompt
from align.sources.shaping import informative_groups, overlong_penalty
from rewards.context import model_rewards, reward_functions_of


def encode_answer(tokenizer, text: str) -> list[int]:
    """Token ids of a reference answer as the policy would produce it: the text, then EOS."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def first_round_prompts(loss, n_prompts: int) -> int:
    """Prompts (over all ranks) drawn by a step's first generation round: with dynamic sampling,
    loss.dynamic_sampling_oversample times the step's, so that the informative groups it keeps more
    often fill the batch without a refill round. Under rollout.max_staleness >= 1 the first round is
    the one generated ahead, beside training; refill rounds run in the step, with the trainer waiting."""
    return math.ceil(loss.dynamic_sampling_oversample * n_prompts) if loss.dynamic_sampling else n_prompts


@dataclass
class Generated:
    """Round 0 of one step, made ahead: this rank's rows, their places in the global draw, and G completions each."""

    rows: list[dict]
    positions: list[int]
    groups: list[list[Completion]]

    def to_json(self) -> dict:
        return {"rows": self.rows, "positions": self.positions, "groups": [[asdict(c) for c in g] for g in self.groups]}

    @staticmethod
    def from_json(state: dict) -> Generated:
        return Generated(state["rows"], state["positions"], [[Completion(**c) for c in g] for g in state["groups"]])


@dataclass
class _Drawn:
    """One generated and scored prompt group, with its place in the global draw."""

    round: int
    position: int  # place in the round's global draw
    row: dict
    completions: list  # G `Completion`s
    rewards: torch.Tensor  # [G] after shaping
    valid: torch.Tensor  # [G]
    components: dict[str, torch.Tensor]  # name -> [G]
    informative: bool  # rewards not all equal (dynamic sampling keeps these)


class GenerationSource(RolloutSource):
    context: int | None = None  # the engine's context length (set_context)
    """Single-turn generation: this rank's prompts -> engine.generate(n=G) -> algorithm.score."""

    uses_engine = True

    def __init__(self, cfg, algorithm, engine, tokenizer, dataset, accelerator):
        self.cfg, self.algo, self.engine, self.tokenizer, self.acc = cfg, algorithm, engine, tokenizer, accelerator
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.answer_column = getattr(algorithm, "reference_column", None) if algorithm.needs.reference_answer else None
        if self.answer_column and self.answer_column not in dataset.column_names:
            from align.data import DatasetSourceError

            raise DatasetSourceError(
                f"algo={algorithm.name} needs a reference-answer column {self.answer_column!r}; data.source="
                f"{cfg.data.source!r} has {', '.join(dataset.column_names)}; set {cfg.algo}.reference_column=<one of them>"
            )
        self.prompts = PromptStream(dataset, cfg.train.seed, self.rank, self.world)
        k, n_prompts = cfg.rollout.max_staleness, cfg.train.batch_size // cfg.rollout.num_generations
        first = first_round_prompts(cfg.loss, n_prompts)
        self.ahead = GenerateAhead(k, lambda: self.prompts.next_share(first), self._round_zero, Generated.from_json,
                                   self.rank, self.world) if k else None

    def set_context(self, tokens: int | None) -> None:
        self.context = tokens  # prompt + max_tokens must fit
        if tokens is not None:  # every row now, before step 1, rather than hours in when a long one is drawn
            check_all_prompt_lengths(self.tokenizer, self.prompts.dataset, self.cfg.rollout.max_tokens, tokens)

    def state_dict(self) -> dict:
        state = self.prompts.state_dict()
        if self.ahead is not None:  # the batches generated for the next k steps, every rank's (a collective)
            state["ahead"] = self.ahead.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.prompts.load_state_dict(state)
        if self.ahead is not None:
            self.ahead.load_state_dict(state.get("ahead", []))

    def wait_for_generation(self) -> dict[str, float]:
        return self.ahead.wait() if self.ahead is not None else {}

    def _round_zero(self, step: int, rows: list[dict], positions: list[int]) -> Generated:
        """What the ahead thread makes for `step`: its first round, G completions per row."""
        return Generated(rows, positions, self._generate(step, rows, positions, self.cfg.rollout.num_generations, 0)
                         if rows else [])

    def _generate(self, step: int, rows: list[dict], positions: list[int], g: int, round_: int):
        """G completions for each of this rank's `rows`; `positions` are their places in the round's global draw.

        Seeds are hashes (runtime/seeds.py): no two requests of a run share a random stream, whatever
        the rank, refill round or step.
        """
        r, seed = self.cfg.rollout, self.cfg.train.seed
        prompt_ids = [encode_prompt(self.tokenizer, row["prompt"]) for row in rows]
        if self.context is not None:  # an engine would fail mid-run or silently truncate
            check_prompt_lengths(prompt_ids, rows, r.max_tokens, self.context)
        sampling = SamplingSettings(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                                    top_k=r.top_k, stop=list(r.stop), seed=derived_seed(seed, step, round_, self.rank))
        if not r.seed_per_prompt:
            return self.engine.generate(prompt_ids, g, sampling)
        # Each prompt seeded by its global position: the same completions on any number of processes.
        return [self.engine.generate([ids], g, replace(sampling, seed=derived_seed(seed, step, round_, -1, pos)))[0]
                for ids, pos in zip(prompt_ids, positions)]

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
        """Generate and score this rank's share of the step's `n_prompts` prompts.

        With dynamic sampling (DAPO), groups whose rewards are all equal carry no policy gradient:
        they are dropped and more prompts are drawn, for up to `dynamic_sampling_max_rounds` rounds;
        if that is not enough, dropped groups fill the rest so the batch keeps its size. Refills are
        decided over the GLOBAL batch (every rank draws its share of the same global shortfall) and
        the kept groups are then dealt out in global draw order, so every rank walks the same prompt
        stream and the batch does not depend on the number of processes.
        """
        lc, g = self.cfg.loss, self.cfg.rollout.num_generations
        rounds = lc.dynamic_sampling_max_rounds if lc.dynamic_sampling else 1
        drawn: list[_Drawn] = []
        need, generated_tokens = first_round_prompts(lc, n_prompts), 0
        logged: dict[str, list[float]] = defaultdict(list)  # what reward functions sent via log_metric
        stale = 0
        for round_ in range(rounds):
            refills = round_
            t0 = time.perf_counter()
            if round_ == 0 and self.ahead is not None:  # generated while an earlier step trained
                rows, positions, groups, stale = self._taken(step)
            else:
                rows, positions = self.prompts.next_share(need)
                groups = self._generate(step, rows, positions, g, round_) if rows else []
            timers["generate"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if rows:
                flat, scores = self._score(step, rows, groups, g)
                generated_tokens += sum(len(c.token_ids) for c in flat)
                lengths = torch.tensor([len(c.token_ids) for c in flat], dtype=torch.float32).view(-1, g)
                rewards = scores.rewards + overlong_penalty(lengths, self.cfg.rollout.max_tokens, lc.overlong_buffer,
                                                            lc.overlong_penalty)
                informative = informative_groups(rewards, scores.valid)
                for key, value in scores.logged.items():
                    logged[key].append(value)
                for i, row in enumerate(rows):
                    components = {name: values[i] for name, values in scores.components.items()}
                    drawn.append(_Drawn(round_, positions[i], row, groups[i], rewards[i], scores.valid[i], components,
                                        bool(informative[i])))
            else:  # other ranks score this round: model rewards may run collectives (rewards/context.py)
                for reward in model_rewards(reward_functions_of(self.algo)):
                    reward.idle()
            timers["reward"] += time.perf_counter() - t0
            if not lc.dynamic_sampling:
                break
            kept = self._sum_over_ranks(sum(d.informative for d in drawn))
            if kept >= n_prompts:
                break
            need = n_prompts - kept
        total = self._sum_over_ranks(len(drawn))
        zero_std = total - self._sum_over_ranks(sum(d.informative for d in drawn))
        if lc.dynamic_sampling:
            drawn = self._deal_kept_groups(drawn, n_prompts)
        flat = [c for d in drawn for c in d.completions]
        lengths = torch.tensor([len(c.token_ids) for c in flat], dtype=torch.float32)
        # Reward statistics of the batch that is trained on (not of dropped groups).
        kept_scores = Scores(torch.stack([d.rewards for d in drawn]), torch.stack([d.valid for d in drawn]),
                             {name: torch.stack([d.components[name] for d in drawn]) for name in drawn[0].components})
        metrics = self.algo.batch_metrics(kept_scores)
        metrics |= {key: sum(values) / len(values) for key, values in logged.items()}
        metrics |= {
            "zero_std_frac": zero_std / max(total, 1),
            "completion_len/mean": lengths.mean().item(),
            "completion_len/max": lengths.max().item(),
            "truncated_frac": sum(c.finish_reason == "length" for c in flat) / len(flat),
            "tokens_per_s/generate": generated_tokens / max(timers["generate"], 1e-9),
            "weight_version": float(flat[0].weight_version),
        }
        if lc.dynamic_sampling:  # rounds after the first: generated in the step, also under max_staleness >= 1
            metrics["rollout/refill_rounds"] = float(refills)
        if self.ahead is not None:
            metrics |= staleness_metrics(self.engine.weight_version, [c.weight_version for c in flat], stale)
        batch = GroupBatch(
            prompt_ids=[d.completions[0].prompt_ids for d in drawn],
            completion_ids=[c.token_ids for c in flat],
            rewards=kept_scores.rewards, valid=kept_scores.valid,
            truncated=torch.tensor([c.finish_reason == "length" for c in flat]).view(-1, g),
            engine_logprobs=[c.logprobs for c in flat],
            answer_ids=[encode_answer(self.tokenizer, d.row[self.answer_column]) for d in drawn] if self.answer_column else None,
            components=kept_scores.components,
        )
        return Collected(batch, metrics, [d.row for d in drawn], flat)

    def _taken(self, step: int):
        """Round 0 of `step` from the ahead queue: (rows, positions, groups, groups dropped as too stale).

        Under the schedule no group is ever older than rollout.max_staleness; one that is (a checkpoint
        of another run's queue) is never trained on: it is counted and generated again, now."""
        ready = self.ahead.take(step)
        rows, positions, groups = ready.rows, ready.positions, ready.groups
        too_old = [i for i, group in enumerate(groups)
                   if self.engine.weight_version - group[0].weight_version > self.ahead.k]
        if too_old:
            fresh = self._generate(step, [rows[i] for i in too_old], [positions[i] for i in too_old],
                                   self.cfg.rollout.num_generations, 0)
            groups = list(groups)
            for i, group in zip(too_old, fresh):
                groups[i] = group
        self.ahead.start(step)
        return rows, positions, groups, len(too_old)

    def _sum_over_ranks(self, value: int) -> int:
        if self.world == 1:
            return value
        return int(self.acc.reduce(torch.tensor(value, device=self.acc.device), "sum").item())

    def _deal_kept_groups(self, drawn: list[_Drawn], n_prompts: int) -> list[_Drawn]:
        """The step batch: the first `n_prompts` informative groups in global draw order (then dropped
        ones, if rounds ran out), and this rank's contiguous share of it."""
        ordered = sorted(gathered(self.world, drawn), key=lambda d: (d.round, d.position))
        batch = ([d for d in ordered if d.informative] + [d for d in ordered if not d.informative])[:n_prompts]
        local = n_prompts // self.world
        return batch[self.rank * local : (self.rank + 1) * local]
