"""HumanEval and MBPP adapters: real shared data, tests kept, bad input, hub mapping."""

from __future__ import annotations

import collections
import gzip
import json

import pytest

from mixlab.data import sources
from mixlab.data.sources import load_records
from mixlab.errors import DataError

sources._load_modules()  # register every adapter, whichever test module imported a source first
from mixlab.data.sources.code_sources import mbpp_split  # noqa: E402


@pytest.mark.realdata
def test_humaneval_real(data_dir):
    recs = load_records("humaneval", data_dir=data_dir)
    assert len(recs) == 164 and len({r.id for r in recs}) == 164
    first, last = recs[0], recs[-1]
    assert first.id == "humaneval/HumanEval/0" and last.id == "humaneval/HumanEval/163"
    assert first.metadata["entry_point"] == "has_close_elements"
    assert first.question == first.metadata["prompt"] and first.question.startswith("from typing import List")
    assert first.reference_answer.startswith("    for idx, elem in enumerate(numbers):")
    assert "def check(candidate):" in first.metadata["test"]
    assert first.metadata["source"] == "HumanEval.jsonl.gz" and first.metadata["split"] == "test"
    assert all(r.answer_type == "code" and r.domain == "code" for r in recs)


@pytest.mark.realdata
def test_humaneval_canonical_solutions_pass_their_tests(data_dir):
    """Prompt + reference body + tests is a program that runs: proves the fields line up."""
    recs = load_records("humaneval", data_dir=data_dir)[:5]
    for r in recs:
        program = r.question + r.reference_answer + "\n" + r.metadata["test"]
        scope: dict = {}
        exec(compile(program, r.id, "exec"), scope)  # trusted: the dataset's own reference code
        scope["check"](scope[r.metadata["entry_point"]])


@pytest.mark.realdata
def test_mbpp_real_official_splits(data_dir):
    recs = load_records("mbpp", data_dir=data_dir)
    assert len(recs) == 974 and len({r.id for r in recs}) == 974
    assert collections.Counter(r.metadata["split"] for r in recs) == {
        "prompt": 10, "test": 500, "validation": 90, "train": 374}
    first = recs[0]
    assert first.id == "mbpp/1" and first.metadata["task_id"] == 1
    assert first.question.startswith("Write a function to find the minimum cost path")
    assert first.reference_answer.startswith("R = 3\r\nC = 3\r\ndef min_cost(cost, m, n):")
    assert first.metadata["test_list"][0] == "assert min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 8"
    assert first.metadata["test_setup_code"] == "" and first.metadata["challenge_test_list"] == []
    assert recs[-1].id == "mbpp/974" and recs[-1].metadata["split"] == "train"
    assert sum(bool(r.metadata["challenge_test_list"]) for r in recs) > 0


def test_mbpp_split_boundaries():
    assert [mbpp_split(i) for i in (1, 10, 11, 510, 511, 600, 601, 974)] == [
        "prompt", "prompt", "test", "test", "validation", "validation", "train", "train"]


def test_mbpp_missing_field_names_line(tmp_path):
    row = {"text": "t", "code": "c", "task_id": 5, "test_list": [], "test_setup_code": "", "challenge_test_list": []}
    bad = dict(row)
    del bad["test_list"]
    path = tmp_path / "mbpp.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: missing field 'test_list'"):
        load_records("mbpp", path=tmp_path)


def test_humaneval_malformed_gz_line(tmp_path):
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"task_id": "HumanEval/0", \n')
    with pytest.raises(DataError, match=rf"{path}:1: malformed JSON"):
        load_records("humaneval", path=tmp_path)


def test_code_hub_rows(monkeypatch):
    import datasets

    he = {"task_id": "HumanEval/7", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
          "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    mb = {"task_id": 512, "text": "Write f.", "code": "def f(): return 1", "test_list": ["assert f() == 1"],
          "test_setup_code": "", "challenge_test_list": []}

    def fake_load(hf_id, config=None, split=None):
        if hf_id == "openai/openai_humaneval":
            return [he]
        return [mb] if split == "validation" else []

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (h,) = load_records("humaneval", hub=True)
    assert (h.id, h.reference_answer, h.metadata["entry_point"]) == ("humaneval/HumanEval/7", "    return 1\n", "f")
    (m,) = load_records("mbpp", hub=True)
    assert (m.id, m.metadata["split"], m.metadata["test_list"]) == ("mbpp/512", "validation", ["assert f() == 1"])
    assert m.metadata["source"] == "hf:google-research-datasets/mbpp/full/validation"
