"""What a checkpoint folder holds, read from safetensors headers without loading any tensor."""

from __future__ import annotations

import math
from pathlib import Path


def _safetensors_files(model_path: str) -> list[Path]:
    folder = Path(model_path).expanduser()
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def checkpoint_tensor_names(model_path: str) -> set[str]:
    """Tensor names in the folder's *.safetensors files; empty for a hub id or a .bin checkpoint
    (then a failed sync is diagnosed from the trainer's names alone)."""
    from safetensors import safe_open

    names: set[str] = set()
    for file in _safetensors_files(model_path):
        with safe_open(str(file), framework="pt") as handle:
            names.update(handle.keys())
    return names


def checkpoint_num_params(model_path: str) -> int | None:
    """Number of parameters stored in the folder (tied weights once); None when it can't be read."""
    from safetensors import safe_open

    files = _safetensors_files(model_path)
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            total += sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())
    return total
