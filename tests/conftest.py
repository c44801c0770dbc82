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
