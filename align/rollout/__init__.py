"""Rollout engines: sample completions with versioned weights, and sync + verify them from the trainer.

    engine = make_engine("auto", model_path)
    groups = engine.generate(prompt_ids, n=8, sampling=SamplingSettings(max_tokens=256, seed=0))
    report = engine.sync_from(model)      # after each optimizer step; raises WeightSyncError on a bad sync

Trainers import from here only; vLLM is imported lazily inside VLLMEngine.
"""

from __future__ import annotations

import importlib.util
import inspect

import torch

from align.rollout.base import (
    DEFAULT_PROBE_TOLERANCE,
    Completion,
    RolloutEngine,
    SamplingSettings,
    SyncReport,
    WeightSyncError,
)
from align.rollout.multiturn import Episode, run_episodes
from align.rollout.prompts import chat_prompt_ids
from align.rollout.server_pool import ServerPool, servers_of_rank
from align.rollout.weights import checkpoint_num_params

__all__ = [
    "AUTO_VLLM_MIN_PARAMS_CPU",
    "DEFAULT_PROBE_TOLERANCE",
    "Completion",
    "Episode",
    "HFEngine",
    "RolloutEngine",
    "SamplingSettings",
    "SyncReport",
    "VLLMEngine",
    "WeightSyncError",
    "chat_prompt_ids",
    "choose_engine",
    "make_engine",
    "run_episodes",
    "servers_of_rank",
]

# On CPU, below this many parameters use transformers' generate. bench/rollout.py, 16 prompts x 8 x
# 32 tokens on 2 cores: at 0.8M parameters the two are within noise (HF 7.0k vs vLLM 7.8k tok/s on a
# quiet machine, 4.5k vs 2.3k under load) and HF starts in 0.2 s against vLLM's 5 s; at 40M vLLM is
# 2-4x faster (839 vs 200-440 tok/s). See bench/results/rollout.json and align/rollout/README.md.
AUTO_VLLM_MIN_PARAMS_CPU = 5_000_000


def __getattr__(name: str):
    # Engine classes on first use: `import align.rollout` must not pay for transformers or vLLM.
    if name == "VLLMEngine":
        from align.rollout.vllm_engine import VLLMEngine

        return VLLMEngine
    if name == "HFEngine":
        from align.rollout.hf_engine import HFEngine

        return HFEngine
    raise AttributeError(f"module 'align.rollout' has no attribute '{name}'")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def choose_engine(model_path: str) -> str:
    """'vllm' or 'hf': vLLM when installed, except on CPU for models under AUTO_VLLM_MIN_PARAMS_CPU."""
    if not vllm_installed():
        return "hf"
    if torch.cuda.is_available():
        return "vllm"
    params = checkpoint_num_params(model_path)
    return "hf" if params is not None and params < AUTO_VLLM_MIN_PARAMS_CPU else "vllm"


def make_engine(kind: str, model_path: str, **kwargs) -> RolloutEngine:
    """Build a rollout engine: kind = "vllm", "hf", "auto" (the faster one for this model, see
    choose_engine) or "server" (a vLLM server at `url=`, or several at `urls=`: a ServerPool). With "auto", keyword arguments only the
    other engine takes are dropped."""
    if kind not in ("vllm", "hf", "auto", "server"):
        raise ValueError(f"rollout engine '{kind}' is unknown; use vllm, hf, auto or server")
    if kind == "server":
        from align.rollout.server_engine import ServerEngine

        urls = kwargs.pop("urls", None) or [kwargs.pop("url")]
        if len(urls) == 1:
            return ServerEngine(urls[0], model_path, **kwargs)
        engines = []
        try:
            for url in urls:
                engines.append(ServerEngine(url, model_path, **kwargs))
        except BaseException:
            for engine in engines:  # the servers reached already keep this run's transport otherwise
                engine.close()
            raise
        return ServerPool(engines)
    from align.rollout.hf_engine import HFEngine

    picked = choose_engine(model_path) if kind == "auto" else kind
    if picked == "vllm":
        from align.rollout.vllm_engine import VLLMEngine

        cls = VLLMEngine
    else:
        cls = HFEngine
    if kind == "auto":
        from align.rollout.vllm_engine import VLLMEngine

        known = {n for c in (VLLMEngine, HFEngine) for n in inspect.signature(c.__init__).parameters}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"make_engine: unknown engine option(s) {unknown}; see VLLMEngine / HFEngine arguments")
        accepted = inspect.signature(cls.__init__).parameters
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return cls(model_path, **kwargs)
