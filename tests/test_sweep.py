"""Sweeps: plan, status (with a failed task's error), store rebuild, kill-and-resume with nothing lost
or duplicated, and two concurrent sweeps computing each result exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner
from transformers import LlamaConfig, LlamaForCausalLM

from mixlab.cli import sweep as sweep_cli
from mixlab.errors import ConfigError
from mixlab.models.tokenizer import byte_tokenizer
from mixlab.runs import store as St
from mixlab.runs import sweep as S
from mixlab.train import checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "eval" / "boundary.jsonl"
ROOT = Path(__file__).resolve().parents[1]

# A driver that runs one sweep worker and logs every task it actually scores (not reuses) to a
# counter file: (unit folder, task), one line per scoring, appended with O_APPEND.
DRIVER = r"""
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
torch.set_num_threads(1)
from mixlab.eval import runner
from mixlab.runs import sweep as S
cfg_path, counter = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:  # start barrier: say ready, wait for the go file (so sweeps really overlap)
    import pathlib, time
    barrier = pathlib.Path(sys.argv[3])
    (barrier / f"ready-{os.getpid()}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.01)
current = {}
orig_eval, orig_score = runner.evaluate, runner.score_task
def evaluate(loaded, specs, out_dir, *a, **k):
    current["dir"] = str(out_dir)
    return orig_eval(loaded, specs, out_dir, *a, **k)
def score_task(spec, items, scorer, on_progress=None):
    out = orig_score(spec, items, scorer, on_progress)
    with open(counter, "a") as f:
        f.write(json.dumps([current["dir"], spec.name]) + "\n")
    return out
runner.evaluate, runner.score_task = evaluate, score_task
S.work(S.load_sweep_config(cfg_path))
"""


def _model(tok, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, initializer_range=0.3)
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two runs with checkpoints at steps 10, 20, 30, a base model, and three task files (mc, bpb,
    and one with a choice that encodes to no tokens, so it fails while scoring)."""
    root = tmp_path_factory.mktemp("sweep")
    tok = byte_tokenizer()
    for r, run in enumerate(["ft_a", "ft_b"]):
        for step in (10, 20, 30):
            checkpoint.save(checkpoint.step_dir(root / "runs" / run, step), _model(tok, 100 * r + step), None, None,
                            {"step": step}, tok)
    base = root / "base"
    _model(tok, 0).save_pretrained(base)
    tok.save_pretrained(base)
    tasks = root / "tasks"
    tasks.mkdir()
    common = {"data": {"path": str(FIXTURE)}, "prompt": "{{question}}"}
    (tasks / "tiny_mc.yaml").write_text(yaml.safe_dump({"name": "tiny_mc", "kind": "mc", "metrics": ["acc", "acc_norm"], **common}))
    (tasks / "tiny_bpb.yaml").write_text(yaml.safe_dump({"name": "tiny_bpb", "kind": "bpb", "metrics": ["bpb"],
                                                         "target": "{{ choices[label] }}", **common}))
    # a choice that encodes to no tokens at all makes this task fail while it is scored, on every checkpoint
    (root / "empty.jsonl").write_text(json.dumps({"question": "a", "choices": ["", "y"], "label": 0}) + "\n")
    (tasks / "broken.yaml").write_text(yaml.safe_dump({"name": "broken", "kind": "mc", "metrics": ["acc"],
                                                       "data": {"path": str(root / "empty.jsonl")}, "prompt": "{{question}}",
                                                       "target_delimiter": ""}))
    return root


def _config(world: Path, out: Path, tasks=("tiny_mc", "tiny_bpb"), **over) -> Path:
    cfg = {"name": "t", "out": str(out), "runs": [str(world / "runs" / "*")],
           "base_models": [{"name": "base", "path": str(world / "base")}],
           "checkpoints": {"all": True, "steps": [0]}, "tasks": [str(world / "tasks" / f"{t}.yaml") for t in tasks],
           "batch_size": 4, "heartbeat_s": 0.5, "claim_timeout_s": 30} | over
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def _values(rows):
    return sorted((r.run, r.step, r.task, r.metric, r.value, r.n, r.stderr) for r in rows)


@pytest.fixture(scope="module")
def reference(world):
    """An uninterrupted in-process sweep with the failing task included."""
    out = world / "reference"
    cfg = S.load_sweep_config(_config(world, out, tasks=("tiny_mc", "tiny_bpb", "broken")))
    report = S.work(cfg)
    return cfg, report


def test_plan_selects_checkpoints_and_aliases_step0_to_the_base(world):
    cfg = S.load_sweep_config(_config(world, world / "plan"), ["checkpoints={every: 2, last: true, steps: [0]}"])
    exp = S.resolve(cfg)
    got = sorted((c.run, c.step, c.unit.same_as) for c in exp.checkpoints)
    assert got == [("base", 0, None), ("ft_a", 0, "base/step-0"), ("ft_a", 20, None), ("ft_a", 30, None),
                   ("ft_b", 0, "base/step-0"), ("ft_b", 20, None), ("ft_b", 30, None)]
    assert [u.unit for u in exp.units][0] == "base/step-0" and len(exp.units) == 5  # aliases compute nothing
    assert S.CheckpointSelect(every=3, last=False).select([5, 10, 15, 20, 25, 30, 35]) == [15, 30]


@pytest.mark.parametrize("override, message", [
    ("runs=[/nonexistent/run*]", "matches no directory"),
    ("checkpoints.steps=[15]", "has no checkpoint at step 15; it has steps 10, 20, 30"),
    ("base_models=[]", "step 0 needs a base model"),
])
def test_config_errors_name_the_field(world, override, message):
    cfg = S.load_sweep_config(_config(world, world / "bad"), [override])
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        S.resolve(cfg)


def test_sweep_results_status_failed_error_and_rerun(world, reference):
    cfg, report = reference
    assert len(report.computed) == 7 * 2 and not report.reused  # 6 checkpoints + base, 2 good tasks
    assert sorted(t for _, t, _ in report.failed) == ["broken"] * 7
    assert "encodes to zero tokens" in report.failed[0][2]

    with St.Store(Path(cfg.out) / "store.sqlite") as store:
        rows = store.results(run="ft_a", task="tiny_bpb")
        assert [(r.step, r.metric) for r in rows] == [(0, "bpb"), (0, "bpb_corpus"), (10, "bpb"), (10, "bpb_corpus"),
                                                      (20, "bpb"), (20, "bpb_corpus"), (30, "bpb"), (30, "bpb_corpus")]
        assert all(not r.higher_is_better and r.base_model == "base" and r.n == 8 for r in rows)
        step0 = store.results(run="ft_a", step=0, task="tiny_bpb", metric="bpb")[0]
        assert step0.value == store.results(run="base", task="tiny_bpb", metric="bpb")[0].value
        # the per-item file holds the items behind the mean
        items = St.load_items(step0.items, "bpb")
        assert len(items) == 8 and sum(items.values()) / 8 == pytest.approx(step0.value)
        acc = store.results(run="ft_b", step=20, task="tiny_mc", metric="acc")[0]
        assert acc.higher_is_better and acc.task_version.startswith("v1/") and 0 <= acc.value <= 1

    summary = json.loads((Path(cfg.out) / "evals" / "ft_b" / "step-20" / "results.json").read_text())
    assert summary["tiny_mc"]["acc"] == acc.value and "zero tokens" in summary["broken"]["error"]

    states = S.status(cfg)
    assert {c.state for c in states} == {"failed"}
    assert all(c.done == 2 and c.failed == 1 and "zero tokens" in c.errors["broken"] for c in states)

    # status table through the CLI command (a fresh typer app, as the lead wires it)
    app = typer.Typer()
    sweep_cli.register(app)
    res = CliRunner().invoke(app, ["status", str(_config(world, Path(cfg.out), tasks=("tiny_mc", "tiny_bpb", "broken"))),
                                   "--checkpoints"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "ft_a" in ln]
    assert len(lines) == 4 and all("2/3" in ln and "failed" in ln for ln in lines)
    assert "broken: ValueError: item 0: a continuation encodes to zero tokens" in res.output

    # without the failing task the experiment is done; re-running computes nothing
    ok_cfg = S.load_sweep_config(_config(world, Path(cfg.out)))
    assert {c.state for c in S.status(ok_cfg)} == {"done"}
    again = S.work(ok_cfg)
    assert again.computed == [] and again.failed == []
    res = CliRunner().invoke(app, ["status", str(_config(world, Path(cfg.out)))], env={"COLUMNS": "200"})
    assert "ft_b" in res.output and "4/4 ckpts, 8/8 tasks" in res.output and "done" in res.output


def test_rebuild_from_files_equals_live_store(reference, tmp_path):
    cfg, _ = reference
    with St.Store(Path(cfg.out) / "store.sqlite") as live:
        want_rows, want_tasks, want_units = live.results(), live.task_rows(), live.units()
    rebuilt = St.rebuild(tmp_path / "rebuilt.sqlite", [Path(cfg.out) / "evals"])

    def strip(rows):  # a failure's time is when it was recorded live, the error file's mtime rebuilt
        return [{k: v for k, v in r.items() if k != "updated"} for r in rows]

    assert rebuilt.results() == want_rows and len(want_rows) == 9 * 4  # 9 checkpoints (2 alias the base) x 4 metrics
    assert strip(rebuilt.task_rows()) == strip(want_tasks) and rebuilt.units() == want_units
    rebuilt.close()


def _start(cfg_path: Path, counter: Path, barrier: Path | None = None) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    extra = [str(barrier)] if barrier else []
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(cfg_path), str(counter), *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _start_together(cfg_path: Path, counter: Path, barrier: Path, n: int = 2) -> list[subprocess.Popen]:
    """``n`` sweeps of one experiment released at the same moment (each waits at the barrier until
    all are ready), so they really race for the same work."""
    barrier.mkdir()
    procs = [_start(cfg_path, counter, barrier) for _ in range(n)]
    while len(list(barrier.glob("ready-*"))) < n and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    (barrier / "go").touch()
    return procs


def _lines(counter: Path) -> list[tuple[str, str]]:
    if not counter.is_file():
        return []
    return [tuple(json.loads(ln)) for ln in counter.read_text().splitlines() if ln.strip()]


def _check_complete(cfg: S.SweepConfig, reference_cfg: S.SweepConfig) -> list[dict]:
    """The store holds exactly the reference's (unit, task) rows, all done with the same result key,
    the same numbers, and one computed-or-reused event each (each result recorded exactly once)."""
    exp = S.resolve(cfg)
    expected = {(u.unit, t) for u in exp.units for t, _ in exp.task_keys()}
    assert len(expected) == 14
    with St.Store(Path(cfg.out) / "store.sqlite") as store, \
            St.Store(Path(reference_cfg.out) / "store.sqlite") as ref:
        tasks, rows, events = store.task_rows(), store.results(), store.events()
        ref_tasks, ref_rows = ref.task_rows(), ref.results()
    # rows first: results() reaches numbers only through done task rows, so compare those directly
    have = {(t["unit"], t["task"]): (t["status"], t["key"], t["task_hash"]) for t in tasks}
    assert len(have) == len(tasks) and set(have) == expected, sorted(expected ^ set(have))
    assert have == {(t["unit"], t["task"]): (t["status"], t["key"], t["task_hash"])
                    for t in ref_tasks if (t["unit"], t["task"]) in expected}
    assert {status for status, _, _ in have.values()} == {"done"}
    want = [r for r in _values(ref_rows) if r[2] != "broken"]
    assert len(want) == 9 * 4 and _values(rows) == want  # nothing lost, values equal an uninterrupted run
    files = sorted(Path(cfg.out).glob("evals/*/step-*/tasks/*/result.json"))
    assert len(files) == 14
    finished = Counter((e["unit"], e["task"]) for e in events if e["event"] in ("computed", "reused"))
    assert set(finished) == expected and set(finished.values()) == {1}, finished  # each recorded exactly once
    return events


@pytest.mark.slow
def test_kill_and_resume_loses_and_duplicates_nothing(world, reference, tmp_path):
    cfg_path = _config(world, tmp_path / "killed")
    cfg = S.load_sweep_config(cfg_path)
    counter = tmp_path / "scored.log"
    kills = 0
    for target in (2, 5, 9):  # SIGKILL after this many scorings, wherever the worker then is
        proc = _start(cfg_path, counter)
        while len(_lines(counter)) < target and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert 0 < S.progress_counts(S.resolve(cfg))[0] < 14
    proc = _start(cfg_path, counter)
    assert proc.wait(timeout=180) == 0, proc.stderr.read().decode()

    events = _check_complete(cfg, reference[0])
    scored = Counter(_lines(counter))
    assert len(scored) == 14
    # a pair is scored twice only when a kill caught it after scoring but before its result was stored
    assert sum(scored.values()) - 14 <= kills
    # the killed workers' claims were taken over at once (their pids are gone)
    assert {e["owner"].split(":")[1] for e in events if e["event"] == "claimed"} >= {str(proc.pid)}
    assert {s.state for s in S.status(cfg)} == {"done"}


class _Killed(BaseException):
    """Stands in for SIGKILL: no ``except Exception`` in the worker catches it."""


def test_result_written_but_not_recorded_is_recorded_once_on_restart(world, reference, tmp_path, monkeypatch):
    """A worker dies between the runner's atomic write of ``result.json`` and the database insert:
    the next worker records that file at start-up without scoring it again, and logs it once."""
    cfg = S.load_sweep_config(_config(world, tmp_path / "cut"), ["checkpoints={last: true, steps: [0]}"])
    exp = S.resolve(cfg)
    assert [u.unit for u in exp.units] == ["base/step-0", "ft_a/step-30", "ft_b/step-30"]
    real_add, calls = St.Store.add_result, []

    def dies_before_recording(self, unit, result, path, *a, **k):
        calls.append((unit, result["task"]["name"], Path(path)))
        if len(calls) == 2:
            raise _Killed
        return real_add(self, unit, result, path, *a, **k)

    monkeypatch.setattr(St.Store, "add_result", dies_before_recording)
    with pytest.raises(_Killed):
        S.work(cfg)
    monkeypatch.undo()
    lost_unit, lost_task, lost_file = calls[1]
    assert lost_file.is_file()
    with St.Store(exp.store_path) as store:
        assert [(t["unit"], t["task"]) for t in store.task_rows()] == [calls[0][:2]]
        # while another live worker holds the claim, the file is its to record: start-up leaves it
        hashes = dict(exp.task_keys())
        assert store.try_claim(lost_unit, [(lost_task, hashes[lost_task])], "other", 30, None) == lost_task
        assert store.sync_unit_dir(Path(lost_file).parents[2], "me", 30) == []
        assert len(store.task_rows()) == 1
        store.release("other")  # the claimer died (SIGKILLed claims are dead: their pid is gone)

    report = S.work(cfg)
    assert report.reused == [(lost_unit, lost_task)] and len(report.computed) == 4 and not report.failed
    with St.Store(exp.store_path) as store, St.Store(Path(reference[0].out) / "store.sqlite") as ref:
        rows = {(t["unit"], t["task"]): t["status"] for t in store.task_rows()}
        assert rows == {(u.unit, t): "done" for u in exp.units for t in hashes}
        assert _values(store.results()) == [r for r in _values(ref.results())
                                            if r[2] != "broken" and r[1] in (0, 30)]
        finished = [(e["unit"], e["task"], e["event"]) for e in store.events() if e["event"] in ("computed", "reused")]
        assert sorted(finished) == sorted([(*calls[0][:2], "computed"), (lost_unit, lost_task, "reused"),
                                           *((u, t, "computed") for u, t in report.computed)])
        assert len(finished) == 6
        # a file its worker records after another's start-up scan is not recorded a second time
        monkeypatch.setattr(St.Store, "_done_tasks", lambda self, unit: set())
        assert store.sync_unit_dir(Path(lost_file).parents[2], "late", 30) == []
        assert not [e for e in store.events() if e["owner"] == "late"]


@pytest.mark.slow
def test_two_concurrent_sweeps_compute_each_result_once(world, reference, tmp_path):
    cfg_path = _config(world, tmp_path / "concurrent")
    cfg = S.load_sweep_config(cfg_path)
    counter = tmp_path / "scored.log"
    procs = _start_together(cfg_path, counter, tmp_path / "barrier")
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read().decode()

    events = _check_complete(cfg, reference[0])
    scored = Counter(_lines(counter))
    assert len(scored) == 14 and set(scored.values()) == {1}  # each (checkpoint, task) scored once
    assert not [e for e in events if e["event"] == "reclaimed"]
    owners = Counter(e["owner"] for e in events if e["event"] == "computed")
    assert len(owners) == 2, owners  # both sweeps did part of the work


@pytest.mark.slow
def test_local_backend_workers_share_one_sweep(world, reference, tmp_path):
    cfg = S.load_sweep_config(_config(world, tmp_path / "local", workers=2))
    reports = S.run_sweep(cfg)
    assert len(reports) == 2 and sum(len(r.computed) for r in reports) == 14
    _check_complete(cfg, reference[0])


def test_report_from_a_finished_sweep(world, reference, tmp_path):
    from mixlab.cli import main
    from mixlab.report.collect import collect

    cfg, _ = reference
    results, metas, base = collect(cfg)
    assert base == {"ft_a": "base", "ft_b": "base"}
    assert {m.run for m in metas} == {"base", "ft_a", "ft_b"}
    mc = [r for r in results if r.run == "ft_a" and r.step == 30 and r.metric == "acc"]
    assert len(mc) == 1 and len(mc[0].items) == mc[0].n  # per-item scores read lazily from items.jsonl
    out = tmp_path / "report"
    assert main(["report", str(world / "reference.yaml"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "ft_a" in md and "ft_b" in md and "tiny_mc" in md
    html = (out / "report.html").read_text()
    assert html.count("<table") >= 2 and "data:image/png;base64," in html
