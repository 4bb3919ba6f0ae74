"""Report figures as in-memory PNGs: change vs training step, target gain vs forgetting, mixture bars.

matplotlib with the Agg backend (no display). Each function returns a ``Figure`` (file name, PNG bytes,
caption) or None when the data for it is absent; :func:`mixlab.report.html.write_report` writes the
bytes to disk and embeds the same bytes in the HTML.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mixlab.report.forgetting import CheckpointPoint, RunSummary  # noqa: E402
from mixlab.report.model import RunMeta  # noqa: E402


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


def plot_change_vs_step(points: Sequence[CheckpointPoint], runs_meta: dict[str, RunMeta],
                        max_panels: int = 24) -> Figure | None:
    """One panel per benchmark, one line per method (mean over its runs) of the relative change vs base.

    With more benchmarks than ``max_panels`` the ones with the largest final drop are drawn.
    """
    curves: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for p in points:
        if p.rel is not None:
            method = runs_meta.get(p.run, RunMeta(p.run)).method or p.run
            curves[(p.task, p.metric)][method][p.step].append(100.0 * p.rel)
    if not curves:
        return None
    final = {k: min(np.mean(by_step[max(by_step)]) for by_step in m.values()) for k, m in curves.items()}
    shown = sorted(curves, key=lambda k: final[k])[:max_panels]
    fig, axes = _grid(len(shown), 4)
    methods = sorted({m for k in shown for m in curves[k]})
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for ax, key in zip(axes, shown, strict=False):
        for method, by_step in sorted(curves[key].items()):
            steps = sorted(by_step)
            ax.plot(steps, [np.mean(by_step[s]) for s in steps], lw=1.2, color=colors[method], label=method)
        ax.axhline(0, color="gray", lw=0.8, ls="--")
        ax.set_title(f"{key[0]} ({key[1]})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.locator_params(nbins=4)
    axes[0].set_ylabel("change vs base (%)", fontsize=8)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=min(len(methods), 8), fontsize=7,
               frameon=False)
    more = f" — the {len(shown)} with the largest final drop of {len(curves)}" if len(curves) > len(shown) else ""
    return Figure("change_vs_step.png", _png(fig, tight=False), "Change vs the base model (percent, positive = better) "
                  f"by training step, per benchmark and method{more}")


def plot_gain_vs_forgetting(summaries: Sequence[RunSummary]) -> Figure | None:
    """One point per run: target gain vs mean change on the other benchmarks; the Pareto front drawn."""
    pts = [s for s in summaries if s.target_gain is not None and s.other_change is not None]
    if not pts:
        return None
    gain = np.array([s.target_gain for s in pts])
    forgetting = np.array([-s.other_change for s in pts])
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.97)
    methods = sorted({s.method or s.run for s in pts})
    for i, m in enumerate(methods):
        idx = [j for j, s in enumerate(pts) if (s.method or s.run) == m]
        ax.scatter(forgetting[idx], gain[idx], s=22, color=plt.cm.tab10(i % 10), label=m, alpha=0.85)
    front = pareto_front(gain, forgetting)
    ax.plot(forgetting[front], gain[front], "-", color="black", lw=1.2, label="Pareto front")
    if len(pts) <= 20:
        for s, x, y in zip(pts, forgetting, gain, strict=True):
            ax.annotate(s.run, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    unit = "%" if pts[0].unit == "relative" else "metric units"
    ax.set_xlabel(f"forgetting: minus mean change on other benchmarks ({unit}, lower is better)", fontsize=8)
    ax.set_ylabel(f"target gain ({unit})", fontsize=8)
    ax.legend(fontsize=7)
    return Figure("gain_vs_forgetting.png", _png(fig, tight=False), "Target gain vs forgetting, one point per run; "
                  "the line joins the runs no other run beats on both")


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
        ax.set_xticks(x, domains, rotation=45, ha="right", fontsize=7)
        ax.set_title(m.name, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].set_ylabel("% of tokens", fontsize=8)
    axes[0].legend(fontsize=7)
    more = f" (first {len(shown)} of {len(runs)} runs)" if len(runs) > len(shown) else ""
    return Figure("mixtures.png", _png(fig, tight=False), f"Mixture weights, requested vs realized{more}")
