"""The one record schema shared by SFT, RL and evaluation data, and its JSONL I/O.

A record is a plain slotted dataclass rather than a pydantic model: data builds handle millions of
them, and a slotted dataclass is several times smaller and faster to create. Validation happens once,
when a record is read from a file (:func:`record_from_dict`), with errors that name file and line.
"""

from __future__ import annotations

import gzip
from sys import intern
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mixlab.errors import DataError

ANSWER_TYPES = ("numeric", "text", "code", "choice")
_SHARED_META = ("source", "split")
REQUIRED = ("id", "dataset", "domain", "question", "reference_answer", "answer_type")


@dataclass(slots=True)
class Record:
    """One SFT / RL / evaluation item.

    ``id`` is ``"<dataset>/<original id>"``: unique across datasets and stable across runs.
    ``reference_answer`` is what a verifier checks (a number, a short text, code, or the gold
    choice's text); ``solution`` is the full worked target used as the SFT completion when the
    dataset has one (GSM8K's reasoning, MATH's solution); ``label`` is the 0-based gold index for
    ``choice`` items. ``metadata`` always holds ``source`` (file read) and ``original_id``.
    """

    id: str
    dataset: str
    domain: str
    question: str
    reference_answer: str
    answer_type: str
    choices: list[str] | None = None
    label: int | None = None
    solution: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def original_id(self) -> str:
        return str(self.metadata.get("original_id", self.id.split("/", 1)[-1]))

    @property
    def completion(self) -> str:
        """The SFT target: the worked solution when there is one, else the reference answer."""
        return self.solution if self.solution else self.reference_answer

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "dataset": self.dataset,
            "domain": self.domain,
            "question": self.question,
            "reference_answer": self.reference_answer,
            "answer_type": self.answer_type,
            "metadata": self.metadata,
        }
        if self.choices is not None:
            d["choices"] = self.choices
        if self.label is not None:
            d["label"] = self.label
        if self.solution is not None:
            d["solution"] = self.solution
        return d


def make_id(dataset: str, original_id: object) -> str:
    return f"{dataset}/{original_id}"


def record_from_dict(d: Any, path: str | Path = "<dict>", line: int | None = None) -> Record:
    """Validate one parsed JSON object into a :class:`Record`, naming file and line on error."""
    if not isinstance(d, dict):
        raise DataError(f"expected a JSON object, got {type(d).__name__}", path, line)
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise DataError(f"record is missing field(s) {', '.join(missing)}", path, line)
    for k in REQUIRED:
        if not isinstance(d[k], str):
            raise DataError(f"field {k!r} must be a string, got {type(d[k]).__name__}", path, line)
    if d["answer_type"] not in ANSWER_TYPES:
        raise DataError(f"field 'answer_type' is {d['answer_type']!r}; expected one of {ANSWER_TYPES}", path, line)
    choices = d.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise DataError("field 'choices' must be a list of strings", path, line)
    label = d.get("label")
    if label is not None and not (isinstance(label, int) and choices and 0 <= label < len(choices)):
        raise DataError(f"field 'label' must index into 'choices' (got {label!r})", path, line)
    meta = d.get("metadata", {})
    if not isinstance(meta, dict):
        raise DataError("field 'metadata' must be an object", path, line)
    extra = set(d) - set(REQUIRED) - {"choices", "label", "solution", "metadata"}
    if extra:
        raise DataError(f"unknown field(s) {', '.join(sorted(extra))}; put extra information under 'metadata'", path, line)
    for k in _SHARED_META:
        v = meta.get(k)
        if type(v) is str:
            meta[k] = intern(v)
    # Values repeated on every record of a dataset are interned: one string object instead of a million.
    return Record(
        id=d["id"], dataset=intern(d["dataset"]), domain=intern(d["domain"]), question=d["question"],
        reference_answer=d["reference_answer"], answer_type=intern(d["answer_type"]), choices=choices,
        label=label, solution=d.get("solution"), metadata=meta,
    )


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed_object)`` for each non-blank line; a bad line names file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    with _open(path) as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield n, orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise DataError(_not_utf8(raw) or f"malformed JSON: {e}", path, n) from None


def _not_utf8(raw: str | bytes) -> str | None:
    """Say so plainly when a line is not UTF-8 (orjson reports it as a JSON error about surrogates)."""
    try:
        raw.encode("utf-8") if isinstance(raw, str) else raw.decode("utf-8")
    except UnicodeError as e:
        bad = e.object[e.start]
        byte = ord(bad) - 0xDC00 if isinstance(bad, str) and 0xDC80 <= ord(bad) <= 0xDCFF else bad
        shown = f"byte 0x{byte:02x}" if isinstance(byte, int) else repr(byte)
        return f"not valid UTF-8 ({shown} at character {e.start + 1}); re-save the file as UTF-8"
    return None


def read_records(path: str | Path) -> list[Record]:
    """Read a mixlab records JSONL file (optionally .gz), validating every line."""
    return [record_from_dict(obj, path, n) for n, obj in iter_json_lines(path)]


_DUMP_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def dumps_records(records: Iterable[Record]) -> bytes:
    """Serialize records as JSONL bytes with sorted keys (identical input gives identical bytes)."""
    return b"".join(orjson.dumps(r.to_dict(), option=_DUMP_OPTS) for r in records)


def write_records(path: str | Path, records: Iterable[Record]) -> Path:
    """Write records as JSONL atomically."""
    from mixlab.atomic import write_bytes

    return write_bytes(path, dumps_records(records))
