"""Safe resume: a run continues only with the config it was started with, and keeps its own files.

`resume=latest` (or a checkpoint folder) compares the run's saved `config.yaml` with the new config.
Keys that differ are refused in one line naming them, unless `resume_force=true`; then they are
printed and the run continues. Keys that may change between the two halves of a run without
changing what is learned (how long it runs, where and how often it logs) are not compared.

The resumed run writes its config as `config.resume-<time>.yaml` beside the original, which stays.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from align.config import Config, ConfigError

# Keys that may differ between a run and its continuation.
NOT_COMPARED = ("recipe", "resume", "resume_force", "log.", "train.steps", "train.max_minutes", "model.cache_dir", "eval.")
CONFIG_NAME = "config.yaml"


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out |= _flat(v, f"{prefix}{k}.")
    return out


def config_differences(saved_yaml: str, cfg: Config) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) for every compared key whose value changed."""
    from omegaconf import OmegaConf

    saved = _flat(OmegaConf.to_container(OmegaConf.create(saved_yaml)))
    new = _flat(OmegaConf.to_container(OmegaConf.structured(cfg)))
    return [(k, saved[k], v) for k, v in new.items()
            if k in saved and saved[k] != v and not k.startswith(NOT_COMPARED) and k not in NOT_COMPARED]


def check_resume(cfg: Config, run_dir: Path, say=print) -> Path | None:
    """The checkpoint this run resumes from (None: a fresh start), after the config comparison.

    Raises ConfigError naming the differing keys (unless cfg.resume_force), and when a fresh run
    would write into a folder that already holds a run.
    """
    from align.training.checkpoint import find_checkpoint

    checkpoint = find_checkpoint(run_dir, cfg.resume) if cfg.resume else None
    if checkpoint is None:
        if _holds_a_run(run_dir):
            hint = "resume=latest to continue it" if not cfg.resume else "it has no complete checkpoint to resume"
            raise ConfigError(f"log.run_dir={run_dir} already holds a run ({hint}); choose another log.run_dir")
        if (run_dir / CONFIG_NAME).exists():
            say(f"log.run_dir={run_dir}: the run there stopped before step 1 (no checkpoint, no step logged); starting over in it")
            _clear_failed_start(run_dir)
        return None
    saved_path = checkpoint.parent.parent / CONFIG_NAME
    if not saved_path.exists():
        say(f"resume: {saved_path} is missing; the config of the resumed run cannot be compared")
        return checkpoint
    diffs = config_differences(saved_path.read_text(), cfg)
    if diffs:
        listed = ", ".join(f"{k} ({_short(old)} there, {_short(new)} now)" for k, old, new in diffs)
        if not cfg.resume_force:
            raise ConfigError(
                f"resume={cfg.resume}: {checkpoint} was trained with a different config: {listed}; "
                "drop resume to start a new run, or resume_force=true to continue with the new values"
            )
        say(f"resume_force=true: continuing {checkpoint} with changed keys: {listed}")
    return checkpoint


# What a run that stopped before step 1 leaves (the config, a step-0 evaluation), replaced by the new run's.
_FAILED_START_FILES = (CONFIG_NAME, "metrics.jsonl", "samples.jsonl")


def _holds_a_run(run_dir: Path) -> bool:
    """A complete checkpoint or a logged step >= 1: work a fresh run must not overwrite.

    A run that failed before step 1 (bad data, a model that did not load) leaves only its config and
    perhaps a step-0 evaluation; refusing that folder made the user rename it to rerun the fixed command.
    """
    if any(p.is_dir() for p in (run_dir / "checkpoints").glob("step-*")):  # complete or not: never overwritten
        return True
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return False
    for line in metrics.read_text().splitlines():
        try:
            step = json.loads(line).get("step", 1) if line.strip() else 0
        except (ValueError, AttributeError):
            return True  # not ours to judge: keep it
        if not isinstance(step, int) or step >= 1:
            return True
    return False


def _clear_failed_start(run_dir: Path) -> None:
    for name in _FAILED_START_FILES:
        (run_dir / name).unlink(missing_ok=True)


def config_path(run_dir: Path) -> Path:
    """Where this run writes its config: config.yaml, or beside it when the folder already has one."""
    first = run_dir / CONFIG_NAME
    return first if not first.exists() else run_dir / f"config.resume-{time.strftime('%Y%m%d-%H%M%S')}.yaml"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
