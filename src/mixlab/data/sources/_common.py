"""Helpers shared by the dataset adapters: file readers that name file and line, typed field access,
record construction, and the Hugging Face hub loop.

Each adapter maps one *row* (a dict shaped like the published file's rows) to a :class:`Record`
with one function; the local reader and the hub reader both call it, so a dataset is mapped in
exactly one place. Errors point at ``file:line`` for JSONL/CSV/top-level-array JSON files, and at
``file: <json path>`` for rows nested deeper (SQuAD, TriviaQA).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from mixlab.data.records import Record, iter_json_lines, make_id
from mixlab.data.sources import Source, register
from mixlab.errors import DataError


@dataclass(frozen=True)
class Where:
    """Where a row came from: enough to write an error message the user can act on."""

    path: str
    line: int | None = None
    item: str | None = None  # e.g. "item 3" or "data[0].paragraphs[2].qas[1]" when no line is known

    def error(self, message: str) -> DataError:
        return DataError(f"{self.item}: {message}" if self.item else message, self.path, self.line)


# (row, official split, metadata source, row index within its file/split, where) -> Record
RowMapper = Callable[[Mapping[str, Any], str, str, int, Where], Record]


def field(row: Mapping[str, Any], key: str, where: Where, kind: type | tuple[type, ...] = str) -> Any:
    """``row[key]``, checked for presence and type, or a DataError naming file, line and field."""
    if not isinstance(row, Mapping):
        raise where.error(f"expected a JSON object, got {type(row).__name__}")
    if key not in row or row[key] is None:
        raise where.error(f"missing field {key!r}")
    value = row[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise where.error(f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def make_record(
    dataset: str,
    domain: str,
    original_id: str,
    split: str,
    source: str,
    question: str,
    reference_answer: str,
    answer_type: str,
    *,
    where: Where,
    choices: list[str] | None = None,
    label: int | None = None,
    solution: str | None = None,
    **metadata: Any,
) -> Record:
    """Build a record with the metadata every adapter must carry (source, original_id, split)."""
    if choices is not None and label is not None and not 0 <= label < len(choices):
        raise where.error(f"gold label {label} is outside the {len(choices)} choices")
    meta = {"source": source, "original_id": original_id, "split": split, **metadata}
    return Record(
        id=make_id(dataset, original_id), dataset=dataset, domain=domain, question=question,
        reference_answer=reference_answer, answer_type=answer_type, choices=choices, label=label,
        solution=solution, metadata=meta,
    )


def rel(path: Path, folder: Path) -> str:
    """``path`` relative to the dataset folder, with forward slashes (stable across machines)."""
    return path.relative_to(folder).as_posix()


def jsonl_rows(path: Path) -> Iterator[tuple[Mapping[str, Any], Where]]:
    """Rows of a JSONL (or .jsonl.gz) file with their line numbers."""
    for line, obj in iter_json_lines(path):
        yield obj, Where(str(path), line)


_WS = re.compile(r"\s*")


def json_array_rows(path: Path) -> Iterator[tuple[Any, Where]]:
    """Items of a file holding one top-level JSON array, each with the line it starts on.

    ``json.load`` would lose positions; decoding item by item with ``raw_decode`` keeps them, so a
    bad item in a pretty-printed file is reported as ``file:line`` like a JSONL row.
    """
    if not path.is_file():
        raise DataError("file not found", path)
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = _WS.match(text, 0).end()
    if text[pos : pos + 1] != "[":
        raise DataError("expected a JSON array ('[' ...) at the top level", path, _line_at(text, pos))
    pos = _WS.match(text, pos + 1).end()
    line, counted, index = 1, 0, 0
    while text[pos : pos + 1] != "]":
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg}", path, e.lineno) from None
        line += text.count("\n", counted, pos)
        counted = pos
        yield obj, Where(str(path), line, f"item {index}")
        index += 1
        pos = _WS.match(text, end).end()
        if text[pos : pos + 1] == ",":
            pos = _WS.match(text, pos + 1).end()
        elif text[pos : pos + 1] != "]":
            raise DataError("malformed JSON: expected ',' or ']' after an array item", path, _line_at(text, pos))


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def json_object(path: Path) -> Any:
    """A whole JSON file (SQuAD / TriviaQA style), with the error line when it does not parse."""
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e.msg}", path, e.lineno) from None


def csv_rows(path: Path, header: list[str] | None = None) -> Iterator[tuple[dict[str, str], Where]]:
    """Rows of a CSV file as dicts keyed by ``header`` (or the file's own header when None)."""
    if not path.is_file():
        raise DataError("file not found", path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        keys = header
        for values in reader:
            if keys is None:
                keys = values
                continue
            where = Where(str(path), reader.line_num)
            if len(values) != len(keys):
                raise where.error(f"expected {len(keys)} columns ({', '.join(keys)}), got {len(values)}")
            yield dict(zip(keys, values, strict=True)), where


def choose_files(folder: Path, candidates: Mapping[str, Sequence[str]]) -> list[tuple[str, Path]]:
    """``(official split, path)`` for each split's first existing file; a DataError if there are none.

    Candidates are listed in order of preference (the published original before a derived copy).
    """
    chosen = []
    for split, names in candidates.items():
        name = next((n for n in names if (folder / n).is_file()), None)
        if name is not None:
            chosen.append((split, folder / name))
    if not chosen:
        wanted = ", ".join(n for names in candidates.values() for n in names)
        raise DataError(f"none of the expected files ({wanted}) is in the folder", folder)
    return chosen


def read_jsonl_splits(
    folder: Path,
    candidates: Mapping[str, Sequence[str]],
    to_record: RowMapper,
) -> Iterator[Record]:
    """Map every row of each split's JSONL file; rows are numbered from 0 per file."""
    for split, path in choose_files(folder, candidates):
        for index, (row, where) in enumerate(jsonl_rows(path)):
            yield to_record(row, split, rel(path, folder), index, where)


def hub_rows(hf_id: str, config: str | None, split: str) -> Iterator[tuple[Mapping[str, Any], Where, int]]:
    """Rows of one split of a hub dataset (needs internet, or a warm ``datasets`` cache)."""
    import datasets  # imported here: loading it costs ~1 s and only the hub path needs it

    ds = datasets.load_dataset(hf_id, config, split=split)
    label = f"hf://{hf_id}" + (f"/{config}" if config else "") + f"/{split}"
    for index, row in enumerate(ds):
        yield row, Where(label, None, f"row {index}"), index


def hub_source(hf_id: str, config: str | None, split: str) -> str:
    """The ``metadata['source']`` of a hub row (there is no local file)."""
    return f"hf:{hf_id}" + (f"/{config}" if config else "") + f"/{split}"


def read_hub_splits(
    hf_id: str,
    config: str | None,
    splits: Mapping[str, str],
    to_record: RowMapper,
) -> Iterator[Record]:
    """Map ``{hub split: official split}`` rows with the same ``to_record`` the local reader uses."""
    for hub_split, split in splits.items():
        source = hub_source(hf_id, config, hub_split)
        for row, where, index in hub_rows(hf_id, config, hub_split):
            yield to_record(row, split, source, index, where)


def register_source(
    name: str,
    domain: str,
    layout: str,
    read: Callable[[Path], Iterator[Record]],
    description: str,
    hub: tuple[str, str | None] | None = None,
    hub_splits: Mapping[str, str] | None = None,
    hub_record: RowMapper | None = None,
    read_hub: Callable[[], Iterator[Record]] | None = None,
) -> Source:
    """Register a source whose folder is its name; ``read_hub`` defaults to mapping ``hub_splits``
    (``{hub split: official split}``) of ``hub`` with ``hub_record``, the local reader's row mapper."""
    if read_hub is None and hub is not None and hub_splits is not None and hub_record is not None:
        read_hub = partial(read_hub_splits, hub[0], hub[1], hub_splits, hub_record)
    return register(Source(name=name, domain=domain, folder=name, layout=layout, read=read, hub=hub,
                           read_hub=read_hub, description=description))


@dataclass(frozen=True)
class InstructionFormat:
    """How LLM-Adapters wrapped a multiple-choice item into one instruction string.

    ``prefix`` + question + ``before`` + ``Word1: c1`` + ``between`` + ... + ``after`` +
    ``Answer format: word1/.../wordN``. Knowing the exact separators lets the parse give back each
    choice byte for byte (trailing spaces included) instead of guessing with ``strip()``.
    """

    prefix: str
    word: str = ""  # "Answer", "Solution", "Option"; "" for yes/no items without choices
    before: str = "\n\n"
    between: str = " "
    after: str = "\n\n"


_FORMAT_TAIL = re.compile(r"Answer format: ([a-z0-9/]+)\Z")


def parse_instruction(fmt: InstructionFormat, text: str, where: Where) -> tuple[str, list[str]]:
    """Split an LLM-Adapters instruction into (question, choices); a mismatch names the row."""
    tail = _FORMAT_TAIL.search(text)
    if not tail:
        raise where.error("field 'instruction' does not end with 'Answer format: ...'")
    n = len(tail.group(1).split("/")) if fmt.word else 0
    m = _instruction_pattern(fmt, n).fullmatch(text)
    if not m:
        raise where.error(f"field 'instruction' does not match the expected format {fmt.prefix!r}...")
    return m.group(1), list(m.groups()[1:])


@lru_cache(maxsize=64)
def _instruction_pattern(fmt: InstructionFormat, n: int) -> re.Pattern[str]:
    word = fmt.word.lower()
    parts = [re.escape(fmt.prefix), "(.*?)"]
    if n:
        parts.append(re.escape(fmt.before))
        parts.append(re.escape(fmt.between).join(re.escape(f"{fmt.word}{i}: ") + "(.*?)" for i in range(1, n + 1)))
        parts.append(re.escape(fmt.after))
        parts.append(re.escape("Answer format: " + "/".join(f"{word}{i}" for i in range(1, n + 1))))
    else:
        parts.append(re.escape(fmt.after) + r"Answer format: [a-z/]+")
    return re.compile("".join(parts), re.S)


def instruction_label(fmt: InstructionFormat, answer: str, n_choices: int, where: Where) -> int:
    """0-based gold index from an LLM-Adapters answer such as ``answer3``."""
    word = fmt.word.lower()
    if not answer.startswith(word) or not answer[len(word):].isdigit():
        raise where.error(f"field 'answer' is {answer!r}; expected {word}1..{word}{n_choices}")
    label = int(answer[len(word):]) - 1
    if not 0 <= label < n_choices:
        raise where.error(f"field 'answer' is {answer!r} but there are {n_choices} choices")
    return label
