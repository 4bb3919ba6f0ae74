"""A task that fails makes `mixlab eval` and `mixlab sweep` exit 1 and end with what failed and why;
a task skipped for missing data does not (it is reported with the path looked for)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import tiny_lm  # noqa: E402

from mixlab.cli import main  # noqa: E402
from mixlab.eval.runner import failed_tasks  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model and three tasks: one that scores, one whose data is not here, and one that
    crashes while it is scored (an IFEval-scored task whose references lack IFEval's `key`: the
    answers are generated, then checking them fails)."""
    root = tmp_path_factory.mktemp("outcome")
    model = tiny_lm.build(root / "model")
    common = {"data": {"path": str(FIXTURES / "boundary.jsonl")}, "prompt": "{{question}}"}
    tasks = {
        "fine": {"name": "fine", "kind": "mc", "metrics": ["acc"], **common},
        "gone": {"name": "gone", "kind": "mc", "metrics": ["acc"], "data": {"path": str(root / "nope.jsonl")},
                 "prompt": "{{question}}"},
        "broken": {"name": "broken", "kind": "generate", "metrics": ["prompt_level_strict_acc"], "verifier": "ifeval",
                   "gold": "{'prompt': question}", "generation": {"max_new_tokens": 2, "chat_template": False},
                   **common},
    }
    for name, spec in tasks.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return root, model


def _tasks(root: Path, *names: str) -> str:
    return ",".join(str(root / f"{n}.yaml") for n in names)


def test_eval_with_a_failed_task_exits_1_and_summarizes_it(world, tmp_path, capsys):
    root, model = world
    out = tmp_path / "out"
    args = ["eval", "--model", str(model), "--tasks", _tasks(root, "fine", "broken", "gone"), "--limit", "3",
            "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 of 3 task(s) failed" in err and f"{out / 'tasks'}/<task>/error.json" in err
    assert "  broken: KeyError: 'key'" in err and "fine:" not in err and "gone:" not in err
    results = json.loads((out / "results.json").read_text())
    assert failed_tasks(results) == {"broken": "KeyError: 'key'"}
    assert results["fine"]["n"] == 3 and results["gone"]["skipped"] == "data not found"
    assert "Traceback" in json.loads((out / "tasks" / "broken" / "error.json").read_text())["traceback"]
    # running again retries the failed task (and fails the same way); the finished one is reused
    assert main(args) == 1
    assert "1 of 3 task(s) failed" in capsys.readouterr().err


def test_eval_with_only_finished_and_skipped_tasks_exits_0(world, tmp_path, capsys):
    root, model = world
    out = tmp_path / "out"
    assert main(["eval", "--model", str(model), "--tasks", _tasks(root, "fine", "gone"), "--limit", "3",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "failed" not in captured.err and "skipped" in captured.out


def test_sweep_with_a_failed_task_exits_1_and_summarizes_it(world, tmp_path, capsys):
    root, model = world
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({"name": "outcome", "out": str(tmp_path / "sweep"), "limit": 3,
                                   "base_models": [{"name": "tiny", "path": str(model)}],
                                   "tasks": [str(root / "fine.yaml"), str(root / "broken.yaml")]}))
    assert main(["sweep", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "1 (checkpoint, task) pair(s) failed" in err and f"mixlab status {cfg} --checkpoints" in err
    assert "  tiny step-0 broken: KeyError: 'key'" in err and "fine:" not in err
    # without the broken task the same sweep (the finished result reused) succeeds
    assert main(["sweep", str(cfg), "--set", f"tasks=[{root / 'fine.yaml'}]"]) == 0
    assert "failed" not in capsys.readouterr().err
