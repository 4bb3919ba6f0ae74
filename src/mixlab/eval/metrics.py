"""Metric formulas shared by evaluation and in-loop training evaluation."""

from __future__ import annotations

import math


def bits_per_byte(nll_nats: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte from a summed negative log-likelihood in nats (OLMo's definition).

    ``bpb = -sum(log p(token)) / (n_bytes * ln 2)``. Tokenizer-independent, so models with different
    vocabularies are comparable.
    """
    if n_bytes <= 0:
        raise ValueError("bits_per_byte needs a continuation of at least one byte")
    return nll_nats / (n_bytes * math.log(2))
