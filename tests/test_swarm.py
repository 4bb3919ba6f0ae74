"""Swarms: variants around the priors that respect the sampler's repetition cap exactly, bad input,
and an end-to-end swarm (train, evaluate, collect, fit) that resumes a killed variant and skips
finished work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixlab.errors import ConfigError, MixlabError
from mixlab.mixopt import io
from mixlab.mixopt import swarm as S
from mixlab.train.pretrain import load_pretrain_config, prepare, pretrain

BASE = {
    "seed": 0,
    "model": {"size": "proxy-0.2m"},
    "tokenizer": {"kind": "byte"},
    "data": {
        "sources": {  # arithmetic is small: the repetition cap binds for it
            "arithmetic": {"uri": ["toyworld:arithmetic"], "toyworld_documents": 60, "toyworld_heldout_documents": 20},
            "people": {"uri": ["toyworld:people"], "toyworld_documents": 400, "toyworld_heldout_documents": 20},
            "prose": {"uri": ["toyworld:prose"], "toyworld_documents": 400, "toyworld_heldout_documents": 20},
        },
        "max_epochs": 1.0,
    },
    "duration": {"tokens": 65536},
    "train": {"seq_len": 64, "batch_size": 8, "threads": 1, "log_every": 8},
    "eval": {"every": 0, "max_tokens": 1024},
    "checkpoint": {"every": 8},
}


def _swarm(tmp_path: Path, **extra) -> S.SwarmConfig:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(BASE))
    data = {"name": "t", "base": str(base), "variants": 12, "seed": 3,
            "priors": {"arithmetic": 0.4, "people": 0.3, "prose": 0.3},
            "sampling": {"concentration": 6.0, "min_weight": 0.05}} | extra
    return S.SwarmConfig.model_validate(data)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("swarm")
    cfg = _swarm(tmp)
    return cfg, S.generate(cfg, tmp / "swarm")


def test_variants_respect_priors_min_weight_and_the_samplers_cap(generated):
    cfg, d = generated
    info = json.loads((d / "priors.json").read_text())
    table = io.read_ratios(d / "requested_ratios.csv", priors=info["priors"])
    W = table.select(info["domains"])
    assert W.shape == (12, 3)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-9)
    assert W.min() >= 0.05 - 1e-12
    # 60 arithmetic documents, 137 sequences of 64 tokens, may fill 137 of the 1024 sequences at max_epochs 1
    cap = info["max_weight"]["arithmetic"]
    assert cap == 137 / 1024
    assert W[:, 0].max() == pytest.approx(cap) and (W[:, 0] <= cap + 1e-12).all()
    assert (np.abs(W[:, 0] - cap) < 1e-9).sum() >= 6  # a prior of 0.4 pushes most variants onto the cap
    # the first variant is the priors, projected onto the caps: the excess spread over the others
    np.testing.assert_allclose(W[0], [cap, 0.5 - cap / 2, 0.5 - cap / 2], atol=1e-9)
    # the variants really differ from each other and scatter around the priors
    assert np.ptp(W[1:, 1]) > 0.15
    # every variant is a runnable config whose sampler realizes it with no source capped
    for name, w in zip(table.runs, W):
        vcfg = load_pretrain_config(d / "variants" / f"{name}.yaml")
        assert vcfg.data.mixture == pytest.approx(dict(zip(info["domains"], w)))
        if name in ("v000", "v001", "v005"):
            alloc = prepare(vcfg).plan.allocation
            assert alloc.capped == []
            assert max(abs(alloc.realized[k] - alloc.requested[k]) for k in alloc.requested) < 0.02


def test_generate_is_deterministic_and_refuses_another_swarm(generated, tmp_path):
    cfg, d = generated
    again = S.generate(cfg, tmp_path / "again")
    assert (again / "requested_ratios.csv").read_bytes() == (d / "requested_ratios.csv").read_bytes()
    assert S.generate(cfg, d) == d  # same config: nothing to do
    assert S.generate(cfg.model_copy(update={"launch": cfg.launch.model_copy(update={"workers": 7})}), d) == d
    other = cfg.model_copy(update={"seed": 4})
    with pytest.raises(MixlabError, match="holds another swarm"):
        S.generate(other, d)


def test_unreachable_backend_is_refused_before_any_training(generated):
    from mixlab.runs.launch import LaunchConfig, RayOptions

    pytest.importorskip("ray")
    cfg, d = generated
    with pytest.raises(MixlabError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        S.run(d, LaunchConfig(backend="ray", ray=RayOptions(address="127.0.0.1:1")))
    assert not (d / "runs").exists() and not (d / "sweep").exists()


def test_sparsity_leaves_domains_out(generated, tmp_path):
    cfg = _swarm(tmp_path, sampling={"concentration": 6.0, "sparsity": 0.4, "min_weight": 0.0})
    d = S.generate(cfg, tmp_path / "sparse")
    W = io.read_ratios(d / "requested_ratios.csv").values
    assert (W[1:] == 0).any(axis=1).sum() >= 3
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize("extra, message", [
    ({"priors": {"arithmetic": 0.5, "people": 0.5}}, r"domain\(s\) \['prose'\] of the base config are missing"),
    ({"priors": {"arithmetic": 0.5, "people": 0.3, "prose": 0.3}}, "priors sum to 1.1, not 1"),
    ({"priors": {"arithmetic": 0.5, "people": 0.3, "prose": 0.1, "code": 0.1}}, r"unknown domain\(s\) \['code'\]"),
    ({"sampling": {"min_weight": 0.4}}, "constraints cannot all hold"),
])
def test_bad_swarm_input_is_a_clear_error(tmp_path, extra, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        S.generate(_swarm(tmp_path, **extra), tmp_path / "bad")
    assert not (tmp_path / "bad" / S.SWARM_FILE).exists()


def test_cap_that_no_mixture_can_meet_is_an_error(tmp_path):
    cfg = _swarm(tmp_path, set=["duration.tokens=2000000"])
    with pytest.raises(ConfigError, match="not enough text|cannot all hold"):
        S.generate(cfg, tmp_path / "s")


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_swarm_run_resumes_a_killed_variant_then_collects_and_fits(tmp_path):
    from mixlab.mixopt.fit import fit

    cfg = _swarm(tmp_path, variants=3, set=["duration.tokens=16384"], priors="natural", launch={"workers": 1},
                 eval={"tasks": ["toyworld_people_mc", "toyworld_prose_bpb"], "limit": 16})
    d = S.generate(cfg, tmp_path / "swarm")

    def kill(info):  # a variant killed after its step-8 checkpoint, before finishing
        if info.step == 12:
            raise _Killed
    with pytest.raises(_Killed):
        pretrain(load_pretrain_config(d / "variants" / "v001.yaml"), d / "runs" / "v001", on_step=kill)
    assert not S.is_trained(d, "v001")

    report = S.run(d)
    assert report.trained == ["v000", "v001", "v002"]
    assert report.evaluated == 6  # 3 variants x 2 tasks
    meta = json.loads((d / "runs" / "v001" / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["resumed_from"] == 8

    again = S.run(d)  # finished work is skipped
    assert again.trained == [] and again.already_trained == ["v000", "v001", "v002"] and again.evaluated == 0

    res = S.collect(d)
    assert res.runs == ["v000", "v001", "v002"] and res.skipped == {}
    ratios, metrics = io.read_table(res.ratios, "ratios"), io.read_table(res.metrics, "metrics")
    assert ratios.columns == ["arithmetic", "people", "prose"]
    for i, run in enumerate(ratios.runs):  # ratios.csv holds the mixture each run really trained on
        realized = json.loads((d / "runs" / run / "meta.json").read_text())["mixture"]["realized"]
        np.testing.assert_allclose(ratios.values[i], [realized[k] for k in ratios.columns])
    assert {"toyworld_people_mc/acc", "toyworld_prose_bpb/bpb", "bpb/people", "bpb/mean"} <= set(metrics.columns)
    acc = metrics.select(["toyworld_people_mc/acc"])[:, 0]
    assert ((acc >= 0) & (acc <= 1)).all()
    bpb = metrics.select(["bpb/prose"])[:, 0]
    assert (bpb > 0.5).all() and (bpb < 9).all()
    assert len(set(bpb.round(6))) == 3  # different mixtures, different held-out loss
    # the pair reads straight into `mixlab fit`
    out = fit(res.ratios, res.metrics, "linear", out=tmp_path / "fit", folds=3, fit_metrics=["bpb/prose"])
    assert (tmp_path / "fit" / "cv.json").is_file() and out.cv["per_metric"]["bpb/prose"]["rmse"] >= 0
