"""QA adapters: SQuAD 2.0 and TriviaQA on files in their published format, HotpotQA and BoolQ on the
shared data, bad input, hub mapping."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from mixlab.data import sources
from mixlab.data.sources import load_records
from mixlab.errors import DataError

sources._load_modules()  # register every adapter, whichever test module imported a source first

FIXTURES = Path(__file__).parent / "fixtures" / "sources"


# ------------------------------------------------------------------------------------------- SQuAD2


def test_squad2_published_format():
    recs = load_records("squad2", path=FIXTURES / "squad2")
    assert [r.id for r in recs] == [
        "squad2/56be85543aeaaa14008c9063", "squad2/5a8d7bf7df8bba001a0f9ab1",  # train file first
        "squad2/56ddde6b9a695914005b9628", "squad2/5ad39d53604f3c001a3fe8d1", "squad2/56e16182e3433e1400422e28"]
    by_id = {r.original_id: r for r in recs}
    france = by_id["56ddde6b9a695914005b9628"]
    assert france.reference_answer == "France" and france.question == "In what country is Normandy located?"
    assert france.metadata["answers"] == ["France"] * 4 and france.metadata["is_impossible"] is False
    assert france.metadata["answer_starts"] == [159] * 4
    assert france.metadata["split"] == "dev" and france.metadata["source"] == "dev-v2.0.json"
    assert france.metadata["title"] == "Normans" and france.metadata["context"].startswith("The Normans (Norman:")
    impossible = by_id["5ad39d53604f3c001a3fe8d1"]
    assert impossible.reference_answer == "" and impossible.metadata["is_impossible"] is True
    assert impossible.metadata["answers"] == [] and impossible.metadata["plausible_answers"] == ["Normans"]
    multi = by_id["56e16182e3433e1400422e28"]
    assert multi.metadata["answers"] == ["Computational complexity theory"] * 2 + ["complexity theory"]
    assert by_id["56be85543aeaaa14008c9063"].metadata["split"] == "train"
    assert all(r.answer_type == "text" and r.domain == "qa" for r in recs)


def test_squad2_missing_field_names_json_path(tmp_path):
    doc = json.loads((FIXTURES / "squad2" / "dev-v2.0.json").read_text())
    del doc["data"][1]["paragraphs"][0]["qas"][0]["question"]
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"{path}: data\[1\]\.paragraphs\[0\]\.qas\[0\]: missing field 'question'"):
        load_records("squad2", path=tmp_path)


def test_squad2_malformed_json_names_line(tmp_path):
    path = tmp_path / "train-v2.0.json"
    path.write_text('{"version": "v2.0",\n "data": [\n  {"title": "x",,}\n]}')
    with pytest.raises(DataError, match=rf"{path}:3: malformed JSON"):
        load_records("squad2", path=tmp_path)


# ----------------------------------------------------------------------------------------- TriviaQA


def test_triviaqa_official_json_dedups_evidence_sets():
    recs = load_records("triviaqa", path=FIXTURES / "triviaqa")
    # sorted files: qa/web-dev.json, qa/web-train.json, qa/wikipedia-dev.json (test-without-answers skipped)
    assert [r.id for r in recs] == ["triviaqa/qb_1000", "triviaqa/sfq_77", "triviaqa/odql_5", "triviaqa/tc_33"]
    by_id = {r.original_id: r for r in recs}
    park = by_id["tc_33"]
    assert park.reference_answer == "Park Grass Experiment"
    assert park.metadata["aliases"] == ["Park Grass Experiment", "Park Grass"]
    assert park.metadata["normalized_aliases"] == ["park grass experiment", "park grass"]
    assert park.metadata["split"] == "dev" and park.metadata["source"] == "qa/wikipedia-dev.json"
    assert park.metadata["evidence"] == "Wikipedia" and park.metadata["answer_kind"] == "WikipediaEntity"
    assert by_id["qb_1000"].metadata["evidence"] == "Web"  # first file in sorted order wins
    assert by_id["odql_5"].metadata["split"] == "train"
    assert collections.Counter(r.metadata["split"] for r in recs) == {"dev": 3, "train": 1}


def test_triviaqa_missing_answer_names_item(tmp_path):
    (tmp_path / "web-dev.json").write_text(json.dumps(
        {"Data": [{"Question": "q", "QuestionId": "x1"}], "Split": "dev", "Domain": "Web"}))
    with pytest.raises(DataError, match=r"web-dev\.json: Data\[0\]: missing field 'Answer'"):
        load_records("triviaqa", path=tmp_path)


# ----------------------------------------------------------------------------------------- HotpotQA


@pytest.mark.realdata
def test_hotpotqa_real_closed_book(data_dir):
    recs = load_records("hotpotqa", data_dir=data_dir)
    assert len(recs) == 7405 and len({r.id for r in recs}) == 7405  # test_questions.json has no answers
    assert {r.metadata["split"] for r in recs} == {"dev"}
    first, last = recs[0], recs[-1]
    assert first.id == "hotpotqa/dev-0" and first.reference_answer == "yes"
    assert first.question == "Were Scott Derrickson and Ed Wood of the same nationality?"
    assert first.metadata == {"source": "dev_questions.json", "original_id": "dev-0", "split": "dev",
                              "type": "comparison", "level": None}
    assert last.reference_answer == "Norwood, Massachusetts"
    assert collections.Counter(r.metadata["type"] for r in recs) == {"bridge": 5918, "comparison": 1487}


def test_hotpotqa_official_format_uses_own_ids(tmp_path):
    rows = [{"_id": "5a8b57f25542995d1e6f1371", "question": "Q?", "answer": "yes", "type": "comparison",
             "level": "hard", "supporting_facts": [["A", 0]], "context": [["A", ["s."]]]}]
    (tmp_path / "hotpot_dev_distractor_v1.json").write_text(json.dumps(rows))
    (tmp_path / "dev_questions.json").write_text(json.dumps([{"question": "other", "answer": "x", "type": "bridge"}]))
    (rec,) = load_records("hotpotqa", path=tmp_path)  # the official file wins over the copy
    assert rec.id == "hotpotqa/5a8b57f25542995d1e6f1371" and rec.metadata["level"] == "hard"
    assert "context" not in rec.metadata


def test_hotpotqa_missing_field_names_line_of_item(tmp_path):
    path = tmp_path / "dev_questions.json"
    path.write_text('[\n  {"question": "a", "answer": "b", "type": "bridge"},\n  {\n    "question": "c",\n'
                    '    "type": "bridge"\n  }\n]\n')
    with pytest.raises(DataError, match=rf"{path}:3: item 1: missing field 'answer'"):
        load_records("hotpotqa", path=tmp_path)


def test_hotpotqa_malformed_array_names_line(tmp_path):
    path = tmp_path / "dev_questions.json"
    path.write_text('[\n  {"question": "a", "answer": "b", "type": "bridge"}\n  {"question": "c"}\n]\n')
    with pytest.raises(DataError, match=rf"{path}:3: malformed JSON: expected ','"):
        load_records("hotpotqa", path=tmp_path)


# -------------------------------------------------------------------------------------------- BoolQ


@pytest.mark.realdata
def test_boolq_real(data_dir):
    recs = load_records("boolq", data_dir=data_dir)
    assert collections.Counter(r.metadata["split"] for r in recs) == {"train": 9427, "dev": 3270}
    assert len({r.id for r in recs}) == len(recs)
    train0 = recs[0]
    assert train0.id == "boolq/train-0" and train0.question == "do iran and afghanistan speak the same language"
    assert (train0.reference_answer, train0.choices, train0.label) == ("yes", ["no", "yes"], 1)
    assert train0.metadata["source"] == "llm_adapters_train.json" and "context" not in train0.metadata
    dev0 = next(r for r in recs if r.metadata["split"] == "dev")
    assert dev0.id == "boolq/dev-0" and dev0.reference_answer == "no" and dev0.label == 0
    assert dev0.question == "does ethanol take more energy make that produces"
    assert dev0.metadata["context"].startswith("All biomass goes through") and dev0.metadata["title"] == "Ethanol fuel"
    assert all(r.answer_type == "choice" and r.domain == "qa" for r in recs)
    assert collections.Counter(r.reference_answer for r in recs if r.metadata["split"] == "train") == {
        "yes": 5874, "no": 3553}


@pytest.mark.realdata
def test_boolq_instruction_copy_matches_original_dev(data_dir, tmp_path):
    """The LLM-Adapters 'test' file parsed back equals BoolQ's own dev.jsonl, question for question."""
    (tmp_path / "llm_adapters_test.json").symlink_to(data_dir / "boolq" / "llm_adapters_test.json")
    parsed = load_records("boolq", path=tmp_path)
    original = [r for r in load_records("boolq", data_dir=data_dir) if r.metadata["split"] == "dev"]
    assert [(r.id, r.question, r.label) for r in parsed] == [(r.id, r.question, r.label) for r in original]


def test_boolq_bad_instruction_names_line(tmp_path):
    path = tmp_path / "llm_adapters_train.json"
    path.write_text(json.dumps([{"instruction": "Is it?\n\nAnswer format: true/false", "answer": "true"}], indent=1))
    with pytest.raises(DataError, match=rf"{path}:2: item 0: field 'instruction' does not match"):
        load_records("boolq", path=tmp_path)


# ---------------------------------------------------------------------------------------- hub path


def test_qa_hub_rows(monkeypatch):
    import datasets

    tables = {
        ("rajpurkar/squad_v2", "validation"): [
            {"id": "a1", "title": "T", "context": "C", "question": "Q1", "answers": {"text": [], "answer_start": []}},
            {"id": "a2", "title": "T", "context": "C", "question": "Q2",
             "answers": {"text": ["x", "y"], "answer_start": [0, 2]}}],
        ("hotpotqa/hotpot_qa", "validation"): [
            {"id": "h1", "question": "HQ", "answer": "HA", "type": "bridge", "level": "easy",
             "supporting_facts": {}, "context": {}}],
        ("mandarjoshi/trivia_qa", "train"): [
            {"question": "TQ", "question_id": "tc_1", "question_source": "s", "entity_pages": {},
             "search_results": {}, "answer": {"value": "Paris", "aliases": ["Paris", "Paree"],
                                              "normalized_aliases": ["paris", "paree"], "normalized_value": "paris",
                                              "type": "WikipediaEntity", "matched_wiki_entity_name": ""}}],
        ("google/boolq", "validation"): [{"question": "is it", "answer": True, "passage": "P"}],
    }
    monkeypatch.setattr(datasets, "load_dataset", lambda hf_id, config=None, split=None: tables.get((hf_id, split), []))
    sq = load_records("squad2", hub=True)
    assert [(r.id, r.reference_answer, r.metadata["is_impossible"], r.metadata["split"]) for r in sq] == [
        ("squad2/a1", "", True, "dev"), ("squad2/a2", "x", False, "dev")]
    assert sq[1].metadata["answers"] == ["x", "y"] and sq[1].metadata["answer_starts"] == [0, 2]
    (hp,) = load_records("hotpotqa", hub=True)
    assert (hp.id, hp.reference_answer, hp.metadata["level"], hp.metadata["split"]) == ("hotpotqa/h1", "HA", "easy", "dev")
    (tq,) = load_records("triviaqa", hub=True)
    assert (tq.id, tq.reference_answer, tq.metadata["aliases"]) == ("triviaqa/tc_1", "Paris", ["Paris", "Paree"])
    (bq,) = load_records("boolq", hub=True)
    assert (bq.id, bq.reference_answer, bq.label, bq.metadata["context"]) == ("boolq/dev-0", "yes", 1, "P")
