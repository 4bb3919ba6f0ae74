"""Mixture reuse: added, removed and changed domains against a previous proposal, a reuse swarm that
keeps the frozen split, a fit at the virtual level that checks it, and a proposal expanded to leaves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mixlab.errors import ConfigError, DataError
from mixlab.mixopt import io
from mixlab.mixopt import swarm as S
from mixlab.mixopt.fit import ProposeConfig, fit, propose
from mixlab.mixopt.fit import previous_mixture
from mixlab.mixopt.reuse import VIRTUAL, plan_reuse

PREV = {"a": 0.5, "b": 0.3, "c": 0.1, "d": 0.1}


def test_plan_names_unchanged_added_removed_changed_and_the_frozen_split():
    r = plan_reuse(PREV, "p", ["a", "b", "c", "e"], changed=["c"])
    assert (r.unchanged, r.added, r.removed, r.changed, r.free) == (["a", "b"], ["e"], ["d"], ["c"], ["c", "e"])
    h = r.hierarchy()
    assert h.names == [VIRTUAL, "c", "e"] and h.split[VIRTUAL] == pytest.approx({"a": 0.625, "b": 0.375})
    np.testing.assert_allclose(h.expand([[0.8, 0.1, 0.1]]), [[0.5, 0.3, 0.1, 0.1]])


def test_reuse_errors_say_what_to_do():
    with pytest.raises(ConfigError, match=r"nothing changed to search over \(removed: \['d'\]\).*'a': 0.5555"):
        plan_reuse(PREV, "p", ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"nothing to reuse"):
        plan_reuse(PREV, "p", ["x", "y"])
    with pytest.raises(ConfigError, match=r"reuse.changed: \['z'\] are not domains"):
        plan_reuse(PREV, "p", ["a", "e"], changed=["z"])


def _reuse_swarm(tmp_path, n=16, seed=0):
    """A swarm over (existing, c, e) expanded to leaves a, b, c, e with a:b frozen at 5:3."""
    rng = np.random.default_rng(seed)
    V = rng.dirichlet(np.ones(3) * 2, size=n)
    W = np.column_stack([V[:, 0] * 0.625, V[:, 0] * 0.375, V[:, 1], V[:, 2]])
    runs = [f"u{i:02d}" for i in range(n)]
    loss = 2 + np.exp(-2 * W[:, 0] - 1.5 * W[:, 1] + 1.0 * W[:, 2] - 3 * W[:, 3])
    io.write_ratios(tmp_path / "ratios.csv", runs, runs, ["a", "b", "c", "e"], W)
    io.write_metrics(tmp_path / "metrics.csv", runs, runs, ["loss"], loss[:, None])
    (tmp_path / "prev").mkdir()
    (tmp_path / "prev" / "proposal.json").write_text(json.dumps({"weights": PREV}))
    return W


def test_reuse_fit_works_on_the_virtual_domain_and_proposes_every_leaf(tmp_path):
    _reuse_swarm(tmp_path)
    res = fit(tmp_path / "ratios.csv", tmp_path / "metrics.csv", "loglinear", tmp_path / "fit", folds=4,
              reuse=tmp_path / "prev", changed=["c"])
    assert res.model.domains == ["c", "e", VIRTUAL] and res.reuse["removed"] == ["d"]
    assert res.cv["per_metric"]["loss"]["spearman"] > 0.95
    prop = propose(tmp_path / "fit", ProposeConfig(fit=str(tmp_path / "fit")))
    lw = prop["leaf_weights"]
    assert set(lw) == {"a", "b", "c", "e"} and sum(lw.values()) == pytest.approx(1.0)
    assert lw["a"] / lw["b"] == pytest.approx(0.5 / 0.3)  # the frozen split survives
    assert lw["e"] > lw["c"]  # e lowers the loss, c raises it
    # the next update reuses this proposal's leaves
    assert previous_mixture(tmp_path / "fit")[0] == pytest.approx(lw)


def test_a_swarm_that_does_not_keep_the_frozen_split_is_refused(tmp_path):
    W = _reuse_swarm(tmp_path)
    W[3, :2] = [W[3, :2].sum() * 0.9, W[3, :2].sum() * 0.1]
    runs = [f"u{i:02d}" for i in range(len(W))]
    io.write_ratios(tmp_path / "ratios.csv", runs, runs, ["a", "b", "c", "e"], W)
    with pytest.raises(DataError, match=r"run 'u03' splits the reused domains \['a', 'b'\] 0.275"):
        fit(tmp_path / "ratios.csv", tmp_path / "metrics.csv", "linear", folds=4, reuse=tmp_path / "prev",
            changed=["c"])


def test_swarm_with_reuse_samples_only_the_free_domains_and_writes_reuse_json(tmp_path):
    from tests.test_swarm import BASE

    (tmp_path / "prev.json").write_text(json.dumps({"weights": {"arithmetic": 0.2, "people": 0.6, "gone": 0.2}}))
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(BASE))
    cfg = S.SwarmConfig.model_validate({"name": "t", "base": str(base), "variants": 6, "seed": 1,
                                        "reuse": {"previous": str(tmp_path / "prev.json")},
                                        "sampling": {"min_weight": 0.05}})
    d = S.generate(cfg, tmp_path / "swarm")
    req = io.read_ratios(d / "requested_ratios.csv")
    W = dict(zip(req.columns, req.values.T))
    np.testing.assert_allclose(W["people"] / W["arithmetic"], 3.0)  # frozen 0.6 : 0.2
    assert np.ptp(W["prose"]) > 0.05  # prose (added) is searched
    info = json.loads((d / "reuse.json").read_text())
    assert info["added"] == ["prose"] and info["removed"] == ["gone"] and info["unchanged"] == ["arithmetic", "people"]


def test_cli_fit_reuse_and_propose_print_leaf_weights(tmp_path):
    import typer
    from typer.testing import CliRunner

    from mixlab.cli.mixopt import register

    app = typer.Typer()
    register(app)
    _reuse_swarm(tmp_path)
    r = CliRunner().invoke(app, ["fit", "--ratios", str(tmp_path / "ratios.csv"), "--metrics", str(tmp_path / "metrics.csv"),
                                 "--reuse", str(tmp_path / "prev"), "--changed", "c", "--folds", "4", "--out",
                                 str(tmp_path / "fit")])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert info["domains"] == ["c", "e", VIRTUAL] and info["reuse"]["changed"] == ["c"]
    r = CliRunner().invoke(app, ["propose", "--fit", str(tmp_path / "fit"), "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert "noise: no mixture was repeated" in r.output and "leaf weights (reused split): " in r.output
    prop = json.loads((tmp_path / "p" / "proposal.json").read_text())
    assert set(prop["leaf_weights"]) == {"a", "b", "c", "e"}


def test_pooled_runs_keep_earlier_runs_valid_and_retire_revised_data():
    from mixlab.mixopt.reuse import RETIRED, pool_runs

    W_old = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    W_new = np.array([[0.4, 0.1, 0.3, 0.2]])
    P = pool_runs(["a", "b", "c"], W_old, np.ones((2, 1)), ["a", "b", "c", "e"], W_new, np.zeros((1, 1)), changed=["c"])
    assert P.columns == ["a", "b", "c" + RETIRED, "c", "e"] and P.retired == ["c" + RETIRED] and P.n_old == 2
    np.testing.assert_allclose(P.weights, [[0.5, 0.3, 0.2, 0, 0], [0.2, 0.2, 0.6, 0, 0], [0.4, 0.1, 0, 0.3, 0.2]])
    np.testing.assert_allclose(P.metrics[:, 0], [1, 1, 0])
    np.testing.assert_allclose(P.restrict(P.embed([[0.1, 0.2, 0.3, 0.4]])), [[0.1, 0.2, 0.3, 0.4]])
    # a second revision of c retires the first new data too; a removed domain stays as a column
    Q = pool_runs(P.columns, P.weights, P.metrics, ["b", "c", "e"], np.zeros((0, 3)), np.zeros((0, 1)), changed=["c"])
    assert Q.columns == ["a", "b", "c" + RETIRED, "c" + RETIRED * 2, "e", "c"]
    assert Q.retired == ["a", "c" + RETIRED, "c" + RETIRED * 2]


def test_a_pooled_fit_moves_the_frozen_split_toward_the_optimum():
    """Known answer: loss = exp(x . t) with a = -3, b = 0 and the added e = -1 (a log-linear law, so the
    pooled loglinear fit recovers it); the previous proposal split a:b 1:1. Adding e does not change
    the best split (all on a), which the frozen split cannot reach and the pooled fit finds."""
    from mixlab.mixopt.propose import ConstraintsConfig, feasible_bounds, optimize_mixture
    from mixlab.mixopt.reuse import pool_runs
    from mixlab.mixopt.regressors import MixtureModel

    t = {"a": -3.0, "b": 0.0, "e": -1.0}
    loss = lambda W, names: np.exp(W @ np.array([t[n] for n in names]))  # noqa: E731
    rng = np.random.default_rng(0)
    W_old = rng.dirichlet([1, 1], size=12)
    h = plan_reuse({"a": 0.5, "b": 0.5}, "p", ["a", "b", "e"]).hierarchy()
    W_new = h.expand(rng.dirichlet([1, 1], size=8))
    P = pool_runs(["a", "b"], W_old, loss(W_old, "ab")[:, None], ["a", "b", "e"], W_new,
                  loss(W_new, "abe")[:, None])
    model = MixtureModel.fit("loglinear", P.columns, ["loss"], P.weights, P.metrics)
    np.testing.assert_allclose(model.models["loss"].exponents(), [-3, 0, -1], atol=1e-3)
    design = rng.dirichlet(np.ones(3), size=256)  # z-scores over the current design, not the runs
    obj = P.objective(model, design, {"loss": 1.0}, {"loss": "min"})
    pred = loss(design, "abe")
    assert obj.means[0] == pytest.approx(pred.mean(), rel=1e-3) and obj.stds[0] == pytest.approx(pred.std(), rel=1e-2)
    x, _ = optimize_mixture(model, obj, feasible_bounds(P.columns, ConstraintsConfig()), np.ones(3) / 3,
                            starts=P.weights[-2:], seed=0)
    assert x[0] > 0.99  # all on a; the frozen 1:1 split's best is a + b halves


def test_a_pooled_fit_recovers_the_shift_a_revision_put_on_every_earlier_run():
    """Known answer: loss = W . b; every run made before c's revision reads 0.3 higher (a batch effect: a
    changed eval set or pipeline). With an offset for the earlier block the fit recovers 0.3 and the law
    exactly; one law through both blocks bends to absorb the shift."""
    from mixlab.mixopt.reuse import fit_pooled, pool_runs

    b = np.array([1.0, 2.0, 3.0])
    rng = np.random.default_rng(0)
    W_old = rng.dirichlet(np.ones(3), size=20)
    W_new = rng.dirichlet(np.ones(3), size=10)
    P = pool_runs(["a", "b", "c"], W_old, (W_old @ b + 0.3)[:, None], ["a", "b", "c"], W_new,
                  (W_new @ b)[:, None], changed=["c"])
    assert P.block_ids.tolist() == [0] * 20 + [1] * 10
    fitted = fit_pooled(P, "linear", ["loss"])   # offsets="auto": kept, they explain the shift
    assert fitted.reference == 1 and fitted.offsets[0][0] == pytest.approx(0.3, abs=1e-6)
    assert fitted.bic_gain > 0 and fitted.passes <= 4  # secant steps: the fixed point in a few refits
    np.testing.assert_allclose(fitted.model.predict(P.weights[20:])[:, 0], W_new @ b, atol=1e-6)
    plain = fit_pooled(P, "linear", ["loss"], offsets=False)
    assert plain.offsets == {} and np.abs(plain.model.predict(P.weights[20:])[:, 0] - W_new @ b).max() > 0.05
    # a revision that shifts nothing: "auto" drops the offset (the BIC charges log n for it)
    noisy = pool_runs(["a", "b", "c"], W_old, (W_old @ b + rng.normal(0, 0.01, 20))[:, None], ["a", "b", "c"], W_new,
                      (W_new @ b + rng.normal(0, 0.01, 10))[:, None], changed=["c"])
    kept = fit_pooled(noisy, "linear", ["loss"])
    assert kept.offsets == {} and kept.bic_gain < 0
    assert abs(fit_pooled(noisy, "linear", ["loss"], offsets=True).offsets[0][0]) < 0.05
    # no revision: one block, no offset
    same = pool_runs(["a", "b", "c"], W_old, (W_old @ b)[:, None], ["a", "b", "c"], W_new, (W_new @ b)[:, None])
    assert same.block_ids.tolist() == [0] * 30 and fit_pooled(same, "linear", ["loss"]).offsets == {}


def _swarm_files(d, names, W, t, prefix="r"):
    """ratios.csv / metrics.csv of runs at W with loss = exp(W . t) (known answer)."""
    d.mkdir(parents=True, exist_ok=True)
    runs = [f"{prefix}{i:02d}" for i in range(len(W))]
    io.write_ratios(d / "ratios.csv", runs, runs, names, W)
    io.write_metrics(d / "metrics.csv", runs, runs, ["loss"], np.exp(W @ np.array(t))[:, None])
    return d


def test_fit_pool_fits_earlier_runs_with_new_ones_and_proposes_only_current_domains(tmp_path):
    """Known answer: before the update loss = exp(-3a + 0b + 1c); then c's data is revised (its
    exponent becomes -4: now the best domain) and e is added (-1). The pooled fit keeps the earlier
    runs' c as the retired column c@previous, recovers every exponent, and proposes all weight on the
    new c; chaining a third swarm onto the pooled fit keeps the revision blocks."""
    rng = np.random.default_rng(0)
    W1 = rng.dirichlet(np.ones(3), size=12)
    s1 = _swarm_files(tmp_path / "s1", ["a", "b", "c"], W1, [-3, 0, 1])
    fit(s1 / "ratios.csv", s1 / "metrics.csv", "loglinear", tmp_path / "fit1", folds=3)
    W2 = rng.dirichlet(np.ones(4), size=12)
    s2 = _swarm_files(tmp_path / "s2", ["a", "b", "c", "e"], W2, [-3, 0, -4, -1])  # same run ids as s1
    res = fit(s2 / "ratios.csv", s2 / "metrics.csv", "loglinear", tmp_path / "fit2", folds=3,
              pool=tmp_path / "fit1", changed=["c"])
    assert res.model.domains == ["a", "b", "c", "c@previous", "e"] and res.retired() == ["c@previous"]
    np.testing.assert_allclose(res.model.models["loss"].exponents(), [-3, 0, -4, 1, -1], atol=1e-3)
    assert len(res.data.runs) == 24 and "r00~2" in res.data.runs and res.pooled["runs_earlier"] == 12
    assert res.current_rows().sum() == 12 and res.cv["pooled"]["retired"] == ["c@previous"]
    prop = propose(tmp_path / "fit2", ProposeConfig(fit=str(tmp_path / "fit2")))
    assert list(prop["weights"]) == ["a", "b", "c", "e"] and prop["weights"]["c"] > 0.99
    assert prop["best_observed"]["run"] in {f"r{i:02d}~2" for i in range(12)}  # a run trainable now
    assert prop["pooled"]["retired"] == ["c@previous"]
    # chained: a third swarm with no revision joins the latest block
    W3 = rng.dirichlet(np.ones(4), size=6)
    s3 = _swarm_files(tmp_path / "s3", ["a", "b", "c", "e"], W3, [-3, 0, -4, -1], prefix="n")
    res3 = fit(s3 / "ratios.csv", s3 / "metrics.csv", "loglinear", tmp_path / "fit3", folds=3, pool=tmp_path / "fit2")
    blocks = json.loads((tmp_path / "fit3" / "fit.json").read_text())["pooled"]["blocks"]
    assert blocks["r00"] == 0 and blocks["r00~2"] == 1 and blocks["n00"] == 1 and len(blocks) == 30
    assert res3.current_rows().sum() == 18
    # the same metrics are needed
    io.write_metrics(s3 / "other.csv", [f"n{i:02d}" for i in range(6)], [f"n{i:02d}" for i in range(6)], ["acc"],
                     np.ones((6, 1)))
    with pytest.raises(DataError, match=r"no metric\(s\) \['acc'\]"):
        fit(s3 / "ratios.csv", s3 / "other.csv", "loglinear", None, folds=3, pool=tmp_path / "fit2")
    with pytest.raises(ConfigError, match="pool: cannot be combined"):
        fit(s3 / "ratios.csv", s3 / "metrics.csv", "loglinear", None, folds=3, pool=tmp_path / "fit2",
            reuse=tmp_path / "fit1")


def test_cli_fit_pool_prints_the_pooling_and_propose_the_current_domains(tmp_path):
    from typer.testing import CliRunner

    from mixlab.cli import app

    rng = np.random.default_rng(1)
    s1 = _swarm_files(tmp_path / "s1", ["a", "b", "d"], rng.dirichlet(np.ones(3), size=10), [-3, 0, 1])
    s2 = _swarm_files(tmp_path / "s2", ["a", "b", "e"], rng.dirichlet(np.ones(3), size=10), [-3, 0, -1], prefix="n")
    run = CliRunner().invoke
    r = run(app, ["fit", "--ratios", str(s1 / "ratios.csv"), "--metrics", str(s1 / "metrics.csv"), "--folds", "3",
                  "--out", str(tmp_path / "fit1")])
    assert r.exit_code == 0, r.output
    r = run(app, ["fit", "--ratios", str(s2 / "ratios.csv"), "--metrics", str(s2 / "metrics.csv"), "--folds", "3",
                  "--pool", str(tmp_path / "fit1"), "--out", str(tmp_path / "fit2")])
    assert r.exit_code == 0, r.output
    assert "pooled: 10 earlier run(s) + 10 new over 4 column(s); retired (held at 0): d" in " ".join(r.output.split())
    r = run(app, ["propose", "--fit", str(tmp_path / "fit2"), "--out", str(tmp_path / "prop")])
    assert r.exit_code == 0, r.output
    w = json.loads((tmp_path / "prop" / "proposal.json").read_text())["weights"]
    assert list(w) == ["a", "b", "e"] and w["a"] > 0.99


def test_fit_pool_removes_a_revision_shift_from_the_earlier_runs(tmp_path):
    """Known answer: loss = W . b; after c's revision every earlier run reads 0.3 higher than the new
    pipeline would (a batch effect). The pooled fit keeps the offset (BIC), and the earlier runs'
    comparable values are their observed ones less 0.3: what the fit report, propose and verify use."""
    rng = np.random.default_rng(2)
    b_old, b_new = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 0.5])
    W1, W2 = rng.dirichlet(np.ones(3), size=20), rng.dirichlet(np.ones(3), size=10)
    for name, W, y in (("s1", W1, W1 @ b_old + 0.3), ("s2", W2, W2 @ b_new)):
        d = tmp_path / name
        d.mkdir()
        runs = [f"{name}r{i:02d}" for i in range(len(W))]
        io.write_ratios(d / "ratios.csv", runs, runs, ["a", "b", "c"], W)
        io.write_metrics(d / "metrics.csv", runs, runs, ["loss"], y[:, None])
    fit(tmp_path / "s1" / "ratios.csv", tmp_path / "s1" / "metrics.csv", "linear", tmp_path / "fit1", folds=3)
    res = fit(tmp_path / "s2" / "ratios.csv", tmp_path / "s2" / "metrics.csv", "linear", tmp_path / "fit2", folds=3,
              pool=tmp_path / "fit1", changed=["c"])
    assert res.pooled["offsets"]["0"]["loss"] == pytest.approx(0.3, abs=1e-6) and res.pooled["offset_bic_gain"] > 0
    old = ~res.current_rows()
    assert old.sum() == 20
    np.testing.assert_allclose(res.comparable_metrics()[old, 0], res.data.metrics[old, 0] - 0.3, atol=1e-6)
    np.testing.assert_allclose(res.oof[~old, 0], res.data.metrics[~old, 0], atol=1e-6)  # the law is exact
    prop = propose(tmp_path / "fit2", ProposeConfig(fit=str(tmp_path / "fit2")))
    assert prop["weights"]["c"] > 0.99  # the revised c (coefficient 0.5) now gives the lowest loss
    assert prop["metrics"]["loss"]["swarm_mean"] == pytest.approx(res.comparable_metrics()[:, 0].mean())


def test_pool_and_changed_mistakes_are_errors_that_say_what_to_do(tmp_path):
    rng = np.random.default_rng(3)
    s1 = _swarm_files(tmp_path / "s1", ["a", "b", "d"], rng.dirichlet(np.ones(3), size=10), [-3, 0, 1])
    s2 = _swarm_files(tmp_path / "s2", ["a", "b", "e"], rng.dirichlet(np.ones(3), size=8), [-3, 0, -1], prefix="n")
    fit(s1 / "ratios.csv", s1 / "metrics.csv", "loglinear", tmp_path / "fit1", folds=3)
    r2, m2 = s2 / "ratios.csv", s2 / "metrics.csv"
    with pytest.raises(ConfigError, match=r"changed: \['b'\] only applies with pool"):
        fit(r2, m2, "loglinear", None, folds=3, changed=["b"])
    with pytest.raises(ConfigError, match=r"\['d'\] were removed, which retires them without --changed"):
        fit(r2, m2, "loglinear", None, folds=3, pool=tmp_path / "fit1", changed=["d"])
    with pytest.raises(ConfigError, match=r"changed: \['e'\] are new .* an added domain needs no --changed"):
        fit(r2, m2, "loglinear", None, folds=3, pool=tmp_path / "fit1", changed=["e"])
    with pytest.raises(DataError, match="fit directory not found"):
        fit(r2, m2, "loglinear", None, folds=3, pool=tmp_path / "nope")
    fit(r2, m2, "loglinear", tmp_path / "fit2", folds=3, pool=tmp_path / "fit1")
    from mixlab.mixopt.propose import ConstraintsConfig

    with pytest.raises(ConfigError, match=r"\{'d': 0.3\} give weight to retired column"):
        propose(tmp_path / "fit2", ProposeConfig(fit=str(tmp_path / "fit2"),
                                                  constraints=ConstraintsConfig(max_weight={"d": 0.3})))
    # a floor for every domain applies to the current ones (the retired column stays at 0)
    prop = propose(tmp_path / "fit2", ProposeConfig(fit=str(tmp_path / "fit2"), constraints=ConstraintsConfig(min_weight=0.05)))
    assert min(prop["weights"].values()) >= 0.05 - 1e-9 and prop["bounds"]["d"][:2] == [0.0, 0.0]
