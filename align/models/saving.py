"""Write a model folder so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


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
