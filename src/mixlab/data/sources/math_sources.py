"""Math word problems: GSM8K (numeric answers) and Hendrycks MATH (LaTeX answers in ``\\boxed{}``).

IDs: GSM8K has no ids of its own, so a row is ``gsm8k/<split>-<row index>`` (0-based line order of
the official ``train.jsonl`` / ``test.jsonl``; the hub copy has the same order). MATH problems are
named by their file in the official tree, ``math/<split>/<subject>/<n>`` (the JSONL copy keeps that
path in its ``file`` field); hub rows have no file name and become ``<split>/<subject>/row-<index>``.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mixlab.data.records import Record
from mixlab.data.sources._common import (
    Where,
    field,
    json_object,
    make_record,
    read_hub_splits,
    read_jsonl_splits,
    register_source,
    rel,
)

DOMAIN = "math"

# --------------------------------------------------------------------------------------------- GSM8K

GSM8K_FILES = {"train": ["train.jsonl"], "test": ["test.jsonl"]}


def gsm8k_final_answer(answer: str) -> str | None:
    """The number after GSM8K's ``####`` marker, thousands separators removed (``1,000`` -> ``1000``)."""
    if "####" not in answer:
        return None
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def gsm8k_steps(answer: str) -> int:
    """Reasoning steps of a GSM8K solution: its non-empty lines before the ``####`` line (the dataset
    writes one step per line), so ``data.where: {steps: [1, 2]}`` selects the easiest problems."""
    return sum(1 for line in answer.split("####", 1)[0].splitlines() if line.strip())


def gsm8k_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    question = field(row, "question", where)
    answer = field(row, "answer", where)
    final = gsm8k_final_answer(answer)
    if not final:
        raise where.error("field 'answer' has no final answer after '####'")
    return make_record(
        "gsm8k", DOMAIN, f"{split}-{index}", split, source, question, final, "numeric",
        where=where, solution=answer, steps=gsm8k_steps(answer),
    )


def read_gsm8k(folder: Path) -> Iterator[Record]:
    return read_jsonl_splits(folder, GSM8K_FILES, gsm8k_record)


register_source(
    "gsm8k", DOMAIN,
    layout=(
        "gsm8k/train.jsonl and/or gsm8k/test.jsonl — the files of openai/grade-school-math\n"
        "(grade_school_math/data/), one JSON object per line with 'question' and 'answer'\n"
        "(worked solution ending in '#### <number>')."
    ),
    read=read_gsm8k, hub=("openai/gsm8k", "main"), hub_splits={"train": "train", "test": "test"},
    hub_record=gsm8k_record,
    description="Grade-school math word problems; numeric answer after '####', worked solution kept.",
)

# ---------------------------------------------------------------------------------------------- MATH

MATH_SPLITS = ("train", "test")
MATH_SUBJECTS = (
    "algebra", "counting_and_probability", "geometry", "intermediate_algebra",
    "number_theory", "prealgebra", "precalculus",
)
MATH_TAR = "MATH_original_json.tar.gz"
_MEMBER = re.compile(r"(?:^|/)(train|test)/([a-z_]+)/(\d+)\.json$")
_BOX = re.compile(r"\\(?:boxed|fbox)\b\s*")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces balanced), or ``\\boxed 5``.

    Hand-written rather than lm-eval's ``last_boxed_only_string``: that one returns the first
    ``\\boxed `` (space form) even when a later ``\\boxed{}`` exists, and its ``remove_boxed``
    rejects ``\\fbox``. The test suite compares both on every MATH solution.
    """
    for m in reversed(list(_BOX.finditer(text))):
        start = m.end()
        if text.startswith("{", start):
            depth = 0
            for i in range(start, len(text)):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    return text[start + 1 : i]
            continue  # unbalanced: try an earlier box
        token = re.match(r"[^\s$]+", text[start:])
        if token and m.group(0)[-1].isspace():
            return token.group(0)
    return None


def math_subject(type_name: str) -> str:
    """Directory name of a MATH subject from its ``type`` ("Counting & Probability" -> "counting_and_probability")."""
    return type_name.lower().replace(" & ", "_and_").replace(" ", "_")


def math_record(row: Mapping[str, Any], split: str, source: str, index: int, where: Where) -> Record:
    problem = field(row, "problem", where)
    solution = field(row, "solution", where)
    level = field(row, "level", where)
    type_name = field(row, "type", where)
    answer = last_boxed(solution)
    if answer is None:
        raise where.error("field 'solution' has no \\boxed{...} answer")
    subject = math_subject(type_name)
    if "file" in row:
        original_id = field(row, "file", where).removesuffix(".json")
    else:
        original_id = f"{split}/{subject}/row-{index}"
    return make_record(
        "math", DOMAIN, original_id, split, source, problem, answer, "text",
        where=where, solution=solution, level=level, type=type_name, subject=subject,
    )


def _sort_key(member_id: str) -> tuple[int, str, int]:
    split, subject, n = member_id.split("/")
    return MATH_SPLITS.index(split), subject, int(n)


def _read_math_tree(folder: Path, root: Path) -> Iterator[Record]:
    """The official per-problem tree ``<root>/{train,test}/<subject>/<n>.json``."""
    paths = {}
    for split in MATH_SPLITS:
        for path in (root / split).glob("*/*.json"):
            m = _MEMBER.search(path.as_posix())
            if m:
                paths["/".join(m.groups())] = path
    for key in sorted(paths, key=_sort_key):
        path = paths[key]
        row = json_object(path)
        split = key.split("/")[0]
        yield math_record({**_as_dict(row, path), "file": key + ".json"}, split, rel(path, folder), 0, Where(str(path)))


def _read_math_tar(folder: Path, tar_path: Path) -> Iterator[Record]:
    """The same tree read straight from the published tarball (no extraction needed)."""
    rows: dict[str, tuple[Any, str]] = {}
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            m = _MEMBER.search(member.name) if member.isfile() else None
            if not m:
                continue
            try:
                rows["/".join(m.groups())] = (json.loads(tar.extractfile(member).read()), member.name)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise Where(f"{tar_path}/{member.name}").error(f"malformed JSON: {e}") from None
    for key in sorted(rows, key=_sort_key):
        row, name = rows[key]
        source = f"{rel(tar_path, folder)}/{name}"
        yield math_record({**_as_dict(row, source), "file": key + ".json"}, key.split("/")[0], source, 0,
                          Where(f"{tar_path}/{name}"))


def _as_dict(row: Any, path: object) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise Where(str(path)).error(f"expected a JSON object, got {type(row).__name__}")
    return row


def _read_math_jsonl(folder: Path) -> Iterator[Record]:
    return read_jsonl_splits(folder, {s: [f"{s}.jsonl"] for s in MATH_SPLITS}, math_record)


def _tree_root(folder: Path) -> Path | None:
    for root in (folder, folder / "math", folder / "MATH"):
        if any((root / split).is_dir() for split in MATH_SPLITS):
            return root
    return None


def read_math(folder: Path) -> Iterator[Record]:
    """Prefer the published original (extracted tree, then the tarball); fall back to the JSONL copy.

    All three give the same records (same ids, answers and metadata) except ``metadata['source']``.
    """
    root = _tree_root(folder)
    if root is not None:
        return _read_math_tree(folder, root)
    if (folder / MATH_TAR).is_file():
        return _read_math_tar(folder, folder / MATH_TAR)
    return _read_math_jsonl(folder)


def read_math_hub() -> Iterator[Record]:
    """EleutherAI/hendrycks_math (the copy lm-eval uses): one config per subject."""
    for subject in MATH_SUBJECTS:
        yield from read_hub_splits("EleutherAI/hendrycks_math", subject, {s: s for s in MATH_SPLITS}, math_record)


register_source(
    "math", DOMAIN,
    layout=(
        "math/ holding Hendrycks MATH in one of these forms (first found wins):\n"
        "  1. the extracted tree {train,test}/<subject>/<n>.json (also under math/ or MATH/),\n"
        "  2. MATH_original_json.tar.gz containing that tree,\n"
        "  3. train.jsonl / test.jsonl, one problem per line with the same fields plus 'file'\n"
        "     ('<split>/<subject>/<n>.json').\n"
        "Each problem has 'problem', 'level', 'type' and 'solution' (answer in the last \\boxed{})."
    ),
    read=read_math, hub=("EleutherAI/hendrycks_math", None), read_hub=read_math_hub,
    description="Competition math (Hendrycks MATH); answer = last \\boxed{}; level and subject kept.",
)
