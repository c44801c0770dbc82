"""The training loop, written once. Every algorithm plugs in through `score`, `advantages`, `loss`.

One step, top to bottom (`Trainer.step`):
  prompts -> engine.generate (G completions each) -> algorithm.score (rewards [P, G])
  -> reward shaping (overlong, dynamic sampling) -> algorithm.advantages
  -> micro-batches by token budget -> logprobs (+ reference) -> algorithm.loss -> backward
  -> optimizer step (x updates_per_batch) -> engine.sync_from(model), verified by the probe
  -> metrics, samples, checkpoint.
Losses are additive over micro-batches and ranks: normalisers (token and sequence counts) are
those of the global step batch, so micro-batching and data parallelism never change the result.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from align import algos
from align.config import Config, config_to_yaml
from align.data.holdout import evaluation_rows, training_rows
from align.models import apply_lora, load_model, load_tokenizer, resolve_model_path
from align.rollout import SamplingSettings, make_engine
from align.trainers.batching import completion_logits, pad_sequences, token_budget_groups
from align.trainers.checkpoint import export_hf, find_checkpoint, load_checkpoint, save_checkpoint
from align.trainers.grpo import Scores
from align.trainers.distributed import (
    max_over_ranks,
    outside_zero3_init,
    prepare_reference_model,
    rollout_metrics_over_ranks,
    split_to_count,
    sync_named_tensors,
)
from align.trainers.logger import RunLogger
from align.trainers.precision import training_precision
from align.trainers.prompts import PromptStream, encode_prompt
from align.trainers.samples import group_samples
from align.trainers.seeds import derived_seed
from align.trainers.shaping import informative_groups, overlong_penalty
from rewards.context import RewardContext, bind_model_rewards, reward_functions_of


@dataclass
class StepConstants:
    """What the optimisation phase of one step shares: micro-batches, global normalisers, fixed logprobs."""

    groups: list[list[int]]  # micro-batches: rows of the step batch, the same count on every rank
    num_tokens: float  # loss tokens of the global batch (all ranks)
    num_seqs: float  # completions of the global batch
    ref: dict[int, torch.Tensor] = field(default_factory=dict)  # micro-batch -> reference logprobs [B, T]
    old: dict[int, torch.Tensor] = field(default_factory=dict)  # micro-batch -> pi_old logprobs [B, T] (when not the current forward)


def resolve_dtype(name: str) -> str:
    if name != "auto":
        return name
    return "bfloat16" if torch.cuda.is_available() else "float32"


class Trainer:
    def __init__(self, cfg: Config, accelerator, algorithm, run_dir: Path):
        from accelerate.utils import DistributedType, set_seed

        self.cfg, self.acc, self.algo, self.run_dir = cfg, accelerator, algorithm, run_dir
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        set_seed(cfg.train.seed)  # same init on every rank
        self.dtype = resolve_dtype(cfg.model.dtype)
        m = cfg.model
        self.model_path = resolve_model_path(m.name, m.cache_dir)
        self.tokenizer = load_tokenizer(self.model_path)
        # fp32 master weights + bf16 autocast for full fine-tuning (see trainers/precision.py)
        self.precision = training_precision(self.dtype, lora=cfg.lora.enabled,
                                            deepspeed=accelerator.distributed_type == DistributedType.DEEPSPEED)
        model = load_model(self.model_path, self.precision.weights, accelerator.device, m.gradient_checkpointing)
        if cfg.lora.enabled:
            model = apply_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, list(cfg.lora.target_modules))
        self.ref_model = None
        if cfg.loss.beta > 0:  # no reference model at all when the KL term is off
            self.ref_model = load_model(self.model_path, self.dtype, accelerator.device).eval().requires_grad_(False)
        t = cfg.train
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        scheduler = _make_scheduler(optimizer, t.lr_schedule, t.warmup_steps, t.steps * t.updates_per_batch)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        if self.ref_model is not None:  # under ZeRO-3 sharded like the trainer (after prepare fills the config)
            self.ref_model = prepare_reference_model(accelerator, self.ref_model)

        dataset = training_rows(cfg, warn=print if accelerator.is_main_process else lambda _: None)
        self.prompts = PromptStream(dataset, t.seed, self.rank, self.world)
        self._eval_dataset = None  # loaded on the first evaluation
        with outside_zero3_init(accelerator):  # the engine keeps a full copy of the weights
            self.engine = self._make_engine()
        # Reward models and judges load now, on this device, beside this engine (rewards/context.py).
        self.model_rewards = bind_model_rewards(reward_functions_of(self.algo), RewardContext(
            device=accelerator.device, dtype=self.dtype, accelerator=accelerator, policy_engine=self.engine,
            policy_tokenizer=self.tokenizer, make_engine=self._make_reward_engine, cache_dir=m.cache_dir))
        self.logger = RunLogger(run_dir, t.steps, is_main=accelerator.is_main_process,
                                tensorboard=cfg.log.tensorboard, console=cfg.log.console)
        self.start_step = 0
        if cfg.resume:
            self._resume(cfg.resume)

    # ----------------------------------------------------------------------------------- set-up
    def _make_engine(self, model_path: str | None = None, kind: str | None = None, max_model_len: int | None = None,
                     **overrides):
        r = self.cfg.rollout
        common = dict(dtype=self.dtype, seed=self.cfg.train.seed, probe_tolerance=r.probe_tolerance)
        hf = dict(device=str(self.acc.device))
        vllm = dict(
            max_model_len=max_model_len or self._max_model_len(), kv_cache_bytes=r.kv_cache_mb << 20,
            gpu_memory_utilization=r.gpu_memory_utilization, enable_sleep_mode=r.sleep_mode,
            tensor_parallel_size=r.tensor_parallel_size,
            # one colocated engine per rank (ENVIRONMENT.md: an engine on rank 0 alone hangs)
            distributed_executor_backend="external_launcher" if self.world > 1 else None,
        )
        kind = kind or r.engine
        specific = {"hf": hf, "vllm": vllm, "auto": {**hf, **vllm}}[kind]
        return make_engine(kind, model_path or self.model_path, **{**common, **specific, **overrides})

    def _make_reward_engine(self, model_path: str, max_model_len: int | None = None, **overrides):
        """A judge's engine: vLLM where the policy's engine is vLLM, transformers otherwise."""
        from align.rollout.hf_engine import HFEngine

        kind = "hf" if isinstance(self.engine, HFEngine) else "vllm"
        if kind == "hf":
            max_model_len = None  # transformers' generate has no preallocated context
        with outside_zero3_init(self.acc):
            return self._make_engine(model_path, kind, max_model_len, **overrides)

    def _max_model_len(self) -> int:
        return min(4096, getattr(self.acc.unwrap_model(self.model).config, "max_position_embeddings", 4096))

    def _resume(self, resume: str) -> None:
        path = find_checkpoint(self.run_dir, resume)
        if path is None:
            self.logger.print(f"resume={resume}: no checkpoint in {self.run_dir}, starting from step 0")
            return
        state = load_checkpoint(self.acc, path)
        self.start_step = state["step"]
        self.prompts.load_state_dict(state["prompts"])
        self._sync_engine(version=state["weight_version"])
        self.logger.print(f"resumed from {path} at step {self.start_step}")

    def _sync_engine(self, version: int | None = None):
        # Under ZeRO-3 every rank gathers module by module and runs the probe forward (collectives).
        return self.engine.sync_from(self.acc.unwrap_model(self.model), verify=self.cfg.rollout.verify_sync,
                                     version=version, named_tensors=sync_named_tensors(self.acc, self.model))

    # ------------------------------------------------------------------------------------- loop
    def train(self) -> None:
        cfg, log = self.cfg, self.cfg.log
        self.logger.print_config(config_to_yaml(cfg))
        self.logger.print(self.batch_arithmetic())
        if log.eval_every and self.start_step == 0:
            self.logger.log(0, self.evaluate())  # the starting point of every learning curve
        started = time.monotonic()
        for step in range(self.start_step, cfg.train.steps):
            metrics, samples = self.step(step)
            last = step + 1 == cfg.train.steps or self._out_of_time(started)
            if (step + 1) % log.every == 0 or last:
                self.logger.log(step + 1, metrics)
            if log.sample_every and (step + 1) % log.sample_every == 0:
                self.logger.log_samples(step + 1, samples[: log.num_samples])
            if log.eval_every and ((step + 1) % log.eval_every == 0 or last):
                self.logger.log(step + 1, self.evaluate())
            if (log.save_every and (step + 1) % log.save_every == 0) or last:
                self.save(step + 1)
            if last:
                break
        self.logger.close()

    def _out_of_time(self, started: float) -> bool:
        """train.max_minutes is a wall-clock budget; every rank must agree to stop at the same step."""
        if self.cfg.train.max_minutes is None:
            return False
        over = torch.tensor(float(time.monotonic() - started > 60 * self.cfg.train.max_minutes), device=self.acc.device)
        return bool(self.acc.reduce(over, reduction="max").item())

    def save(self, step: int) -> Path:
        state = {"step": step, "prompts": self.prompts.state_dict(), "weight_version": self.engine.weight_version}
        return save_checkpoint(self.acc, self.run_dir, step, state, keep_last=self.cfg.log.keep_last)

    def export(self, out_dir: Path) -> None:
        """A plain Hugging Face folder of the trained model (LoRA merged), loadable anywhere."""
        export_hf(self.acc, self.model, self.tokenizer, out_dir, merge_lora=True)

    def batch_arithmetic(self) -> str:
        c = self.cfg
        g, batch = c.rollout.num_generations, c.train.batch_size
        return (
            f"per optimizer step: {batch // g} prompts x {g} completions = {batch} completions "
            f"(<= {batch * c.rollout.max_tokens} completion tokens) on {self.world} process(es), "
            f"{batch // g // self.world} prompts each; {c.train.updates_per_batch} update(s) per rollout batch"
        )

    def step(self, step: int) -> tuple[dict[str, float], list[dict]]:
        cfg, timers = self.cfg, defaultdict(float)
        g = cfg.rollout.num_generations
        n_prompts = cfg.train.batch_size // g
        rollout = self._collect(step, n_prompts, g, timers)
        metrics = rollout_metrics_over_ranks(self.acc, rollout.metrics)

        # Per-step constants: micro-batches, reference logprobs, pi_old where it is needed.
        t0 = time.perf_counter()
        constants = self._constants(rollout)
        timers["logprob"] += time.perf_counter() - t0
        rewards = rollout.rewards
        if cfg.loss.kl_in_reward:  # verl's use_kl_in_reward: the KL penalty shapes rewards before advantages
            penalty = self._kl_reward_penalty(rollout, constants).view_as(rewards)
            rewards = rewards - penalty
            metrics["kl_in_reward/penalty"] = self.acc.reduce(penalty.mean().to(self.acc.device), "mean").item()

        # Advantages over the global batch: group statistics are per prompt, but `scale=batch`
        # needs every rank's rewards, so gather once and slice this rank's rows back.
        all_rewards = self.acc.gather(rewards.to(self.acc.device)).cpu()
        all_valid = self.acc.gather(rollout.valid.to(self.acc.device)).cpu().bool()
        adv_global = self.algo.advantages(all_rewards, all_valid)
        share = rewards.shape[0]
        adv = adv_global[self.rank * share : (self.rank + 1) * share].reshape(-1)
        metrics |= {"reward/mean": all_rewards.mean().item(), "reward/std": all_rewards.std().item() if all_rewards.numel() > 1 else 0.0,
                    "adv/abs_mean": adv_global.abs().mean().item()}

        t0 = time.perf_counter()
        metrics |= self._optimize(rollout, adv, constants)
        timers["train"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        report = self._sync_engine()
        timers["sync"] += time.perf_counter() - t0
        metrics |= {"sync/probe_diff": report.probe_diff, "sync/weight_version": report.weight_version}
        metrics |= {f"time/{k}": v for k, v in timers.items()}
        metrics["time/step"] = sum(timers.values())
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        samples = group_samples(self.tokenizer, rollout.rows, rollout.flat, rewards, adv.view_as(rewards),
                                rollout.components, cfg.log.num_samples)  # the rewards the advantages came from
        return metrics, samples

    # ------------------------------------------------------------------------------- rollouts
    def _generate(self, step: int, rows: list[dict], positions: list[int], g: int, round_: int):
        """G completions for each of this rank's `rows`; `positions` are their places in the round's global draw.

        Seeds are hashes (trainers/seeds.py): no two requests of a run share a random stream, whatever
        the rank, refill round or step.
        """
        r, seed = self.cfg.rollout, self.cfg.train.seed
        prompt_ids = [encode_prompt(self.tokenizer, row["prompt"]) for row in rows]
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

    def _collect(self, step: int, n_prompts: int, g: int, timers) -> SimpleNamespace:
        """Generate and score this rank's share of the step's `n_prompts` prompts.

        With dynamic sampling (DAPO), groups whose rewards are all equal carry no policy gradient:
        they are dropped and more prompts are drawn, for up to `dynamic_sampling_max_rounds` rounds;
        if that is not enough, dropped groups fill the rest so the batch keeps its size. Refills are
        decided over the GLOBAL batch (every rank draws its share of the same global shortfall) and
        the kept groups are then dealt out in global draw order, so every rank walks the same prompt
        stream and the batch does not depend on the number of processes.
        """
        lc = self.cfg.loss
        rounds = lc.dynamic_sampling_max_rounds if lc.dynamic_sampling else 1
        # (round, global position, row, completions, rewards [G], valid [G], components {name: [G]}, informative)
        entries: list[tuple] = []
        need, generated_tokens = n_prompts, 0
        logged: dict[str, list[float]] = defaultdict(list)  # what reward functions sent via log_metric
        for round_ in range(rounds):
            t0 = time.perf_counter()
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
                    entries.append((round_, positions[i], row, groups[i], rewards[i], scores.valid[i], components,
                                    bool(informative[i])))
            else:  # other ranks score this round: model rewards may run collectives (rewards/context.py)
                for reward in self.model_rewards:
                    reward.idle()
            timers["reward"] += time.perf_counter() - t0
            if not lc.dynamic_sampling:
                break
            kept = self._sum_over_ranks(sum(e[-1] for e in entries))
            if kept >= n_prompts:
                break
            need = n_prompts - kept
        drawn = self._sum_over_ranks(len(entries))
        zero_std = drawn - self._sum_over_ranks(sum(e[-1] for e in entries))
        if lc.dynamic_sampling:
            entries = self._deal_kept_groups(entries, n_prompts)
        _, _, rows, groups, rewards, valid, components, _ = zip(*entries)
        flat = [c for group in groups for c in group]
        lengths = torch.tensor([len(c.token_ids) for c in flat], dtype=torch.float32)
        # Reward statistics of the batch that is trained on (not of dropped groups).
        kept_scores = Scores(torch.stack(rewards), torch.stack(valid),
                             {name: torch.stack([c[name] for c in components]) for name in components[0]})
        metrics = self.algo.batch_metrics(kept_scores)
        metrics |= {key: sum(values) / len(values) for key, values in logged.items()}
        metrics |= {
            "zero_std_frac": zero_std / max(drawn, 1),
            "completion_len/mean": lengths.mean().item(),
            "completion_len/max": lengths.max().item(),
            "truncated_frac": sum(c.finish_reason == "length" for c in flat) / len(flat),
            "tokens_per_s/generate": generated_tokens / max(timers["generate"], 1e-9),
            "weight_version": float(flat[0].weight_version),
        }
        return SimpleNamespace(flat=flat, rewards=kept_scores.rewards, valid=kept_scores.valid,
                               metrics=metrics, rows=list(rows), components=kept_scores.components)

    def _sum_over_ranks(self, value: int) -> int:
        if self.world == 1:
            return value
        return int(self.acc.reduce(torch.tensor(value, device=self.acc.device), "sum").item())

    def _deal_kept_groups(self, entries: list[tuple], n_prompts: int) -> list[tuple]:
        """The step batch: the first `n_prompts` informative groups in global draw order (then dropped
        ones, if rounds ran out), and this rank's contiguous share of it."""
        if self.world > 1:
            from accelerate.utils import gather_object

            entries = gather_object(entries)
        ordered = sorted(entries, key=lambda e: (e[0], e[1]))
        batch = ([e for e in ordered if e[-1]] + [e for e in ordered if not e[-1]])[:n_prompts]
        local = n_prompts // self.world
        return batch[self.rank * local : (self.rank + 1) * local]

    # ------------------------------------------------------------------------------- training
    def _sequences(self, rollout, idx: list[int]):
        flat = rollout.flat
        return pad_sequences([flat[i].prompt_ids for i in idx], [flat[i].token_ids for i in idx], idx,
                             self.tokenizer.pad_token_id, self.acc.device)

    def _engine_logp(self, rollout, seqs) -> torch.Tensor:
        out = torch.zeros_like(seqs.completion_mask)
        for row, i in enumerate(seqs.index.tolist()):
            lp = rollout.flat[i].logprobs
            out[row, : len(lp)] = torch.tensor(lp, dtype=out.dtype)
        return out

    def _logp(self, model, seqs, with_entropy: bool = False):
        """Trainer logprobs [B, T] of the completion tokens (float32), and their entropy if asked.

        Of softmax(logits / T), the distribution the engine sampled from at temperature T: the ratio,
        the importance weights and the KL are then all of the sampling policy.
        """
        with self.precision.context(self.acc.device):
            logits = completion_logits(model, seqs)
        t = self.cfg.rollout.temperature
        if with_entropy:
            return algos.token_logprobs(logits, seqs.completion_ids, temperature=t, return_entropy=True)
        return algos.token_logprobs(logits, seqs.completion_ids, temperature=t), None

    def _loss_mask(self, rollout, seqs) -> torch.Tensor:
        mask = seqs.completion_mask
        if self.cfg.loss.mask_truncated:  # completions cut at max_tokens carry no loss
            keep = torch.tensor([rollout.flat[i].finish_reason != "length" for i in seqs.index.tolist()])
            mask = mask * keep.to(mask)[:, None]
        return mask

    def _constants(self, rollout) -> StepConstants:
        """Micro-batches (equal counts on every rank) and the logprobs that stay fixed during the step.

        Reference logprobs when beta > 0. pi_old from a no-grad pass when the batch is reused
        (mu > 1) or the KL goes into the reward; with mu = 1 otherwise, pi_old is the current policy
        and is taken from the gradient's own forward pass (saves a pass).
        """
        cfg = self.cfg
        flat = rollout.flat
        groups = token_budget_groups([(len(c.prompt_ids), len(c.token_ids)) for c in flat], cfg.train.micro_batch_tokens)
        # Same number of micro-batches on every rank: under ZeRO each forward/backward is a collective.
        groups = split_to_count(groups, max_over_ranks(self.acc, len(groups)))
        local_tokens = sum(len(c.token_ids) for c in flat if not (cfg.loss.mask_truncated and c.finish_reason == "length"))
        num_tokens = self.acc.reduce(torch.tensor(float(local_tokens), device=self.acc.device), reduction="sum").item()
        constants = StepConstants(groups=groups, num_tokens=num_tokens, num_seqs=float(len(flat) * self.world))
        need_old = cfg.train.updates_per_batch > 1 or cfg.loss.kl_in_reward
        with torch.no_grad():
            for gi, idx in enumerate(groups):
                seqs = self._sequences(rollout, idx)
                if self.ref_model is not None:
                    constants.ref[gi] = self._logp(self.ref_model, seqs)[0]
                if need_old:
                    constants.old[gi] = self._logp(self.model, seqs)[0]
        return constants

    def _kl_reward_penalty(self, rollout, constants: StepConstants) -> torch.Tensor:
        """beta * sum_t KL_t(pi_old || pi_ref) per completion [N] (align.algos.kl_penalty_rewards)."""
        lc = self.cfg.loss
        penalty = torch.zeros(len(rollout.flat), dtype=torch.float32)
        for gi, idx in enumerate(constants.groups):
            seqs = self._sequences(rollout, idx)
            zero = torch.zeros(len(idx), device=self.acc.device)
            shaped = algos.kl_penalty_rewards(zero, constants.old[gi], constants.ref[gi], self._loss_mask(rollout, seqs),
                                              lc.beta, kind=lc.kl_kind)
            penalty[seqs.index.cpu()] = -shaped.float().cpu()
        return penalty

    def _optimize(self, rollout, adv: torch.Tensor, constants: StepConstants) -> dict[str, float]:
        cfg, lc = self.cfg, self.cfg.loss
        groups = constants.groups
        # Loss metrics are averaged over every update (mu of them: with mu > 1 the ratio moves, and
        # the clip fractions of update 0 alone would always read 0); entropy and the engine mismatch
        # describe the rollout policy and come from update 0.
        per_update: dict[str, float] = defaultdict(float)
        rollout_policy: dict[str, float] = defaultdict(float)
        grad_norms = []
        self.model.train()
        for update in range(cfg.train.updates_per_batch):
            for gi, idx in enumerate(groups):
                seqs = self._sequences(rollout, idx)
                mask = self._loss_mask(rollout, seqs)
                logp, entropy = self._logp(self.model, seqs, with_entropy=update == 0)
                old_logp = constants.old.get(gi, logp.detach())
                engine_logp = self._engine_logp(rollout, seqs)
                adv_tok = adv[seqs.index.cpu()].to(logp)
                is_weights = algos.tis_weights(old_logp, engine_logp, lc.tis_cap) if lc.tis_cap else None
                loss, m = self.algo.loss(logp, old_logp, adv_tok, mask, ref_logp=constants.ref.get(gi), is_weights=is_weights,
                                         num_tokens=constants.num_tokens, num_seqs=constants.num_seqs)
                # DDP and ZeRO average gradients over ranks; our per-rank losses are additive
                # shares of the global loss, so undo the average.
                last = gi == len(groups) - 1
                self.acc.sync_gradients = last
                with self.acc.no_sync(self.model) if not last and self.world > 1 else nullcontext():
                    self.acc.backward(loss * self.world)
                n = mask.sum().item()
                per_update["loss"] += loss.item()
                per_update["tokens"] += n
                for k, v in m.items():  # shares of a global sum add up; per-token means are weighted
                    per_update[k] += float(v) if k in _ADDITIVE_METRICS else float(v) * n
                if update == 0:
                    rollout_policy["tokens"] += n
                    rollout_policy["entropy"] += (entropy * mask).sum().item()
                    rollout_policy["logp_mismatch"] += ((old_logp - engine_logp).abs() * mask).sum().item()
            grad_norm = self.acc.clip_grad_norm_(self.model.parameters(), cfg.train.max_grad_norm)
            grad_norms.append(float(grad_norm) if grad_norm is not None else math.nan)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        out = {}
        for sums, repeats in ((per_update, cfg.train.updates_per_batch), (rollout_policy, 1)):
            # Metrics over every rank's tokens, not rank 0's alone (one reduce for each).
            names = sorted(sums)
            totals = self.acc.reduce(torch.tensor([sums[k] for k in names], dtype=torch.float64, device=self.acc.device), "sum")
            sums = dict(zip(names, totals.tolist()))
            tokens = max(sums.pop("tokens"), 1.0)
            out |= {k: v / repeats if k in _ADDITIVE_METRICS else v / tokens for k, v in sums.items()}
        out["grad_norm"] = sum(grad_norms) / len(grad_norms)
        return out

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        from align.eval import eval_rewards, evaluate_engine

        if self._eval_dataset is None:
            self._eval_dataset = evaluation_rows(self.cfg, warn=self.logger.print)
        accuracy, others = eval_rewards(self.algo, self.cfg)  # eval.accuracy, else the algorithm's accuracy reward
        return evaluate_engine(self.engine, self.tokenizer, self._eval_dataset, accuracy, self.cfg.rollout,
                               k=self.cfg.eval.k, seed=self.cfg.train.seed, extra=others)


# Loss metrics that are this shard's additive share of a global quantity (summed over micro-batches
# and ranks); every other loss metric is a mean over the shard's tokens (token-weighted average).
_ADDITIVE_METRICS = frozenset({"loss", "pg_loss", "num_tokens"})


def _make_scheduler(optimizer, kind: str, warmup: int, total: int):
    from transformers import get_scheduler

    return get_scheduler(kind if kind != "constant" else "constant_with_warmup", optimizer,
                         num_warmup_steps=warmup, num_training_steps=max(total, 1))
