"""Leakage-free train/test splits decided by hashing, so they are stable as data grows.

Each record gets a number ``u`` in [0, 1) from a hash of ``(seed, dataset, original id)``; it goes
to test when ``u < test_fraction``. Records whose questions are identical after normalization, or
share a word n-gram (13 by default, the length decontamination checks use), or where one record's
question + worked solution contains an n-gram of the other's question (the contamination check's
definition of an n-gram overlap, see :mod:`mixlab.data.contamination`), form a group, and the
whole group takes the side of one representative member (the one with the smallest second hash) —
so a duplicate can never sit on both sides, and a group of any size lands in test with probability
``test_fraction``. Adding records never moves an existing record, with one exception that keeps the
no-leak guarantee: a new (near-)duplicate that becomes its group's representative carries the group
(old members included) to its own side.

``mode="official"`` keeps each dataset's published split instead (``metadata['split'] == 'train'``
is train, every other split is test).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mixlab.data.normalize import GramHasher, normalize_text
from mixlab.data.records import Record
from mixlab.errors import DataError

_SCALE = float(2**64)
_CHUNK = 20_000


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts (blake2b, independent of PYTHONHASHSEED)."""
    key = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / _SCALE


@dataclass(frozen=True)
class SplitResult:
    train: list[Record]
    test: list[Record]
    groups_merged: int  # duplicate groups with more than one member


def _groups(questions: Sequence[str], ngram: int, solutions: Sequence[str | None] | None = None) -> np.ndarray:
    """Group label per record: same normalized question, or (``ngram > 0``) a shared word n-gram.

    Near-duplicates (templated or lightly edited questions, common in MATH and MBPP) then share a
    side too, so a 13-gram overlap check finds no train/test leak. With ``solutions``, a record whose
    question + solution text contains an n-gram of another record's question joins its group as well
    (MATH solutions repeat the Asymptote figures of other problems). Connected components of the
    "shares a key" graph are found with scipy, and grams are hashed with numpy (see GramHasher).
    """
    n = len(questions)
    first: dict[int, int] = {}
    same_question = np.empty(n, dtype=np.int64)
    hasher, hs, owners = GramHasher(max(ngram, 1)), [], []
    for start in range(0, n, _CHUNK):  # chunks bound the temporary normalized texts and word lists
        norms = [normalize_text(q) for q in questions[start : start + _CHUNK]]
        fresh = []
        for i, t in enumerate(norms, start):
            # keyed by the string's hash: an int is far smaller than the text; equality is what counts
            same_question[i] = first.setdefault(hash(t), i)
            if same_question[i] == i:
                fresh.append(i - start)
        if ngram > 0:  # an exact duplicate adds no gram its first copy lacks: hash first copies only
            h, owner = hasher.hashes([norms[k] for k in fresh])
            hs.append(h)
            owners.append(np.asarray(fresh, dtype=np.int32)[owner] + start)
    a: list[np.ndarray] = [same_question]
    b: list[np.ndarray] = [np.arange(n, dtype=np.int64)]
    if ngram > 0:
        h = np.concatenate(hs)
        hs.clear()
        order = np.argsort(h, kind="stable")
        h = h[order]
        owner = np.concatenate(owners)[order]
        owners.clear()
        del order
        same = (h[1:] == h[:-1]) & (owner[1:] != owner[:-1])
        a.append(owner[:-1][same])
        b.append(owner[1:][same])
        if solutions is not None:
            sa, sb = _solution_edges(questions, solutions, h, owner, hasher)
            a.append(sa)
            b.append(sb)
        del h, owner
    rows, cols = np.concatenate(a), np.concatenate(b)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _solution_edges(questions: Sequence[str], solutions: Sequence[str | None], q_hashes: np.ndarray,
                    q_owner: np.ndarray, hasher: GramHasher) -> tuple[np.ndarray, np.ndarray]:
    """Edges (i, j) where record i's question + solution holds an n-gram of record j's question.

    ``q_hashes`` are the sorted question-gram hashes and ``q_owner`` their records. The text is
    built as the contamination check builds it, so a split with these edges has no train/test
    n-gram overlap by that check's definition. A record that repeats an earlier (question,
    solution) pair adds nothing and is skipped.
    """
    todo: list[int] = []
    seen: set[int] = set()
    for i, sol in enumerate(solutions):
        key = hash((questions[i], sol))
        if sol and key not in seen:
            seen.add(key)
            todo.append(i)
    del seen
    a, b = [], []
    for start in range(0, len(todo), _CHUNK):
        idx = todo[start : start + _CHUNK]
        texts = [normalize_text(questions[i]) + " " + normalize_text(solutions[i]) for i in idx]
        h, owner = hasher.hashes(texts)
        if not len(h) or not len(q_hashes):
            continue
        pos = np.searchsorted(q_hashes, h)
        pos[pos == len(q_hashes)] = 0
        hit = q_hashes[pos] == h
        a.append(np.asarray(idx, dtype=np.int64)[owner[hit]])
        b.append(q_owner[pos[hit]].astype(np.int64))
    if not a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(a), np.concatenate(b)


def split_records(records: Sequence[Record], test_fraction: float, seed: int, mode: str = "hash",
                  ngram: int = 13) -> SplitResult:
    """Split records into train and test; duplicates and near-duplicates never straddle the line."""
    if mode == "official":
        return _split_official(records)
    if mode != "hash":
        raise ValueError(f"unknown split mode {mode!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not records:
        return SplitResult([], [], 0)
    labels = _groups([r.question for r in records], ngram, [r.solution for r in records])
    # A group follows its representative: the member with the smallest `rank` hash. Taking the side
    # from an independent hash (not min u) keeps P(test) = test_fraction for groups of any size.
    rank = np.fromiter((unit_hash(seed, "rank", r.dataset, r.original_id) for r in records), float, len(records))
    u = np.fromiter((unit_hash(seed, r.dataset, r.original_id) for r in records), float, len(records))
    order = np.lexsort((rank, labels))
    first_of_group = np.ones(len(order), dtype=bool)
    first_of_group[1:] = labels[order][1:] != labels[order][:-1]
    group_is_test = np.zeros(labels.max() + 1, dtype=bool)
    group_is_test[labels[order][first_of_group]] = u[order][first_of_group] < test_fraction
    is_test = group_is_test[labels]
    train = [r for r, t in zip(records, is_test) if not t]
    test = [r for r, t in zip(records, is_test) if t]
    return SplitResult(train, test, len(records) - int(first_of_group.sum()))


def _split_official(records: Sequence[Record]) -> SplitResult:
    train = [r for r in records if r.metadata.get("split") == "train"]
    test = [r for r in records if r.metadata.get("split") != "train"]
    missing = sorted({r.dataset for r in records} - {r.dataset for r in train})
    if missing:
        raise DataError(f"split mode 'official', but {', '.join(missing)} has no official train split; use `split.mode: hash`")
    return SplitResult(train, test, 0)
