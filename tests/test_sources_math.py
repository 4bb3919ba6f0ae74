"""GSM8K and MATH adapters: real shared data, the published MATH tree, boxed answers, bad input, hub mapping."""

from __future__ import annotations

import collections
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from mixlab.data import sources
from mixlab.data.sources import load_records
from mixlab.errors import DataError

sources._load_modules()  # register every adapter, whichever test module imported a source first
from mixlab.data.sources.math_sources import gsm8k_final_answer, last_boxed  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


def _by_split(records):
    return collections.Counter(r.metadata["split"] for r in records)


# ------------------------------------------------------------------------------------------- GSM8K


@pytest.mark.realdata
def test_gsm8k_real_counts_ids_and_answers(data_dir):
    recs = load_records("gsm8k", data_dir=data_dir)
    assert _by_split(recs) == {"train": 7473, "test": 1319}
    assert len({r.id for r in recs}) == len(recs)
    first, last = recs[0], recs[-1]
    assert first.id == "gsm8k/train-0" and first.reference_answer == "72"
    assert first.question.startswith("Natalia sold clips to 48 of her friends")
    assert first.solution.endswith("#### 72") and "<<48/2=24>>" in first.solution
    assert last.id == "gsm8k/test-1318" and last.reference_answer == "14"
    assert first.metadata == {"source": "train.jsonl", "original_id": "train-0", "split": "train", "steps": 2}
    # one reasoning step per solution line: the easiest problems have two
    steps = collections.Counter(r.metadata["steps"] for r in recs if r.metadata["split"] == "train")
    assert min(steps) == 2 and steps[2] == 1961 and steps[3] == 2149 and max(steps) == 9
    assert all(r.domain == "math" and r.answer_type == "numeric" for r in recs)
    # every final answer parses as a number once thousands separators are gone
    assert all(float(r.reference_answer) == float(r.reference_answer) for r in recs)


def test_gsm8k_final_answer_strips_commas():
    assert gsm8k_final_answer("so 1,000 + 234 = 1,234\n#### 1,234") == "1234"
    assert gsm8k_final_answer("no marker") is None


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


def test_gsm8k_malformed_line_names_file_and_line(tmp_path):
    good = json.dumps({"question": "1+1?", "answer": "2\n#### 2"})
    path = _write(tmp_path, "train.jsonl", good + "\n" + '{"question": "broken"\n')
    with pytest.raises(DataError, match=rf"{path}:2: malformed JSON"):
        load_records("gsm8k", path=tmp_path)


def test_gsm8k_missing_field_names_file_line_and_field(tmp_path):
    good = json.dumps({"question": "1+1?", "answer": "2\n#### 2"})
    path = _write(tmp_path, "test.jsonl", good + "\n\n" + json.dumps({"question": "no answer"}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:3: missing field 'answer'"):
        load_records("gsm8k", path=tmp_path)


def test_gsm8k_answer_without_marker_is_an_error(tmp_path):
    path = _write(tmp_path, "train.jsonl", json.dumps({"question": "q", "answer": "just 4"}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:1: .*'####'"):
        load_records("gsm8k", path=tmp_path)


def test_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(DataError) as e:
        load_records("gsm8k", data_dir=tmp_path)
    assert str(tmp_path / "gsm8k") in str(e.value) and "train.jsonl" in str(e.value) and "####" in str(e.value)


# -------------------------------------------------------------------------------------------- MATH


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $x = \boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"$\boxed{1}$ then $\boxed{\sqrt{\frac{a}{b^{2}}}}$.", r"\sqrt{\frac{a}{b^{2}}}"),
        (r"$\boxed{\{1, 2\}}$", r"\{1, 2\}"),  # escaped braces are still braces to balance
        (r"answer $\boxed 9$.", "9"),
        (r"answer $\fbox{\text{(C)}}$", r"\text{(C)}"),
        (r"$\boxed 5$ first, then $\boxed{6}$", "6"),  # last box wins even after the space form
        (r"$\boxed{}$", ""),
        (r"$\boxed{3}$ then an unbalanced $\boxed{2$", "3"),
        ("no box here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_math_tree_fixture(tmp_path):
    recs = load_records("math", path=FIXTURES / "math_tree")
    assert [r.id for r in recs] == ["math/train/algebra/3", "math/train/algebra/12", "math/test/geometry/7"]
    by_id = {r.id: r for r in recs}
    assert by_id["math/train/algebra/12"].reference_answer == r"x^{\frac{1}{1}}"
    assert by_id["math/train/algebra/3"].reference_answer == "2"
    geo = by_id["math/test/geometry/7"]
    assert geo.reference_answer == "2"
    assert geo.metadata == {
        "source": "MATH/test/geometry/7.json", "original_id": "test/geometry/7", "split": "test",
        "level": "Level 2", "type": "Geometry", "subject": "geometry",
    }
    assert geo.solution.startswith("The diagonal is") and geo.answer_type == "text"


def test_math_tree_tar_and_jsonl_give_the_same_records(tmp_path):
    """The three published forms differ only in metadata['source']."""
    tree = load_records("math", path=FIXTURES / "math_tree")
    tar_dir = tmp_path / "tar"
    tar_dir.mkdir()
    with tarfile.open(tar_dir / "MATH_original_json.tar.gz", "w:gz") as tar:
        tar.add(FIXTURES / "math_tree" / "MATH", arcname="math")
    jsonl_dir = tmp_path / "jsonl"
    for split in ("train", "test"):
        lines = []
        for path in sorted((FIXTURES / "math_tree" / "MATH" / split).rglob("*.json")):
            row = json.loads(path.read_text())
            rel = path.relative_to(FIXTURES / "math_tree" / "MATH").as_posix()
            lines.append(json.dumps({**row, "subject_dir": path.parent.name, "file": rel}))
        _write(jsonl_dir, f"{split}.jsonl", "\n".join(lines) + "\n")

    def strip(recs):
        return sorted(({**r.to_dict(), "metadata": {k: v for k, v in r.metadata.items() if k != "source"}}
                       for r in recs), key=lambda d: d["id"])

    from_tar = load_records("math", path=tar_dir)
    from_jsonl = load_records("math", path=jsonl_dir)
    assert strip(from_tar) == strip(tree) == strip(from_jsonl)
    assert from_tar[0].metadata["source"] == "MATH_original_json.tar.gz/math/train/algebra/3.json"
    assert {r.metadata["source"] for r in from_jsonl} == {"train.jsonl", "test.jsonl"}


@pytest.fixture(scope="module")
def math_real(data_dir):
    """The real MATH records, read once from the published tarball (about a second)."""
    return load_records("math", data_dir=data_dir)


@pytest.mark.realdata
def test_math_real_tarball(math_real):
    recs = math_real
    assert _by_split(recs) == {"train": 7500, "test": 5000}
    assert len({r.id for r in recs}) == len(recs) == 12500
    first = recs[0]
    assert first.id == "math/train/algebra/0" and first.reference_answer == "0"
    assert first.metadata["level"] == "Level 5" and first.metadata["subject"] == "algebra"
    assert recs[-1].id == "math/test/precalculus/24348" and recs[-1].reference_answer == "1, -3"
    assert collections.Counter(r.metadata["subject"] for r in recs)["counting_and_probability"] == 1245
    levels = collections.Counter(r.metadata["level"] for r in recs)
    assert levels == {"Level 5": 3628, "Level 4": 2904, "Level 3": 2723, "Level 2": 2242, "Level 1": 1001,
                      "Level ?": 2}
    # Two published solutions box nothing (\boxed{}); they are kept as published.
    assert sorted(r.id for r in recs if r.reference_answer == "") == [
        "math/train/number_theory/7115", "math/train/number_theory/7117"]


@pytest.mark.realdata
def test_math_real_jsonl_matches_tarball(data_dir, math_real, tmp_path):
    """The JSONL copy (read when no tree or tarball is present) gives the same records as the tarball."""
    for name in ("train.jsonl", "test.jsonl"):
        (tmp_path / name).symlink_to(data_dir / "math" / name)
    from_jsonl = load_records("math", path=tmp_path)
    from_tar = math_real
    assert [r.id for r in from_jsonl] == [r.id for r in from_tar]
    assert all(a.reference_answer == b.reference_answer and a.solution == b.solution
               and a.metadata["level"] == b.metadata["level"] for a, b in zip(from_jsonl, from_tar, strict=True))


@pytest.mark.realdata
def test_boxed_parity_with_lm_eval_reference(math_real):
    """lm-eval's hendrycks_math extraction agrees on every MATH solution but one, where it is wrong.

    algebra/1397 has a ``\\boxed `` (space form) before its final ``\\boxed{17}``; the reference
    implementation returns the earlier one.
    """
    utils = pytest.importorskip("lm_eval.tasks.hendrycks_math.utils")
    differ = []
    for r in math_real:
        ref = utils.remove_boxed(utils.last_boxed_only_string(r.solution))
        if ref != r.reference_answer:
            differ.append((r.id, ref, r.reference_answer))
    assert differ == [("math/train/algebra/1397", "{17}.", "17")]


def test_math_missing_boxed_answer_names_line(tmp_path):
    row = {"problem": "p", "level": "Level 1", "type": "Algebra", "solution": "no box", "file": "train/algebra/1.json"}
    path = _write(tmp_path, "train.jsonl", json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"{path}:1: .*\\boxed"):
        load_records("math", path=tmp_path)


def test_math_tree_malformed_file_names_it(tmp_path):
    shutil.copytree(FIXTURES / "math_tree", tmp_path / "m")
    bad = tmp_path / "m" / "MATH" / "train" / "algebra" / "3.json"
    bad.write_text('{\n  "problem": "x",\n  "level": \n}')
    with pytest.raises(DataError, match=rf"{bad}:4: malformed JSON"):
        load_records("math", path=tmp_path / "m")


# ---------------------------------------------------------------------------------------- hub path


def test_hub_rows_map_like_local_rows(monkeypatch):
    """read_hub goes through datasets.load_dataset; rows shaped like the hub's map like local ones."""
    import datasets

    gsm = [{"question": "Tom has 1,200 apples and eats 1. How many are left?", "answer": "1200-1=1199\n#### 1,199"}]
    algebra = [{"problem": "Find $x$.", "level": "Level 2", "type": "Algebra", "solution": r"$x=\boxed{\frac{1}{2}}$"}]
    calls = []

    def fake_load(hf_id, config=None, split=None):
        calls.append((hf_id, config, split))
        if hf_id == "openai/gsm8k":
            return gsm if split == "test" else []
        return algebra if (config, split) == ("algebra", "train") else []

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (g,) = load_records("gsm8k", hub=True)
    assert (g.id, g.reference_answer, g.metadata["split"], g.metadata["source"]) == (
        "gsm8k/test-0", "1199", "test", "hf:openai/gsm8k/main/test")
    assert ("openai/gsm8k", "main", "train") in calls
    (m,) = load_records("math", hub=True)
    assert m.id == "math/train/algebra/row-0" and m.reference_answer == r"\frac{1}{2}"
    assert m.metadata["subject"] == "algebra" and m.metadata["level"] == "Level 2"
    assert {c[1] for c in calls if c[0] == "EleutherAI/hendrycks_math"} == {
        "algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
        "prealgebra", "precalculus"}
