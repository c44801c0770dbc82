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
