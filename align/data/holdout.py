"""The training and evaluation rows of a run, with a held-out slice of train when there is no eval split.

A single JSONL/parquet file has only a 'train' split. Rather than stop at the first evaluation,
`eval.holdout` rows of train are set aside for evaluation (a seeded shuffle: the same rows every
time for the same data) and training never sees them; a warning says so. eval.holdout=0 trains on
all rows, and evaluation then needs a real eval split.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets

from align.config import Config
from align.data.loading import MissingSplitError, builtin_tasks, load_prompt_dataset

HOLDOUT_SEED = 0  # fixed, not train.seed: a model trained with another seed is evaluated on the same rows


def _load(cfg: Config, split: str, source: str | None = None) -> datasets.Dataset:
    d = cfg.data
    options = d.options if source in (None, d.source) else {}  # data.options belong to data.source
    return load_prompt_dataset(source or d.source, split, prompt_column=d.prompt_column, answer_column=d.answer_column,
                               system_prompt=d.system_prompt, **options)


def _eval_split_missing(cfg: Config) -> bool:
    if cfg.data.eval_source:  # evaluation reads other data (e.g. offline rows trained, a task evaluated)
        return False
    if cfg.eval.holdout <= 0 or cfg.data.source.partition(":")[0] in builtin_tasks():
        return False  # built-in tasks build their own test split (and building it to check can be slow)
    try:
        _load(cfg, cfg.data.eval_split)
    except MissingSplitError:
        return True
    return False


def _split(cfg: Config, rows: datasets.Dataset) -> datasets.DatasetDict:
    n = min(cfg.eval.holdout, len(rows) // 10)  # never more than a tenth of the training data
    if n < 1:
        raise MissingSplitError(
            f"dataset {cfg.data.source!r} has no {cfg.data.eval_split!r} split and only {len(rows)} train rows, too few to hold "
            "some out for evaluation; give an eval split (data.eval_split=...) or turn evaluation off (log.eval_every=0)"
        )
    return rows.train_test_split(test_size=n, seed=HOLDOUT_SEED, shuffle=True)


def training_rows(cfg: Config, warn: Callable[[str], None] = print) -> datasets.Dataset:
    """data.split of data.source, less the evaluation slice when the eval split is missing."""
    rows = _load(cfg, cfg.data.split)
    if not _eval_split_missing(cfg):
        return rows
    parts = _split(cfg, rows)
    warn(f"warning: dataset {cfg.data.source!r} has no {cfg.data.eval_split!r} split: {len(parts['test'])} rows of "
         f"{cfg.data.split!r} are held out for evaluation and not trained on (eval.holdout=0 trains on all)")
    return parts["train"]


def evaluation_rows(cfg: Config, warn: Callable[[str], None] = print) -> datasets.Dataset:
    """data.eval_split of data.eval_source (when set) or data.source, or the slice `training_rows`
    held out when it is missing."""
    if cfg.data.eval_source:
        return _load(cfg, cfg.data.eval_split, cfg.data.eval_source)
    try:
        return _load(cfg, cfg.data.eval_split)
    except MissingSplitError:
        if cfg.eval.holdout <= 0:
            raise
    parts = _split(cfg, _load(cfg, cfg.data.split))
    warn(f"warning: dataset {cfg.data.source!r} has no {cfg.data.eval_split!r} split: evaluating on the "
         f"{len(parts['test'])} rows of {cfg.data.split!r} held out from training (eval.holdout)")
    return parts["test"]
