"""`mixlab fit | predict | propose`: regressors of metric vs mixture, and constrained proposals."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from mixlab.cli.common import SetOption, console, err_console, progress
from mixlab.errors import ConfigError


def _pairs(items: list[str] | None, flag: str) -> dict[str, float]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected NAME=VALUE, e.g. {flag} web=0.3")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ConfigError(f"{flag} {item!r}: {v!r} is not a number") from None
    return out


def fit_cmd(
    config: Path | None = typer.Argument(None, help="Fit config YAML (or give --ratios and --metrics)."),
    ratios: Path | None = typer.Option(None, "--ratios", help="Mixtures: olmix run,name,index,<domain...> or "
                                                             "RegMix index,train_<domain>..."),
    metrics: Path | None = typer.Option(None, "--metrics", help="Results: olmix run,name,index,<metric...> or "
                                                               "RegMix index,metric/<name>..."),
    priors: Path | None = typer.Option(None, "--priors", help="priors.json (default: the one next to --ratios, if any)."),
    sum_tolerance: float | None = typer.Option(None, "--sum-tolerance",
                                               help="Renormalize rows whose weights sum to 1 within this (default 0.01)."),
    regressor: str | None = typer.Option(None, "--regressor", "-r",
                                         help="loglinear (default) | mixing_law | linear | gbt | gp"),
    out: Path = typer.Option(..., "--out", "-o", help="Fit directory to write (cv.json, model.json, plots)."),
    folds: int | None = typer.Option(None, "--folds", help="K of the K-fold validation (default 5)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of every random choice (default: the config's)."),
    level: str | None = typer.Option(None, "--level", help="leaf (default: the domains as they are) | group (the "
                                                          "top-level groups of group/child leaves)."),
    reuse: Path | None = typer.Option(None, "--reuse", help="Previous proposal (or fit) whose unchanged domains the "
                                                           "swarm froze (default: the swarm's reuse.json, if any)."),
    changed: list[str] = typer.Option(None, "--changed", help="With --reuse or --pool: a domain whose data changed "
                                                              "(repeatable)."),
    pool: Path | None = typer.Option(None, "--pool", help="An earlier fit whose runs are fitted together with this "
                                                         "swarm's (pooled reuse; chain by pooling the last pooled fit)."),
    set_: list[str] = SetOption,
) -> None:
    """Fit one regressor per metric to a swarm and validate it out of fold.

    Example: `mixlab fit --ratios swarm/ratios.csv --metrics swarm/metrics.csv --regressor gp --out runs/fit`
    """
    from mixlab.config import apply_overrides, validate
    from mixlab.mixopt.fit import FitConfig, fit_config, load_fit_config

    t0 = time.perf_counter()
    if config is not None:
        cfg = load_fit_config(config, set_ or [])
    elif ratios is None or metrics is None:
        raise ConfigError("give a fit config, or both --ratios and --metrics")
    else:
        cfg = validate(FitConfig, apply_overrides({"ratios": str(ratios), "metrics": str(metrics)}, set_ or []),
                       "command line --set")
    updates: dict[str, Any] = {k: v for k, v in {"ratios": ratios, "metrics": metrics, "regressor": regressor,
                                                 "folds": folds, "seed": seed, "priors": priors,
                                                 "sum_tolerance": sum_tolerance, "level": level, "reuse": reuse,
                                                 "changed": changed or None, "pool": pool}.items() if v is not None}
    cfg = validate(FitConfig, {**cfg.model_dump(mode="json"), **{k: str(v) if isinstance(v, Path) else v
                                                                  for k, v in updates.items()}}, "command line")
    with progress() as p:
        from mixlab.mixopt.io import read_metrics

        n_metrics = len(cfg.fit_metrics or read_metrics(cfg.metrics).columns)
        task = p.add_task(f"fit {cfg.regressor}", total=cfg.folds + n_metrics)
        res = fit_config(cfg, out, step=lambda msg: p.update(task, description=f"fit {cfg.regressor}: {msg}", advance=1))
    if res.data.renormalized:
        err_console.print(res.data.renormalized.message(), highlight=False, soft_wrap=True)
    # Metric names share long prefixes (toyworld_code_bpb/bpb, toyworld_code_bpb/bpb_corpus): the table
    # keeps them whole where the terminal allows (no side borders, numbers' headers wrap), and a name
    # too long for it folds onto a second line instead of being cut into the same "toyworld_code_bp…".
    t = Table(title=f"{cfg.folds}-fold out-of-fold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    noise = res.cv.get("noise") or {}
    has_noise = bool(noise.get("anchors"))
    _name_column(t, "metric", res.cv["per_metric"], reserve=55 if has_noise else 46)  # the noise column: 9 more
    for name in ("spearman", "pearson", "rmse", "top-decile\nspearman", *(("noise\nsd",) if has_noise else ())):
        t.add_column(name, justify="right", no_wrap=True)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for m, s in res.cv["per_metric"].items():
        t.add_row(m, fmt(s["spearman"]), fmt(s["pearson"]), f"{s['rmse']:.4g}", fmt(s["top_decile_spearman"]),
                  *((f"{s['noise_sd']:.4g}",) if has_noise else ()))
    o = res.cv["aggregate"]["objective"]
    t.add_row("[bold]objective[/]", fmt(o["spearman"]), fmt(o["pearson"]), f"{o['rmse']:.4g}", fmt(o["top_decile_spearman"]),
              *((f"{noise['objective']['noise_sd']:.4g}",) if has_noise else ()))
    console.print(t)
    if has_noise:
        console.print(f"noise floor from {noise['anchors']} repeated mixture(s) ({noise['repeats']} runs): rmse at or "
                      f"below the noise sd is as good as repeats allow; runs {'weighted' if noise['weighted'] else 'not weighted'}"
                      " by 1 / predicted noise variance", highlight=False)
    if res.pooled:
        pl = res.pooled
        offs = ", ".join(f"block {b}: " + " ".join(f"{m} {v:+.3g}" for m, v in o.items()) for b, o in pl["offsets"].items())
        console.print(f"pooled: {pl['runs_earlier']} earlier run(s) + {pl['runs_new']} new over {len(res.model.domains)} "
                      f"column(s); retired (held at 0): {', '.join(pl['retired']) or 'none'}; revision offsets: "
                      f"{offs or ('none kept (they did not lower the BIC)' if pl['changed'] else 'none (no revision)')}",
                      highlight=False, soft_wrap=True)
    console.print(f"wrote [bold]{out}[/] in {time.perf_counter() - t0:.1f}s")


def predict_cmd(
    fit_dir: Path = typer.Option(..., "--fit", help="A directory written by `mixlab fit`."),
    ratios: Path = typer.Option(..., "--ratios", help="Mixtures to score (olmix or RegMix layout, domains matched by name)."),
    out: Path = typer.Option(..., "--out", "-o", help="predictions.csv to write (metrics.csv layout)."),
    sum_tolerance: float = typer.Option(0.01, "--sum-tolerance",
                                        help="Renormalize rows whose weights sum to 1 within this."),
) -> None:
    """Predict every fitted metric for new mixtures (domains matched by name).

    Example: `mixlab predict --fit runs/fit --ratios candidates.csv --out predictions.csv`
    """
    from mixlab.mixopt.fit import predict

    pred = predict(fit_dir, ratios, out, sum_tolerance)
    if pred.renormalized:
        err_console.print(pred.renormalized.message(), highlight=False, soft_wrap=True)
    console.print(f"wrote {len(pred.runs)} predictions of {len(pred.columns)} columns to [bold]{out}[/]")


def propose_cmd(
    config: Path | None = typer.Argument(None, help="Propose config YAML (pretrain or `mode: finetune`)."),
    fit_dir: Path | None = typer.Option(None, "--fit", help="Fit directory (instead of, or overriding, the config)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for proposal.json."),
    weight: list[str] = typer.Option(None, "--weight", help="Objective weight METRIC=W (repeatable)."),
    minimize: list[str] = typer.Option(None, "--minimize", help="Metric to lower (repeatable)."),
    maximize: list[str] = typer.Option(None, "--maximize", help="Metric to raise (repeatable)."),
    min_weight: float | None = typer.Option(None, "--min-weight", help="Minimum weight of every domain."),
    max_weight: list[str] = typer.Option(None, "--max-weight", help="DOMAIN=W upper bound (repeatable)."),
    fixed: list[str] = typer.Option(None, "--fixed", help="DOMAIN=W fixed weight (repeatable)."),
    target_tokens: float | None = typer.Option(None, "--target-tokens", help="Tokens of the target run (repetition cap)."),
    max_epochs: float | None = typer.Option(None, "--max-epochs", help="Repetition cap in epochs (default 4)."),
    available: list[str] = typer.Option(None, "--available", help="DOMAIN=TOKENS available (repeatable)."),
    kl: float | None = typer.Option(None, "--kl", help="Strength of the KL pull towards the prior."),
    within: str | None = typer.Option(None, "--within", help="any | box (swarm's per-domain ranges) | hull (swarm's "
                                                             "convex hull) | trust:R (TV distance <= R from the best run)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of every random choice (default: the config's)."),
    set_: list[str] = SetOption,
) -> None:
    """Propose the mixture that optimizes the fitted objective under constraints.

    Example: `mixlab propose --fit runs/fit --out runs/proposal --max-weight code=0.3 --target-tokens 1e10 --available code=1e9`
    """
    from mixlab.config import apply_overrides, validate
    from mixlab.mixopt.fit import FinetuneConfig, ProposeConfig, load_propose_config, propose, propose_finetune

    if config is not None:
        cfg = load_propose_config(config, set_ or [])
    elif fit_dir is None:
        raise ConfigError("give a propose config or --fit DIR")
    else:
        cfg = validate(ProposeConfig, apply_overrides({"fit": str(fit_dir)}, set_ or []), "command line --set")
    if isinstance(cfg, FinetuneConfig):
        with progress() as p:
            task = p.add_task("finetune proposal", total=1)
            res = propose_finetune(cfg, out)
            p.update(task, advance=1)
        b = res["observed"]["best"]
        console.print(f"best observed under forgetting <= {cfg.max_forgetting:g}: run {b['run']} gain {b['gain']:.4g} "
                      f"forgetting {b['forgetting']:.4g}; Pareto front of {len(res['observed']['pareto_front'])} runs")
        if res.get("model", {}).get("best"):
            m = res["model"]["best"]
            console.print(f"model proposal: {m['knobs']} gain {m['gain']:.4g} forgetting {m['forgetting']:.4g}")
        console.print(f"wrote [bold]{out}/proposal.json[/]")
        return
    data = cfg.model_dump(mode="json")
    if fit_dir is not None:
        data["fit"] = str(fit_dir)
    obj = data["objective"]
    for m, w in _pairs(weight, "--weight").items():
        obj.setdefault(m, {})["weight"] = w
    for flag, names, d in (("--minimize", minimize, "min"), ("--maximize", maximize, "max")):
        for m in names or []:
            obj.setdefault(m, {})["direction"] = d
    c = data["constraints"]
    if min_weight is not None:
        c["min_weight"] = min_weight
    if max_weight:
        c["max_weight"] = _pairs(max_weight, "--max-weight")
    if fixed:
        c["fixed"] = _pairs(fixed, "--fixed")
    if target_tokens is not None or available:
        rep = c.get("repetition") or {}
        rep.update({k: v for k, v in {"target_tokens": target_tokens, "max_epochs": max_epochs}.items() if v is not None})
        rep["available_tokens"] = {**rep.get("available_tokens", {}), **_pairs(available, "--available")}
        c["repetition"] = rep
    if kl is not None:
        data["kl_to_prior"] = kl
    if within is not None:
        data["within"] = within
    if seed is not None:
        data["search"]["seed"] = seed
    cfg = validate(ProposeConfig, data, str(config or "command line"))
    with progress() as p:
        task = p.add_task("propose", total=1)
        res = propose(cfg.fit, cfg, out)
        p.update(task, advance=1)
    _print_proposal(res)
    console.print(f"wrote [bold]{out}/proposal.json[/]")


def _name_column(t: Table, header: str, names, reserve: int) -> None:
    """A first column of names (metrics, domains) that share long prefixes (the_pile_pubmed_abstracts,
    the_pile_pubmed_central): kept whole where the terminal leaves ``reserve`` columns for the numbers,
    folded onto a second line otherwise, never cut into look-alikes such as "the_pile_pub…"."""
    longest = max(map(len, names), default=6)
    t.add_column(header, overflow="fold", min_width=max(9, min(longest, console.width - reserve)))


def _print_proposal(res: dict[str, Any]) -> None:
    """The proposal against the prior and the best run, the objective in metric units, and where it
    lies relative to the swarm (a warning when outside it)."""
    best = res["best_observed"]
    t = Table(title=f"proposal ({res['solver']['method']}, within {res['within']})", box=box.SIMPLE_HEAD,
              show_edge=False, pad_edge=False)
    _name_column(t, "domain", res["weights"], reserve=58)
    for col in ("proposed", "prior", f"best\nobserved\n({best['run']})", "swarm\nrange", "bounds"):
        t.add_column(col)
    rng = res["support"]["observed_range"]
    for dname, w in res["weights"].items():
        lo, hi, why = res["bounds"][dname]
        t.add_row(dname, f"{w:.4f}", f"{res['prior']['weights'][dname]:.4f}", f"{best['weights'][dname]:.4f}",
                  f"{rng[dname][0]:.3f} .. {rng[dname][1]:.3f}", f"[{lo:.3g}, {hi:.3g}] {why}")
    console.print(t)
    console.print(f"prior: {res['prior']['source']}", highlight=False, soft_wrap=True)
    if res.get("leaf_weights"):  # fitted on groups or a reused virtual domain: the mixture to train
        what = "reused split" if res.get("reuse") else "group splits"
        console.print(f"leaf weights ({what}): " + ", ".join(f"{k} {v:.4f}" for k, v in res["leaf_weights"].items()),
                      highlight=False)
    m = Table(title="objective in metric units: predicted at the proposal vs the best observed run",
              box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    _name_column(m, "metric", [k for k, v in res["metrics"].items() if v["weight"]], reserve=64)
    # six columns fit 80 terminal columns: weight with direction, the best run observed (predicted)
    for col in ("goal", "predicted", "best run\n(predicted)", "prior\npredicted", "swarm\nmean ± sd"):
        m.add_column(col, justify="right")
    for name, v in res["metrics"].items():
        if v["weight"] == 0:
            continue
        m.add_row(name, f"{v['direction']} x{v['weight']:.3g}", f"{v['predicted']:.4g}",
                  f"{v['best_observed']:.4g} ({v['best_observed_predicted']:.4g})", f"{v['prior_predicted']:.4g}",
                  f"{v['swarm_mean']:.4g}\n± {v['swarm_std']:.3g}")
    console.print(m)
    o = res["objective"]
    console.print(f"objective (weighted z-scores, lower is better): predicted {o['predicted']:.3f} "
                  f"(95% band {o['band95'][0]:.3f} .. {o['band95'][1]:.3f}), expected optimism "
                  f"{o['expected_optimism']:.3f}; best observed {best['objective']:.3f} (predicted "
                  f"{best['predicted_objective']:.3f}), prior predicted {res['prior']['predicted_objective']:.3f}",
                  highlight=False)
    nz = res.get("noise") or {}
    if nz.get("exceeds_noise") is None:
        console.print(f"noise: {nz.get('note', 'unknown')}", highlight=False)
    else:
        console.print(f"noise: expected improvement over the best observed run {nz['improvement']:.3f} "
                      f"{'exceeds' if nz['exceeds_noise'] else 'does NOT exceed'} {nz['z']:g} x the repeat-noise sd of "
                      f"the difference ({nz['noise_sd_difference']:.3f})", highlight=False)
    sup = res["support"]
    console.print(f"support: distance (total variation) {sup['hull_tv']:.3f} from the swarm's convex hull, "
                  f"{sup['nearest_run_tv']:.3f} from the nearest run {sup['nearest_run']} (runs' median distance "
                  f"to their nearest neighbour {sup['swarm_median_nearest_tv']:.3f}); largest excess over a "
                  f"domain's observed range {sup['max_excess']:.3f} ({sup['max_excess_domain']})", highlight=False)
    if sup["warning"]:
        err_console.print(f"[yellow]warning:[/] {sup['warning']}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("fit")(fit_cmd)
    app.command("predict")(predict_cmd)
    app.command("propose")(propose_cmd)
