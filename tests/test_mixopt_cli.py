"""`mixlab fit | predict | propose` end to end on a small synthetic swarm, through the example configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from mixlab.cli.mixopt import register
from mixlab.mixopt import io

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mixopt"
DOMS = ["web", "code", "math", "books"]
T_LOSS = np.array([-1.0, 0.2, -2.0, -0.5])


@pytest.fixture(scope="module")
def app():
    a = typer.Typer()
    register(a)
    return a


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    d = tmp_path_factory.mktemp("swarm")
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(4) * 2, size=40)
    loss = 2.0 + np.exp(W @ T_LOSS) + rng.normal(0, 0.005, 40)
    acc = 0.2 + 0.3 * W[:, 1] + rng.normal(0, 0.005, 40)
    runs = [f"run{i:02d}" for i in range(40)]
    io.write_ratios(d / "ratios.csv", runs, runs, DOMS, W)
    io.write_metrics(d / "metrics.csv", runs, runs, ["web_bpb", "arc_easy_acc"], np.column_stack([loss, acc]))
    return d


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_fit_predict_propose(app, swarm, tmp_path):
    r = CliRunner()
    fit_dir = tmp_path / "fit"
    _ok(r.invoke(app, ["fit", "--ratios", str(swarm / "ratios.csv"), "--metrics", str(swarm / "metrics.csv"),
                       "--regressor", "loglinear", "--folds", "4", "--out", str(fit_dir)]))
    cv = json.loads((fit_dir / "cv.json").read_text())
    assert cv["per_metric"]["web_bpb"]["spearman"] > 0.95
    assert cv["per_metric"]["arc_easy_acc"]["direction"] == "max"
    assert (fit_dir / "predicted_vs_actual.png").stat().st_size > 1000

    _ok(r.invoke(app, ["predict", "--fit", str(fit_dir), "--ratios", str(swarm / "ratios.csv"),
                       "--out", str(tmp_path / "pred.csv")]))
    pred = io.read_metrics(tmp_path / "pred.csv")
    assert pred.columns == ["web_bpb", "arc_easy_acc"] and len(pred.runs) == 40

    out = tmp_path / "prop"
    _ok(r.invoke(app, ["propose", "--fit", str(fit_dir), "--out", str(out), "--weight", "arc_easy_acc=0",
                       "--max-weight", "math=0.5", "--min-weight", "0.05"]))
    p = json.loads((out / "proposal.json").read_text())
    w = p["weights"]
    assert set(w) == set(DOMS) and sum(w.values()) == pytest.approx(1.0)
    assert w["math"] == pytest.approx(0.5, abs=1e-6)  # the loss wants math most, capped at 0.5
    assert min(w.values()) >= 0.05 - 1e-9
    o = p["objective"]
    assert o["band95"][0] < o["predicted"] < o["band95"][1]
    assert o["expected_realized"] >= o["predicted"]
    assert p["solver"]["method"] == "slsqp-exact"


def test_fit_from_example_config_and_bad_input(app, swarm, tmp_path):
    r = CliRunner()
    res = r.invoke(app, ["fit", str(CONFIGS / "fit.yaml"), "--out", str(tmp_path / "f"),
                         "--set", f"ratios={swarm / 'ratios.csv'}", "--set", f"metrics={swarm / 'metrics.csv'}"])
    # the example's priors name web/code/math/books, and the swarm has exactly those domains
    _ok(res)
    res = r.invoke(app, ["fit", str(CONFIGS / "fit.yaml"), "--out", str(tmp_path / "g"),
                         "--set", f"ratios={swarm / 'ratios.csv'}", "--set", f"metrics={swarm / 'metrics.csv'}",
                         "--set", "priors={web: 1.0}"])
    assert res.exit_code != 0 and "not in the priors" in str(res.exception)
    res = r.invoke(app, ["propose", "--fit", str(tmp_path / "f"), "--out", str(tmp_path / "p"), "--min-weight", "0.3"])
    assert res.exit_code != 0 and "cannot all hold" in str(res.exception)


def test_example_propose_configs_validate(swarm):
    from mixlab.mixopt.fit import FinetuneConfig, ProposeConfig, load_propose_config

    assert isinstance(load_propose_config(CONFIGS / "propose.yaml"), ProposeConfig)
    assert isinstance(load_propose_config(CONFIGS / "finetune.yaml"), FinetuneConfig)


def test_predict_rejects_other_domains(app, swarm, tmp_path):
    from mixlab.errors import DataError
    from mixlab.mixopt.fit import fit, predict

    f = fit(swarm / "ratios.csv", swarm / "metrics.csv", "linear", tmp_path / "f", folds=3)
    io.write_ratios(tmp_path / "new.csv", ["n"], ["n"], ["web", "code", "math", "poetry"], np.array([[0.1, 0.2, 0.3, 0.4]]))
    with pytest.raises(DataError, match=r"new\.csv:1: domains differ.*unknown column\(s\) \['poetry'\]; missing column\(s\) \['books'\]"):
        predict(f, tmp_path / "new.csv")


def test_propose_reports_real_priors_objective_in_metric_units_and_support(app, swarm, tmp_path):
    r = CliRunner()
    d = tmp_path / "swarm"
    d.mkdir()
    for name in ("ratios.csv", "metrics.csv"):
        (d / name).write_text((swarm / name).read_text())
    priors = {"web": 0.6, "code": 0.2, "math": 0.1, "books": 0.1}
    (d / "priors.json").write_text(json.dumps({"domains": DOMS, "priors": priors}))  # as `swarm generate` writes it
    _ok(r.invoke(app, ["fit", "--ratios", str(d / "ratios.csv"), "--metrics", str(d / "metrics.csv"),
                       "--folds", "4", "--out", str(tmp_path / "fit")]))
    assert json.loads((tmp_path / "fit" / "fit.json").read_text())["priors_source"] == str(d / "priors.json")

    res = _ok(r.invoke(app, ["propose", "--fit", str(tmp_path / "fit"), "--out", str(tmp_path / "p"),
                             "--weight", "arc_easy_acc=0"]))
    p = json.loads((tmp_path / "p" / "proposal.json").read_text())
    assert p["prior"]["source"] == str(d / "priors.json") and p["prior"]["weights"] == pytest.approx(priors)
    assert f"prior: {d / 'priors.json'}" in res.stdout
    m = io.read_metrics(d / "metrics.csv")
    loss = m.select(["web_bpb"])[:, 0]
    best = int(np.argmin(loss))  # only web_bpb weighs, to be lowered: the best run is the lowest loss
    assert p["best_observed"]["run"] == m.runs[best]
    w = p["metrics"]["web_bpb"]
    assert (w["weight"], w["direction"], p["metrics"]["arc_easy_acc"]["weight"]) == (1.0, "min", 0.0)
    assert w["best_observed"] == loss[best] and w["swarm_mean"] == pytest.approx(loss.mean())
    assert w["swarm_std"] == pytest.approx(loss.std())
    io.write_ratios(tmp_path / "x.csv", ["x"], ["x"], list(p["weights"]), np.array([list(p["weights"].values())]))
    from mixlab.mixopt.fit import predict

    assert w["predicted"] == pytest.approx(predict(tmp_path / "fit", tmp_path / "x.csv").values[0, 0], rel=1e-12)
    assert p["objective"]["predicted"] == pytest.approx((w["predicted"] - w["swarm_mean"]) / w["swarm_std"])
    assert "objective in metric units" in res.stdout and "arc_easy_acc" not in res.stdout.split("objective in")[1]
    x = np.array(list(p["weights"].values()))
    X = io.read_ratios(tmp_path / "fit" / "ratios.csv").select(list(p["weights"]))
    assert p["support"]["max_excess"] == pytest.approx(max(0.0, float(np.max(x - X.max(axis=0)))), abs=1e-12)

    # a trust region of 0.1 around the best run: the proposal moves at most 0.1 of the mixture
    _ok(r.invoke(app, ["propose", "--fit", str(tmp_path / "fit"), "--out", str(tmp_path / "t"),
                       "--weight", "arc_easy_acc=0", "--within", "trust:0.1"]))
    t = json.loads((tmp_path / "t" / "proposal.json").read_text())
    bw = np.array([t["best_observed"]["weights"][k] for k in t["weights"]])
    assert 0.5 * np.abs(np.array(list(t["weights"].values())) - bw).sum() == pytest.approx(0.1, abs=1e-7)
    assert t["objective"]["predicted"] < t["best_observed"]["predicted_objective"]


def test_fit_reads_an_olmix_priors_file(app, swarm, tmp_path):
    pj = tmp_path / "olmix_priors.json"
    pj.write_text(json.dumps({"relative_sizes": {"web": 3, "code": 1, "math": 0.5, "books": 0.5},
                              "total_tokens": 10, "token_counts": {}}))
    _ok(CliRunner().invoke(app, ["fit", "--ratios", str(swarm / "ratios.csv"), "--metrics", str(swarm / "metrics.csv"),
                                 "--priors", str(pj), "--regressor", "linear", "--folds", "3", "--out", str(tmp_path / "f")]))
    info = json.loads((tmp_path / "f" / "fit.json").read_text())
    assert info["priors"] == {"web": 3.0, "code": 1.0, "math": 0.5, "books": 0.5} and info["priors_source"] == str(pj)


def test_predict_names_a_domain_spelled_differently(app, swarm, tmp_path):
    from mixlab.errors import DataError
    from mixlab.mixopt.fit import fit, predict

    f = fit(swarm / "ratios.csv", swarm / "metrics.csv", "linear", folds=3)
    io.write_ratios(tmp_path / "new.csv", ["n"], ["n"], ["Web", "code", "math", "books"], np.array([[0.1, 0.2, 0.3, 0.4]]))
    with pytest.raises(DataError, match=r"`Web` looks like `web` spelled differently; rename the column"):
        predict(f, tmp_path / "new.csv")


@pytest.mark.parametrize("width", [80, 60])
def test_fit_table_never_cuts_two_metric_names_into_the_same_string(app, swarm, tmp_path, monkeypatch, width):
    """toyworld-style names share a 27-character prefix; at 80 columns each is printed whole, at 60 a
    name folds onto a second line, and no name is cut to an ellipsis."""
    names = ["toyworld_arithmetic_bpb/bpb", "toyworld_arithmetic_bpb/bpb_corpus"]
    m = io.read_metrics(swarm / "metrics.csv")
    io.write_metrics(tmp_path / "metrics.csv", m.runs, m.names, names, m.values)
    # the width through the environment: setting console.width would pin it for every later test
    # (monkeypatch restores the setter with the width it read, not with "follow the terminal")
    monkeypatch.setenv("COLUMNS", str(width))
    out = _ok(CliRunner().invoke(app, ["fit", "--ratios", str(swarm / "ratios.csv"), "--metrics",
                                       str(tmp_path / "metrics.csv"), "--folds", "3", "--out", str(tmp_path / "fit")]))
    table = out.output.split("out-of-fold")[1]
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= width
    if width == 80:
        assert all(f"{n} " in table for n in names)
    else:  # folded: the rows' first cells joined back give the two names
        cells = "".join(line.split(" ")[0] for line in table.splitlines()[3:])
        assert names[0] + names[1] in cells


def test_set_overrides_apply_without_a_config_file(app, swarm, tmp_path):
    """`--set` works with --ratios/--metrics (fit) and --fit (propose) as with a config, and a typo is an error."""
    r = CliRunner()
    args = ["fit", "--ratios", str(swarm / "ratios.csv"), "--metrics", str(swarm / "metrics.csv"), "--folds", "3"]
    _ok(r.invoke(app, [*args, "--set", "fit_metrics=[web_bpb]", "--out", str(tmp_path / "fit")]))
    assert list(json.loads((tmp_path / "fit" / "cv.json").read_text())["per_metric"]) == ["web_bpb"]
    bad = r.invoke(app, [*args, "--set", "bogus=1", "--out", str(tmp_path / "fit_bad")])
    assert bad.exit_code != 0 and "bogus" in str(bad.exception) and not (tmp_path / "fit_bad").exists()
    _ok(r.invoke(app, ["propose", "--fit", str(tmp_path / "fit"), "--set", "within=hull", "--out", str(tmp_path / "p")]))
    assert json.loads((tmp_path / "p" / "proposal.json").read_text())["within"] == "hull"
    bad = r.invoke(app, ["propose", "--fit", str(tmp_path / "fit"), "--set", "bogus=1", "--out", str(tmp_path / "p2")])
    assert bad.exit_code != 0 and "bogus" in str(bad.exception)
