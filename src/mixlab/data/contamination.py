"""Overlap between a training mixture and test / benchmark items.

Three levels, as decontamination studies report them: *exact* (identical question text),
*normalized* (identical after :func:`normalize_text`), and *n-gram* (the training text — question and
worked solution — shares at least one word n-gram, 13 by default as in GPT-3's decontamination, with
the reference question). Counts are cumulative: ``exact <= normalized <= ngram``, each training
record counted once per reference at its strongest level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mixlab.data.normalize import GramHasher, normalize_text
from mixlab.data.records import Record

_CHUNK = 20_000  # training records hashed at a time: bounds memory on million-record mixtures


@dataclass
class Overlap:
    reference: str  # test file or benchmark name
    n_reference: int
    exact: int = 0
    normalized: int = 0
    ngram: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "reference": self.reference, "n_reference": self.n_reference, "exact": self.exact,
            "normalized": self.normalized, "ngram": self.ngram, "examples": self.examples,
        }


class ReferenceIndex:
    """Exact, normalized and n-gram index over one set of reference (test or benchmark) questions."""

    def __init__(self, name: str, records: Sequence[Record], hasher: GramHasher):
        self.name = name
        self.size = len(records)
        self.exact: dict[str, str] = {}
        self.norm: dict[str, str] = {}
        norms = []
        for r in records:
            self.exact.setdefault(r.question, r.id)
            norms.append(normalize_text(r.question))
            self.norm.setdefault(norms[-1], r.id)
        h, owner = hasher.hashes(norms)
        self.grams, first = np.unique(h, return_index=True)
        self.gram_ids = [records[i].id for i in owner[first]]

    def gram_hits(self, h: np.ndarray) -> np.ndarray:
        """For each hash in ``h``: the index of the matching reference gram, or -1."""
        pos = np.searchsorted(self.grams, h)
        pos[pos == len(self.grams)] = 0
        found = self.grams[pos] == h if len(self.grams) else np.zeros(len(h), bool)
        return np.where(found, pos, -1)


def check(train: Sequence[Record], references: Mapping[str, Sequence[Record]], n: int = 13,
          max_examples: int = 5) -> tuple[list[Overlap], set[str]]:
    """Compare every training record with every reference set.

    Returns one :class:`Overlap` per reference and the ids of training records that overlap any.
    """
    hasher = GramHasher(n)
    indexes = [ReferenceIndex(name, references[name], hasher) for name in sorted(references)]
    # one sorted union of every reference's grams: a chunk is looked up once, and only its few hits
    # are looked up again per reference
    union = np.unique(np.concatenate([ix.grams for ix in indexes])) if indexes else np.empty(0, np.uint64)
    report = {ix.name: Overlap(ix.name, ix.size) for ix in indexes}
    flagged: set[str] = set()
    for start in range(0, len(train), _CHUNK):
        chunk = train[start : start + _CHUNK]
        norm_q = [normalize_text(r.question) for r in chunk]
        texts = [q if not r.solution else q + " " + normalize_text(r.solution) for q, r in zip(norm_q, chunk)]
        h, owner = hasher.hashes(texts)
        if len(union):
            pos = np.searchsorted(union, h)
            pos[pos == len(union)] = 0
            keep = union[pos] == h
            h, owner = h[keep], owner[keep]
        else:
            h, owner = h[:0], owner[:0]
        for ix in indexes:
            ov = report[ix.name]
            hits: dict[int, tuple[str, str]] = {}
            pos = ix.gram_hits(h)
            for k in np.flatnonzero(pos >= 0)[::-1]:  # reversed: the first gram of a record wins
                hits[int(owner[k])] = ("ngram", ix.gram_ids[pos[k]])
            for i, (r, q) in enumerate(zip(chunk, norm_q)):
                if r.question in ix.exact:
                    hits[i] = ("exact", ix.exact[r.question])
                elif q in ix.norm:
                    hits[i] = ("normalized", ix.norm[q])
            for i in sorted(hits):
                level, ref_id = hits[i]
                ov.exact += level == "exact"
                ov.normalized += level != "ngram"
                ov.ngram += 1
                flagged.add(chunk[i].id)
                if len(ov.examples) < max_examples:
                    ov.examples.append({"train_id": chunk[i].id, "reference_id": ref_id, "level": level})
    return [report[ix.name] for ix in indexes], flagged
