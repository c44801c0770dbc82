"""CoPG's toy claim, reproduced in seconds (issue 30, item 3): from offline pairs of ANY behaviour
policy, `copg_loss` drives a softmax bandit to pi* proportional to pi_ref * exp(R / beta); a policy
gradient that takes the same samples as its own settles somewhere that depends on the behaviour."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import copg_bandit  # noqa: E402


@pytest.mark.parametrize("behaviour", sorted(copg_bandit.BEHAVIOURS))
def test_copg_reaches_the_closed_form_optimum_from_any_behaviour_policy(behaviour):
    result = copg_bandit.train("copg", behaviour, beta=0.5, pairs=256, steps=400)
    assert result["tv_to_optimum"] < 1e-3, result["policy"]
    assert result["curve"][0][1] > 0.3  # it started far away (uniform policy)


def test_off_policy_pg_without_importance_weights_misses_it_and_depends_on_the_behaviour():
    tv = {b: copg_bandit.train("offpolicy_pg", b, beta=0.5, pairs=256, steps=400)["tv_to_optimum"]
          for b in copg_bandit.BEHAVIOURS}
    assert min(tv.values()) > 0.05
    assert max(tv.values()) - min(tv.values()) > 0.05  # a different wrong answer per behaviour policy


def test_the_optimum_is_the_regularised_objectives_maximiser():
    import torch

    beta = 0.5
    star = copg_bandit.optimum(beta)
    r = torch.tensor(copg_bandit.REWARDS, dtype=torch.float64)
    ref = torch.tensor(copg_bandit.REF_LOGITS, dtype=torch.float64).softmax(0)

    def objective(p):
        return float((p * r).sum() - beta * (p * (p / ref).log()).sum())

    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # no nearby policy scores higher
        other = (star.log() + 0.05 * torch.randn(5, generator=gen, dtype=torch.float64)).softmax(0)
        assert objective(other) < objective(star)
