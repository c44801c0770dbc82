"""The training loop, written once. Every algorithm plugs in through `needs`, `score`, `advantages`, `loss`.

One step, top to bottom (`Trainer.step`):
  1. rollouts: source.collect -> GroupBatch (this rank's P prompts x G completions, rewards [P,G]);
     the source generates with the engine and calls algorithm.score, or reads fixed rows
  2. plan: micro-batches by token budget (whole groups when the loss couples members), the step's
     global normalisers, reference / pi_old log-probs when the algorithm needs them
  3. algorithm.advantages over the global batch
  4. per micro-batch: forward -> MicroBatch -> algorithm.loss -> backward; clip, optimizer step
     (x updates_per_batch)
  5. engine.sync_from(model), verified by the probe (when the engine samples from the policy)
  then metrics, samples, checkpoint (`train`).
Losses are additive over micro-batches and ranks: normalisers (token, sequence, prompt and group
counts) are those of the global step batch, so micro-batching and data parallelism never change the result.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from align import algos
from align.algos import GroupBatch, MicroBatch, Totals
from align.algos.kl import LOG_RATIO_LIMIT
from align.algos.surrogates import SURROGATES
from align.config import Config, ConfigError, config_to_yaml, inert_ratio_options
from align.errors import RunStopped
from align.data.holdout import evaluation_rows, training_rows
from align.demo import resolve_model_path
from align.models import (apply_lora, check_vocabulary, chunkable_lm_head, load_model, load_tokenizer, mix_into_reference,
                          model_context)
from align.rollout import make_engine, servers_of_rank
from align.runtime.batching import (
    PACKED_ATTENTION,
    PackedSequences,
    PaddedSequences,
    attention_implementation,
    completion_hidden,
    completion_logits,
    forward_shape,
    pack_shared_prompts,
    pad_sequences,
    shared_prompt_budget_groups,
    split_parts_to_count,
    token_budget_groups,
)
from align.runtime.distributed import (
    max_over_ranks,
    outside_zero3_init,
    prepare_reference_model,
    rollout_metrics_over_ranks,
    split_to_count,
    sync_named_tensors,
    uses_deepspeed,
    zero_stage,
)
from align.runtime.learning_signal import FlatStepGuard, StepSignal
from align.runtime.numerics import UpdateGuard
from align.runtime.precision import resolve_dtype, training_precision
from align.runtime.stop import StopOnSignal
from align.sources import ROLLOUT_SOURCES
from align.telemetry.logger import RunLogger
from align.telemetry.samples import group_samples
from align.telemetry.trackers import ExperimentTrackers
from align.training.checkpoint import export_hf, find_checkpoint, load_checkpoint, save_checkpoint
from align.training.evaluation import eval_rewards, evaluate_engine
from rewards.context import RewardContext, bind_model_rewards, reward_functions_of


@dataclass
class MicroBatchRows:
    """One micro-batch: completion rows of the step batch, and the prompts whose reference answers ride along."""

    rows: list[int]
    answers: list[int] = field(default_factory=list)


@dataclass
class StepPlan:
    """What the optimisation phase of one step shares: micro-batches, global normalisers, fixed log-probs."""

    micro_batches: list[MicroBatchRows]  # the same count on every rank
    totals: Totals
    ref: dict[int, torch.Tensor] = field(default_factory=dict)  # micro-batch -> reference log-probs [B, T]
    old: dict[int, torch.Tensor] = field(default_factory=dict)  # micro-batch -> pi_old [B, T] (when not the current forward)
    pg_mask: dict[int, torch.Tensor] = field(default_factory=dict)  # micro-batch -> top-entropy tokens [B, T] (loss.top_entropy_quantile)


class Trainer:
    def __init__(self, cfg: Config, accelerator, algorithm, run_dir: Path, rows=None):
        """`rows`: the training rows, already checked (align/sources/preflight.py); None loads them here."""
        from accelerate.utils import DistributedType, set_seed

        self.cfg, self.acc, self.algo, self.run_dir = cfg, accelerator, algorithm, run_dir
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        set_seed(cfg.train.seed)  # same init on every rank
        self.dtype = resolve_dtype(cfg.model.dtype)
        m = cfg.model
        self.model_path = resolve_model_path(m.name, m.cache_dir)
        self.tokenizer = load_tokenizer(self.model_path)
        # fp32 master weights + bf16 autocast for full fine-tuning (see runtime/precision.py)
        self.precision = training_precision(self.dtype, lora=cfg.lora.enabled,
                                            deepspeed=accelerator.distributed_type == DistributedType.DEEPSPEED)
        model = load_model(self.model_path, self.precision.weights, accelerator.device, m.gradient_checkpointing)
        check_vocabulary(model, self.tokenizer, m.name)
        if cfg.lora.enabled:
            model = apply_lora(model, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, list(cfg.lora.target_modules),
                               autocast_adapter_dtype=not uses_deepspeed(accelerator))
        # The G completions of a prompt share its forward (runtime/batching.py, PackedSequences) where
        # the attention kernel takes a 4D mask; otherwise every completion carries its own prompt.
        self.shared_prompt = cfg.train.shared_prompt and attention_implementation(model) in PACKED_ATTENTION
        self._heads: dict[int, torch.nn.Linear | None] = {}  # _chunked_head's answer per model
        self.ref_model = None
        if algorithm.needs.reference_model:  # e.g. GRPO with loss.beta = 0 loads none
            self.ref_model = load_model(self.model_path, self.dtype, accelerator.device).eval().requires_grad_(False)
        t = cfg.train
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        scheduler = _make_scheduler(optimizer, t.lr_schedule, t.warmup_steps, t.steps * t.updates_per_batch)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        if self.ref_model is not None:  # under ZeRO-3 sharded like the trainer (after prepare fills the config)
            self.ref_model = prepare_reference_model(accelerator, self.ref_model)
        if cfg.loss.ref_sync:  # TR-DPO: the reference moves, so checkpoints keep it (resume restores it)
            if zero_stage(accelerator) >= 3:
                raise ConfigError("loss.ref_sync=true is not supported under ZeRO-3 here (the reference is sharded in "
                                  "its own engine); use ZeRO-2 or a single process, or loss.ref_sync=false")
            if self.ref_model is None:
                raise ConfigError(f"loss.ref_sync=true but algo={cfg.algo} loads no reference model here (loss.beta=0?); "
                                  "set loss.beta > 0 or loss.ref_sync=false")
            accelerator.register_for_checkpointing(self.ref_model)

        # Agents (rollout.source=episodes) take their tasks from the environment, not a dataset.
        dataset = rows if rows is not None or cfg.rollout.source == "episodes" else training_rows(
            cfg, warn=print if accelerator.is_main_process else lambda _: None)
        self._eval_dataset = None  # loaded on the first evaluation
        source = ROLLOUT_SOURCES[cfg.rollout.source]
        self.engine = None
        if source.uses_engine or cfg.log.eval_every:  # offline rows need an engine only to evaluate
            with outside_zero3_init(accelerator):  # the engine keeps a full copy of the weights
                self.engine = self._make_engine()
            try:
                self.engine.attach(self.acc.unwrap_model(self.model), named_tensors=sync_named_tensors(self.acc, self.model))
                if cfg.rollout.verify_sync:  # the probe difference before any update sets the sync tolerance
                    self.engine.calibrate(self.acc.unwrap_model(self.model))
            except BaseException:
                self.engine.close()  # a server would otherwise keep this run's transport and refuse the next
                raise
        # Reward models and judges load now, on this device, beside this engine (rewards/context.py).
        self.model_rewards = bind_model_rewards(reward_functions_of(self.algo), RewardContext(
            device=accelerator.device, dtype=self.dtype, accelerator=accelerator, policy_engine=self.engine,
            policy_tokenizer=self.tokenizer, make_engine=self._make_reward_engine, cache_dir=m.cache_dir,
            resolve_model=resolve_model_path))
        self.source = source(cfg, algorithm, self.engine, self.tokenizer, dataset, accelerator)
        self.source.set_context(self._max_model_len())
        self.logger = RunLogger(run_dir, t.steps, is_main=accelerator.is_main_process,
                                tensorboard="tensorboard" in cfg.log.report_to, console=cfg.log.console,
                                signals=algorithm.signals, trackers=ExperimentTrackers(accelerator, cfg, run_dir))
        self.start_step = 0
        self.update_guard = UpdateGuard(t.max_bad_updates)
        self.flat_guard = FlatStepGuard(t.max_flat_steps, cfg.rollout.temperature)
        if cfg.resume:
            self._resume(cfg.resume)

    # ----------------------------------------------------------------------------------- set-up
    def _make_engine(self, model_path: str | None = None, kind: str | None = None, max_model_len: int | None = None,
                     **overrides):
        r = self.cfg.rollout
        # One sampling stream per rank for unseeded requests (per-call seeds come from _generate).
        common = dict(dtype=self.dtype, seed=self.cfg.train.seed + self.rank, probe_tolerance=r.probe_tolerance)
        hf = dict(device=str(self.acc.device))
        vllm = dict(
            max_model_len=max_model_len or self._max_model_len(), kv_cache_bytes=r.kv_cache_mb << 20,
            gpu_memory_utilization=r.gpu_memory_utilization, enable_sleep_mode=r.sleep_mode,
            tensor_parallel_size=r.tensor_parallel_size,
            # sized for this rank's rows per step, so memory profiling and CUDA graphs fit the real batch
            max_num_seqs=self.cfg.train.batch_size // self.world, max_num_batched_tokens=8192,
            # one colocated engine per rank (ENVIRONMENT.md: an engine on rank 0 alone hangs)
            distributed_executor_backend="external_launcher" if self.world > 1 else None,
        )
        kind = kind or r.engine
        # Data-parallel rollouts: each rank has its own prompts. With fewer servers than ranks, rank r
        # samples from server r mod N and the lowest rank on each server, rank r < N, sends it the weights;
        # with more, rank r owns servers r, r + W, ... and deals its prompts over them (ServerPool).
        servers = r.servers or [None]
        server = dict(urls=servers_of_rank(servers, self.rank, self.world), timeout_s=r.server_timeout_s,
                      api_key=os.environ.get("ALIGN_SERVER_API_KEY"), send_weights=self.rank < len(servers))
        specific = {"hf": hf, "vllm": vllm, "auto": {**hf, **vllm}, "server": server}[kind]
        return make_engine(kind, model_path or self.model_path, **{**common, **specific, **overrides})

    def _make_reward_engine(self, model_path: str, max_model_len: int | None = None, **overrides):
        """A judge's engine: vLLM where the policy's engine is vLLM, transformers otherwise."""
        from align.rollout.hf_engine import HFEngine

        kind = "hf" if isinstance(self.engine, HFEngine) else "vllm"
        if kind == "hf":
            max_model_len = None  # transformers' generate has no preallocated context
        else:
            # Never sleep mode: the policy engine's level-2 sleep would discard this engine's weights
            # too (one sleep-mode allocator per process); VLLMEngine refuses a second one.
            overrides = {"enable_sleep_mode": False, **overrides}
        with outside_zero3_init(self.acc):
            return self._make_engine(model_path, kind, max_model_len, **overrides)

    def _max_model_len(self) -> int:
        limit = model_context(self.acc.unwrap_model(self.model).config)
        served = getattr(getattr(self, "engine", None), "max_model_len", None)  # a server's, set where it started
        return min(limit, served) if served else limit

    def _resume(self, resume: str) -> None:
        path = find_checkpoint(self.run_dir, resume)
        if path is None:
            self.logger.print(f"resume={resume}: no checkpoint in {self.run_dir}, starting from step 0")
            return
        state = load_checkpoint(self.acc, path)
        self.start_step = state["step"]
        self.logger.resume_from(self.start_step)  # the steps after it are trained (and logged) again
        self.source.load_state_dict(state["prompts"])
        if self.engine is not None:
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
        for line in inert_ratio_options(cfg, self.algo.needs.importance_correction, SURROGATES[cfg.loss.surrogate].reads,
                                        type(self.algo).unread_loss_options):
            self.logger.print(line)
        if log.eval_every and self.start_step == 0:
            self.logger.log(0, self.evaluate())  # the starting point of every learning curve
        started = time.monotonic()
        with StopOnSignal() as stop:
            for step in range(self.start_step, cfg.train.steps):
                metrics, samples = self.step(step)
                signum = self._agreed_signal(stop.signum)  # SIGTERM / SIGINT: save after this step and stop
                last = step + 1 == cfg.train.steps or self._out_of_time(started)
                if (step + 1) % log.every == 0 or last or signum:
                    self.logger.log(step + 1, metrics)
                if log.sample_every and (step + 1) % log.sample_every == 0:
                    self.logger.log_samples(step + 1, samples[: log.num_samples])
                if log.eval_every and ((step + 1) % log.eval_every == 0 or last) and not signum:
                    self.logger.log(step + 1, self.evaluate())
                if (log.save_every and (step + 1) % log.save_every == 0) or last or signum:
                    path = self.save(step + 1)
                if signum:
                    self.logger.close()
                    raise RunStopped(f"stopped by {signal.Signals(signum).name} after step {step + 1}, checkpoint saved "
                                     f"({path}); run the same command with resume=latest to continue", signum)
                if last:
                    break
        self.logger.close()

    def _agreed_signal(self, signum: int) -> int:
        """The stop signal any rank received (every rank must stop after the same step), or 0."""
        if self.world == 1:
            return signum
        return int(self.acc.reduce(torch.tensor(signum, device=self.acc.device), reduction="max").item())

    def _out_of_time(self, started: float) -> bool:
        """train.max_minutes is a wall-clock budget; every rank must agree to stop at the same step."""
        if self.cfg.train.max_minutes is None:
            return False
        over = torch.tensor(float(time.monotonic() - started > 60 * self.cfg.train.max_minutes), device=self.acc.device)
        return bool(self.acc.reduce(over, reduction="max").item())

    def save(self, step: int) -> Path:
        version = self.engine.weight_version if self.engine is not None else 0
        state = {"step": step, "prompts": self.source.state_dict(), "weight_version": version}
        return save_checkpoint(self.acc, self.run_dir, step, state, keep_last=self.cfg.log.keep_last)

    def export(self, out_dir: Path) -> None:
        """A plain Hugging Face folder of the trained model (LoRA merged), loadable anywhere."""
        export_hf(self.acc, self.model, self.tokenizer, out_dir, merge_lora=True)

    def batch_arithmetic(self) -> str:
        c = self.cfg
        g, batch = c.rollout.num_generations, c.train.batch_size
        unused = self.source.unused_rows
        note = (f"; offline rows: {unused} rows beyond {g} per prompt are unused (raise rollout.num_generations)"
                if unused else "")
        threads = f" on {torch.get_num_threads()} CPU thread(s)" if self.acc.device.type == "cpu" else ""
        if self.shared_prompt:
            layout = "; each prompt forwarded once for its completions (train.shared_prompt)"
        elif c.train.shared_prompt:
            layout = (f"; train.shared_prompt is off: the {attention_implementation(self.model)} attention kernel "
                      f"takes no block mask (use one of {', '.join(PACKED_ATTENTION)})")
        else:
            layout = ""
        return (
            f"per optimizer step: {batch // g} prompts x {g} completions = {batch} completions "
            f"(<= {batch * c.rollout.max_tokens} completion tokens) on {self.world} process(es), "
            f"{batch // g // self.world} prompts each{threads}; {c.train.updates_per_batch} update(s) per rollout batch{layout}{note}"
        )

    def step(self, step: int) -> tuple[dict[str, float], list[dict]]:
        """One optimizer step; each phase runs only if the algorithm needs it (`self.algo.needs`)."""
        timers: dict[str, float] = defaultdict(float)
        n_prompts = self.cfg.train.batch_size // self.cfg.rollout.num_generations

        # 1. Rollouts: this rank's share of the step's groups, with rewards (generated or read).
        collected = self.source.collect(step, n_prompts, timers)
        if self.cfg.rollout.sleep_mode and self.engine is not None:  # free its memory for training; the sync wakes it
            self.engine.sleep()
        batch = collected.batch
        metrics = rollout_metrics_over_ranks(self.acc, collected.metrics)

        # 2. The step's plan: micro-batches, global normalisers, log-probs that stay fixed.
        t0 = time.perf_counter()
        plan = self._plan(batch)
        timers["logprob"] += time.perf_counter() - t0

        # 3. Advantages over the global batch (after the KL penalty, when it goes into the reward).
        if self.cfg.loss.kl_in_reward:
            batch = self._kl_in_reward(batch, plan, metrics)
        batch = self._advantages(batch, metrics)

        # 4. Loss per micro-batch -> backward -> clip -> optimizer (x updates_per_batch).
        t0 = time.perf_counter()
        metrics |= self._optimize(batch, plan)
        if self.cfg.loss.ref_sync and (step + 1) % self.cfg.loss.ref_sync_every == 0:
            mix_into_reference(self.ref_model, self.acc.unwrap_model(self.model), self.cfg.loss.ref_sync_alpha)
        timers["train"] += time.perf_counter() - t0

        # 5. The engine samples the next step from the new weights (verified by the probe). With
        # rollout.max_staleness >= 1 it has been generating a later step meanwhile, from the old ones.
        overlap = self.source.wait_for_generation()
        if overlap:
            timers["trainer_wait"] += overlap["trainer_wait"]
        if self.algo.needs.weight_sync:
            t0 = time.perf_counter()
            report = self._sync_engine()
            timers["sync"] += time.perf_counter() - t0
            metrics |= {"sync/probe_diff": report.probe_diff, "sync/weight_version": report.weight_version}

        metrics |= {f"time/{k}": v for k, v in timers.items()}
        metrics["time/step"] = sum(timers.values())
        if overlap:  # not a phase of the trainer's step: how long the engine waited for it
            metrics["time/engine_idle"] = overlap["engine_idle"]
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        # A few groups as the model saw them, with the rewards the advantages came from.
        samples = group_samples(self.tokenizer, collected.rows, collected.completions, batch.rewards, batch.advantages,
                                batch.components, self.cfg.log.num_samples)
        return metrics, samples

    # ------------------------------------------------------------------------------- the plan
    def _usable(self, batch: GroupBatch) -> torch.Tensor:
        """[P,G] bool: members that carry loss (valid, and not cut at max_tokens when those are masked)."""
        if self.cfg.loss.mask_truncated:
            return batch.valid & ~batch.truncated
        return batch.valid

    def _plan(self, batch: GroupBatch) -> StepPlan:
        """Micro-batches, global normalisers, and the log-probs that stay fixed during the step.

        Reference log-probs when the algorithm needs a reference model; pi_old from a no-grad pass
        when the batch is reused (mu > 1) or the KL goes into the reward; otherwise pi_old is the
        current policy, taken from the gradient's own forward pass (saves a pass).
        """
        plan = StepPlan(micro_batches=self._micro_batches(batch), totals=self._totals(batch))
        need_old = self.algo.needs.importance_correction and (
            self.cfg.train.updates_per_batch > 1 or self.cfg.loss.kl_in_reward)
        top = self.cfg.loss.top_entropy_quantile
        entropies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad():
            for i, mb in enumerate(plan.micro_batches):
                seqs = self._sequences(batch, mb)
                n = len(mb.rows)
                if self.ref_model is not None:
                    plan.ref[i] = self._logp(self.ref_model, seqs)[0][:n]
                if need_old or top < 1:
                    logp, entropy = self._logp(self.model, seqs, with_entropy=top < 1)
                    if need_old:
                        plan.old[i] = logp[:n]
                    if top < 1:
                        entropies[i] = (entropy[:n], self._loss_mask(batch, mb, seqs.completion_mask[:n]))
        if entropies:
            self._top_entropy_masks(plan, entropies, top)
        return plan

    def _top_entropy_masks(self, plan: StepPlan, entropies: dict, top: float) -> None:
        """loss.top_entropy_quantile: the policy gradient only on the step's top-rho tokens by entropy,
        of the policy the step starts from. One threshold over every rank's loss tokens (a threshold
        per micro-batch, as TRL's, would change with micro_batch_tokens); the entropy bonus then
        averages over these tokens, so their global count becomes its normaliser."""
        local = torch.cat([e[m.bool()] for e, m in entropies.values()]) if entropies else torch.zeros(0)
        local = local.to(self.acc.device)
        if self.world > 1:  # entropies are >= 0, so -1 pads the ranks to one length and is dropped after
            local = self.acc.gather(self.acc.pad_across_processes(local, dim=0, pad_index=-1.0))
            local = local[local >= 0]
        threshold = algos.entropy_threshold(local, top)
        for i, (entropy, mask) in entropies.items():
            plan.pg_mask[i] = ((entropy >= threshold.to(entropy.device)) & mask.bool()).to(entropy.dtype)
        kept = float((local >= threshold.to(local.device)).sum())
        plan.totals = replace(plan.totals, kept_tokens=kept)

    def _micro_batches(self, batch: GroupBatch) -> list[MicroBatchRows]:
        """Token-budget micro-batches over sequences, or over whole groups (each with its reference
        answer) when the algorithm's loss couples group members; the same count on every rank.
        With train.shared_prompt the budget is the packed cost (prompt once per group or part)."""
        G, whole = batch.group_size, self.algo.needs.whole_groups
        prompt_lens = [len(ids) for ids in batch.prompt_ids]
        if self.shared_prompt and not whole:
            # A unit is a part of a group (its prompt once + its completions); parts of one group
            # stay together where they fit, and a count short of the busiest rank's splits them.
            groups = [list(range(p * G, (p + 1) * G)) for p in range(batch.num_prompts)]
            parts = shared_prompt_budget_groups(groups, prompt_lens, [len(c) for c in batch.completion_ids],
                                                self.cfg.train.micro_batch_tokens)
            parts = split_parts_to_count(parts, max_over_ranks(self.acc, len(parts)))
            return [MicroBatchRows(rows=sorted(r for part in mb for r in part)) for mb in parts]
        if whole and self.shared_prompt:  # a unit is a whole group packed: prompt once, members, reference answer
            answers = batch.answer_ids or [[] for _ in batch.prompt_ids]
            lengths = [(0, prompt_lens[p] + len(answers[p]) + sum(len(batch.completion_ids[p * G + i]) for i in range(G)))
                       for p in range(batch.num_prompts)]
            sizes = None
        elif whole:
            answers = batch.answer_ids or [[] for _ in batch.prompt_ids]
            lengths = [(prompt_lens[p], max([len(answers[p])] + [len(batch.completion_ids[p * G + i]) for i in range(G)]))
                       for p in range(batch.num_prompts)]
            sizes = [G + (1 if batch.answer_ids else 0)] * batch.num_prompts
        else:
            lengths = [(prompt_lens[r // G], len(ids)) for r, ids in enumerate(batch.completion_ids)]
            sizes = None
        units = token_budget_groups(lengths, self.cfg.train.micro_batch_tokens, sizes)
        # Same number of micro-batches on every rank: under ZeRO each forward/backward is a collective.
        units = split_to_count(units, max_over_ranks(self.acc, len(units)))
        if not whole:
            return [MicroBatchRows(rows=sorted(u)) for u in units]
        return [MicroBatchRows(rows=[p * G + i for p in sorted(u) for i in range(G)],
                               answers=sorted(u) if batch.answer_ids else []) for u in units]

    def _totals(self, batch: GroupBatch) -> Totals:
        """The step's global counts: tokens under exactly the loss mask (`_loss_mask`), completions,
        prompts, groups with >= 2 members that carry loss, and usable completions. One all-reduce."""
        n = len(batch.completion_ids)
        cut = batch.truncated.reshape(-1) if self.cfg.loss.mask_truncated else torch.zeros(n, dtype=torch.bool)
        usable = self._usable(batch)
        local = torch.tensor([float(sum(batch.loss_tokens(r) for r in range(n) if not cut[r])),
                              float((usable.sum(1) >= 2).sum()), float(usable.sum())], dtype=torch.float64, device=self.acc.device)
        tokens, groups, valid = self.acc.reduce(local, reduction="sum").tolist()
        return Totals(num_tokens=tokens, num_seqs=float(n * self.world), num_prompts=float(batch.num_prompts * self.world),
                      num_groups=groups, num_valid=valid)

    def _kl_in_reward(self, batch: GroupBatch, plan: StepPlan, metrics: dict[str, float]) -> GroupBatch:
        """verl's use_kl_in_reward: R - beta * sum_t KL_t(pi_old || pi_ref) per completion, before advantages."""
        lc = self.cfg.loss
        penalty = torch.zeros(len(batch.completion_ids), dtype=torch.float32)
        for i, mb in enumerate(plan.micro_batches):
            seqs = self._sequences(batch, mb)
            mask = self._loss_mask(batch, mb, seqs.completion_mask[: len(mb.rows)])
            zero = torch.zeros(len(mb.rows), device=self.acc.device)
            shaped = algos.kl_penalty_rewards(zero, plan.old[i], plan.ref[i], mask, lc.beta, kind=lc.kl_kind)
            penalty[mb.rows] = -shaped.float().cpu()
        penalty = penalty.view_as(batch.rewards)
        metrics["kl_in_reward/penalty"] = self.acc.reduce(penalty.mean().to(self.acc.device), "mean").item()
        return replace(batch, rewards=batch.rewards - penalty)

    def _advantages(self, batch: GroupBatch, metrics: dict[str, float]) -> GroupBatch:
        """Group statistics are per prompt, but `scale=batch` needs every rank's rewards: gather once,
        compute over the global batch, and keep this rank's rows."""
        gather = lambda t: self.acc.gather(t.to(self.acc.device)).cpu()  # noqa: E731
        rewards, valid = gather(batch.rewards), gather(batch.valid).bool()
        answer_rewards = gather(batch.answer_rewards) if batch.answer_rewards is not None else None
        adv = self.algo.advantages(rewards, valid, answer_rewards)
        scored = rewards[valid]
        metrics |= {"reward/mean": scored.mean().item() if scored.numel() else 0.0,
                    "reward/std": scored.std().item() if scored.numel() > 1 else 0.0,
                    "adv/abs_mean": adv.completions[valid].abs().mean().item() if scored.numel() else 0.0}
        mine = slice(self.rank * batch.num_prompts, (self.rank + 1) * batch.num_prompts)
        answers = adv.answers[mine] if adv.answers is not None else None
        if answers is not None:
            metrics["adv/answer_mean"] = adv.answers.mean().item()
        self._check_learning_signal(batch, valid, adv)
        batch = batch.with_advantages(adv.completions[mine], answers)
        if self.algo.needs.token_advantages:  # SALT: per-step advantages from this rank's groups
            batch, graph_metrics = self.algo.token_advantages(batch)
            metrics |= rollout_metrics_over_ranks(self.acc, graph_metrics)
        return batch

    def _check_learning_signal(self, batch: GroupBatch, valid: torch.Tensor, adv) -> None:
        """Count the step towards train.max_flat_steps when every global advantage is 0 (same on every rank)."""
        signal = StepSignal.of(valid, adv.completions, adv.answers, identical_groups=False)
        if signal.informative or not self.cfg.train.max_flat_steps:
            self.flat_guard.record(signal)
            return
        G = batch.group_size
        same = all(len({tuple(ids) for ids in batch.completion_ids[p * G:(p + 1) * G]}) == 1 for p in range(batch.num_prompts))
        # accelerate's reduce knows sum/mean/max (not min): identical everywhere = no rank differs.
        differs = self.acc.reduce(torch.tensor(float(not same), device=self.acc.device), reduction="max").item()
        everywhere = differs == 0
        self.flat_guard.record(replace(signal, identical_groups=everywhere))

    # ------------------------------------------------------------------------------- training
    def _rows(self, batch: GroupBatch, mb: MicroBatchRows) -> tuple[list[list[int]], list[list[int]], list[int]]:
        """(prompts, completions, step-batch index) of the micro-batch: its completion rows, then its reference answers."""
        G = batch.group_size
        prompts = [batch.prompt_ids[r // G] for r in mb.rows] + [batch.prompt_ids[p] for p in mb.answers]
        completions = [batch.completion_ids[r] for r in mb.rows] + [batch.answer_ids[p] for p in mb.answers]
        return prompts, completions, mb.rows + [len(batch.completion_ids) + p for p in mb.answers]

    def _sequences(self, batch: GroupBatch, mb: MicroBatchRows) -> PaddedSequences | PackedSequences:
        """The micro-batch ready for the model: packed by shared prompt (train.shared_prompt), else padded.
        Either way completion rows first, then reference answers, in the [B, T] layout."""
        layout = pack_shared_prompts if self.shared_prompt else pad_sequences
        return layout(*self._rows(batch, mb), self.tokenizer.pad_token_id, self.acc.device)

    def _forward_tokens(self, batch: GroupBatch, mb: MicroBatchRows) -> int:
        """Token positions (padding included) the model computes for one micro-batch's forward."""
        prompts, completions, _ = self._rows(batch, mb)
        rows, width = forward_shape(prompts, completions, self.shared_prompt)
        return rows * width

    def _padded(self, rows_of_values: list[list[float]], rows: list[int], like: torch.Tensor) -> torch.Tensor:
        """Per-token values of `rows` right-padded with 0 into a tensor shaped like `like` [B, T]."""
        out = torch.zeros_like(like)
        for i, r in enumerate(rows):
            values = rows_of_values[r]
            out[i, : len(values)] = torch.tensor(values, dtype=out.dtype)
        return out

    def _logp(self, model, seqs, with_entropy: bool = False, entropy_grad: bool = False):
        """Trainer logprobs [B, T] of the completion tokens (float32), and their entropy if asked
        (with a gradient when entropy_grad: the loss.entropy_coef bonus).

        Of softmax(logits / T), the distribution the engine sampled from at temperature T: the ratio,
        the importance weights and the KL are then all of the sampling policy.
        """
        t = self.cfg.rollout.temperature
        head = self._chunked_head(model)
        if head is not None:  # train.lm_head_chunk: the head chunk by chunk, under checkpointing
            with self.precision.context(self.acc.device):
                hidden = completion_hidden(model, head, seqs)
                out = algos.token_logprobs_from_hidden(hidden, head.weight, seqs.completion_ids, self.cfg.train.lm_head_chunk,
                                                       temperature=t, return_entropy=with_entropy or entropy_grad)
            return out if (with_entropy or entropy_grad) else (out, None)
        with self.precision.context(self.acc.device):
            logits = completion_logits(model, seqs)
        if entropy_grad:
            return (algos.token_logprobs(logits, seqs.completion_ids, temperature=t),
                    algos.token_entropy(logits, temperature=t))
        if with_entropy:
            return algos.token_logprobs(logits, seqs.completion_ids, temperature=t, return_entropy=True)
        return algos.token_logprobs(logits, seqs.completion_ids, temperature=t), None

    def _chunked_head(self, model) -> torch.nn.Linear | None:
        """The head `_logp` applies in chunks for this model (policy or reference), or None: whole logits."""
        if not self.cfg.train.lm_head_chunk:
            return None
        if id(model) not in self._heads:
            self._heads[id(model)] = chunkable_lm_head(self.acc.unwrap_model(model))
        return self._heads[id(model)]

    def _loss_mask(self, batch: GroupBatch, mb: MicroBatchRows, mask: torch.Tensor) -> torch.Tensor:
        """[B, T] loss tokens of the micro-batch's completion rows: agents' action tokens only, and
        none in completions cut at max_tokens when loss.mask_truncated."""
        if batch.token_mask is not None:
            mask = mask * self._padded(batch.token_mask, mb.rows, mask)
        if self.cfg.loss.mask_truncated:
            mask = mask * (~batch.truncated.reshape(-1)[mb.rows]).to(mask)[:, None]
        return mask

    def _micro_batch(self, batch: GroupBatch, mb: MicroBatchRows, plan: StepPlan, i: int, with_entropy: bool):
        """Forward one micro-batch and assemble the algorithm's `MicroBatch` (and the entropy [B,T])."""
        needs, lc, n = self.algo.needs, self.cfg.loss, len(mb.rows)
        seqs = self._sequences(batch, mb)
        logp_all, entropy = self._logp(self.model, seqs, with_entropy, entropy_grad=bool(lc.entropy_coef))
        logp, mask = logp_all[:n], self._loss_mask(batch, mb, seqs.completion_mask[:n])
        usable = self._usable(batch).reshape(-1)[mb.rows]
        engine_logp = self._padded(batch.engine_logprobs, mb.rows, logp.detach()) if batch.engine_logprobs else None
        old_logp = is_weights = None
        if needs.importance_correction:
            old_logp = plan.old.get(i, logp.detach())
        if engine_logp is not None and batch.token_mask is not None:
            # Observation tokens come from the environment, not the policy: their engine "log-prob" is
            # no policy probability, so they stay out of importance correction (weight 1, no mismatch).
            engine_logp = torch.where(mask > 0, engine_logp, old_logp if old_logp is not None else logp.detach())
        if needs.importance_correction and engine_logp is not None:
            # The engine sampled from mu (older weights when rollout.max_staleness >= 1, and its own
            # numerics always): pi_old and the per-token weight that correct for it (ALGORITHMS.md 9).
            old_logp, is_weights = algos.off_policy_terms(lc.off_policy_correction, old_logp, engine_logp, lc.tis_cap or None)
        elif needs.weighted_when_stale and self.cfg.rollout.max_staleness and engine_logp is not None:
            # No ratio (GRAO): stale samples' log-likelihood terms take the decoupled weight alone.
            old_logp, is_weights = algos.off_policy_terms("decoupled", logp.detach(), engine_logp, lc.tis_cap)
        answers = dict(answer_logp=logp_all[n:], answer_mask=seqs.completion_mask[n:],
                       answer_advantages=batch.answer_advantages[mb.answers].to(logp)) if mb.answers else {}
        if batch.token_advantages is not None:  # SALT: one advantage per action token
            advantages = self._padded(batch.token_advantages, mb.rows, logp.detach())
        else:
            advantages = batch.advantages.reshape(-1)[mb.rows].to(logp)
        micro = MicroBatch(
            logp=logp, mask=mask, advantages=advantages,
            rewards=batch.rewards.reshape(-1)[mb.rows].to(logp), valid=usable.to(logp.device),
            group_size=batch.group_size, totals=plan.totals, old_logp=old_logp, engine_logp=engine_logp,
            ref_logp=plan.ref.get(i), is_weights=is_weights, pg_mask=plan.pg_mask.get(i),
            entropy=entropy[:n] if lc.entropy_coef else None, **answers,
        )
        return micro, (entropy[:n].detach() if entropy is not None else None)

    def _optimize(self, batch: GroupBatch, plan: StepPlan) -> dict[str, float]:
        cfg, micro_batches = self.cfg, plan.micro_batches
        additive = self.algo.additive_metrics
        # Loss metrics are averaged over every update (mu of them: with mu > 1 the ratio moves, and
        # the clip fractions of update 0 alone would always read 0); entropy and the engine mismatch
        # describe the rollout policy and come from update 0.
        per_update: dict[str, float] = defaultdict(float)
        rollout_policy: dict[str, float] = defaultdict(float)
        grad_norms = []
        skipped = forward_tokens = 0
        # The staleness correction's weights (rollout.max_staleness >= 1), of update 0, like the mismatch.
        needs = self.algo.needs
        corrected = bool(cfg.rollout.max_staleness) and (needs.importance_correction or needs.weighted_when_stale)
        weight_max = 0.0
        if corrected:
            rollout_policy |= {"correction/weight_mean": 0.0, "correction/clipped_frac": 0.0}
        self.model.train()
        for update in range(cfg.train.updates_per_batch):
            losses_finite = True
            for i, mb in enumerate(micro_batches):
                micro, entropy = self._micro_batch(batch, mb, plan, i, with_entropy=update == 0)
                loss, m = self.algo.loss(micro)
                # DDP and ZeRO average gradients over ranks; our per-rank losses are additive
                # shares of the global loss, so undo the average.
                last = i == len(micro_batches) - 1
                self.acc.sync_gradients = last
                with self.acc.no_sync(self.model) if not last and self.world > 1 else nullcontext():
                    self.acc.backward(loss * self.world)
                mask = micro.mask
                n = mask.sum().item()
                losses_finite &= math.isfinite(loss.item())
                per_update["loss"] += loss.item()
                per_update["tokens"] += n
                for k, v in m.items():  # shares of a global sum add up; per-token means are weighted
                    per_update[k] += float(v) if k in additive else float(v) * n
                if update == 0:
                    forward_tokens += self._forward_tokens(batch, mb)
                    rollout_policy["tokens"] += n
                    rollout_policy["entropy"] += (entropy * mask).sum().item()
                    if micro.engine_logp is not None:
                        trainer_logp = micro.old_logp if micro.old_logp is not None else micro.logp.detach()
                        rollout_policy["logp_mismatch"] += ((trainer_logp - micro.engine_logp).abs() * mask).sum().item()
                    if corrected and micro.engine_logp is not None:
                        weight_max = max(weight_max, self._correction_sums(micro, rollout_policy))
            grad_norm = self.acc.clip_grad_norm_(self.model.parameters(), cfg.train.max_grad_norm)
            grad_norms.append(float(grad_norm) if grad_norm is not None else math.nan)
            # A NaN/inf loss or gradient skips this update (align/runtime/numerics.py); too many in a row stop the run.
            ok = self.update_guard.is_finite(self.acc, losses_finite, grad_norm)
            if ok:
                self.optimizer.step()
            else:
                skipped += 1
                self.logger.print(f"warning: non-finite loss or gradient (grad_norm={grad_norms[-1]:g}); update skipped")
            self.update_guard.record(ok, str(self.run_dir / "checkpoints"))
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        out = {}
        for sums, repeats in ((per_update, cfg.train.updates_per_batch), (rollout_policy, 1)):
            # Metrics over every rank's tokens, not rank 0's alone (one reduce for each).
            names = sorted(sums)
            totals = self.acc.reduce(torch.tensor([sums[k] for k in names], dtype=torch.float64, device=self.acc.device), "sum")
            sums = dict(zip(names, totals.tolist()))
            tokens = max(sums.pop("tokens"), 1.0)
            out |= {k: v / repeats if k in additive else v / tokens for k, v in sums.items()}
        if corrected:
            out["correction/weight_max"] = self.acc.reduce(torch.tensor(weight_max, device=self.acc.device), "max").item()
        if plan.totals.kept_tokens is not None:  # loss.top_entropy_quantile: the share of tokens in the policy gradient
            out["entropy/kept_frac"] = plan.totals.kept_tokens / max(plan.totals.num_tokens, 1.0)
        out["grad_norm"] = sum(grad_norms) / len(grad_norms)
        out["train/skipped_updates"] = float(skipped)
        out["micro_batches"] = float(len(micro_batches))
        # Work of one pass over the batch, all ranks: what train.shared_prompt and the budget change.
        out["train/forward_tokens"] = self.acc.reduce(torch.tensor(float(forward_tokens), device=self.acc.device), "sum").item()
        return out

    def _correction_sums(self, micro, sums: dict[str, float]) -> float:
        """Adds the token sums of the staleness correction's weight pi_current / mu, and of the tokens
        it clips, to `sums`; returns the micro-batch's largest weight (before truncation). Clipped:
        at loss.tis_cap (decoupled), or outside the ratio's clip range [1 - eps_low, 1 + eps_high]
        (bypass: such a token has no gradient wherever its advantage pushes the ratio further out)."""
        lc, mask = self.cfg.loss, micro.mask > 0
        current = micro.logp.detach() if lc.off_policy_correction == "bypass" else micro.old_logp
        weight = torch.exp((current - micro.engine_logp).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)).nan_to_num(1.0)
        if lc.off_policy_correction == "bypass":
            clipped = (weight < 1 - lc.eps_low) | (weight > 1 + lc.eps_high)
        else:
            clipped = weight >= lc.tis_cap
        sums["correction/weight_mean"] += weight[mask].sum().item()
        sums["correction/clipped_frac"] += clipped[mask].sum().item()
        return weight[mask].max().item() if mask.any() else 0.0

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        if not self.algo.needs.weight_sync:  # the engine did not follow the policy during training
            self._sync_engine()
        own = self.source.evaluate()  # agents (EpisodeSource): success rate on held-out tasks
        if own is not None:
            return own
        if self._eval_dataset is None:
            self._eval_dataset = evaluation_rows(self.cfg, warn=self.logger.print)
        accuracy, others = eval_rewards(self.algo, self.cfg)  # eval.accuracy, else the algorithm's accuracy reward
        return evaluate_engine(self.engine, self.tokenizer, self._eval_dataset, accuracy, self.cfg.rollout,
                               k=self.cfg.eval.k, seed=self.cfg.train.seed, extra=others)


def _make_scheduler(optimizer, kind: str, warmup: int, total: int):
    from transformers import get_scheduler

    return get_scheduler(kind if kind != "constant" else "constant_with_warmup", optimizer,
                         num_warmup_steps=warmup, num_training_steps=max(total, 1))
