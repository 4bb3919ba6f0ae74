"""The bad-input table (README, "Bad input"): each class of bad input through the `mixlab` command
line exits non-zero, names the file and the line or field, and leaves nothing half-written."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mixlab.cli import main

GOOD = "seed: 0\ndomains:\n  people:\n    ratio: 1\n    datasets: {toyworld_people: 1}\n"
RECORD = '{"id": "a/1", "dataset": "a", "domain": "d", "question": "q", "reference_answer": "x", "answer_type": "text"}'


def _build(d: Path, config: str | bytes, *extra: str) -> list[str]:
    path = d / "data.yaml"
    (path.write_bytes if isinstance(config, bytes) else path.write_text)(config)
    return ["data", "build", str(path), "--out", str(d / "out"), *extra]


def _records(d: Path, content: bytes) -> list[str]:
    (d / "mine.jsonl").write_bytes(content)
    return _build(d, f"seed: 0\ndomains:\n  d:\n    ratio: 1\n    datasets:\n"
                     f"      mine: {{weight: 1, path: {d}/mine.jsonl, format: records}}\n")


def _fit(d: Path, ratios: str, metrics: str) -> list[str]:
    (d / "ratios.csv").write_text(ratios)
    (d / "metrics.csv").write_text(metrics)
    return ["fit", "--ratios", str(d / "ratios.csv"), "--metrics", str(d / "metrics.csv"), "--out", str(d / "out")]


RATIOS = "run,name,index,a,b\nr0,r0,0,0.5,0.5\nr1,r1,1,0.2,0.8\nr2,r2,2,0.9,0.1\n"


def _sweep(d: Path) -> list[str]:
    for r in ("r1", "r2"):
        (d / r).mkdir()
    (d / "sweep.yaml").write_text(f"name: s\nout: {d}/out\nruns:\n  - {{path: {d}/r1, name: same}}\n"
                                  f"  - {{path: {d}/r2, name: same}}\ntasks: [toyworld_people_mc]\n")
    return ["sweep", str(d / "sweep.yaml")]


def _task(d: Path) -> list[str]:
    (d / "task.yaml").write_text("name: broken\nkind: mc\ndata: {source: toyworld_people}\n"
                                 "prompt: \"{{ question \"\nmetrics: [acc]\n")
    return ["eval", "--model", "proxy-0.2m", "--tasks", str(d / "task.yaml"), "--out", str(d / "out")]


def _not_a_model(d: Path) -> list[str]:
    (d / "folder").mkdir()
    (d / "folder" / "notes.txt").write_text("not a model")
    return ["eval", "--model", str(d / "folder"), "--tasks", "toyworld_people_mc", "--out", str(d / "out")]


# (class of bad input, argv builder, the message, as a regex; {d} is the case's folder)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("YAML syntax error", lambda d: _build(d, "seed: 0\ndomains:\n  people:\n    ratio: [1\n"),
     r"{d}/data.yaml:5: invalid YAML: expected ',' or ']'"),
    ("wrong type", lambda d: _build(d, GOOD.replace("seed: 0", "seed: abc")),
     r"{d}/data.yaml:1: field `seed`: Input should be a valid integer"),
    ("unknown key", lambda d: _build(d, GOOD + "colour: red\n"),
     r"{d}/data.yaml:6: field `colour`: unknown field. Remove it or check the spelling"),
    ("negative ratio", lambda d: _build(d, GOOD.replace("ratio: 1", "ratio: -1")),
     r"{d}/data.yaml:4: field `domains.people.ratio`: Input should be greater than or equal to 0"),
    ("all-zero ratios", lambda d: _build(d, GOOD.replace("ratio: 1", "ratio: 0")),
     r"{d}/data.yaml:2: field `domains`: domain ratios sum to zero; give at least one domain a positive ratio"),
    ("empty JSONL", lambda d: _records(d, b""), r"{d}/mine.jsonl: records file is empty"),
    ("truncated JSONL", lambda d: _records(d, (RECORD + "\n" + RECORD[:40]).encode()),
     r"{d}/mine.jsonl:2: malformed JSON: unexpected end of data"),
    ("invalid UTF-8", lambda d: _records(d, RECORD.replace('"q"', '"q\xff"').encode("latin-1") + b"\n"),
     r"{d}/mine.jsonl:1: not valid UTF-8 \(byte 0xff at character \d+\); re-save the file as UTF-8"),
    ("missing CSV columns", lambda d: _fit(d, RATIOS, "run,name\nr0,r0\nr1,r1\nr2,r2\n"),
     r"{d}/metrics.csv:1: no metrics columns after `run,name`"),
    ("CSV without a run column", lambda d: _fit(d, "a,b\n0.5,0.5\n", "run,m\nr0,1\n"),
     r"{d}/ratios.csv:1: header has none of `run`, `run_id`, `index`"),
    ("NaN metric", lambda d: _fit(d, RATIOS, "run,name,index,m\nr0,r0,0,0.5\nr1,r1,1,nan\nr2,r2,2,0.3\n"),
     r"{d}/metrics.csv:3: column 4 `m`: 'nan' is not finite \(run 'r1'\); drop the run or fill the value"),
    ("duplicate run names", _sweep,
     r"{d}/sweep.yaml:3: field `runs`: two runs are named 'same'; give each run a different `name:`"),
    ("task YAML with a broken template", _task, r"{d}/task.yaml:4: template does not parse"),
    ("a path that is not a model", _not_a_model, r"{d}/folder: not a Hugging Face model directory \(no config.json\)"),
    ("--set on a missing key", lambda d: _build(d, GOOD, "--set", "domains.people.weight=2"),
     r"{d}/data.yaml \(--set domains.people.weight=2\): field `domains.people.weight`: unknown field"),
]


@pytest.mark.parametrize(("kind", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_file_and_line_or_field_and_writes_nothing(kind, argv, message, tmp_path, capsys):
    d = tmp_path / "case"
    d.mkdir()
    args = argv(d)
    before = sorted(p.relative_to(d) for p in d.rglob("*"))
    code = main(args)
    err = capsys.readouterr().err
    assert code != 0, err
    assert re.search(message.replace("{d}", re.escape(str(d))), " ".join(err.split())), err
    assert not (d / "out").exists()  # nothing half-written (no output folder, no temporary sibling)
    assert sorted(p.relative_to(d) for p in d.rglob("*")) == before
