"""Readers for raw text corpora (pretraining text, not records).

A corpus is a list of documents (strings). Three ways to name one:
- a plain ``.txt`` file: one document per file, or split at article headings / blank lines;
- a JSONL file (optionally ``.gz``) with a text field, one document per line;
- a shared-data folder ``corpus_<name>`` (see its SOURCE.txt), read by :func:`load_corpus`.

Bad input raises :class:`~mixlab.errors.DataError` naming the file and, for JSONL, the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from mixlab.data.records import iter_json_lines
from mixlab.errors import DataError
from mixlab.settings import data_dir as _data_dir
from mixlab.settings import require_dir

Split = Literal["file", "paragraph", "wikitext"]

# WikiText marks each article with a top-level heading line " = Title = " (sections use " = = ").
_WIKI_TITLE = re.compile(r"^ = [^=].* = $", re.M)


def split_text(text: str, how: Split = "file") -> list[str]:
    """Cut a text file into documents: whole ``file``, blank-line ``paragraph``s, or ``wikitext`` articles."""
    if how == "file":
        docs = [text]
    elif how == "paragraph":
        docs = re.split(r"\n\s*\n", text)
    elif how == "wikitext":
        starts = [m.start() for m in _WIKI_TITLE.finditer(text)] or [0]
        if starts[0] != 0:
            starts.insert(0, 0)
        docs = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    else:
        raise ValueError(f"unknown split {how!r}")
    return [d.strip("\n") for d in docs if d.strip()]


def read_txt(path: str | Path, split: Split = "file") -> list[str]:
    """Documents of a UTF-8 text file; invalid UTF-8 is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 text ({e.reason} at byte {e.start})", path, line) from None
    return split_text(text, split)


def read_jsonl(path: str | Path, text_field: str = "text") -> list[str]:
    """One document per JSON line, taken from ``text_field``; blank texts are skipped."""
    docs = []
    for n, obj in iter_json_lines(path):
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object with a {text_field!r} field, got {type(obj).__name__}", path, n)
        if text_field not in obj:
            keys = ", ".join(sorted(obj)) or "none"
            raise DataError(f"missing text field {text_field!r} (fields: {keys}); set `text_field:`", path, n)
        text = obj[text_field]
        if not isinstance(text, str):
            raise DataError(f"field {text_field!r} must be a string, got {type(text).__name__}", path, n)
        if text.strip():
            docs.append(text)
    return docs


def read_path(path: str | Path, text_field: str = "text", split: Split = "file") -> list[str]:
    """Documents from a ``.txt``/``.jsonl``/``.jsonl.gz`` file, or every such file in a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p))
        if not files:
            raise DataError("folder holds no .txt, .jsonl or .jsonl.gz files", path)
        return [d for f in files for d in read_path(f, text_field, split)]
    kind = _kind(path)
    if not path.exists():
        raise DataError("file not found", path)
    if kind == "txt":
        return read_txt(path, split)
    if kind == "jsonl":
        return read_jsonl(path, text_field)
    raise DataError("unsupported corpus file: expected .txt, .jsonl or .jsonl.gz", path)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".txt") and name != "source.txt":
        return "txt"
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    return None


# ---------------------------------------------------------------- the shared corpus_* folders


def _wikitext2(folder: Path) -> list[str]:
    return [d for f in ("valid.txt", "test.txt") for d in read_txt(folder / f, "wikitext")]


def _python_stdlib(folder: Path) -> list[str]:
    return read_jsonl(folder / "stdlib_py.jsonl", "text")


# name -> (reader over the folder, expected layout for the error message)
CORPORA: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "wikitext2": (_wikitext2, "corpus_wikitext2/{valid,test}.txt (WikiText-2, one article per ' = Title = ' heading)"),
    "python_stdlib": (_python_stdlib, "corpus_python_stdlib/stdlib_py.jsonl ({path, text} per line)"),
}


def available(data_dir: str | Path | None = None) -> list[str]:
    """Corpus names :func:`load_corpus` knows: the built-in readers plus any ``corpus_*`` folder."""
    names = set(CORPORA)
    root = _data_dir(data_dir)
    if root.is_dir():
        names |= {p.name.removeprefix("corpus_") for p in root.glob("corpus_*") if p.is_dir()}
    return sorted(names)


def layout(name: str) -> str:
    """The files corpus ``name`` is read from (for messages that say how to add it)."""
    return CORPORA[name][1] if name in CORPORA else f"corpus_{name}/*.txt or *.jsonl (a 'text' field per line)"


def load_corpus(name: str, data_dir: str | Path | None = None) -> list[str]:
    """Documents of ``<data_dir>/corpus_<name>``: a known reader, else every text/JSONL file in it."""
    folder = _data_dir(data_dir) / f"corpus_{name}"
    reader = CORPORA[name][0] if name in CORPORA else None
    if reader is None and not folder.is_dir():
        import difflib

        close = difflib.get_close_matches(name, available(data_dir), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown corpus {name!r}.{hint} Known: {', '.join(available(data_dir)) or 'none'}", folder)
    require_dir(folder, f"corpus {name!r}", layout(name))
    docs = reader(folder) if reader else read_path(folder)
    if not docs:
        raise DataError(f"corpus {name!r} holds no text", folder)
    return docs


def passage_records(corpus: str, n: int = 200, min_chars: int = 200, max_chars: int = 1000,
                    data_dir: str | Path | None = None) -> list:
    """``n`` paragraphs of a corpus as records (text in ``solution``), spread evenly over it, for
    tasks that score general text (``kind: kl_to_base``, ``bpb``): paragraphs shorter than
    ``min_chars`` and headings are skipped, longer ones cut at the last word before ``max_chars``."""
    from mixlab.data.records import Record

    paras = [p.strip() for d in load_corpus(corpus, data_dir) for p in d.splitlines()]
    paras = [p for p in paras if len(p) >= min_chars and not _WIKI_TITLE.match(f" {p} ")
             and not p.startswith("= ")]
    if not paras:
        raise DataError(f"corpus {corpus!r} has no paragraph of at least {min_chars} characters")
    picked = [paras[i * len(paras) // min(n, len(paras))] for i in range(min(n, len(paras)))]
    out = []
    for i, p in enumerate(picked):
        text = p if len(p) <= max_chars else p[:max_chars].rsplit(" ", 1)[0]
        out.append(Record(f"corpus_{corpus}/{i}", f"corpus_{corpus}", "text", "", "", "text", solution=text,
                          metadata={"source": f"corpus_{corpus}", "original_id": str(i)}))
    return out
