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


@dataclass
class PackedSequences:
    """A micro-batch with shared prompts: N packed sequences of width L for B completion rows.

    Each packed sequence is one prompt followed by the completions of every row that has exactly
    that prompt, `[prompt, c1, ..., ck]`, with no padding between them (right padding only, to the
    longest packed sequence of the micro-batch). Completion i attends to the prompt and causally to
    itself, never to its siblings, and its position ids restart at the prompt's end, so each token
    sees exactly what it sees in its own sequence: the same log-probs, with the prompt computed
    once. Rows whose prompt no other row shares get a packed sequence of their own (no sharing).
    The completion fields have the [B, T] layout and row order of `PaddedSequences`.
    """

    input_ids: torch.Tensor  # [N, L] long
    attention_mask: torch.Tensor  # [N, 1, L, L] bool: True where a query position may attend a key position
    position_ids: torch.Tensor  # [N, L] long
    keep: torch.Tensor  # [K] long: the columns whose logits are computed (those predicting a completion token)
    source: torch.Tensor  # [B, T] long: row of the flattened [N * K] logits that predicts each completion token
    completion_ids: torch.Tensor  # [B, T] long (pad where mask is 0)
    completion_mask: torch.Tensor  # [B, T] float, 1 on real completion tokens
    index: torch.Tensor  # [B] long: row of each sequence in the flattened [P*G] step batch


def shared_prompt_packs(prompts: list[list[int]]) -> list[list[int]]:
    """Rows grouped by identical prompt ids, in order of first appearance: one packed sequence each."""
    packs: dict[tuple[int, ...], list[int]] = {}
    for row, prompt in enumerate(prompts):
        packs.setdefault(tuple(prompt), []).append(row)
    return list(packs.values())


def forward_shape(prompts: list[list[int]], completions: list[list[int]], shared_prompt: bool) -> tuple[int, int]:
    """(sequences, width) of the tensor the model is given for these rows: `pack_shared_prompts`'
    when shared_prompt, else `pad_sequences`'. Their product is the micro-batch's forwarded tokens."""
    if not shared_prompt:
        return len(prompts), max(len(p) for p in prompts) + max(1, max(len(c) for c in completions))
    packs = shared_prompt_packs(prompts)
    return len(packs), max(len(prompts[rows[0]]) + sum(len(completions[r]) for r in rows) for rows in packs)


def pack_shared_prompts(
    prompts: list[list[int]],
    completions: list[list[int]],
    index: list[int],
    pad_id: int,
    device: torch.device | str = "cpu",
) -> PackedSequences:
    """Pack rows that share a prompt into `[prompt, c1, ..., ck]` with a block attention mask."""
    if any(not p for p in prompts):
        raise ValueError("pack_shared_prompts: every row needs a prompt of at least one token")
    packs = shared_prompt_packs(prompts)
    n, width = forward_shape(prompts, completions, shared_prompt=True)
    t = max(1, max(len(c) for c in completions))
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    allow = torch.zeros((n, width, width), dtype=torch.bool)
    completion_ids = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    completion_mask = torch.zeros(len(prompts), t)
    predictor = torch.zeros((len(prompts), t), dtype=torch.long)  # column in its packed sequence
    for seq, rows in enumerate(packs):
        prompt = prompts[rows[0]]
        lp = len(prompt)
        ids[seq, :lp] = torch.tensor(prompt, dtype=torch.long)
        positions[seq, :lp] = torch.arange(lp)
        allow[seq, :lp, :lp] = torch.ones(lp, lp, dtype=torch.bool).tril()
        start = lp
        for row in rows:
            c = completions[row]
            end = start + len(c)
            if c:
                ids[seq, start:end] = completion_ids[row, : len(c)] = torch.tensor(c, dtype=torch.long)
                completion_mask[row, : len(c)] = 1.0
                positions[seq, start:end] = torch.arange(lp, lp + len(c))
                allow[seq, start:end, :lp] = True  # the prompt
                allow[seq, start:end, start:end] = torch.ones(len(c), len(c), dtype=torch.bool).tril()  # itself
                # token j is predicted at the prompt's last column (j = 0) or at the token before it
                predictor[row, : len(c)] = torch.cat([torch.tensor([lp - 1]), torch.arange(start, end - 1)])
            start = end
        pad = torch.arange(start, width)
        allow[seq, pad, pad] = True  # padding sees itself only: a softmax over no key would be NaN
    # The LM head runs on the union of predicting columns only (one index list for the whole batch).
    pack_of = torch.empty(len(prompts), dtype=torch.long)
    for seq, rows in enumerate(packs):
        pack_of[rows] = seq
    used = torch.zeros(width, dtype=torch.bool)
    for row, c in enumerate(completions):
        used[predictor[row, : len(c)]] = True
    used[0] |= not used.any()  # every completion empty: keep one column so shapes stay valid
    keep = used.nonzero().squeeze(-1)
    column = torch.full((width,), -1, dtype=torch.long)
    column[keep] = torch.arange(len(keep))
    source = pack_of[:, None] * len(keep) + column[predictor].clamp(min=0)  # padding tokens read any valid row
    return PackedSequences(
        input_ids=ids.to(device),
        attention_mask=allow[:, None].to(device),
        position_ids=positions.to(device),
        keep=keep.to(device),
        source=source.to(device),
        completion_ids=completion_ids.to(device),
        completion_mask=completion_mask.to(device),
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


def shared_prompt_budget_groups(
    groups: list[list[int]], prompt_lens: list[int], completion_lens: list[int], max_tokens: int
) -> list[list[list[int]]]:
    """Micro-batches for the packed layout: lists of parts, each part rows of one group (one prompt).

    `groups` holds the rows of each prompt, `prompt_lens` its prompt length, `completion_lens` the
    length of each row. A part costs its prompt once plus its completions; a micro-batch of N parts
    costs N x its longest part (right padding). A group that alone exceeds `max_tokens` is cut,
    in row order, into parts that fit (each repeats the prompt, still exact; a single row over the
    budget is a part of its own). Parts are then grouped like `token_budget_groups`' units.
    """
    parts: list[list[int]] = []
    lengths: list[tuple[int, int]] = []  # (0, packed length): token_budget_groups' cost is then N x the longest
    for rows, lp in zip(groups, prompt_lens):
        part, packed = [], lp
        for r in rows:
            if part and packed + completion_lens[r] > max_tokens:
                parts.append(part)
                lengths.append((0, packed))
                part, packed = [], lp
            part.append(r)
            packed += completion_lens[r]
        if part:
            parts.append(part)
            lengths.append((0, packed))
    return [[parts[i] for i in unit] for unit in token_budget_groups(lengths, max_tokens)]


def split_parts_to_count(micro_batches: list[list[list[int]]], count: int) -> list[list[list[int]]]:
    """Split the micro-batches with the most rows in two until there are `count` of them.

    A micro-batch of several parts is split between its parts; one of a single part between its
    rows (two parts of one prompt: each repeats the prompt, still exact). Every piece stays within
    the budget its whole was in. Raises ValueError when there are fewer rows than `count`.
    """
    total = sum(len(part) for mb in micro_batches for part in mb)
    if count > total:
        raise ValueError(f"split_parts_to_count: cannot make {count} micro-batches from {total} sequences")
    out = [list(mb) for mb in micro_batches]
    while len(out) < count:
        largest = max(range(len(out)), key=lambda i: sum(len(part) for part in out[i]))
        mb = out.pop(largest)
        if len(mb) > 1:
            half = (len(mb) + 1) // 2
            pieces = [mb[:half], mb[half:]]
        else:
            half = (len(mb[0]) + 1) // 2
            pieces = [[mb[0][:half]], [mb[0][half:]]]
        out[largest:largest] = pieces
    return out


def completion_logits(model, seqs: PaddedSequences | PackedSequences) -> torch.Tensor:
    """Logits [B, T, V] predicting each completion token, in one forward pass.

    Padded: the last T+1 positions. Packed: the LM head over the predicting columns only
    (`logits_to_keep` as an index tensor), then each row's logits gathered into [B, T, V].
    """
    logits = _forward(model, seqs).logits
    if isinstance(seqs, PackedSequences):
        logits = logits.reshape(-1, logits.shape[-1])
        return logits[seqs.source.reshape(-1)].view(*seqs.source.shape, -1)
    return logits[:, :-1]


def _forward(model, seqs: PaddedSequences | PackedSequences):
    """The model's forward with the LM head over the predicting positions only (`logits_to_keep`)."""
    if isinstance(seqs, PackedSequences):
        mask = seqs.attention_mask
        if attention_implementation(model) == "eager":  # eager ADDS the mask to the scores: a bool would add 1
            mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
        return model(input_ids=seqs.input_ids, attention_mask=mask, position_ids=seqs.position_ids,
                     logits_to_keep=seqs.keep, use_cache=False)
    return model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask, position_ids=seqs.position_ids,
                 logits_to_keep=seqs.completion_ids.shape[1] + 1, use_cache=False)


def completion_hidden(model, head: torch.nn.Module, seqs: PaddedSequences | PackedSequences) -> torch.Tensor:
    """The final hidden states [B, T, H] that `completion_logits` would feed the LM head, and no logits.

    The model runs through its wrappers (DDP and DeepSpeed need their own forward for the gradient
    reduction), with a pre-hook on `head` that keeps the hidden states it is given and hands it none
    of them: the head then computes logits for zero positions, and the caller applies it chunk by chunk.
    """
    captured: list[torch.Tensor] = []

    def keep_and_skip(module, args):
        captured.append(args[0])
        return (args[0][..., :0, :],)

    handle = head.register_forward_pre_hook(keep_and_skip)
    try:
        _forward(model, seqs)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"the LM head ran {len(captured)} times in one forward; set train.lm_head_chunk=0")
    hidden = captured[0]
    if isinstance(seqs, PackedSequences):
        flat = hidden.reshape(-1, hidden.shape[-1])
        return flat[seqs.source.reshape(-1)].view(*seqs.source.shape, -1)
    return hidden[:, :-1]


# Attention kernels that take the packed layout's 4D mask as given (transformers returns a 4D mask
# as-is). flash_attention_2 ignores it and flex_attention wants a BlockMask: those train unshared.
PACKED_ATTENTION = ("sdpa", "eager")


def attention_implementation(model) -> str | None:
    """The transformers attention kernel of `model`, through DDP / DeepSpeed / peft wrappers."""
    while hasattr(model, "module"):
        model = model.module
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)
