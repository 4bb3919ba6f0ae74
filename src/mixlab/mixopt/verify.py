"""Verify a proposal: train it beside the natural and the best observed mixture and check the prediction.

>>> from mixlab.mixopt import verify
>>> v = verify.verify("runs/swarm", "runs/proposal", "runs/verify1")    # pre-register, train, evaluate, judge
>>> v["verdict"]["beats_natural_beyond_noise"], v["verdict"]["covered"]

A proposal is a prediction; nothing tells whether it holds until the mixture is trained. A verify round is
a tiny swarm on the swarm's own base config (:func:`mixlab.mixopt.swarm.write_variant` and
:func:`~mixlab.mixopt.swarm.run_variants`: same variant files, same launchers, same evaluation sweep)
with three arms: ``proposal``, ``natural`` (the swarm's priors, as its variant v000) and
``best_observed`` (the fit's best run), each trained with fresh seeds (``seeds``, default the base seed
+1 and +2) so the best run's lucky seed does not carry over and the seed-to-seed spread measures the
noise floor. The directory holds::

    OUT/prediction.json      pre-registered before any training: the arms' mixtures, every metric's
                             predicted value and 95% band for the mean of the round's seeds (the
                             fit's out-of-fold error near the mixture, the model's std where it has one,
                             and the repeats' seed noise there: :func:`_predict`), the objective; and its sha256
    OUT/variants/, runs/, sweep/   the round's runs and their evaluation (resumable, as a swarm)
    OUT/verify.json, verify.png    predicted vs realized, coverage, the verdict, the regret
    OUT/next/ratios.csv, metrics.csv, priors.json   the fit's runs plus this round's: the next fit's input
    SWARM/verify_history.jsonl, .csv   one row per round (a repeated loop appends here)

``prediction.json`` is never rewritten: a resumed round checks its hash and that the proposal, fit and
swarm it was registered for are unchanged, and refuses otherwise (start a new ``--out``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixlab import atomic
from mixlab.errors import DataError, MixlabError
from mixlab.mixopt import io
from mixlab.mixopt import swarm as S
from mixlab.mixopt.hierarchy import Hierarchy
from mixlab.mixopt.noise import NoiseModel
from mixlab.mixopt.propose import Objective, project, uncertainty
from mixlab.runs.launch import JobResult, LaunchConfig

PREDICTION = "prediction.json"
HISTORY = "verify_history.jsonl"
ARMS = ("proposal", "natural", "best_observed")
Z95 = 1.96
# a run's realized mixture (what best_observed is) differs from the requested one by whole sequences: the
# natural mixture requested and its realized v000 differed by 1.2e-4 on the toyworld, and trained identically
SAME_MIXTURE = 1e-3


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _file_sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def _load_proposal(proposal_dir: Path, fit_dir: str | Path | None) -> tuple[dict[str, Any], Any, Path]:
    from mixlab.mixopt.fit import load_fit

    path = proposal_dir / "proposal.json"
    if not path.is_file():
        raise DataError("no proposal.json; give a directory written by `mixlab propose --fit FIT --out DIR`", proposal_dir)
    prop = json.loads(path.read_text(encoding="utf-8"))
    if "weights" not in prop or "objective" not in prop:
        raise DataError("not a pretraining-mixture proposal (no weights/objective); verify trains mixtures", path)
    fdir = Path(fit_dir) if fit_dir else Path(prop.get("fit") or "")
    if not fit_dir and not (fdir / "fit.json").is_file():
        raise DataError(f"the proposal's fit directory {str(fdir)!r} is not there; pass --fit FIT_DIR", path)
    return prop, load_fit(fdir), fdir


def _arms(prop: dict[str, Any], info: dict[str, Any], swarm_dir: Path) -> dict[str, dict[str, Any]]:
    """The three mixtures over the swarm's leaf domains (its order); each must be trainable as given
    (under the repetition cap). A proposal fitted on groups or a reused virtual domain gives its
    ``leaf_weights``, and its best observed run is expanded to leaves the same way."""
    domains = info["domains"]
    weights, best = prop.get("leaf_weights") or prop["weights"], prop["best_observed"]["weights"]
    if prop.get("leaf_weights") and prop.get("hierarchy"):
        h = Hierarchy.from_json(prop["hierarchy"])
        best = dict(zip(h.leaves, h.expand(np.array([[best[g] for g in h.names]]))[0].tolist()))
    missing = [d for d in domains if d not in weights] + [d for d in weights if d not in domains]
    if missing:
        raise MixlabError(f"the proposal's domains {sorted(weights)} differ from the swarm's {domains} "
                          f"({swarm_dir}); verify a proposal made from this swarm's fit")
    lo = np.array([info["min_weight"][d] for d in domains])
    hi = np.array([info["max_weight"][d] for d in domains])
    natural = project(np.array([info["priors"][d] for d in domains]), lo, hi)[0]
    arms = {"proposal": {"weights": dict(weights), "source": "proposal.json"},
            "natural": {"weights": dict(zip(domains, natural.tolist())), "source": "the swarm's priors (as v000)"},
            "best_observed": {"weights": best, "source": f"best observed run {prop['best_observed']['run']}"}}
    for name, a in arms.items():
        over = [f"{d} = {a['weights'][d]:.4f} > {info['max_weight'][d]:.4f}" for d in domains
                if a["weights"][d] > info["max_weight"][d] + 1e-6]
        if over:
            raise MixlabError(f"the {name} mixture breaks the swarm's repetition cap ({'; '.join(over)}): training "
                              "would renormalize it and test another mixture. Propose again with --max-weight "
                              "DOMAIN=CAP (the caps are max_weight in the swarm's priors.json)")
    return arms


def fit_point(fit: Any, leaf_weights: Mapping[str, float]) -> np.ndarray:
    """A mixture over leaf domains as the fit's input: summed into its groups (a group-level or reused
    fit), with a pooled fit's retired columns at 0."""
    w = dict(leaf_weights)
    h = fit.hierarchy
    if h is not None:
        w = dict(zip(h.names, h.aggregate(np.array([[w.get(leaf, 0.0) for leaf in h.leaves]]))[0].tolist()))
    return np.array([w.get(dm, 0.0) for dm in fit.model.domains])


def seed_noise(fit: Any, obj: Objective) -> tuple[NoiseModel | None, NoiseModel | None]:
    """The fit's run-to-run noise models: per metric (the fit's own, ``fit.noise``) and for the
    objective (estimated from the objective values of the repeated mixtures); (None, None) when no
    mixture of the swarm was repeated."""
    if fit.noise is None:
        return None, None
    d = fit.data
    return fit.noise, NoiseModel.estimate(d.weights, obj.value(d.metrics)[:, None], ["objective"])


def _predict(fit: Any, obj: Objective, x: np.ndarray, k: int,
             noise: tuple[NoiseModel | None, NoiseModel | None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per metric and for the objective: the prediction at ``x`` with its 95% band for the mean of ``k``
    runs at fresh seeds.

    The band adds to the fit's out-of-fold error near ``x`` (and the model's std) the seed noise the
    repeats measured at ``x`` (noise model ``var(x)``), times ``1 + 1/k``: the swarm's runs outside the
    repeats all train on the base seed, so the fitted level carries that one seed's offset, which
    out-of-fold error cannot see (every run shares it), and the round's mean over ``k`` fresh seeds
    carries its own (variance ``var(x) / k``). Bounding the offset's variance by a whole run's variance
    is conservative. Why: round 1 on the toyworld (README) registered bands from out-of-fold error
    alone; every arm came out 0.05-0.24 worse than predicted while the predicted *differences* between
    arms held (0.230 predicted vs 0.249 realized over the natural mixture), and the base seed was the
    luckiest of the three repeats of the natural mixture. Without repeats the noise is unknown and the
    band is the out-of-fold one (``seed_std`` None). ``noise``: :func:`seed_noise` of ``fit`` and ``obj``
    when the caller has it (one estimate for every arm)."""
    d, model, Y = fit.data, fit.model, fit.comparable_metrics()
    pred = model.predict(x[None, :])[0]
    S_ = model.predict_std(x[None, :])
    per_noise, o_noise = seed_noise(fit, obj) if noise is None else noise
    var = {} if per_noise is None else dict(zip(per_noise.metrics, per_noise.predict_var(x[None, :])[0].tolist()))
    keys = ("predicted", "std", "band95", "model_std", "oof_rmse_near", "expected_realized")
    per = {}
    for j, m in enumerate(model.metrics):
        sv = var.get(m)
        u = uncertainty(x, float(pred[j]), None if S_ is None else float(S_[0, j]), d.weights, Y[:, j],
                        fit.oof[:, j], realization_var=0.0 if sv is None else sv * (1 + 1 / k))
        per[m] = {**{key: u[key] for key in keys}, "seed_std": None if sv is None else math.sqrt(sv)}
    o_std = obj.std(S_)
    ov = None if o_noise is None else float(o_noise.predict_var(x[None, :])[0, 0])
    u = uncertainty(x, float(obj.value(pred[None, :])[0]), None if o_std is None else float(o_std[0]), d.weights,
                    obj.value(Y), obj.value(fit.oof), realization_var=0.0 if ov is None else ov * (1 + 1 / k))
    return per, {**{key: u[key] for key in (*keys, "expected_optimism")},
                 "seed_std": None if ov is None else math.sqrt(ov)}


def preregister(swarm_dir: str | Path, proposal_dir: str | Path, out: str | Path, seeds: Sequence[int] | None = None,
                fit_dir: str | Path | None = None) -> dict[str, Any]:
    """Write (or, on a resumed round, check) ``OUT/prediction.json`` and the round's variant configs."""
    sd, pd, out = Path(swarm_dir).resolve(), Path(proposal_dir).resolve(), Path(out)
    cfg, _ = S.load_swarm(sd)
    info = json.loads((sd / "priors.json").read_text(encoding="utf-8"))
    prop, fit, fdir = _load_proposal(pd, fit_dir)
    base = S.load_base(cfg)
    seeds = list(seeds) if seeds else [base.seed + 1, base.seed + 2]
    if len(set(seeds)) != len(seeds):
        raise MixlabError(f"seeds {seeds} repeat a seed; give distinct seeds")
    arms = _arms(prop, info, sd)
    dirs = {m: v["direction"] for m, v in prop["metrics"].items()}
    obj = Objective.build(fit.model.metrics, fit.comparable_metrics(), prop["objective"]["weights"], dirs)
    noise = seed_noise(fit, obj)
    for a in arms.values():
        x = fit_point(fit, a["weights"])
        a["predicted"], a["predicted_objective"] = _predict(fit, obj, x, len(seeds), noise)
    inputs = {"swarm": str(sd), "swarm_sha256": _file_sha(sd / S.SWARM_FILE, sd / "base.yaml", sd / "priors.json"),
              "proposal": str(pd),
              "proposal_sha256": _file_sha(pd / "proposal.json"), "fit": str(fdir.resolve()),
              "fit_sha256": _file_sha(*(fdir / f for f in ("model.json", "ratios.csv", "metrics.csv", "oof.csv"))),
              "seeds": seeds}
    body = {"inputs": inputs, "arms": arms, "metrics": list(fit.model.metrics),
            "objective": {"weights": dict(zip(obj.metrics, obj.weights.tolist())), "directions": dirs,
                          "means": obj.means.tolist(), "stds": obj.stds.tolist(),
                          "note": prop["objective"].get("note", "")},
            "fit_runs": len(fit.data.runs), "regressor": fit.model.regressor, "within": prop.get("within"),
            "runs": {f"{a}-s{s}": {"arm": a, "seed": s} for a in arms for s in seeds}}
    path = out / PREDICTION
    if path.is_file():
        have = json.loads(path.read_text(encoding="utf-8"))
        if _sha(have["prediction"]) != have["sha256"]:
            raise MixlabError(f"{path} was edited after it was registered (sha256 differs); a pre-registered "
                              "prediction is never changed: start a new --out")
        if have["prediction"]["inputs"] != inputs:
            diff = [k for k in inputs if have["prediction"]["inputs"].get(k) != inputs[k]]
            raise MixlabError(f"{out} was registered for another round ({', '.join(diff)} differ); use a new --out")
        return have
    rec = {"sha256": _sha(body), "registered_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "prediction": body}
    for run, r in body["runs"].items():
        S.write_variant(out, run, base, arms[r["arm"]]["weights"], f"verify round {out.name}, {run}", seed=r["seed"])
    atomic.write_json(path, rec)  # last: its presence means the round is registered and its configs written
    return rec


def _realized(pr: dict[str, Any], values: list[float]) -> dict[str, Any]:
    mean = float(np.mean(values))
    lo, hi = pr["band95"]
    return {"mean": mean, "per_seed": [float(v) for v in values],
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "error": mean - pr["predicted"], "covered": bool(lo <= mean <= hi)}


def judge(out: str | Path, rec: dict[str, Any]) -> dict[str, Any]:
    """Realized vs pre-registered: coverage per metric and objective, the proposal against each control
    beyond the noise floor (1.96 x the standard error of a difference of seed means, seed spread pooled
    over arms), and the regret (the proposal's realized objective minus the best arm's)."""
    out = Path(out)
    body = rec["prediction"]
    runs = body["runs"]
    vals = S.final_metrics(out, list(runs))
    metrics, o = body["metrics"], body["objective"]
    coef = np.array([o["weights"][m] * (1.0 if o["directions"][m] == "min" else -1.0) for m in metrics]) / np.array(o["stds"])
    arms: dict[str, Any] = {}
    for a in ARMS:  # a fixed order: prediction.json's keys are sorted, a tie goes to the proposal
        spec = body["arms"][a]
        names = [r for r, v in runs.items() if v["arm"] == a]
        lacking = [f"{r}: {m}" for r in names for m in metrics if m not in vals[r]]
        if lacking:
            raise MixlabError(f"{out}: results missing ({lacking[:3]}); run the round again to finish it")
        Y = np.array([[vals[r][m] for m in metrics] for r in names])
        realized_mix = [json.loads((out / "runs" / r / "meta.json").read_text())["mixture"]["realized"] for r in names]
        arms[a] = {"weights": spec["weights"], "source": spec["source"], "predicted": spec["predicted"],
                   "predicted_objective": spec["predicted_objective"], "runs": names,
                   "realized": {m: _realized(spec["predicted"][m], Y[:, j].tolist()) for j, m in enumerate(metrics)},
                   "realized_objective": _realized(spec["predicted_objective"],
                                                   ((Y - np.array(o["means"])) @ coef).tolist()),
                   "mixture_realized_max_deviation": max(abs(mx[d] - spec["weights"][d]) for mx in realized_mix
                                                         for d in spec["weights"])}
    k = len(body["inputs"]["seeds"])
    same = {a: b for i, a in enumerate(ARMS) for b in ARMS[:i]
            if max(abs(arms[a]["weights"][d] - arms[b]["weights"][d]) for d in arms[a]["weights"]) < SAME_MIXTURE}
    same = {a: b for a, b in same.items() if b not in same}  # e.g. the best observed run was the natural mixture
    spread = [arms[a]["realized_objective"]["std"] for a in ARMS if a not in same]  # a duplicate is not new noise
    pooled = math.sqrt(float(np.mean(np.square(spread)))) if k > 1 else None
    floor = Z95 * pooled * math.sqrt(2 / k) if pooled is not None else None
    r = {a: arms[a]["realized_objective"]["mean"] for a in arms}
    vs = {}
    for c in ("natural", "best_observed"):
        gain = r[c] - r["proposal"]
        vs[c] = {"improvement": gain, "predicted_improvement": arms[c]["predicted_objective"]["predicted"]
                 - arms["proposal"]["predicted_objective"]["predicted"],
                 "beats": bool(gain > 0), "beats_beyond_noise": None if floor is None else bool(gain > floor)}
    weighted = [m for m in metrics if o["weights"][m] > 0]
    verdict = {"beats_natural": vs["natural"]["beats"], "beats_natural_beyond_noise": vs["natural"]["beats_beyond_noise"],
               "beats_best_observed": vs["best_observed"]["beats"],
               "beats_best_observed_beyond_noise": vs["best_observed"]["beats_beyond_noise"],
               "improvement_over_natural": vs["natural"]["improvement"],
               "improvement_over_best_observed": vs["best_observed"]["improvement"],
               "noise_floor": floor, "seed_std_pooled": pooled, "seeds": k,
               "covered": arms["proposal"]["realized_objective"]["covered"],
               "metrics_covered": {m: arms["proposal"]["realized"][m]["covered"] for m in weighted},
               "regret": r["proposal"] - min(r.values()), "best_arm": min(ARMS, key=r.get),
               "same_mixture": same}
    return {"prediction_sha256": rec["sha256"], "registered_utc": rec["registered_utc"], "inputs": body["inputs"],
            "metrics": metrics, "objective": o, "arms": arms, "versus": vs, "verdict": verdict,
            "note": "objective: weighted z-scores over the fit's swarm, lower is better; noise_floor: 1.96 x the "
                    "standard error of the difference of two arms' seed means (seed std pooled over arms); regret: "
                    "the proposal's realized objective minus the best arm's (0 = the proposal was best)"}


def write_next(out: Path, rec: dict[str, Any], verify_res: dict[str, Any]) -> Path:
    """``OUT/next/``: the fit's runs plus this round's (realized mixtures, measured metrics) and the swarm's
    priors, so ``mixlab fit --ratios OUT/next/ratios.csv --metrics OUT/next/metrics.csv`` starts the next round."""
    from mixlab.mixopt.fit import load_fit

    body = rec["prediction"]
    fit = load_fit(body["inputs"]["fit"])
    d = fit.data
    runs, names, W, Y = list(d.runs), list(d.names), [d.weights], [d.metrics]
    vals = S.final_metrics(out, list(body["runs"]))
    for r in body["runs"]:
        mix = json.loads((out / "runs" / r / "meta.json").read_text())["mixture"]["realized"]
        runs.append(f"{out.name}-{r}")
        names.append(f"verify-{out.name}-{r}")
        W.append(np.array([[mix.get(dm, 0.0) for dm in d.domains]]))
        Y.append(np.array([[vals[r][m] for m in d.metric_names]]))
    nd = out / "next"
    io.write_ratios(nd / "ratios.csv", runs, names, d.domains, np.vstack(W))
    io.write_metrics(nd / "metrics.csv", runs, names, d.metric_names, np.vstack(Y))
    atomic.write_bytes(nd / "priors.json", (Path(body["inputs"]["swarm"]) / "priors.json").read_bytes())
    return nd


def history_row(out: Path, v: dict[str, Any]) -> dict[str, Any]:
    a, vd = v["arms"], v["verdict"]
    p = a["proposal"]
    return {"round": str(out.resolve()), "prediction_sha256": v["prediction_sha256"], "registered_utc": v["registered_utc"],
            "fit": v["inputs"]["fit"], "fit_runs": None, "seeds": vd["seeds"],
            "predicted": p["predicted_objective"]["predicted"], "band_lo": p["predicted_objective"]["band95"][0],
            "band_hi": p["predicted_objective"]["band95"][1], "realized": p["realized_objective"]["mean"],
            "covered": vd["covered"], "natural": a["natural"]["realized_objective"]["mean"],
            "best_observed": a["best_observed"]["realized_objective"]["mean"],
            "improvement_over_natural": vd["improvement_over_natural"], "noise_floor": vd["noise_floor"],
            "beats_natural_beyond_noise": vd["beats_natural_beyond_noise"],
            "beats_best_observed": vd["beats_best_observed"], "regret": vd["regret"],
            "weights": json.dumps(p["weights"], sort_keys=True)}


def append_history(path: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Add (or replace, keyed by the pre-registration hash) this round's row; write the JSONL and a CSV twin."""
    import csv
    import io as _io

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.is_file() else []
    rows = [r for r in rows if r["prediction_sha256"] != row["prediction_sha256"]] + [row]
    atomic.write_jsonl(path, rows)
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(row), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic.write_text(path.with_suffix(".csv"), buf.getvalue())
    return rows


def verify(swarm_dir: str | Path, proposal_dir: str | Path, out: str | Path, *, seeds: Sequence[int] | None = None,
           fit_dir: str | Path | None = None, launch: LaunchConfig | None = None, history: str | Path | None = None,
           on_done: Callable[[JobResult], None] | None = None) -> dict[str, Any]:
    """Pre-register, train and evaluate the round (resumable), then write verify.json, verify.png,
    ``next/`` and the history row. Returns verify.json's content."""
    from mixlab.mixopt.plots import plot_verify

    out = Path(out).resolve()
    rec = preregister(swarm_dir, proposal_dir, out, seeds, fit_dir)
    sd = Path(rec["prediction"]["inputs"]["swarm"])
    cfg, _ = S.load_swarm(sd)
    S.run_variants(out, cfg, list(rec["prediction"]["runs"]), launch or cfg.launch, on_done)
    v = judge(out, rec)
    v["next"] = str(write_next(out, rec, v))
    row = history_row(out, v)
    row["fit_runs"] = rec["prediction"]["fit_runs"]
    hist = Path(history) if history else sd / HISTORY
    v["history"] = {"path": str(hist), "round": len(append_history(hist, row))}
    plot_verify(v, out / "verify.png")
    atomic.write_json(out / "verify.json", v)
    return v
