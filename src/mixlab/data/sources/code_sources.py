"""Python code tasks: HumanEval and MBPP, with the tests that grade them kept in metadata.

IDs are the datasets' own: ``humaneval/HumanEval/<n>`` and ``mbpp/<task_id>``. MBPP's official
split is decided by task id (Austin et al. 2021): 1-10 prompt, 11-510 test, 511-600 validation,
601-974 train; ids outside 1-974 (a user's own extra tasks) are put in ``train``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mixlab.data.records import Record
from mixlab.data.sources._common import Where, field, jsonl_rows, make_record, register_source, rel

DOMAIN = "code"

# ----------------------------------------------------------------------------------------- HumanEval

HUMANEVAL_FILE = "HumanEval.jsonl.gz"


def humaneval_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """question = the prompt (signature + docstring); reference_answer = the canonical body."""
    task_id = field(row, "task_id", where)
    prompt = field(row, "prompt", where)
    return make_record(
        "humaneval", DOMAIN, task_id, split, source, prompt, field(row, "canonical_solution", where), "code",
        where=where, prompt=prompt, test=field(row, "test", where), entry_point=field(row, "entry_point", where),
    )


def read_humaneval(folder: Path) -> Iterator[Record]:
    path = folder / HUMANEVAL_FILE
    if not path.is_file() and (folder / "HumanEval.jsonl").is_file():
        path = folder / "HumanEval.jsonl"
    for index, (row, where) in enumerate(jsonl_rows(path)):
        yield humaneval_record(row, "test", rel(path, folder), index, where)


register_source(
    "humaneval", DOMAIN,
    layout=(
        "humaneval/HumanEval.jsonl.gz (or the uncompressed HumanEval.jsonl) from openai/human-eval\n"
        "data/, one task per line with 'task_id', 'prompt', 'canonical_solution', 'test', 'entry_point'."
    ),
    read=read_humaneval, hub=("openai/openai_humaneval", None), hub_splits={"test": "test"},
    hub_record=humaneval_record,
    description="164 hand-written Python functions; prompt, canonical body, tests and entry point kept.",
)

# ---------------------------------------------------------------------------------------------- MBPP

MBPP_FILE = "mbpp.jsonl"
# Hub split names of google-research-datasets/mbpp ("full") are the official names already.
MBPP_HUB_SPLITS = {"train": "train", "test": "test", "validation": "validation", "prompt": "prompt"}


def mbpp_split(task_id: int) -> str:
    """The official split of an MBPP task, which the paper fixes by task id."""
    if 1 <= task_id <= 10:
        return "prompt"
    if 11 <= task_id <= 510:
        return "test"
    if 511 <= task_id <= 600:
        return "validation"
    return "train"


def mbpp_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    """question = the task text; reference_answer = the reference code; all test lists kept."""
    task_id = field(row, "task_id", where, int)
    tests = field(row, "test_list", where, list)
    return make_record(
        "mbpp", DOMAIN, str(task_id), split or mbpp_split(task_id), source, field(row, "text", where),
        field(row, "code", where), "code",
        where=where, task_id=task_id, test_list=tests,
        test_setup_code=field(row, "test_setup_code", where),
        challenge_test_list=field(row, "challenge_test_list", where, list),
    )


def read_mbpp(folder: Path) -> Iterator[Record]:
    path = folder / MBPP_FILE
    for index, (row, where) in enumerate(jsonl_rows(path)):
        yield mbpp_record(row, "", rel(path, folder), index, where)  # split from the task id


register_source(
    "mbpp", DOMAIN,
    layout=(
        "mbpp/mbpp.jsonl from google-research/google-research mbpp/, one task per line with\n"
        "'task_id', 'text', 'code', 'test_list', 'test_setup_code', 'challenge_test_list'\n"
        "(official split by task id: 1-10 prompt, 11-510 test, 511-600 validation, 601-974 train)."
    ),
    read=read_mbpp, hub=("google-research-datasets/mbpp", "full"), hub_splits=MBPP_HUB_SPLITS,
    hub_record=mbpp_record,
    description="974 crowd-sourced Python tasks; reference code and assert-based tests kept.",
)
