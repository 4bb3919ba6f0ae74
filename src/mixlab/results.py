"""What an evaluation produces, as one set of types shared by the runner, the results store and the
report (this module imports nothing of theirs, so each can build on it).

* :class:`Result` - one number: a metric of one task at one checkpoint of one run, with its per-item
  scores (``items``) for paired statistics. The store returns these and the report computes from
  them; a test or a notebook can build them by hand.
* :class:`Outcome` - what became of one task in one :func:`mixlab.eval.runner.evaluate` call:
  ``computed``, ``reused`` (a finished result with the same key was already there), ``skipped``
  (its data is not on this machine) or ``failed``, with the ``result.json`` content when there is one.
* :func:`rows_of` - the per-metric numbers of a ``result.json`` (what the store indexes).

Conventions the comparisons rely on:

- ``higher_is_better`` gives the metric's direction (bits-per-byte is lower-is-better). Every change
  the report computes is *directional*: positive means better, negative means worse.
- ``base_model`` names the pretrained model the evaluated weights descend from; the base model's own
  results carry its own name. Results are compared only when ``base_model`` and ``task_version``
  agree, otherwise the pair is listed as incomparable with the reason.
- ``items`` maps item id -> per-item score (0/1 for accuracy, a float for bpb or continuous scores);
  any ``Mapping`` works: the store passes :class:`ItemScores`, which reads the per-item file on first
  access (and is the file's path wherever a path is expected).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

LOWER_IS_BETTER = frozenset({"bpb", "bpb_corpus", "kl", "kl_token"})  # every other metric scores higher when better
Status = Literal["computed", "reused", "skipped", "failed"]


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True, slots=True)
class Result:
    """One evaluated number: a metric of one task at one checkpoint of one run."""

    run: str
    step: int
    task: str
    metric: str
    value: float
    n: int
    stderr: float | None = None
    higher_is_better: bool = True
    task_version: str = ""
    base_model: str | None = None
    items: Mapping[str, float] | None = field(default=None, compare=False, repr=False)
    chance: float | None = None  # the metric's value under uniform guessing (multiple choice), if known

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, self.metric)

    def score(self, value: float | None = None) -> float:
        """``value`` (default: this result's) with the direction folded in, so larger is always better."""
        v = self.value if value is None else value
        return v if self.higher_is_better else -v


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one task in one evaluation. ``result`` is the ``result.json`` content
    (computed or reused), ``entry`` what ``results.json`` shows for the task (its metrics, or the
    skip reason / error)."""

    task: str
    status: Status
    entry: dict[str, Any]
    result: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in ("computed", "reused")


def load_items(path: str | os.PathLike, metric: str) -> dict[str, float]:
    """Item id -> the item's ``metric`` from a per-item file (for paired statistics in the report)."""
    out: dict[str, float] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if metric in row:
                    out[str(row["id"])] = float(row[metric])
    return out


class ItemScores(Mapping[str, float]):
    """Per-item scores of one metric, read from the per-item file on first access (most results
    never need them); also the file's path (``os.fspath``), for code that reads the file itself."""

    def __init__(self, path: str | os.PathLike, metric: str):
        self.path, self.metric = str(path), metric
        self._data: dict[str, float] | None = None

    def __fspath__(self) -> str:
        return self.path

    def _load(self) -> dict[str, float]:
        if self._data is None:
            self._data = load_items(self.path, self.metric) if Path(self.path).is_file() else {}
        return self._data

    def __getitem__(self, key: str) -> float:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"ItemScores({self.path!r}, {self.metric!r})"


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def rows_of(result: Mapping[str, Any]) -> list[tuple[str, float | None, int, float | None, bool]]:
    """(metric, value, n, stderr, higher_is_better) of every numeric metric of a ``result.json``
    (a judge task's per-category table is not one); a non-finite value or stderr is None."""
    stderr = result.get("stderr") or {}
    n = int(result.get("n", 0))
    return [(metric, _finite(value), n, _finite(stderr.get(metric)), higher_is_better(metric))
            for metric, value in (result.get("metrics") or {}).items()
            if metric != "n" and isinstance(value, (int, float))]
