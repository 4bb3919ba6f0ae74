"""Mixture sampler: realize requested token proportions exactly, by deterministic interleaving.

Random sampling by weight only matches a mixture on average (a 1M-token proxy run drifts by
several percent on small sources). Instead each source gets an integer number of fixed-length
sequences (its share of the budget, rounded by largest remainder) and the sequences are merged in
a low-discrepancy order: the j-th of ``c_i`` sequences of source ``i`` sits at key ``(j + 0.5) / c_i``.
Every prefix of the stream, hence every batch, is then within one sequence per source of the
requested mixture, and the whole run matches it to rounding.

A source may be repeated at most ``max_epochs`` times. When the requested share exceeds that, the
source is capped at its limit and the remaining budget is spread over the other sources in
proportion to their weights (water-filling); requested and realized proportions are both kept.
Within a source, each epoch visits its sequences in a seeded random order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from mixlab.data.text import TokenizedSource
from mixlab.errors import ConfigError, DataError


@dataclass
class Allocation:
    """How many sequences each source contributes, and what that means as proportions."""

    requested: dict[str, float]  # normalized weights as asked
    realized: dict[str, float]  # share of training tokens actually given
    sequences: dict[str, int]
    available: dict[str, int]  # distinct sequences in one epoch of the source
    epochs: dict[str, float]  # sequences / available
    capped: list[str]  # sources held at the repetition cap

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> list[tuple[str, float, float, float]]:
        """Rows ``(source, requested, realized, epochs)`` for printing."""
        return [(k, self.requested[k], self.realized[k], self.epochs[k]) for k in self.requested]


def available_sequences(n_tokens: int, seq_len: int) -> int:
    """Non-overlapping training windows: each holds ``seq_len`` inputs and the next-token targets."""
    return max(0, (n_tokens - 1) // seq_len)


def allocate(weights: Mapping[str, float], available: Mapping[str, int], total: int, max_epochs: float) -> Allocation:
    """Split ``total`` sequences over sources by weight, capping each at ``max_epochs`` passes."""
    if total <= 0:
        raise ConfigError("the training budget must cover at least one sequence")
    wsum = sum(weights.values())
    if wsum <= 0 or any(w < 0 for w in weights.values()):
        raise ConfigError("mixture weights must be non-negative and not all zero")
    requested = {k: w / wsum for k, w in weights.items()}
    caps = {k: int(np.floor(max_epochs * available[k])) for k in requested}
    share: dict[str, float] = {}
    active = {k for k, w in requested.items() if w > 0}
    remaining = float(total)
    capped: list[str] = []
    while active:  # water-filling: cap sources that would overflow, spread their excess
        wa = sum(requested[k] for k in active)
        over = [k for k in sorted(active) if requested[k] / wa * remaining > caps[k]]
        if not over:
            share.update({k: requested[k] / wa * remaining for k in active})
            remaining = 0.0
            break
        for k in over:
            share[k] = caps[k]
            remaining -= caps[k]
            active.discard(k)
            capped.append(k)
    if remaining > 1e-9:
        have = sum(caps[k] for k in requested if requested[k] > 0)
        raise ConfigError(
            f"not enough text for the budget: {total} sequences requested but the sources allow only {have} "
            f"at max_epochs={max_epochs}. Lower the duration, raise data.max_epochs, or add text."
        )
    counts = _round_preserving_sum({k: share.get(k, 0.0) for k in requested}, total, caps)
    realized = {k: counts[k] / total for k in requested}
    epochs = {k: counts[k] / available[k] if available[k] else 0.0 for k in requested}
    return Allocation(requested, realized, counts, dict(available), epochs, sorted(capped))


def _round_preserving_sum(share: Mapping[str, float], total: int, caps: Mapping[str, int]) -> dict[str, int]:
    """Largest-remainder rounding that keeps the sum equal to ``total`` and respects caps."""
    counts = {k: min(int(np.floor(v + 1e-9)), caps[k]) for k, v in share.items()}
    short = total - sum(counts.values())
    order = sorted(share, key=lambda k: (-(share[k] - counts[k]), k))
    for k in order:
        if short <= 0:
            break
        if counts[k] < caps[k] and share[k] > 0:
            counts[k] += 1
            short -= 1
    return counts


def interleave(counts: Sequence[int]) -> np.ndarray:
    """Source index of each position in a low-discrepancy merge of ``counts[i]`` items per source."""
    keys = [(np.arange(c) + 0.5) / c for c in counts]
    src = np.concatenate([np.full(c, i, dtype=np.int16) for i, c in enumerate(counts)])
    order = np.lexsort((src, np.concatenate(keys)))  # sort by key, ties by source index
    return src[order]


class MixtureSampler:
    """The training stream: ``sequences(start, n)`` returns rows ``start .. start+n`` of the schedule.

    The schedule is a pure function of (sources, weights, seq_len, total, max_epochs, seed), so
    resuming needs only the position; :meth:`state_dict` also carries a fingerprint that refuses a
    resume against different data.
    """

    def __init__(self, sources: Sequence[TokenizedSource], weights: Mapping[str, float], seq_len: int,
                 total_sequences: int, max_epochs: float = 4.0, seed: int = 0):
        names = [s.name for s in sources]
        missing = [k for k in weights if k not in names]
        if missing:
            raise ConfigError(f"mixture names source(s) {', '.join(missing)} that are not defined under data.sources "
                              f"(defined: {', '.join(names)})")
        self.seq_len = seq_len
        self.names = [n for n in names if n in weights]
        srcs = {s.name: s for s in sources}
        avail = {n: available_sequences(srcs[n].n_tokens, seq_len) for n in self.names}
        for n in self.names:
            if avail[n] < 1 and weights[n] > 0:
                raise DataError(f"source {n!r} has {srcs[n].n_tokens} tokens, fewer than one training sequence "
                                f"({seq_len + 1} tokens); add text or lower train.seq_len")
        self.allocation = allocate({n: weights[n] for n in self.names}, avail, total_sequences, max_epochs)
        counts = [self.allocation.sequences[n] for n in self.names]
        self.source_of = interleave(counts)
        self.tokens = np.concatenate([srcs[n].train for n in self.names]).astype(np.int32, copy=False)
        bases = np.cumsum([0] + [srcs[n].n_tokens for n in self.names[:-1]])
        self.starts = np.empty(len(self.source_of), dtype=np.int64)
        for i, n in enumerate(self.names):
            where = np.flatnonzero(self.source_of == i)
            order = _epoch_orders(avail[n], counts[i], np.random.default_rng([seed, i]))
            self.starts[where] = bases[i] + order * seq_len
        self._window = np.arange(seq_len + 1, dtype=np.int64)
        self.position = 0
        self.fingerprint = self._fingerprint(seed, max_epochs)

    def __len__(self) -> int:
        return len(self.starts)

    def _fingerprint(self, seed: int, max_epochs: float) -> str:
        h = hashlib.sha256()
        h.update(repr((self.names, self.seq_len, seed, max_epochs, self.allocation.sequences)).encode())
        h.update(self.starts[:4096].tobytes())
        h.update(self.tokens[:: max(1, len(self.tokens) // 65536)].tobytes())
        return h.hexdigest()[:16]

    def sequences(self, start: int, count: int) -> torch.Tensor:
        """Rows ``[start, start + count)`` as a LongTensor ``[count, seq_len + 1]``."""
        if start < 0 or start + count > len(self.starts):
            raise IndexError(f"rows {start}..{start + count} outside the schedule of {len(self.starts)} sequences")
        idx = self.starts[start:start + count, None] + self._window
        self.position = start + count
        return torch.from_numpy(self.tokens[idx].astype(np.int64))

    def realized_tokens(self, upto: int | None = None) -> dict[str, int]:
        """Training tokens drawn from each source in the first ``upto`` rows (all rows by default)."""
        upto = len(self.source_of) if upto is None else upto
        counts = np.bincount(self.source_of[:upto], minlength=len(self.names))
        return {n: int(c) * self.seq_len for n, c in zip(self.names, counts)}

    def state_dict(self) -> dict:
        return {"position": int(self.position), "fingerprint": self.fingerprint}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("fingerprint") != self.fingerprint:
            raise DataError("the checkpoint was written with different training data or mixture; "
                            "resume with the same config and data, or start a new output directory")
        self.position = int(state["position"])


def _epoch_orders(available: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sequence indices for ``count`` draws: a fresh permutation of ``available`` per epoch (none for a
    source at weight 0, which a proposal can give a domain that is still evaluated)."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    epochs = -(-count // available)
    return np.concatenate([rng.permutation(available) for _ in range(epochs)])[:count]
