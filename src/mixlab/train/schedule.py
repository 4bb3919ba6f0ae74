"""Learning-rate schedules: linear warm-up, then cosine decay or warmup-stable-decay (WSD).

The schedule is a multiplier of the peak learning rate, given to ``torch.optim.lr_scheduler.LambdaLR``
so that its state is saved and resumed with the optimizer like any PyTorch schedule.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import model_validator

from mixlab.config import StrictModel

if TYPE_CHECKING:
    import torch


class ScheduleConfig(StrictModel):
    """``warmup`` is a step count (>= 1) or a fraction of training (< 1).

    ``cosine`` decays from the peak to ``min_lr_ratio * peak`` over the remaining steps. ``wsd`` holds
    the peak, then decays over the last ``decay_fraction`` of training (``linear`` or ``sqrt`` shape,
    the latter from Hägele et al. 2024) to ``min_lr_ratio * peak``. ``constant`` only warms up.
    """

    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2
    decay_shape: Literal["linear", "sqrt"] = "sqrt"

    @model_validator(mode="after")
    def _check(self) -> "ScheduleConfig":
        if self.warmup < 0:
            raise ValueError("warmup must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be between 0 and 1")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError("decay_fraction must be in (0, 1]")
        return self

    def warmup_steps(self, total_steps: int) -> int:
        w = self.warmup * total_steps if self.warmup < 1 else self.warmup
        return min(int(round(w)), max(total_steps - 1, 0))


def lr_multiplier(cfg: ScheduleConfig, step: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based)."""
    warm = cfg.warmup_steps(total_steps)
    if step < warm:
        return (step + 1) / (warm + 1)
    if cfg.kind == "constant":
        return 1.0
    floor = cfg.min_lr_ratio
    if cfg.kind == "cosine":
        span = max(total_steps - warm, 1)
        progress = min((step - warm) / span, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay = max(int(round(cfg.decay_fraction * total_steps)), 1)
    start = total_steps - decay
    if step < start:
        return 1.0
    progress = min((step - start + 1) / decay, 1.0)
    drop = math.sqrt(progress) if cfg.decay_shape == "sqrt" else progress
    return floor + (1 - floor) * (1 - drop)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    import torch  # here, so that configs holding a ScheduleConfig validate without torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(cfg, s, total_steps))
