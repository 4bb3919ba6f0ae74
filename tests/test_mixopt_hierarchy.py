"""Hierarchical sources: nested mixtures flatten to group/child leaves, groups aggregate and expand
exactly, and a real hierarchical swarm (code -> {corpus:python_stdlib, toyworld:code}) generates,
flattens to leaves in ratios.csv, and fits and proposes at either level."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixlab.errors import ConfigError
from mixlab.mixopt import io
from mixlab.mixopt import swarm as S
from mixlab.mixopt.fit import ProposeConfig, fit, predict, propose
from mixlab.mixopt.hierarchy import Hierarchy, flatten_nested

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mixopt" / "swarm_hierarchical.yaml"


def test_nested_mixture_flattens_to_leaf_paths():
    flat = flatten_nested({"dclm": {"weight": 0.8, "sci": {"weight": 3, "high": 1, "low": 3}, "code": 1}, "web": 0.2})
    assert flat == pytest.approx({"dclm/sci/high": 0.15, "dclm/sci/low": 0.45, "dclm/code": 0.2, "web": 0.2})
    assert flatten_nested({"a": 0.5, "b": 0.5}) == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match=r"priors.code: a group needs children"):
        flatten_nested({"code": {"weight": 0.3}}, "priors")


def test_nested_mixture_in_a_pretraining_config_and_a_bad_group_names_the_file(tmp_path):
    from mixlab.train.pretrain import load_pretrain_config

    base = yaml.safe_load((CONFIG.parents[1] / "pretrain" / "toyworld_code_hier.yaml").read_text())
    base["data"]["mixture"] = {"code": {"weight": 0.4, "python_stdlib": 1, "toyworld": 3}, "arithmetic": 0.6}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(base))
    assert load_pretrain_config(tmp_path / "p.yaml").data.mixture == pytest.approx(
        {"code/python_stdlib": 0.1, "code/toyworld": 0.3, "arithmetic": 0.6})
    base["data"]["mixture"]["code"] = {"weight": 0.4}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(base))
    with pytest.raises(ConfigError, match=r"p.yaml.*data.mixture.code: a group needs children"):
        load_pretrain_config(tmp_path / "p.yaml")


def test_groups_aggregate_expand_and_measure_split_deviation():
    leaves = ["code/py", "prose", "code/toy"]
    h = Hierarchy.from_leaves(leaves, np.array([0.1, 0.6, 0.3]))
    assert h.names == ["code", "prose"] and h.split["code"] == pytest.approx({"code/py": 0.25, "code/toy": 0.75})
    W = np.array([[0.2, 0.6, 0.2], [0.1, 0.5, 0.4]])
    np.testing.assert_allclose(h.aggregate(W), [[0.4, 0.6], [0.5, 0.5]])
    np.testing.assert_allclose(h.expand([[0.4, 0.6]]), [[0.1, 0.6, 0.3]])
    np.testing.assert_allclose(h.split_deviation(W), [0.25, 0.05])  # code split 0.5/0.5 and 0.2/0.8 vs 0.25/0.75


@pytest.fixture(scope="module")
def hier_swarm(tmp_path_factory, data_dir):
    cfg = S.load_swarm_config(CONFIG, ["variants=10", "repeats=null"])
    return cfg, S.generate(cfg, tmp_path_factory.mktemp("hier") / "swarm")


def _law(W: np.ndarray, leaves: list[str]) -> np.ndarray:
    """Losses that depend on the code group's total and, more weakly, on its split."""
    x = dict(zip(leaves, W.T))
    code = x["code/python_stdlib"] + x["code/toyworld"]
    return np.column_stack([2 + np.exp(-3 * code) + 0.05 * x["code/python_stdlib"],
                            1.5 + np.exp(-2 * x["prose"] - x["people"])])


def test_hierarchical_swarm_generates_flattens_and_fits_at_either_level(hier_swarm, tmp_path):
    cfg, d = hier_swarm
    req = io.read_ratios(d / "requested_ratios.csv")
    leaves = req.columns
    assert leaves == ["code/python_stdlib", "code/toyworld", "arithmetic", "people", "prose"]
    np.testing.assert_allclose(req.values[0], [0.2] * 5)  # v000: the nested priors, flattened
    h = Hierarchy.from_leaves(leaves, req.values[0])
    split = h.split_deviation(req.values[1:])
    assert split.min() > 0.01  # within_concentration: the split inside code varies from 1:1
    swarm = tmp_path / "swarm"
    shutil.copytree(d, swarm)
    io.write_ratios(swarm / "ratios.csv", req.runs, req.names, leaves, req.values)
    io.write_metrics(swarm / "metrics.csv", req.runs, req.names, ["a_loss", "b_loss"], _law(req.values, leaves))
    group = fit(swarm / "ratios.csv", swarm / "metrics.csv", "linear", tmp_path / "g", folds=5, level="group")
    assert group.model.domains == ["arithmetic", "code", "people", "prose"]
    assert group.priors == pytest.approx({"code": 0.4, "arithmetic": 0.2, "people": 0.2, "prose": 0.2})
    leaf = fit(swarm / "ratios.csv", swarm / "metrics.csv", "linear", tmp_path / "l", folds=5)
    assert leaf.model.domains == sorted(leaves) and leaf.hierarchy is None
    # predict takes leaf mixtures for the group fit (aggregated): same numbers as the group columns
    pred = predict(tmp_path / "g", swarm / "ratios.csv")
    np.testing.assert_allclose(pred.values, group.model.predict(group.data.weights[np.argsort(np.argsort(group.data.runs))]))
    prop = propose(tmp_path / "g", ProposeConfig(fit=str(tmp_path / "g")), tmp_path / "p")
    lw = prop["leaf_weights"]
    assert sum(lw.values()) == pytest.approx(1.0)
    assert lw["code/python_stdlib"] == pytest.approx(lw["code/toyworld"])  # split as the priors: 1:1
    assert lw["code/python_stdlib"] + lw["code/toyworld"] == pytest.approx(prop["weights"]["code"])
    assert json.loads((tmp_path / "g" / "fit.json").read_text())["hierarchy"]["groups"]["code"] == [
        "code/python_stdlib", "code/toyworld"]


def test_group_level_without_groups_is_a_clear_error(tmp_path):
    X = np.random.default_rng(0).dirichlet(np.ones(3), size=12)
    runs = [f"r{i}" for i in range(12)]
    io.write_ratios(tmp_path / "r.csv", runs, runs, ["a", "b", "c"], X)
    io.write_metrics(tmp_path / "m.csv", runs, runs, ["loss"], X[:, :1])
    with pytest.raises(ConfigError, match=r"level: group, but no domain is a group/child path"):
        fit(tmp_path / "r.csv", tmp_path / "m.csv", "linear", folds=3, level="group")
