"""One-line input checks shared by the algorithm functions.

Every error names the bad argument and says how to fix it, so a misconfigured trainer fails at the
first step with a message a user can act on instead of a broadcasting error deep inside autograd.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    """Raise ValueError unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, choices))}")


def check_ndim(name: str, tensor: torch.Tensor, ndim: int, layout: str) -> None:
    """Raise ValueError unless `tensor` has `ndim` dimensions (`layout` names them, e.g. '[P,G]')."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(tensor).__name__}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must be {layout} ({ndim}-D), got shape {tuple(tensor.shape)}")


def check_same_shape(name: str, tensor: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Raise ValueError unless `tensor` has exactly the shape of `ref`."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped like {ref_name}, got {type(tensor).__name__}")
    if tensor.shape != ref.shape:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)} but {ref_name} has {tuple(ref.shape)}; they must match"
        )


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ValueError unless `value` > 0 (or >= 0 with allow_zero)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be {bound}")


def as_valid(valid: torch.Tensor | None, like: torch.Tensor, like_name: str) -> torch.Tensor:
    """`valid` as a bool tensor shaped like `like`; None means every member is valid."""
    if valid is None:
        return torch.ones_like(like, dtype=torch.bool)
    check_same_shape("valid", valid, like_name, like)
    return valid.to(device=like.device, dtype=torch.bool)
