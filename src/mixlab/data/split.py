"""Leakage-free train/test splits decided by hashing, so they are stable as data grows.

Each record gets a number ``u`` in [0, 1) from a hash of ``(seed, dataset, original id)``; it goes
to test when ``u < test_fraction``. Records whose questions are identical after normalization form a
group, and the whole group takes the side of its member with the smallest ``u`` — so a duplicate can
never sit on both sides. Adding records never moves an existing record, with one exception that
keeps the no-leak guarantee: a new exact duplicate of an existing question with a smaller ``u``
carries that question's group (old member included) to its side.

``mode="official"`` keeps each dataset's published split instead (``metadata['split'] == 'train'``
is train, every other split is test).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from mixlab.data.normalize import normalize_text
from mixlab.data.records import Record
from mixlab.errors import DataError

_SCALE = float(2**64)


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts (blake2b, independent of PYTHONHASHSEED)."""
    key = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / _SCALE


@dataclass(frozen=True)
class SplitResult:
    train: list[Record]
    test: list[Record]
    groups_merged: int  # duplicate groups with more than one member


def split_records(records: Sequence[Record], test_fraction: float, seed: int, mode: str = "hash") -> SplitResult:
    """Split records into train and test; duplicates (normalized question) never straddle the line."""
    if mode == "official":
        return _split_official(records)
    if mode != "hash":
        raise ValueError(f"unknown split mode {mode!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    u = [unit_hash(seed, r.dataset, r.original_id) for r in records]
    # group key -> smallest u among its members
    group_u: dict[str, float] = {}
    keys = []
    for r, ui in zip(records, u):
        k = normalize_text(r.question)
        keys.append(k)
        prev = group_u.get(k)
        if prev is None or ui < prev:
            group_u[k] = ui
    train, test = [], []
    for r, k in zip(records, keys):
        (test if group_u[k] < test_fraction else train).append(r)
    merged = len(records) - len(group_u)
    return SplitResult(train, test, merged)


def _split_official(records: Sequence[Record]) -> SplitResult:
    train = [r for r in records if r.metadata.get("split") == "train"]
    test = [r for r in records if r.metadata.get("split") != "train"]
    missing = sorted({r.dataset for r in records} - {r.dataset for r in train})
    if missing:
        raise DataError(f"split mode 'official', but {', '.join(missing)} has no official train split; use `split.mode: hash`")
    return SplitResult(train, test, 0)
