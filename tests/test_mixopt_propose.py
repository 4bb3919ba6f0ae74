"""Proposals: known optima of convex log-linear surfaces, constraints, infeasibility, fine-tuning mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixlab.errors import ConfigError, MixlabError
from mixlab.mixopt.fit import FinetuneConfig, propose_finetune
from mixlab.mixopt.propose import (
    ConstraintsConfig,
    Objective,
    Polytope,
    ProposeConfig,
    RepetitionConfig,
    best_under_bound,
    feasible_bounds,
    hull_distance,
    optimize_mixture,
    pareto_front,
    project,
    support,
    within_box,
)
from mixlab.mixopt.regressors import LogLinearLaw, MixtureModel, make_regressor

DOMS = ["a", "b", "c"]
A = 3.0
C = np.array([1.0, 2.0, 4.0])


def _separable_model() -> MixtureModel:
    """Metric j = exp(-A x_j); with objective weights C the optimum solves C_j A exp(-A x_j) = lambda."""
    models = {}
    for j in range(3):
        law = LogLinearLaw()
        law.c, law.sign, law.log_k, law.t = 0.0, 1.0, 0.0, -A * np.eye(3)[j]
        models[f"m{j}"] = law
    return MixtureModel("loglinear", DOMS, ["m0", "m1", "m2"], models)


def _objective() -> Objective:
    return Objective(["m0", "m1", "m2"], C / C.sum(), np.ones(3), np.zeros(3), np.ones(3))


def _kkt(free: list[int], total: float) -> np.ndarray:
    """Analytic optimum over the free domains sharing ``total``: x_j = total/k + (log C_j - mean log C)/A."""
    lc = np.log(C[free])
    return total / len(free) + (lc - lc.mean()) / A


def _solve(cons: ConstraintsConfig, **kw) -> np.ndarray:
    bounds = feasible_bounds(DOMS, cons)
    x, info = optimize_mixture(_separable_model(), _objective(), bounds, np.full(3, 1 / 3),
                               starts=np.empty((0, 3)), **kw)
    assert info["method"] == "slsqp-exact" and info["convex"]
    return x


def test_unconstrained_optimum():
    np.testing.assert_allclose(_solve(ConstraintsConfig()), _kkt([0, 1, 2], 1.0), atol=1e-5)


def test_max_weight_binds():
    x = _solve(ConstraintsConfig(max_weight={"c": 0.4}))
    assert x[2] == pytest.approx(0.4, abs=1e-9)
    np.testing.assert_allclose(x[:2], _kkt([0, 1], 0.6), atol=1e-5)


def test_min_weight_binds():
    x = _solve(ConstraintsConfig(min_weight=0.15))
    assert x[0] == pytest.approx(0.15, abs=1e-9)
    np.testing.assert_allclose(x[1:], _kkt([1, 2], 0.85), atol=1e-5)


def test_fixed_domain():
    x = _solve(ConstraintsConfig(fixed={"a": 0.2}))
    assert x[0] == pytest.approx(0.2, abs=1e-12)
    np.testing.assert_allclose(x[1:], _kkt([1, 2], 0.8), atol=1e-5)


def test_repetition_cap():
    rep = RepetitionConfig(target_tokens=100.0, max_epochs=2.0, available_tokens={"c": 15.0})  # c <= 0.3
    x = _solve(ConstraintsConfig(repetition=rep))
    assert x[2] == pytest.approx(0.3, abs=1e-9)
    np.testing.assert_allclose(x[:2], _kkt([0, 1], 0.7), atol=1e-5)


def test_kl_pull_towards_prior():
    prior = np.array([0.6, 0.3, 0.1])
    bounds = feasible_bounds(DOMS, ConstraintsConfig())
    x, _ = optimize_mixture(_separable_model(), _objective(), bounds, prior, starts=np.empty((0, 3)),
                            kl_to_prior=1e4)
    np.testing.assert_allclose(x, prior, atol=1e-3)
    x_mid, _ = optimize_mixture(_separable_model(), _objective(), bounds, prior, starts=np.empty((0, 3)),
                                kl_to_prior=0.1)
    free = _kkt([0, 1, 2], 1.0)
    assert np.linalg.norm(x_mid - prior) < np.linalg.norm(free - prior)


def _gp_problem():
    """A GP fitted to 80 runs of the separable surface, objective = that one metric, c <= 0.4."""
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=80)
    f = np.exp(-A * X) @ (C / C.sum())
    model = MixtureModel("gp", DOMS, ["f"], {"f": make_regressor("gp").fit(X, f)})
    obj = Objective(["f"], np.ones(1), np.ones(1), np.zeros(1), np.ones(1))
    return X, model, obj, feasible_bounds(DOMS, ConstraintsConfig(max_weight={"c": 0.4}))


def test_search_path_with_gp_finds_the_optimum():
    X, model, obj, bounds = _gp_problem()
    x, info = optimize_mixture(model, obj, bounds, np.full(3, 1 / 3), starts=X[:4], samples=2000, refine=4)
    assert info["method"] == "search+slsqp"
    assert x[2] <= 0.4 + 1e-9 and x.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(x, [*_kkt([0, 1], 0.6), 0.4], atol=0.03)


@pytest.mark.parametrize("cons, pattern", [
    (ConstraintsConfig(min_weight=0.4), r"minimum and fixed weights sum to 1\.2 > 1"),
    (ConstraintsConfig(max_weight=0.3), r"largest allowed weights sum to 0\.9 < 1"),
    (ConstraintsConfig(fixed={"a": 0.5}, max_weight={"a": 0.3}), r"fixed\.a = 0\.5 is outside"),
    (ConstraintsConfig(repetition=RepetitionConfig(target_tokens=100, max_epochs=1,
                                                   available_tokens={"a": 10, "b": 10, "c": 10})),
     r"c <= 0\.1 \(repetition cap 1 epochs x 10 tokens / 100 target tokens\)"),
    (ConstraintsConfig(max_weight={"web": 0.3}), r"unknown domain\(s\) \['web'\]"),
    (ConstraintsConfig(min_weight={"a": 0.5}, max_weight={"a": 0.2}), r"a: min 0\.5 > max 0\.2"),
])
def test_infeasible_constraints(cons, pattern):
    with pytest.raises(ConfigError, match=pattern):
        feasible_bounds(DOMS, cons)


def test_projection_is_feasible_and_idempotent():
    rng = np.random.default_rng(1)
    lo, hi = np.array([0.1, 0.0, 0.05]), np.array([0.5, 0.6, 0.3])
    P = project(rng.normal(size=(200, 3)), lo, hi)
    assert np.allclose(P.sum(axis=1), 1) and (P >= lo - 1e-12).all() and (P <= hi + 1e-12).all()
    np.testing.assert_allclose(project(P, lo, hi), P, atol=1e-12)


# ---------------------------------------------------------------- staying inside the swarm

# The swarm's convex hull of these three runs is {x : x_j >= 0.2}: the hull-constrained optimum is the
# min_weight=0.2 optimum, known in closed form (x_a = 0.2, the rest from the KKT conditions).
CORNERS = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])


def test_within_hull_known_optimum():
    bounds = feasible_bounds(DOMS, ConstraintsConfig())
    x, info = optimize_mixture(_separable_model(), _objective(), bounds, np.full(3, 1 / 3), starts=CORNERS[:1],
                               region=Polytope("hull", bounds, CORNERS))
    assert info["method"] == "simplicial-decomposition" and info["convex"]
    np.testing.assert_allclose(x, [0.2, *_kkt([1, 2], 0.8)], atol=1e-6)
    assert _kkt([0, 1, 2], 1.0)[0] < 0.2  # unconstrained, a would drop to 0.102: the hull binds
    capped = feasible_bounds(DOMS, ConstraintsConfig(max_weight={"a": 0.1}))  # every run has a >= 0.2
    with pytest.raises(ConfigError, match=r"within hull: no mixture within the swarm's convex hull satisfies"):
        optimize_mixture(_separable_model(), _objective(), capped, np.full(3, 1 / 3), starts=CORNERS,
                         region=Polytope("hull", capped, CORNERS))


def test_within_hull_with_constraints_and_a_gp():
    _, model, obj, bounds = _gp_problem()
    hull = CORNERS * 0.9 + 0.1 / 3  # x_j >= 0.2 * 0.9 + 0.0333 = 0.2133
    x, info = optimize_mixture(model, obj, bounds, np.full(3, 1 / 3), starts=hull, samples=2000, refine=4,
                               region=Polytope("hull", bounds, hull))
    assert info["method"] == "search+simplicial-decomposition"
    assert x[2] <= 0.4 + 1e-9 and x.min() >= 0.2133 - 1e-9 and hull_distance(x, hull) < 1e-9
    np.testing.assert_allclose(x, [0.2133, 0.3867, 0.4], atol=0.03)  # a at the hull, c at its cap


def test_trust_region_moves_exactly_r_of_mass():
    """One log-linear metric exp(x_a - x_c): from c = (0.5, 0.3, 0.2), the best step of total variation
    0.2 moves 0.2 from a to c: (0.3, 0.3, 0.4)."""
    law = LogLinearLaw()
    law.c, law.sign, law.log_k, law.t = 0.0, 1.0, 0.0, np.array([1.0, 0.0, -1.0])
    model = MixtureModel("loglinear", DOMS, ["m"], {"m": law})
    obj = Objective(["m"], np.ones(1), np.ones(1), np.zeros(1), np.ones(1))
    bounds = feasible_bounds(DOMS, ConstraintsConfig())
    centre = np.array([0.5, 0.3, 0.2])
    x, _ = optimize_mixture(model, obj, bounds, np.full(3, 1 / 3), starts=centre[None, :],
                            region=Polytope("trust", bounds, centre[None, :], centre, 0.2))
    np.testing.assert_allclose(x, [0.3, 0.3, 0.4], atol=1e-7)
    tight = feasible_bounds(DOMS, ConstraintsConfig(max_weight={"a": 0.3}))  # needs 0.2 of a moved: R=0.1 cannot
    with pytest.raises(ConfigError, match=r"within trust: no mixture within total-variation distance 0\.1 of the "
                                          r"best observed run satisfies the constraints"):
        optimize_mixture(model, obj, tight, np.full(3, 1 / 3), starts=centre[None, :],
                         region=Polytope("trust", tight, centre[None, :], centre, 0.1))


def test_within_box_narrows_to_the_observed_range():
    X = np.array([[0.5, 0.3, 0.2], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]])
    box = within_box(feasible_bounds(DOMS, ConstraintsConfig()), X)
    np.testing.assert_array_equal(box.lower, [0.2, 0.3, 0.2])
    np.testing.assert_array_equal(box.upper, [0.5, 0.5, 0.4])
    assert box.why_upper == ["swarm max"] * 3
    x, _ = optimize_mixture(_separable_model(), _objective(), box, np.full(3, 1 / 3), starts=X)
    # c wants 0.564: capped at its largest observed weight 0.4; then a would take 0.184 (KKT over a, b
    # sharing 0.6), below its smallest observed 0.2: both bind, and b takes the rest
    assert _kkt([0, 1], 0.6)[0] < 0.2
    np.testing.assert_allclose(x, [0.2, 0.4, 0.4], atol=1e-9)
    with pytest.raises(ConfigError, match=r"within box: .*a: min 0\.7 > max 0\.5"):
        within_box(feasible_bounds(DOMS, ConstraintsConfig(min_weight={"a": 0.7})), X)


def test_support_known_distances():
    X = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]])  # the hull is the segment a = 0.5
    out = support(np.array([1.0, 0.0, 0.0]), X, ["r1", "r2"], DOMS)
    assert out["hull_tv"] == pytest.approx(0.5) and out["nearest_run_tv"] == pytest.approx(0.5)
    assert out["max_excess"] == pytest.approx(0.5) and out["max_excess_domain"] == "a"
    assert out["swarm_median_nearest_tv"] == pytest.approx(0.5)
    assert out["outside"] and "a = 1.000 is 0.500 beyond its observed range [0.500, 0.500]" in out["warning"]
    inside = support(np.array([0.5, 0.3, 0.2]), X, ["r1", "r2"], DOMS)
    assert inside["hull_tv"] == pytest.approx(0.0, abs=1e-12) and inside["max_excess"] == 0.0
    assert inside["nearest_run"] == "r1" and inside["nearest_run_tv"] == pytest.approx(0.2)
    assert not inside["outside"] and inside["warning"] is None


@pytest.mark.parametrize("within", ["ball", "trust:0", "trust:1.5", "trust:", "hull:2"])
def test_within_is_validated(within):
    from mixlab.config import validate

    with pytest.raises(ConfigError, match=r"within.*expected any, box, hull or trust:R with 0 < R <= 1"):
        validate(ProposeConfig, {"fit": "f", "within": within}, "p.yaml")
    assert validate(ProposeConfig, {"fit": "f", "within": "trust:0.25"}, "p.yaml").within == "trust:0.25"


# ---------------------------------------------------------------- fine-tuning mode

#          run  gain  forgetting
HAND = [("F", 0.05, 0.005), ("A", 0.10, 0.010), ("C", 0.15, 0.020), ("D", 0.12, 0.025),
        ("B", 0.20, 0.030), ("E", 0.25, 0.080), ("G", 0.09, 0.050)]


def test_pareto_front_hand_example():
    g = np.array([h[1] for h in HAND])
    f = np.array([h[2] for h in HAND])
    front = [HAND[i][0] for i in pareto_front(g, f)]
    assert front == ["F", "A", "C", "B", "E"]  # D is beaten by C, G by A/C/B
    assert HAND[best_under_bound(g, f, 0.025)][0] == "C"
    assert HAND[best_under_bound(g, f, 0.03)][0] == "B"
    assert best_under_bound(g, f, 0.001) is None


def _results_csv(tmp_path):
    lines = ["run,target,replay_web,anchor_coef,target_gain,forgetting"]
    for i, (run, g, f) in enumerate(HAND):
        t = 0.3 + 0.1 * i
        lines.append(f"{run},{t:.2f},{1 - t:.2f},{0.1 * i:.1f},{g},{f}")
    p = tmp_path / "results.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_finetune_proposal_observed_and_model(tmp_path):
    cfg = FinetuneConfig(mode="finetune", results=str(_results_csv(tmp_path)), mixture=["target", "replay_web"],
                         scalars={"anchor_coef": (0.0, 0.6)}, max_forgetting=0.025, regressor="linear", samples=500)
    res = propose_finetune(cfg, tmp_path / "out")
    assert res["observed"]["best"]["run"] == "C"
    assert [p["run"] for p in res["observed"]["pareto_front"]] == ["F", "A", "C", "B", "E"]
    mb = res["model"]["best"]
    assert mb["forgetting"] <= 0.025
    assert mb["knobs"]["target"] + mb["knobs"]["replay_web"] == pytest.approx(1.0)
    assert 0.0 <= mb["knobs"]["anchor_coef"] <= 0.6
    saved = json.loads((tmp_path / "out" / "proposal.json").read_text())
    assert saved["observed"]["best"]["run"] == "C"
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 1000


def test_finetune_bound_too_tight(tmp_path):
    cfg = FinetuneConfig(mode="finetune", results=str(_results_csv(tmp_path)), mixture=["target", "replay_web"],
                         max_forgetting=0.001, regressor=None)
    with pytest.raises(MixlabError, match=r"no run has forgetting <= 0\.001; the lowest is 0\.005 \(run 'F'\)"):
        propose_finetune(cfg)


def test_finetune_config_errors_name_the_field(tmp_path):
    from mixlab.config import load_config
    from mixlab.errors import ConfigError as CE

    p = tmp_path / "ft.yaml"
    p.write_text("mode: finetune\nresults: r.csv\nscalars:\n  anchor_coef: [1.0, 0.0]\nmax_forgetting: 0.1\n")
    with pytest.raises(CE, match=r"ft\.yaml.*low < high"):
        load_config(p, FinetuneConfig)
