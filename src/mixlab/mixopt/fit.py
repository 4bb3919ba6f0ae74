"""The mixture-optimization API: fit regressors from a swarm, predict, propose.

>>> from mixlab.mixopt.fit import fit, predict, propose
>>> res = fit("swarm/ratios.csv", "swarm/metrics.csv", "loglinear", out="runs/fit")   # writes cv.json, model.json
>>> predict("runs/fit", "new_ratios.csv", "predictions.csv")
>>> proposal = propose("runs/fit", ProposeConfig(fit="runs/fit"), out="runs/proposal")

A fit directory holds ``fit.json`` (domains, metrics, directions, priors, provenance), ``model.json``
(every regressor's state as JSON), ``cv.json`` (out-of-fold figures), ``oof.csv`` (out-of-fold
predictions in the metrics layout), copies of the two input tables, and ``predicted_vs_actual.png``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixlab import atomic
from mixlab.config import StrictModel, dump_yaml, load_config, read_yaml
from mixlab.errors import ConfigError, DataError
from mixlab.mixopt import io
from mixlab.mixopt.hierarchy import Hierarchy
from mixlab.mixopt.noise import NoiseModel, repeat_groups
from mixlab.mixopt.propose import (
    FinetuneConfig,
    Objective,
    ProposeConfig,
    finetune_proposal,
    propose_from_model,
    resolve_directions,
)
from mixlab.mixopt.regressors import MixtureModel, cv_report, out_of_fold
from mixlab.runs.rundir import base_meta

Step = Callable[[str], None]


class FitConfig(StrictModel):
    """``mixlab fit CONFIG``: which swarm tables, which regressor, how to validate."""

    ratios: str = Field(description="mixture file: olmix `run,name,index,<domain...>` or RegMix "
                                    "`index,train_<domain>...`")
    metrics: str = Field(description="results file: olmix `run,name,index,<metric...>` or RegMix `index,metric/<name>...`")
    priors: dict[str, float] | str | None = Field(
        None, description="domain -> natural weight (token share), or a priors.json (mixlab's swarm or olmix's); "
                          "default: the priors.json next to the ratios file, if any")
    regressor: str = "loglinear"
    options: dict[str, Any] = Field(default_factory=dict, description="regressor options, e.g. {restarts: 2}")
    fit_metrics: list[str] | None = Field(None, description="subset of metric columns to fit (default all)")
    directions: dict[str, Literal["min", "max"]] = Field(default_factory=dict)
    folds: int = Field(5, ge=2)
    seed: int = 0
    level: Literal["leaf", "group"] = Field("leaf", description="fit the leaf domains as they are, or their top-level "
                                                                "groups (leaves named group/child, weights summed)")
    reuse: str | None = Field(None, description="a previous proposal (or fit) whose unchanged domains this swarm froze "
                                                "as one virtual domain; default: the reuse.json beside the ratios")
    changed: list[str] = Field(default_factory=list, description="with reuse or pool: domains whose data changed")
    pool: str | None = Field(None, description="an earlier fit directory whose runs are fitted together with this "
                                               "swarm's (pooled reuse, mixlab.mixopt.reuse.pool_runs): removed "
                                               "domains and the old data of `changed` ones become retired columns "
                                               "held at 0, with an offset per revision where it lowers the BIC. "
                                               "Chain updates by pooling the previous pooled fit")
    noise_weighting: bool = Field(True, description="when mixtures were repeated (swarm `repeats:`), weight each run "
                                                    "by 1 / its noise variance predicted from the repeats")
    sum_tolerance: float = Field(io.SUM_TOLERANCE, gt=0, lt=0.5,
                                 description="rows whose weights sum to 1 within this are renormalized (rounded "
                                             "files); beyond it a row is an error")


@dataclass
class FitResult:
    """A loaded fit: the model, its training swarm, out-of-fold predictions and the CV report."""

    path: Path | None
    model: MixtureModel
    data: io.SwarmData
    oof: np.ndarray
    cv: dict[str, Any]
    directions: dict[str, str]
    priors: dict[str, float] | None
    priors_source: str | None = None
    noise: NoiseModel | None = None
    hierarchy: Hierarchy | None = None   # the fitted domains are its groups; leaf weights by expanding
    reuse: dict[str, Any] | None = None
    pooled: dict[str, Any] | None = None  # a pooled fit: current / retired columns, blocks by run, offsets

    def retired(self) -> list[str]:
        """Columns of a pooled fit no mixture may use now (removed domains, old data of revised ones)."""
        return list(self.pooled["retired"]) if self.pooled else []

    def current_rows(self) -> np.ndarray:
        """Runs whose mixture can be trained now (no weight on a retired column): all but a pooled fit's older ones."""
        idx = [self.data.domains.index(c) for c in self.retired()]
        return self.data.weights[:, idx].sum(axis=1) <= 1e-12 if idx else np.ones(len(self.data.runs), dtype=bool)

    def comparable_metrics(self) -> np.ndarray:
        """The runs' metrics as the latest revision block would measure them: a pooled fit's earlier
        blocks less their fitted offsets (the observed values otherwise)."""
        from mixlab.mixopt.reuse import block_shift

        Y = np.array(self.data.metrics, dtype=np.float64)
        if not self.pooled or not self.pooled.get("offsets"):
            return Y
        blocks = np.array([int(self.pooled["blocks"][r]) for r in self.data.runs])
        offsets = {int(b): np.array([o[m] for m in self.data.metric_names]) for b, o in self.pooled["offsets"].items()}
        return Y - block_shift(blocks, offsets, Y.shape)

    def leaf_table(self) -> tuple[list[str], np.ndarray]:
        """The runs' mixtures over leaf domains (a group-level or reused fit expanded), for pooling."""
        if self.hierarchy is not None:
            return list(self.hierarchy.leaves), self.hierarchy.expand(self.data.weights)
        return list(self.data.domains), np.array(self.data.weights)

    def prior_vector(self) -> np.ndarray:
        """The natural mixture: the priors when given, else the swarm's mean mixture (swarms centre on
        their priors, so the mean is the best stand-in; :meth:`prior_label` says which it is)."""
        if self.priors:  # a pooled fit's retired columns have no prior: 0
            p = np.array([self.priors.get(d, 0.0) if self.pooled else self.priors[d] for d in self.model.domains],
                         dtype=np.float64)
            return p / p.sum()
        return self.data.weights[self.current_rows()].mean(axis=0)

    def prior_label(self) -> str:
        """Where :meth:`prior_vector` comes from, for reports."""
        return (self.priors_source or "priors") if self.priors else "swarm mean (no priors given)"


def read_priors_file(path: str | Path) -> dict[str, float]:
    """Priors from a JSON file: mixlab's swarm ``priors.json`` (``priors``), olmix's launch metadata or
    priors file (``relative_sizes``), or a flat ``{domain: weight}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("priors file not found; give a priors.json or a `priors:` mapping", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", path, e.lineno) from None
    for key in ("priors", "relative_sizes"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            if isinstance(data.get("relative_sizes"), dict):  # olmix launch metadata: priors.relative_sizes
                data = data["relative_sizes"]
            break
    if not isinstance(data, dict) or not data:
        raise DataError("expected a mapping domain -> weight (or mixlab's `priors` / olmix's `relative_sizes`)", path)
    bad = [k for k, v in data.items() if not isinstance(v, (int, float)) or not v >= 0 or not np.isfinite(v)]
    if bad:
        raise DataError(f"prior(s) of {bad[:5]} are not finite numbers >= 0", path)
    if sum(data.values()) <= 0:
        raise DataError("priors sum to 0", path)
    return {k: float(v) for k, v in data.items()}


def resolve_priors(cfg: FitConfig) -> tuple[dict[str, float] | None, str | None]:
    """The fit's priors and their source: the config's mapping, its priors.json, or a swarm's
    ``priors.json`` beside the ratios file (``mixlab swarm collect`` writes ratios.csv there)."""
    if isinstance(cfg.priors, dict):
        return dict(cfg.priors), "fit config `priors`"
    if isinstance(cfg.priors, str):
        return read_priors_file(cfg.priors), cfg.priors
    beside = Path(cfg.ratios).parent / "priors.json"
    if beside.is_file():
        return read_priors_file(beside), str(beside)
    return None, None


def _select_metrics(data: io.SwarmData, names: Sequence[str] | None, path: str) -> io.SwarmData:
    if not names:
        return data
    missing = [m for m in names if m not in data.metric_names]
    if missing:
        raise DataError(f"metric column(s) {missing} not found; the file has {data.metric_names}", path, 1)
    cols = [data.metric_names.index(m) for m in names]
    return dataclasses.replace(data, metric_names=list(names), metrics=data.metrics[:, cols])


def canonical(data: io.SwarmData) -> io.SwarmData:
    """The same swarm with runs sorted by id and domains sorted by name."""
    r = sorted(range(len(data.runs)), key=lambda i: data.runs[i])
    c = sorted(range(len(data.domains)), key=lambda j: data.domains[j])
    return io.SwarmData([data.runs[i] for i in r], [data.names[i] for i in r], [data.domains[j] for j in c],
                        data.weights[r][:, c], list(data.metric_names), data.metrics[r], data.renormalized)


def fit_swarm(data: io.SwarmData, regressor: str = "loglinear", *, folds: int = 5, seed: int = 0,
              options: Mapping[str, Any] | None = None, directions: Mapping[str, str] | None = None,
              priors: Mapping[str, float] | None = None, priors_source: str | None = None,
              step: Step | None = None, noise_weighting: bool = True,
              pool: Mapping[str, Any] | None = None) -> FitResult:
    """Out-of-fold predictions (K-fold, seeded), the CV report, and the final model on all runs.

    Runs and domains are put in sorted order first, so the order of rows and columns in the
    files cannot change folds, fits or figures (the same swarm always gives the same fit).
    Runs sharing a mixture (seed repeats) share a fold, and their spread gives the noise model
    (:mod:`mixlab.mixopt.noise`): with ``noise_weighting`` every run is weighted by 1 / its
    predicted noise variance, and ``cv["noise"]`` reports the noise floor beside the error.

    ``pool`` (``{"current": [domains], "blocks": {run: revision block}}``, from :func:`fit_config`
    with ``pool:``) makes it a pooled fit (:func:`mixlab.mixopt.reuse.fit_pooled`): the law with an
    offset per earlier revision block where it lowers the BIC; the out-of-fold figures are those of
    the runs less their block's offset (the offsets held at the full fit's values).
    """
    data = canonical(data)
    dirs = resolve_directions(data.metric_names, directions, default="min")
    groups = repeat_groups(data.weights)
    if pool is not None:  # a repeat is a repeat within one revision block
        blocks = np.array([int(pool["blocks"][r]) for r in data.runs])
        groups = np.unique(np.stack([groups, blocks], axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    repeated = len(np.unique(groups)) < len(groups)
    noise = NoiseModel.estimate(data.weights, data.metrics, data.metric_names, groups) if repeated else None
    sw = noise.weights(data.weights) if noise is not None and noise_weighting else None
    pooled, Y = None, data.metrics
    if pool is None:
        model = MixtureModel.fit(regressor, data.domains, data.metric_names, data.weights, data.metrics, seed,
                                 dict(options or {}), step, sample_weight=sw)
    else:
        from mixlab.mixopt.reuse import Pooled, block_shift, fit_pooled

        P = Pooled(data.domains, list(pool["current"]), data.weights, data.metrics, 0, blocks)
        pf = fit_pooled(P, regressor, data.metric_names, seed, sw, "auto", dict(options or {}))
        model = pf.model
        pooled = {**pool, "blocks": dict(zip(data.runs, blocks.tolist())), "reference_block": pf.reference,
                  "offsets": {str(b): dict(zip(data.metric_names, o.tolist())) for b, o in pf.offsets.items()},
                  "offset_bic_gain": pf.bic_gain, "offset_passes": pf.passes,
                  "retired": [d for d in data.domains if d not in pool["current"]]}
        Y = data.metrics - block_shift(blocks, pf.offsets, data.metrics.shape)
        if step is not None:
            for m in data.metric_names:
                step(m)
    oof = out_of_fold(regressor, data.weights, Y, folds, seed, dict(options or {}), step,
                      sample_weight=sw, groups=groups if repeated else None)
    cv = cv_report(data.metric_names, Y, oof, dirs)
    cv["noise"] = noise_report(noise, data, dirs, sw is not None)
    if noise is not None:
        for m, f in noise.floor().items():
            cv["per_metric"][m].update(f)
    cv.update({"folds": folds, "seed": seed, "regressor": regressor, "n_runs": len(data.runs),
               "directions_inferred": {m: m not in (directions or {}) for m in data.metric_names},
               "ratios_renormalized": data.renormalized.as_json() if data.renormalized else None})
    if pooled is not None:
        cv["pooled"] = {k: pooled[k] for k in ("source", "current", "retired", "changed", "offsets", "offset_bic_gain")}
    return FitResult(None, model, data, oof, cv, dirs, dict(priors) if priors else None,
                     priors_source if priors else None, noise, pooled=pooled)


def noise_report(noise: NoiseModel | None, data: io.SwarmData, dirs: Mapping[str, str], weighted: bool) -> dict[str, Any]:
    """The noise floor: per-metric repeat sd (in ``per_metric``) and the equal-weight objective's, in z units."""
    if noise is None:
        return {"anchors": 0, "weighted": False,
                "note": "no mixture was repeated: noise unknown (add `repeats:` to the swarm config)"}
    obj = Objective.build(data.metric_names, data.metrics, {m: 1.0 for m in data.metric_names}, dirs)
    on = NoiseModel.estimate(data.weights, obj.value(data.metrics)[:, None], ["objective"])
    return {"anchors": int(len(noise.counts)), "repeats": noise.counts.tolist(), "weighted": weighted,
            "model": ("inverse-distance-weighted log variance of the anchors" if noise.model == "idw" else
                      "log variance of the anchors regressed on the mixture (ridge, shrunk toward the pooled "
                      "variance as far as the anchors' evidence for heteroscedasticity (REML) says, within 10x of it)"), "objective": on.floor()["objective"]}


def write_fit(res: FitResult, out: str | Path, meta: dict[str, Any]) -> Path:
    """Write a fit directory atomically (replaced only when complete)."""
    from mixlab.mixopt.plots import plot_predicted_vs_actual
    from mixlab.mixopt.report import write_fit_report

    d = res.data
    with atomic.directory(out) as tmp:
        atomic.write_json(tmp / "model.json", res.model.state())
        atomic.write_json(tmp / "cv.json", res.cv)
        if res.noise is not None:
            atomic.write_json(tmp / "noise.json", res.noise.state())
        atomic.write_json(tmp / "fit.json", {**meta, "domains": d.domains, "metrics": d.metric_names,
                                             "directions": res.directions, "priors": res.priors,
                                             "priors_source": res.priors_source,
                                             "hierarchy": res.hierarchy.as_json() if res.hierarchy else None,
                                             "reuse": res.reuse, "pooled": res.pooled,
                                             "regressor": res.model.regressor})
        io.write_ratios(tmp / "ratios.csv", d.runs, d.names, d.domains, d.weights)
        io.write_metrics(tmp / "metrics.csv", d.runs, d.names, d.metric_names, d.metrics)
        io.write_metrics(tmp / "oof.csv", d.runs, d.names, d.metric_names, res.oof)
        plot_predicted_vs_actual(d.metric_names, res.comparable_metrics(), res.oof, res.cv, tmp / "predicted_vs_actual.png")
        write_fit_report(res, tmp)  # effects.json/.png and report.html (mixlab.mixopt.report)
    res.path = Path(out)
    return res.path


def fit(ratios: str | Path, metrics: str | Path, regressor: str = "loglinear", out: str | Path | None = None, *,
        priors: Mapping[str, float] | str | Path | None = None, folds: int = 5, seed: int = 0,
        options: Mapping[str, Any] | None = None, fit_metrics: Sequence[str] | None = None,
        directions: Mapping[str, str] | None = None, sum_tolerance: float = io.SUM_TOLERANCE,
        step: Step | None = None, level: str = "leaf", reuse: str | Path | None = None,
        changed: Sequence[str] = (), noise_weighting: bool = True, pool: str | Path | None = None) -> FitResult:
    """Fit ``regressor`` to a ``ratios.csv`` + ``metrics.csv`` pair; with ``out``, write the fit directory.

    ``level="group"`` fits the top-level groups of ``group/child`` leaves; ``reuse`` (a previous
    proposal) fits a reuse swarm's virtual domain and its ``changed`` / added domains; ``pool`` (an
    earlier fit directory) fits these runs together with the earlier fit's over every domain
    (``changed``: domains whose data was revised since)."""
    pri = str(priors) if isinstance(priors, (str, Path)) else dict(priors) if priors else None
    cfg = FitConfig(ratios=str(ratios), metrics=str(metrics), priors=pri,
                    regressor=regressor, options=dict(options or {}), fit_metrics=list(fit_metrics) if fit_metrics else None,
                    directions=dict(directions or {}), folds=folds, seed=seed, sum_tolerance=sum_tolerance,
                    level=level, reuse=None if reuse is None else str(reuse), changed=list(changed),
                    noise_weighting=noise_weighting, pool=None if pool is None else str(pool))
    return fit_config(cfg, out, step)


def fit_config(cfg: FitConfig, out: str | Path | None = None, step: Step | None = None) -> FitResult:
    """:func:`fit` from a validated :class:`FitConfig`."""
    t0 = time.perf_counter()
    priors, source = resolve_priors(cfg)
    try:
        data = io.read_swarm(cfg.ratios, cfg.metrics, priors, cfg.sum_tolerance)
    except DataError as e:
        if source is None or "priors" not in str(e):
            raise
        raise DataError(f"{e} (priors from {source}; set `priors:` to use others)") from None
    data = _select_metrics(data, cfg.fit_metrics, cfg.metrics)
    from mixlab.mixopt.reuse import REUSE_FILE

    hier, reuse, pool = None, None, None
    if cfg.changed and cfg.pool is None and cfg.reuse is None and not (Path(cfg.ratios).parent / REUSE_FILE).is_file():
        raise ConfigError(f"changed: {cfg.changed} only applies with pool: (an earlier fit) or reuse: (a previous "
                          "proposal); give one, or drop changed")
    if cfg.pool is not None:
        data, pool = _pool(cfg, data)
    else:
        hier, reuse = _hierarchy(cfg, data, priors)
    if hier is not None:
        data = dataclasses.replace(data, domains=hier.names, weights=hier.aggregate(data.weights))
        if priors:
            priors = dict(zip(hier.names, hier.aggregate(np.array([priors[d] for d in hier.leaves]))[0].tolist()))
    res = fit_swarm(data, cfg.regressor, folds=cfg.folds, seed=cfg.seed, options=cfg.options,
                    directions=cfg.directions, priors=priors, priors_source=source, step=step,
                    noise_weighting=cfg.noise_weighting, pool=pool)
    res.hierarchy, res.reuse = hier, reuse
    if out is not None:
        meta = {**base_meta(cfg, cfg.seed), "timings": {"fit_s": round(time.perf_counter() - t0, 3)},
                "config": cfg.model_dump(mode="json")}
        write_fit(res, out, meta)
    return res


def _pool(cfg: FitConfig, data: io.SwarmData) -> tuple[io.SwarmData, dict[str, Any]]:
    """This swarm's runs after the earlier fit's (``cfg.pool``) as one table over every domain either
    trained on (:func:`mixlab.mixopt.reuse.pool_runs`), and the pooling's record for :func:`fit_swarm`.

    ``changed``: the config's, else those of the ``reuse.json`` beside the ratios (a swarm generated
    with ``reuse:`` samples around the previous proposal; pooling fits its leaves, not the virtual
    domain). Run ids of this swarm that the earlier fit already has get a ``~N`` suffix."""
    from mixlab.mixopt import reuse as R

    if cfg.level == "group" or cfg.reuse is not None:
        raise ConfigError("pool: cannot be combined with level: group or reuse: (pooling fits every leaf domain "
                          "with the earlier runs; reuse fits a frozen split); give one of them")
    prev = load_fit(cfg.pool)
    missing = [m for m in data.metric_names if m not in prev.data.metric_names]
    if missing:
        raise DataError(f"the earlier fit has no metric(s) {missing} (it has {prev.data.metric_names}); pooled runs "
                        "must measure the same metrics (select them with fit_metrics)", cfg.pool)
    changed = list(cfg.changed)
    beside = Path(cfg.ratios).parent / R.REUSE_FILE
    if not changed and beside.is_file():
        changed = list(json.loads(beside.read_text(encoding="utf-8")).get("changed", []))
    cols, W_old = prev.leaf_table()
    unknown = [c for c in changed if c not in data.domains]
    if unknown:
        gone = [c for c in unknown if c in cols]
        raise ConfigError(f"changed: {unknown} are not domains of this swarm ({data.domains})"
                          + (f"; {gone} were removed, which retires them without --changed" if gone else ""))
    new = [c for c in changed if c not in cols]
    if new:
        raise ConfigError(f"changed: {new} are new (the earlier fit {cfg.pool} has {cols}); an added domain needs "
                          "no --changed, only a domain whose data was revised does")
    Y_old = prev.data.metrics[:, [prev.data.metric_names.index(m) for m in data.metric_names]]
    blocks_old = (np.array([prev.pooled["blocks"][r] for r in prev.data.runs]) if prev.pooled else None)
    P = R.pool_runs(cols, W_old, Y_old, data.domains, data.weights, data.metrics, changed, blocks_old)
    taken, runs = set(prev.data.runs), list(prev.data.runs)
    for r in data.runs:
        name, k = r, 1
        while name in taken:
            k += 1
            name = f"{r}~{k}"
        taken.add(name)
        runs.append(name)
    pooled = io.SwarmData(runs, list(prev.data.names) + list(data.names), P.columns, P.weights,
                          list(data.metric_names), P.metrics, data.renormalized)
    return pooled, {"source": str(Path(cfg.pool).resolve()), "current": list(data.domains), "changed": changed,
                    "blocks": dict(zip(runs, P.block_ids.tolist())), "runs_earlier": len(prev.data.runs),
                    "runs_new": len(data.runs)}


def _hierarchy(cfg: FitConfig, data: io.SwarmData,
               priors: Mapping[str, float] | None) -> tuple[Hierarchy | None, dict[str, Any] | None]:
    """The grouping the fit works at: the virtual domain of a reuse, the top-level groups, or none."""
    from mixlab.mixopt import reuse as R

    beside = Path(cfg.ratios).parent / R.REUSE_FILE
    if cfg.reuse is not None or (beside.is_file() and cfg.level == "leaf"):
        if cfg.level == "group":
            raise ConfigError("level: group and reuse cannot be combined; fit the reuse swarm at its virtual level")
        if cfg.reuse is not None:
            prev, source = previous_mixture(cfg.reuse)
            plan = R.plan_reuse(prev, source, data.domains, cfg.changed)
        else:
            plan = R.Reuse.from_json(json.loads(beside.read_text(encoding="utf-8")))
            if sorted(plan.domains) != sorted(data.domains):
                raise DataError(f"{beside} is for domains {plan.domains}, the ratios have {data.domains}", cfg.ratios)
        R.check_split(plan, data.weights, data.runs, cfg.ratios)
        return plan.hierarchy().with_order(data.domains), plan.as_json()
    if cfg.level == "leaf":
        return None, None
    h = Hierarchy.from_leaves(data.domains, None if not priors else np.array([priors[d] for d in data.domains]))
    if h.is_flat:
        raise ConfigError(f"level: group, but no domain is a group/child path ({data.domains}); name leaves like "
                          "`code/python_stdlib`, or fit at level: leaf")
    if not priors:  # the split inside a group: the swarm's mean when there are no priors
        h = Hierarchy.from_leaves(data.domains, data.weights)
    return h, None


def load_fit(path: str | Path) -> FitResult:
    """Load a fit directory written by :func:`fit`."""
    path = Path(path)
    if not path.exists():
        raise DataError("fit directory not found; give a directory written by `mixlab fit --out`", path)
    for name in ("fit.json", "model.json", "cv.json", "ratios.csv", "metrics.csv", "oof.csv"):
        if not (path / name).is_file():
            raise DataError(f"not a fit directory (missing {name}); create one with `mixlab fit`", path)
    info = json.loads((path / "fit.json").read_text())
    model = MixtureModel.from_state(json.loads((path / "model.json").read_text()))
    data = io.read_swarm(path / "ratios.csv", path / "metrics.csv")
    oof = io.read_metrics(path / "oof.csv").reorder(data.runs).select(data.metric_names)
    noise = (NoiseModel.from_state(json.loads((path / "noise.json").read_text()))
             if (path / "noise.json").is_file() else None)
    hier = Hierarchy.from_json(info["hierarchy"]) if info.get("hierarchy") else None
    return FitResult(path, model, data, oof, json.loads((path / "cv.json").read_text()), info["directions"],
                     info.get("priors"), info.get("priors_source"), noise, hier, info.get("reuse"), info.get("pooled"))


def _as_fit(fit_or_dir: FitResult | str | Path) -> FitResult:
    return fit_or_dir if isinstance(fit_or_dir, FitResult) else load_fit(fit_or_dir)


def predict(fit_or_dir: FitResult | str | Path, ratios: str | Path, out: str | Path | None = None,
            sum_tolerance: float = io.SUM_TOLERANCE) -> io.Table:
    """Predict every fitted metric for the mixtures in ``ratios`` (any layout, domains matched by name;
    rows within ``sum_tolerance`` of summing to 1 renormalized, as in :func:`fit`)."""
    res = _as_fit(fit_or_dir)
    table = io.read_ratios(ratios, tolerance=sum_tolerance)
    h = res.hierarchy
    if h is not None and sorted(table.columns) == sorted(h.leaves):  # leaf mixtures of a group-level fit
        table = dataclasses.replace(table, columns=h.names, values=h.aggregate(table.select(h.leaves)), labels=None)
    extra = [c for c in table.columns if c not in res.model.domains]
    missing = [d for d in res.model.domains if d not in table.columns]
    if extra or missing:
        raise DataError(f"domains differ from the fit's {res.model.domains}: "
                        + "; ".join(p for p in (f"unknown column(s) {extra}" if extra else "",
                                                f"missing column(s) {missing}" if missing else "") if p)
                        + io.spelling_hints(extra, missing), ratios, 1)
    X = table.select(res.model.domains)
    P = res.model.predict(X)
    cols, vals = list(res.model.metrics), [P]
    S = res.model.predict_std(X)
    if S is not None:
        cols += [f"{m}_std" for m in res.model.metrics]
        vals.append(S)
    pred = io.Table(table.runs, table.names, table.index, cols, np.hstack(vals), renormalized=table.renormalized)
    if out is not None:
        io.write_metrics(out, pred.runs, pred.names, pred.columns, pred.values, pred.index)
    return pred


def propose(fit_or_dir: FitResult | str | Path, cfg: ProposeConfig, out: str | Path | None = None) -> dict[str, Any]:
    """Propose the mixture optimizing ``cfg.objective`` under ``cfg.constraints``; writes ``out/proposal.json``."""
    from mixlab.mixopt.report import write_proposal_report

    t0 = time.perf_counter()
    res = _as_fit(fit_or_dir)
    explicit = {m: o.direction for m, o in cfg.objective.items() if o.direction}
    directions = {**res.directions, **explicit}
    d = res.data
    X, Y, oof, runs, reference = d.weights, d.metrics, res.oof, d.runs, None
    if res.pooled:
        X, Y, oof, runs, reference, cfg = _pooled_inputs(res, cfg)
    proposal = propose_from_model(res.model, X, Y, oof, runs, res.prior_vector(), cfg,
                                  directions, prior_source=res.prior_label(), reference=reference)
    if res.pooled:  # the mixture to train: the current domains (retired ones are at 0)
        current = res.pooled["current"]
        proposal["weights"] = {dm: proposal["weights"][dm] for dm in current}
        proposal["best_observed"]["weights"] = {dm: proposal["best_observed"]["weights"][dm] for dm in current}
        proposal["pooled"] = {k: res.pooled[k] for k in ("source", "current", "retired", "changed", "offsets",
                                                         "runs_earlier", "runs_new")}
    if res.hierarchy is not None:  # fitted on groups (or a reused virtual domain): the mixture to train is over leaves
        x = np.array([proposal["weights"][g] for g in res.hierarchy.names])
        proposal["leaf_weights"] = dict(zip(res.hierarchy.leaves, res.hierarchy.expand(x)[0].tolist()))
        proposal["hierarchy"] = res.hierarchy.as_json()
        proposal["reuse"] = res.reuse
    proposal["fit"] = str(res.path.resolve()) if res.path else None  # absolute: verify runs from anywhere
    proposal["cv_objective"] = res.cv["aggregate"]["objective"]
    proposal["timings"] = {"propose_s": round(time.perf_counter() - t0, 3)}
    if out is not None:
        out = Path(out)
        atomic.write_text(out / "config.yaml", dump_yaml(cfg))
        atomic.write_json(out / "proposal.json", proposal)
        write_proposal_report(proposal, out)  # proposal.png and report.html
    return proposal


def _pooled_inputs(res: FitResult, cfg: ProposeConfig):
    """What a pooled fit proposes from: every run's offset-corrected values scale the objective
    (``reference``), only runs trainable now count as observed (X, Y, oof, runs), and the constraints
    hold the retired columns at 0 (a bound asking weight for one is an error; a floor for every domain
    applies to the current ones)."""
    reference = res.comparable_metrics()
    now = res.current_rows()
    runs = [r for r, k in zip(res.data.runs, now) if k]
    if not runs:
        raise DataError("a pooled fit without a run over the current domains; add this update's swarm", res.path)
    c, current, retired = cfg.constraints, res.pooled["current"], res.retired()
    asked = {k: v for part in (c.max_weight if isinstance(c.max_weight, dict) else {}, c.fixed,
                               c.min_weight if isinstance(c.min_weight, dict) else {})
             for k, v in part.items() if k in retired and v > 0}
    if asked:
        raise ConfigError(f"constraints: {asked} give weight to retired column(s) of this pooled fit (held at 0: "
                          f"removed domains and revised domains' old data); the current domains are {current}")
    per_domain = lambda v: dict(v) if isinstance(v, dict) else {dm: float(v) for dm in current}  # noqa: E731
    cfg = cfg.model_copy(update={"constraints": c.model_copy(update={
        "max_weight": {**per_domain(c.max_weight), **{col: 0.0 for col in retired}},
        "min_weight": per_domain(c.min_weight)})})
    return res.data.weights[now], reference[now], res.oof[now], runs, reference, cfg


def propose_finetune(cfg: FinetuneConfig, out: str | Path | None = None) -> dict[str, Any]:
    """Fine-tuning mode: most target gain with forgetting <= bound, plus the Pareto front (+ plot)."""
    from mixlab.mixopt.plots import plot_pareto

    cols = [*cfg.mixture, *cfg.scalars, cfg.gain, cfg.forgetting]
    runs, values = io.read_results_table(cfg.results, cols)
    knobs = values[:, : len(cols) - 2]
    if cfg.mixture:
        mix, dev = io.renormalize_rows(knobs[:, : len(cfg.mixture)], io.SUM_TOLERANCE)
        bad = np.flatnonzero(dev > io.SUM_TOLERANCE)
        if len(bad):
            raise DataError(f"mixture columns {cfg.mixture} of run {runs[bad[0]]!r} sum to "
                            f"{knobs[bad[0], : len(cfg.mixture)].sum():.6g}, not 1 (tolerance {io.SUM_TOLERANCE:g})",
                            cfg.results)
        knobs[:, : len(cfg.mixture)] = mix
    result = finetune_proposal(runs, knobs, values[:, -2], values[:, -1], cfg)
    if out is not None:
        out = Path(out)
        atomic.write_text(out / "config.yaml", dump_yaml(cfg))
        atomic.write_json(out / "proposal.json", result)
        plot_pareto(values[:, -2], values[:, -1], result, out / "pareto.png", cfg.gain, cfg.forgetting)
    return result


def load_propose_config(path: str | Path, overrides: Sequence[str] = ()) -> ProposeConfig | FinetuneConfig:
    """Read a propose config; ``mode: finetune`` selects fine-tuning mode."""
    data, _ = read_yaml(path)
    model = FinetuneConfig if data.get("mode") == "finetune" else ProposeConfig
    return load_config(path, model, overrides)


def load_fit_config(path: str | Path, overrides: Sequence[str] = ()) -> FitConfig:
    """Read a fit config; relative table paths resolve against the config's folder when they exist there."""
    cfg = load_config(path, FitConfig, overrides)
    base = Path(path).parent
    for field in ("ratios", "metrics", "priors"):
        if not isinstance(getattr(cfg, field), str):
            continue
        p = Path(getattr(cfg, field))
        if not p.is_absolute() and not p.exists() and (base / p).exists():
            cfg = cfg.model_copy(update={field: str(base / p)})
    return cfg


__all__ = ["FitConfig", "FitResult", "ProposeConfig", "FinetuneConfig", "fit", "fit_config", "fit_swarm",
           "load_fit", "predict", "propose", "propose_finetune", "load_propose_config", "load_fit_config"]


def previous_mixture(path: str | Path) -> tuple[dict[str, float], str]:
    """The previous mixture over leaves and where it came from: ``leaf_weights`` of a proposal when it
    has them (a hierarchical or reused fit), else its ``weights``; a fit directory gives its default proposal."""
    p = Path(path)
    if p.is_dir() and (p / "proposal.json").is_file():
        p = p / "proposal.json"
    elif p.is_dir() and (p / "fit.json").is_file():
        prop = propose(p, ProposeConfig(fit=str(p)))
        return dict(prop.get("leaf_weights") or prop["weights"]), f"default proposal of fit {p}"
    if not p.is_file():
        raise DataError("previous mixture not found: give a `mixlab propose` directory, its proposal.json, "
                        "or a fit directory", p)
    try:
        prop = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", p, e.lineno) from None
    w = prop.get("leaf_weights") or prop.get("weights") if isinstance(prop, dict) else None
    if not isinstance(w, dict) or not w:
        raise DataError("not a proposal: no `weights` mapping domain -> weight", p)
    return {k: float(v) for k, v in w.items()}, str(p)
