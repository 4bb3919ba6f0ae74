"""Report figures as in-memory PNGs: change vs training step, target gain vs forgetting, mixture bars.

matplotlib with the Agg backend (no display). Each function returns a ``Figure`` (file name, PNG bytes,
caption) or None when the data for it is absent; :func:`mixlab.report.html.write_report` writes the
bytes to disk and embeds the same bytes in the HTML.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mixlab.report.forgetting import CheckpointPoint, RunSummary, in_points  # noqa: E402
from mixlab.report.model import RunMeta, TaskKey  # noqa: E402


@dataclass(frozen=True, slots=True)
class Figure:
    filename: str
    png: bytes
    caption: str


def _png(fig, dpi: int = 90, tight: bool = True) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def _grid(n: int, cols: int, w: float = 3.2, h: float = 2.4):
    """A grid of panels with fixed spacing: tight_layout and bbox_inches="tight" each redraw every
    panel's text, which took ~3 s apiece for 24 panels (measured with benchmarks/report_scale.py)."""
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows + 0.6), squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.4 / (h * rows + 0.6) + 0.03, top=1 - 0.45 / (h * rows + 0.6),
                        wspace=0.3, hspace=0.55)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def pareto_front(gain: np.ndarray, forgetting: np.ndarray) -> np.ndarray:
    """Indices of the runs no other run beats on both axes (more gain, less forgetting), by forgetting.

    ``mixlab.mixopt.propose.pareto_front`` computes the same, but importing that module pulls in the
    regressors (measured 3.9 s of import time), more than a third of the report's time budget.
    """
    front, best = [], -np.inf
    for i in np.lexsort((-gain, forgetting)):
        if gain[i] > best:
            front.append(int(i))
            best = gain[i]
    return np.array(front, dtype=int)


def _panel_order(curves: Mapping[TaskKey, Mapping[str, Mapping[int, list[float]]]], targets: set[str],
                 max_panels: int) -> list[TaskKey]:
    """Target benchmarks first, then the others, each by name (a reader finds a task where it should
    be). With more than ``max_panels`` benchmarks the targets stay and the others with the largest
    final drop fill the rest."""
    tgt = sorted(k for k in curves if k[0] in targets)
    oth = sorted(k for k in curves if k[0] not in targets)
    room = max(0, max_panels - len(tgt))
    if len(oth) > room:
        final = {k: min(np.mean(by_step[max(by_step)]) for by_step in curves[k].values()) for k in oth}
        keep = set(sorted(oth, key=lambda k: final[k])[:room])
        oth = [k for k in oth if k in keep]
    return (tgt + oth)[:max_panels]


def plot_change_vs_step(points: Sequence[CheckpointPoint], runs_meta: dict[str, RunMeta],
                        max_panels: int = 24) -> Figure | None:
    """One panel per benchmark (targets first, then by name), one line per method (mean over its runs)
    of the change vs the base from step 0 (the base itself, change 0) to the last checkpoint.

    The change is in percent of the base value, or in points where the base value is 0
    (:func:`mixlab.report.forgetting.unit_scale`); such panels say so on their axis. With more
    benchmarks than ``max_panels`` the targets and the others with the largest final drop are drawn.
    """
    curves: dict[TaskKey, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    zero_base: set[TaskKey] = set()
    for p in points:
        v = p.in_unit("relative")
        if v is None:
            continue
        method = runs_meta.get(p.run, RunMeta(p.run)).method or p.run
        by_step = curves[(p.task, p.metric)][method]
        by_step[p.step].append(v)
        if in_points(p.base_value, "relative"):
            zero_base.add((p.task, p.metric))
    if not curves:
        return None
    for by_method in curves.values():  # step 0 is the base: every line starts at no change
        for by_step in by_method.values():
            by_step.setdefault(0, [0.0])
    targets = {t for m in runs_meta.values() for t in m.target_tasks}
    shown = _panel_order(curves, targets, max_panels)
    cols = min(len(shown), 4)
    fig, axes = _grid(len(shown), cols, h=2.6)
    methods = sorted({m for k in shown for m in curves[k]})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for i, (ax, key) in enumerate(zip(axes, shown, strict=False)):
        for method, by_step in sorted(curves[key].items()):
            steps = sorted(by_step)
            ax.plot(steps, [np.mean(by_step[s]) for s in steps], lw=1.2, marker="o", ms=2.5, color=colors[method],
                    label=method)
        ax.axhline(0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"{key[0]} ({key[1]})" + (" — target" if key[0] in targets else ""), fontsize=8,
                     fontweight="bold" if key[0] in targets else "normal")
        ax.tick_params(labelsize=7)
        ax.locator_params(nbins=4)
        if key in zero_base:
            ax.set_ylabel("change (points; base 0)", fontsize=7)
        elif i % cols == 0:
            ax.set_ylabel("change vs base (%)", fontsize=7)
        if i + cols >= len(shown):  # no panel below: label the step axis
            ax.set_xlabel("training step (0 = base)", fontsize=7)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=min(len(methods), 8), fontsize=7,
               frameon=False)
    more = f" — the targets and the others with the largest final drop, {len(shown)} of {len(curves)}" \
        if len(curves) > len(shown) else ""
    pts = f"; in points where the base value is 0 ({', '.join(k[0] for k in shown if k in zero_base)})" \
        if zero_base & set(shown) else ""
    return Figure("change_vs_step.png", _png(fig, tight=False), "Change vs the base model (percent of the base "
                  f"value, positive = better{pts}) by training step, per benchmark and method; step 0 is the base, "
                  f"target benchmarks first{more}")


def _err(ci: tuple[float, float] | None, value: float, flip: bool = False) -> tuple[float, float]:
    """Distances from ``value`` down and up to the CI's ends (0, 0 without a CI); ``flip``: the axis
    plots minus the value."""
    if ci is None:
        return (0.0, 0.0)
    lo, hi = (-ci[1], -ci[0]) if flip else ci
    v = -value if flip else value
    return (max(0.0, v - lo), max(0.0, hi - v))


def plot_gain_vs_forgetting(summaries: Sequence[RunSummary]) -> Figure | None:
    """One point per run: target gain vs forgetting (minus the mean change on the other benchmarks), with
    95% bootstrap CIs on both axes; the runs no other run beats on both are joined (the Pareto front)."""
    pts = [s for s in summaries if s.target_gain is not None and s.other_change is not None]
    if not pts:
        return None
    gain = np.array([s.target_gain for s in pts])
    forgetting = np.array([-s.other_change for s in pts])
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    fig.subplots_adjust(left=0.1, right=0.8, bottom=0.12, top=0.97)  # the legend sits right of the axes
    methods = sorted({s.method or s.run for s in pts})
    for i, m in enumerate(methods):
        idx = [j for j, s in enumerate(pts) if (s.method or s.run) == m]
        xerr = np.array([_err(pts[j].other_ci, pts[j].other_change, flip=True) for j in idx]).T
        yerr = np.array([_err(pts[j].target_ci, pts[j].target_gain) for j in idx]).T
        ax.errorbar(forgetting[idx], gain[idx], xerr=xerr, yerr=yerr, fmt="o", ms=5, color=plt.cm.tab10(i % 10),
                    ecolor=plt.cm.tab10(i % 10), elinewidth=0.8, capsize=2, alpha=0.9, label=m)
    front = pareto_front(gain, forgetting)
    label = "Pareto front" if len(front) > 1 else "Pareto front\n(one run)"
    ax.plot(forgetting[front], gain[front], ls="-" if len(front) > 1 else "none", color="black", lw=1.2, marker="o",
            ms=11, mfc="none", mec="black", zorder=4, label=label)
    if len(pts) <= 20:
        for s, x, y in zip(pts, forgetting, gain, strict=True):
            ax.annotate(s.run, (x, y), fontsize=6, xytext=(4, 4), textcoords="offset points")
    unit = "%" if pts[0].unit == "relative" else "metric units"
    ax.set_xlabel(f"forgetting: minus mean change on the other benchmarks ({unit}, lower is better)", fontsize=8)
    ax.set_ylabel(f"target gain: mean change on the target benchmarks ({unit})", fontsize=8)
    ax.axhline(0, color="gray", lw=0.6, ls=":")
    ax.axvline(0, color="gray", lw=0.6, ls=":")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    pts_names = sorted({t for s in pts for t in s.points_tasks})
    in_pts = f"; {', '.join(pts_names)} (base 0) count in points" if pts_names and unit == "%" else ""
    return Figure("gain_vs_forgetting.png", _png(fig, tight=False), "Target gain vs forgetting, one point per run "
                  f"at its final checkpoint, with 95% bootstrap CIs{in_pts}; circled: the runs no other run beats on "
                  "both (Pareto front)")


def plot_mixture_bars(runs_meta: Sequence[RunMeta], max_runs: int = 12) -> Figure | None:
    """Requested vs realized weight per domain, one panel per run (the first ``max_runs``)."""
    runs = [m for m in runs_meta if m.mixture_requested or m.mixture_realized]
    if not runs:
        return None
    shown = runs[:max_runs]
    fig, axes = _grid(len(shown), 3, w=4.0, h=2.6)
    for ax, m in zip(axes, shown, strict=False):
        domains = sorted({*m.mixture_requested, *m.mixture_realized})
        x = np.arange(len(domains))
        ax.bar(x - 0.2, [100 * m.mixture_requested.get(d, 0.0) for d in domains], 0.4, label="requested")
        ax.bar(x + 0.2, [100 * m.mixture_realized.get(d, 0.0) for d in domains], 0.4, label="realized")
        ax.set_xticks(x, domains, rotation=30, ha="right", fontsize=7)
        ax.set_title(m.name, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        top = max([*m.mixture_requested.values(), *m.mixture_realized.values(), 0.01]) * 100
        ax.set_ylim(0, top * 1.3)  # headroom for the legend above the bars
    axes[0].set_ylabel("% of tokens", fontsize=8)
    axes[0].legend(fontsize=7, ncol=2, loc="upper center", frameon=False)
    more = f" (first {len(shown)} of {len(runs)} runs)" if len(runs) > len(shown) else ""
    # a few panels: a tight box keeps rotated labels and the y label in the picture (cheap at this count;
    # see _grid for why many panels do without)
    return Figure("mixtures.png", _png(fig, tight=len(shown) <= 6), f"Mixture weights, requested vs realized{more}")


def plot_forgetting_vs_kl(pts: Sequence, line: tuple[float, float] | None, rho: tuple[float, float] | None,
                          task: str, unit: str) -> Figure:
    """One point per fine-tuned checkpoint: forgetting vs KL(base || model) on ``task``, coloured by
    method, with the least-squares line and Spearman's rho (:mod:`mixlab.report.kl`)."""
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    fig.subplots_adjust(left=0.1, right=0.8, bottom=0.12, top=0.92)
    methods = sorted({p.method for p in pts})
    for i, m in enumerate(methods):
        sel = [p for p in pts if p.method == m]
        ax.plot([p.kl for p in sel], [p.forgetting for p in sel], "o", ms=5, color=plt.cm.tab10(i % 10), label=m)
    xs = np.array([p.kl for p in pts])
    if line is not None:
        grid = np.linspace(xs.min(), xs.max(), 50)
        ax.plot(grid, line[0] + line[1] * grid, color="black", lw=1, label="least squares")
    ax.axhline(0, color="gray", lw=0.6, ls=":")
    ax.set_xlabel(f"KL(base || model) on {task} (nats per token)", fontsize=8)
    ax.set_ylabel(f"forgetting: minus mean change on non-target benchmarks ({unit})", fontsize=8)
    if rho is not None:
        ax.set_title(f"Spearman rho = {rho[0]:+.2f} (p = {rho[1]:.3g}), {len(pts)} checkpoints", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return Figure("forgetting_vs_kl.png", _png(fig, tight=False),
                  f"Forgetting vs forward KL to the base on {task}, one point per checkpoint of every run, with the "
                  "least-squares line")
