"""The quickstart: its config is checked before any work, and a shortened run goes end to end (data,
pretraining, every method, the sweep, the report) and resumes without recomputing anything."""

from __future__ import annotations

import json

import pytest

from mixlab.cli import main
from mixlab.errors import ConfigError
from mixlab.quickstart import default_config_path, load_quickstart_config, run_quickstart

SHORT = [
    "workers=1", "pretrain.duration.tokens=24576", "pretrain.train.seq_len=128", "pretrain.train.log_every=8",
    "finetune.train.steps=12", "finetune.train.batch_size=8", "finetune.checkpoint.every=6",
    "finetune.train.log_every=6", "eval.limit=12", "eval.tasks=[toyworld_people_em]",
    "methods.grpo.train.steps=12", "methods.grpo.checkpoint.every=6", "methods.grpo.grpo.num_generations=4",
]


def test_packaged_config_validates_every_stage():
    study = load_quickstart_config()
    assert study.config.target == "people" and study.config.reference in study.finetune
    assert {"sft", "lora", "sft_kl", "sft_replay", "grpo"} <= set(study.finetune)
    assert study.data.domains["people"].datasets.keys() == {"toyworld_people"}
    assert set(study.data.contamination.benchmarks) == {"toyworld_arithmetic", "toyworld_code", "toyworld_prose"}
    assert study.targets == ["toyworld_people_bpb", "toyworld_people_mc", "toyworld_people_em"]
    # replay follows the target: the other domains' text
    assert study.finetune["sft_replay"]["data"]["replay"]["source"] == [
        "toyworld:arithmetic", "toyworld:code", "toyworld:prose"]
    other = load_quickstart_config(None, ["target=prose", "methods.grpo=null"])
    assert "grpo" not in other.finetune and other.targets[0] == "toyworld_prose_bpb"
    assert other.finetune["sft_replay"]["data"]["replay"]["source"] == [
        "toyworld:arithmetic", "toyworld:people", "toyworld:code"]
    assert default_config_path().read_text().startswith("# mixlab quickstart")


def test_stage_directories_are_named_by_what_determines_them(tmp_path):
    a = load_quickstart_config()
    b = load_quickstart_config(None, ["methods.sft_kl.anchor.coef=1.0"])
    c = load_quickstart_config(None, ["pretrain.train.lr=0.003"])
    assert a.run_dir(tmp_path, "sft") == b.run_dir(tmp_path, "sft") != c.run_dir(tmp_path, "sft")
    assert a.run_dir(tmp_path, "sft_kl") != b.run_dir(tmp_path, "sft_kl")
    assert a.base_dir(tmp_path) == b.base_dir(tmp_path) != c.base_dir(tmp_path)
    assert a.sweep_dir(tmp_path) != b.sweep_dir(tmp_path)
    assert a.run_dir(tmp_path, "sft").name.startswith("sft-") and a.run_dir(tmp_path, "sft").parent.name == "runs"


def test_bad_values_fail_before_any_work_and_name_the_section(tmp_path):
    with pytest.raises(ConfigError, match=r"methods\.sft_kl.*anchor\.type"):
        load_quickstart_config(None, ["methods.sft_kl.anchor.type=kl2"])
    with pytest.raises(ConfigError, match="unknown toyworld domain 'peple'"):
        load_quickstart_config(None, ["target=peple"])
    with pytest.raises(ConfigError, match="reference 'dpo' is not one of the methods"):
        load_quickstart_config(None, ["reference=dpo"])
    with pytest.raises(ConfigError, match=r"section `pretrain`.*train\.lrr"):
        load_quickstart_config(None, ["pretrain.train.lrr=1"])
    with pytest.raises(ConfigError, match="unknown task"):
        load_quickstart_config(None, ["eval.tasks=[toyworld_people_exact]"])
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--set", "target=peple"]) == 2
    assert not (tmp_path / "q").exists()


@pytest.mark.slow
def test_short_quickstart_end_to_end_and_resume(tmp_path):
    out = tmp_path / "qs"
    study = load_quickstart_config(None, SHORT)
    said: list[str] = []
    res = run_quickstart(study, out, say=said.append)
    methods = list(study.finetune)
    # every stage left its output
    assert (out / "data" / "info.json").is_file() and (study.base_dir(out) / "final" / "config.json").is_file()
    for m in methods:
        meta = json.loads((study.run_dir(out, m) / "meta.json").read_text())
        assert meta["status"] == "complete" and meta["steps"] == 12
    # every checkpoint (steps 6 and 12) of every method and the base were evaluated on every task
    from mixlab.runs import sweep as S

    done, total = S.progress_counts(S.resolve(study.sweep_config(out)))
    n_tasks = 8 + 1
    assert done == total == (1 + 2 * len(methods)) * n_tasks
    # the report and its figures, with the contrast against plain SFT and the finding on top
    md = res.report_md.read_text()
    assert "Against sft (paired, final checkpoints)" in md and md.count("Finding:") == 1
    assert (out / "report.html").is_file() and res.figures and all(f.is_file() for f in res.figures)
    summary = json.loads((out / "summary.json").read_text())
    assert {c["run"] for c in summary["contrasts"]} == set(methods) - {"sft"}
    assert set(summary["timings"]) == {"data", "pretrain", "finetune", "evaluate", "report"}
    # fine-tuning on people lowered people bits-per-byte for plain SFT (read from the per-task result files)
    def bpb(run: str, step: int) -> float:
        path = study.sweep_dir(out) / "evals" / run / f"step-{step}" / "tasks" / "toyworld_people_bpb" / "result.json"
        return json.loads(path.read_text())["metrics"]["bpb"]

    assert bpb("sft", 12) < bpb("base", 0)
    assert summary["contrasts"][0]["reference_gain"] is not None
    assert any(line.startswith("5. Writing the report") for line in said)

    # resume: nothing is trained or evaluated again, and the report is the same
    said.clear()
    res2 = run_quickstart(study, out, say=said.append)
    assert any("already done" in s for s in said) and any("(0 results to compute)" in s for s in said)
    # the same report, except the wall time per stage, which now adds the resume's own (short) checks
    cut = lambda text: text.split("**Wall time per stage**")[0] + text.split("**Runtime per run**")[1]  # noqa: E731
    assert cut(res2.report_md.read_text()) == cut(md)
    # each invocation's timings are kept: the first run's training time is not lost to the resume
    summary2 = json.loads((out / "summary.json").read_text())
    runs = summary2["invocations"]
    assert len(runs) == 2 and runs[0]["timings"]["finetune"] > runs[1]["timings"]["finetune"]
    # and the top-level timings are what each stage cost over both, not the resume's near-zero checks
    for stage in ("data", "pretrain", "finetune", "evaluate"):
        assert summary2["timings"][stage] == pytest.approx(runs[0]["timings"][stage] + runs[1]["timings"][stage])
    assert summary2["timings"]["pretrain"] >= runs[0]["timings"]["pretrain"] > 1.0
    # the headline names what it averages: every target task, including one whose base is 0
    c = summary2["contrasts"][0]
    assert set(c["target_tasks"]) == set(study.targets)
    # left out: only non-target benchmarks where the tiny base scores within one standard error of guessing
    base_dir = study.sweep_dir(out) / "evals" / "base" / "step-0" / "tasks"
    for lo in c["left_out"]:
        assert lo["task"] not in study.targets and lo["reason"].startswith("the base is at chance")
        r = json.loads((base_dir / lo["task"] / "result.json").read_text())
        ch = r["chance"]["acc"]
        assert r["metrics"]["acc"] - ch <= (ch * (1 - ch) / r["n"]) ** 0.5
    assert set(c["other_tasks"]).isdisjoint(lo["task"] for lo in c["left_out"])
    assert "Wall time per stage" in md and "## Data" in md and "## Mixtures" in md
