"""--help on both entry points, usage without arguments (no run starts), documentation of every key."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

from align.config import Config, all_keys
from align.cli.usage import field_docs, full_help

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_every_config_key_has_a_one_line_doc():
    # The comments beside the dataclass fields are the documentation: a new field without one fails here.
    missing = []
    for f in fields(Config):
        default = f.default_factory() if callable(f.default_factory) else f.default
        cls = type(default) if is_dataclass(default) else Config
        doc = field_docs(cls).get(f.name if cls is Config else "", None)
        if cls is Config and not doc:
            missing.append(f.name)
        if cls is not Config:
            missing += [f"{f.name}.{g.name}" for g in fields(cls) if not field_docs(cls).get(g.name)]
    assert not missing, f"config fields without a comment: {missing}"


def test_help_lists_recipes_sections_defaults_and_docs():
    text = full_help()
    for recipe in ("grpo_math", "gcpo_geometry"):
        assert recipe in text
    for key in all_keys():
        assert f"  {key} = " in text, key
    assert "loss.eps_high = 0.2" in text and "DAPO clip-higher" in text
    assert "rollout.num_generations = 8" in text and "G: completions per prompt" in text


def test_help_on_both_entry_points_and_a_section():
    for args in (["-m", "align", "--help"], ["align/train.py", "--help"], ["-m", "align", "train", "-h"]):
        proc = run(*args)
        assert proc.returncode == 0, proc.stderr
        assert "recipes (recipe=NAME" in proc.stdout and "train.lr = 1e-06" in proc.stdout, args
    section = run("-m", "align", "--help", "loss").stdout
    assert "loss.agg = " in section and "train.lr" not in section


def test_no_arguments_prints_usage_and_starts_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "align" / "train.py")], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2 and "usage:" in proc.stderr and "--help" in proc.stderr
    assert not (tmp_path / "runs").exists()  # no run folder: nothing started
    assert run("-m", "align").returncode == 2
