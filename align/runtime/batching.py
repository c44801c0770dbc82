"""From rollouts to padded tensors, and token-budget micro-batches.

Layout of one training sequence, as TRL also uses it: the prompt is LEFT-padded to the batch's
longest prompt and the completion RIGHT-padded to the longest completion, so every completion
starts at the same column. The model then only has to produce logits for the last T+1 positions
(`logits_to_keep`), and position ids are computed from the attention mask so that a left-padded
prompt sees the same positions as in the rollout engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PaddedSequences:
    """A micro-batch ready for the model. B sequences, prompt width Lp, completion width T."""

    input_ids: torch.Tensor  # [B, Lp + T] long
    attention_mask: torch.Tensor  # [B, Lp + T] long
    position_ids: torch.Tensor  # [B, Lp + T] long
    completion_ids: torch.Tensor  # [B, T] long (pad where mask is 0)
    completion_mask: torch.Tensor  # [B, T] float, 1 on real completion tokens
    index: torch.Tensor  # [B] long: row of each sequence in the flattened [P*G] step batch


def pad_sequences(
    prompts: list[list[int]],
    completions: list[list[int]],
    index: list[int],
    pad_id: int,
    device: torch.device | str = "cpu",
) -> PaddedSequences:
    """Left-pad prompts, right-pad completions, and build masks and position ids."""
    lp = max(len(p) for p in prompts)
    t = max(1, max(len(c) for c in completions))
    ids = torch.full((len(prompts), lp + t), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for row, (p, c) in enumerate(zip(prompts, completions)):
        ids[row, lp - len(p) : lp] = torch.tensor(p, dtype=torch.long)
        attn[row, lp - len(p) : lp] = 1
        if c:
            ids[row, lp : lp + len(c)] = torch.tensor(c, dtype=torch.long)
            attn[row, lp : lp + len(c)] = 1
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    return PaddedSequences(
        input_ids=ids.to(device),
        attention_mask=attn.to(device),
        position_ids=positions.to(device),
        completion_ids=ids[:, lp:].to(device),
        completion_mask=attn[:, lp:].float().to(device),
        index=torch.tensor(index, dtype=torch.long, device=device),
    )


def token_budget_groups(lengths: list[tuple[int, int]], max_tokens: int, sizes: list[int] | None = None) -> list[list[int]]:
    """Split unit indices into micro-batches whose padded size stays within `max_tokens`.

    A unit is one sequence, or (with `sizes`) a block of sizes[i] sequences that must stay
    together: a whole group, when the loss couples its members. `lengths` holds the unit's
    (prompt_len, completion_len), for a block the longest of its members. Units are sorted by
    total length so similar lengths share a micro-batch (less padding); a unit larger than the
    budget still gets a micro-batch of its own. The loss is a sum of per-micro-batch contributions
    with global normalisers, so grouping never changes the result.
    """
    sizes = [1] * len(lengths) if sizes is None else sizes
    order = sorted(range(len(lengths)), key=lambda i: sum(lengths[i]), reverse=True)
    groups: list[list[int]] = []
    current: list[int] = []
    rows = max_p = max_c = 0
    for i in order:
        p, c = lengths[i]
        new_p, new_c = max(max_p, p), max(max_c, c)
        if current and (rows + sizes[i]) * (new_p + new_c) > max_tokens:
            groups.append(current)
            current, rows, new_p, new_c = [], 0, p, c
        current.append(i)
        rows += sizes[i]
        max_p, max_c = new_p, new_c
    if current:
        groups.append(current)
    return groups


def completion_logits(model, seqs: PaddedSequences) -> torch.Tensor:
    """Logits [B, T, V] predicting each completion token (one forward pass, last T+1 positions)."""
    t = seqs.completion_ids.shape[1]
    out = model(
        input_ids=seqs.input_ids,
        attention_mask=seqs.attention_mask,
        position_ids=seqs.position_ids,
        logits_to_keep=t + 1,
        use_cache=False,
    )
    return out.logits[:, :-1]
