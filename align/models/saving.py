"""Write a model folder so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def save_pretrained_atomically(model, tokenizer, out_dir: str | os.PathLike, extra_files: dict[str, str] | None = None) -> Path:
    """save_pretrained(model and tokenizer) into a temp sibling folder, then rename it to `out_dir`.

    `extra_files` maps file names to text written beside them. An existing `out_dir` is replaced.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def build_once(out_dir: str | os.PathLike, build: Callable[[Path], object], rebuild: bool = False) -> Path:
    """The cached model folder `out_dir`, made by `build(out_dir)` when it has no config.json yet (or `rebuild`).

    Every rank of a multi-process launch resolves the same built-in model on a fresh cache. Without
    the lock each one builds it, and a later builder's replace deletes the folder that an earlier one
    is already loading from ("the folder has no config.json"). Under the lock one process builds while
    the others wait, then find the finished folder.
    """
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and not rebuild:
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if rebuild or not (out_dir / "config.json").exists():
            build(out_dir)
    return out_dir
