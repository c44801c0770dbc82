"""GCPO reward shaping: Group Contrastive Masking of the auxiliary-construction reward (ALGORITHMS.md section 2)."""

from __future__ import annotations

import torch

from align.algos._checks import as_valid, check_ndim, check_positive, check_same_shape

# Group accuracy means are k/n fractions: 0.55 - 0.5 is 0.05000000000000004 in float64. A margin this
# small keeps "d exactly = eta -> M = 0" true for them without changing any real decision.
_TIE_TOLERANCE = 1e-9


@torch.no_grad()
def gcpo_contrastive_mask(
    acc: torch.Tensor, aux: torch.Tensor, eps: float = 0.05, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """M[p] in {-1, 0, +1}: does auxiliary construction help on prompt p, judged from its own group?

    acc: [P,G] accuracy reward (0/1); aux: [P,G] bool (used a valid construction); valid: [P,G] bool or
    None. d = mean acc of valid aux users - mean acc of valid non-users; M = +1 if d > eps, -1 if
    d < -eps, else 0 (strict: d = +-eps gives 0). An empty subgroup (all or none used aux) gives 0.
    Returns [P] float32.
    """
    check_ndim("acc", acc, 2, "[P,G]")
    check_same_shape("aux", aux, "acc", acc)
    check_positive("eps", eps, allow_zero=True)
    valid = as_valid(valid, acc, "acc")
    acc64 = torch.where(valid, acc.to(torch.float64), 0.0)
    with_aux = valid & aux.bool()
    without_aux = valid & ~aux.bool()
    n_aux, n_plain = with_aux.sum(1), without_aux.sum(1)
    acc_aux = torch.where(with_aux, acc64, 0.0).sum(1) / n_aux.clamp(min=1)
    acc_plain = torch.where(without_aux, acc64, 0.0).sum(1) / n_plain.clamp(min=1)
    d = acc_aux - acc_plain
    sign = (d > eps + _TIE_TOLERANCE).to(torch.float32) - (d < -eps - _TIE_TOLERANCE).to(torch.float32)
    return torch.where((n_aux > 0) & (n_plain > 0), sign, 0.0)


@torch.no_grad()
def gcpo_rewards(
    acc: torch.Tensor,
    fmt: torch.Tensor,
    aux: torch.Tensor,
    length: torch.Tensor,
    eps: float = 0.05,
    w_aux: float = 0.5,
    w_len: float = 0.5,
    l_max: int = 900,
    gate_aux_on_correct: bool = False,
    gate_len_on_correct: bool = False,
    use_length: bool = True,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GCPO reward R = acc + fmt + M(q) * w_aux * aux + w_len * min(L, l_max) / l_max.

    acc, fmt (the format reward VALUE, e.g. 0.5 or 0), aux (bool), length (response tokens): [P,G].
    The gates multiply the aux / length term by acc (reward them on correct answers only).
    Invalid members get R = 0; exclude them downstream with the same `valid`.
    Returns (R [P,G] float32, M [P] float32).
    """
    check_ndim("acc", acc, 2, "[P,G]")
    for name, tensor in (("fmt", fmt), ("aux", aux), ("length", length)):
        check_same_shape(name, tensor, "acc", acc)
    check_positive("l_max", l_max)
    valid = as_valid(valid, acc, "acc")
    if (valid & (length < 0)).any():
        raise ValueError("length has negative entries; pass the response length in tokens (>= 0)")
    mask = gcpo_contrastive_mask(acc, aux, eps=eps, valid=valid)
    acc64 = acc.to(torch.float64)
    aux_term = mask.to(torch.float64).unsqueeze(1) * w_aux * aux.to(torch.float64)
    if gate_aux_on_correct:
        aux_term = aux_term * acc64
    reward = acc64 + fmt.to(torch.float64) + aux_term
    if use_length:
        len_term = w_len * length.to(torch.float64).clamp(max=l_max) / l_max
        reward = reward + (len_term * acc64 if gate_len_on_correct else len_term)
    return torch.where(valid, reward, 0.0).to(torch.float32), mask
