"""`mixlab finetune` and `mixlab validate` on a fine-tuning config, through a fresh typer app."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from mixlab.cli import finetune as ft_cli
from mixlab.cli import validate as validate_cli
from mixlab.config import dump_yaml
from mixlab.config_kinds import validate_file
from mixlab.train import sft
from tests.test_finetune_run import ft_config, toy_base  # noqa: F401 - session fixture

ROOT = Path(__file__).resolve().parents[1]


def app() -> typer.Typer:
    a = typer.Typer()
    validate_cli.register(a)
    ft_cli.register(a)
    return a


def test_dry_run_then_train_then_skip(toy_base, tmp_path):  # noqa: F811
    path = tmp_path / "ft.yaml"
    path.write_text(dump_yaml(ft_config(toy_base, train={"steps": 4}, anchor={"type": "kl_rev", "coef": 0.2})))
    runner = CliRunner()
    dry = runner.invoke(app(), ["finetune", str(path), "--dry-run", "--set", "train.lr=5e-4"])
    assert dry.exit_code == 0, dry.output
    assert "64 records -> 64 examples" in dry.output and "anchor       kl_rev coef 0.2" in dry.output
    assert not (tmp_path / "run").exists()
    run = runner.invoke(app(), ["finetune", str(path), "--out", str(tmp_path / "run")])
    assert run.exit_code == 0, run.output
    assert "done: 4 steps" in run.output
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["stage"] == "finetune"
    again = runner.invoke(app(), ["finetune", str(path), "--out", str(tmp_path / "run")])
    assert "already complete" in again.output


def test_every_shipped_finetune_config_validates():
    configs = sorted((ROOT / "configs" / "finetune").glob("*.yaml"))
    assert len(configs) >= 8
    for p in configs:
        kind, cfg = validate_file(p)
        assert kind == "finetune" and isinstance(cfg, sft.FinetuneConfig), p
    kinds = {p.stem: sft.load_finetune_config(p) for p in configs}
    assert kinds["toyworld_sft_js"].anchor.type == "js" and kinds["toyworld_lora"].lora is not None
    assert kinds["toyworld_sft_replay"].data.replay is not None
