"""`mixlab data sources` says which datasets have local files under MIXLAB_DATA_DIR (present, empty,
missing, unreadable) and how to add the others, on a temporary data folder built here."""

from __future__ import annotations

import json
import re

import pytest

from mixlab.cli import main
from mixlab.data.sources import availability, corpus_availabilities


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """gsm8k with two real-format problems; squad2 an empty folder; mbpp only a SOURCE.txt;
    humaneval a corrupt file; corpus_wikitext2 its two files; nothing else."""
    root = tmp_path / "data"
    (root / "gsm8k").mkdir(parents=True)
    problems = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
                {"question": "Half of 10?", "answer": "10 / 2 = 5\n#### 5"}]
    (root / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    (root / "squad2").mkdir()
    (root / "mbpp").mkdir()
    (root / "mbpp" / "SOURCE.txt").write_text("where the files would come from\n")
    (root / "humaneval").mkdir()
    (root / "humaneval" / "HumanEval.jsonl").write_text("{not json\n")
    (root / "corpus_wikitext2").mkdir()
    for f in ("valid.txt", "test.txt"):
        (root / "corpus_wikitext2" / f).write_text(" = Title = \n\n Some text .\n")
    monkeypatch.setenv("MIXLAB_DATA_DIR", str(root))
    return root


def test_availability_of_present_empty_missing_and_embedded_datasets(data_root):
    gsm = availability("gsm8k")
    assert (gsm.status, gsm.files, gsm.folder, gsm.records) == ("present", 1, data_root / "gsm8k", None)
    assert availability("gsm8k", check=True).records == {"train": 2}
    assert availability("squad2").status == "empty" and availability("mbpp").status == "empty"  # SOURCE.txt is no data
    trivia = availability("triviaqa")
    assert (trivia.status, trivia.folder, trivia.readable) == ("missing", data_root / "triviaqa", False)
    advice = trivia.how_to_add()
    assert f"put its files in {data_root / 'triviaqa'}/" in advice and "qa/wikipedia-train.json" in advice
    assert "mandarjoshi/trivia_qa" in advice and "`datasets: {triviaqa: {weight: 1, hub: true}}`" in advice
    broken = availability("humaneval", check=True)
    assert broken.status == "present" and not broken.readable and "HumanEval.jsonl" in broken.error
    toy = availability("toyworld_people", check=True)
    assert toy.status == "embedded" and toy.folder is None and toy.records == {"test": 64, "train": 480}
    # an explicit folder wins over the environment
    assert availability("gsm8k", data_root / "elsewhere").status == "missing"


def test_corpora_are_listed_with_their_folders(data_root):
    found = {a.name: a for a in corpus_availabilities()}
    assert found["wikitext2"].status == "present" and found["wikitext2"].files == 2
    assert found["python_stdlib"].status == "missing"
    assert "corpus_python_stdlib/stdlib_py.jsonl" in found["python_stdlib"].how_to_add()


def test_the_command_marks_each_dataset_and_says_how_to_add_the_missing(data_root, capsys):
    assert main(["data", "sources"]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert str(data_root) in flat and "$MIXLAB_DATA_DIR" in flat
    assert re.search(r"│ gsm8k\s+│ math\s+│ present \(1 file\)\s+│ gsm8k/", out)
    assert re.search(r"│ triviaqa\s+│ qa\s+│ missing\s+│ triviaqa/", out)
    assert re.search(r"│ squad2\s+│ qa\s+│ empty folder\s+│ squad2/", out)
    assert re.search(r"│ toyworld_people\s+│ people\s+│ embedded\s+│ \(generated\)", out)
    assert re.search(r"│ hellaswag\s+│ missing\s+│ hellaswag/hellaswag_val\.jsonl", out)
    missing = re.search(r"not readable here: ([^.]+)\.", flat).group(1).split(", ")
    assert {"squad2", "triviaqa", "mbpp", "python_stdlib", "hellaswag", "hellaswag_bpb_5shot"} <= set(missing)
    assert "gsm8k" not in missing and "toyworld_people" not in missing and "wikitext2" not in missing
    assert f"- triviaqa: put its files in {data_root / 'triviaqa'}/ laid out as:" in out
    assert f"put the file at {data_root / 'hellaswag' / 'hellaswag_val.jsonl'}" in flat


def test_check_counts_records_and_shows_unreadable_files(data_root, capsys):
    assert main(["data", "sources", "--check"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"│ gsm8k\s+│ math\s+│ present train 2\s+│", out)
    assert re.search(r"│ humaneval\s+│ code\s+│ unreadable \(below\)\s+│", out)
    assert "- humaneval: " in out and "fix its files" in out
