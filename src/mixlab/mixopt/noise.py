"""Run-to-run noise that depends on the mixture, measured on repeated anchor mixtures.

Repeat-seed variance differs across mixtures by orders of magnitude (public replications of
olmix-style swarms, e.g. Marin #2345), so one noise level for the whole swarm both over-trusts the
noisy runs and under-uses the precise ones. A swarm can train a few far-apart *anchor* mixtures
``k`` times with different seeds (``repeats:`` in the swarm config, :func:`farthest_point`); any
table in which several runs share a mixture works the same way (:func:`repeat_groups`).

:class:`NoiseModel` keeps each anchor's sample variance per metric and predicts the variance at
any mixture by inverse-distance weighting of the log variances (total-variation distance, power 2):
exact at an anchor, a smooth blend between anchors, and never outside the anchors' range, which is
all a handful of anchors can support. ``fit`` weights every run by ``1 / variance`` (weighted least
squares in the regressors), reports the noise floor beside the out-of-fold error, and ``propose``
says whether the predicted improvement over the best observed run exceeds the noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Rows whose mixtures differ by less than this (total variation) are repeats of one mixture: the
# realized mixture of a seed repeat can move by a sequence or two when its held-out split differs.
REPEAT_TV = 1e-3
# Predicted variances are kept within this factor of the pooled variance: an anchor's variance from
# k = 3 runs has 2 degrees of freedom, so a single estimate can be 20x too small by chance (5% of
# the time), and an unbounded weight would let that one mixture dominate the fit.
MAX_RATIO = 100.0
IDW_POWER = 2.0


def _tv(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(np.atleast_2d(A) - x).sum(axis=1)


def repeat_groups(X: np.ndarray, tolerance: float = REPEAT_TV) -> np.ndarray:
    """Group id of each row: rows within ``tolerance`` (total variation) of a group's first row share it."""
    X = np.asarray(X, dtype=np.float64)
    ids = np.full(len(X), -1, dtype=int)
    heads: list[int] = []
    for i in range(len(X)):
        if heads:
            d = _tv(X[heads], X[i])
            j = int(np.argmin(d))
            if d[j] <= tolerance:
                ids[i] = ids[heads[j]]
                continue
        ids[i] = len(heads)
        heads.append(i)
    return ids


def farthest_point(X: np.ndarray, k: int, first: int = 0) -> list[int]:
    """``k`` row indices spread over the swarm: start at ``first`` (the natural mixture), then add the
    row farthest (total variation) from those chosen so far."""
    X = np.asarray(X, dtype=np.float64)
    k = min(k, len(X))
    chosen = [first] if k else []
    dist = _tv(X, X[first])
    while len(chosen) < k:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, _tv(X, X[i]))
    return chosen


@dataclass(frozen=True)
class NoiseModel:
    """Per-metric noise variance as a function of the mixture, from repeated anchors."""

    metrics: list[str]
    anchors: np.ndarray   # (a, d) the repeated mixtures (mean of each group)
    var: np.ndarray       # (a, m) sample variance (ddof 1) of each anchor's runs
    counts: np.ndarray    # (a,) runs per anchor

    @classmethod
    def estimate(cls, X: np.ndarray, Y: np.ndarray, metrics: Sequence[str],
                 groups: np.ndarray | None = None) -> NoiseModel | None:
        """The model from every group of >= 2 runs; None when no mixture was repeated."""
        groups = repeat_groups(X) if groups is None else np.asarray(groups)
        anchors, var, counts = [], [], []
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            if len(rows) < 2:
                continue
            anchors.append(X[rows].mean(axis=0))
            var.append(Y[rows].var(axis=0, ddof=1))
            counts.append(len(rows))
        if not anchors:
            return None
        return cls(list(metrics), np.array(anchors), np.array(var), np.array(counts))

    @property
    def pooled_var(self) -> np.ndarray:
        """Per-metric variance pooled over anchors (weighted by degrees of freedom)."""
        dof = (self.counts - 1)[:, None]
        return (dof * self.var).sum(axis=0) / dof.sum()

    def predict_var(self, X: np.ndarray) -> np.ndarray:
        """(n, m) predicted noise variance at each row of ``X``: inverse-distance-weighted log variance."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        pooled = np.maximum(self.pooled_var, 1e-300)
        logv = np.log(np.clip(self.var, pooled / MAX_RATIO, pooled * MAX_RATIO))
        D = np.stack([_tv(self.anchors, x) for x in X])          # (n, a)
        exact = D <= REPEAT_TV
        W = np.where(exact.any(axis=1, keepdims=True), exact.astype(float), 1.0 / np.maximum(D, 1e-12) ** IDW_POWER)
        W /= W.sum(axis=1, keepdims=True)
        return np.exp(W @ logv)

    def weights(self, X: np.ndarray) -> np.ndarray:
        """(n, m) inverse-variance weights for the runs at ``X``."""
        return 1.0 / self.predict_var(X)

    def floor(self) -> dict[str, dict[str, Any]]:
        """Per metric: the pooled noise sd and the smallest and largest anchor sd (the noise floor)."""
        sd, pooled = np.sqrt(self.var), np.sqrt(self.pooled_var)
        return {m: {"noise_sd": float(pooled[j]), "noise_sd_min": float(sd[:, j].min()),
                    "noise_sd_max": float(sd[:, j].max())} for j, m in enumerate(self.metrics)}

    def state(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "anchors": self.anchors.tolist(), "var": self.var.tolist(),
                "counts": self.counts.tolist(), "model": "idw", "power": IDW_POWER, "max_ratio": MAX_RATIO}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NoiseModel:
        return cls(list(state["metrics"]), np.asarray(state["anchors"], dtype=np.float64),
                   np.asarray(state["var"], dtype=np.float64), np.asarray(state["counts"], dtype=int))


def improvement_check(best_observed: float, expected: float, sd_best: float, sd_proposal: float,
                      z: float = 1.96) -> dict[str, Any]:
    """Does the proposal's expected objective beat the best observed run by more than the noise?

    The objective is lower-is-better; the difference of two independent noisy runs has sd
    ``sqrt(sd_best**2 + sd_proposal**2)``, and the improvement counts when it exceeds ``z`` of those."""
    improvement = best_observed - expected
    sd = math.sqrt(sd_best**2 + sd_proposal**2)
    return {"improvement": float(improvement), "noise_sd_best": float(sd_best),
            "noise_sd_proposal": float(sd_proposal), "noise_sd_difference": float(sd), "z": z,
            "exceeds_noise": bool(improvement > z * sd),
            "note": "improvement = best observed objective - expected realized objective of the proposal "
                    "(prediction + expected optimism); it exceeds the noise when > z x the sd of a difference "
                    "of two runs, each with the repeat-seed noise predicted at its mixture"}
