"""IFEval scoring through lm-eval's checkers: handcrafted responses, aggregation, real rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mixlab.errors import DataError
from mixlab.eval.ifeval import IFEvalItem, aggregate, evaluate_responses, instruction_types, load_ifeval, score_response

ENGLISH = "this answer is written in plain english and it talks about the weather in the mountains today"


def _item(instructions: list[str], kwargs: list[dict] | None = None, prompt: str = "Write something.") -> IFEvalItem:
    return IFEvalItem(1, prompt, instructions, kwargs or [{} for _ in instructions])


def _strict_loose(instruction: str, kwargs: dict, response: str) -> tuple[bool, bool]:
    score = score_response(_item([instruction], [kwargs]), response)
    assert score.reason == ""
    return score.inst_strict[0], score.inst_loose[0]


@pytest.mark.parametrize(
    "instruction, kwargs, response, strict, loose",
    [
        ("punctuation:no_comma", {}, "No commas here. None at all.", True, True),
        ("punctuation:no_comma", {}, "Well, here is one.", False, False),
        ("change_case:english_lowercase", {}, ENGLISH, True, True),
        ("change_case:english_lowercase", {}, ENGLISH.capitalize(), False, False),
        # loose drops the first line ("Sure! ..."), so the rest is all lowercase
        ("change_case:english_lowercase", {}, "Sure! Here it is:\n" + ENGLISH, False, True),
        ("change_case:english_capital", {}, ENGLISH.upper(), True, True),
        ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", True, True),
        # loose also tries the response without its first or last line: 3 bullets become 2
        ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two\n* three", False, True),
        ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b\n* c\n* d\n* e", False, False),
        ("detectable_format:title", {}, "<<A Day Out>>\nWe went hiking.", True, True),
        ("detectable_format:title", {}, "A Day Out\nWe went hiking.", False, False),
        ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nP.S. See you soon.", True, True),
        ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi. See you soon.", False, False),
        ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "one two three four five", True, True),
        ("length_constraints:number_words", {"relation": "less than", "num_words": 5}, "one two three four five", False, False),
        # Punkt knows "Dr." and "Mr." are abbreviations: 2 sentences, not 4
        ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
         "Dr. Smith went to Washington. He met Mr. Jones there.", True, True),
        ("startend:quotation", {}, '"Wrapped in quotes."', True, True),
        ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. Any other questions?", True, True),
        # markdown emphasis breaks the strict end check; loose strips '*'
        ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. **Any other questions?**", False, True),
        ("keywords:existence", {"keywords": ["river", "stone"]}, "A stone sat by the river.", True, True),
        ("keywords:forbidden_words", {"forbidden_words": ["river"]}, "A stone sat by the river.", False, False),
        ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', True, True),
        ("detectable_format:json_format", {}, "{a: 1", False, False),
        ("language:response_language", {"language": "de"}, "Das ist eine kurze Antwort auf Deutsch über das Wetter.", True, True),
    ],
)
def test_handcrafted_responses(instruction, kwargs, response, strict, loose):
    assert _strict_loose(instruction, kwargs, response) == (strict, loose)


def test_empty_response_follows_nothing():
    score = score_response(_item(["punctuation:no_comma", "startend:quotation"]), "   ")
    assert score.inst_strict == [False, False] and score.inst_loose == [False, False]


def test_prompt_and_instruction_level_aggregation():
    items = [
        _item(["punctuation:no_comma", "change_case:english_lowercase"]),
        _item(["punctuation:no_comma", "detectable_content:postscript"], [{}, {"postscript_marker": "P.S."}]),
        _item(["change_case:english_lowercase"]),
    ]
    responses = [ENGLISH, "No commas and no postscript.", "Sure! Here it is:\n" + ENGLISH]
    metrics, scores = evaluate_responses(items, responses)
    assert [s.inst_strict for s in scores] == [[True, True], [True, False], [False]]
    assert [s.inst_loose for s in scores] == [[True, True], [True, False], [True]]
    assert metrics == pytest.approx(
        {
            "prompt_level_strict_acc": 1 / 3,
            "inst_level_strict_acc": 3 / 5,
            "prompt_level_loose_acc": 2 / 3,
            "inst_level_loose_acc": 4 / 5,
        }
    )
    assert aggregate(scores) == metrics
    with pytest.raises(ValueError):
        evaluate_responses(items, responses[:2])


@pytest.mark.realdata
def test_real_input_rows_load_and_score(data_dir):
    items = load_ifeval(data_dir / "ifeval" / "input_data.jsonl")
    assert len(items) == 541
    used = {i for item in items for i in item.instruction_id_list}
    assert used == set(instruction_types()) and len(used) == 25  # the whole published set
    # a bland response never crashes a checker, and follows some instructions but not all
    metrics, scores = evaluate_responses(items, ["Here is my answer about the topic."] * len(items))
    assert all(s.reason == "" for s in scores)
    assert 0 < metrics["inst_level_strict_acc"] < 1
    assert metrics["inst_level_loose_acc"] >= metrics["inst_level_strict_acc"]
    assert metrics["prompt_level_strict_acc"] <= metrics["inst_level_strict_acc"]


def test_bad_rows_name_the_line(tmp_path):
    path = tmp_path / "input.jsonl"
    good = {"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    bad = {**good, "instruction_id_list": ["punctuation:no_semicolons"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"input.jsonl:2: unknown instruction ids \['punctuation:no_semicolons'\]"):
        load_ifeval(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match="input.jsonl:1"):
        load_ifeval(path)


def test_no_download_at_import(tmp_path):
    """A fresh cache gets NLTK's Punkt tables from the installed wheel; nltk.download never runs."""
    code = (
        "import nltk\n"
        "def refuse(*a, **k):\n"
        "    raise SystemExit('nltk.download was called')\n"
        "nltk.download = refuse\n"
        "from mixlab.eval.ifeval import harness\n"
        "harness()\n"
        "from lm_eval.tasks.ifeval import instructions_util\n"
        "print(instructions_util.count_sentences('Dr. Smith went to Washington. He met Mr. Jones there.'))\n"
    )
    env = {**os.environ, "MIXLAB_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "2"
    assert (tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").exists()
