"""The loss options TRL users bring, inside the loop: top_entropy_quantile (one threshold over the
step), entropy_coef (a bonus with a gradient), and TR-DPO's moving reference (mixed, checkpointed)."""

from __future__ import annotations

import pytest
import torch

from tests.trainers.in_process import make_trainer

BASE = ["train.lr=5e-3", "train.steps=3", "rollout.max_tokens=8", "rollout.seed_per_prompt=false"]


def _params(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_top_entropy_threshold_is_one_for_the_whole_step(cache_dir, tmp_path):
    """The kept share is rho of the step's tokens, and the loss does not depend on the micro-batch split."""
    runs = {}
    for tokens in (10_000, 40):
        trainer = make_trainer(cache_dir, tmp_path / str(tokens), *BASE, "loss.top_entropy_quantile=0.3",
                               f"train.micro_batch_tokens={tokens}")
        metrics, _ = trainer.step(0)
        runs[tokens] = metrics
    assert runs[40]["micro_batches"] > runs[10_000]["micro_batches"] == 1
    for metrics in runs.values():
        assert 0.25 <= metrics["entropy/kept_frac"] <= 0.35  # 30% of the tokens (ties aside)
    assert runs[40]["loss"] == pytest.approx(runs[10_000]["loss"], rel=1e-4, abs=1e-6)
    assert runs[40]["pg_loss"] == pytest.approx(runs[10_000]["pg_loss"], rel=1e-4, abs=1e-6)
    plain, _ = make_trainer(cache_dir, tmp_path / "all", *BASE).step(0)
    assert "entropy/kept_frac" not in plain and plain["pg_loss"] != pytest.approx(runs[40]["pg_loss"], rel=1e-3)


def test_entropy_bonus_raises_the_entropy_it_rewards(cache_dir, tmp_path):
    """Same seed and data: with a large entropy_coef the policy's token entropy climbs over three steps
    (the bonus has a gradient); without it, it does not climb as far."""
    entropy = {}
    for coef in (0.0, 2.0):
        trainer = make_trainer(cache_dir, tmp_path / str(coef), *BASE, f"loss.entropy_coef={coef}")
        entropy[coef] = [trainer.step(step)[0]["entropy"] for step in range(3)]
    assert entropy[2.0][0] == pytest.approx(entropy[0.0][0], rel=1e-5)  # step 0: the same policy sampled
    assert entropy[2.0][-1] > entropy[0.0][-1] + 0.05, entropy


def test_reference_moves_by_alpha_every_n_steps_and_resumes(cache_dir, tmp_path):
    """TR-DPO: ref <- alpha * policy + (1 - alpha) * ref after every ref_sync_every-th step, and a
    checkpoint holds the moved reference (a resumed run must not fall back to the starting one)."""
    args = [*BASE, "loss.beta=0.1", "loss.ref_sync=true", "loss.ref_sync_every=2", "loss.ref_sync_alpha=0.25"]
    trainer = make_trainer(cache_dir, tmp_path / "run", *args)
    start = _params(trainer.ref_model)
    trainer.step(0)
    assert all(torch.equal(p, start[n]) for n, p in _params(trainer.ref_model).items())  # not yet: every 2 steps
    trainer.step(1)
    policy = dict(trainer.acc.unwrap_model(trainer.model).named_parameters())
    moved = _params(trainer.ref_model)
    name = next(n for n in moved if "mlp" in n)
    expected = start[name] + 0.25 * (policy[name].detach().to(start[name].dtype) - start[name])
    torch.testing.assert_close(moved[name], expected)
    assert not torch.equal(moved[name], start[name])
    path = trainer.save(2)

    resumed = make_trainer(cache_dir, tmp_path / "run", *args, f"resume={path}")  # resumes in __init__
    assert resumed.start_step == 2
    for n, p in _params(resumed.ref_model).items():
        assert torch.equal(p, moved[n]), n


@pytest.mark.parametrize("args, says", [
    (["loss.ref_sync=true"], "loads no reference model"),
    (["algo=copg", "train.updates_per_batch=1", "loss.entropy_coef=0.1"], "has a loss of its own"),
    (["loss.top_entropy_quantile=1.5"], "loss.top_entropy_quantile=1.5"),
    (["loss.surrogate=cispo", "loss.cispo_cap=0"], "loss.cispo_cap=0.0: must be > 0"),
])
def test_bad_loss_options_are_one_line_errors(cache_dir, tmp_path, args, says):
    from align.config import ConfigError

    with pytest.raises(ConfigError) as error:
        make_trainer(cache_dir, tmp_path / "bad", *args)
    assert says in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow  # ~70 s; the default run trains cispo through test_options_live and checks each loss against TRL
@pytest.mark.parametrize("loss_type", ["dapo", "cispo", "sapo", "luspo", "vespo"])
def test_every_trl_loss_type_trains(cache_dir, tmp_path, loss_type):
    """TRL's loss_type values, through the alias table and the loop (grpo, bnpo and dr_grpo are the
    clip with aggregations dapo's run shares; tests/foreign checks their translation): two updates on one batch
    (so the ratio moves and each surrogate's own shape acts), a finite loss, and the weights move."""
    trainer = make_trainer(cache_dir, tmp_path / loss_type, *BASE, f"loss_type={loss_type}", "train.updates_per_batch=2")
    before = _params(trainer.acc.unwrap_model(trainer.model))
    metrics, _ = trainer.step(0)
    after = _params(trainer.acc.unwrap_model(trainer.model))
    assert metrics["train/skipped_updates"] == 0 and abs(metrics["loss"]) < 1e3
    assert any(not torch.equal(after[n], before[n]) for n in before)
    assert trainer.cfg.loss.surrogate == {"cispo": "cispo", "sapo": "sapo", "vespo": "vespo"}.get(loss_type, "clip")
