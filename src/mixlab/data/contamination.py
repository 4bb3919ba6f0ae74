"""Overlap between a training mixture and test / benchmark items.

Three levels, as decontamination studies report them: *exact* (identical question text),
*normalized* (identical after :func:`normalize_text`), and *n-gram* (the training text shares at
least one word n-gram, 13 by default as in GPT-3's decontamination, with the reference question).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mixlab.data.normalize import normalize_text
from mixlab.data.records import Record


@dataclass
class Overlap:
    reference: str  # test file or benchmark name
    n_reference: int
    exact: int = 0
    normalized: int = 0
    ngram: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def any(self) -> int:
        return max(self.exact, self.normalized, self.ngram)

    def to_dict(self) -> dict:
        return {
            "reference": self.reference, "n_reference": self.n_reference, "exact": self.exact,
            "normalized": self.normalized, "ngram": self.ngram, "examples": self.examples,
        }


def _ngrams(tokens: Sequence[str], n: int) -> Iterable[str]:
    return (" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class ReferenceIndex:
    """Exact, normalized and n-gram index over one set of reference (test or benchmark) questions."""

    def __init__(self, name: str, records: Sequence[Record], n: int = 13):
        self.name = name
        self.n = n
        self.size = len(records)
        self.exact: dict[str, str] = {}
        self.norm: dict[str, str] = {}
        self.grams: dict[str, str] = {}
        for r in records:
            self.exact.setdefault(r.question, r.id)
            norm = normalize_text(r.question)
            self.norm.setdefault(norm, r.id)
            for g in _ngrams(norm.split(), n):
                self.grams.setdefault(g, r.id)

    def match(self, record: Record) -> tuple[str, str] | None:
        """The strongest overlap of one training record: ``(level, reference id)`` or None."""
        if record.question in self.exact:
            return "exact", self.exact[record.question]
        norm_q = normalize_text(record.question)
        if norm_q in self.norm:
            return "normalized", self.norm[norm_q]
        if self.grams:
            text = norm_q if not record.solution else norm_q + " " + normalize_text(record.solution)
            for g in _ngrams(text.split(), self.n):
                if g in self.grams:
                    return "ngram", self.grams[g]
        return None


def check(train: Sequence[Record], references: Mapping[str, Sequence[Record]], n: int = 13,
          max_examples: int = 5) -> tuple[list[Overlap], set[str]]:
    """Compare every training record with every reference set.

    Returns one :class:`Overlap` per reference and the ids of training records that overlap any.
    A record counts at its strongest level only (exact implies normalized implies n-gram).
    """
    flagged: set[str] = set()
    report = []
    for name in sorted(references):
        index = ReferenceIndex(name, references[name], n)
        ov = Overlap(name, index.size)
        for r in train:
            hit = index.match(r)
            if hit is None:
                continue
            level, ref_id = hit
            ov.exact += level == "exact"
            ov.normalized += level in ("exact", "normalized")
            ov.ngram += 1
            flagged.add(r.id)
            if len(ov.examples) < max_examples:
                ov.examples.append({"train_id": r.id, "reference_id": ref_id, "level": level})
        report.append(ov)
    return report, flagged
