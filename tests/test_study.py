"""`mixlab study`: the shipped SmolLM2 study validates every stage up front, bad configs fail before any
work with the field named, and a small toyworld study with a self-distillation stage runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mixlab.cli import main
from mixlab.errors import ConfigError
from mixlab.study import DISTILL_REF, load_study, run_study

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT / "configs" / "studies" / "smollm2_gsm8k.yaml"


def test_smollm2_study_config_validates_every_stage():
    study = load_study(SMOLLM2)
    assert list(study.finetune) == ["sft", "lora", "sft_kl", "sft_replay", "self_distill", "grpo"]
    assert study.base == "smollm2-135m" and study.pretrain is None and study.reference == "sft"
    # every method starts from the base and reads the data build, except self-distillation (its own answers)
    assert all(d["model"]["base"] == "<base>" for d in study.finetune.values())
    assert study.finetune["sft"]["data"]["build"] == "<data>"
    assert study.finetune["self_distill"]["data"]["records"] == DISTILL_REF
    assert "build" not in study.finetune["self_distill"]["data"]
    assert study.uses_distill("self_distill") and not study.uses_distill("sft")
    # the distillation stage samples the same training questions from the base itself
    assert study.distill["teacher"]["model"] == "<base>" and study.distill["data"]["max_records"] == 128
    assert "{solution}" in study.distill["guide"] and study.distill["data"]["build"] == "<data>"
    assert study.finetune["sft_replay"]["data"]["replay"] == {"source": "corpus:wikitext2", "ratio": 0.2}
    assert study.finetune["grpo"]["grpo"]["rewards"] == ["numeric"]
    # forgetting10 without HellaSwag (no local copy) plus the two GSM8K targets, with per-task limits
    names = study.eval.task_names()
    assert "hellaswag" not in names and len(names) == 11
    assert study.targets == ["gsm8k_cot_chat", "gsm8k_gold_bpb_0shot"]
    sweep = study.sweep_config(Path("/tmp/out"))
    assert sweep.limit == 50 and sweep.limits["ifeval"] == 20 and sweep.base_models[0].path == "smollm2-135m"
    assert [r.name for r in sweep.runs] == list(study.finetune)


def test_stage_folders_follow_what_determines_them():
    a = load_study(SMOLLM2)
    b = load_study(SMOLLM2, ["methods.sft_kl.anchor.coef=2.0"])
    c = load_study(SMOLLM2, ["distill.sampling.k=8"])
    out = Path("/tmp/out")
    assert a.run_dir(out, "sft") == b.run_dir(out, "sft") and a.run_dir(out, "sft_kl") != b.run_dir(out, "sft_kl")
    # new distillation data -> a new self-distillation run, the other runs are reused
    assert a.distill_dir(out) != c.distill_dir(out)
    assert a.run_dir(out, "self_distill") != c.run_dir(out, "self_distill") and a.run_dir(out, "lora") == c.run_dir(out, "lora")
    assert a.sweep_dir(out) != c.sweep_dir(out)


@pytest.mark.parametrize("override, needle", [
    ("reference=dpo", "reference 'dpo' is not one of the methods"),
    ("distill=null", "trains on '@distill' but the study has no `distill:` section"),
    ("eval.targets=[gsm8k]", "eval.targets: gsm8k not among the evaluated tasks"),
    ("eval.limits={arc_eazy: 3}", "eval.limits: arc_eazy not among the evaluated tasks"),
    ("pretrain={model: {size: proxy-0.2m}}", "give exactly one of `base`"),
    ("methods.lora.lora.rr=3", "rr"),
    ("distill.sampling.k=0", "section `distill`"),
])
def test_bad_study_configs_fail_before_any_work(tmp_path, override, needle):
    with pytest.raises(ConfigError) as e:
        load_study(SMOLLM2, [override])
    assert needle in str(e.value)
    assert main(["study", str(SMOLLM2), "--out", str(tmp_path / "s"), "--set", override]) == 2
    assert not (tmp_path / "s").exists()


TINY = {
    "kind": "study", "name": "tiny_self_distill", "seed": 0, "workers": 1, "reference": "sft",
    "pretrain": {
        "model": {"size": "proxy-0.2m"}, "tokenizer": {"kind": "byte"},
        "data": {"sources": {"arithmetic": "toyworld:arithmetic", "prose": "toyworld:prose"},
                 "mixture": {"arithmetic": 0.7, "prose": 0.3}},
        "duration": {"tokens": 65536},
        "train": {"seq_len": 128, "batch_size": 8, "lr": 0.006, "threads": 1, "log_every": 16},
        "eval": {"every": 0}, "checkpoint": {"every": 0},
    },
    "finetune": {"data": {"datasets": ["toyworld_arithmetic"], "max_records": 64, "max_seq_len": 160},
                 "train": {"steps": 6, "batch_size": 8, "lr": 0.0003, "threads": 1, "log_every": 3},
                 "checkpoint": {"every": 3}},
    "distill": {"sampling": {"k": 8, "temperature": 1.0, "max_new_tokens": 8, "stop": ["\n"], "batch_size": 32},
                "keep_per_question": 1},
    "methods": {"sft": {}, "self_distill": {"data": {"records": "@distill"}}},
    "eval": {"tasks": ["toyworld_arithmetic_em", "toyworld_prose_bpb"], "targets": ["toyworld_arithmetic_em"],
             "limit": 16, "limits": {"toyworld_prose_bpb": 5}, "batch_size": 16},
}


@pytest.mark.slow
def test_tiny_study_with_self_distillation_end_to_end(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "study"
    study = load_study(path)
    said: list[str] = []
    res = run_study(study, out, say=said.append)
    # the distillation stage sampled k answers for each of the 64 questions and kept the verified ones
    info = json.loads((study.distill_dir(out) / "info.json").read_text())
    assert info["questions"] == 64 and info["sampled"] == 64 * 8 and 0 < info["kept"] <= 64
    # self-distillation trained on exactly those answers; plain SFT on the 64 ground-truth records
    plans = {m: json.loads((study.run_dir(out, m) / "meta.json").read_text())["plan"] for m in study.finetune}
    assert plans["self_distill"]["records"] == info["kept"] and plans["sft"]["records"] == 64
    # per-task limits: 16 arithmetic items, 5 prose items, on the base and both checkpoints of each run
    for run, step in (("base", 0), ("sft", 3), ("sft", 6), ("self_distill", 6)):
        tasks = study.sweep_dir(out) / "evals" / run / f"step-{step}" / "tasks"
        assert json.loads((tasks / "toyworld_prose_bpb" / "result.json").read_text())["n"] == 5
        assert json.loads((tasks / "toyworld_arithmetic_em" / "result.json").read_text())["n"] == 16
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jobs"]["distill"]["kept"] == info["kept"] and summary["jobs"]["sft"]["steps"] == 6
    assert set(summary["timings"]) == {"data", "pretrain", "finetune", "evaluate", "report"}
    assert [c["run"] for c in summary["contrasts"]] == ["self_distill"]
    assert [s.split(".")[0] for s in said if s[:1].isdigit()] == ["1", "2", "3", "4"]
    assert "Against sft" in res.report_md.read_text()


@pytest.mark.slow
def test_a_resumed_study_starts_distilled_runs_with_the_others(tmp_path, monkeypatch):
    """Once the distilled answers exist, a resumed study does not hold the runs that train on them
    back until every other run has finished: all start in one batch."""
    import shutil

    import mixlab.runs.launch as launch

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "study"
    study = load_study(path)
    run_study(study, out, say=lambda m: None)
    for m in study.finetune:  # both runs lost, the distillation kept
        shutil.rmtree(study.run_dir(out, m))
    batches: list[list[str]] = []
    real = launch.run_jobs

    def recording(launcher, jobs, *a, **kw):
        batches.append([j.name for j in jobs])
        return real(launcher, jobs, *a, **kw)

    monkeypatch.setattr(launch, "run_jobs", recording)
    run_study(load_study(path), out, say=lambda m: None)
    assert len(batches) == 1 and batches[0][0] == "distill" and sorted(batches[0][1:]) == ["self_distill", "sft"]
    assert all((study.run_dir(out, m) / "meta.json").is_file() for m in study.finetune)


def test_widening_the_checkpoint_selection_keeps_the_sweep():
    a = load_study(SMOLLM2)
    b = load_study(SMOLLM2, ["eval.checkpoints.all=true"])
    c = load_study(SMOLLM2, ["eval.limit=30"])
    d = load_study(SMOLLM2, ["eval.tasks=[gsm8k_cot_chat, gsm8k_gold_bpb_0shot, arc_easy]"])
    out = Path("/tmp/out")
    assert a.sweep_dir(out) == b.sweep_dir(out) == d.sweep_dir(out) != c.sweep_dir(out)
    assert "arc_easy" in d.sweep_config(out).tasks
    assert b.sweep_config(out).checkpoints.all and not a.sweep_config(out).checkpoints.all


def test_stage_timings_sum_the_invocations_of_the_same_config():
    """A resume reuses the pretraining (0.0014 s): the stage still cost the first invocation's 45 s;
    an invocation of another config does not count."""
    from mixlab.study import stage_timings

    history = [{"config_hash": "a", "timings": {"data": 0.9, "pretrain": 45.0, "finetune": 30.0, "report": 1.5}},
               {"config_hash": "b", "timings": {"data": 5.0, "pretrain": 99.0}},
               {"timings": {"pretrain": 7.0}}]  # written before invocations recorded their config
    now = {"data": 0.01, "pretrain": 0.0014, "finetune": 20.0}
    assert stage_timings(history, "a", now) == pytest.approx({"data": 0.91, "pretrain": 45.0014, "finetune": 50.0,
                                                              "report": 1.5})
    assert stage_timings([], "a", now) == now
