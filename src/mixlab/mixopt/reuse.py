"""Mixture reuse when sources change (olmix's mixture reuse): keep what was already optimized.

After a mixture has been proposed over domains D, sources get added, removed or revised. Instead of
a new full swarm over every domain, the unchanged domains are frozen as one *virtual* domain
(``existing``) whose weight splits over them exactly as in the previous proposal; only the virtual
domain and the added or changed domains are searched, by a small swarm over those few weights.
Removed domains simply leave the frozen split (renormalized over what remains).

That is a :class:`~mixlab.mixopt.hierarchy.Hierarchy` with one frozen group: the swarm samples the
virtual weights and expands them to leaves (``swarm generate`` with ``reuse:``, which writes
``reuse.json``), ``fit`` aggregates the swarm's leaf mixtures back to the virtual domains (checking
every run splits the frozen domains as the previous proposal did), and ``propose`` expands its
answer to every leaf (``leaf_weights``), the next update's previous mixture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixlab.config import StrictModel
from mixlab.errors import ConfigError, DataError
from mixlab.mixopt.hierarchy import Hierarchy
from mixlab.mixopt.propose import Objective
from mixlab.mixopt.regressors import MixtureModel

VIRTUAL = "existing"
REUSE_FILE = "reuse.json"
# A run whose frozen domains are split more than this (total variation) away from the previous
# mixture was not sampled for reuse: fitting it as the virtual domain would misattribute its effect.
SPLIT_TOLERANCE = 0.01


class ReuseConfig(StrictModel):
    """Reuse a previous mixture: the domains not listed as changed (and present before) stay frozen."""

    previous: str = Field(description="the previous proposal: a `mixlab propose` directory or its proposal.json "
                                      "(or a fit directory: its default proposal)")
    changed: list[str] = Field(default_factory=list, description="domains kept by name whose data changed "
                                                                 "(searched again, like added ones)")


@dataclass(frozen=True)
class Reuse:
    """Which domains are frozen, added, removed and changed, and the frozen split."""

    previous: dict[str, float]
    source: str
    domains: list[str]
    unchanged: list[str]
    added: list[str]
    removed: list[str]
    changed: list[str]

    @property
    def free(self) -> list[str]:
        """The domains searched again, in domain order."""
        return [d for d in self.domains if d in self.added or d in self.changed]

    def hierarchy(self) -> Hierarchy:
        """``existing`` = the unchanged domains split as before; every free domain its own group."""
        w = np.array([self.previous.get(d, 0.0) if d in self.unchanged else 0.0 for d in self.domains])
        groups = {VIRTUAL: self.unchanged, **{d: [d] for d in self.free}}
        return Hierarchy.with_groups(self.domains, groups, w)

    def as_json(self) -> dict[str, Any]:
        return {"previous": self.previous, "source": self.source, "domains": self.domains,
                "unchanged": self.unchanged, "added": self.added, "removed": self.removed, "changed": self.changed,
                "virtual_domain": VIRTUAL, "split": self.hierarchy().split[VIRTUAL]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reuse:
        return cls(dict(data["previous"]), data["source"], list(data["domains"]), list(data["unchanged"]),
                   list(data["added"]), list(data["removed"]), list(data["changed"]))


def plan_reuse(previous: Mapping[str, float], source: str, domains: Sequence[str],
               changed: Sequence[str] = ()) -> Reuse:
    """Compare the previous mixture's domains with the new ones; errors say what cannot be reused."""
    domains = list(domains)
    if VIRTUAL in domains:
        raise ConfigError(f"a domain is named {VIRTUAL!r}, the name of the reused virtual domain; rename it")
    unknown = [c for c in changed if c not in domains]
    if unknown:
        raise ConfigError(f"reuse.changed: {unknown} are not domains of the new swarm ({domains})")
    added = [d for d in domains if d not in previous]
    removed = [d for d in previous if d not in domains]
    changed = [d for d in domains if d in changed and d not in added]
    unchanged = [d for d in domains if d in previous and d not in changed]
    if not unchanged or sum(previous[d] for d in unchanged) <= 0:
        raise ConfigError(f"nothing to reuse: no domain of {source} is unchanged with a weight > 0; run a full swarm")
    r = Reuse(dict(previous), source, domains, unchanged, added, removed, changed)
    if not r.free:
        kept = {d: previous[d] / sum(previous[d] for d in unchanged) for d in unchanged}
        raise ConfigError(f"nothing changed to search over (removed: {removed or 'none'}); the reused mixture "
                          f"renormalized over the remaining domains is {kept}: train it directly")
    return r


def check_split(reuse: Reuse, W: np.ndarray, runs: Sequence[str], path: str | Path) -> None:
    """Every run must split the frozen domains as the previous mixture did (within ``SPLIT_TOLERANCE``)."""
    dev = reuse.hierarchy().split_deviation(W)
    bad = np.flatnonzero(dev > SPLIT_TOLERANCE)
    if len(bad):
        i = int(bad[0])
        raise DataError(f"run {runs[i]!r} splits the reused domains {reuse.unchanged} {dev[i]:.3f} (total variation) "
                        f"away from the previous mixture ({reuse.source}); {len(bad)} run(s) do. A reuse fit needs "
                        "a swarm generated with `reuse:` (or drop --reuse to fit every domain)", path)


# A revised domain's earlier runs trained on its old data: in a pooled table that data is its own
# (retired) column, the domain's name with this suffix, so the old runs stay valid observations.
RETIRED = "@previous"


@dataclass(frozen=True)
class Pooled:
    """Earlier runs and new ones in one table over every domain any of them trained on.

    ``retired`` columns (removed domains, and the old data of revised ones) carry the earlier runs'
    weights and are held at zero by the proposal (``max_weight``); ``current`` are the new domains.
    ``blocks`` numbers the revisions: runs made before a revision are in an earlier block than the
    runs after it (``fit_pooled`` fits each earlier block an offset per metric)."""

    columns: list[str]
    current: list[str]
    weights: np.ndarray   # (n_old + n_new, len(columns))
    metrics: np.ndarray   # (n_old + n_new, m)
    n_old: int
    blocks: np.ndarray | None = None  # (n_old + n_new,) revision block of each run; None: one block

    @property
    def block_ids(self) -> np.ndarray:
        return np.zeros(len(self.weights), dtype=int) if self.blocks is None else np.asarray(self.blocks, dtype=int)

    @property
    def retired(self) -> list[str]:
        return [c for c in self.columns if c not in self.current]

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Mixtures over ``current`` as rows over ``columns`` (zero on retired ones)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = np.zeros((len(x), len(self.columns)))
        out[:, [self.columns.index(c) for c in self.current]] = x
        return out

    def objective(self, model: MixtureModel, design: np.ndarray, weights: Mapping[str, float],
                  directions: Mapping[str, str]) -> Objective:
        """The objective z-scored over the model's predictions on ``design`` (mixtures of the current
        domains, e.g. a sample of the swarm's sampler around the current priors), not over the runs.

        Why: the equal-weight objective's trade-off between metrics is set by each metric's spread,
        and the pooled runs (old designs, retired columns, small swarms near a previous proposal) have
        spreads unlike the current design's; a full recomputation's swarm would be z-scored over the
        current design, so this one is too, or the two optimize different objectives."""
        return Objective.build(model.metrics, model.predict(self.embed(design)), weights, directions)

    def restrict(self, x: np.ndarray) -> np.ndarray:
        """Rows over ``columns`` back to the current domains (renormalized)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))[:, [self.columns.index(c) for c in self.current]]
        return x / x.sum(axis=1, keepdims=True)


def pool_runs(old_domains: Sequence[str], W_old: np.ndarray, Y_old: np.ndarray, domains: Sequence[str],
              W_new: np.ndarray, Y_new: np.ndarray, changed: Sequence[str] = (),
              blocks_old: np.ndarray | None = None) -> Pooled:
    """Earlier runs (over ``old_domains``) and new runs (over ``domains``) as one table.

    Why: a run measures the loss surface at its mixture whatever was proposed since, so earlier
    swarms stay informative about how the unchanged domains trade off against each other; freezing
    their split (the virtual domain) throws that away, and a fit of the pooled table can move the
    split when an added domain substitutes for some of them. A domain whose data changed is a new
    domain for the earlier runs: their weight on it moves to ``name@previous`` (retired, like removed
    domains). ``old_domains`` may already hold retired columns of an earlier pooling. Assumes a run
    that gave a domain no weight is unaffected when that domain's data is revised (true of training:
    data a run never saw cannot change it; a surface where it does, e.g. through a per-task offset that
    the revision changes, biases the pooled fit from the revision on)."""
    old_domains, domains = list(old_domains), list(domains)
    changed = set(changed)
    rename = {}
    for d in old_domains:
        name = d
        if d in changed:
            while name in old_domains or name in domains or name in rename.values():
                name += RETIRED
        rename[d] = name
    columns = [rename[d] for d in old_domains] + [d for d in domains if d not in rename.values()]
    W = np.zeros((len(W_old) + len(W_new), len(columns)))
    W[:len(W_old), [columns.index(rename[d]) for d in old_domains]] = W_old
    W[len(W_old):, [columns.index(d) for d in domains]] = W_new
    b_old = np.zeros(len(W_old), dtype=int) if blocks_old is None else np.asarray(blocks_old, dtype=int)
    top = int(b_old.max()) if len(b_old) else 0
    b_new = np.full(len(W_new), top + 1 if changed and len(W_old) else top, dtype=int)
    return Pooled(columns, domains, W, np.vstack([np.atleast_2d(Y_old), np.atleast_2d(Y_new)]), len(W_old),
                  np.concatenate([b_old, b_new]))


# The offsets' fixed-point iteration stops when no offset's residual mean differs from it by more than
# this fraction of its metric's standard deviation over the runs, or after OFFSET_PASSES refits.
OFFSET_TOL = 1e-4
OFFSET_PASSES = 20


@dataclass(frozen=True)
class PooledFit:
    """A fit of a pooled table: the law over ``Pooled.columns`` as the latest block measures it, and
    each earlier block's offset per metric (its runs read ``offset`` higher than the latest block's
    would at the same mixture)."""

    model: MixtureModel
    offsets: dict[int, np.ndarray]
    reference: int
    passes: int
    bic_gain: float | None = None  # offsets="auto": BIC without offsets minus with them (> 0: offsets kept)


def fit_pooled(P: Pooled, regressor: str, metrics: Sequence[str], seed: int = 0,
               sample_weight: np.ndarray | None = None, offsets: bool | Literal["auto"] = "auto",
               options: Mapping[str, Any] | None = None) -> PooledFit:
    """Fit ``regressor`` to every run of ``P`` with an additive offset per metric for each revision
    block other than the latest one that has runs (the reference): the offsets are the fixed point of
    "fit the law to the runs less their block's offset, then set each offset to its block's (weighted)
    mean residual".

    Why: a revision can shift what every earlier run measured, not only through the revised domain's
    weight (in a law such as ``b (x + eps) ** -a`` the revised domain's term at ``x = 0`` moves; in a
    real pipeline a new tokenizer, eval set version or training code does the same), and one law fitted
    through both blocks then bends to absorb the shift (on the power-law reuse benchmark this is what
    put the pooled fit's regret far above a full recomputation's after a revision). A block offset is
    the classical fix for a batch effect in a design (blocking): one number per metric per revision,
    estimated from the overlap of the blocks' mixtures. ``offsets=False`` fits one law through all runs.

    ``offsets="auto"`` (the default) keeps the offsets only when they lower the Bayesian information
    criterion, ``sum_j n log(RSS_j)`` over the metrics plus ``log n`` per offset (the law's own
    parameters are the same in both fits and cancel). Why: where a revision shifts nothing, an offset
    is nearly collinear with the retired column of the revised domain (both sit on the earlier
    block's runs) and costs more in variance than it removes in bias: always on, the exp-law reuse
    benchmark's pooled regret rose from 0.006 to 0.081 (16 seeds).

    Why secant steps: plain backfitting (iterate the map) converges slowly when the law can partly
    absorb an offset (the revised domain's retired column is on exactly the earlier block's runs):
    on a linear law with a 0.3 shift it was at 0.10 after 8 refits and 0.28 after 50. The map is
    affine in the offsets for a regressor linear in its targets, so a secant step per offset (each
    offset's own slope, from its last two iterates) lands on the fixed point in two or three refits;
    for the nonlinear laws it is Steffensen's iteration."""
    fitted, first = _fit_offsets(P, regressor, metrics, seed, sample_weight, offsets is not False, options)
    if offsets != "auto" or not fitted.offsets:
        return fitted
    plain = PooledFit(first, {}, fitted.reference, 1)  # the iteration's first fit: every offset at 0
    gain = _bic(P, plain, sample_weight) - _bic(P, fitted, sample_weight)
    return replace(fitted if gain > 0 else plain, bic_gain=float(gain))


def _fit_offsets(P: Pooled, regressor: str, metrics: Sequence[str], seed: int, sample_weight: np.ndarray | None,
                 offsets: bool, options: Mapping[str, Any] | None = None) -> tuple[PooledFit, MixtureModel]:
    """:func:`fit_pooled` with offsets on or off, and the law fitted with every offset at 0 (its first
    step, the plain fit ``offsets="auto"`` compares with)."""
    blocks = P.block_ids
    with_runs = np.unique(blocks)
    ref = int(with_runs.max()) if len(with_runs) else 0
    others = [int(b) for b in with_runs if b != ref] if offsets else []
    Y = np.asarray(P.metrics, dtype=np.float64)
    sd = np.maximum(Y.std(axis=0), 1e-12)
    sw = _weights(sample_weight, Y.shape)

    def step(o: np.ndarray) -> tuple[MixtureModel, np.ndarray]:
        """The law fitted with offsets ``o`` (blocks x metrics) and each block's mean residual under it."""
        model = MixtureModel.fit(regressor, P.columns, list(metrics), P.weights,
                                 Y - block_shift(blocks, dict(zip(others, o)), Y.shape), seed=seed,
                                 options=dict(options or {}), sample_weight=sample_weight)
        resid = Y - model.predict(P.weights)
        return model, np.array([(sw[blocks == b] * resid[blocks == b]).sum(axis=0) / sw[blocks == b].sum(axis=0)
                                for b in others]).reshape(len(others), Y.shape[1])

    o1 = np.zeros((len(others), Y.shape[1]))
    model, u1 = step(o1)
    first = model
    passes = 1
    o0 = g0 = None
    while others and passes < OFFSET_PASSES:
        g1 = u1 - o1
        if np.max(np.abs(g1) / sd) < OFFSET_TOL:
            break
        o2 = u1.copy()                                    # a plain backfitting step where no slope is known
        if g0 is not None:
            dg, do = g1 - g0, o1 - o0
            ok = np.abs(dg) > 1e-12 * sd
            o2[ok] = o1[ok] - g1[ok] * do[ok] / dg[ok]
        o0, g0, o1 = o1, g1, o2
        model, u1 = step(o1)
        passes += 1
    return PooledFit(model, {b: o1[i] for i, b in enumerate(others)}, ref, passes), first


def block_shift(blocks: np.ndarray, offsets: Mapping[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Each run's offset (its block's; 0 for the reference block), as an array of ``shape``."""
    shift = np.zeros(shape)
    for b, o in offsets.items():
        shift[blocks == b] = o
    return shift


def _weights(sample_weight: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Per-run (or per run and metric) weights broadcast to ``shape``; ones without weights."""
    if sample_weight is None:
        return np.ones(shape)
    return np.broadcast_to(np.asarray(sample_weight, dtype=np.float64).reshape(shape[0], -1), shape)


def _bic(P: Pooled, f: PooledFit, sample_weight: np.ndarray | None) -> float:
    """``sum_j n log(RSS_j / n) + (offsets) log n`` of a pooled fit (the law's parameters omitted)."""
    Y = np.asarray(P.metrics, dtype=np.float64)
    resid = Y - block_shift(P.block_ids, f.offsets, Y.shape) - f.model.predict(P.weights)
    rss = (_weights(sample_weight, Y.shape) * resid ** 2).sum(axis=0)
    n = len(Y)
    q = sum(len(o) for o in f.offsets.values())
    return float(np.sum(n * np.log(np.maximum(rss, 1e-300) / n)) + q * math.log(n))
