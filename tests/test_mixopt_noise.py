"""Mixture-dependent noise: repeats found and folded together, the noise model's numbers, weighted fits
that recover a law better under heteroscedastic noise, the noise floor in cv.json, the proposal's
noise check, and a swarm that generates its repeats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from scipy.special import digamma, polygamma

from mixlab.mixopt import io
from mixlab.mixopt import swarm as S
from mixlab.mixopt.fit import ProposeConfig, fit_swarm, load_fit, propose, write_fit
from mixlab.mixopt.noise import NoiseModel, farthest_point, improvement_check, repeat_groups
from mixlab.mixopt.regressors import LogLinearLaw, fold_ids, group_fold_ids, make_regressor

T = np.array([-2.0, -1.0, 0.5, 0.2])


def test_repeat_groups_and_farthest_point():
    X = np.array([[0.25] * 4, [0.7, 0.1, 0.1, 0.1], [0.25 + 2e-4, 0.25 - 2e-4, 0.25, 0.25], [0.1, 0.1, 0.1, 0.7]])
    np.testing.assert_array_equal(repeat_groups(X), [0, 1, 0, 2])
    # from row 0 the farthest is row 1 or 3 (TV 0.45 both: the first wins), then the other one
    assert farthest_point(X, 3, first=0) == [0, 1, 3]


def test_group_folds_keep_repeats_together_and_equal_plain_folds_without_repeats():
    np.testing.assert_array_equal(group_fold_ids(np.arange(20), 5, 3), fold_ids(20, 5, 3))
    groups = np.array([0, 1, 2, 0, 3, 4, 0, 5, 6, 1])
    ids = group_fold_ids(groups, 3, 0)
    for g in np.unique(groups):
        assert len(set(ids[groups == g])) == 1


def test_noise_model_is_exact_at_anchors_and_blends_between():
    anchors = np.array([[1.0, 0.0], [0.0, 1.0]])
    X = np.repeat(anchors, 3, axis=0)
    Y = np.array([[1.0], [1.1], [0.9], [1.0], [2.0], [3.0]])  # variances 0.01 and 1.0
    nm = NoiseModel.estimate(X, Y, ["m"], model="idw")
    np.testing.assert_allclose(nm.var[:, 0], [0.01, 1.0])
    np.testing.assert_allclose(nm.predict_var(anchors)[:, 0], [0.01, 1.0])
    np.testing.assert_allclose(nm.predict_var([[0.5, 0.5]])[0, 0], 0.1)  # geometric mean midway
    assert nm.floor()["m"] == pytest.approx({"noise_sd": np.sqrt(0.505), "noise_sd_min": 0.1, "noise_sd_max": 1.0})
    assert NoiseModel.estimate(anchors, Y[:2], ["m"]) is None  # nothing repeated


def _anchors_with_known_variance(seed: int, a: int, k: int, slope: np.ndarray, level: float = 1e-4):
    """``a`` anchors x ``k`` repeats whose noise variance is ``level * exp(x . slope)`` exactly."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(len(slope)), size=a)
    X = np.repeat(A, k, axis=0)
    var = level * np.exp(X @ slope)
    return X, (2.5 + rng.normal(0, np.sqrt(var)))[:, None], lambda Z: level * np.exp(np.asarray(Z) @ slope)


def test_ridge_noise_model_recovers_a_known_log_linear_variance():
    slope = np.array([4.0, -4.0, 0.0, 0.0])  # variance spans e^8 ~ 3000x over the simplex
    X, Y, true_var = _anchors_with_known_variance(0, 60, 4, slope)
    nm = NoiseModel.estimate(X, Y, ["m"])
    assert nm.model == "ridge"
    Z = np.random.default_rng(1).dirichlet(np.ones(4), size=200)
    err = np.log(nm.predict_var(Z)[:, 0] / true_var(Z))
    assert np.median(np.abs(err)) < 0.35 and np.corrcoef(np.log(nm.predict_var(Z)[:, 0]), np.log(true_var(Z)))[0, 1] > 0.9
    again = NoiseModel.from_state(json.loads(json.dumps(nm.state())))
    np.testing.assert_allclose(again.predict_var(Z), nm.predict_var(Z))


def test_ridge_noise_model_is_unbiased_for_a_constant_variance_and_shrinks_few_anchors_to_it():
    # constant variance 1e-4 from 400 anchors x 3 repeats: the bias-corrected log variance averages to log 1e-4
    X, Y, _ = _anchors_with_known_variance(2, 400, 3, np.zeros(4))
    nm = NoiseModel.estimate(X, Y, ["m"])
    v = nm.predict_var(X[:1])[0, 0]
    assert v == pytest.approx(1e-4, rel=0.15)  # the plain mean of log s^2 (k = 3) is 0.577 lower: 0.56e-4
    assert np.exp(np.log(nm.var[:, 0]).mean()) == pytest.approx(1e-4 * np.exp(-np.euler_gamma), rel=0.15)
    # 3 anchors x 3 repeats of a 3000x variance: the prediction stays within RIDGE_MAX_RATIO of the centre
    X, Y, _ = _anchors_with_known_variance(3, 3, 3, np.array([8.0, -8.0, 0.0, 0.0]))
    nm = NoiseModel.estimate(X, Y, ["m"])
    Z = np.eye(4)
    w = nm.weights(Z)[:, 0]
    assert w.max() / w.min() <= 100.0 * (1 + 1e-9)


def _hetero(seed: int, n: int = 80):
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(4), size=n)
    sd = 0.002 * np.exp(6 * X[:, 0])  # 400x from one corner to the other
    return X, 2.5 + np.exp(X @ T) + rng.normal(0, sd), sd


def test_weighted_loglinear_recovers_the_law_better_under_heteroscedastic_noise():
    errs = {"weighted": [], "unweighted": []}
    for seed in range(4):
        X, y, sd = _hetero(seed)
        for name, w in (("weighted", 1 / sd**2), ("unweighted", None)):
            errs[name].append(np.abs(LogLinearLaw().fit(X, y, w).exponents() - T).max())
    assert np.mean(errs["weighted"]) < 0.7 * np.mean(errs["unweighted"])  # measured: 0.036 vs 0.071


@pytest.mark.parametrize("name", ["linear", "gbt", "gp", "mixing_law"])
def test_every_regressor_takes_weights_and_saves_them(name):
    X, y, sd = _hetero(0, 40)
    w = 1 / sd**2
    r = make_regressor(name).fit(X, y, w)
    plain = make_regressor(name).fit(X, y)
    assert not np.allclose(r.predict(X), plain.predict(X))
    again = type(r).from_state(json.loads(json.dumps(r.state())))
    np.testing.assert_allclose(again.predict(X), r.predict(X), rtol=1e-9)


def _swarm_with_repeats(seed=0):
    """30 mixtures, the first 3 repeated 3x; noise sd 0.004 near domain 0, 0.04 elsewhere."""
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(4), size=30)
    X[0], X[1], X[2] = [0.85, 0.05, 0.05, 0.05], [0.05, 0.85, 0.05, 0.05], [0.05, 0.05, 0.05, 0.85]
    X = np.vstack([X, np.repeat(X[:3], 2, axis=0)])
    sd = np.where(X[:, 0] > 0.5, 0.004, 0.04)
    Y = (2.5 + np.exp(X @ T) + rng.normal(0, sd))[:, None]
    runs = [f"r{i:02d}" for i in range(len(X))]
    return io.SwarmData(runs, runs, ["a", "b", "c", "d"], X, ["loss"], Y)


def test_fit_reports_the_noise_floor_weights_runs_and_saves_the_model(tmp_path):
    data = _swarm_with_repeats()
    res = fit_swarm(data, "loglinear", folds=5)
    Y, X = data.metrics[:, 0], data.weights
    sds = [Y[np.all(np.isclose(X, X[i]), axis=1)].std(ddof=1) for i in range(3)]
    pm = res.cv["per_metric"]["loss"]
    assert pm["noise_sd_min"] == pytest.approx(min(sds)) and pm["noise_sd_max"] == pytest.approx(max(sds))
    assert res.cv["noise"]["anchors"] == 3 and res.cv["noise"]["repeats"] == [3, 3, 3] and res.cv["noise"]["weighted"]
    plain = fit_swarm(data, "loglinear", folds=5, noise_weighting=False)
    assert not plain.cv["noise"]["weighted"]
    assert not np.allclose(res.model.predict(X), plain.model.predict(X))
    write_fit(res, tmp_path / "fit", {})
    back = load_fit(tmp_path / "fit")
    np.testing.assert_allclose(back.noise.predict_var(X), res.noise.predict_var(X))


def test_propose_says_whether_the_improvement_exceeds_the_noise(tmp_path):
    res = fit_swarm(_swarm_with_repeats(), "loglinear", folds=5)
    write_fit(res, tmp_path / "fit", {})
    out = propose(tmp_path / "fit", ProposeConfig(fit=str(tmp_path / "fit")))
    nz = out["noise"]
    assert nz["improvement"] == pytest.approx(out["best_observed"]["objective"] - out["objective"]["expected_realized"])
    assert nz["exceeds_noise"] == (nz["improvement"] > 1.96 * nz["noise_sd_difference"])
    assert improvement_check(0.0, -1.0, 0.3, 0.4)["exceeds_noise"]       # 1.0 > 1.96 x 0.5
    assert not improvement_check(0.0, -0.9, 0.3, 0.4)["exceeds_noise"]   # 0.9 < 0.98


def test_fit_without_repeats_says_noise_is_unknown():
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(4), size=20)
    runs = [f"r{i}" for i in range(20)]
    res = fit_swarm(io.SwarmData(runs, runs, list("abcd"), X, ["loss"], (2 + np.exp(X @ T))[:, None]), "linear", folds=4)
    assert res.cv["noise"]["anchors"] == 0 and res.noise is None


def test_swarm_generates_seed_repeats_of_far_apart_anchors(tmp_path):
    from tests.test_swarm import BASE

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(BASE))
    cfg = S.SwarmConfig.model_validate({"name": "t", "base": str(base), "variants": 6, "seed": 3,
                                        "priors": {"arithmetic": 0.4, "people": 0.3, "prose": 0.3},
                                        "repeats": {"anchors": 2, "k": 3}})
    d = S.generate(cfg, tmp_path / "swarm")
    _, names = S.load_swarm(d)
    req = io.read_ratios(d / "requested_ratios.csv")
    W = req.values[:6]
    far = farthest_point(W, 2, first=0)
    assert names == [f"v{i:03d}" for i in range(6)] + [f"v{far[0]:03d}r1", f"v{far[0]:03d}r2",
                                                        f"v{far[1]:03d}r1", f"v{far[1]:03d}r2"]
    np.testing.assert_array_equal(req.values[6], W[far[0]])
    seeds = [yaml.safe_load((d / "variants" / f"{n}.yaml").read_text())["seed"] for n in names[6:]]
    assert seeds == [1, 2, 1, 2]
    assert len(np.unique(repeat_groups(req.values))) == 6


def _few_anchors(seed: int, slope: np.ndarray, metrics: int = 3, a: int = 4, k: int = 3):
    """``a`` anchors x ``k`` repeats, ``metrics`` metrics with independent noise of variance
    ``1e-4 exp(x . slope)`` (the same pattern for every metric, as a run's seed noise would be)."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(len(slope)), size=a)
    X = np.repeat(A, k, axis=0)
    sd = np.sqrt(1e-4 * np.exp(X @ slope))
    return X, 2.5 + rng.normal(0, 1, size=(len(X), metrics)) * sd[:, None], lambda Z: 1e-4 * np.exp(np.asarray(Z) @ slope)


def test_fits_saved_with_the_fixed_ridge_penalty_load_as_before():
    X, Y, _ = _few_anchors(0, np.array([3.0, -3.0, 0.0, 0.0]), metrics=1)
    nm = NoiseModel.estimate(X, Y, ["m"])
    old = {k: v for k, v in nm.state().items() if k not in ("tau2_shared", "tau2_metric", "corr")} | {"ridge": 0.3}
    back = NoiseModel.from_state(old)
    assert back.ridge == 0.3 and back.tau2 is None
    # the old model: precision-weighted ridge with penalty 0.3 (all anchors k = 3: equal precisions)
    z = np.log(nm.var[:, 0]) - (digamma(1.0) - np.log(1.0))
    x0 = nm.anchors.mean(axis=0)
    A = nm.anchors - x0
    p = 1 / polygamma(1, 1.0)
    beta = np.linalg.solve(p * A.T @ A + 0.3 * np.eye(4), p * A.T @ (z - z.mean()))
    Z = np.eye(4)
    np.testing.assert_allclose(back.predict_var(Z)[:, 0], np.exp(z.mean() + np.clip((Z - x0) @ beta, -np.log(10), np.log(10))))
