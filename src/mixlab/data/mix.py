"""Balancing datasets inside a domain and mixing domains by ratio.

Both steps only choose *which* records (and how many copies) go into the training mixture; every
choice draws from a generator seeded by ``(seed, purpose, name)`` so a rebuild is byte-identical.
Counts are rounded by the largest-remainder method so realized ratios are as close to the requested
ones as integers allow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from mixlab.data.records import Record
from mixlab.data.split import unit_hash
from mixlab.errors import ConfigError


def rng_for(seed: int, *purpose: object) -> np.random.Generator:
    """A numpy generator for one named purpose, independent of every other purpose's draws."""
    return np.random.default_rng(int(unit_hash(seed, *purpose) * 2**63))


def normalize_weights(weights: Mapping[str, float], what: str) -> dict[str, float]:
    """Weights -> fractions summing to 1; negative or all-zero weights are config errors naming ``what``."""
    bad = {k: v for k, v in weights.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)}
    if bad:
        raise ConfigError(f"{what}: weights must be non-negative numbers, got {bad}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ConfigError(f"{what}: weights sum to zero; give at least one positive weight")
    return {k: v / total for k, v in weights.items()}


def largest_remainder(fractions: Mapping[str, float], total: int) -> dict[str, int]:
    """Integer counts summing to ``total`` that are closest to ``fraction * total`` (Hamilton's method)."""
    raw = {k: f * total for k, f in fractions.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    short = total - sum(counts.values())
    # ties broken by name so the result is deterministic
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:short]:
        counts[k] += 1
    return counts


def take(pool: Sequence[Record], n: int, rng: np.random.Generator) -> list[Record]:
    """``n`` records from ``pool``: a random subset when ``n <= len(pool)``, else every record
    ``n // len`` times plus a random subset for the rest (lowest-variance upsampling).

    Extra copies get ids ``<id>#<copy>`` so ids stay unique inside a file; ``metadata['copy']`` says which.
    """
    if n <= 0:
        return []
    size = len(pool)
    if size == 0:
        raise ValueError("cannot sample from an empty pool")
    reps, rest = divmod(n, size)
    picks = [list(range(size))] * reps + [sorted(rng.choice(size, size=rest, replace=False).tolist())]
    out: list[Record] = []
    for copy, idx in enumerate(picks):
        for i in idx:
            r = pool[i]
            out.append(r if copy == 0 else replace(r, id=f"{r.id}#{copy}", metadata={**r.metadata, "copy": copy}))
    return out


def balance_domain(
    pools: Mapping[str, Sequence[Record]], weights: Mapping[str, float], method: str, seed: int, domain: str
) -> dict[str, list[Record]]:
    """Re-size each dataset's pool so their sizes follow ``weights`` inside one domain.

    ``downsample``: the largest balanced set without repeats (size set by the scarcest dataset);
    ``upsample``: keep every record and repeat the smaller datasets; ``natural``: keep pools as they are.
    """
    frac = normalize_weights(weights, f"domains.{domain}.datasets")
    if method == "natural":
        return {k: list(v) for k, v in pools.items() if frac[k] > 0}
    live = {k: f for k, f in frac.items() if f > 0}
    ratios = [len(pools[k]) / f for k, f in live.items()]
    unit = min(ratios) if method == "downsample" else max(ratios)
    counts = largest_remainder(live, int(math.floor(unit + 1e-9)))
    return {k: take(pools[k], counts[k], rng_for(seed, "balance", domain, k)) for k in live}


@dataclass(frozen=True)
class DomainPlan:
    target: int
    per_dataset: dict[str, int]


def plan_mixture(
    pool_sizes: Mapping[str, Mapping[str, int]],
    ratios: Mapping[str, float],
    mode: str,
    total: int | None = None,
    sample_ratio: float = 1.0,
) -> dict[str, DomainPlan]:
    """How many records each domain (and each dataset inside it) contributes.

    ``exact``: the largest mixture that meets the ratios exactly, N = min_d pool_d / ratio_d.
    ``total``: a fixed total (upsampling a domain whose pool is too small).
    ``sample_ratio`` then keeps that fraction of the result, ratios unchanged.
    """
    frac = normalize_weights(ratios, "mix.ratios")
    live = {d: f for d, f in frac.items() if f > 0}
    domain_size = {d: sum(pool_sizes[d].values()) for d in live}
    if mode == "exact":
        size = min(domain_size[d] / f for d, f in live.items())
    elif mode == "total":
        if not total or total <= 0:
            raise ConfigError("mix.total: a positive total is required when mix.mode is 'total'")
        size = float(total)
    else:
        raise ConfigError(f"mix.mode: unknown mode {mode!r}; use 'exact' or 'total'")
    n_total = int(math.floor(size * sample_ratio + 1e-9))
    per_domain = largest_remainder(live, n_total)
    plans = {}
    for d, n in per_domain.items():
        sizes = pool_sizes[d]
        inner = {k: v / domain_size[d] for k, v in sizes.items()}
        plans[d] = DomainPlan(n, largest_remainder(inner, n))
    return plans


def realize(
    pools: Mapping[str, Mapping[str, Sequence[Record]]], plans: Mapping[str, DomainPlan], seed: int
) -> list[Record]:
    """Draw the planned number of records from each dataset pool."""
    out: list[Record] = []
    for d in sorted(plans):
        for k in sorted(plans[d].per_dataset):
            out.extend(take(pools[d][k], plans[d].per_dataset[k], rng_for(seed, "mix", d, k)))
    return out


def replay_count(n_target: int, fraction: float) -> int:
    """Replay records needed so that they make up ``fraction`` of the final mixture."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"replay.fraction must be in [0, 1), got {fraction}")
    return int(round(n_target * fraction / (1.0 - fraction)))


def shuffle(records: list[Record], seed: int) -> list[Record]:
    """A seeded permutation, so training batches interleave domains."""
    order = rng_for(seed, "shuffle").permutation(len(records))
    return [records[i] for i in order]
