"""The fit's and the proposal's pictures, as PNGs beside their JSON and one self-contained report.html.

A fit directory gets ``effects.png`` (which domain helps which metric, with significance:
:mod:`mixlab.mixopt.effects`), ``effects.json`` and ``report.html`` (out-of-fold figures, the
predicted-vs-actual panels, the effect matrix); a proposal directory gets ``proposal.png`` (the proposal
against the prior and the best run) and a ``report.html`` that adds it to its fit's sections. The HTML
is the house style of :mod:`mixlab.report.html` (inline CSS, images embedded, no scripts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mixlab import atomic
from mixlab.report.html import render_html
from mixlab.report.plots import Figure
from mixlab.report.tables import Section, Table, cells


def _figure(path: Path, caption: str) -> Figure:
    return Figure(path.name, path.read_bytes(), caption)


def write_fit_figures(res: Any, d: Path) -> list[Section]:
    """Write effects.json/effects.png into fit directory ``d`` (beside predicted_vs_actual.png) and
    return the report's sections."""
    from mixlab.mixopt.effects import domain_effects, interactions
    from mixlab.mixopt.plots import plot_effects
    from mixlab.mixopt.propose import Objective

    data = res.data
    prior = res.prior_vector()
    Y = res.comparable_metrics()  # a pooled fit's earlier blocks less their offsets
    eff = domain_effects(data.weights, Y, data.domains, data.metric_names, prior)
    obj = Objective.build(data.metric_names, Y, {m: 1.0 for m in data.metric_names}, res.directions)
    inter = interactions(data.weights, obj.value(Y), data.domains)
    atomic.write_json(d / "effects.json", {"effects": eff, "interactions_on_objective": inter,
                                           "prior": res.prior_label()})
    plot_effects(eff, res.directions, inter, d / "effects.png")
    cv = res.cv
    t = Table(f"{cv['folds']}-fold out-of-fold ({cv['regressor']}, {cv['n_runs']} runs)",
              ["metric", "direction", "spearman", "pearson", "rmse", "top-decile spearman"], [])
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for m, s in cv["per_metric"].items():
        t.rows.append(cells(m, s["direction"], fmt(s["spearman"]), fmt(s["pearson"]), f"{s['rmse']:.4g}",
                            fmt(s["top_decile_spearman"])))
    o = cv["aggregate"]["objective"]
    t.rows.append(cells("objective (equal weights)", "min", fmt(o["spearman"]), fmt(o["pearson"]),
                        f"{o['rmse']:.4g}", fmt(o["top_decile_spearman"])))
    return [Section("Out-of-fold validation", [
                "Every run predicted by a model that never saw it; the dashed line is a perfect prediction."],
                [t], [_figure(d / "predicted_vs_actual.png", "out-of-fold predicted vs actual, per metric")]),
            Section("Domain effects", [
                f"Change of each metric when a domain's weight rises by {eff['step']:g} from the natural mixture "
                f"({res.prior_label()}), the others shrinking in proportion, in swarm standard deviations "
                f"({eff['model']}, {eff['df']} residual df). Green is better for the metric's direction; stars mark "
                "p < 0.05, 0.01, 0.001." + ("" if inter else " Interactions need at least 3 more runs than the "
                                             "quadratic model's parameters; this swarm has too few.")],
                figures=[_figure(d / "effects.png", "domain effects (and interactions on the objective)")])]


def write_fit_report(res: Any, d: Path) -> Path:
    """effects + report.html in fit directory ``d``."""
    return atomic.write_text(d / "report.html", render_html(f"mixlab fit: {d.name}", write_fit_figures(res, d)))


def write_proposal_report(proposal: dict[str, Any], out: Path) -> Path:
    """proposal.png and report.html (the proposal, then its fit's sections when the fit is on disk)."""
    from mixlab.mixopt.plots import plot_proposal

    plot_proposal(proposal, out / "proposal.png")
    best = proposal["best_observed"]
    t = Table("mixture", ["domain", "proposed", "prior", f"best observed ({best['run']})", "swarm range"], [])
    for dm, w in proposal["weights"].items():
        lo, hi = proposal["support"]["observed_range"][dm]
        t.rows.append(cells(dm, f"{w:.4f}", f"{proposal['prior']['weights'][dm]:.4f}", f"{best['weights'][dm]:.4f}",
                            f"{lo:.3f} .. {hi:.3f}"))
    o = proposal["objective"]
    sections = [Section("Proposal", [
        f"Predicted objective {o['predicted']:.3f} (95% band {o['band95'][0]:.3f} .. {o['band95'][1]:.3f}; lower is "
        f"better), best observed run {best['objective']:.3f}, prior predicted "
        f"{proposal['prior']['predicted_objective']:.3f}. Distance from the swarm's hull (total variation) "
        f"{proposal['support']['hull_tv']:.3f}."], [t], [_figure(out / "proposal.png", "proposal against the prior and the best run")])]
    fit = Path(proposal["fit"]) if proposal.get("fit") else None
    if fit and (fit / "effects.png").is_file():  # fits written before effects existed have no such figure
        sections.append(Section("Fit", [f"The fit {fit} (its report.html has the tables)."], figures=[
            _figure(fit / "predicted_vs_actual.png", "out-of-fold predicted vs actual, per metric"),
            _figure(fit / "effects.png", "domain effects (and interactions on the objective)")]))
    return atomic.write_text(out / "report.html", render_html(f"mixlab proposal: {out.name}", sections))
