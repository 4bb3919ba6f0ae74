"""Benchmark adapters on the shared data: exact counts, parity of the instruction parse with the
reference *.parsed.jsonl copies, MMLU CSV forms, TruthfulQA targets, IFEval/MT-Bench, bad input, hub mapping."""

from __future__ import annotations

import collections
import json

import pytest

from mixlab.data import sources
from mixlab.data.sources import load_records
from mixlab.errors import DataError

sources._load_modules()  # register every adapter, whichever test module imported a source first

MC_COUNTS = {
    "arc_easy": {"train": 2251, "test": 2376},
    "arc_challenge": {"train": 1119, "test": 1172},
    "openbookqa": {"train": 4957, "test": 500},
    "piqa": {"validation": 1838},
    "winogrande": {"dev": 1267},
}
PARSED = {"train": "train.parsed.jsonl", "test": "test.parsed.jsonl", "validation": "test.parsed.jsonl",
          "dev": "test.parsed.jsonl"}


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(MC_COUNTS))
def test_llm_adapters_mc_counts_and_parity_with_parsed_copy(name, data_dir):
    """Our parse of the original instruction strings equals the shared *.parsed.jsonl on every row."""
    recs = load_records(name, data_dir=data_dir)
    assert collections.Counter(r.metadata["split"] for r in recs) == MC_COUNTS[name]
    assert len({r.id for r in recs}) == len(recs)
    for split in MC_COUNTS[name]:
        ours = [r for r in recs if r.metadata["split"] == split]
        ref = [json.loads(line) for line in (data_dir / name / PARSED[split]).read_text().splitlines()]
        text_key = {"piqa": "goal", "winogrande": "sentence"}.get(name, "question")
        assert [(r.question, r.choices, r.label) for r in ours] == [(x[text_key], x["choices"], x["label"]) for x in ref]
        assert all(r.reference_answer == r.choices[r.label] and r.answer_type == "choice" for r in ours)
        assert ours[0].id == f"{name}/{split}-0" and ours[-1].id == f"{name}/{split}-{len(ours) - 1}"


@pytest.mark.realdata
def test_arc_known_items(data_dir):
    easy = load_records("arc_easy", data_dir=data_dir)
    assert easy[0].question == "Which factor will most likely cause a person to develop a fever?"
    assert easy[0].reference_answer == "a bacterial population in the bloodstream" and easy[0].label == 1
    assert easy[0].domain == "knowledge"
    assert collections.Counter(len(r.choices) for r in easy) == {4: 4606, 3: 13, 5: 8}
    last = load_records("arc_challenge", data_dir=data_dir)[-1]
    assert (last.id, last.reference_answer) == ("arc_challenge/test-1171", "the floor")


@pytest.mark.realdata
def test_winogrande_keeps_partial_scoring_fields(data_dir):
    recs = load_records("winogrande", data_dir=data_dir)
    first = recs[0]
    assert first.question == "Sarah was a much better surgeon than Maria so _ always got the easier cases."
    assert first.metadata["sentence"] == first.question
    assert (first.metadata["option1"], first.metadata["option2"], first.metadata["answer"]) == ("Sarah", "Maria", "2")
    assert (first.choices, first.label, first.reference_answer) == (["Sarah", "Maria"], 1, "Maria")
    assert all(r.question.count("_") >= 1 and r.domain == "reasoning" for r in recs)


@pytest.mark.realdata
def test_mmlu_real(data_dir):
    recs = load_records("mmlu", data_dir=data_dir)
    assert collections.Counter(r.metadata["split"] for r in recs) == {"dev": 285, "test": 14042}
    assert len({r.id for r in recs}) == len(recs)
    subjects = collections.Counter(r.metadata["subject"] for r in recs if r.metadata["split"] == "dev")
    assert len(subjects) == 57 and set(subjects.values()) == {5}
    first = recs[0]
    assert first.id == "mmlu/dev/abstract_algebra/0"
    assert first.question == "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field."
    assert (first.choices, first.label, first.reference_answer) == (["0", "1", "2", "3"], 1, "1")
    assert first.metadata["source"] == "dev/abstract_algebra_dev.csv"
    assert recs[-1].id == "mmlu/test/world_religions/170" and recs[-1].reference_answer == "Divine power"


def test_mmlu_original_headerless_letter_form(tmp_path):
    """Hendrycks' release: no header, answers A-D; quoted commas and newlines survive."""
    (tmp_path / "test").mkdir()
    path = tmp_path / "test" / "anatomy_test.csv"
    path.write_text('"Which, of these?",a,b,"c\nd",e,C\nSecond?,w,x,y,z,A\n')
    recs = load_records("mmlu", path=tmp_path)
    assert [(r.id, r.label, r.reference_answer) for r in recs] == [
        ("mmlu/test/anatomy/0", 2, "c\nd"), ("mmlu/test/anatomy/1", 0, "w")]
    assert recs[0].question == "Which, of these?" and recs[0].metadata["subject"] == "anatomy"


def test_mmlu_bad_row_names_line(tmp_path):
    (tmp_path / "dev").mkdir()
    path = tmp_path / "dev" / "virology_dev.csv"
    path.write_text("question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,1\nq2,a,b,c,d,7\nq3,a,b\n")
    with pytest.raises(DataError, match=rf"{path}:3: expected 4 choices and an answer 0-3 or A-D"):
        load_records("mmlu", path=tmp_path)
    path.write_text("question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,1\nq3,a,b\n")
    with pytest.raises(DataError, match=rf"{path}:3: expected 6 columns"):
        load_records("mmlu", path=tmp_path)


@pytest.mark.realdata
def test_truthfulqa_real(data_dir):
    recs = load_records("truthfulqa", data_dir=data_dir)
    assert len(recs) == 817 and len({r.id for r in recs}) == 817
    first = recs[0]
    assert first.question == "What happens if you eat a pomegranate?"
    assert first.reference_answer == "Nothing in particular happens when you eat a pomegranate."
    assert first.metadata["mc1_targets"]["labels"] == [1, 0, 0, 0]
    assert first.metadata["mc2_targets"]["labels"] == [1, 1, 1, 0, 0, 0]
    assert first.metadata["mc2_targets"]["choices"][2] == "You will derive nutrition from the pomegranate."
    assert all(r.choices == r.metadata["mc1_targets"]["choices"] for r in recs)
    assert all(sum(r.metadata["mc2_targets"]["labels"]) >= 1 for r in recs)
    assert first.metadata["split"] == "validation" and first.id == "truthfulqa/validation-0"


@pytest.mark.realdata
def test_ifeval_real(data_dir):
    recs = load_records("ifeval", data_dir=data_dir)
    assert len(recs) == 541 and len({r.id for r in recs}) == 541
    first = recs[0]
    assert first.id == "ifeval/1000" and first.reference_answer == "" and first.answer_type == "text"
    assert first.metadata["instruction_id_list"] == [
        "punctuation:no_comma", "detectable_format:number_highlighted_sections", "length_constraints:number_words"]
    assert first.metadata["kwargs"][2] == {"relation": "at least", "num_words": 300}
    assert "ifeval/2785" in {r.id for r in recs}  # the row SOURCE.txt says was re-inserted
    assert first.domain == "instruction"


@pytest.mark.realdata
def test_mt_bench_real(data_dir):
    recs = load_records("mt_bench", data_dir=data_dir)
    assert len(recs) == 80 and len({r.id for r in recs}) == 80
    assert collections.Counter(r.metadata["category"] for r in recs) == {
        c: 10 for c in ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")}
    first = recs[0]
    assert first.id == "mt_bench/81" and first.reference_answer == "" and len(first.metadata["turns"]) == 2
    assert first.question == first.metadata["turns"][0]
    assert sum(r.metadata["gpt4_reference"] is not None for r in recs) == 30
    q101 = next(r for r in recs if r.id == "mt_bench/101")
    assert q101.metadata["gpt4_reference"][0].startswith("If you have just overtaken the second person")
    assert q101.reference_answer == (q101.metadata["reference"] or q101.metadata["gpt4_reference"])[0]


def test_llm_adapters_bad_answer_names_line(tmp_path):
    path = tmp_path / "llm_adapters_test.json"
    row = {"instruction": "Please choose the correct answer to the question: Q?\n\nAnswer1: a Answer2: b\n\n"
                          "Answer format: answer1/answer2", "input": "", "output": "", "answer": "answer3"}
    path.write_text(json.dumps([row, row], indent=2))
    with pytest.raises(DataError, match=rf"{path}:2: item 0: field 'answer' is 'answer3' but there are 2 choices"):
        load_records("arc_easy", path=tmp_path)


def test_benchmark_hub_rows(monkeypatch):
    import datasets

    tables = {
        ("allenai/ai2_arc", "ARC-Challenge", "test"): [
            {"id": "Mercury_1", "question": "Q", "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]},
             "answerKey": "C"}],
        ("allenai/openbookqa", "main", "validation"): [
            {"id": "7-980", "question_stem": "S", "choices": {"text": ["w", "x"], "label": ["1", "2"]},
             "answerKey": "2"}],
        ("baber/piqa", None, "validation"): [{"goal": "G", "sol1": "s1", "sol2": "s2", "label": 1}],
        ("allenai/winogrande", "winogrande_xl", "validation"): [
            {"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "1"}],
        ("cais/mmlu", "all", "test"): [
            {"question": f"q{i}", "subject": s, "choices": ["a", "b", "c", "d"], "answer": 3}
            for i, s in enumerate(["anatomy", "anatomy", "virology"])],
        ("truthfulqa/truthful_qa", "multiple_choice", "validation"): [
            {"question": "TQ", "mc1_targets": {"choices": ["t", "f"], "labels": [1, 0]},
             "mc2_targets": {"choices": ["t", "t2", "f"], "labels": [1, 1, 0]}}],
        ("google/IFEval", None, "train"): [
            {"key": 9, "prompt": "P", "instruction_id_list": ["x:y"], "kwargs": [{}]}],
        ("HuggingFaceH4/mt_bench_prompts", None, "train"): [
            {"prompt_id": 101, "prompt": ["t1", "t2"], "category": "reasoning", "reference": ["r1", "r2"]},
            {"prompt_id": 81, "prompt": ["w1", "w2"], "category": "writing", "reference": []}],
    }
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda hf_id, config=None, split=None: tables.get((hf_id, config, split), []))
    (arc,) = load_records("arc_challenge", hub=True)
    assert (arc.id, arc.label, arc.reference_answer, arc.metadata["split"]) == ("arc_challenge/Mercury_1", 2, "c", "test")
    (obqa,) = load_records("openbookqa", hub=True)
    assert (obqa.id, obqa.question, obqa.label, obqa.metadata["split"]) == ("openbookqa/7-980", "S", 1, "dev")
    (piqa,) = load_records("piqa", hub=True)
    assert (piqa.question, piqa.choices, piqa.label) == ("G", ["s1", "s2"], 1)
    (wino,) = load_records("winogrande", hub=True)
    assert (wino.id, wino.label, wino.metadata["option2"]) == ("winogrande/dev-0", 0, "y")
    mmlu = load_records("mmlu", hub=True)
    assert [r.id for r in mmlu] == ["mmlu/test/anatomy/0", "mmlu/test/anatomy/1", "mmlu/test/virology/0"]
    assert mmlu[0].reference_answer == "d"
    (tqa,) = load_records("truthfulqa", hub=True)
    assert (tqa.label, tqa.metadata["mc2_targets"]["labels"]) == (0, [1, 1, 0])
    (ife,) = load_records("ifeval", hub=True)
    assert (ife.id, ife.metadata["split"], ife.reference_answer) == ("ifeval/9", "test", "")
    mt = load_records("mt_bench", hub=True)
    assert [(r.id, r.reference_answer, r.metadata["reference"]) for r in mt] == [
        ("mt_bench/101", "r1", ["r1", "r2"]), ("mt_bench/81", "", None)]
