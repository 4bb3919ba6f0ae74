"""Distillation data: what is kept is exactly what the verifier accepts, and a kill -9 loses no finished sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest

from mixlab.data import toyworld
from mixlab.errors import ConfigError
from mixlab.eval.verifiers import get_verifier
from mixlab.train import distill
from tests.test_finetune_grpo import one_records
from tests.test_finetune_run import toy_base  # noqa: F401 - session fixture


def distill_config(base, records, **over) -> distill.DistillConfig:
    data = {"seed": 0, "teacher": {"model": str(base)}, "data": {"records": str(records)},
            "sampling": {"k": 8, "temperature": 1.0, "max_new_tokens": 4, "stop": ["\n"], "batch_size": 4},
            "threads": 1}
    for k, v in over.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return distill.DistillConfig.model_validate(data)


def mixed_records(tmp_path):
    """The 'answer is 1' questions (the tiny base gets a few right) plus tier-1 toyworld sums."""
    path = one_records(tmp_path / "q.jsonl")
    sums = [r for r in toyworld.records("arithmetic", 200, 0, "train") if r.metadata["tier"] == 1][:12]
    with open(path, "ab") as f:
        f.write(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in sums))
    return path


def test_kept_answers_are_exactly_those_the_verifier_accepts(toy_base, tmp_path):
    cfg = distill_config(toy_base, mixed_records(tmp_path))
    result = distill.distill(cfg, tmp_path / "out")
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    refs = {json.loads(x)["id"]: json.loads(x)["reference_answer"] for x in (tmp_path / "q.jsonl").read_text().splitlines()}
    verify = get_verifier("numeric")
    accepted = {(s["id"], j): c for s in samples for j, c in enumerate(s["completions"])
                if verify(c.split("\n")[0], refs[s["id"]]).correct}
    assert len(samples) == 23 and all(len(s["completions"]) == 8 for s in samples)
    assert len(accepted) > 0  # the check below is not vacuous
    train = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert {(r["metadata"]["distilled_from"], r["metadata"]["sample"]): r["solution"] for r in train} == accepted
    assert result.kept == len(accepted) == len(train)
    info = json.loads((tmp_path / "out" / "info.json").read_text())
    per = info["per_dataset"]
    assert set(per) == {"ones", "toyworld_arithmetic"}
    for name, d in per.items():
        mine = sum(1 for (i, _) in accepted if i.startswith(name + "/"))
        assert d["accepted"] == d["kept"] == mine and d["sampled"] == 8 * d["questions"]
        assert d["pass_rate"] == pytest.approx(mine / d["sampled"])
    assert info["teacher"]["model"] == str(toy_base) and info["sampling"]["k"] == 8
    assert info["verifiers_used"] == ["numeric"]
    assert distill.describe_rates(per)[0].startswith("ones: ")
    # keep_per_question caps what is kept, not what is counted as accepted
    capped = distill.distill(distill_config(toy_base, tmp_path / "q.jsonl", keep_per_question=1), tmp_path / "capped")
    assert capped.kept == len({i for i, _ in accepted})


def test_a_run_killed_with_sigkill_resumes_and_keeps_every_finished_sample(toy_base, tmp_path):
    records = tmp_path / "q.jsonl"
    sums = [r for r in toyworld.records("arithmetic", 400, 0, "train") if r.metadata["tier"] == 1][:60]
    records.write_bytes(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in sums))
    cfg = distill_config(toy_base, records, sampling={"batch_size": 2, "k": 4})
    out = tmp_path / "out"
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    code = ("import sys, json; from mixlab.train import distill; "
            "cfg = distill.DistillConfig.model_validate(json.load(open(sys.argv[1]))); distill.distill(cfg, sys.argv[2])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "cfg.json"), str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    samples = out / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if samples.is_file() and samples.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = samples.read_bytes()
    finished = before[: before.rfind(b"\n") + 1].splitlines()  # rows fully written before the kill
    assert 6 <= len(finished) < 60, "the run was not killed midway; make it longer"
    assert json.loads((out / "meta.json").read_text())["status"] == "running"
    result = distill.distill(cfg, out)
    after = samples.read_bytes().splitlines()
    assert after[: len(finished)] == finished  # every finished sample kept, byte for byte
    ids = [json.loads(x)["id"] for x in after]
    assert len(ids) == len(set(ids)) == 60 and set(ids) == {r.id for r in sums}
    assert json.loads((out / "meta.json").read_text())["resumed_questions"] == len(finished)
    assert result.sampled == 240
    # and the resumed output equals an uninterrupted run's (chunks are seeded by their index)
    fresh = distill.distill(cfg, tmp_path / "fresh")
    assert sorted((tmp_path / "fresh" / "samples.jsonl").read_bytes().splitlines()) == sorted(after)
    assert fresh.kept == result.kept


def test_a_teacher_that_cannot_be_loaded_fails_before_sampling(tmp_path):
    records = one_records(tmp_path / "q.jsonl")
    cfg = distill_config(tmp_path / "no_such_model", records)
    with pytest.raises(ConfigError, match="teacher.model: cannot load"):
        distill.distill(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "samples.jsonl").exists()
    with pytest.raises(ConfigError, match="teacher.model: cannot load 'org/not-in-cache'"):
        distill.prepare(distill_config("org/not-in-cache", records))
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown verifier 'nope'"):
        distill_config(tmp_path, records, verifier="nope")


def test_the_distill_command_prints_pass_rates_and_shipped_configs_validate(toy_base, tmp_path):
    from pathlib import Path

    from typer.testing import CliRunner

    from mixlab.cli import app
    from mixlab.config_kinds import validate_file

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "configs" / "distill").glob("*.yaml")):
        kind, cfg = validate_file(path)
        assert kind == "distill" and isinstance(cfg, distill.DistillConfig), path
    records = one_records(tmp_path / "q.jsonl")
    args = ["distill", str(root / "configs" / "distill" / "toyworld_self.yaml"), "--out", str(tmp_path / "out"),
            "--set", f"teacher.model={toy_base}", "--set", "data.datasets=null", "--set", f"data.records={records}",
            "--set", "data.max_records=null", "--set", "sampling.max_new_tokens=3"]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    info = json.loads((tmp_path / "out" / "info.json").read_text())["per_dataset"]["ones"]
    assert f"ones: {info['accepted']} of {info['sampled']} accepted" in run.output and info["sampled"] == 44
    assert "train.jsonl" in run.output


def test_a_guide_shows_the_teacher_the_reference_and_training_keeps_the_question(toy_base, tmp_path):
    """Self-distillation fine-tuning: the teacher rewrites the reference; the kept record is asked the
    original question, so SFT on it trains the same prompt as plain SFT."""
    guide = "Reference: {solution}\nQ: {question}\nA:"
    sums = [r for r in toyworld.records("arithmetic", 200, 0, "train") if r.metadata["tier"] == 1][:8]
    path = tmp_path / "sums.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in sums))
    cfg = distill_config(toy_base, path, guide=guide, sampling={"k": 8})
    prep = distill.prepare(cfg)
    r = prep.records[0]
    assert prep.prompts[0] == f"Q: Reference: {r.solution or r.reference_answer}\nQ: {r.question}\nA:\nA: "
    # what is kept is asked the original question (verdicts given here: the tiny base rarely copies)
    done = {x.id: {"accepted": [True] + [False] * 7, "completions": ["rewritten"] * 8} for x in prep.records}
    kept = distill.kept_records(prep, done)
    assert [(k.question, k.solution) for k in kept] == [(x.question, "rewritten") for x in sums]
    distill.distill(cfg, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "info.json").read_text())["guide"] == guide
    with pytest.raises(ValueError, match="guide must contain"):
        distill_config(toy_base, path, guide="Rewrite: {solution}")
