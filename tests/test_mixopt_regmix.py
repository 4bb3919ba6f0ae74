"""fit -> predict -> propose on RegMix-shaped files, as sail-sg/regmix publishes them: a mixture file
``index,train_the_pile_<domain>...`` with 17 Pile domains printed to 3 decimals (so most rows sum to
0.996-1.004), a loss file ``index,metric/the_pile_<domain>_val_loss...`` in another row order, and a
held-out pair like RegMix's test split. The losses follow a known log-linear law of the exact mixtures,
so the fit's held-out ranking and the proposal's true loss can be checked against real thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from scipy.stats import spearmanr
from typer.testing import CliRunner

from mixlab.cli.mixopt import register
from mixlab.mixopt import io

# RegMix's 17 training domains, in the order of its data/train_mixture_1m.csv header
PILE = ["arxiv", "freelaw", "nih_exporter", "pubmed_central", "wikipedia_en", "dm_mathematics", "github",
        "philpapers", "stackexchange", "enron_emails", "gutenberg_pg_19", "pile_cc", "ubuntu_irc", "europarl",
        "hackernews", "pubmed_abstracts", "uspto_backgrounds"]
LOSSES = ["pile_cc", "github"]


def _law(W: np.ndarray) -> np.ndarray:
    """Validation loss of each target domain: 3 + exp(0.4 + w . t), lowest when its own domain dominates."""
    rng = np.random.default_rng(1)
    T = rng.normal(0, 0.5, size=(len(LOSSES), len(PILE)))
    for k, dom in enumerate(LOSSES):
        T[k, PILE.index(dom)] = -2.0
    return 3.0 + np.exp(0.4 + W @ T.T)


def _write_regmix(dir, n: int, seed: int, prefix: str):
    rng = np.random.default_rng(seed)
    prior = np.random.default_rng(0).dirichlet(np.ones(len(PILE)) * 2)
    conc = np.exp(rng.uniform(np.log(0.2), np.log(5), size=n))  # sparse to dense, as RegMix samples
    W = np.vstack([rng.dirichlet(np.maximum(prior * c * len(PILE), 1e-2)) for c in conc])
    Y = _law(W) + rng.normal(0, 0.01, size=(n, len(LOSSES)))
    Wr = np.round(W, 3)
    ratios = dir / f"{prefix}_mixture_1m.csv"
    ratios.write_text("index," + ",".join(f"train_the_pile_{d}" for d in PILE) + "\n"
                      + "".join(f"{i + 1}," + ",".join(f"{v:.3f}".rstrip("0").rstrip(".") if v else "0.0"
                                                        for v in Wr[i]) + "\n" for i in range(n)))
    order = rng.permutation(n)
    metrics = dir / f"{prefix}_pile_loss_1m.csv"
    metrics.write_text("index," + ",".join(f"metric/the_pile_{d}_val_loss" for d in LOSSES) + "\n"
                       + "".join(f"{i + 1}," + ",".join(repr(float(v)) for v in Y[i]) + "\n" for i in order))
    return ratios, metrics, W, Wr, Y


def _true_objective(p: dict, x: np.ndarray) -> float:
    """The proposal's objective (equal-weight z-scores over the swarm) of the law's TRUE losses at ``x``."""
    m = [p["metrics"][f"the_pile_{d}_val_loss"] for d in LOSSES]
    return float(np.mean([(y - s["swarm_mean"]) / s["swarm_std"] for y, s in zip(_law(x[None, :])[0], m)]))


@pytest.fixture(scope="module")
def app():
    a = typer.Typer()
    register(a)
    return a


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_regmix_files_fit_predict_propose(app, tmp_path):
    r_train, m_train, W, Wr, Y = _write_regmix(tmp_path, 320, 0, "train")
    r_test, _, W_test, _, _ = _write_regmix(tmp_path, 200, 1, "test")
    dev = np.abs(Wr.sum(axis=1) - 1)
    n_off = int((dev > io.EXACT_SUM).sum())
    assert 100 < n_off < 320 and dev.max() <= 0.0085  # rounding to 3 decimals: most rows are off, all by < 1%

    runner = CliRunner()
    fit_dir = tmp_path / "fit"
    res = _ok(runner.invoke(app, ["fit", "--ratios", str(r_train), "--metrics", str(m_train), "--out", str(fit_dir)]))
    assert f"renormalized {n_off} of 320 rows" in res.stderr
    cv = json.loads((fit_dir / "cv.json").read_text())
    ren = cv["ratios_renormalized"]
    assert ren["rows"] == n_off and ren["of"] == 320 and ren["worst"] == pytest.approx(dev.max(), abs=1e-12)
    assert ren["worst_line"] == int(np.argmax(dev)) + 2 and ren["worst_run"] == str(int(np.argmax(dev)) + 1)
    assert cv["per_metric"]["the_pile_pile_cc_val_loss"]["direction"] == "min"  # inferred from *_loss
    assert cv["aggregate"]["objective"]["spearman"] > 0.95
    assert min(cv["per_metric"][f"the_pile_{d}_val_loss"]["spearman"] for d in LOSSES) > 0.95
    fitted = io.read_ratios(fit_dir / "ratios.csv")
    assert fitted.columns == sorted(f"the_pile_{d}" for d in PILE) and fitted.renormalized is None

    # held-out mixtures, also rounded, in RegMix's layout: the fit ranks them as the law does
    pred_csv = tmp_path / "pred.csv"
    res = _ok(runner.invoke(app, ["predict", "--fit", str(fit_dir), "--ratios", str(r_test), "--out", str(pred_csv)]))
    assert "renormalized" in res.stderr
    pred = io.read_metrics(pred_csv)
    truth = _law(W_test)
    for k, dom in enumerate(LOSSES):
        got = pred.select([f"the_pile_{dom}_val_loss"])[:, 0]
        assert pred.runs == [str(i + 1) for i in range(200)]
        assert spearmanr(got, truth[:, k])[0] > 0.97

    # unrestricted, the law's optimum lies far outside the swarm: said, with a warning; inside the hull,
    # the proposal's TRUE loss is as good as the best observed run's (the hull contains that run)
    def proposal(*extra):
        out = tmp_path / f"prop{len(extra)}"
        res = _ok(runner.invoke(app, ["propose", "--fit", str(fit_dir), "--out", str(out), *extra]))
        p = json.loads((out / "proposal.json").read_text())
        x = np.array([p["weights"][f"the_pile_{d}"] for d in PILE])
        assert x.sum() == pytest.approx(1.0) and x.min() >= 0
        return res, p, _true_objective(p, x)

    res, p, z_any = proposal()
    assert p["support"]["hull_tv"] > 0.3 and p["support"]["outside"] and "warning: the proposal lies outside" in res.stderr
    assert p["prior"]["source"] == "swarm mean (no priors given)"
    # the table folds long metric names at the terminal width; proposal.json holds them whole
    assert "objective in metric units" in res.stdout
    # no domain is cut into a look-alike ("the_pile_pub…" for both PubMed sets): long names fold instead
    assert "…" not in res.stdout and "the_pile_pubmed_abstra" in res.stdout
    assert "the_pile_pile_cc_val_loss" in json.dumps(p["metrics"])
    best = int(p["best_observed"]["run"]) - 1
    z_best = _true_objective(p, W[best])
    res, p, z_hull = proposal("--within", "hull")
    assert p["support"]["hull_tv"] < 1e-6 and not p["support"]["outside"] and "warning" not in res.stderr
    assert z_hull <= z_best + 1e-3 and z_any < z_best - 0.5  # the log-linear law does extrapolate here
