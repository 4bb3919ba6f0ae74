"""Question answering: SQuAD 2.0, HotpotQA (closed book), TriviaQA and BoolQ.

Choices made here (the records' consumers rely on them):

- A reading passage, when the dataset has one, is kept in ``metadata['context']`` (SQuAD's paragraph,
  BoolQ's passage) and the ``question`` is the question alone; a prompt template that wants
  open-book QA puts the context in front.
- SQuAD 2.0 unanswerable questions: ``reference_answer == ""`` and ``metadata['is_impossible']`` is
  True; answerable ones take the first gold answer, and every gold answer is in
  ``metadata['answers']`` (the official metric takes the max over them).
- IDs: SQuAD and TriviaQA use their own question ids; official HotpotQA files their ``_id``; the
  question-only HotpotQA copy and BoolQ have none, so their ids are ``<split>-<row index>``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mixlab.data.records import Record
from mixlab.data.sources._common import (
    InstructionFormat,
    Where,
    choose_files,
    field,
    json_array_rows,
    json_object,
    jsonl_rows,
    make_record,
    parse_instruction,
    register_source,
    rel,
)
from mixlab.errors import DataError

DOMAIN = "qa"

# -------------------------------------------------------------------------------------------- SQuAD2

SQUAD_FILES = {"train": ["train-v2.0.json"], "dev": ["dev-v2.0.json"]}


def squad_record(
    qa: Mapping[str, Any], context: str, title: str, split: str, source: str, where: Where
) -> Record:
    """One SQuAD question in the official shape (``id``, ``question``, ``answers``, ``is_impossible``)."""
    answers = field(qa, "answers", where, list)
    texts = [field(a, "text", where) for a in answers]
    impossible = bool(qa.get("is_impossible", not texts))
    if not impossible and not texts:
        raise where.error("answerable question (is_impossible false) has no 'answers'")
    plausible = [field(a, "text", where) for a in qa.get("plausible_answers", [])]
    return make_record(
        "squad2", DOMAIN, field(qa, "id", where), split, source, field(qa, "question", where),
        "" if impossible else texts[0], "text",
        where=where, is_impossible=impossible, answers=texts,
        answer_starts=[field(a, "answer_start", where, int) for a in answers],
        plausible_answers=plausible, context=context, title=title,
    )


def read_squad2(folder: Path) -> Iterator[Record]:
    for split, path in choose_files(folder, SQUAD_FILES):
        doc = json_object(path)
        articles = field(doc, "data", Where(str(path)), list)
        for i, article in enumerate(articles):
            title = field(article, "title", Where(str(path), None, f"data[{i}]"))
            for j, para in enumerate(field(article, "paragraphs", Where(str(path), None, f"data[{i}]"), list)):
                pw = Where(str(path), None, f"data[{i}].paragraphs[{j}]")
                context = field(para, "context", pw)
                for k, qa in enumerate(field(para, "qas", pw, list)):
                    qw = Where(str(path), None, f"data[{i}].paragraphs[{j}].qas[{k}]")
                    yield squad_record(qa, context, title, split, rel(path, folder), qw)


def _squad_hub_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """Hub rows flatten the official nesting; rebuild the official ``qa`` shape and map it as above."""
    answers = field(row, "answers", where, Mapping)
    texts, starts = field(answers, "text", where, list), field(answers, "answer_start", where, list)
    qa = {
        "id": row.get("id"), "question": row.get("question"),
        "answers": [{"text": t, "answer_start": s} for t, s in zip(texts, starts, strict=True)],
        "is_impossible": not texts,
    }
    return squad_record(qa, field(row, "context", where), field(row, "title", where), split, source, where)


register_source(
    "squad2", DOMAIN,
    layout=(
        "squad2/train-v2.0.json and/or squad2/dev-v2.0.json — the official SQuAD 2.0 files:\n"
        '{"version": "v2.0", "data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",\n'
        '"answers": [{"text", "answer_start"}], "is_impossible", "plausible_answers"?}]}]}]}'
    ),
    read=read_squad2, hub=("rajpurkar/squad_v2", None), hub_splits={"train": "train", "validation": "dev"},
    hub_record=_squad_hub_record,
    description="Reading comprehension with unanswerable questions (reference '' + is_impossible).",
)

# ------------------------------------------------------------------------------------------ HotpotQA

# Per official split, the files to try in order: the official release, then the question-only copy.
HOTPOT_FILES = {
    "train": ["hotpot_train_v1.1.json"],
    "dev": ["hotpot_dev_distractor_v1.json", "hotpot_dev_fullwiki_v1.json", "dev_questions.json"],
}


def hotpot_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """Closed-book: only question and answer are used; paragraphs and supporting facts are not kept."""
    own_id = row.get("_id", row.get("id"))
    return make_record(
        "hotpotqa", DOMAIN, str(own_id) if own_id else f"{split}-{index}", split, source,
        field(row, "question", where), field(row, "answer", where), "text",
        where=where, type=field(row, "type", where), level=row.get("level"),
    )


def read_hotpotqa(folder: Path) -> Iterator[Record]:
    for split, path in choose_files(folder, HOTPOT_FILES):
        for index, (row, where) in enumerate(json_array_rows(path)):
            yield hotpot_record(row, split, rel(path, folder), index, where)


register_source(
    "hotpotqa", DOMAIN,
    layout=(
        "hotpotqa/ with a JSON array of {question, answer, type, ...} per split:\n"
        "  train: hotpot_train_v1.1.json (official);\n"
        "  dev:   hotpot_dev_distractor_v1.json or hotpot_dev_fullwiki_v1.json (official, with _id, level),\n"
        "         else dev_questions.json (question/answer/type copy without contexts).\n"
        "Files without answers (test_questions.json, the official test set) are not read."
    ),
    read=read_hotpotqa, hub=("hotpotqa/hotpot_qa", "distractor"), hub_splits={"train": "train", "validation": "dev"},
    hub_record=hotpot_record,
    description="Multi-hop questions used closed-book (no context paragraphs); type and level kept.",
)

# ------------------------------------------------------------------------------------------ TriviaQA


def triviaqa_record(item: Mapping[str, Any], split: str, source: str, where: Where, domain_name: str) -> Record:
    """One item of an official TriviaQA file; all answer aliases are kept for alias-aware scoring."""
    answer = field(item, "Answer", where, Mapping)
    return make_record(
        "triviaqa", DOMAIN, field(item, "QuestionId", where), split, source, field(item, "Question", where),
        field(answer, "Value", where), "text",
        where=where, aliases=field(answer, "Aliases", where, list),
        normalized_aliases=answer.get("NormalizedAliases", []), normalized_value=answer.get("NormalizedValue"),
        answer_kind=answer.get("Type"), question_source=item.get("QuestionSource"), evidence=domain_name,
    )


def _triviaqa_split(doc: Mapping[str, Any], path: Path) -> str:
    split = doc.get("Split")
    if isinstance(split, str) and split:
        return split
    for name in ("train", "dev", "test"):
        if f"-{name}" in path.stem:
            return name
    raise DataError("no top-level 'Split' and none in the file name (-train/-dev)", path)


def read_triviaqa(folder: Path) -> Iterator[Record]:
    """Every answered official file under the folder; a question in several files is kept once.

    The Wikipedia and Web evidence sets (and the verified subsets) repeat the same QuestionIds, so the
    first file in sorted path order wins and ``metadata['evidence']`` says which set it came from.
    """
    seen: set[str] = set()
    paths = sorted(p for p in folder.rglob("*.json") if "without-answers" not in p.name)
    for path in paths:
        doc = json_object(path)
        items = field(doc, "Data", Where(str(path)), list)
        split, domain_name = _triviaqa_split(doc, path), str(doc.get("Domain", ""))
        for i, item in enumerate(items):
            record = triviaqa_record(item, split, rel(path, folder), Where(str(path), None, f"Data[{i}]"), domain_name)
            if record.id not in seen:
                seen.add(record.id)
                yield record


def _triviaqa_hub_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """Hub rows use snake_case names for the official fields; rename and map as above."""
    answer = field(row, "answer", where, Mapping)
    item = {
        "Question": row.get("question"), "QuestionId": row.get("question_id"),
        "QuestionSource": row.get("question_source"),
        "Answer": {
            "Value": answer.get("value"), "Aliases": answer.get("aliases"),
            "NormalizedAliases": answer.get("normalized_aliases"),
            "NormalizedValue": answer.get("normalized_value"), "Type": answer.get("type"),
        },
    }
    return triviaqa_record(item, split, source, where, "")


# Hub: "rc.nocontext" = the reading-comprehension questions without evidence documents; test has no answers.
register_source(
    "triviaqa", DOMAIN,
    layout=(
        "triviaqa/ holding official TriviaQA JSON files anywhere below it (e.g. qa/wikipedia-train.json,\n"
        'qa/web-dev.json, unfiltered-web-train.json): {"Data": [{"Question", "QuestionId", "Answer":\n'
        '{"Value", "Aliases", "NormalizedAliases", ...}}], "Split": "train"|"dev", "Domain": ...}.\n'
        "Files named *without-answers* are skipped."
    ),
    read=read_triviaqa, hub=("mandarjoshi/trivia_qa", "rc.nocontext"), hub_splits={"train": "train", "validation": "dev"},
    hub_record=_triviaqa_hub_record,
    description="Trivia questions; reference = answer value, all aliases in metadata.",
)

# --------------------------------------------------------------------------------------------- BoolQ

BOOLQ_CHOICES = ["no", "yes"]
# Per official split, files in order of preference: BoolQ's own JSONL (with passage), then the
# LLM-Adapters instruction copy (no passage; its "test" file is BoolQ dev, row for row).
BOOLQ_FILES = {"train": ["train.jsonl", "llm_adapters_train.json"], "dev": ["dev.jsonl", "llm_adapters_test.json"]}
BOOLQ_INSTRUCTION = InstructionFormat("Please answer the following question with true or false, question: ")


def boolq_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """yes/no as a two-way choice so the same record serves SFT (text) and log-likelihood scoring."""
    answer = field(row, "answer", where, bool)
    extra = {"context": row["passage"], "title": row.get("title")} if row.get("passage") else {}
    return make_record(
        "boolq", DOMAIN, f"{split}-{index}", split, source, field(row, "question", where),
        BOOLQ_CHOICES[answer], "choice", where=where, choices=list(BOOLQ_CHOICES), label=int(answer), **extra,
    )


def _boolq_from_instruction(row: Mapping[str, Any], where: Where) -> dict[str, Any]:
    """Undo the LLM-Adapters wrapping: its question gained a trailing '?' (BoolQ's own have none)."""
    question, _ = parse_instruction(BOOLQ_INSTRUCTION, field(row, "instruction", where), where)
    answer = field(row, "answer", where)
    if answer not in ("true", "false"):
        raise where.error(f"field 'answer' is {answer!r}; expected 'true' or 'false'")
    return {"question": question.removesuffix("?"), "answer": answer == "true"}


def read_boolq(folder: Path) -> Iterator[Record]:
    for split, path in choose_files(folder, BOOLQ_FILES):
        if path.suffix == ".jsonl":
            rows = jsonl_rows(path)
        else:
            rows = ((_boolq_from_instruction(row, where), where) for row, where in json_array_rows(path))
        for index, (row, where) in enumerate(rows):
            yield boolq_record(row, split, rel(path, folder), index, where)


register_source(
    "boolq", DOMAIN,
    layout=(
        "boolq/ with, per official split, BoolQ's own JSONL ({question, answer: true/false, passage, title})\n"
        "or else the LLM-Adapters instruction copy (JSON array of {instruction, answer: 'true'/'false'}):\n"
        "  train: train.jsonl or llm_adapters_train.json\n"
        "  dev:   dev.jsonl   or llm_adapters_test.json"
    ),
    read=read_boolq, hub=("google/boolq", None), hub_splits={"train": "train", "validation": "dev"},
    hub_record=boolq_record,
    description="Yes/no questions (reference 'yes'/'no', choices ['no','yes']); passage in metadata.context.",
)
