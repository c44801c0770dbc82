"""The weight-sync probe: fixed token sequences scored by engine and trainer, and the diagnosis.

Pure helpers, no engine: `make_probe` draws the sequences once from a seed, `model_logprobs` scores
any HF/peft causal LM the way the trainer does (float32 log_softmax), `bit_sum` compares tensors
exactly as an engine stores them, and `describe_mismatch` turns those sums into the names of the
tensors that explain a failed sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

Sequences = list[tuple[list[int], list[int]]]


@dataclass(frozen=True)
class Probe:
    sequences: Sequences  # (prompt ids, completion ids), scored teacher-forced
    greedy_tokens: int  # tokens generated greedily after each whole sequence (generation-path check)


def make_probe(vocab_size: int, seed: int, num_sequences: int = 2, prompt_len: int = 144,
               completion_len: int = 8, greedy_tokens: int = 4) -> Probe:
    """Random token sequences, the same for the same arguments.

    prompt_len defaults to more than one vLLM CPU KV block (128 tokens): only full blocks are
    prefix-cached, and the probe must hit that cache to notice it going stale. Two sequences: a
    missed tensor or a stale cache moves every probe token, so 2 x 8 teacher-forced and 2 x 4
    greedy tokens catch both (tests/rollout/test_sync.py); each sequence costs a forward on the
    engine and on the trainer after every sync (~0.5 s together for SmolLM2-135M on 2 CPU cores,
    where 4 sequences made sync + probe 15% of a step).
    """
    gen = torch.Generator().manual_seed(seed)
    draw = lambda k: torch.randint(0, vocab_size, (k,), generator=gen).tolist()  # noqa: E731
    sequences = [(draw(prompt_len), draw(completion_len)) for _ in range(num_sequences)]
    return Probe(sequences, greedy_tokens)


@torch.no_grad()
def model_logprobs(model, sequences: Sequences, batch_size: int = 8) -> list[list[float]]:
    """log p(completion[t] | prompt, completion[:t]) under `model` (HF or peft), float32 log_softmax.

    Scored exactly as the trainer scores rollouts (align.runtime.batching: prompts left-padded,
    completions right-padded, position ids from the mask, logits only for the completion
    positions), in batches of `batch_size`. The LM head over a large vocabulary is then applied to
    the few completion positions only, not the whole probe prompt: for SmolLM2 (49k vocab) that is
    about a fifth of this forward. Dropout is off for the call (train/eval mode restored after).
    """
    # Imported here: align.algorithms imports align.rollout, so a module-level import would be circular.
    from align.runtime.batching import completion_logits, pad_sequences

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out: list[list[float]] = []
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start : start + batch_size]
            padded = pad_sequences([list(p) for p, _ in batch], [list(c) for _, c in batch], list(range(len(batch))),
                                   pad_id=0, device=device)
            logp = torch.log_softmax(completion_logits(model, padded).float(), dim=-1)
            picked = logp.gather(-1, padded.completion_ids[..., None])[..., 0]
            out += [picked[row, : len(c)].tolist() for row, (_, c) in enumerate(batch)]
        return out
    finally:
        model.train(was_training)


def mean_abs_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """Mean |a - b| over all tokens of ragged per-sequence lists; nan when lengths disagree."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return float("nan")
    flat_a = torch.tensor([v for row in a for v in row], dtype=torch.float64)
    flat_b = torch.tensor([v for row in b for v in row], dtype=torch.float64)
    return float((flat_a - flat_b).abs().mean()) if flat_a.numel() else 0.0


# Elements per slice in bit sums: a bounded temporary (32 MiB of int64) even for a 7B embedding.
BIT_SUM_CHUNK = 1 << 22
_BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
# v + K * v^2 per element: the square term keeps opposite changes of two elements (+1 and -1 in
# their bit patterns, which a small optimizer step makes often in bf16) from cancelling out.
_SQUARE_WEIGHT = 2654435761


def bit_dtype(dtype: str) -> torch.dtype | None:
    """The torch dtype of an engine dtype name whose values `bit_sum` can compare, or None."""
    found = getattr(torch, dtype, None)
    return found if found in _BITS else None


def wrap64(value: int) -> int:
    """`value` as the signed 64-bit integer torch's int64 sums wrap around to."""
    return (value + (1 << 63)) % (1 << 64) - (1 << 63)


@torch.no_grad()
def bit_sum(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A checksum of `tensor` rounded to `dtype`, exact and additive (int64, on its device, no host sync).

    Sum over elements of v + K v^2, v = the element's bit pattern as an integer, in wrapping int64
    arithmetic. The cast rounds the way an engine's weight loader does (copy_ into a `dtype`
    parameter); a sum does not depend on the order, so a fused parameter (vLLM's qkv_proj = q, k, v)
    sums to the sum of its parts (`wrap64` of their total) and a reordered copy to the same value.
    Any change of any elements changes it, except by coincidence.
    """
    flat = tensor.detach().reshape(-1)
    total = torch.zeros((), dtype=torch.int64, device=flat.device)
    for chunk in flat.split(BIT_SUM_CHUNK):
        v = chunk.to(dtype).view(_BITS[dtype]).long()
        total += (v + _SQUARE_WEIGHT * v * v).sum()
    return total


def bit_sums(named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype) -> dict[str, int]:
    """{name: bit_sum} as Python ints, read back with one host sync per device."""
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in named:
        total = bit_sum(tensor, dtype)
        by_device.setdefault(total.device, []).append((name, total))
    out: dict[str, int] = {}
    for pairs in by_device.values():
        out.update(zip([n for n, _ in pairs], torch.stack([t for _, t in pairs]).tolist()))
    return out


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@torch.no_grad()
def describe_mismatch(expected: set[str], sent: Mapping[str, int], dtype: torch.dtype,
                      trainer: Mapping[str, torch.Tensor] | None, engine: Mapping[str, torch.Tensor]) -> str:
    """Name the tensors that explain a failed sync, most direct evidence first.

    expected: checkpoint names the engine holds; sent: bit sums in `dtype` of the last load; trainer: the
    trainer's tensors now, or None where they are not local (ZeRO-3 partitions); engine: tensors
    read back from the engine (any subset, checkpoint names).
    """
    if trainer is None:
        not_sent = sorted(expected - set(sent))
        found = f"not sent in the last load: {_names(not_sent)}; " if not_sent else ""
        return (f"{found}the trainer's tensors are ZeRO-3 partitions, so they were not compared with the "
                f"{len(sent)} tensors sent")
    findings = []
    not_sent = sorted((expected | set(trainer)) - set(sent))
    if not_sent:
        findings.append(f"not sent in the last load: {_names(not_sent)}")
    now = bit_sums(((n, trainer[n]) for n in sent if n in trainer), dtype)
    changed = sorted(n for n, total in now.items() if total != sent[n])
    if changed:
        findings.append(f"changed in the trainer since they were sent: {_names(changed)}")
    differs = sorted(
        n for n, t in engine.items()
        if n in trainer and t.shape == trainer[n].shape
        and not torch.allclose(t.float().cpu(), trainer[n].float().cpu(), atol=1e-6, rtol=1e-5)
    )
    if differs:
        findings.append(f"engine holds different values for: {_names(differs)}")
    if findings:
        return "; ".join(findings)
    return (f"all {len(sent)} tensors were sent and match the trainer's ({len(engine)} read back from the "
            "engine agree), so the engine computes with stale state (a KV prefix cache not reset after the "
            "load?) or the trainer's model is not the one the engine was built from")
