"""In-loop evaluation of a pretraining run on evaluation-engine tasks (bits-per-byte and multiple choice)."""

from __future__ import annotations

import json

import pytest

from mixlab.errors import ConfigError
from mixlab.eval.runner import evaluate
from mixlab.eval.tasks import resolve_tasks
from mixlab.models.pretrained import load_model
from mixlab.train import pretrain as P
from tests.test_pretrain_run import tiny_config, write_config

TASKS = ["toyworld_prose_bpb", "toyworld_prose_mc"]


def test_in_loop_tasks_are_logged_and_equal_an_offline_eval_of_the_checkpoint(tmp_path, data_dir):
    cfg = P.load_pretrain_config(write_config(tmp_path, tiny_config(**{"eval.tasks": TASKS, "eval.limit": 20})))
    out = tmp_path / "run"
    P.pretrain(cfg, out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [20, 40]
    last = evals[-1]
    assert {"bpb/mean", "toyworld_prose_bpb/bpb", "toyworld_prose_mc/acc", "toyworld_prose_mc/acc_norm"} <= set(last)
    assert 0 < last["toyworld_prose_bpb/bpb"] < 8
    assert (out / "evals" / "step-40" / "tasks" / "toyworld_prose_mc" / "items.jsonl").is_file()
    # the same numbers as `mixlab eval` on the saved checkpoint
    offline = evaluate(load_model(str(out / "checkpoints" / "step-40")), resolve_tasks(None, TASKS),
                       tmp_path / "offline", limit=20, batch_size=16)
    assert offline["toyworld_prose_bpb"]["bpb"] == pytest.approx(last["toyworld_prose_bpb/bpb"], rel=1e-5)
    assert offline["toyworld_prose_mc"]["acc"] == last["toyworld_prose_mc/acc"]


def test_generative_or_unknown_in_loop_tasks_fail_at_validation(tmp_path):
    with pytest.raises(ConfigError, match="bpb or mc"):
        P.load_pretrain_config(write_config(tmp_path, tiny_config(**{"eval.tasks": ["gsm8k"]})))
    with pytest.raises(ConfigError, match="toyworld_prose_bbp"):
        P.load_pretrain_config(write_config(tmp_path, tiny_config(**{"eval.tasks": ["toyworld_prose_bbp"]})))
