"""A verify round end to end on a tiny toyworld swarm: the prediction is registered before training and
never edited, the realized values are the runs' own measurements, the verdict's arithmetic holds, a
resumed round retrains nothing, and a second round (fit on the first round's `next/` tables) appends to
the history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixlab.errors import MixlabError
from mixlab.mixopt import swarm as S
from mixlab.mixopt import verify as V
from mixlab.mixopt.fit import ProposeConfig, fit, load_fit, propose

BASE = {
    "seed": 0,
    "model": {"size": "proxy-0.2m"},
    "tokenizer": {"kind": "byte"},
    "data": {"sources": {d: {"uri": [f"toyworld:{d}"], "toyworld_documents": 200, "toyworld_heldout_documents": 10}
                         for d in ("arithmetic", "people", "prose")}, "max_epochs": 4.0},
    "duration": {"tokens": 8192},
    "train": {"seq_len": 64, "batch_size": 8, "threads": 1, "log_every": 8},
    "eval": {"every": 0, "max_tokens": 512},
    "checkpoint": {"every": 0},
}


@pytest.fixture(scope="module")
def round1(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    (tmp / "base.yaml").write_text(yaml.safe_dump(BASE))
    cfg = S.SwarmConfig.model_validate({
        "name": "v", "base": str(tmp / "base.yaml"), "variants": 5, "seed": 1,
        "sampling": {"concentration": 4.0, "min_weight": 0.05}, "launch": {"workers": 1},
        "eval": {"tasks": ["toyworld_prose_bpb"], "limit": 4}})
    sw = S.generate(cfg, tmp / "swarm")
    S.run(sw)
    col = S.collect(sw)
    fit(col.ratios, col.metrics, "linear", out=tmp / "fit", folds=2,
        fit_metrics=["bpb/arithmetic", "bpb/people", "bpb/prose", "toyworld_prose_bpb/bpb"])
    pcfg = ProposeConfig(fit=str(tmp / "fit"), objective={"bpb/arithmetic": {"weight": 1}, "bpb/prose": {"weight": 1}},
                         within="hull", search={"samples": 200})
    propose(tmp / "fit", pcfg, tmp / "proposal")
    v = V.verify(sw, tmp / "proposal", tmp / "r1")
    return tmp, sw, v


def test_prediction_is_registered_with_its_hash_and_matches_the_fit(round1):
    tmp, sw, v = round1
    rec = json.loads((tmp / "r1" / V.PREDICTION).read_text())
    assert rec["sha256"] == V._sha(rec["prediction"]) == v["prediction_sha256"]
    assert set(rec["prediction"]["runs"]) == {f"{a}-s{s}" for a in V.ARMS for s in (1, 2)}
    res = load_fit(tmp / "fit")
    prop = json.loads((tmp / "proposal" / "proposal.json").read_text())
    x = np.array([[prop["weights"][d] for d in res.model.domains]])
    pred = res.model.predict(x)[0]
    arm = rec["prediction"]["arms"]["proposal"]
    for j, m in enumerate(res.model.metrics):
        assert arm["predicted"][m]["predicted"] == pytest.approx(pred[j])
        lo, hi = arm["predicted"][m]["band95"]
        assert lo < pred[j] < hi
    # the proposal's own objective, as propose reported it, is what was registered
    assert arm["predicted_objective"]["predicted"] == pytest.approx(prop["objective"]["predicted"])
    assert arm["predicted_objective"]["seed_std"] is None  # no repeats in this swarm: the out-of-fold band alone
    # the registered mixtures were trained: each run's config has the arm's mixture and its seed
    for run, r in rec["prediction"]["runs"].items():
        c = yaml.safe_load((tmp / "r1" / "runs" / run / "config.yaml").read_text())
        assert c["seed"] == r["seed"]
        assert c["data"]["mixture"] == pytest.approx(rec["prediction"]["arms"][r["arm"]]["weights"])


def test_realized_values_and_verdict_are_the_runs_measurements(round1):
    tmp, sw, v = round1
    o = v["objective"]
    coef = np.array([o["weights"][m] * (1 if o["directions"][m] == "min" else -1) / s
                     for m, s in zip(v["metrics"], o["stds"])])
    per_arm = {}
    for a, x in v["arms"].items():
        objs = []
        for run in x["runs"]:
            meta = json.loads((tmp / "r1" / "runs" / run / "meta.json").read_text())
            y = np.array([x["realized"][m]["per_seed"][x["runs"].index(run)] for m in v["metrics"]])
            for m in ("bpb/arithmetic", "bpb/prose"):
                assert x["realized"][m]["per_seed"][x["runs"].index(run)] == pytest.approx(meta["final_metrics"][m])
            objs.append(float((y - np.array(o["means"])) @ coef))
        assert x["realized_objective"]["per_seed"] == pytest.approx(objs)
        per_arm[a] = np.mean(objs)
        lo, hi = x["predicted_objective"]["band95"]
        assert x["realized_objective"]["covered"] == (lo <= per_arm[a] <= hi)
    vd = v["verdict"]
    assert vd["improvement_over_natural"] == pytest.approx(per_arm["natural"] - per_arm["proposal"])
    assert vd["regret"] == pytest.approx(per_arm["proposal"] - min(per_arm.values())) and vd["regret"] >= 0
    sds = [np.std(v["arms"][a]["realized_objective"]["per_seed"], ddof=1) for a in V.ARMS
           if a not in vd["same_mixture"]]
    assert vd["noise_floor"] == pytest.approx(1.96 * np.sqrt(np.mean(np.square(sds))) * np.sqrt(2 / 2))
    assert vd["beats_natural_beyond_noise"] == (vd["improvement_over_natural"] > vd["noise_floor"])
    assert (tmp / "r1" / "verify.png").stat().st_size > 10_000


def test_resume_retrains_nothing_and_an_edited_prediction_is_refused(round1):
    tmp, sw, v = round1
    stamp = {r: (tmp / "r1" / "runs" / r / "meta.json").stat().st_mtime_ns for r in v["arms"]["proposal"]["runs"]}
    again = V.verify(sw, tmp / "proposal", tmp / "r1")
    assert again["verdict"] == v["verdict"]
    assert stamp == {r: (tmp / "r1" / "runs" / r / "meta.json").stat().st_mtime_ns for r in stamp}
    hist = [json.loads(line) for line in (sw / V.HISTORY).read_text().splitlines()]
    assert len(hist) == 1  # the same round is one row, however often it is resumed
    with pytest.raises(MixlabError, match="registered for another round"):
        V.verify(sw, tmp / "proposal", tmp / "r1", seeds=[5, 6])
    p = tmp / "r1" / V.PREDICTION
    text = p.read_text()
    rec = json.loads(text)
    rec["prediction"]["arms"]["proposal"]["predicted_objective"]["predicted"] -= 1.0
    p.write_text(json.dumps(rec))
    try:
        with pytest.raises(MixlabError, match="edited after it was registered"):
            V.verify(sw, tmp / "proposal", tmp / "r1")
    finally:
        p.write_text(text)


def test_a_second_round_fits_on_next_and_appends_to_the_history(round1):
    tmp, sw, v = round1
    nxt = Path(v["next"])
    res = fit(nxt / "ratios.csv", nxt / "metrics.csv", "linear", out=tmp / "fit2", folds=2)
    assert len(res.data.runs) == 5 + 6 and res.priors_source == str(nxt / "priors.json")
    propose(tmp / "fit2", ProposeConfig(fit=str(tmp / "fit2"), objective={"bpb/prose": {"weight": 1}},
                                        within="hull", search={"samples": 200}), tmp / "proposal2")
    v2 = V.verify(sw, tmp / "proposal2", tmp / "r2", seeds=[3])
    assert v2["verdict"]["noise_floor"] is None and v2["verdict"]["beats_natural_beyond_noise"] is None
    rows = [json.loads(line) for line in (sw / V.HISTORY).read_text().splitlines()]
    assert [r["fit_runs"] for r in rows] == [5, 11] and v2["history"]["round"] == 2
    csv_lines = (sw / V.HISTORY).with_suffix(".csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith("round,")


def test_domain_effects_recover_a_known_linear_mixture_law():
    from mixlab.mixopt.effects import domain_effects, interactions

    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=60)
    b = np.array([1.0, 2.0, 4.0])
    y = X @ b + rng.normal(0, 0.01, size=60)
    p = np.array([0.5, 0.3, 0.2])
    eff = domain_effects(X, y[:, None], ["a", "b", "c"], ["loss"], p)
    want = 0.1 * (b - b @ p) / (1 - p) / y.std()
    np.testing.assert_allclose(eff["effect"][0], want, atol=0.005)  # b's effect is ~0.03: b is near b . p
    assert eff["p"][0][0] < 1e-6 and eff["p"][0][2] < 1e-6 and eff["df"] == 57
    # a real interaction between a and c, none between the others
    y2 = X @ b + 3.0 * X[:, 0] * X[:, 2] + rng.normal(0, 0.01, size=60)
    inter = interactions(X, y2, ["a", "b", "c"])
    assert inter["coef"][0][2] == pytest.approx(3.0 / y2.std(), rel=0.05) and inter["p"][0][2] < 1e-6
    assert inter["p"][0][1] > 0.01 and inter["p"][1][2] > 0.01
    assert interactions(X[:8], y2[:8], ["a", "b", "c"]) is None  # 6 parameters need 9 runs


def test_fit_and_proposal_directories_hold_the_plots_and_the_html_report(round1):
    import base64
    import re

    tmp, sw, v = round1
    eff = json.loads((tmp / "fit" / "effects.json").read_text())
    assert eff["effects"]["domains"] == ["arithmetic", "people", "prose"]
    assert np.array(eff["effects"]["effect"]).shape == (4, 3)
    for d, figs in ((tmp / "fit", ("predicted_vs_actual.png", "effects.png")), (tmp / "proposal", ("proposal.png",))):
        page = (d / "report.html").read_text()
        imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
        embedded = {base64.b64decode(i) for i in imgs}
        assert {(d / f).read_bytes() for f in figs} <= embedded
        assert "http" not in page and "<script" not in page


def test_the_registered_band_adds_the_repeats_seed_noise_for_a_mean_of_fresh_seeds():
    """Runs outside the repeats share the base seed, so the fitted level carries its offset: the band of a
    k-seed mean adds var(x) (1 + 1/k) to the out-of-fold error, var from the repeats at that mixture."""
    from mixlab.mixopt import io
    from mixlab.mixopt.fit import fit_swarm
    from mixlab.mixopt.noise import NoiseModel
    from mixlab.mixopt.propose import Objective

    rng = np.random.default_rng(3)
    X = rng.dirichlet(np.ones(3), size=24)
    X = np.vstack([X, np.repeat(X[:3], 2, axis=0)])            # 3 anchors x 3 runs
    sd = np.array([0.01, 0.05, 0.1])[np.argmax(X, axis=1)]      # noise differs by the dominant domain
    Y = np.column_stack([1 + X @ [0.5, 1.0, 2.0] + rng.normal(0, sd), 2 - X @ [1.0, 0.2, 0.1] + rng.normal(0, sd)])
    runs = [f"r{i:02d}" for i in range(len(X))]
    res = fit_swarm(io.SwarmData(runs, runs, ["a", "b", "c"], X, ["l1", "l2"], Y), "linear", folds=4)
    obj = Objective.build(res.model.metrics, res.data.metrics, {"l1": 1.0, "l2": 0.5}, {"l1": "min", "l2": "min"})
    x = np.array([0.2, 0.3, 0.5])
    nm = NoiseModel.estimate(res.data.weights, res.data.metrics, ["l1", "l2"])
    for k in (2, 4):
        per, o = V._predict(res, obj, x, k)
        for j, m in enumerate(("l1", "l2")):
            var = float(nm.predict_var(x[None, :])[0, j])
            assert per[m]["seed_std"] == pytest.approx(var ** 0.5)
            assert per[m]["std"] ** 2 == pytest.approx(per[m]["oof_rmse_near"] ** 2 + var * (1 + 1 / k))
            lo, hi = per[m]["band95"]
            assert hi - lo == pytest.approx(2 * 1.96 * per[m]["std"])
        y_obj = obj.value(res.data.metrics)
        ov = float(NoiseModel.estimate(res.data.weights, y_obj[:, None], ["objective"]).predict_var(x[None, :])[0, 0])
        assert o["std"] ** 2 == pytest.approx(o["oof_rmse_near"] ** 2 + ov * (1 + 1 / k))
    # the noise at the anchors is what their runs' spread says (within the model's smoothing)
    anchor_sd = [np.std(obj.value(Y[[i, 24 + 2 * i, 25 + 2 * i]]), ddof=1) for i in range(3)]
    seed_sd = [V._predict(res, obj, X[i], 2)[1]["seed_std"] for i in range(3)]
    assert min(anchor_sd) / 10 < min(seed_sd) and max(seed_sd) < 10 * max(anchor_sd)


def test_a_proposal_made_from_a_relative_fit_path_is_verifiable_from_another_folder(round1, tmp_path, monkeypatch):
    tmp, sw, v = round1
    monkeypatch.chdir(tmp)
    propose("fit", ProposeConfig(fit="fit", objective={"bpb/prose": {"weight": 1}}, within="hull",
                                 search={"samples": 200}), tmp_path / "p")
    rec = json.loads((tmp_path / "p" / "proposal.json").read_text())
    assert rec["fit"] == str((tmp / "fit").resolve())
    monkeypatch.chdir(tmp_path)
    prop, fit_res, fdir = V._load_proposal(tmp_path / "p", None)
    assert fdir == tmp / "fit" and fit_res.model.domains == ["arithmetic", "people", "prose"]


def test_the_arms_of_a_reuse_proposal_are_leaf_mixtures_and_map_back_onto_the_fit():
    """A frozen-reuse proposal has weights over (existing, e) and leaf_weights over (a, b, e): verify
    trains the leaves (its best observed run expanded with the frozen split) and predicts at the groups."""
    from types import SimpleNamespace

    from mixlab.mixopt.reuse import plan_reuse

    h = plan_reuse({"a": 0.5, "b": 0.3, "c": 0.2}, "p", ["a", "b", "e"]).hierarchy()  # a:b frozen at 5:3
    prop = {"weights": {"existing": 0.8, "e": 0.2}, "leaf_weights": {"a": 0.5, "b": 0.3, "e": 0.2},
            "hierarchy": h.as_json(), "best_observed": {"run": "u01", "weights": {"existing": 0.6, "e": 0.4}}}
    info = {"domains": ["a", "b", "e"], "min_weight": dict.fromkeys("abe", 0.0),
            "max_weight": dict.fromkeys("abe", 1.0), "priors": {"a": 0.4, "b": 0.4, "e": 0.2}}
    arms = V._arms(prop, info, Path("swarm"))
    assert arms["proposal"]["weights"] == {"a": 0.5, "b": 0.3, "e": 0.2}
    assert arms["best_observed"]["weights"] == pytest.approx({"a": 0.375, "b": 0.225, "e": 0.4})
    fit_ = SimpleNamespace(hierarchy=h, model=SimpleNamespace(domains=["e", "existing"]))
    np.testing.assert_allclose(V.fit_point(fit_, arms["best_observed"]["weights"]), [0.4, 0.6])
    # a pooled fit: retired columns at 0
    pooled = SimpleNamespace(hierarchy=None, model=SimpleNamespace(domains=["a", "b", "c@previous", "e"]))
    np.testing.assert_allclose(V.fit_point(pooled, {"a": 0.5, "b": 0.3, "e": 0.2}), [0.5, 0.3, 0.0, 0.2])
