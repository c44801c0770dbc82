"""Shared fixtures. Models are built in code into a per-session cache folder: nothing is downloaded."""

from __future__ import annotations

import os

import pytest

# vLLM on CPU: keep the engine in-process and skip dynamo compiles (see README, "Running on CPU").
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """A cache folder for built-in models, shared by the whole test session."""
    return str(tmp_path_factory.mktemp("align-cache"))


@pytest.fixture(scope="session")
def tiny_path(cache_dir) -> str:
    from align.models import resolve_model_path

    return resolve_model_path("tiny", cache_dir)


@pytest.fixture(scope="session")
def smollm2_path(cache_dir) -> str:
    """SmolLM2-135M-Instruct converted once per test session; skips where the `smollm2` extra is absent."""
    from align.models import smollm2

    if not smollm2.available():
        pytest.skip(f"smollm2-135m-instruct needs the smollm2 extra: {smollm2.INSTALL}")
    return str(smollm2.smollm2_path(cache_dir))
