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
- ``gain``: mean change over the run's target tasks; ``other``: mean change over the rest.
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
from mixlab.report.model import RunMeta


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
                "forgets_significantly_less": self.forgets_significantly_less()}


def _paired_dict(p: Paired | None) -> dict[str, Any] | None:
    return None if p is None else {"value": p.value, "ci": p.ci, "pvalue": p.pvalue, "n_tasks": p.n_tasks,
                                   "significant": p.significant}


_RELATION = {"less": "forgets significantly less than", "more": "forgets significantly more than",
             "same": "forgets about as much as"}


def findings(contrasts: Sequence[Contrast], threshold: float = 0.8) -> list[str]:
    """What a study found, in sentences computed from the contrasts (never asserted in advance): the
    reference's gain and forgetting, each run against it, and which runs forget significantly less at
    comparable gain (at least ``threshold`` of the reference's target gain). Relative-unit wording."""
    if not contrasts:
        return []
    ref, c0 = contrasts[0].reference, contrasts[0]
    lines = [f"Finding: {ref} changed its target tasks by {c0.reference_gain:+.1f}% and the other tasks by "
             f"{c0.reference_other:+.1f}% (mean change vs the base in percent of the base value, positive = better)."
             if c0.reference_gain is not None and c0.reference_other is not None else f"Reference: {ref}."]
    for c in contrasts:
        f = c.forgetting_advantage
        if c.forgetting is None or f is None or f.ci is None:
            continue  # no CI, no claim
        gain = "" if c.gain is None else f" with a target change of {c.gain:+.1f}%" + (
            "" if c.gain_ratio is None else f" ({100 * c.gain_ratio:.0f}% of {ref}'s gain)")
        lines.append(f"{c.run}: {_RELATION[c.forgetting]} {ref} (change on the other tasks {c.other:+.1f}% vs "
                     f"{c.reference_other:+.1f}%: advantage {f.value:+.1f}, 95% paired CI [{f.ci[0]:+.1f}, "
                     f"{f.ci[1]:+.1f}], p={f.pvalue:.3g}){gain}.")
    winners = [c.run for c in contrasts if c.forgets_significantly_less() and c.comparable_gain(threshold)]
    if winners:
        lines.append(f"So plain {ref} forgets significantly more than {', '.join(winners)} at comparable gain "
                     f"(at least {100 * threshold:.0f}% of {ref}'s).")
    else:
        lines.append(f"No run forgot significantly less than {ref} while keeping {100 * threshold:.0f}% of its gain.")
    return lines


def _in_unit(values: np.ndarray, ch: Change, unit: Unit) -> np.ndarray | None:
    if unit == "absolute":
        return values
    return None if ch.base_value == 0 else 100.0 * values / abs(ch.base_value)


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
        a = _in_unit(ch.replicates.astype(np.float64), ch, unit)
        b = _in_unit(ref.replicates.astype(np.float64), ref, unit)
        if a is None or b is None:
            return Paired(value, None, None, len(pairs))
        reps.append(a - b)
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


def contrast_runs(comparison: Comparison, runs_meta: Mapping[str, RunMeta] | Sequence[RunMeta], reference: str,
                  unit: Unit = "relative", alpha: float = 0.05) -> list[Contrast]:
    """Every other run against ``reference`` on the benchmarks both have (targets: the run's own).

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
        # benchmarks where the change is defined in this unit for both (relative: base value != 0)
        shared = [k for k in sorted(set(finals[run]) & set(ref))
                  if finals[run][k].in_unit(unit) is not None and ref[k].in_unit(unit) is not None]
        tgt = [(finals[run][k], ref[k]) for k in shared if k[0] in targets]
        oth = [(finals[run][k], ref[k]) for k in shared if k[0] not in targets]
        out.append(Contrast(
            run, m.method, reference,
            _mean([c.in_unit(unit) for c, _ in tgt]), _mean([r.in_unit(unit) for _, r in tgt]),
            _mean([c.in_unit(unit) for c, _ in oth]), _mean([r.in_unit(unit) for _, r in oth]),
            _paired(tgt, unit, alpha), _paired(oth, unit, alpha)))
    return out
