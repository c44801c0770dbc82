"""train.lm_head_chunk: the LM head applied chunk by chunk gives the whole head's log-probs and
gradients, for every algorithm and both layouts; only plain-head architectures take it."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from align.models import chunkable_lm_head
from tests.trainers.test_algorithms import make_trainer
from tests.trainers.test_shared_prompt import RECIPES, rows_of


# Every algorithm in the default (shared-prompt) layout; the per-sequence one for GRPO (reference and pi_old).
CASES = [(algo, True) for algo in sorted(RECIPES)] + [("grpo", False)]


@pytest.mark.parametrize("algo, shared", CASES, ids=[f"{a}-{'shared' if s else 'per-sequence'}" for a, s in CASES])
def test_chunked_head_gives_the_whole_heads_log_probs_and_gradient(algo, shared, tmp_path, cache_dir):
    # Chunks of 7 tokens: every micro-batch spans several, with a ragged last one.
    chunked = make_trainer(tmp_path / "chunked", cache_dir, *RECIPES[algo], "train.lm_head_chunk=7")
    assert chunked._chunked_head(chunked.model) is not None  # the tiny model (qwen2) qualifies
    batch = chunked._advantages(chunked.source.collect(0, 4, defaultdict(float)).batch, {})
    got, got_grads, _ = rows_of(chunked, batch, shared)
    chunked.cfg.train.lm_head_chunk = 0  # the same trainer and batch, the whole head
    assert chunked._chunked_head(chunked.model) is None
    want, want_grads, _ = rows_of(chunked, batch, shared)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=0, msg=lambda m, key=key: f"{key}: {m}")
    assert len(got_grads) == len(want_grads) and want_grads
    for g, w in zip(got_grads, want_grads):
        assert (g - w).norm() <= 1e-5 * w.norm() + 1e-9


def test_lm_head_chunk_0_gives_the_whole_head(tmp_path, cache_dir):
    # The numbers are the same either way (above), so this is what shows the key is read: 0 turns chunking off.
    trainer = make_trainer(tmp_path / "whole", cache_dir, *RECIPES["grpo"], "train.lm_head_chunk=0")
    assert trainer._chunked_head(trainer.model) is None


def test_one_step_with_entropy_bonus_is_the_same_chunked_or_whole(tmp_path, cache_dir):
    runs = {}
    for chunk in ("0", "5"):
        trainer = make_trainer(tmp_path / chunk, cache_dir, *RECIPES["grpo"], "loss.entropy_coef=0.1", f"train.lm_head_chunk={chunk}")
        runs[chunk] = trainer.step(0)[0]
    for key in ("loss", "grad_norm", "entropy", "pg_loss"):
        assert runs["5"][key] == pytest.approx(runs["0"][key], rel=1e-4, abs=1e-6), key


def _model(model_type: str, head=None, **config):
    head = head if head is not None else torch.nn.Linear(4, 10, bias=False)
    return SimpleNamespace(config=SimpleNamespace(model_type=model_type, **config), get_output_embeddings=lambda: head)


def test_only_plain_bias_free_heads_of_known_families_are_chunked():
    assert chunkable_lm_head(_model("llama")) is not None
    assert chunkable_lm_head(_model("gemma2", final_logit_softcapping=30.0)) is None  # soft-capped logits
    assert chunkable_lm_head(_model("cohere", logit_scale=0.06)) is None  # scaled logits
    assert chunkable_lm_head(_model("llama", head=torch.nn.Linear(4, 10, bias=True))) is None
    weight_sharded = torch.nn.Linear(4, 10, bias=False)
    weight_sharded.weight.ds_id = 7  # what ZeRO-3 marks a partitioned parameter with
    assert chunkable_lm_head(_model("qwen2", head=weight_sharded)) is None
