"""Runner and CLI: atomic per-task results, per-item JSONL, resume, crash isolation, bpb numbers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import tiny_lm  # noqa: E402

from mixlab.eval import runner  # noqa: E402
from mixlab.eval.tasks import load_task  # noqa: E402
from mixlab.models.pretrained import load_model  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_lm.build(tmp_path_factory.mktemp("tiny") / "model")


def _write(tmp: Path, name: str, **fields) -> Path:
    spec = {"name": name, "kind": "mc", "data": {"path": str(FIXTURES / "boundary.jsonl")},
            "prompt": "{{question}}", "metrics": ["acc", "acc_norm"]} | fields
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_results_items_resume_and_crash_isolation(model_dir, tmp_path, monkeypatch):
    loaded = load_model(str(model_dir))
    ok = load_task(_write(tmp_path, "ok"))
    bpb = load_task(_write(tmp_path, "bits", kind="bpb", metrics=["bpb"]))
    missing = load_task(_write(tmp_path, "gone", data={"path": str(tmp_path / "nope.jsonl")}))
    # a choice that encodes to no tokens at all makes this task fail while scoring
    (tmp_path / "empty.jsonl").write_text(json.dumps({"question": "a", "choices": ["", "y"], "label": 0}) + "\n")
    crash = load_task(_write(tmp_path, "crash", data={"path": str(tmp_path / "empty.jsonl")}, target_delimiter=""))
    out = tmp_path / "out"
    res = runner.evaluate(loaded, [crash, ok, bpb, missing], out, batch_size=4)

    assert set(res) == {"crash", "ok", "bits", "gone"}
    assert "encodes to zero tokens" in res["crash"]["error"]
    assert (out / "tasks" / "crash" / "error.json").is_file()
    assert res["gone"] == {"skipped": "data not found", "path": str(tmp_path / "nope.jsonl")}
    assert res["ok"]["n"] == 8 and 0 <= res["ok"]["acc"] <= 1
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))

    items = [json.loads(line) for line in (out / "tasks" / "ok" / "items.jsonl").read_text().splitlines()]
    assert len(items) == 8 and {"id", "lls", "pred", "gold", "acc", "acc_norm"} <= set(items[0])
    assert res["ok"]["acc"] == pytest.approx(sum(i["acc"] for i in items) / 8)
    result = json.loads((out / "tasks" / "ok" / "result.json").read_text())
    assert result["status"] == "done" and result["items"] == "items.jsonl" and result["model"] == str(model_dir)
    assert result["stderr"]["acc"] > 0
    # guessing: the mean of 1 / choices over the items, beside the metrics (not one of them)
    assert {len(i["lls"]) for i in items} == {4}
    assert result["chance"] == {"acc": 0.25, "acc_norm": 0.25}
    assert "chance" not in result["metrics"]
    assert "chance" not in json.loads((out / "tasks" / "bits" / "result.json").read_text())

    # bpb: per-item value and the byte-weighted corpus figure from the stored NLLs
    rows = [json.loads(line) for line in (out / "tasks" / "bits" / "items.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["bpb"] == pytest.approx(r["nll"] / (r["n_bytes"] * math.log(2)))
    assert res["bits"]["bpb"] == pytest.approx(sum(r["bpb"] for r in rows) / len(rows))
    assert res["bits"]["bpb_corpus"] == pytest.approx(
        sum(r["nll"] for r in rows) / (sum(r["n_bytes"] for r in rows) * math.log(2)))

    # re-run: finished tasks are reused, not scored again
    def boom(*a, **k):
        raise AssertionError("a finished task was scored again")

    monkeypatch.setattr(runner, "score_task", boom)
    again = runner.evaluate(loaded, [ok, bpb], out, batch_size=4)
    assert again["ok"] == res["ok"] and again["bits"] == res["bits"]


def test_bpb_of_one_item_matches_a_plain_forward(model_dir, tmp_path):
    """The engine's NLL equals a direct transformers forward over the same tokens."""
    loaded = load_model(str(model_dir))
    spec = load_task(_write(tmp_path, "b", kind="bpb", metrics=["bpb"]))
    res = runner.evaluate(loaded, [spec], tmp_path / "o", limit=1)
    row = json.loads((tmp_path / "o" / "tasks" / "b" / "items.jsonl").read_text())
    tok = loaded.tokenizer
    ctx, cont = tok("The answer is foo")["input_ids"], tok("The answer is foo tball team")["input_ids"]
    target = cont[len(ctx):]
    with torch.no_grad():
        logp = torch.log_softmax(loaded.model(torch.tensor([cont])).logits[0].float(), -1)
    nll = -sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(target))
    assert row["nll"] == pytest.approx(nll, abs=1e-4)
    assert res["b"]["bpb"] == pytest.approx(nll / (len(" tball team".encode()) * math.log(2)), abs=1e-5)


def test_cli_eval_writes_results(model_dir, tmp_path):
    from mixlab.cli import main

    task = _write(tmp_path, "cli_task")
    out = tmp_path / "cli_out"
    assert main(["eval", "--model", str(model_dir), "--tasks", str(task), "--limit", "3", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["cli_task"]["n"] == 3 and set(res["cli_task"]) >= {"acc", "acc_norm", "n"}
    assert main(["eval", "--model", str(tmp_path / "missing"), "--tasks", str(task), "--out", str(out)]) == 2


def test_items_longer_than_the_window_are_scored_not_failed(model_dir, tmp_path):
    """A 16-token window: contexts are left-truncated and a 600-token choice is scored in rolling
    windows; the rows and result.json say how many items that touched."""
    loaded = load_model(str(model_dir))
    (tmp_path / "long.jsonl").write_text(
        json.dumps({"question": "the answer is " * 20, "choices": ["x " * 600, "y"], "label": 0}) + "\n"
        + json.dumps({"question": "short", "choices": ["a", "b"], "label": 1}) + "\n")
    mc = load_task(_write(tmp_path, "long_mc", data={"path": str(tmp_path / "long.jsonl")}))
    bpb = load_task(_write(tmp_path, "long_bpb", data={"path": str(tmp_path / "long.jsonl")}, kind="bpb", metrics=["bpb"]))
    out = tmp_path / "out"
    res = runner.evaluate(loaded, [mc, bpb], out, max_length=16, workers=2)
    assert res["long_mc"]["n"] == 2 and res["long_bpb"]["n"] == 2
    rows = [json.loads(line) for line in (out / "tasks" / "long_mc" / "items.jsonl").read_text().splitlines()]
    n = rows[0]["n_tokens"][0]
    assert n > 600 and rows[0]["windows"][0] in (-(-n // 16), -(-n // 16) + 1)  # the grid may cut one more
    assert rows[0]["truncated"][1] > 0 and "truncated" not in rows[1] and "windows" not in rows[1]
    assert all(math.isfinite(ll) for r in rows for ll in r["lls"])
    result = json.loads((out / "tasks" / "long_mc" / "result.json").read_text())
    assert result["windowing"] == {"window": 16, "truncated_items": 1, "windowed_items": 1}
    assert "windowing" not in result["metrics"]
