"""User-facing errors: bad input is reported as one line, without a traceback."""

from __future__ import annotations

import sys
from contextlib import contextmanager


def user_error_types() -> tuple[type[BaseException], ...]:
    """Error classes whose message alone tells the user what to fix. Each lives beside the code
    that raises it; imported here lazily so this module stays import-light."""
    from align.config import ConfigError
    from align.data.loading import DatasetSourceError
    from align.models import ModelLoadError
    from align.rewards import RewardFunctionError
    from align.rollout import WeightSyncError
    from align.trainers.checkpoint import CheckpointError
    from align.trainers.numerics import TrainingDivergedError
    from rewards.registry import RewardSpecError
    from rewards.sandbox import SandboxUnavailable

    return (ConfigError, DatasetSourceError, ModelLoadError, RewardFunctionError, RewardSpecError,
            WeightSyncError, CheckpointError, TrainingDivergedError, SandboxUnavailable)


@contextmanager
def exit_on_user_error():
    try:
        yield
    except Exception as err:  # noqa: BLE001 - filtered just below
        if isinstance(err, user_error_types()):
            print(f"align: error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
