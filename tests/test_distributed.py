"""Multi-process training (torch.distributed, gloo on CPU): same global batch, same losses, same resume.

The slow tests train the same run in one process and in two (one torch thread each) and compare
every logged step's loss and the final weights; one of them kills a two-process run after a
checkpoint and resumes it with two processes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mixlab.cli import main
from mixlab.config import dump_yaml
from mixlab.errors import ConfigError, MixlabError
from mixlab.train import checkpoint, distributed, sft
from mixlab.train import pretrain as P
from mixlab.train.sft_data import Example, SFTBatches
from tests.killing import kill_when
from tests.test_finetune_run import ft_config, toy_base  # noqa: F401 - session fixture
from tests.test_pretrain_run import tiny_config, write_config

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- sharding and checks (no processes)


def test_split_batch_gives_each_rank_its_share_or_says_what_to_change():
    assert distributed.split_batch(8, None, 2) == (4, 4)
    assert distributed.split_batch(8, 2, 2) == (4, 2)
    assert distributed.split_batch(8, 8, 2) == (4, 4)  # the micro-batch shrinks to the rank's share
    assert distributed.split_batch(16, 4, 1) == (16, 4)
    with pytest.raises(ConfigError, match="batch_size=9 cannot be split evenly over 2 processes"):
        distributed.split_batch(9, None, 2)
    with pytest.raises(ConfigError, match="micro_batch_size=4 does not divide"):
        distributed.split_batch(12, 4, 2)


class _Rows:
    """A stand-in sampler: row ``i`` of the schedule is ``[i, i, i]``."""

    def sequences(self, start: int, count: int) -> torch.Tensor:
        return torch.arange(start, start + count).repeat_interleave(3).view(count, 3)


def test_ranks_of_a_pretraining_step_together_are_the_single_process_batch():
    one = P.PretrainBatches(_Rows(), 8, 2, torch.device("cpu"))
    ranks = [P.PretrainBatches(_Rows(), 8, 2, torch.device("cpu"), r, 2) for r in range(2)]
    for step in (0, 3):
        whole = [mb["tokens"] for mb in one.batch(step)]
        shards = [mb["tokens"] for r in ranks for mb in r.batch(step)]
        assert len(whole) == len(shards) == 4
        assert all(torch.equal(a, b) for a, b in zip(whole, shards))
        assert torch.equal(torch.cat(shards)[:, 0], torch.arange(step * 8, step * 8 + 8))


def test_ranks_of_a_finetuning_step_together_are_the_single_process_batch():
    rng = np.random.default_rng(0)
    examples = [Example(np.arange(n) + 10, np.where(np.arange(n) < 2, -100, np.arange(n) + 10))
                for n in rng.integers(3, 9, size=10)]
    one = SFTBatches(examples, 6, 3, 0, seed=1, device=torch.device("cpu"))
    ranks = [SFTBatches(examples, 6, 3, 0, seed=1, device=torch.device("cpu"), rank=r, world=2) for r in range(2)]
    for step in (0, 1, 4):  # step 1 crosses an epoch boundary of the 10 examples
        whole = one.batch(step)
        shards = [mb for r in ranks for mb in r.batch(step)]
        assert len(whole) == len(shards) == 2
        for a, b in zip(whole, shards):
            assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "labels", "attention_mask"))


def test_launch_checks_refuse_what_cannot_run_here(monkeypatch):
    monkeypatch.setattr(distributed, "cpu_cores", lambda: 2)
    assert distributed.check_launch(2, "cpu") == "gloo"
    with pytest.raises(ConfigError, match="--nproc 3 exceeds the 2 CPU core"):
        distributed.check_launch(3, "cpu")
    with pytest.raises(ConfigError, match="at least 1"):
        distributed.check_launch(0, "cpu")
    with pytest.raises(ConfigError, match="train.device=cuda:1 would put all 2 processes on one GPU"):
        distributed.check_launch(2, "cuda:1")
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="nccl needs train.device on a GPU"):
            distributed.check_launch(1, "cpu", "nccl")
    else:
        with pytest.raises(ConfigError, match="nccl needs CUDA GPUs"):
            distributed.check_launch(2, "auto", "nccl")
        with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
            distributed.check_launch(2, "cuda")


def test_cli_rejects_bad_launches_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(distributed, "cpu_cores", lambda: 2)
    cfg = write_config(tmp_path, tiny_config())
    out = tmp_path / "run"
    assert main(["pretrain", str(cfg), "--out", str(out), "--nproc", "64"]) == 2
    assert "--nproc 64 exceeds the 2 CPU core(s) available" in capsys.readouterr().err.replace("\n", " ")
    assert main(["pretrain", str(cfg), "--out", str(out), "--nproc", "2", "--set", "train.batch_size=9"]) == 2
    assert "train.batch_size=9 cannot be split evenly over 2 processes" in capsys.readouterr().err.replace("\n", " ")
    assert main(["pretrain", str(cfg), "--out", str(out), "--nproc", "2", "--dist-backend", "mpi"]) == 2
    assert "choose auto, nccl or gloo" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["pretrain", str(cfg), "--out", str(out), "--nproc", "2", "--dist-backend", "nccl"]) == 2
        assert "nccl needs CUDA GPUs" in capsys.readouterr().err
    grpo = ROOT / "configs" / "finetune" / "toyworld_grpo.yaml"  # trl-based: trains outside mixlab's loop
    assert main(["finetune", str(grpo), "--out", str(out), "--nproc", "2"]) == 2
    assert "method 'grpo' trains through its own recipe, which --nproc does not launch" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_a_user_error_in_a_worker_comes_back_as_a_mixlab_error_naming_the_rank():
    # each worker calls check_launch(0), which raises a ConfigError there
    with pytest.raises(MixlabError, match=r"^rank [01]: --nproc 0: give at least 1 process$"):
        distributed.launch(distributed.check_launch, 0, nproc=2, backend="gloo", device="cpu")


# ---------------------------------------------------------------- two processes vs one


def _train_rows(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def _assert_same_weights(a_dir: Path, b_dir: Path, name: str, atol: float) -> float:
    a, b = load_file(str(a_dir / name)), load_file(str(b_dir / name))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, worst
    return worst


STEPS = 120


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume_after_a_kill(tmp_path, data_dir):
    cfg_path = write_config(tmp_path, tiny_config(**{
        "duration.tokens": STEPS * 8 * 32, "train.micro_batch_size": 4, "train.log_every": 1,
        "checkpoint.every": 10, "eval.every": 40}))
    cfg = P.load_pretrain_config(cfg_path)
    one = P.pretrain(cfg, tmp_path / "one")

    two = tmp_path / "two"
    cmd = [sys.executable, "-c", "import sys; from mixlab.cli import main; sys.exit(main(sys.argv[1:]))",
           "pretrain", str(cfg_path), "--out", str(two), "--nproc", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    kill_when(cmd, env, lambda: checkpoint.latest(two) is not None, "checkpoint")  # launcher and both workers
    at_kill = checkpoint.list_checkpoints(two)[-1][0]
    assert at_kill < STEPS, "the run finished before it could be killed"

    distributed.run(P.pretrain, cfg, two, nproc=2)  # resume through the Python API (no second CLI start-up)
    meta = json.loads((two / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["world_size"] == 2 and meta["dist_backend"] == "gloo"
    assert meta["resumed_from"] == at_kill and meta["tokens"]["trained"] == one.tokens == STEPS * 8 * 32

    rows_one, rows_two = _train_rows(tmp_path / "one"), _train_rows(two)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == list(range(1, STEPS + 1))
    assert [r["tokens"] for r in rows_two] == [r["tokens"] for r in rows_one]  # tokens of the global batch
    np.testing.assert_allclose([r["loss"] for r in rows_two], [r["loss"] for r in rows_one], rtol=1e-6, atol=0)
    np.testing.assert_allclose([r["grad_norm"] for r in rows_two], [r["grad_norm"] for r in rows_one], rtol=1e-6)
    _assert_same_weights(one.final_checkpoint, two / "checkpoints" / f"step-{STEPS}", "model.safetensors", 1e-6)
    evals = lambda run: [r["bpb/mean"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                         if r["kind"] == "eval"]
    np.testing.assert_allclose(evals(two), evals(tmp_path / "one"), rtol=1e-6)
    assert {p.name for p in (two / "checkpoints").iterdir()} == {f"step-{s}" for s in range(10, STEPS + 1, 10)}


@pytest.mark.slow
def test_two_process_lora_finetuning_with_an_anchor_matches_one_process(toy_base, tmp_path):  # noqa: F811
    """Completions differ in length, so the ranks hold different token counts: the loss must still be
    the mean over every target token of the global batch, as in one process."""
    cfg = ft_config(toy_base, method="lora", lora={"r": 4}, train={"steps": 6, "batch_size": 8, "micro_batch_size": 2,
                                                                    "log_every": 1},
                    anchor={"type": "kl", "coef": 0.5}, checkpoint={"every": 3},
                    early_stop={"tasks": ["toyworld_prose_mc"], "metric": "acc", "every": 3, "patience": None,
                                "limit": 8, "batch_size": 8, "baseline": False})
    os.environ["MIXLAB_CACHE_DIR"] = str(tmp_path / "cache")
    one = sft.finetune(cfg, tmp_path / "one")
    path = tmp_path / "ft.yaml"
    path.write_text(dump_yaml(cfg))
    assert main(["finetune", str(path), "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    two = sft.finetune(cfg, tmp_path / "two")  # complete: returns the finished run without training
    assert two.skipped and two.steps == one.steps == 6
    rows_one, rows_two = _train_rows(tmp_path / "one"), _train_rows(tmp_path / "two")
    assert [r["tokens"] for r in rows_two] == [r["tokens"] for r in rows_one]
    np.testing.assert_allclose([r["loss"] for r in rows_two], [r["loss"] for r in rows_one], rtol=1e-6, atol=0)
    _assert_same_weights(one.final_checkpoint, two.final_checkpoint, "adapter_model.safetensors", 1e-6)
    meta_one = json.loads((tmp_path / "one" / "meta.json").read_text())
    meta_two = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta_two["world_size"] == 2 and meta_two["evaluations"] == meta_one["evaluations"]
    assert (tmp_path / "two" / "best").is_dir() and (tmp_path / "two" / "merged").is_dir()
