"""Text normalization used to find duplicate and contaminated questions."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lower case, punctuation removed, whitespace collapsed.

    Two questions that differ only in case, punctuation or spacing are the same question for
    leakage purposes.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _NON_WORD.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """Normalized word tokens (the unit of n-gram overlap)."""
    return normalize_text(text).split()
