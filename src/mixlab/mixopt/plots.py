"""Plots for mixture optimization: out-of-fold predicted vs actual, and the gain/forgetting Pareto front.

matplotlib with the Agg backend (no display needed); files are written atomically.
"""

from __future__ import annotations

import io as _io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mixlab import atomic  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic.write_bytes(path, buf.getvalue())


def plot_predicted_vs_actual(metrics: Sequence[str], Y: np.ndarray, oof: np.ndarray, cv: dict[str, Any],
                             path: str | Path) -> Path:
    """One panel per metric: out-of-fold prediction against the measured value, with its Spearman/RMSE."""
    n = len(metrics)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for k, m in enumerate(metrics):
        ax = axes[k // cols][k % cols]
        a, p = Y[:, k], oof[:, k]
        ax.scatter(a, p, s=12, alpha=0.7)
        lo, hi = float(min(a.min(), p.min())), float(max(a.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--")
        s = cv["per_metric"][m]
        rho = "n/a" if s["spearman"] is None else f"{s['spearman']:.3f}"
        ax.set_title(f"{m}\nSpearman {rho}, RMSE {s['rmse']:.3g}", fontsize=9)
        ax.set_xlabel("actual")
        ax.set_ylabel("out-of-fold predicted")
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(f"{cv.get('regressor', '')}: {cv.get('folds', '?')}-fold out-of-fold predictions", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def plot_pareto(gain: np.ndarray, forgetting: np.ndarray, result: dict[str, Any], path: str | Path,
                gain_name: str = "gain", forgetting_name: str = "forgetting") -> Path:
    """Observed runs, the observed Pareto front, the model's front (if any), the bound and the picks."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.scatter(forgetting, gain, s=16, color="tab:gray", alpha=0.6, label="runs")
    front = result["observed"]["pareto_front"]
    ax.plot([p["forgetting"] for p in front], [p["gain"] for p in front], "o-", color="tab:blue",
            label="observed Pareto front")
    model = result.get("model")
    if model and model["pareto_front"]:
        mf = model["pareto_front"]
        ax.plot([p["forgetting"] for p in mf], [p["gain"] for p in mf], "-", color="tab:orange",
                label=f"predicted front ({model['regressor']})")
        if model["best"]:
            ax.scatter([model["best"]["forgetting"]], [model["best"]["gain"]], marker="*", s=160,
                       color="tab:orange", zorder=5, label="proposed (model)")
    best = result["observed"]["best"]
    ax.scatter([best["forgetting"]], [best["gain"]], marker="*", s=160, color="tab:blue", zorder=5,
               label="best observed under bound")
    ax.axvline(result["max_forgetting"], color="tab:red", ls="--", lw=1, label="forgetting bound")
    ax.set_xlabel(f"{forgetting_name} (lower is better)")
    ax.set_ylabel(f"{gain_name} (higher is better)")
    ax.legend(fontsize=7)
    return _save(fig, path)
