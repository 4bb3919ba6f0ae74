"""The fine-tuning methods: one table, method name -> :class:`Method`.

A method is a recipe module (``sft.py``, ``grpo.py``, ...) that provides the three functions of
:class:`Recipe`, plus the capability flags the config checks and the CLI guards read. Adding a method
is writing its module and adding its entry here (and, when it has options of its own, their section
in :mod:`mixlab.train.finetune.config`). The table imports no recipe: each entry's ``recipe`` imports
its module (torch, trl) only when the method prepares or runs, so validating a config stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from mixlab.train.finetune.config import FinetuneConfig
    from mixlab.train.finetune.run import EvaluateFn, FinetuneResult, Say
    from mixlab.train.loop import StepInfo


class Recipe(Protocol):
    """What a method's module provides."""

    def prepare(self, cfg: FinetuneConfig, say: Say) -> Any:
        """Load and check everything the run needs; every user error is raised here, before training."""

    def format_plan(self, prep: Any, method: Method) -> str:
        """The human-readable plan of a prepared run (``--dry-run``)."""

    def run(self, cfg: FinetuneConfig, out: Path, on_step: Callable[[StepInfo], None] | None, status: Say | None,
            evaluate_fn: EvaluateFn | None) -> FinetuneResult:
        """Run, resume, or skip when finished, the fine-tuning of ``cfg`` in run directory ``out``."""


@dataclass(frozen=True)
class Method:
    """A fine-tuning algorithm: its recipe and which options it takes.

    ``lora``: whether an adapter is required, optional or impossible. ``anchor``: whether an anchor
    to the base makes sense (RL methods carry their own KL term). ``replay``: whether it trains on a
    fixed token stream, so ``data.replay`` and ``data.packing`` apply. ``loop_based``: it trains in
    mixlab's loop (:mod:`mixlab.train.loop`), so ``--nproc`` and a custom ``evaluate_fn`` work.
    ``options``: it has a config section of its own, named after it (``grpo:``).
    """

    description: str
    recipe: Callable[[], Recipe]
    lora: Literal["required", "optional", "never"] = "optional"
    anchor: bool = True
    replay: bool = True
    loop_based: bool = True
    options: bool = False

    def prepare(self, cfg: FinetuneConfig, say: Say) -> Any:
        return self.recipe().prepare(cfg, say)

    def format_plan(self, prep: Any) -> str:
        return self.recipe().format_plan(prep, self)

    def run(self, cfg: FinetuneConfig, out: str | Path, on_step: Callable[[StepInfo], None] | None = None,
            status: Say | None = None, evaluate_fn: EvaluateFn | None = None) -> FinetuneResult:
        return self.recipe().run(cfg, Path(out), on_step, status, evaluate_fn)


def _sft() -> Recipe:
    from mixlab.train.finetune import sft

    return sft


def _grpo() -> Recipe:
    from mixlab.train.finetune import grpo

    return grpo


def _spin() -> Recipe:
    from mixlab.train.finetune import spin

    return spin


METHODS: dict[str, Method] = {
    "sft": Method("supervised fine-tuning on completion tokens (full weights, or LoRA with a `lora:` section)", _sft),
    "lora": Method("supervised fine-tuning of a LoRA adapter (peft); `lora:` optional, defaults apply", _sft,
                   lora="required"),
    "grpo": Method("GRPO (trl) with mixlab's verifiers as rewards; `grpo:` section", _grpo,
                   anchor=False, replay=False, loop_based=False, options=True),
    "spin": Method("SPIN: iterated DPO (trl), ground truth vs the model's own answers; `spin:` section", _spin,
                   anchor=False, replay=False, loop_based=False, options=True),
}
