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


def _heat(ax, good: np.ndarray, text: list[list[str]], xlabels: Sequence[str], ylabels: Sequence[str], title: str):
    """A diverging heat map where green means better for the row's goal, each cell annotated."""
    finite = np.abs(good[np.isfinite(good)])
    lim = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    im = ax.imshow(np.ma.masked_invalid(good), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    for i, row in enumerate(text):
        for j, t in enumerate(row):
            ax.text(j, i, t, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(xlabels)), labels=xlabels, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(ylabels)), labels=ylabels, fontsize=8)
    ax.set_title(title, fontsize=9)
    return im


def plot_effects(effects: dict[str, Any], directions: dict[str, str], inter: dict[str, Any] | None,
                 path: str | Path) -> Path:
    """Left: each domain's effect on each metric (signed value, stars for significance, green = better for
    that metric). Right, when the swarm is large enough: pairwise interactions on the objective."""
    from mixlab.mixopt.effects import stars

    metrics, domains = effects["metrics"], effects["domains"]
    E, P = np.array(effects["effect"], dtype=float), np.array(effects["p"], dtype=float)
    sign = np.array([-1.0 if directions[m] == "min" else 1.0 for m in metrics])[:, None]
    text = [[f"{E[i, j]:+.2f}{stars(P[i, j])}" for j in range(len(domains))] for i in range(len(metrics))]
    ncols = 2 if inter else 1
    fig, axes = plt.subplots(1, ncols, figsize=(1.1 * len(domains) * ncols + 3.5, 0.42 * len(metrics) + 2.2),
                             squeeze=False, gridspec_kw={"width_ratios": [1.4, 1] if inter else [1]})
    im = _heat(axes[0][0], E * sign, text, domains, [f"{m} ({directions[m]})" for m in metrics],
               f"effect of +{effects['step']:g} weight from the natural mixture\n(swarm std units; "
               f"* p<.05 ** p<.01 *** p<.001, OLS, {effects['df']} df)")
    fig.colorbar(im, ax=axes[0][0], shrink=0.8, label="better <-> worse (green = better)")
    if inter:
        C, Pi = np.array(inter["coef"], dtype=float), np.array(inter["p"], dtype=float)
        t = [[("" if not np.isfinite(C[i, j]) else f"{C[i, j]:+.1f}{stars(Pi[i, j])}") for j in range(len(domains))]
             for i in range(len(domains))]
        _heat(axes[0][1], -C, t, domains, domains,
              f"interactions on the objective (lower is better)\nquadratic Scheffé model, {inter['df']} df; "
              "green = the pair together helps")
    fig.tight_layout()
    return _save(fig, path)


def plot_proposal(proposal: dict[str, Any], path: str | Path) -> Path:
    """Bars per domain: the prior, the proposal and the best observed run, over the swarm's observed range."""
    domains = list(proposal["weights"])
    x = np.arange(len(domains))
    rng = proposal["support"]["observed_range"]
    best = proposal["best_observed"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(domains) + 1.5), 3.8))
    lo = np.array([rng[d][0] for d in domains])
    hi = np.array([rng[d][1] for d in domains])
    ax.bar(x, hi - lo, bottom=lo, width=0.9, color="0.9", label="swarm's observed range")
    w = 0.27
    for k, (label, weights, color) in enumerate((
            (f"prior ({proposal['prior']['source']})", proposal["prior"]["weights"], "tab:gray"),
            ("proposal", proposal["weights"], "tab:blue"),
            (f"best observed ({best['run']})", best["weights"], "tab:orange"))):
        ax.bar(x + (k - 1) * w, [weights[d] for d in domains], width=w, color=color, label=label)
    caps = [(j, proposal["bounds"][d][1]) for j, d in enumerate(domains) if proposal["bounds"][d][1] < 1]
    if caps:
        ax.scatter([j for j, _ in caps], [c for _, c in caps], marker="_", s=400, color="tab:red", zorder=5,
                   label="upper bound")
    ax.set_xticks(x, labels=domains, rotation=20, ha="right")
    ax.set_ylabel("weight")
    o = proposal["objective"]
    ax.set_title(f"proposal ({proposal['regressor']}, within {proposal['within']}): predicted objective "
                 f"{o['predicted']:.2f}, best observed {best['objective']:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def plot_verify(verify: dict[str, Any], path: str | Path) -> Path:
    """One panel per metric and one for the objective: each trained mixture's pre-registered prediction
    with its 95% band (open marker, bar) against what training realized (dots per seed, filled mean)."""
    arms = list(verify["arms"])
    panels = [("objective", "objective (lower is better)")] + [(m, m) for m in verify["metrics"]]
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.1 * rows), squeeze=False)
    x = np.arange(len(arms))
    for k, (key, title) in enumerate(panels):
        ax = axes[k // cols][k % cols]
        for j, a in enumerate(arms):
            pr = verify["arms"][a]["predicted"][key] if key != "objective" else verify["arms"][a]["predicted_objective"]
            re = verify["arms"][a]["realized"][key] if key != "objective" else verify["arms"][a]["realized_objective"]
            color = "tab:green" if re["covered"] else "tab:red"
            lo, hi = pr["band95"]
            ax.errorbar([j - 0.12], [pr["predicted"]], yerr=[[pr["predicted"] - lo], [hi - pr["predicted"]]],
                        fmt="o", mfc="white", color="tab:blue", capsize=3, label="predicted, 95% band" if j == 0 else None)
            ax.scatter([j + 0.12] * len(re["per_seed"]), re["per_seed"], s=10, color=color, alpha=0.6)
            ax.scatter([j + 0.12], [re["mean"]], marker="D", s=30, color=color,
                       label="realized (mean; dots: seeds)" if j == 0 else None)
        ax.set_xticks(x, labels=arms, fontsize=8)
        ax.set_xlim(-0.6, len(arms) - 0.4)
        w = verify["objective"]["weights"].get(key)
        ax.set_title(title + ("" if w is None else f"  (weight {w:.2g})"), fontsize=9)
        if k == 0:
            ax.legend(fontsize=6, loc="best")
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].axis("off")
    v = verify["verdict"]
    fig.suptitle(f"verify: proposal's objective improvement over natural {v['improvement_over_natural']:+.3f} "
                 f"(noise floor {'n/a' if v['noise_floor'] is None else format(v['noise_floor'], '.3f')}); regret "
                 f"{v['regret']:.3f}; red = outside the band", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)
