"""make_engine: explicit kinds, and 'auto' choosing by model size on CPU."""

from __future__ import annotations

import pytest

import align.rollout as rollout
from align.rollout import make_engine


def test_auto_picks_by_parameter_count(tiny_path, monkeypatch):
    monkeypatch.setattr(rollout, "vllm_installed", lambda: True)
    monkeypatch.setattr(rollout.torch.cuda, "is_available", lambda: False)
    assert rollout.choose_engine(tiny_path) == "hf"  # 0.8M parameters
    monkeypatch.setattr(rollout, "checkpoint_num_params", lambda path: 40_000_000)
    assert rollout.choose_engine(tiny_path) == "vllm"
    monkeypatch.setattr(rollout, "vllm_installed", lambda: False)
    assert rollout.choose_engine(tiny_path) == "hf"


def test_auto_builds_the_small_model_on_hf_and_drops_vllm_options(tiny_path, monkeypatch):
    # The CPU rule, also on a GPU machine with vLLM installed (where "auto" always picks vLLM).
    monkeypatch.setattr(rollout.torch.cuda, "is_available", lambda: False)
    engine = make_engine("auto", tiny_path, kv_cache_bytes=64 << 20, seed=1, max_num_seqs=8)
    assert type(engine).__name__ == "HFEngine"


def test_auto_picks_vllm_on_a_gpu(tiny_path, monkeypatch):
    monkeypatch.setattr(rollout, "vllm_installed", lambda: True)
    monkeypatch.setattr(rollout.torch.cuda, "is_available", lambda: True)
    assert rollout.choose_engine(tiny_path) == "vllm"


def test_bad_kind_and_options(tiny_path):
    with pytest.raises(ValueError, match="rollout engine 'fast' is unknown"):
        make_engine("fast", tiny_path)
    with pytest.raises(TypeError, match=r"unknown engine option\(s\) \['temprature'\]"):
        make_engine("auto", tiny_path, temprature=1.0)
