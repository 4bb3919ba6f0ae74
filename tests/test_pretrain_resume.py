"""Kill -9 a pretraining run after a checkpoint, resume it, and get bit-identical weights on CPU."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

from mixlab.train import checkpoint
from mixlab.train import pretrain as P
from tests.killing import kill_when
from tests.test_pretrain_run import tiny_config, write_config

STEPS = 200


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path, data_dir):
    cfg_dict = tiny_config(**{"duration.tokens": STEPS * 8 * 32, "checkpoint.every": 10, "eval.every": 50,
                              "train.log_every": 10})
    cfg_path = write_config(tmp_path, cfg_dict)
    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    kill_when([sys.executable, "-c", "import sys; from mixlab.cli import main; sys.exit(main(sys.argv[1:]))",
               "pretrain", str(cfg_path), "--out", str(killed)], env,
              lambda: checkpoint.latest(killed) is not None, "checkpoint", timeout_s=120)
    done_at_kill = [s for s, _ in checkpoint.list_checkpoints(killed)]
    assert done_at_kill and done_at_kill[-1] < STEPS, "the run finished before it could be killed"

    cfg = P.load_pretrain_config(cfg_path)
    resumed = P.pretrain(cfg, killed)
    whole = P.pretrain(cfg, tmp_path / "whole")
    assert resumed.steps == whole.steps == STEPS
    a = load_file(str(resumed.final_checkpoint / "model.safetensors"))
    b = load_file(str(whole.final_checkpoint / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    meta = json.loads((killed / "meta.json").read_text())
    assert meta["resumed_from"] == done_at_kill[-1]
    rows = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["kind"], r["step"]) for r in rows]
    assert len(steps) == len(set(steps))  # rows after the checkpoint were dropped, not duplicated
    whole_rows = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows if r["kind"] == "train"] == [r["loss"] for r in whole_rows if r["kind"] == "train"]
    assert [r["bpb/mean"] for r in rows if r["kind"] == "eval"] == [r["bpb/mean"] for r in whole_rows if r["kind"] == "eval"]
