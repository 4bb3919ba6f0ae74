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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    weights and are held at zero by the proposal (``max_weight``); ``current`` are the new domains."""

    columns: list[str]
    current: list[str]
    weights: np.ndarray   # (n_old + n_new, len(columns))
    metrics: np.ndarray   # (n_old + n_new, m)
    n_old: int

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
              W_new: np.ndarray, Y_new: np.ndarray, changed: Sequence[str] = ()) -> Pooled:
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
    return Pooled(columns, domains, W, np.vstack([np.atleast_2d(Y_old), np.atleast_2d(Y_new)]), len(W_old))
