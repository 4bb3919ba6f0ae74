"""Pretraining configs, plans, schedules, CLI and bad input: clear errors before any training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mixlab.cli import main
from mixlab.config_kinds import detect_kind, validate_file
from mixlab.errors import ConfigError, DataError
from mixlab.train import pretrain as P
from mixlab.train.schedule import ScheduleConfig, lr_multiplier
from tests.test_pretrain_run import tiny_config, write_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_example_config_validates():
    files = sorted((ROOT / "configs/pretrain").glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"ci_tiny", "duration_0.5x", "duration_2.5x", "duration_5.0x", "mix_baseline", "mix_heavy_code",
            "mix_heavy_science", "mix_heavy_wiki"} <= names
    for f in files:
        kind, cfg = validate_file(f)
        assert kind == "pretrain" and isinstance(cfg, P.PretrainConfig)


def test_plan_of_short_run_realizes_the_mixture(data_dir):
    plan = P.prepare(P.load_pretrain_config(ROOT / "configs/pretrain/duration_0.5x.yaml")).plan
    n = plan.non_embedding_params
    assert plan.token_budget == round(20 * n * 0.5)
    assert plan.steps == plan.token_budget // (32 * 256)
    assert plan.allocation.capped == []  # no cap binds: the mixture is exact to rounding
    for k, want in plan.allocation.requested.items():
        assert abs(plan.allocation.realized[k] - want) < 0.01


def test_cap_binds_for_the_long_run(data_dir):
    plan = P.prepare(P.load_pretrain_config(ROOT / "configs/pretrain/duration_5.0x.yaml")).plan
    assert plan.token_budget == round(20 * plan.non_embedding_params * 5.0)
    a = plan.allocation
    assert a.capped == ["science"]
    assert a.epochs["science"] == pytest.approx(4.0, abs=1e-3)
    assert a.realized["science"] < 0.25
    others = [k for k in a.requested if k != "science"]
    assert all(a.realized[k] == pytest.approx((1 - a.realized["science"]) / 3, abs=1e-4) for k in others)


@pytest.mark.parametrize(
    "override, error, pattern",
    [
        ({"model.size": "proxy-3m"}, ConfigError, r"cfg.yaml:\d+: field `model.size`: .*unknown model size 'proxy-3m'"),
        ({"data.mixture": {"code": 1, "books": 1}}, ConfigError, r"mixture names source\(s\) books not defined"),
        ({"duration.tokens": 100}, ConfigError, r"less than one optimizer step"),
        ({"duration": {"tokens": 10, "chinchilla": 1.0}}, ConfigError, r"exactly one of duration"),
        ({"train.batch_size": 8, "train.micro_batch_size": 3}, ConfigError, r"multiple of micro_batch_size"),
        ({"data.max_epochs": 0.001, "duration.tokens": 10_000_000}, ConfigError, r"not enough text"),
        ({"data.sources.wiki": "books:foo"}, ConfigError, r"not a source uri"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, data_dir, override, error, pattern):
    cfg = tiny_config(**override)
    with pytest.raises(error, match=pattern):
        P.prepare(P.load_pretrain_config(write_config(tmp_path, cfg)))


def test_source_smaller_than_one_sequence(tmp_path, data_dir):
    small = tmp_path / "small.txt"
    small.write_text("a few words\n\nand a few more\n\nand a third paragraph")
    cfg = tiny_config(**{"data.sources.small": {"uri": f"file:{small}", "split": "paragraph"},
                         "data.mixture": {"code": 1, "small": 1}, "train.seq_len": 64})
    with pytest.raises(DataError, match=r"source 'small' has \d+ tokens, fewer than one training sequence"):
        P.prepare(P.load_pretrain_config(write_config(tmp_path, cfg)))


def test_cli_errors_exit_2_without_traceback(tmp_path, data_dir, capsys):
    path = write_config(tmp_path, tiny_config(**{"model.size": "proxy-3m"}))
    assert main(["pretrain", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "unknown model size" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["pretrain", str(write_config(tmp_path, tiny_config()))]) == 2
    assert "--out DIR is required" in capsys.readouterr().err


def test_dry_run_prints_the_plan(tmp_path, data_dir, capsys):
    path = write_config(tmp_path, tiny_config())
    assert main(["pretrain", str(path), "--dry-run", "--set", "duration.tokens=20480"]) == 0
    out = capsys.readouterr().out
    for needle in ("model", "non-embedding", "80 steps x 256 tokens", "code", "wiki", "70.0%", "30.0%", "estimate"):
        assert needle in out, needle
    assert not (tmp_path / "run").exists()


def test_validate_detects_kind(tmp_path, capsys):
    path = write_config(tmp_path, tiny_config())
    assert main(["validate", str(path)]) == 0
    assert "valid pretrain config" in capsys.readouterr().out
    assert detect_kind({"kind": "pretrain"}, "x") == "pretrain"
    assert detect_kind({"domains": {}}, "x") == "data"
    with pytest.raises(ConfigError, match="cannot tell which kind"):
        detect_kind({"seed": 1}, "x.yaml")
    with pytest.raises(ConfigError, match="unknown config kind 'sft2'"):
        detect_kind({"kind": "sft2"}, "x.yaml")


def test_cosine_schedule_values():
    cfg = ScheduleConfig(kind="cosine", warmup=10, min_lr_ratio=0.1)
    assert lr_multiplier(cfg, 0, 110) == pytest.approx(1 / 11)
    assert lr_multiplier(cfg, 9, 110) == pytest.approx(10 / 11)
    assert lr_multiplier(cfg, 10, 110) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 60, 110) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(cfg, 110, 110) == pytest.approx(0.1)
    assert ScheduleConfig(warmup=0.05).warmup_steps(200) == 10


def test_wsd_schedule_values():
    cfg = ScheduleConfig(kind="wsd", warmup=10, decay_fraction=0.2, min_lr_ratio=0.0, decay_shape="linear")
    assert lr_multiplier(cfg, 50, 100) == 1.0
    assert lr_multiplier(cfg, 79, 100) == 1.0
    assert lr_multiplier(cfg, 80, 100) == pytest.approx(1 - 1 / 20)
    assert lr_multiplier(cfg, 89, 100) == pytest.approx(0.5)
    assert lr_multiplier(cfg, 99, 100) == pytest.approx(0.0)
    sq = ScheduleConfig(kind="wsd", warmup=0, decay_fraction=0.2, min_lr_ratio=0.0, decay_shape="sqrt")
    assert lr_multiplier(sq, 84, 100) == pytest.approx(1 - math.sqrt(5 / 20))
