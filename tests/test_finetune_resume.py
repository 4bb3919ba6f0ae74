"""Kill -9 an anchored fine-tuning run after a checkpoint, resume it, and get bit-identical weights on CPU."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

from mixlab.config import dump_yaml
from mixlab.train import checkpoint, sft
from tests.killing import kill_when
from tests.test_finetune_run import ft_config, toy_base  # noqa: F401 - session fixture

STEPS = 60


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "lora"])
def test_kill_and_resume_is_bit_identical(toy_base, tmp_path, method):  # noqa: F811
    extra = {"lora": {"r": 4, "dropout": 0.1}} if method == "lora" else {}  # dropout: RNG state must resume too
    cfg = ft_config(toy_base, method=method, train={"steps": STEPS, "log_every": 5}, checkpoint={"every": 5},
                    anchor={"type": "js", "coef": 0.5, "start_step": 3, "warmup_steps": 10},
                    data={"replay": {"source": "toyworld:prose", "ratio": 0.25}},
                    early_stop={"tasks": ["toyworld_prose_mc"], "every": 20, "patience": None, "limit": 8,
                                "batch_size": 8, "baseline": False}, **extra)
    path = tmp_path / "ft.yaml"
    path.write_text(dump_yaml(cfg))
    killed = tmp_path / "killed"
    code = ("import sys, torch; torch.set_num_threads(1); from mixlab.train import sft; "
            "sft.finetune(sft.load_finetune_config(sys.argv[1]), sys.argv[2])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MIXLAB_CACHE_DIR": str(tmp_path / "cache")}
    kill_when([sys.executable, "-c", code, str(path), str(killed)], env,
              lambda: any(s >= 25 for s, _ in checkpoint.list_checkpoints(killed)), "checkpoint past step 25")
    at_kill = checkpoint.list_checkpoints(killed)[-1][0]
    assert at_kill < STEPS, "the run finished before it could be killed"

    os.environ["MIXLAB_CACHE_DIR"] = str(tmp_path / "cache")
    resumed = sft.finetune(sft.load_finetune_config(path), killed)
    whole = sft.finetune(sft.load_finetune_config(path), tmp_path / "whole")
    assert resumed.steps == whole.steps == STEPS
    name = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    for a_dir, b_dir in ((resumed.final_checkpoint, whole.final_checkpoint), (killed / "merged", tmp_path / "whole" / "merged")):
        if not b_dir.exists():
            continue
        fname = name if a_dir.name != "merged" else "model.safetensors"
        a, b = load_file(str(a_dir / fname)), load_file(str(b_dir / fname))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), a_dir
    meta_k, meta_w = (json.loads((d / "meta.json").read_text()) for d in (killed, tmp_path / "whole"))
    assert meta_k["resumed_from"] == at_kill
    assert meta_k["evaluations"] == meta_w["evaluations"] and len(meta_w["evaluations"]) == 3
    assert meta_k["best_step"] == meta_w["best_step"]
