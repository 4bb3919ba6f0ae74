"""Writing a built mixture to disk, and reading its manifest back.

Layout of a build directory::

    mixed/train.jsonl     the shuffled training mixture
    mixed/test.jsonl      every test record of every dataset (sorted by id)
    test/<dataset>.jsonl  each dataset's test records
    test_index.json       dataset -> sorted test ids (what must never be trained on)
    info.json             requested/realized ratios, counts, contamination, content hashes
    config.yaml           the resolved config
    meta.json             provenance (git commit, versions, host) and timings

``info.json`` depends only on the config and the data, so a rebuild gives identical bytes; anything
that varies between runs (time, host) goes to ``meta.json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson

from mixlab import atomic
from mixlab.config import dump_yaml
from mixlab.data.records import Record
from mixlab.errors import DataError

_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def _write_jsonl(path: Path, records: list[Record]) -> str:
    """Stream records to ``path`` (inside the temporary build dir) and return the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb", buffering=1 << 20) as f:
        for r in records:
            line = orjson.dumps(r.to_dict(), option=_OPTS)
            h.update(line)
            f.write(line)
    return h.hexdigest()


def write_build(result: Any, out: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write a :class:`~mixlab.data.build.BuildResult` to ``out`` atomically (all files or none)."""
    out = Path(out)
    with atomic.directory(out) as tmp:
        hashes = {"mixed/train.jsonl": _write_jsonl(tmp / "mixed" / "train.jsonl", result.train)}
        all_test = sorted((r for rs in result.test.values() for r in rs), key=lambda r: r.id)
        hashes["mixed/test.jsonl"] = _write_jsonl(tmp / "mixed" / "test.jsonl", all_test)
        for ds, recs in sorted(result.test.items()):
            hashes[f"test/{ds}.jsonl"] = _write_jsonl(tmp / "test" / f"{ds}.jsonl", recs)
        index = {ds: [r.id for r in recs] for ds, recs in sorted(result.test.items())}
        (tmp / "test_index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
        hashes["test_index.json"] = hashlib.sha256((tmp / "test_index.json").read_bytes()).hexdigest()
        info = {**result.info, "hashes": hashes}
        (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        (tmp / "config.yaml").write_text(dump_yaml(result.config))
        if meta is not None:
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def read_info(build_dir: str | Path) -> dict[str, Any]:
    """The ``info.json`` of a build directory, with a clear error if it is not one."""
    path = Path(build_dir) / "info.json"
    if not path.is_file():
        raise DataError("not a mixlab data build (no info.json); run `mixlab data build` first", build_dir)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"info.json does not parse: {e}", path, e.lineno) from None


def verify_hashes(build_dir: str | Path) -> dict[str, bool]:
    """Recompute each output's sha256 and compare with ``info.json`` (True = intact)."""
    build_dir = Path(build_dir)
    info = read_info(build_dir)
    return {
        rel: (build_dir / rel).is_file() and hashlib.sha256((build_dir / rel).read_bytes()).hexdigest() == h
        for rel, h in info.get("hashes", {}).items()
    }
