"""Forgetting vs KL to the base (RL's Razor): does a checkpoint's forward KL on a ``kl_to_base`` task
predict how much it forgot?

One point per fine-tuned checkpoint (every run, method and step): x is its KL(base || model) on the
chosen KL task, y its forgetting - minus the mean change over the run's non-target benchmarks at that
step, in the report's unit, as the forgetting summaries compute it at the final step. A least-squares
line and Spearman's rank correlation summarize the relation; the table predicts each run's forgetting
from its KL with a line fitted to the *other* runs (leave-one-run-out), so a run never predicts itself.

KL results are not benchmarks: :func:`split_kl` takes them out of the forgetting summaries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.report.forgetting import CheckpointPoint, Unit
from mixlab.report.model import Result, RunMeta
from mixlab.report.tables import Section, Table, cells

KL_RESULT_METRICS = ("kl", "kl_token")  # the metrics of kind kl_to_base (mixlab.eval.kl)


def split_kl(results: Sequence[Result]) -> tuple[list[Result], list[Result]]:
    """(benchmark results, KL-to-base results)."""
    kl = [r for r in results if r.metric in KL_RESULT_METRICS]
    return [r for r in results if r.metric not in KL_RESULT_METRICS], kl


@dataclass(frozen=True, slots=True)
class KLPoint:
    run: str
    method: str
    step: int
    kl: float
    forgetting: float  # minus the mean change over the non-target benchmarks
    n_tasks: int


def kl_points(kl: Sequence[Result], points: Sequence[CheckpointPoint], meta: Mapping[str, RunMeta],
              task: str, unit: Unit, bases: set[str]) -> list[KLPoint]:
    by_ckpt: dict[tuple[str, int], list[float]] = defaultdict(list)
    for p in points:
        targets = set(meta[p.run].target_tasks) if p.run in meta else set()
        v = p.in_unit(unit)
        if p.task not in targets and v is not None:
            by_ckpt[(p.run, p.step)].append(v)
    out = []
    for r in kl:
        if r.task != task or r.metric != "kl" or r.run in bases or (r.run, r.step) not in by_ckpt:
            continue
        vals = by_ckpt[(r.run, r.step)]
        m = meta.get(r.run)
        out.append(KLPoint(r.run, (m.method if m else "") or r.run, r.step, r.value, -float(np.mean(vals)), len(vals)))
    return sorted(out, key=lambda p: (p.run, p.step))


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(intercept, slope) of the least-squares line, or None when x does not vary."""
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """(rho, two-sided p) or None with fewer than 3 points or a constant axis."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy.stats import spearmanr

    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def loro_predictions(pts: Sequence[KLPoint]) -> list[float | None]:
    """Each point's forgetting predicted by a line fitted to the other runs' points."""
    out: list[float | None] = []
    for p in pts:
        rest = [q for q in pts if q.run != p.run]
        line = fit_line(np.array([q.kl for q in rest]), np.array([q.forgetting for q in rest]))
        out.append(None if line is None else line[0] + line[1] * p.kl)
    return out


def kl_section(kl: Sequence[Result], points: Sequence[CheckpointPoint], meta: Mapping[str, RunMeta],
               unit: Unit, bases: set[str]) -> Section | None:
    """The "Forgetting vs KL to the base" section, or None when the sweep has no usable KL results."""
    tasks = sorted({r.task for r in kl if r.metric == "kl"})
    if not tasks:
        return None
    task = next((t for t in tasks if "gsm8k" in t or "train" in t), tasks[0])
    pts = kl_points(kl, points, meta, task, unit, bases)
    if not pts:
        return None
    from mixlab.report import plots

    x, y = np.array([p.kl for p in pts]), np.array([p.forgetting for p in pts])
    line, rho = fit_line(x, y), spearman(x, y)
    u = "%" if unit == "relative" else "metric units"
    text = [f"KL task: {task} (mean per-token KL(base || model), nats)"
            + (f"; also measured: {', '.join(t for t in tasks if t != task)}" if len(tasks) > 1 else "")
            + f". Forgetting: minus the mean change over each run's non-target benchmarks at that checkpoint ({u}); "
            f"{len(pts)} checkpoints of {len({p.run for p in pts})} runs.",
            ("Fit: forgetting = " + f"{line[0]:+.3g} {line[1]:+.3g} x KL" if line else "Fit: KL does not vary; no line.")
            + (f"; Spearman rho = {rho[0]:+.2f} (p = {rho[1]:.3g})." if rho else "; Spearman rho needs 3+ distinct points.")]
    pred = loro_predictions(pts)
    errs = [abs(pr - p.forgetting) for p, pr in zip(pts, pred, strict=True) if pr is not None]
    rows = [cells(p.run, p.method, p.step, f"{p.kl:.4g}", f"{p.forgetting:+.2f}",
                  "–" if pr is None else f"{pr:+.2f}", "–" if pr is None else f"{pr - p.forgetting:+.2f}")
            for p, pr in zip(pts, pred, strict=True)]
    notes = [f"Predicted: the line fitted to every other run's checkpoints (leave-one-run-out); mean absolute error "
             f"{np.mean(errs):.2f} {u} over {len(errs)} checkpoints." if errs else
             "Predictions need checkpoints of at least two runs with different KL."]
    table = Table("Predicted forgetting from KL (leave-one-run-out linear fit) vs measured",
                  ["run", "method", "step", "KL", f"forgetting ({u})", "predicted", "error"], rows, notes)
    fig = plots.plot_forgetting_vs_kl(pts, line, rho, task, u)
    return Section("Forgetting vs KL to the base", text, [table], [fig])
