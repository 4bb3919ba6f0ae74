"""GRPO through trl with mixlab's verifiers as rewards: the reward rises, the run keeps mixlab's layout."""

from __future__ import annotations

import json

import orjson
import pytest

from mixlab.data.records import Record
from mixlab.train import checkpoint, sft
from tests.test_finetune_run import toy_base  # noqa: F401 - session fixture

# True sums and differences whose answer is 1: the tiny test base's favourite digit, so it is right on
# a few percent of samples (groups have variance) and GRPO has something to reinforce.
ONE = [f"What is {a} - {a - 1}?" for a in range(1, 10)] + ["What is 0 + 1?", "What is 1 + 0?"]


def one_records(path):
    rows = [Record(id=f"ones/{i}", dataset="ones", domain="arithmetic", question=q, reference_answer="1",
                   answer_type="numeric").to_dict() for i, q in enumerate(ONE)]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def grpo_config(base, records, **over) -> sft.FinetuneConfig:
    data = {
        "seed": 0, "method": "grpo", "model": {"base": str(base)},
        "data": {"records": str(records)},
        "train": {"steps": 24, "batch_size": 8, "lr": 3e-3, "threads": 1, "log_every": 4,
                  "schedule": {"kind": "constant", "warmup": 0}},
        "grpo": {"rewards": ["numeric"], "num_generations": 8, "max_completion_length": 3, "stop": ["\n"], "beta": 0.0},
        "checkpoint": {"every": 12},
    }
    for k, v in over.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return sft.FinetuneConfig.model_validate(data)


def rows(run, kind="train"):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.slow
def test_grpo_raises_the_verifier_reward_and_writes_sft_style_checkpoints(toy_base, tmp_path):
    cfg = grpo_config(toy_base, one_records(tmp_path / "ones.jsonl"))
    result = sft.finetune(cfg, tmp_path / "run")
    log = rows(tmp_path / "run")
    assert [r["step"] for r in log] == [4, 8, 12, 16, 20, 24]
    first, last = log[0]["reward_mean"], max(r["reward_mean"] for r in log[-2:])
    assert first < 0.3 and last > first + 0.2, [r["reward_mean"] for r in log]
    for r in log:  # the quantities the issue asks for, logged every log_every steps
        assert 0 <= r["frac_zero_variance_groups"] <= 1 and r["reward_std"] >= 0
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "run")] == [12, 24]
    assert result.steps == 24 and result.final_checkpoint == tmp_path / "run" / "checkpoints" / "step-24"
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(result.final_checkpoint))  # a plain Hugging Face folder
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["plan"]["verifiers"] == ["numeric"]
    again = sft.finetune(cfg, tmp_path / "run")  # a finished run is not redone
    assert again.skipped and len(rows(tmp_path / "run")) == len(log)


def test_grpo_with_lora_and_a_kl_term_writes_adapters_and_a_merged_model(toy_base, tmp_path):
    cfg = grpo_config(toy_base, one_records(tmp_path / "ones.jsonl"), train={"steps": 2, "log_every": 1},
                      grpo={"beta": 0.1, "loss_type": "grpo"}, checkpoint={"every": 1},
                      lora={"r": 4, "target_modules": ["q_proj", "v_proj"]})
    result = sft.finetune(cfg, tmp_path / "run")
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "run")] == [1, 2]
    assert (result.final_checkpoint / "adapter_config.json").is_file()
    assert (tmp_path / "run" / "merged" / "config.json").is_file()
    log = rows(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2] and all("kl" in r for r in log)
    with pytest.raises(Exception, match="lora.target_modules: the model has no module"):
        sft.prepare(grpo_config(toy_base, tmp_path / "ones.jsonl", lora={"target_modules": ["c_attn"]}))


@pytest.mark.slow
def test_a_grpo_run_killed_with_sigkill_resumes_from_its_last_checkpoint(toy_base, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = grpo_config(toy_base, one_records(tmp_path / "ones.jsonl"), train={"steps": 8, "log_every": 1},
                      checkpoint={"every": 2})
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    run = tmp_path / "run"
    code = ("import sys, json; from mixlab.train import sft; "
            "sft.finetune(sft.FinetuneConfig.model_validate(json.load(open(sys.argv[1]))), sys.argv[2])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cfg.json"), str(run)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if (run / "trainer" / "checkpoint-4" / "trainer_state.json").is_file():
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "meta.json").read_text())["status"] == "running"
    done_before = [s for s, _ in checkpoint.list_checkpoints(run)]
    assert 4 in done_before and 8 not in done_before, done_before
    result = sft.finetune(cfg, run)
    assert result.steps == 8 and not result.skipped
    meta = json.loads((run / "meta.json").read_text())
    assert meta["resumed_from"].endswith(f"checkpoint-{max(s for s in done_before if s % 2 == 0)}")
    steps = [r["step"] for r in rows(run)]
    assert steps == list(range(1, 9))  # no duplicated or lost rows across the kill
    assert [s for s, _ in checkpoint.list_checkpoints(run)] == [2, 4, 6, 8]


def test_grpo_early_stopping_evaluates_keeps_the_best_and_stops(toy_base, tmp_path):
    cfg = grpo_config(toy_base, one_records(tmp_path / "ones.jsonl"), train={"steps": 6, "log_every": 1},
                      checkpoint={"every": 0},
                      early_stop={"tasks": ["toyworld_arithmetic_bpb"], "metric": "bpb", "every": 1, "patience": 1,
                                  "limit": 8, "min_delta": 10.0})
    result = sft.finetune(cfg, tmp_path / "run")
    # min_delta 10 bits: no evaluation after the first can count as better, so patience 1 stops at step 2
    assert result.stopped_early and result.steps == 2
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert [s for s, _ in meta["evaluations"]] == [1, 2] and meta["best_step"] == 1
    assert meta["baseline"]["toyworld_arithmetic_bpb"]["bpb"] > 0
    assert json.loads((tmp_path / "run" / "best" / "trainer_state.json").read_text())["step"] == 1
    evals = rows(tmp_path / "run", "eval")
    assert [r["step"] for r in evals] == [1, 2] and all(r["score"] == r["toyworld_arithmetic_bpb/bpb"] for r in evals)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "run")] == [2]
