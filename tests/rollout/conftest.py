"""One engine of each kind per test session (vLLM's import and start cost seconds); tests that change
an engine's weights get them restored by the `engine` fixture."""

from __future__ import annotations

import pytest
import torch

from align.models import load_model, load_tokenizer, merged_named_tensors


@pytest.fixture(scope="session")
def base_model(tiny_path):
    """The checkpoint the engines start from; tests must not modify it."""
    return load_model(tiny_path).eval()


@pytest.fixture(scope="session")
def tokenizer(tiny_path):
    return load_tokenizer(tiny_path)


@pytest.fixture(scope="session")
def hf_engine(tiny_path):
    from align.rollout import HFEngine

    engine = HFEngine(tiny_path, seed=0)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_engine(tiny_path):
    pytest.importorskip("vllm")
    from align.rollout import VLLMEngine

    engine = VLLMEngine(tiny_path, seed=0, kv_cache_bytes=64 << 20)
    yield engine
    engine.close()


@pytest.fixture(params=["hf", "vllm"])
def engine(request, base_model):
    engine = request.getfixturevalue(f"{request.param}_engine")
    version = engine.weight_version
    yield engine
    if engine.weight_version != version:
        engine.load_weights(merged_named_tensors(base_model))


def perturbed_copy(model, scale: float = 0.05, seed: int = 1):
    """A fresh copy of `model` with every weight moved by Gaussian noise."""
    import copy

    new = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in new.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)
    return new
