"""Forgetting: how each run's checkpoints moved every benchmark relative to the base model.

Definitions (all *directional*: a metric where lower is better, like bits-per-byte, is negated first,
so a positive change is an improvement and a negative one a loss):

- change = score(run) - score(base), absolute in the metric's units; relative = change / |base value|.
- the summaries' relative unit (means over benchmarks, target gain, change on the other tasks, the
  contrasts and their CIs): each benchmark's change in percent of its base value; a benchmark whose base
  value is 0 has no percent, so it contributes its absolute change in *points* instead (percentage points
  for accuracy-like metrics, the metric's own units otherwise) rather than silently dropping out (a
  task at 0.0 -> 10.9% exact match counts +10.9). Every summary names such benchmarks
  (:func:`unit_scale` is the one place this convention lives).
- per run: mean change over its benchmarks, and the worst benchmark (most negative change).
- forgetting across checkpoints (Chaudhry et al. 2018): at step t, ``max_{s < t} score_s - score_t``
  over earlier checkpoints s, the base model counting as the earliest; > 0 means something learned
  was lost. Only checkpoints evaluated with the same task version are compared.
- backward transfer, as the brief for this project fixes it: the mean over the run's non-target
  benchmarks of ``score(final checkpoint) - score(base)`` (the first checkpoint stands in for the base
  when no comparable base result exists). Lopez-Paz & Ranzato's GEM BWT averages final minus
  just-after-learning over a task sequence; with one fine-tuning stage on top of a base model the
  "just after learning" point of the old tasks is the base, which gives this formula. Negative BWT is
  forgetting.
- item flips: items the base scored 1 and the run 0 (correct -> wrong), and the reverse.

Paired statistics (see :mod:`mixlab.report.stats`) use the items both results scored; results from a
different ``task_version`` or ``base_model`` are never compared and come back as ``Incomparable``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from mixlab.report import stats
from mixlab.report.model import Result, RunMeta, TaskKey, index_results, is_percent

Unit = Literal["relative", "absolute"]


def unit_scale(base_value: float, value: float, higher_is_better: bool, unit: Unit) -> float:
    """The factor that turns a directional change (metric units) into ``unit``.

    ``absolute``: 1. ``relative``: 100 / |base| (percent of the base value); where the base is 0 there
    is no percent, and the change counts in points instead: x100 for an accuracy-like metric (percentage
    points), x1 otherwise. A relative change of a zero base would be infinite, and dropping the task would
    hide exactly the benchmarks a fine-tuning run learns from nothing (a base that answers none right).
    """
    if unit == "absolute":
        return 1.0
    if base_value != 0:
        return 100.0 / abs(base_value)
    return 100.0 if is_percent((base_value, value), higher_is_better) else 1.0


def in_points(base_value: float, unit: Unit) -> bool:
    """Whether a change in ``unit`` is an absolute change in points (the zero-base case of relative)."""
    return unit == "relative" and base_value == 0


@dataclass(frozen=True, slots=True)
class StatsConfig:
    """Knobs of the paired statistics; ``seed`` makes every resample reproducible."""

    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0
    exact_below: int = 25  # McNemar: exact binomial when b + c is below this
    n_perm: int = 2000  # sign-flip test: random flips when more than exact_max differences are non-zero
    exact_max: int = 14


@dataclass(frozen=True, slots=True)
class Incomparable:
    """A pair the report refused to compare, and why."""

    run: str
    step: int
    task: str
    metric: str
    against: str
    reason: str

    @property
    def pair(self) -> tuple[str, str]:
        return (f"{self.run}@{self.step}", self.against)


@dataclass(slots=True)
class Change:
    """One benchmark of one checkpoint against the base model, with its paired statistics."""

    run: str
    step: int
    task: str
    metric: str
    base_run: str
    base_value: float
    value: float
    higher_is_better: bool
    delta: float  # directional: > 0 better
    rel: float | None  # delta / |base_value|; None when the base value is 0
    alpha: float = 0.05
    n_paired: int = 0
    ci: tuple[float, float] | None = None
    pvalue: float | None = None
    test: str | None = None
    flips_correct_to_wrong: int | None = None
    flips_wrong_to_correct: int | None = None
    replicates: np.ndarray | None = field(default=None, repr=False)  # bootstrap means of delta
    base_chance: float | None = None  # the metric under uniform guessing (multiple choice), if known
    base_chance_p: float | None = None  # one-sided binomial p that the base is above it
    base_n: int = 0  # items the base result averages

    @property
    def key(self) -> TaskKey:
        return (self.task, self.metric)

    @property
    def base_at_chance(self) -> bool:
        """The base model scores within one standard error of uniform guessing here
        (``base - chance <= sqrt(chance (1 - chance) / n)``; its binomial p against guessing is then
        0.16 or more): what a fine-tuning run changes on such a benchmark is its answer priors, not
        knowledge it had, so the run summaries and contrasts leave it out of the forgetting averages
        (a target task still counts).

        Why not "not significantly above chance" (p >= 0.05): with few items that holds for bases well
        above guessing (5 of 12 right against 25% guessing, p = 0.16), so it would mark low power, not
        chance; one standard error asks that the base be close to guessing as well. On SmolLM2-135M it
        leaves out BoolQ (31% against 50%), MMLU (19.5% against 25%) and WinoGrande (49% against 50%)."""
        if self.base_chance is None or not self.base_n or not math.isfinite(self.base_value):
            return False
        c = self.base_chance
        return self.base_value - c <= math.sqrt(c * (1 - c) / self.base_n)

    def chance_words(self) -> str:
        """``boolq (base 31.2%, guessing 50.0%)`` for notes."""
        return (f"{self.task} (base {100 * self.base_value:.1f}%, guessing {100 * (self.base_chance or 0):.1f}%)")

    @property
    def significant(self) -> bool | None:
        return None if self.pvalue is None else self.pvalue < self.alpha

    @property
    def nonsignificant_drop(self) -> bool:
        return self.delta < 0 and self.significant is False

    @property
    def marker(self) -> str:
        """``*`` for a significant change, ``ns`` for a drop that is not significant, else empty."""
        return "*" if self.significant else ("ns" if self.nonsignificant_drop else "")

    def in_unit(self, unit: Unit) -> float:
        """The change in the summaries' ``unit`` (:func:`unit_scale`: zero bases count in points)."""
        return self.delta * unit_scale(self.base_value, self.value, self.higher_is_better, unit)

    def in_points(self, unit: Unit) -> bool:
        return in_points(self.base_value, unit)

    def unit_replicates(self, unit: Unit) -> np.ndarray | None:
        """The bootstrap replicates of the change, in ``unit`` (None without paired items)."""
        if self.replicates is None:
            return None
        return self.replicates.astype(np.float64) * unit_scale(self.base_value, self.value, self.higher_is_better,
                                                               unit)


@dataclass(frozen=True, slots=True)
class Comparison:
    changes: list[Change]
    incomparable: list[Incomparable]


def _directional_delta(r: Result, b: Result) -> tuple[float, float | None]:
    delta = r.score() - b.score()
    return delta, (delta / abs(b.value) if b.value != 0 else None)


def incomparable_reason(r: Result, b: Result) -> str | None:
    """Why ``r`` cannot be compared with ``b`` (None when it can)."""
    if r.task_version != b.task_version:
        return f"task version {r.task_version!r} differs from {b.task_version!r} of {b.run}@{b.step}"
    if r.base_model != b.base_model:
        return f"base model {r.base_model!r} differs from {b.base_model!r} of {b.run}@{b.step}"
    if r.higher_is_better != b.higher_is_better:
        return f"metric direction differs from {b.run}@{b.step} (higher_is_better {r.higher_is_better} vs " \
               f"{b.higher_is_better})"
    return None


def _base_of(base: str | Mapping[str, str], run: str) -> str | None:
    return base if isinstance(base, str) else base.get(run)


def _pick_steps(series: Mapping[int, Result], steps: Literal["last", "all"] | Sequence[int]) -> list[int]:
    if steps == "last":
        return [max(series)]
    if steps == "all":
        return sorted(series)
    return [s for s in steps if s in series]


def compare_to_base(results: Iterable[Result] | Mapping, base: str | Mapping[str, str],
                    steps: Literal["last", "all"] | Sequence[int] = "last",
                    config: StatsConfig = StatsConfig()) -> Comparison:
    """Change of every (run, step, task, metric) against its base model's result, with paired statistics.

    ``base`` is the run name holding the base model's results (its latest step is used), or a map
    run -> base run for studies with several base models. Runs that are bases are not compared.
    Paired statistics are computed where both results carry per-item scores.
    """
    index = results if isinstance(results, Mapping) else index_results(results)
    bases = {base} if isinstance(base, str) else set(base.values())
    changes: list[Change] = []
    bad: list[Incomparable] = []
    pending: list[tuple[Change, Result, Result]] = []
    chance_p: dict[int, float | None] = {}
    for run in sorted(index):
        base_run = _base_of(base, run)
        if run in bases or base_run is None:
            continue
        base_series = index.get(base_run, {})
        for key, series in sorted(index[run].items()):
            b_series = base_series.get(key)
            for step in _pick_steps(series, steps):
                r = series[step]
                if not b_series:
                    bad.append(Incomparable(run, step, *key, base_run, f"no result for this task in {base_run}"))
                    continue
                b = b_series[max(b_series)]
                reason = incomparable_reason(r, b)
                if reason:
                    bad.append(Incomparable(run, step, *key, f"{b.run}@{b.step}", reason))
                    continue
                delta, rel = _directional_delta(r, b)
                ch = Change(run, step, r.task, r.metric, base_run, b.value, r.value, r.higher_is_better,
                            delta, rel, alpha=config.alpha, base_chance=b.chance, base_chance_p=_chance_p(b, chance_p),
                            base_n=b.n)
                changes.append(ch)
                if r.items is not None and b.items is not None:
                    pending.append((ch, b, r))
    _add_paired_stats(pending, config)
    return Comparison(changes, bad)


def _chance_p(b: Result, cache: dict[int, float | None]) -> float | None:
    """The base result's one-sided binomial p against guessing (None when its chance is unknown); once
    per base result, however many runs share it."""
    if id(b) not in cache:
        cache[id(b)] = (None if b.chance is None or not b.n or not math.isfinite(b.value)
                        else stats.above_chance_pvalue(b.value, b.n, b.chance))
    return cache[id(b)]


def _aligned(b: Result, r: Result, cache: dict[int, tuple[list[str], np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Base and run item scores over the items both have, in the base's order."""
    if id(b.items) not in cache:
        cache[id(b.items)] = (list(b.items), np.fromiter(b.items.values(), dtype=np.float64, count=len(b.items)))
    keys, base_arr = cache[id(b.items)]
    items = r.items
    if len(items) == len(keys) and list(items) == keys:
        return base_arr, np.fromiter(items.values(), dtype=np.float64, count=len(keys))
    mask = np.fromiter((k in items for k in keys), dtype=bool, count=len(keys))
    new = np.fromiter((items[k] for k, m in zip(keys, mask, strict=True) if m), dtype=np.float64)
    return base_arr[mask], new


def _add_paired_stats(pending: list[tuple[Change, Result, Result]], cfg: StatsConfig) -> None:
    """Fill CI, test and flips; comparisons on the same task and item count share one batch of resamples."""
    groups: dict[tuple[str, int, bool], list[tuple[Change, np.ndarray]]] = defaultdict(list)
    cache: dict[int, tuple[list[str], np.ndarray]] = {}
    for ch, b, r in pending:
        base_arr, new_arr = _aligned(b, r, cache)
        if len(base_arr) == 0:
            continue
        d = (new_arr - base_arr) if ch.higher_is_better else (base_arr - new_arr)
        binary = stats.is_binary(base_arr) and stats.is_binary(new_arr)
        groups[(ch.task, len(d), binary)].append((ch, d))
    for (task, n, binary), members in groups.items():
        D = np.stack([d for _, d in members], axis=1)
        reps = stats.bootstrap_replicates(D, cfg.n_boot, cfg.seed, key=task)
        lo, hi = stats.percentile_ci(reps, cfg.alpha)
        if binary:
            worse, better = (D < 0).sum(axis=0), (D > 0).sum(axis=0)
            _, pvals, methods = stats.mcnemar_many(worse, better, cfg.exact_below)
        else:
            pvals, methods = stats.sign_flip_pvalues(D, cfg.n_perm, cfg.seed, key=task, exact_max=cfg.exact_max)
        for j, (ch, _) in enumerate(members):
            ch.n_paired, ch.ci = n, (float(lo[j]), float(hi[j]))
            ch.pvalue, ch.test = float(pvals[j]), methods[j]
            ch.replicates = reps[:, j].astype(np.float32)
            if binary:
                ch.flips_correct_to_wrong, ch.flips_wrong_to_correct = int(worse[j]), int(better[j])


# ---------------------------------------------------------------- across checkpoints


@dataclass(frozen=True, slots=True)
class CheckpointPoint:
    """One checkpoint of one benchmark: its change vs the base and its drop from the best earlier point."""

    run: str
    task: str
    metric: str
    step: int
    value: float
    higher_is_better: bool
    delta: float | None  # directional change vs the base (None: no comparable base)
    rel: float | None
    drop: float | None  # best earlier score - this score (> 0: forgotten); None for the first point
    best_earlier_step: int | None  # -1 when the best earlier point is the base model
    base_value: float | None = None  # the comparable base's value (None: no comparable base)

    @property
    def score(self) -> float:
        return self.value if self.higher_is_better else -self.value

    def in_unit(self, unit: Unit) -> float | None:
        """The change vs the base in ``unit`` (zero bases in points, as :func:`unit_scale`)."""
        if self.delta is None or self.base_value is None:
            return None
        return self.delta * unit_scale(self.base_value, self.value, self.higher_is_better, unit)


def checkpoint_forgetting(results: Iterable[Result] | Mapping, base: str | Mapping[str, str] | None = None
                          ) -> tuple[list[CheckpointPoint], list[Incomparable]]:
    """Every checkpoint's change vs the base and drop from the best earlier checkpoint (base included)."""
    index = results if isinstance(results, Mapping) else index_results(results)
    bases = set() if base is None else ({base} if isinstance(base, str) else set(base.values()))
    points: list[CheckpointPoint] = []
    bad: list[Incomparable] = []
    for run in sorted(index):
        if run in bases:
            continue
        base_run = None if base is None else _base_of(base, run)
        base_series = index.get(base_run, {}) if base_run else {}
        for key, series in sorted(index[run].items()):
            b_series = base_series.get(key)
            b = b_series[max(b_series)] if b_series else None
            _series_points(run, key, series, b, points, bad)
    return points, bad


def _series_points(run: str, key: TaskKey, series: Mapping[int, Result], b: Result | None,
                   points: list[CheckpointPoint], bad: list[Incomparable]) -> None:
    """Walk one benchmark's checkpoints in step order keeping the best score so far.

    The base's comparability is decided once per task version (not per checkpoint): this loop runs
    for every result of a study (120k in benchmarks/report_scale.py).
    """
    best_score, best_step, version, ident, reason = -np.inf, None, None, None, None
    for s in sorted(series):
        r = series[s]
        if r.task_version != version:
            if version is not None:
                bad.append(Incomparable(run, s, *key, f"{run}@<{s}", f"task version changed from {version!r} to "
                                        f"{r.task_version!r}; earlier checkpoints are not compared with this one"))
            version, best_score, best_step, ident = r.task_version, -np.inf, None, None
        if (r.task_version, r.base_model, r.higher_is_better) != ident:
            ident = (r.task_version, r.base_model, r.higher_is_better)
            reason = incomparable_reason(r, b) if b is not None else None
            if b is not None and reason is None and best_step is None:
                best_score, best_step = b.score(), -1
        base_ok = b is not None and reason is None
        if b is not None and reason is not None:
            bad.append(Incomparable(run, s, *key, f"{b.run}@{b.step}", reason))
        score = r.value if r.higher_is_better else -r.value
        delta = rel = None
        if base_ok:
            delta = score - (b.value if b.higher_is_better else -b.value)
            rel = delta / abs(b.value) if b.value != 0 else None
        drop = None if best_step is None else float(best_score - score)
        points.append(CheckpointPoint(run, key[0], key[1], s, r.value, r.higher_is_better, delta, rel, drop,
                                      best_step, b.value if base_ok else None))
        if score > best_score:
            best_score, best_step = score, s


# ---------------------------------------------------------------- per run


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run's forgetting in one line; changes are in ``unit`` (relative: percent of the base value)."""

    run: str
    method: str
    dataset: str
    step: int
    unit: Unit
    n_tasks: int
    mean_change: float
    mean_ci: tuple[float, float] | None
    worst: Change | None
    worst_change: float | None
    target_gain: float | None  # mean change over the run's target tasks
    other_change: float | None  # mean change over the others (= backward transfer at the final step)
    backward_transfer: float | None
    max_forgetting: float | None  # largest drop from a best earlier checkpoint, any task/step
    n_significant_drops: int
    n_nonsignificant_drops: int
    target_ci: tuple[float, float] | None = None  # 95% bootstrap CI of target_gain
    other_ci: tuple[float, float] | None = None  # of other_change
    target_tasks: tuple[str, ...] = ()  # the tasks target_gain averages
    other_tasks: tuple[str, ...] = ()  # the tasks other_change averages
    points_tasks: tuple[str, ...] = ()  # of those, the ones counted in points (base value 0)
    chance_tasks: tuple[str, ...] = ()  # non-target benchmarks left out: the base is at chance there

    @property
    def mean_marker(self) -> str:
        if self.mean_ci is None:
            return ""
        if self.mean_ci[0] > 0 or self.mean_ci[1] < 0:
            return "*"
        return "ns" if self.mean_change < 0 else ""


def _mean_ci(changes: Sequence[Change], unit: Unit, alpha: float) -> tuple[float, float] | None:
    """Percentile CI of the mean change: the per-benchmark bootstrap replicates averaged (all or nothing)."""
    reps = [c.unit_replicates(unit) for c in changes]
    if not reps or any(r is None for r in reps):
        return None
    lo, hi = stats.percentile_ci(np.mean(np.stack(reps, axis=1), axis=1)[:, None], alpha)
    return float(lo[0]), float(hi[0])


def summarize_runs(comparison: Comparison, runs_meta: Mapping[str, RunMeta] | Iterable[RunMeta],
                   points: Sequence[CheckpointPoint] = (), unit: Unit = "relative", alpha: float = 0.05
                   ) -> list[RunSummary]:
    """One ``RunSummary`` per run, from the final-step changes (and the checkpoint points if given)."""
    meta = runs_meta if isinstance(runs_meta, Mapping) else {m.run: m for m in runs_meta}
    by_run: dict[str, list[Change]] = defaultdict(list)
    for ch in comparison.changes:
        by_run[ch.run].append(ch)
    finals: dict[str, tuple[list[Change], list[Change]]] = {}
    for run in sorted(by_run):
        last = max(c.step for c in by_run[run])
        chs = [c for c in by_run[run] if c.step == last]
        targets = set(meta.get(run, RunMeta(run)).target_tasks)
        kept = [c for c in chs if c.task in targets or not c.base_at_chance]
        chance = [c for c in chs if c.task not in targets and c.base_at_chance] if kept else []
        finals[run] = (kept or chs, chance)  # every benchmark at chance: leave none out (nothing would be left)
    curves = _curve_stats(points, meta, unit, {(c.run, c.task, c.metric) for _, ch in finals.values() for c in ch})
    out = []
    for run, (chs, chance) in finals.items():
        last = chs[0].step
        m = meta.get(run, RunMeta(run))
        targets = set(m.target_tasks)
        vals = [c.in_unit(unit) for c in chs]
        worst = min(chs, key=lambda c: c.in_unit(unit))
        tgt = [c for c in chs if c.task in targets]
        oth = [c for c in chs if c.task not in targets]
        bwt, max_forget = curves.get(run, (None, None))
        out.append(RunSummary(
            run, m.method, m.dataset, last, unit, len(chs), float(np.mean(vals)), _mean_ci(chs, unit, alpha),
            worst, worst.in_unit(unit), _mean_of(tgt, unit), _mean_of(oth, unit), bwt, max_forget,
            sum(1 for c in chs if c.delta < 0 and c.significant), sum(1 for c in chs if c.nonsignificant_drop),
            _mean_ci(tgt, unit, alpha), _mean_ci(oth, unit, alpha), tuple(c.task for c in tgt),
            tuple(c.task for c in oth), tuple(c.task for c in chs if c.in_points(unit)),
            tuple(c.task for c in chance)))
    return out


def _mean_of(changes: Sequence[Change], unit: Unit) -> float | None:
    return float(np.mean([c.in_unit(unit) for c in changes])) if changes else None


def _curve_stats(points: Sequence[CheckpointPoint], meta: Mapping[str, RunMeta], unit: Unit,
                 skip: set[tuple[str, str, str]] = frozenset()) -> dict[str, tuple[float | None, float | None]]:
    """Per run: backward transfer (mean over non-target tasks of final minus base) and the largest drop,
    leaving out the (run, task, metric) in ``skip`` (benchmarks where the base is at chance)."""
    final: dict[tuple[str, str, str], CheckpointPoint] = {}
    first: dict[tuple[str, str, str], CheckpointPoint] = {}
    worst_drop: dict[str, float] = {}
    for p in points:
        k = (p.run, p.task, p.metric)
        if k in skip:
            continue
        if k not in final or p.step > final[k].step:
            final[k] = p
        if k not in first or p.step < first[k].step:
            first[k] = p
        if p.drop is not None:
            d = p.drop if unit == "absolute" else _relative_drop(p)
            if d is not None:
                worst_drop[p.run] = max(worst_drop.get(p.run, -np.inf), d)
    transfers: dict[str, list[float]] = defaultdict(list)
    for k, p in final.items():
        if k[1] in set(meta.get(p.run, RunMeta(p.run)).target_tasks):
            continue
        v = _transfer(p, first[k], unit)
        if v is not None:
            transfers[p.run].append(v)
    runs = set(worst_drop) | set(transfers)
    return {r: (float(np.mean(transfers[r])) if transfers.get(r) else None,
                max(0.0, worst_drop[r]) if r in worst_drop else None) for r in runs}


def _relative_drop(p: CheckpointPoint) -> float | None:
    best = p.drop + p.score  # the best earlier score; |score| = |value| in both directions
    return None if best == 0 else 100.0 * p.drop / abs(best)


def _transfer(final: CheckpointPoint, first: CheckpointPoint, unit: Unit) -> float | None:
    """Final minus initial: the base when comparable, otherwise the run's first checkpoint."""
    if final.delta is not None:
        return final.in_unit(unit)
    if final is first:
        return None
    return (final.score - first.score) * unit_scale(first.value, final.value, final.higher_is_better, unit)
