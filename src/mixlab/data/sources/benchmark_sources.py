"""Evaluation benchmarks: multiple choice (ARC, OpenBookQA, PIQA, WinoGrande, MMLU, TruthfulQA) and
open-ended instruction following (IFEval, MT-Bench).

Domains: ``knowledge`` for science/world-knowledge tests (ARC, OpenBookQA, MMLU, TruthfulQA),
``reasoning`` for physical and commonsense reasoning (PIQA, WinoGrande), ``instruction`` for
instruction following judged by rules or a model (IFEval, MT-Bench).

Multiple-choice records: ``answer_type="choice"``, ``choices``, ``label`` (0-based gold index) and
``reference_answer`` = the gold choice's text. IFEval and MT-Bench are graded by checkers or a judge,
so their ``answer_type`` is ``text``; IFEval's ``reference_answer`` is ``""`` (there is none) and
MT-Bench's is the first-turn reference where FastChat ships one, else ``""``.

ARC, OpenBookQA, PIQA and WinoGrande are read from the LLM-Adapters copy (the only form in the shared
data): its instruction strings are parsed back to question and choices with the exact separators of
each template. That copy has no item ids, so ids are ``<split>-<row index>``; hub rows use the
dataset's own ids where it has them (ARC, OpenBookQA).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mixlab.data.records import Record
from mixlab.data.sources._common import (
    InstructionFormat,
    RowMapper,
    Where,
    choose_files,
    csv_rows,
    field,
    hub_rows,
    hub_source,
    instruction_label,
    json_array_rows,
    jsonl_rows,
    make_record,
    parse_instruction,
    read_jsonl_splits,
    register_source,
    rel,
)
from mixlab.errors import DataError

KNOWLEDGE, REASONING, INSTRUCTION = "knowledge", "reasoning", "instruction"


def choice_record(
    dataset: str, domain: str, original_id: str, split: str, source: str, question: str,
    choices: list[str], label: int, where: Where, **metadata: Any,
) -> Record:
    """A multiple-choice record; the gold text is the reference so generation can be checked too."""
    if not 0 <= label < len(choices):  # checked here because choices[label] is read before make_record
        raise where.error(f"gold label {label} is outside the {len(choices)} choices")
    return make_record(
        dataset, domain, original_id, split, source, question, choices[label], "choice",
        where=where, choices=choices, label=label, **metadata,
    )


# ------------------------------------------------------------------ LLM-Adapters copies (ARC, OBQA, ...)

_ANSWER_FORMAT = InstructionFormat("Please choose the correct answer to the question: ", "Answer")
_PIQA_FORMAT = InstructionFormat("Please choose the correct solution to the question: ", "Solution", between="\n\n")
_WINO_FORMAT = InstructionFormat(
    "Please choose the correct answer to fill in the blank to complete the given sentence: ", "Option", after=" "
)


def _llm_adapters_items(
    folder: Path, files: Mapping[str, list[str]], fmt: InstructionFormat
) -> Iterator[tuple[str, list[str], int, str, str, int, Where]]:
    """(question, choices, label, split, source, index, where) for every row of the LLM-Adapters files."""
    for split, path in choose_files(folder, files):
        for index, (row, where) in enumerate(json_array_rows(path)):
            question, choices = parse_instruction(fmt, field(row, "instruction", where), where)
            label = instruction_label(fmt, field(row, "answer", where), len(choices), where)
            yield question, choices, label, split, rel(path, folder), index, where


def _read_llm_adapters(folder: Path, files: Mapping[str, list[str]], fmt: InstructionFormat,
                       to_record: RowMapper) -> Iterator[Record]:
    """Map parsed LLM-Adapters rows with the same row mapper the hub reader uses."""
    for question, choices, label, split, source, index, where in _llm_adapters_items(folder, files, fmt):
        yield to_record({"question": question, "choices": choices, "label": label}, split, source, index, where)


def _mc_mapper(dataset: str, domain: str) -> RowMapper:
    """Row {question, choices, label[, id]} -> record; shared by the local and hub readers."""

    def to_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
        own_id = row.get("id")
        return choice_record(
            dataset, domain, str(own_id) if own_id else f"{split}-{index}", split, source,
            field(row, "question", where), field(row, "choices", where, list), field(row, "label", where, int), where,
        )

    return to_record


def _hub_letter_choices(row: Mapping[str, Any], question_key: str, where: Where) -> dict[str, Any]:
    """AI2 hub rows (ARC, OpenBookQA): choices {text, label} and an answerKey letter or digit."""
    choices = field(row, "choices", where, Mapping)
    keys = list(choices["label"])
    answer = field(row, "answerKey", where)
    if answer not in keys:
        raise where.error(f"answerKey {answer!r} is not one of the choice labels {keys}")
    return {"id": row.get("id"), "question": field(row, question_key, where),
            "choices": list(choices["text"]), "label": keys.index(answer)}


def _register_ai2(name: str, title: str, hub: tuple[str, str], question_key: str, splits: dict[str, str]) -> None:
    to_record = _mc_mapper(name, KNOWLEDGE)
    files = {"train": ["llm_adapters_train.json"], "test": ["llm_adapters_test.json"]}

    def read(folder: Path) -> Iterator[Record]:
        return _read_llm_adapters(folder, files, _ANSWER_FORMAT, to_record)

    def from_hub(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
        return to_record(_hub_letter_choices(row, question_key, where), split, source, index, where)

    register_source(
        name, KNOWLEDGE,
        layout=(
            f"{name}/llm_adapters_train.json and/or llm_adapters_test.json — the LLM-Adapters copy of\n"
            f"{title}: a JSON array of {{instruction, input, output, answer}}, the instruction being\n"
            "'Please choose the correct answer to the question: <q>\\n\\nAnswer1: <a> Answer2: <b> ...\\n\\n"
            "Answer format: answer1/...' and answer 'answerN'."
        ),
        read=read, hub=hub, hub_splits=splits, hub_record=from_hub,
        description=f"{title} (multiple choice, {KNOWLEDGE}).",
    )


_AI2_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
_register_ai2("arc_easy", "ARC-Easy", ("allenai/ai2_arc", "ARC-Easy"), "question", _AI2_SPLITS)
_register_ai2("arc_challenge", "ARC-Challenge", ("allenai/ai2_arc", "ARC-Challenge"), "question", _AI2_SPLITS)
_register_ai2("openbookqa", "OpenBookQA", ("allenai/openbookqa", "main"), "question_stem", _AI2_SPLITS)

# ---------------------------------------------------------------------------------------------- PIQA

_piqa_mc = _mc_mapper("piqa", REASONING)
PIQA_FILES = {"validation": ["llm_adapters_test.json"]}  # the copy's "test" is PIQA's validation set


def read_piqa(folder: Path) -> Iterator[Record]:
    return _read_llm_adapters(folder, PIQA_FILES, _PIQA_FORMAT, _piqa_mc)


def _piqa_hub_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    parsed = {"question": field(row, "goal", where), "choices": [field(row, "sol1", where), field(row, "sol2", where)],
              "label": field(row, "label", where, int)}
    return _piqa_mc(parsed, split, source, index, where)


register_source(
    "piqa", REASONING,
    layout=(
        "piqa/llm_adapters_test.json — the LLM-Adapters copy of PIQA's validation set: a JSON array of\n"
        "{instruction, answer}, instruction 'Please choose the correct solution to the question: <goal>\\n\\n"
        "Solution1: <sol1>\\n\\nSolution2: <sol2>\\n\\nAnswer format: solution1/solution2'."
    ),
    read=read_piqa, hub=("baber/piqa", None), hub_splits={"train": "train", "validation": "validation"},
    hub_record=_piqa_hub_record,
    description="Physical commonsense: pick the better of two solutions to a goal.",
)

# ---------------------------------------------------------------------------------------- WinoGrande

WINOGRANDE_FILES = {"dev": ["llm_adapters_test.json"]}  # the copy's "test" is WinoGrande's dev set


def winogrande_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """Row in WinoGrande's own shape {sentence, option1, option2, answer '1'/'2'}.

    The sentence keeps its ``_`` blank and both options stay in metadata: lm-eval's partial scoring
    substitutes each option into the blank and scores only the text after it.
    """
    sentence = field(row, "sentence", where)
    if "_" not in sentence:
        raise where.error("field 'sentence' has no '_' blank")
    options = [field(row, "option1", where), field(row, "option2", where)]
    answer = str(field(row, "answer", where, (str, int)))
    if answer not in ("1", "2"):
        raise where.error(f"field 'answer' is {answer!r}; expected '1' or '2'")
    return choice_record(
        "winogrande", REASONING, f"{split}-{index}", split, source, sentence, options, int(answer) - 1, where,
        sentence=sentence, option1=options[0], option2=options[1], answer=answer,
    )


def read_winogrande(folder: Path) -> Iterator[Record]:
    """Parse the LLM-Adapters rows back into WinoGrande's own fields, then map them like hub rows."""
    for sentence, options, label, split, source, index, where in _llm_adapters_items(
        folder, WINOGRANDE_FILES, _WINO_FORMAT
    ):
        if len(options) != 2:
            raise where.error(f"expected 2 options, got {len(options)}")
        wino = {"sentence": sentence, "option1": options[0], "option2": options[1], "answer": str(label + 1)}
        yield winogrande_record(wino, split, source, index, where)


register_source(
    "winogrande", REASONING,
    layout=(
        "winogrande/llm_adapters_test.json — the LLM-Adapters copy of WinoGrande's dev set: a JSON array of\n"
        "{instruction, answer}, instruction 'Please choose the correct answer to fill in the blank to complete\n"
        "the given sentence: <sentence with _>\\n\\nOption1: <o1> Option2: <o2> Answer format: option1/option2'."
    ),
    read=read_winogrande, hub=("allenai/winogrande", "winogrande_xl"), hub_splits={"train": "train", "validation": "dev"},
    hub_record=winogrande_record,
    description="Pronoun-resolution fill-in-the-blank; sentence/option1/option2 kept for partial scoring.",
)

# ---------------------------------------------------------------------------------------------- MMLU

MMLU_SPLITS = ("dev", "val", "test")
MMLU_COLUMNS = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
_LETTERS = "ABCD"


def mmlu_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """Row {question, subject, choices[4], answer 0-3 or A-D}; id ``<split>/<subject>/<row index>``."""
    subject = field(row, "subject", where)
    choices = field(row, "choices", where, list)
    answer = str(field(row, "answer", where, (str, int))).strip()
    label = _LETTERS.index(answer) if answer in _LETTERS else int(answer) if answer.isdigit() else -1
    if len(choices) != 4 or not 0 <= label < 4:
        raise where.error(f"expected 4 choices and an answer 0-3 or A-D, got {len(choices)} choices, answer {answer!r}")
    return choice_record(
        "mmlu", KNOWLEDGE, f"{split}/{subject}/{index}", split, source, field(row, "question", where),
        choices, label, where, subject=subject,
    )


def _mmlu_csv(path: Path) -> Iterator[tuple[dict[str, str], Where]]:
    """Both published CSV forms: with a header and 0-3 answers (HF export), or Hendrycks' headerless A-D."""
    with open(path, encoding="utf-8-sig") as f:
        has_header = f.readline().strip().split(",") == MMLU_COLUMNS
    yield from csv_rows(path, None if has_header else MMLU_COLUMNS)


def read_mmlu(folder: Path) -> Iterator[Record]:
    found = False
    for split in MMLU_SPLITS:
        for path in sorted((folder / split).glob(f"*_{split}.csv")):
            found = True
            subject = path.stem.removesuffix(f"_{split}")
            for index, (row, where) in enumerate(_mmlu_csv(path)):
                choices = [row[f"choice{i}"] for i in range(4)]
                parsed = {"question": row["question"], "subject": subject, "choices": choices, "answer": row["answer"]}
                yield mmlu_record(parsed, split, rel(path, folder), index, where)
    if not found:
        raise DataError("no <subject>_<split>.csv files in dev/, val/ or test/", folder)


def read_mmlu_hub() -> Iterator[Record]:
    """cais/mmlu "all": rows grouped by subject, numbered within each subject as in the CSVs."""
    for hub_split, split in {"dev": "dev", "validation": "val", "test": "test"}.items():
        counts: dict[str, int] = {}
        for row, where, _ in hub_rows("cais/mmlu", "all", hub_split):
            subject = field(row, "subject", where)
            counts[subject] = counts.get(subject, -1) + 1
            yield mmlu_record(row, split, hub_source("cais/mmlu", "all", hub_split), counts[subject], where)


register_source(
    "mmlu", KNOWLEDGE,
    layout=(
        "mmlu/{dev,val,test}/<subject>_<split>.csv (any of the three folders), one question per row:\n"
        "  with header question,choice0,choice1,choice2,choice3,answer and answer 0-3, or\n"
        "  Hendrycks' original headerless rows question,A,B,C,D,answer with answer A-D."
    ),
    read=read_mmlu, hub=("cais/mmlu", "all"), read_hub=read_mmlu_hub,
    description="57-subject multiple-choice knowledge test; subject kept.",
)

# ---------------------------------------------------------------------------------------- TruthfulQA

TRUTHFULQA_FILE = "mc_task.json"


def truthfulqa_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """Row in the hub shape {question, mc1_targets: {choices, labels}, mc2_targets: {...}}.

    The record's choices/label are MC1 (exactly one true answer); both target sets are kept in
    metadata because MC2 scores the normalized probability mass on all true answers.
    """
    targets = {k: _targets(field(row, k, where, Mapping), k, where) for k in ("mc1_targets", "mc2_targets")}
    mc1 = targets["mc1_targets"]
    if mc1["labels"].count(1) != 1:
        raise where.error("mc1_targets must have exactly one true answer")
    return choice_record(
        "truthfulqa", KNOWLEDGE, f"{split}-{index}", split, source, field(row, "question", where),
        list(mc1["choices"]), mc1["labels"].index(1), where, **targets,
    )


def _targets(t: Mapping[str, Any], name: str, where: Where) -> dict[str, list]:
    choices, labels = t.get("choices"), t.get("labels")
    if not (isinstance(choices, list) and isinstance(labels, list) and len(choices) == len(labels) and choices):
        raise where.error(f"field {name!r} must hold equal-length 'choices' and 'labels'")
    return {"choices": list(choices), "labels": [int(x) for x in labels]}


def read_truthfulqa(folder: Path) -> Iterator[Record]:
    """mc_task.json stores each target set as {answer: 0/1}; turn it into the hub's {choices, labels}."""
    path = folder / TRUTHFULQA_FILE
    for index, (row, where) in enumerate(json_array_rows(path)):
        hub_shaped = {"question": field(row, "question", where)}
        for key in ("mc1_targets", "mc2_targets"):
            targets = field(row, key, where, Mapping)
            hub_shaped[key] = {"choices": list(targets), "labels": list(targets.values())}
        yield truthfulqa_record(hub_shaped, "validation", TRUTHFULQA_FILE, index, where)


register_source(
    "truthfulqa", KNOWLEDGE,
    layout=(
        "truthfulqa/mc_task.json from sylinrl/TruthfulQA data/: a JSON array of {question,\n"
        "mc1_targets: {answer: 0|1}, mc2_targets: {answer: 0|1}} (817 questions, split 'validation')."
    ),
    read=read_truthfulqa, hub=("truthfulqa/truthful_qa", "multiple_choice"), hub_splits={"validation": "validation"},
    hub_record=truthfulqa_record,
    description="Questions that invite imitative falsehoods; MC1 as choices, mc1/mc2 targets in metadata.",
)

# -------------------------------------------------------------------------------------------- IFEval


def ifeval_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """Graded by instruction checkers, not against a reference: reference_answer is ''."""
    return make_record(
        "ifeval", INSTRUCTION, str(field(row, "key", where, int)), split, source, field(row, "prompt", where), "",
        "text", where=where, instruction_id_list=field(row, "instruction_id_list", where, list),
        kwargs=field(row, "kwargs", where, list),
    )


def read_ifeval(folder: Path) -> Iterator[Record]:
    return read_jsonl_splits(folder, {"test": ["input_data.jsonl"]}, ifeval_record)


register_source(
    "ifeval", INSTRUCTION,
    layout=(
        "ifeval/input_data.jsonl from google-research instruction_following_eval/data/, one prompt per line\n"
        "with 'key', 'prompt', 'instruction_id_list', 'kwargs'."
    ),
    read=read_ifeval, hub=("google/IFEval", None), hub_splits={"train": "test"},  # the hub's one split is "train"
    hub_record=ifeval_record,
    description="541 prompts with verifiable instructions; checker ids and kwargs in metadata.",
)

# ------------------------------------------------------------------------------------------ MT-Bench

MT_BENCH_REFERENCES = ("reference_answer_gpt-4.jsonl", "reference_answer/gpt-4.jsonl")


def mt_bench_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """Two-turn prompts judged by a model. ``reference`` is FastChat's own per-question reference,
    ``gpt4_reference`` the GPT-4 answers FastChat gives the judge for math/reasoning/coding;
    reference_answer is the first turn of whichever exists (own first), else ''."""
    turns = field(row, "turns", where, list)
    if not turns or not all(isinstance(t, str) for t in turns):
        raise where.error("field 'turns' must be a non-empty list of strings")
    reference, gpt4 = row.get("reference"), row.get("gpt4_reference")
    first = (reference or gpt4 or [""])[0]
    return make_record(
        "mt_bench", INSTRUCTION, str(field(row, "question_id", where, int)), split, source, turns[0], first, "text",
        where=where, category=field(row, "category", where), turns=list(turns), reference=reference,
        gpt4_reference=gpt4,
    )


def _gpt4_references(folder: Path) -> dict[int, list[str]]:
    """question_id -> reference turns from FastChat's reference_answer/gpt-4.jsonl, when present."""
    path = next((folder / n for n in MT_BENCH_REFERENCES if (folder / n).is_file()), None)
    refs: dict[int, list[str]] = {}
    for row, where in jsonl_rows(path) if path else ():
        choices = field(row, "choices", where, list)
        if not choices:
            raise where.error("field 'choices' is empty")
        refs[field(row, "question_id", where, int)] = field(choices[0], "turns", where, list)
    return refs


def read_mt_bench(folder: Path) -> Iterator[Record]:
    refs = _gpt4_references(folder)
    path = folder / "question.jsonl"
    for index, (row, where) in enumerate(jsonl_rows(path)):
        qid = row.get("question_id")
        yield mt_bench_record({**row, "gpt4_reference": refs.get(qid)}, "test", rel(path, folder), index, where)


def _mt_bench_hub_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """HuggingFaceH4/mt_bench_prompts names the fields prompt_id / prompt; rename and map as above."""
    reference = row.get("reference") or None
    fastchat = {"question_id": row.get("prompt_id"), "category": row.get("category"), "turns": row.get("prompt"),
                "reference": reference}
    return mt_bench_record(fastchat, split, source, index, where)


register_source(
    "mt_bench", INSTRUCTION,
    layout=(
        "mt_bench/question.jsonl from FastChat llm_judge/data/mt_bench/ ({question_id, category, turns,\n"
        "reference?} per line) and optionally its GPT-4 references as reference_answer_gpt-4.jsonl or\n"
        "reference_answer/gpt-4.jsonl ({question_id, choices: [{turns}]} per line)."
    ),
    read=read_mt_bench, hub=("HuggingFaceH4/mt_bench_prompts", None), hub_splits={"train": "test"},
    hub_record=_mt_bench_hub_record,
    description="80 two-turn prompts judged by a model; category, turns and references in metadata.",
)
