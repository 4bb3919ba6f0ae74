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
