"""The training rows, every one checked before a run writes anything into its folder.

`load_prompt_dataset` checks each row's prompt and answer as it loads them; the prompts' lengths
need the tokenizer and the model's context, so they are checked here too, against the model's own
context (a rollout server's, which may be shorter, is checked again once the engine exists:
`GenerationSource.set_context`). A run that fails here leaves no run folder behind.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets

from align.config import Config
from align.data.holdout import training_rows
from align.data.loading import DatasetSourceError
from align.demo import resolve_model_path
from align.models import load_tokenizer, model_context
from align.sources.prompts import check_all_prompt_lengths


def checked_training_rows(cfg: Config, warn: Callable[[str], None] = print) -> datasets.Dataset | None:
    """data.split of data.source, checked row by row; None for agents (their tasks come from the environment)."""
    if cfg.rollout.source == "episodes":
        return None
    rows = training_rows(cfg, warn=warn)
    if len(rows) == 0:
        raise DatasetSourceError(f"the training dataset is empty; check data.source={cfg.data.source!r} and "
                                 f"data.split={cfg.data.split!r}")
    if cfg.rollout.source == "generate":  # the source that encodes prompts (offline rows are scored, not sampled)
        from transformers import AutoConfig

        path = resolve_model_path(cfg.model.name, cfg.model.cache_dir)
        check_all_prompt_lengths(load_tokenizer(path), rows, cfg.rollout.max_tokens,
                                 model_context(AutoConfig.from_pretrained(path)))
    return rows
