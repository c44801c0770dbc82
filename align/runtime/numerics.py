"""Non-finite updates: a NaN/inf loss or gradient skips the optimizer step instead of poisoning the weights.

One bad batch (an overflow, a degenerate reward) should cost one update, not the run; many in a row mean
the run has diverged, and continuing would only burn compute: `UpdateGuard` stops it with a one-line
`TrainingDivergedError` after `train.max_bad_updates` consecutive bad updates. The weights and the
checkpoints on disk are then still the last good ones (a skipped update never touched them).

Every rank takes the same decision (one max-reduce per update), so no rank steps while another skips.
Under DeepSpeed, accelerate lets the engine step inside `backward`, before this check can run: there
the guard only counts and stops (DeepSpeed's own overflow check covers fp16 only).
"""

from __future__ import annotations

import math

import torch

from align.errors import UserError


class TrainingDivergedError(UserError, RuntimeError):
    """Too many consecutive updates with a non-finite loss or gradient; the message is one line."""


class UpdateGuard:
    def __init__(self, max_bad_in_a_row: int):
        self.max_bad_in_a_row = max_bad_in_a_row
        self.bad_in_a_row = 0

    def is_finite(self, accelerator, losses_finite: bool, grad_norm) -> bool:
        """True when this update may be applied: every rank's losses and the gradient norm are finite."""
        bad = not losses_finite or (grad_norm is not None and not math.isfinite(float(grad_norm)))
        flag = torch.tensor(float(bad), device=accelerator.device)
        return not bool(accelerator.reduce(flag, reduction="max").item())

    def record(self, ok: bool, where: str) -> None:
        """Count consecutive bad updates; raise once there are more than allowed."""
        self.bad_in_a_row = 0 if ok else self.bad_in_a_row + 1
        if self.bad_in_a_row >= self.max_bad_in_a_row:
            raise TrainingDivergedError(
                f"{self.bad_in_a_row} optimizer updates in a row had a NaN/inf loss or gradient (train.max_bad_updates="
                f"{self.max_bad_in_a_row}); stopped without applying them, so the weights and the checkpoints in "
                f"{where} are the last good ones; lower train.lr or train.max_grad_norm, or check the rewards"
            )
