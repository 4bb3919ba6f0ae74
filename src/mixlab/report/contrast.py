"""Head-to-head: does a method forget less than a reference run (usually plain SFT), and at what gain?

Forgetting studies ask "does the mitigation forget *less than SFT*?", not only "does it forget?". Both
runs were scored on the same items, so the question has a paired answer: for every non-target
benchmark, the per-item change against the base model of the method minus that of the reference.

The bootstrap of :mod:`mixlab.report.forgetting` draws its resamples from a generator keyed by the
task and the item count, so every run's replicates of one task use the *same* resampled items. The
difference of two runs' replicates is therefore a paired bootstrap of their difference, and the mean
over benchmarks of those differences gives the CI of the difference in mean forgetting (and gain)
without another pass over the items.

Definitions (in the summaries' unit, direction-aware, positive = better):
- ``gain``: mean change over the run's target tasks; ``other``: mean change over the rest, both over the
  benchmarks the run and the reference share (relative unit: percent of the base value, and points for a
  benchmark whose base is 0, see :func:`mixlab.report.forgetting.unit_scale`). Each contrast records
  which tasks it averaged, which counted in points, and which it left out and why.
- ``forgetting_advantage`` = other(run) - other(reference): > 0 means the run forgot less.
- ``gain_ratio`` = gain(run) / gain(reference): "comparable gain" when it is at least
  ``comparable_gain`` (default 0.8), i.e. the mitigation kept most of what SFT learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mixlab.report import stats
from mixlab.report.forgetting import Change, Comparison, Unit
from mixlab.report.model import RunMeta, TaskKey


@dataclass(frozen=True, slots=True)
class Paired:
    """A mean difference over benchmarks with its paired-bootstrap CI and two-sided p-value."""

    value: float
    ci: tuple[float, float] | None
    pvalue: float | None
    n_tasks: int

    @property
    def significant(self) -> bool:
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)


@dataclass(frozen=True, slots=True)
class Contrast:
    """One run against the reference run at both runs' final checkpoints."""

    run: str
    method: str
    reference: str
    gain: float | None
    reference_gain: float | None
    other: float | None
    reference_other: float | None
    gain_difference: Paired | None  # gain(run) - gain(reference)
    forgetting_advantage: Paired | None  # other(run) - other(reference); > 0: forgets less
    unit: Unit = "relative"
    target_tasks: tuple[str, ...] = ()  # the benchmarks `gain` averages
    other_tasks: tuple[str, ...] = ()  # the benchmarks `other` averages
    points_tasks: tuple[str, ...] = ()  # of those, the ones counted in points (base value 0)
    left_out: tuple[tuple[str, str], ...] = ()  # (benchmark, why) not averaged
    per_task: tuple[tuple[str, float, float], ...] = ()  # (benchmark, run change, reference change)

    @property
    def gain_ratio(self) -> float | None:
        if self.gain is None or self.reference_gain is None or self.reference_gain <= 0:
            return None  # a fraction of a gain the reference did not make means nothing
        return self.gain / self.reference_gain

    def comparable_gain(self, threshold: float = 0.8) -> bool:
        r = self.gain_ratio
        return r is not None and r >= threshold

    @property
    def forgetting(self) -> Literal["less", "more", "same"] | None:
        """How the run forgets relative to the reference: significantly ``less`` or ``more``, the
        ``same`` (no significant difference), or None without paired data."""
        f = self.forgetting_advantage
        if f is None:
            return None
        return ("less" if f.value > 0 else "more") if f.significant else "same"

    def forgets_significantly_less(self) -> bool:
        return self.forgetting == "less"

    def to_dict(self, threshold: float = 0.8) -> dict[str, Any]:
        """Plain data for JSON summaries (``threshold``: what counts as comparable gain)."""
        return {"run": self.run, "method": self.method, "reference": self.reference, "gain": self.gain,
                "reference_gain": self.reference_gain, "other": self.other, "reference_other": self.reference_other,
                "gain_ratio": self.gain_ratio, "gain_difference": _paired_dict(self.gain_difference),
                "forgetting_advantage": _paired_dict(self.forgetting_advantage),
                "comparable_gain": self.comparable_gain(threshold),
                "forgets_significantly_less": self.forgets_significantly_less(),
                "unit": unit_words(self.unit), "target_tasks": list(self.target_tasks),
                "other_tasks": list(self.other_tasks), "points_tasks": list(self.points_tasks),
                "left_out": [{"task": t, "reason": r} for t, r in self.left_out],
                "per_task": {t: {"change": v, "reference_change": r,
                                 "in": "points" if t in self.points_tasks else unit_words(self.unit, short=True)}
                             for t, v, r in self.per_task}}


def fmt_ratio(r: float, threshold: float) -> str:
    """A gain ratio in percent, with a decimal where rounding would put it on the other side of the
    threshold (79.7% must not read as the 80% it fails)."""
    text = f"{100 * r:.0f}%"
    if (round(100 * r) >= round(100 * threshold)) != (r >= threshold):
        text = f"{100 * r:.1f}%"
    return text


def unit_words(unit: Unit, short: bool = False) -> str:
    """What a summary's numbers are, in words (``short``: the unit's name only)."""
    if short:
        return "percent of the base value" if unit == "relative" else "metric units"
    if unit == "relative":
        return "percent of each benchmark's base value; points (absolute change) where the base value is 0"
    return "metric units (absolute change)"


def _paired_dict(p: Paired | None) -> dict[str, Any] | None:
    return None if p is None else {"value": p.value, "ci": p.ci, "pvalue": p.pvalue, "n_tasks": p.n_tasks,
                                   "significant": p.significant}


_RELATION = {"less": "forgets significantly less than", "more": "forgets significantly more than",
             "same": "forgets about as much as"}


def _task_list(tasks: Sequence[str], points: Sequence[str], values: Mapping[str, float] | None = None) -> str:
    """``a, b, c (base 0, counted in points: +10.9)``."""
    def one(t: str) -> str:
        if t not in points:
            return t
        return f"{t} (base 0, counted in points" + ("" if values is None else f": {values[t]:+.1f}") + ")"
    return ", ".join(one(t) for t in tasks) if tasks else "none"


def _averaged(c: Contrast, ref_values: bool) -> str:
    vals = {t: (r if ref_values else v) for t, v, r in c.per_task}
    return (f"target tasks ({len(c.target_tasks)}) {_task_list(c.target_tasks, c.points_tasks, vals)}; "
            f"other tasks ({len(c.other_tasks)}) {_task_list(c.other_tasks, c.points_tasks, vals)}")


def _left_out(c: Contrast) -> str:
    return "; ".join(f"{t} ({why})" for t, why in c.left_out) if c.left_out else "nothing"


def findings(contrasts: Sequence[Contrast], threshold: float = 0.8, not_averaged: str = "") -> list[str]:
    """What a study found, in sentences computed from the contrasts (never asserted in advance): the
    reference's gain and forgetting, exactly which benchmarks those means average (and which they leave
    out and why), each run against it, and which runs forget significantly less at comparable gain (at
    least ``threshold`` of the reference's target gain). ``not_averaged``: a sentence on what the
    caller kept out of every summary (e.g. secondary metrics)."""
    if not contrasts:
        return []
    ref, c0 = contrasts[0].reference, contrasts[0]
    pct = "%" if c0.unit == "relative" else ""
    lines = [f"Finding: {ref} changed its target tasks by {c0.reference_gain:+.1f}{pct} and the other tasks by "
             f"{c0.reference_other:+.1f}{pct} (mean change vs the base, positive = better, in "
             f"{unit_words(c0.unit)})." if c0.reference_gain is not None and c0.reference_other is not None
             else f"Reference: {ref}."]
    lines.append(f"Averaged for {ref}: {_averaged(c0, ref_values=True)}. Left out: {_left_out(c0)}."
                 + (f" {not_averaged}" if not_averaged else ""))
    same = (c0.target_tasks, c0.other_tasks, c0.left_out)
    for c in contrasts:
        f = c.forgetting_advantage
        if c.forgetting is None or f is None or f.ci is None:
            continue  # no CI, no claim
        gain = "" if c.gain is None else f" with a target change of {c.gain:+.1f}{pct}" + (
            "" if c.gain_ratio is None else f" ({fmt_ratio(c.gain_ratio, threshold)} of {ref}'s gain)")
        own = "" if (c.target_tasks, c.other_tasks, c.left_out) == same else \
            f" Averaged: {_averaged(c, ref_values=False)}. Left out: {_left_out(c)}."
        lines.append(f"{c.run}: {_RELATION[c.forgetting]} {ref} (change on the other tasks {c.other:+.1f}{pct} vs "
                     f"{c.reference_other:+.1f}{pct}: advantage {f.value:+.1f}, 95% paired CI [{f.ci[0]:+.1f}, "
                     f"{f.ci[1]:+.1f}], p={f.pvalue:.3g}){gain}.{own}")
    winners = [c.run for c in contrasts if c.forgets_significantly_less() and c.comparable_gain(threshold)]
    if winners:
        lines.append(f"So plain {ref} forgets significantly more than {', '.join(winners)} at comparable gain "
                     f"(at least {100 * threshold:.0f}% of {ref}'s).")
    else:
        lines.append(f"No run forgot significantly less than {ref} while keeping {100 * threshold:.0f}% of its gain.")
    return lines


def _paired(pairs: Sequence[tuple[Change, Change]], unit: Unit, alpha: float) -> Paired | None:
    """Mean over benchmarks of (run - reference), with the CI from the shared bootstrap replicates."""
    if not pairs:
        return None
    points = [ch.in_unit(unit) - ref.in_unit(unit) for ch, ref in pairs]  # type: ignore[operator]
    value = float(np.mean(points))
    reps = []
    for ch, ref in pairs:
        if ch.replicates is None or ref.replicates is None or ch.n_paired != ref.n_paired:
            return Paired(value, None, None, len(pairs))
        reps.append(ch.unit_replicates(unit) - ref.unit_replicates(unit))
    mean_reps = np.mean(np.stack(reps, axis=1), axis=1)
    lo, hi = stats.percentile_ci(mean_reps[:, None], alpha)
    # two-sided bootstrap p-value: twice the smaller tail mass at zero, never below 1 / n_boot
    tail = min(float(np.mean(mean_reps <= 0)), float(np.mean(mean_reps >= 0)))
    p = min(1.0, max(2.0 * tail, 1.0 / len(mean_reps)))
    return Paired(value, (float(lo[0]), float(hi[0])), p, len(pairs))


def _final_changes(comparison: Comparison) -> dict[str, dict[tuple[str, str], Change]]:
    by_run: dict[str, dict[tuple[str, str], Change]] = {}
    last: dict[str, int] = {}
    for ch in comparison.changes:
        last[ch.run] = max(last.get(ch.run, ch.step), ch.step)
    for ch in comparison.changes:
        if ch.step == last[ch.run]:
            by_run.setdefault(ch.run, {})[ch.key] = ch
    return by_run


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _labels(keys: Sequence[TaskKey]) -> dict[TaskKey, str]:
    """A benchmark's name in the summaries: the task, or ``task:metric`` when a task has several metrics."""
    tasks = [k[0] for k in keys]
    return {k: k[0] if tasks.count(k[0]) == 1 else f"{k[0]}:{k[1]}" for k in keys}


def contrast_runs(comparison: Comparison, runs_meta: Mapping[str, RunMeta] | Sequence[RunMeta], reference: str,
                  unit: Unit = "relative", alpha: float = 0.05) -> list[Contrast]:
    """Every other run against ``reference`` on the benchmarks both have (targets: the run's own).

    A benchmark only one of the two has, one not compared with its base (a task version or base model
    that differs), or a non-target one where the base is at chance (``Change.base_at_chance``) is left
    out of the means and listed in ``left_out`` with the reason.
    Raises ``KeyError`` when the reference run has no compared results.
    """
    meta = runs_meta if isinstance(runs_meta, Mapping) else {m.run: m for m in runs_meta}
    finals = _final_changes(comparison)
    if reference not in finals:
        raise KeyError(f"reference run {reference!r} has no results compared against a base model")
    ref = finals[reference]
    out = []
    for run in sorted(finals):
        if run == reference:
            continue
        m = meta.get(run, RunMeta(run))
        targets = set(m.target_tasks) or set(meta.get(reference, RunMeta(reference)).target_tasks)
        shared = sorted(set(finals[run]) & set(ref))
        missing = {k: f"no result for {reference if k not in ref else run}" for k in set(finals[run]) ^ set(ref)}
        for b in comparison.incomparable:
            key = (b.task, b.metric)
            if b.run in (run, reference) and key not in missing and key not in set(shared):
                missing[key] = f"not compared for {b.run}: {b.reason}"
        for k in shared:
            if k[0] not in targets and (finals[run][k].base_at_chance or ref[k].base_at_chance):
                c = finals[run][k] if finals[run][k].base_at_chance else ref[k]
                missing[k] = (f"the base is at chance: {c.chance_words()}, binomial p = {c.base_chance_p:.2g}; "
                              "a change there is answer bias, not forgetting")
        shared = [k for k in shared if k not in missing]
        names = _labels(sorted({*shared, *missing}))
        tgt = [(finals[run][k], ref[k]) for k in shared if k[0] in targets]
        oth = [(finals[run][k], ref[k]) for k in shared if k[0] not in targets]
        out.append(Contrast(
            run, m.method, reference,
            _mean([c.in_unit(unit) for c, _ in tgt]), _mean([r.in_unit(unit) for _, r in tgt]),
            _mean([c.in_unit(unit) for c, _ in oth]), _mean([r.in_unit(unit) for _, r in oth]),
            _paired(tgt, unit, alpha), _paired(oth, unit, alpha), unit,
            tuple(names[c.key] for c, _ in tgt), tuple(names[c.key] for c, _ in oth),
            tuple(names[c.key] for c, r in (*tgt, *oth) if c.in_points(unit) or r.in_points(unit)),
            tuple((names[k], why) for k, why in sorted(missing.items())),
            tuple((names[c.key], c.in_unit(unit), r.in_unit(unit)) for c, r in (*tgt, *oth))))
    return out
