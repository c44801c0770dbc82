"""Peer check: our GRPO loss equals TRL 1.16's on identical inputs, for each aggregation TRL has.

How TRL's number is obtained: `GRPOTrainer._compute_loss` (trl/trainer/grpo_trainer.py) is called
unchanged on an instance made with `GRPOTrainer.__new__` (no model, no __init__). The instance gets
only the attributes that method reads (loss_type, beta, epsilon_low/high, importance_sampling_level,
max_completion_length, args.delta, ...), an identity "accelerator" for its metric gathers (one
process), and a `_get_per_token_logps_and_entropies` that returns our fixed per-token log-probs
instead of running a model. Everything after that (ratio, clipping, k3 KL, aggregation, clip-ratio
metrics) is TRL's own code. Mapping (ALGORITHMS.md section 6): grpo = seq_mean_token_mean,
bnpo = token_mean, dr_grpo = seq_sum_const with const_len = max_completion_length, dapo =
token_mean with the global token count (num_items_in_batch).
"""

import types
from collections import defaultdict

import pytest
import torch

from align.algos import grpo_loss

pytest.importorskip("trl")
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402  (imports vLLM: ~10 s, once per module)

B, T = 6, 7
OUR_MODE = {"grpo": "seq_mean_token_mean", "bnpo": "token_mean", "dr_grpo": "seq_sum_const", "dapo": "token_mean"}


class _OneProcess:
    num_processes = 1

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def _trl_loss(loss_type, logp, old, ref, mask, adv, beta, eps_low, eps_high, level, delta, num_items):
    trainer = GRPOTrainer.__new__(GRPOTrainer)
    trainer.__dict__.update(
        loss_type=loss_type, beta=beta, epsilon_low=eps_low, epsilon_high=eps_high,
        importance_sampling_level=level, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        use_vllm=False, aux_loss_enabled=False, _entropy_bonus_enabled=False, max_completion_length=T,
        current_gradient_accumulation_steps=1, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        model=types.SimpleNamespace(training=True), accelerator=_OneProcess(),
        args=types.SimpleNamespace(delta=delta, use_bias_correction_kl=False, steps_per_generation=1),
    )
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros_like(logp), None)
    inputs = dict(
        prompt_ids=torch.zeros(B, 1, dtype=torch.long), prompt_mask=torch.ones(B, 1, dtype=torch.long),
        completion_ids=torch.zeros(B, T, dtype=torch.long), completion_mask=mask, advantages=adv,
        old_per_token_logps=old, ref_per_token_logps=ref, num_items_in_batch=num_items,
    )
    return trainer._compute_loss(None, inputs), trainer._metrics["train"]


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g) * 3
    old = logp + torch.randn(B, T, generator=g) * 0.3
    ref = logp + torch.randn(B, T, generator=g) * 0.3
    lengths = torch.tensor([T, 3, 1, 5, 0, 2])  # includes an empty completion
    mask = (torch.arange(T) < lengths.unsqueeze(1)).long()
    adv = torch.randn(B, generator=g)
    return logp, old, ref, mask, adv


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize(
    "beta, eps_high, level, delta",
    [(0.0, 0.2, "token", None), (0.04, 0.28, "token", None), (0.04, 0.2, "sequence", None), (0.0, 0.28, "token", 1.5)],
)
def test_grpo_loss_and_gradient_match_trl(loss_type, beta, eps_high, level, delta, seed):
    logp, old, ref, mask, adv = _inputs(seed)
    if loss_type == "dapo":
        # dapo divides by num_items_in_batch: a global count over a bigger generation batch than this shard
        num_items, num_tokens = mask.sum() + 11, float(mask.sum() + 11)
    else:
        num_items, num_tokens = mask.sum(), None

    trl_logp = logp.clone().requires_grad_()
    trl_loss, trl_metrics = _trl_loss(loss_type, trl_logp, old, ref, mask, adv, beta, 0.2, eps_high, level, delta, num_items)
    trl_loss.backward()

    our_logp = logp.clone().requires_grad_()
    loss, metrics = grpo_loss(
        our_logp, old, adv, mask, ref_logp=ref, beta=beta, kl_clamp=None, eps_low=0.2, eps_high=eps_high,
        delta=delta, ratio_level=level, agg=OUR_MODE[loss_type], const_len=T, num_tokens=num_tokens,
    )
    loss.backward()

    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(our_logp.grad, trl_logp.grad, atol=1e-7, rtol=1e-5)
    assert float(loss.detach()) != 0.0
    if beta:
        assert abs(float(metrics["kl"]) - trl_metrics["kl"][0]) < 1e-6
    # Clip fractions: TRL measures them on the delta-capped ratio and, at sequence level, per sequence
    # (empty ones included); ours are per mask token of the raw ratio. They agree for plain token-level.
    if delta is None and level == "token":
        assert abs(float(metrics["clip_frac_low"]) - trl_metrics["clip_ratio/low_mean"][0]) < 1e-6
        assert abs(float(metrics["clip_frac_high"]) - trl_metrics["clip_ratio/high_mean"][0]) < 1e-6


# ---- TRL's other loss types: cispo, sapo, luspo, vespo (and its entropy options) ----
# What each is here (config/aliases.py translates loss_type=...): the surrogate, the aggregation,
# and whether the normaliser is the global token count (num_items_in_batch) as for dapo.
LOSS_TYPES = {
    "cispo": ("cispo", "token_mean", True),
    "sapo": ("sapo", "seq_mean_token_mean", False),
    "luspo": ("clip", "seq_mean_token_sum", False),
    "vespo": ("vespo", "token_mean", True),
}
TRL_ARGS = dict(sapo_temperature_pos=1.3, sapo_temperature_neg=1.7, vespo_k_pos=1.5, vespo_lambda_pos=2.5,
                vespo_k_neg=2.5, vespo_lambda_neg=1.5)
OUR_OPTIONS = {
    "cispo": lambda eps_high: {"cispo_cap": eps_high},
    "sapo": lambda eps_high: {"sapo_tau_pos": 1.3, "sapo_tau_neg": 1.7},
    "luspo": lambda eps_high: {},
    "vespo": lambda eps_high: {"vespo_k_pos": 1.5, "vespo_lambda_pos": 2.5, "vespo_k_neg": 2.5, "vespo_lambda_neg": 1.5},
}


class _OneProcessPadding(_OneProcess):
    sync_gradients = True

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x


def _trl_other_loss(loss_type, logp, entropies, inputs, *, beta, eps_high, level, is_ratio, top_quantile, entropy_coef):
    trainer = GRPOTrainer.__new__(GRPOTrainer)
    trainer.__dict__.update(
        loss_type=loss_type, beta=beta, epsilon_low=0.2, epsilon_high=eps_high, importance_sampling_level=level,
        top_entropy_quantile=top_quantile, off_policy_mask_threshold=None, use_vllm=is_ratio is not None,
        vllm_importance_sampling_correction=is_ratio is not None, aux_loss_enabled=False,
        _entropy_bonus_enabled=entropy_coef != 0.0, entropy_coef=entropy_coef, use_adaptive_entropy=False,
        max_completion_length=T, current_gradient_accumulation_steps=1,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        model=types.SimpleNamespace(training=True), accelerator=_OneProcessPadding(),
        args=types.SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1, **TRL_ARGS),
    )
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logp, entropies, None)
    if is_ratio is not None:
        inputs = inputs | {"importance_sampling_ratio": is_ratio}
    return trainer._compute_loss(None, inputs)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("loss_type", sorted(LOSS_TYPES))
@pytest.mark.parametrize(
    "beta, eps_high, level, engine_weights",
    [(0.0, 0.28, "token", False), (0.04, 1.2, "token", True), (0.0, 5.0, "sequence", False)],
)
def test_other_loss_types_match_trl(loss_type, beta, eps_high, level, engine_weights, seed):
    """Loss and gradient equal TRL's for the four loss types beyond grpo/bnpo/dr_grpo/dapo, with the
    KL term, the sequence-level ratio, and the engine's importance weights (vespo folds them into its
    sequence weight; the others multiply the loss)."""
    if loss_type == "vespo" and level == "sequence":
        pytest.skip("vespo uses the whole-sequence product whatever the level (TRL warns, ours does not read it)")
    logp, old, ref, mask, adv = _inputs(seed)
    g = torch.Generator().manual_seed(seed + 10)
    # Engine weights are 1 on padding, as TRL's are (its vespo sums their logs over every position).
    is_ratio = torch.where(mask.bool(), torch.rand(B, T, generator=g) + 0.5, 1.0) if engine_weights else None
    surrogate, agg, global_count = LOSS_TYPES[loss_type]
    num_items = mask.sum() + 11 if global_count else mask.sum()
    inputs = dict(
        prompt_ids=torch.zeros(B, 1, dtype=torch.long), prompt_mask=torch.ones(B, 1, dtype=torch.long),
        completion_ids=torch.zeros(B, T, dtype=torch.long), completion_mask=mask, advantages=adv,
        old_per_token_logps=old, ref_per_token_logps=ref, num_items_in_batch=num_items,
    )
    trl_logp = logp.clone().requires_grad_()
    trl_loss = _trl_other_loss(loss_type, trl_logp, torch.zeros_like(logp), inputs, beta=beta, eps_high=eps_high,
                               level=level, is_ratio=is_ratio, top_quantile=1.0, entropy_coef=0.0)
    trl_loss.backward()

    our_logp = logp.clone().requires_grad_()
    loss, _ = grpo_loss(
        our_logp, old, adv, mask, ref_logp=ref, beta=beta, kl_clamp=None, eps_low=0.2, eps_high=eps_high,
        ratio_level=level, surrogate=surrogate, surrogate_options=OUR_OPTIONS[loss_type](eps_high),
        is_weights=is_ratio, agg=agg, num_tokens=float(num_items) if global_count else None,
    )
    loss.backward()
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(our_logp.grad, trl_logp.grad, atol=1e-7, rtol=1e-5)
    assert our_logp.grad.abs().sum() > 0


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "cispo"])
@pytest.mark.parametrize("top_quantile, entropy_coef", [(0.3, 0.0), (1.0, 0.05), (0.5, 0.02), (0.0, 0.0)])
def test_entropy_options_match_trl(loss_type, top_quantile, entropy_coef):
    """top_entropy_quantile (Beyond the 80/20 Rule: the policy term only on the top-rho entropy tokens)
    and entropy_coef (a bonus of the mean entropy of those tokens): loss and both gradients as TRL's."""
    from align.algos import top_entropy_mask

    logp, old, ref, mask, adv = _inputs(3)
    entropy = torch.rand(B, T, generator=torch.Generator().manual_seed(4)) * 2
    surrogate, agg, global_count = {"dapo": ("clip", "token_mean", True), "grpo": ("clip", "seq_mean_token_mean", False),
                                    "cispo": LOSS_TYPES["cispo"]}[loss_type]
    num_items = mask.sum() + 5 if global_count else mask.sum()
    inputs = dict(
        prompt_ids=torch.zeros(B, 1, dtype=torch.long), prompt_mask=torch.ones(B, 1, dtype=torch.long),
        completion_ids=torch.zeros(B, T, dtype=torch.long), completion_mask=mask, advantages=adv,
        old_per_token_logps=old, ref_per_token_logps=ref, num_items_in_batch=num_items,
    )
    trl_logp, trl_entropy = logp.clone().requires_grad_(), entropy.clone().requires_grad_()
    trl_loss = _trl_other_loss(loss_type, trl_logp, trl_entropy, inputs, beta=0.04, eps_high=0.28, level="token",
                               is_ratio=None, top_quantile=top_quantile, entropy_coef=entropy_coef)
    trl_loss.backward()

    our_logp, our_entropy = logp.clone().requires_grad_(), entropy.clone().requires_grad_()
    keep = top_entropy_mask(our_entropy.detach(), mask, top_quantile)
    assert 0 < keep.sum() <= mask.sum()
    loss, metrics = grpo_loss(
        our_logp, old, adv, mask, ref_logp=ref, beta=0.04, kl_clamp=None, eps_low=0.2, eps_high=0.28,
        surrogate=surrogate, surrogate_options={"cispo_cap": 0.28} if surrogate == "cispo" else None,
        pg_mask=keep if top_quantile < 1 else None, entropy=our_entropy, entropy_coef=entropy_coef,
        agg=agg, num_tokens=float(num_items) if global_count else None,
    )
    loss.backward()
    torch.testing.assert_close(loss, trl_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(our_logp.grad, trl_logp.grad, atol=1e-7, rtol=1e-5)
    if entropy_coef:
        torch.testing.assert_close(our_entropy.grad, trl_entropy.grad, atol=1e-7, rtol=1e-5)
        assert our_entropy.grad.abs().sum() > 0
