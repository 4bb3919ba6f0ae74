"""Fine-tuning (``mixlab finetune``): one config, a table of methods, one run contract.

- :mod:`~mixlab.train.finetune.config`: the config of every method (imports no torch);
- :mod:`~mixlab.train.finetune.methods`: the method table (name -> recipe and capability flags);
- :mod:`~mixlab.train.finetune.run`: what every method shares (loading, early stopping, the baseline,
  the run directory and the :class:`~mixlab.train.finetune.run.FinetuneResult`);
- :mod:`~mixlab.train.finetune.base`: the base model and LoRA;
- one module per method (``sft``, ``grpo``, ...), and ``trl_bridge`` for the methods trained by trl.

The functions below dispatch on ``cfg.method``; importing this package imports no torch::

    from mixlab.train.finetune import finetune, load_finetune_config
    result = finetune(load_finetune_config("configs/finetune/toyworld_sft.yaml"), "runs/ft_sft")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixlab.runs.rundir import RunDir
from mixlab.train.finetune.config import FinetuneConfig, load_finetune_config
from mixlab.train.finetune.methods import METHODS, Method

if TYPE_CHECKING:
    from mixlab.train.finetune.run import EvaluateFn, FinetuneResult
    from mixlab.train.loop import StepInfo

__all__ = ["METHODS", "FinetuneConfig", "Method", "finetune", "format_plan", "is_complete", "load_finetune_config",
           "prepare"]


def prepare(cfg: FinetuneConfig, status: Callable[[str], None] | None = None) -> Any:
    """Load and check everything the run of ``cfg`` needs (every user error surfaces here, before training)."""
    return METHODS[cfg.method].prepare(cfg, status or (lambda _m: None))


def format_plan(prep: Any) -> str:
    """The human-readable plan of a prepared run (``--dry-run``)."""
    return METHODS[prep.config.method].format_plan(prep)


def finetune(cfg: FinetuneConfig, out: str | Path, on_step: Callable[[StepInfo], None] | None = None,
             status: Callable[[str], None] | None = None, evaluate_fn: EvaluateFn | None = None) -> FinetuneResult:
    """Run (or resume, or skip when finished) the fine-tuning described by ``cfg`` in ``out``.

    ``evaluate_fn(model, step) -> {"score": ..., ...}`` replaces the early-stopping evaluation of a
    loop-based method (custom metrics, tests). In a process group
    (``mixlab.train.distributed.launch(finetune, cfg, out, nproc=N)``) every rank calls this.
    """
    return METHODS[cfg.method].run(cfg, out, on_step, status, evaluate_fn)


def is_complete(cfg: FinetuneConfig, out: str | Path) -> bool:
    """True when ``out`` holds a finished run of this config (``finetune`` would skip it)."""
    return RunDir.open(out, cfg, "finetune").complete
