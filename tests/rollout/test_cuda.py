"""The HF engine's GPU paths: CUDA RNG seeding, bf16 tolerance, sleep/wake moving the weights.
Skipped without a GPU (the default CPU run); vLLM-on-GPU is covered by the interface tests when a
CUDA vLLM is installed."""

from __future__ import annotations

import pytest
import torch

from align.models import load_model
from align.rollout import SamplingSettings, WeightSyncError
from align.rollout.probe import mean_abs_difference, model_logprobs
from tests.rollout.conftest import perturbed_copy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hf_engine_on_cuda(tiny_path, dtype):
    from align.rollout import HFEngine

    engine = HFEngine(tiny_path, device="cuda", dtype=dtype, seed=0)
    trainer = load_model(tiny_path, dtype=dtype, device="cuda")
    settings = SamplingSettings(max_tokens=12, seed=3)
    prompts = [[5, 6, 7, 8], [9, 10]]
    first = engine.generate(prompts, 4, settings)
    assert [[c.token_ids for c in g] for g in first] == [[c.token_ids for c in g] for g in engine.generate(prompts, 4, settings)]
    flat = [c for g in first for c in g]
    reference = model_logprobs(trainer, [(c.prompt_ids, c.token_ids) for c in flat])
    assert mean_abs_difference([c.logprobs for c in flat], reference) < (1e-4 if dtype == "float32" else 5e-2)

    new_trainer = perturbed_copy(trainer.float().cpu()).to(device="cuda", dtype=trainer.dtype)
    report = engine.sync_from(new_trainer)
    assert report.weight_version == 1 and report.probe_diff <= engine.probe_tolerance

    before = torch.cuda.memory_allocated()
    engine.sleep()
    assert torch.cuda.memory_allocated() < before
    with pytest.raises(RuntimeError, match="asleep; call wake"):
        engine.generate(prompts, 1, settings)
    engine.wake()
    assert engine.generate(prompts, 1, settings)[0][0].weight_version == 1
    # a sync that misses every attention weight is caught on the GPU too
    partial = [(n, t) for n, t in perturbed_copy(new_trainer.float().cpu(), scale=0.2, seed=5).state_dict().items()
               if "self_attn" not in n]
    engine.load_weights(partial)
    with pytest.raises(WeightSyncError, match="not sent in the last load"):
        engine.verify(perturbed_copy(new_trainer.float().cpu(), scale=0.2, seed=5).to(device="cuda", dtype=trainer.dtype))
    engine.close()
