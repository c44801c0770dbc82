"""train.shared_prompt through the loop: the same step for every algorithm, with less work.

On a captured batch the per-token log-probs of every micro-batch (policy, reference, pi_old) and
the gradient of the step's loss are those of the per-sequence layout within 1e-5; one whole
`Trainer.step` with train.shared_prompt=true and false gives the same loss, pg_loss, grad_norm and
weights; and the shared layout forwards fewer tokens (`train/forward_tokens`).
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from tests.trainers.test_algorithms import DIGITS, make_trainer
from tests.trainers.test_salt import ECHO

RECIPES = {
    # a reference model (beta) and mu = 2: reference log-probs and pi_old both come from `_plan`
    "grpo": ["recipe=grpo_math", "loss.beta=0.04", "train.updates_per_batch=2", f"reward.functions=[{DIGITS}:digit_fraction]",
             "reward.weights=null", "data.options.size=32"],
    "gcpo": ["recipe=gcpo_geometry", "model.name=tiny-geometry", "data.options.size=32"],  # the warm start: rewards with spread
    "grao": ["recipe=grao_geometry", "data.options.size=32"],  # reference answers ride in their group's packed sequence
    "copg": ["recipe=copg_geometry", "data.source=arith", f"reward.functions=[{DIGITS}:digit_fraction]",
             "reward.weights=null", "data.options.size=32"],
    # agent episodes: observations inside the completion, loss on action tokens only (token_mask)
    "salt": ["recipe=salt_grid", "model.name=tiny", f"env.name={ECHO}:Echo", "env.max_turns=3", "rollout.max_tokens=4",
             "log.eval_every=0", "train.micro_batch_tokens=150"],
}


def rows_of(trainer, batch, shared: bool):
    """Per-row log-probs [P*G (+ answers), T] of policy, reference and pi_old, and the step's gradient."""
    trainer.shared_prompt = shared
    plan = trainer._plan(batch)  # micro-batches, reference and pi_old log-probs in this layout
    trainer.model.zero_grad()
    n = len(batch.completion_ids)
    width = max(1, max(len(c) for c in batch.completion_ids + (batch.answer_ids or [])))
    out = {k: torch.zeros(n + batch.num_prompts, width) for k in ("logp", "ref", "old")}
    for i, mb in enumerate(plan.micro_batches):
        micro, _ = trainer._micro_batch(batch, mb, plan, i, with_entropy=False)
        loss, _ = trainer.algo.loss(micro)
        loss.backward()
        t = micro.logp.shape[1]
        out["logp"][mb.rows, :t] = (micro.logp * (micro.mask > 0)).detach()
        if micro.answer_logp is not None:
            out["logp"][[n + p for p in mb.answers], : micro.answer_logp.shape[1]] = (
                micro.answer_logp * micro.answer_mask).detach()
        for key, value in (("ref", plan.ref.get(i)), ("old", plan.old.get(i))):
            if value is not None:
                out[key][mb.rows, :t] = value * (micro.mask > 0)
    grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    return out, grads, plan


@pytest.mark.parametrize("algo", sorted(RECIPES))
def test_captured_batch_log_probs_and_gradient_equal_the_per_sequence_layout(algo, tmp_path, cache_dir):
    trainer = make_trainer(tmp_path, cache_dir, *RECIPES[algo])
    batch = trainer.source.collect(0, 4, defaultdict(float)).batch
    batch = trainer._advantages(batch, {})
    want, want_grads, plain = rows_of(trainer, batch, shared=False)
    got, got_grads, packed = rows_of(trainer, batch, shared=True)
    assert len(plain.micro_batches) > 1  # the budget splits the batch: the sum over micro-batches is compared
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=0, msg=lambda m, key=key: f"{key}: {m}")
    if algo == "grpo":
        assert plain.ref and plain.old and packed.ref and packed.old
    assert len(want_grads) == len(got_grads)
    for g, w in zip(got_grads, want_grads):
        assert (g - w).norm() <= 1e-5 * w.norm() + 1e-9
    if algo == "grao":
        assert batch.answer_ids and all(mb.answers for mb in packed.micro_batches)


@pytest.mark.parametrize("algo", sorted(RECIPES))
def test_one_step_is_the_same_with_and_without_sharing(algo, tmp_path, cache_dir):
    runs = {}
    for shared in ("false", "true"):
        trainer = make_trainer(tmp_path / shared, cache_dir, *RECIPES[algo], f"train.shared_prompt={shared}")
        assert trainer.shared_prompt == (shared == "true")
        before = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
        metrics, _ = trainer.step(0)
        runs[shared] = metrics, torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()]) - before
    (plain, w_plain), (shared, w_shared) = runs["false"], runs["true"]
    for key in ("loss", "grad_norm", "pg_loss"):
        if key in plain:
            assert shared[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
    # The updates, not the weights: AdamW's first steps are ~lr * sign(g), so where a gradient element
    # is ~0 its rounding (1e-7 relative) can flip a few elements' updates; the whole update agrees.
    assert w_plain.norm() > 0 and (w_shared - w_plain).norm() <= 1e-3 * w_plain.norm()
    assert shared["train/forward_tokens"] < plain["train/forward_tokens"]  # the prompt once per group, no padding


@pytest.mark.parametrize("algo", sorted(RECIPES))
def test_every_logged_figure_is_the_same_for_any_micro_batch_budget(algo, tmp_path, cache_dir):
    """A metric that averaged per micro-batch would move with the split (GRAO's jexp_mean once did,
    between one process and two ZeRO-3 ones); every figure must be the global batch's."""
    # GRAO, CoPG and GCPO from the warm start, whose completions differ in length (the random model's all run
    # to the cap, where a token-weighted mean and a per-sample one agree).
    warm = ["model.name=tiny-geometry", "rollout.max_tokens=24"]
    varied = {"grao": warm, "copg": warm, "gcpo": ["rollout.max_tokens=24"]}
    settings = [*RECIPES[algo], *varied.get(algo, [])]
    runs = {}
    for budget in ("100", "100000"):
        trainer = make_trainer(tmp_path / budget, cache_dir, *settings, f"train.micro_batch_tokens={budget}")
        runs[budget] = trainer.step(0)[0]
    split, whole = runs["100"], runs["100000"]
    assert split["micro_batches"] > whole["micro_batches"] == 1
    if algo in varied:
        assert split["completion_len/mean"] < split["completion_len/max"]  # lengths differ
    layout = ("time/", "tokens_per_s", "micro_batches", "train/forward_tokens")
    compared = [k for k, v in whole.items() if isinstance(v, float) and not k.startswith(layout)]
    assert {"loss", "grad_norm"} <= set(compared) <= set(split)
    for key in compared:
        assert split[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), key
