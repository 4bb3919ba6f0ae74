"""The in-memory data the report is computed from: one :class:`~mixlab.results.Result` per (run,
step, task, metric), and one ``RunMeta`` per run.

These are plain frozen dataclasses so the results store, a test or a notebook can build them without
any file format; the report code never reads files itself. ``Result`` and its conventions (direction,
base model, task version, per-item scores) live in :mod:`mixlab.results`, shared with the runner and
the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mixlab.results import Result

__all__ = ["DataBuild", "Result", "RunMeta", "TaskKey", "index_results", "is_percent", "task_groups"]

TaskKey = tuple[str, str]  # (task, metric)


def is_percent(values: Iterable[float], higher_is_better: bool) -> bool:
    """Accuracy-like: higher-is-better and every value in [0, 1]. Such a metric is shown in percent and
    its absolute changes count in percentage points."""
    vals = list(values)
    return higher_is_better and bool(vals) and all(0.0 <= v <= 1.0 for v in vals)


@dataclass(frozen=True, slots=True)
class DataBuild:
    """A data build a run trained on, as its ``info.json`` records it: what a reader needs to trust the
    comparison (how many items, which mixture, and whether training items overlap the test sets)."""

    name: str
    train: Mapping[str, int] = field(default_factory=dict)  # dataset -> training records
    test: Mapping[str, int] = field(default_factory=dict)  # dataset -> test records
    requested: Mapping[str, float] = field(default_factory=dict)  # domain -> requested ratio
    realized: Mapping[str, float] = field(default_factory=dict)  # domain -> realized ratio
    split: str = ""  # hash | official
    contamination: Mapping[str, Any] = field(default_factory=dict)  # info.json's contamination report


@dataclass(frozen=True, slots=True)
class RunMeta:
    """What the report knows about a run besides its numbers.

    ``dataset`` is the fine-tuning data (or pretraining mixture name); ``target_tasks`` are the tasks
    that data is meant to improve (the "gain" axis), every other task counts towards forgetting.
    ``task_groups`` maps task -> group/category for the per-group tables. ``runtime`` is seconds per
    stage (the run's own process); ``eval_seconds`` the time the sweep spent evaluating its checkpoints
    (summed over tasks). ``label`` is the column header (e.g. a mixture name); the run name when empty.
    ``data_build`` is the build it trained on and ``training_data`` what it trained on in words
    (column -> text: records, replay ...).
    """

    run: str
    method: str = ""
    dataset: str = ""
    target_tasks: tuple[str, ...] = ()
    mixture_requested: Mapping[str, float] = field(default_factory=dict)
    mixture_realized: Mapping[str, float] = field(default_factory=dict)
    runtime: Mapping[str, float] = field(default_factory=dict)
    task_groups: Mapping[str, str] = field(default_factory=dict)
    label: str = ""
    eval_seconds: float | None = None
    data_build: DataBuild | None = None
    training_data: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.label or self.run


def index_results(results: Iterable[Result]) -> dict[str, dict[TaskKey, dict[int, Result]]]:
    """``run -> (task, metric) -> step -> Result``; a later duplicate of the same key wins."""
    out: dict[str, dict[TaskKey, dict[int, Result]]] = {}
    for r in results:
        out.setdefault(r.run, {}).setdefault((r.task, r.metric), {})[r.step] = r
    return out


def task_groups(runs_meta: Iterable[RunMeta], default: str = "all") -> dict[str, str]:
    """Merge the per-run task -> group maps (first one wins); unknown tasks fall into ``default``."""
    merged: dict[str, str] = {}
    for m in runs_meta:
        for task, group in m.task_groups.items():
            merged.setdefault(task, group)
    return _DefaultGroups(merged, default)


class _DefaultGroups(dict):
    def __init__(self, data: dict[str, str], default: str):
        super().__init__(data)
        self.default = default

    def __missing__(self, key: str) -> str:
        return self.default
