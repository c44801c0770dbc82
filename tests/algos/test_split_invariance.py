"""Property: loss AND gradient of one optimizer step do not depend on how the batch is split.

The whole batch is processed (a) at once, (b) as micro-batches with gradient accumulation and
(c) as simulated data-parallel ranks, each with its own micro-batches; the shards' contributions
are summed (what accumulation does locally; across ranks, a DDP mean all-reduce needs the loss
scaled by the world size). The shards receive the GLOBAL num_tokens / num_seqs.
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from align.algos import AGG_MODES, grpo_loss

F64 = torch.float64


def _batch(seed: int, rows: int, length: int):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(rows, length, generator=g, dtype=F64) * 3
    old = logp + torch.randn(rows, length, generator=g, dtype=F64) * 0.3  # stale: clipping binds
    ref = logp + torch.randn(rows, length, generator=g, dtype=F64) * 0.3
    lengths = torch.randint(0, length + 1, (rows,), generator=g)  # 0 = an empty completion
    mask = (torch.arange(length) < lengths.unsqueeze(1)).long()
    adv = torch.randn(rows, generator=g, dtype=F64)
    return logp, old, ref, mask, adv


def _split_points(draw_sizes: list[int], total: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) row ranges from a list of positive sizes, the last one absorbing the rest."""
    ranges, start = [], 0
    for size in draw_sizes:
        if start >= total:
            break
        ranges.append((start, min(start + size, total)))
        start += size
    if start < total:
        ranges.append((start, total))
    return ranges


def _loss_and_grad(logp, old, ref, mask, adv, ranges, kwargs, num_tokens, num_seqs):
    leaf = logp.clone().requires_grad_()
    total = torch.zeros((), dtype=F64)
    for start, end in ranges:
        rows = slice(start, end)
        # A stand-in for the entropy with a gradient (the bonus, when entropy_coef > 0)
        loss, _ = grpo_loss(
            leaf[rows], old[rows], adv[rows], mask[rows], ref_logp=ref[rows], entropy=leaf[rows] ** 2,
            num_tokens=num_tokens, num_seqs=num_seqs, entropy_tokens=num_tokens, **kwargs,
        )
        loss.backward()  # accumulate, as a trainer does per micro-batch
        total = total + loss.detach()
    return total, leaf.grad


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 9),
    length=st.integers(1, 6),
    mode=st.sampled_from(AGG_MODES),
    ratio_level=st.sampled_from(["token", "sequence"]),
    beta=st.sampled_from([0.0, 0.05]),
    micro_sizes=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    num_ranks=st.integers(1, 3),
    surrogate=st.sampled_from(["clip", "cispo", "sapo", "vespo"]),
    entropy_coef=st.sampled_from([0.0, 0.1]),
)
def test_grpo_loss_and_gradient_are_split_invariant(
    seed, rows, length, mode, ratio_level, beta, micro_sizes, num_ranks, surrogate, entropy_coef
):
    logp, old, ref, mask, adv = _batch(seed, rows, length)
    options = {"clip": None, "cispo": {"cispo_cap": 1.1}, "sapo": {"sapo_tau_neg": 2.0}, "vespo": {"vespo_k_pos": 1.0}}
    kwargs = dict(agg=mode, const_len=length, beta=beta, ratio_level=ratio_level, eps_high=0.28, dual_clip=3.0,
                  surrogate=surrogate, surrogate_options=options[surrogate], entropy_coef=entropy_coef)
    whole_loss, whole_grad = _loss_and_grad(logp, old, ref, mask, adv, [(0, rows)], kwargs, None, None)

    num_tokens, num_seqs = float(mask.sum()), float(rows)
    micro = _split_points(micro_sizes, rows)
    acc_loss, acc_grad = _loss_and_grad(logp, old, ref, mask, adv, micro, kwargs, num_tokens, num_seqs)
    torch.testing.assert_close(acc_loss, whole_loss)
    torch.testing.assert_close(acc_grad, whole_grad)

    # data parallel: rank r holds a contiguous slice and runs its own micro-batches over it
    per_rank = -(-rows // num_ranks)
    rank_loss, rank_grad = torch.zeros((), dtype=F64), torch.zeros_like(logp)
    for start in range(0, rows, per_rank):
        end = min(start + per_rank, rows)
        local = [(start + a, start + b) for a, b in _split_points(micro_sizes, end - start)]
        loss, grad = _loss_and_grad(logp, old, ref, mask, adv, local, kwargs, num_tokens, num_seqs)
        rank_loss, rank_grad = rank_loss + loss, rank_grad + grad  # the all-reduce (sum)
    torch.testing.assert_close(rank_loss, whole_loss)
    torch.testing.assert_close(rank_grad, whole_grad)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(2, 8), mode=st.sampled_from(["token_mean", "seq_sum_const"]))
def test_local_normalisers_are_not_split_invariant(seed, rows, mode):
    """Why the global counts matter: with per-micro-batch normalisers token_mean/seq_sum_const change value."""
    logp, old, ref, _, adv = _batch(seed, rows, 4)
    mask = torch.zeros(rows, 4, dtype=torch.long)
    mask[0] = 1  # one long completion in the first half, short ones after
    mask[1:, 0] = 1
    kwargs = dict(agg=mode, const_len=4)
    whole, _ = grpo_loss(logp, old, adv, mask, **kwargs)
    split = sum(grpo_loss(logp[r], old[r], adv[r], mask[r], **kwargs)[0] for r in (slice(0, 1), slice(1, rows)))
    global_split = sum(
        grpo_loss(logp[r], old[r], adv[r], mask[r], num_tokens=float(mask.sum()), num_seqs=float(rows), **kwargs)[0]
        for r in (slice(0, 1), slice(1, rows))
    )
    torch.testing.assert_close(global_split, whole)
    assert not torch.allclose(split, whole)


# ---- losses that couple the members of a group: split by whole groups, global prompt/group counts ----


def _group_batch(seed: int, prompts: int, group: int, length: int):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(prompts, group, length, generator=g, dtype=F64) * 3
    lengths = torch.randint(0, length + 1, (prompts, group), generator=g)
    mask = (torch.arange(length) < lengths.unsqueeze(-1)).long()
    logp_y = -torch.rand(prompts, length, generator=g, dtype=F64) * 3
    mask_y = (torch.arange(length) < torch.randint(1, length + 1, (prompts, 1), generator=g)).long()
    rewards = torch.randint(-1, 2, (prompts, group), generator=g).to(F64)
    valid = torch.rand(prompts, group, generator=g) > 0.2
    ref = logp + torch.randn(prompts, group, length, generator=g, dtype=F64) * 0.3
    return logp, mask, logp_y, mask_y, rewards, valid, ref


def _grao(leaf_o, leaf_y, data, rows, totals):
    from align.algos import grao_advantages, grao_loss

    _, mask, _, mask_y, rewards, valid, _ = data
    a_o, a_y = grao_advantages(rewards, torch.zeros(rewards.shape[0], dtype=F64), valid=valid)  # over the whole batch
    loss, _ = grao_loss(leaf_o[rows], mask[rows], leaf_y[rows], mask_y[rows], a_o[rows], a_y[rows], beta=0.5, lam=0.6,
                        num_prompts=totals["prompts"])
    return loss


def _copg(leaf_o, leaf_y, data, rows, totals):
    from align.algos import copg_loss, seq_logprob

    _, mask, _, _, rewards, valid, ref = data
    P, G, T = leaf_o[rows].shape
    seq = seq_logprob(leaf_o[rows].reshape(P * G, T), mask[rows].reshape(P * G, T)).reshape(P, G)
    seq_ref = seq_logprob(ref[rows].reshape(P * G, T), mask[rows].reshape(P * G, T)).reshape(P, G)
    loss, _ = copg_loss(seq, seq_ref, rewards[rows], beta=0.1, valid=valid[rows], num_groups=totals["groups"])
    return loss


def _group_loss_and_grads(loss_fn, data, ranges, totals):
    leaf_o, leaf_y = data[0].clone().requires_grad_(), data[2].clone().requires_grad_()
    total = torch.zeros((), dtype=F64)
    for start, end in ranges:
        loss = loss_fn(leaf_o, leaf_y, data, slice(start, end), totals)
        loss.backward()
        total = total + loss.detach()
    grad_y = leaf_y.grad if leaf_y.grad is not None else torch.zeros_like(leaf_y)
    return total, leaf_o.grad, grad_y


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    prompts=st.integers(1, 7),
    group=st.integers(1, 4),
    length=st.integers(1, 5),
    algo=st.sampled_from(["grao", "copg"]),
    micro_sizes=st.lists(st.integers(1, 3), min_size=1, max_size=5),
    num_ranks=st.integers(1, 3),
)
def test_grao_and_copg_loss_and_gradient_are_split_invariant_over_whole_groups(
    seed, prompts, group, length, algo, micro_sizes, num_ranks
):
    data = _group_batch(seed, prompts, group, length)
    loss_fn = {"grao": _grao, "copg": _copg}[algo]
    # the global normalisers: prompts (GRAO), prompts with >= 2 valid members (CoPG)
    totals = {"prompts": float(prompts), "groups": float((data[5].sum(1) >= 2).sum())}
    whole = _group_loss_and_grads(loss_fn, data, [(0, prompts)], {"prompts": None, "groups": None})
    micro = _group_loss_and_grads(loss_fn, data, _split_points(micro_sizes, prompts), totals)
    per_rank = -(-prompts // num_ranks)
    ranks = [_group_loss_and_grads(loss_fn, data, [(start + a, start + b) for a, b in
                                                    _split_points(micro_sizes, min(start + per_rank, prompts) - start)], totals)
             for start in range(0, prompts, per_rank)]
    ranked = tuple(sum(parts[i] for parts in ranks) for i in range(3))
    for got in (micro, ranked):
        for g, w in zip(got, whole):
            torch.testing.assert_close(g, w)
