"""The rollout-engine interface the trainers use, and the verified weight sync every engine shares.

Trainers see token ids, logprobs and weight versions only; they never import vLLM. Both engines
(vLLM, transformers) implement the same abstract methods, and `sync_from` - load, then check a fixed
probe against the trainer's model - is written once here.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from align.errors import UserError
from align.models import merged_named_tensors
from align.rollout.probe import (
    Probe,
    bit_dtype,
    bit_sum,
    bit_sums,
    describe_mismatch,
    make_probe,
    mean_abs_difference,
    model_logprobs,
    wrap64,
)

# Mean |logp_engine - logp_trainer| over the probe tokens above which a sync counts as failed.
# fp32 kernels of two libraries agree to ~1e-5 on the tiny model and ~1e-4 at 40M parameters;
# half-precision rounding alone moves logprobs by ~1e-2 (HF against HF). `calibrate` raises the
# tolerance to CALIBRATION_FACTOR x the difference measured before any update, for engine pairs
# that disagree more (vLLM against HF in bf16: 0.02-0.1 nats per token are reported).
DEFAULT_PROBE_TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 2e-2}
CALIBRATION_FACTOR = 3.0
# Above this at weight version 0 the two sides do not run the same model (another checkpoint, a
# broken load): calibration refuses instead of widening the tolerance around it.
MAX_CALIBRATED_DIFF = {"float32": 1e-2, "bfloat16": 0.5, "float16": 0.5}
# How far rounding alone moves probe logprobs in an engine of this dtype (HF against HF, and a
# half-precision engine rounding a small full-precision update, e.g. a merged LoRA delta, away):
# the staleness check in `verify` only judges updates that move the probe beyond it.
PROBE_NOISE_FLOOR = {"float32": 1e-6, "bfloat16": 1e-2, "float16": 2e-3}


class WeightSyncError(UserError, RuntimeError):
    """The engine's logprobs on the probe disagree with the trainer's model after a weight sync."""


@dataclass
class SamplingSettings:
    """How completions are sampled. top_k = 0 and top_p = 1 switch those filters off."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"SamplingSettings.max_tokens={self.max_tokens}: must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"SamplingSettings.temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingSettings.top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"SamplingSettings.top_k={self.top_k}: must be >= 0 (0 = off)")
        if isinstance(self.stop, str):
            raise ValueError(f"SamplingSettings.stop={self.stop!r}: pass a list of strings, e.g. [{self.stop!r}]")


@dataclass
class Completion:
    """One sampled completion.

    token_ids includes the EOS token when generation ended on it (its logprob is in `logprobs`) and
    the token that completed a stop string; `text` excludes both, as vLLM reports them.
    logprobs[t] = log p(token_ids[t] | prompt, token_ids[:t]) under the distribution the token was
    sampled from: softmax(logits / temperature), renormalised over the tokens top-k / top-p keep
    (vLLM's processed_logprobs). Greedy requests (temperature 0) report the raw log_softmax(logits).
    The trainer recomputes the same quantity (its logits divided by rollout.temperature).
    """

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens reached)
    weight_version: int


@dataclass
class ProbeState:
    """Teacher-forced probe logprobs of engine and trainer at one verified weight version."""

    engine: list[list[float]]
    trainer: list[list[float]]
    diff: float


@dataclass
class SyncReport:
    weight_version: int
    probe_diff: float  # mean |engine - trainer| logprob over the probe; nan when not verified
    seconds: float


def check_prompts(prompts: list[list[int]], n: int) -> None:
    """One-line errors for the mistakes callers make most: text instead of ids, empty prompts, n < 1."""
    if n < 1:
        raise ValueError(f"generate(n={n}): n (samples per prompt) must be >= 1")
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str) or not all(isinstance(t, int) for t in prompt):
            raise TypeError(f"generate: prompts[{i}] must be a list of token ids (int); tokenize first, e.g. align.rollout.chat_prompt_ids")
        if len(prompt) == 0:
            raise ValueError(f"generate: prompts[{i}] is empty; every prompt needs at least one token")


class RolloutEngine(ABC):
    """Sampling engine with versioned weights. Subclasses call `_init_probe` once they can score."""

    dtype: str
    probe_tolerance: float
    _probe: Probe
    _weight_version: int = 0
    _expected_names: set[str]
    _sent_sums: dict[str, int]  # bit sums in the engine dtype of what the last load sent (see probe.bit_sum)
    _last_probe: ProbeState | None = None  # the last verified version (or the calibration at version 0)
    calibrated_diff: float | None = None  # probe difference at weight version 0 (see `calibrate`)
    _tolerance_given: bool = False
    tensors_checked: tuple[int, int] = (0, 0)  # (judged, read back) engine tensors in the last verify

    # ---- what each engine implements -------------------------------------------------------
    @abstractmethod
    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Completion]]:
        """Sample `n` completions for each prompt; outer list = prompts, inner = samples."""

    @abstractmethod
    def score(self, sequences: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """log p(completion[t] | prompt, completion[:t]) under the current weights, per (prompt, completion)."""

    @abstractmethod
    def _load(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy the tensors into the engine's weights in place (all-or-some names), consuming the
        iterator once; an engine asleep wakes up for the load."""

    @abstractmethod
    def _engine_tensors(self, names: set[str]) -> dict[str, torch.Tensor]:
        """Read back whichever of `names` the engine holds in checkpoint layout (for diagnosis only)."""

    def _engine_bit_sums(self, dtype: torch.dtype) -> dict[str, int]:
        """`bit_sum` of each tensor the engine computes with, under the engine's own names; {} where it
        cannot read them back (then only the probe judges a sync)."""
        return {}

    def _engine_name(self, name: str) -> str:
        """The engine tensor a checkpoint tensor is loaded into (several load into one fused tensor)."""
        return name

    def attach(self, model, named_tensors: Iterable[tuple[str, torch.Tensor]] | None = None) -> None:
        """Make the engine hold `model`'s weights before the first rollout, as weight version 0. A
        colocated engine was built from the trainer's checkpoint and holds them already; an engine
        that outlives runs (a server) is loaded here."""

    def sleep(self) -> None:
        """Release accelerator memory between rollouts (no-op where unsupported)."""

    def wake(self) -> None:
        """Undo `sleep`; must be called before the next generate/score/load."""

    def close(self) -> None:
        """Free the engine; it cannot be used afterwards."""

    # ---- shared ----------------------------------------------------------------------------
    @property
    def weight_version(self) -> int:
        """0 for the checkpoint the engine was created from, +1 per load_weights/sync_from."""
        return self._weight_version

    def _init_probe(self, vocab_size: int, seed: int, dtype: str, probe_tolerance: float | None,
                    expected_names: Iterable[str], prompt_len: int = 144) -> None:
        self._tolerance_given = probe_tolerance is not None
        if probe_tolerance is None:
            if dtype not in DEFAULT_PROBE_TOLERANCE:
                raise ValueError(f"no default probe tolerance for dtype '{dtype}'; pass probe_tolerance=")
            probe_tolerance = DEFAULT_PROBE_TOLERANCE[dtype]
        self.dtype = dtype
        self.probe_tolerance = probe_tolerance
        self._probe = make_probe(vocab_size, seed, prompt_len=prompt_len)
        self._weight_version = 0
        self._expected_names = set(expected_names)
        self._sent_sums = {}
        self._last_probe = None
        self.calibrated_diff = None

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy (name, tensor) pairs in checkpoint naming into the engine; bumps weight_version.

        The pairs are streamed: never held all at once (a ZeRO-3 gather yields one module at a time).
        """
        sums: dict[str, torch.Tensor] = {}
        dtype = bit_dtype(self.dtype) or torch.float32

        def recorded() -> Iterator[tuple[str, torch.Tensor]]:
            # Bit sums of what was really handed over, rounded to the engine's dtype (on the tensor's
            # device, read back once at the end): `verify` compares them with what the engine holds,
            # and a failed sync can name what is missing or changed.
            for name, tensor in iter_named(named_tensors):
                sums[name] = bit_sum(tensor, dtype)
                yield name, tensor

        self._before_load()
        self._load(recorded())
        if not sums:
            raise ValueError("load_weights: got no tensors; pass (name, tensor) pairs, e.g. merged_named_tensors(model)")
        by_device: dict[torch.device, list[str]] = {}
        for name, total in sums.items():
            by_device.setdefault(total.device, []).append(name)
        self._sent_sums = {}
        for names in by_device.values():  # one host sync per device, not one per tensor
            self._sent_sums.update(zip(names, torch.stack([sums[n] for n in names]).tolist()))
        self._weight_version += 1

    def calibrate(self, model) -> float:
        """Measure the probe difference between the engine and `model` before any update (both hold
        the checkpoint), and set the tolerance from it: CALIBRATION_FACTOR x that difference when it
        exceeds the per-dtype default, so a correct sync never fails on the mere disagreement of two
        libraries' kernels. Its probe values are also the "pre-update" reference of the first sync's
        staleness check (see `verify`). Raises WeightSyncError when the two already disagree beyond
        MAX_CALIBRATED_DIFF (different checkpoints), or beyond an explicit probe_tolerance.
        """
        engine_lp, trainer_lp = self._probe_logprobs(model)
        diff = mean_abs_difference(engine_lp, trainer_lp)
        ceiling = self.probe_tolerance if self._tolerance_given else MAX_CALIBRATED_DIFF.get(self.dtype, self.probe_tolerance)
        failure = None
        if not diff <= ceiling:
            why = "probe_tolerance" if self._tolerance_given else "the most two kernels of one model disagree"
            failure = (
                f"before any update the engine and the trainer already differ by {diff:.3g} on the probe ({self.dtype}), "
                f"above {ceiling:g} ({why}): they do not hold the same weights (engine built from another checkpoint "
                "or dtype?)" + ("; or raise rollout.probe_tolerance" if self._tolerance_given else "")
            )
        raise_if_any_rank_failed(failure)
        if not self._tolerance_given:
            self.probe_tolerance = max(self.probe_tolerance, CALIBRATION_FACTOR * diff)
        self.calibrated_diff = diff
        n = len(self._probe.sequences)
        self._last_probe = ProbeState(engine_lp[:n], trainer_lp[:n], mean_abs_difference(engine_lp[:n], trainer_lp[:n]))
        return diff

    def sync_from(self, model, *, verify: bool = True, version: int | None = None,
                  named_tensors: Iterable[tuple[str, torch.Tensor]] | None = None) -> SyncReport:
        """Load `model`'s weights (LoRA merged, tied weights included), then check the probe.

        Raises WeightSyncError when the mean absolute logprob difference on the probe exceeds
        `probe_tolerance`, naming the tensors that explain it where it can find them. `version`
        sets the weight version instead of counting up (a resumed run continues its numbering).
        `named_tensors`, when given, is what gets loaded instead of reading `model` (a ZeRO-3
        trainer passes its module-by-module gather); the probe still runs `model`'s forward.
        """
        start = time.perf_counter()
        self.load_weights(merged_named_tensors(model) if named_tensors is None else named_tensors)
        if version is not None:
            self._weight_version = version
        diff = self.verify(model) if verify else float("nan")
        return SyncReport(self.weight_version, diff, time.perf_counter() - start)

    def verify(self, model) -> float:
        """Probe difference between the engine and `model`; raises WeightSyncError above tolerance.

        First the tensors: each one the engine computes with must hold exactly the trainer's values
        rounded to the engine dtype (`_tensor_mismatch`), which catches one stale or missing layer
        that moves bf16 logprobs less than the kernels' own disagreement. Then the probe, the worse
        of two checks counting: the probe sequences scored teacher-forced, and greedy continuations
        of the whole probe sequences, which go through the generation path (and any KV prefix cache
        the engine keeps) that rollouts use; this also sees state outside the weights.
        """
        engine_lp, trainer_lp = self._probe_logprobs(model)
        diff = mean_abs_difference(engine_lp, trainer_lp)
        n = len(self._probe.sequences)
        now = ProbeState(engine_lp[:n], trainer_lp[:n], mean_abs_difference(engine_lp[:n], trainer_lp[:n]))
        try:
            reason = self._tensor_mismatch(model)
        except Exception as error:  # noqa: BLE001 - loud on every rank, not an exception before the collective
            reason = f"the per-tensor check could not run ({type(error).__name__}: {error}); set rollout.verify_sync=false to skip all checks"
        if reason is None and not diff <= self.probe_tolerance:  # also catches nan
            reason = f"probe logprob difference {diff:.3g} > tolerance {self.probe_tolerance:g} ({self.dtype})"
        if reason is None:
            reason = self._staleness(self._last_probe, now, PROBE_NOISE_FLOOR.get(self.dtype, 0.0))
        # Every rank verifies its own engine; a failure on one must stop all of them here, not leave
        # the others to wait in the next collective until the NCCL timeout.
        raise_if_any_rank_failed(self._diagnosed(model, reason) if reason else None)
        self._last_probe = now
        return diff

    @staticmethod
    def _staleness(before: ProbeState | None, now: ProbeState, noise_floor: float = 0.0) -> str | None:
        """Why the engine still computes with the pre-update weights, or None.

        The tolerance alone cannot see it: in half precision it exceeds what a small-lr step moves
        the probe. Only the teacher-forced sequences are compared (greedy continuations change with
        the weights). Two checks, each where it is decisive, with noise = the engine/trainer
        difference of the previous version, at least the dtype's PROBE_NOISE_FLOOR:
        - the trainer moved by more than noise / 10 but the engine's probe values are bit-identical:
          nothing was loaded (below that, a half-precision engine may legitimately round a tiny
          update of full-precision weights back to the same values);
        - the trainer moved by more than twice the noise: the engine must be closer to the new
          trainer than to the pre-update one.
        """
        if before is None:
            return None
        moved = mean_abs_difference(now.trainer, before.trainer)
        noise = max(before.diff, noise_floor)
        if not moved > noise / 10:
            return None
        if now.engine == before.engine:
            return (f"the trainer's probe logprobs moved by {moved:.3g} since the last verified version but the engine's "
                    "did not change at all: the load did not reach the weights the engine computes with")
        if moved > 2 * noise:
            to_new = mean_abs_difference(now.engine, now.trainer)
            to_old = mean_abs_difference(now.engine, before.trainer)
            if not to_new < to_old:
                return (f"the engine is closer to the pre-update trainer ({to_old:.3g}) than to the updated one "
                        f"({to_new:.3g}; the update moved the probe by {moved:.3g}): it is (partly) stale")
        return None

    def _tensor_mismatch(self, model) -> str | None:
        """Which engine tensors differ from the trainer's, compared as bit sums in the engine dtype, or None.

        The reference is what the last load sent; a checkpoint tensor it did not send (a partial
        load) is taken from the trainer's model instead, where that is local (not ZeRO-3). An engine
        tensor is judged when all of its parts are known: the tensors the engine keeps in another
        layout (vLLM's repacked CPU linear weights) and the parts nobody can read are left to the probe.
        """
        dtype = bit_dtype(self.dtype)
        engine = self._engine_bit_sums(dtype) if dtype is not None else {}
        if not engine:
            return None
        reference = dict(self._sent_sums)
        parts: dict[str, list[str]] = {}
        for name in self._expected_names | set(reference):
            parts.setdefault(self._engine_name(name), []).append(name)
        unknown = {n for target, names in parts.items() if target in engine for n in names if n not in reference}
        if unknown and not _partitioned(model):
            reference.update(bit_sums(((n, t) for n, t in merged_named_tensors(model) if n in unknown), dtype))
        judged = [t for t, names in parts.items() if t in engine and all(n in reference for n in names)]
        self.tensors_checked = (len(judged), len(engine))
        differ = sorted(t for t in judged if wrap64(sum(reference[n] for n in parts[t])) != engine[t])
        if not differ:
            return None
        shown = [t if parts[t] == [t] else f"{t} (from {', '.join(sorted(parts[t]))})" for t in differ[:4]]
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        return (f"{len(differ)} of the engine's tensors do not hold the trainer's values ({self.dtype}, exact): "
                f"{'; '.join(shown)}{more}")

    def _diagnosed(self, model, reason: str) -> str:
        """`_failure`, or the plain reason if the diagnosis itself fails: an exception here, before
        the collective in `raise_if_any_rank_failed`, would leave the other ranks waiting in it."""
        try:
            return self._failure(model, reason)
        except Exception as error:  # noqa: BLE001 - the sync failed either way; say so on every rank
            return f"weight sync v{self.weight_version} failed: {reason} (diagnosis failed: {error})"

    def _failure(self, model, reason: str) -> str:
        """The one-line message of a failed sync, with the tensors that explain it where found."""
        trainer = dict(merged_named_tensors(model))
        # Under ZeRO-3 the local parameters are empty partitions: comparing them with what was sent
        # would report every tensor as changed, so the trainer side is left out of the diagnosis.
        detail = describe_mismatch(self._expected_names, self._sent_sums, bit_dtype(self.dtype) or torch.float32,
                                   None if _partitioned(model) else trainer, self._engine_tensors(set(trainer)))
        return f"weight sync v{self.weight_version} failed: {reason}; {detail}"

    def _probe_logprobs(self, model) -> tuple[list[list[float]], list[list[float]]]:
        """(engine, trainer) logprobs: the probe sequences teacher-forced, then greedy continuations.

        The greedy continuations extend the whole probe sequences, so one trainer forward per
        sequence scores both parts (its prompt is most of the cost). Only the generation path reads
        the engine's KV prefix cache (prompt-logprob requests skip it), and `_warm_probe` filled
        that cache with these same prompts before the load."""
        sequences = self._probe.sequences
        engine_lp = self.score(sequences)
        greedy = SamplingSettings(max_tokens=self._probe.greedy_tokens, temperature=0.0, seed=0)
        generated = [group[0] for group in self.generate(self._greedy_prompts(), 1, greedy)]
        engine_lp += [g.logprobs for g in generated]
        joint = model_logprobs(model, [(p, c + g.token_ids) for (p, c), g in zip(sequences, generated)])
        trainer_lp = [lp[: len(c)] for lp, (_, c) in zip(joint, sequences)]
        trainer_lp += [lp[len(c):] for lp, (_, c) in zip(joint, sequences)]
        return engine_lp, trainer_lp

    def _before_load(self) -> None:
        """Hook run just before weights are replaced (engines with a KV prefix cache warm the probe)."""

    def _warm_probe(self) -> None:
        """Run the probe's generation path, so the KV cache holds the probe prompts under the
        current weights; a load that leaves that cache stale then shows up in `verify`."""
        self.generate(self._greedy_prompts(), 1, SamplingSettings(max_tokens=1, temperature=0.0))

    def _greedy_prompts(self) -> list[list[int]]:
        """What the probe's greedy check continues: each whole probe sequence."""
        return [list(p) + list(c) for p, c in self._probe.sequences]


def _partitioned(model) -> bool:
    """Whether the model's parameters are ZeRO-3 partitions (empty locally, gathered on use)."""
    return any(getattr(p, "ds_numel", None) is not None and p.numel() == 0 for p in model.parameters())


def raise_if_any_rank_failed(message: str | None) -> None:
    """Raise WeightSyncError on every rank when any rank's check failed (`message` is this rank's
    failure or None). Collective when torch.distributed runs with more than one process: every rank
    must call it at the same point. The first failing rank's message is raised everywhere."""
    messages = [message]
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        messages = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(messages, message)
    failed = [(rank, m) for rank, m in enumerate(messages) if m]
    if not failed:
        return
    rank, first = failed[0]
    if len(messages) == 1:
        raise WeightSyncError(first)
    others = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
    raise WeightSyncError(f"rank {rank}{others}: {first}")


def iter_named(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Validate names on the way through: a one-line error instead of a deep stack trace."""
    for item in named_tensors:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], torch.Tensor)):
            raise TypeError(f"load_weights: expected (name, tensor) pairs, got {type(item).__name__}; pass model.state_dict().items()")
        yield item
