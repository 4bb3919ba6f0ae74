"""Run-to-run noise that depends on the mixture, measured on repeated anchor mixtures.

Repeat-seed variance differs across mixtures by orders of magnitude (public replications of
olmix-style swarms, e.g. Marin #2345), so one noise level for the whole swarm both over-trusts the
noisy runs and under-uses the precise ones. A swarm can train a few far-apart *anchor* mixtures
``k`` times with different seeds (``repeats:`` in the swarm config, :func:`farthest_point`); any
table in which several runs share a mixture works the same way (:func:`repeat_groups`).

:class:`NoiseModel` keeps each anchor's sample variance per metric and predicts the variance at
any mixture from a ridge regression of the log variance on the mixture (``model: ridge``, the
default): each anchor's log sample variance is bias-corrected (``E log s^2 = log sigma^2 +
digamma(nu/2) - log(nu/2)`` for ``nu`` degrees of freedom) and weighted by its precision
(``1 / trigamma(nu/2)``), the slope is shrunk toward zero, i.e. the prediction toward the pooled
log variance, and predictions stay within ``RIDGE_MAX_RATIO`` of it. Why: a variance from k = 3
runs is off by a factor of 3 or more a third of the time, so a model exact at each anchor (the
earlier inverse-distance blend, ``model: idw``, still read from old fits) passes that error on to
the weights; on the heteroscedastic benchmark the smoothed model's weighted fits have a lower loss
error than unweighted ones more often than the exact blend's (75% vs 38% of 16 seeds at 64 runs). ``fit`` weights every
run by ``1 / variance`` (weighted least squares in the regressors), reports the noise floor beside
the out-of-fold error, and ``propose`` says whether the predicted improvement over the best observed
run exceeds the noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import digamma, polygamma

# Rows whose mixtures differ by less than this (total variation) are repeats of one mixture: the
# realized mixture of a seed repeat can move by a sequence or two when its held-out split differs.
REPEAT_TV = 1e-3
# Predicted variances are kept within this factor of the pooled variance: an anchor's variance from
# k = 3 runs has 2 degrees of freedom, so a single estimate can be 20x too small by chance (5% of
# the time), and an unbounded weight would let that one mixture dominate the fit.
MAX_RATIO = 100.0
IDW_POWER = 2.0
# The ridge model: slope penalty (in units of summed anchor precision x squared mixture distance) and
# the largest factor between a predicted variance and the pooled one (weights then span <= 100x).
RIDGE = 0.3
RIDGE_MAX_RATIO = 10.0


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
    model: str = "ridge"  # "ridge" (log variance regressed on the mixture) or "idw" (exact at anchors)

    @classmethod
    def estimate(cls, X: np.ndarray, Y: np.ndarray, metrics: Sequence[str],
                 groups: np.ndarray | None = None, model: str = "ridge") -> NoiseModel | None:
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
        return cls(list(metrics), np.array(anchors), np.array(var), np.array(counts), model)

    @property
    def pooled_var(self) -> np.ndarray:
        """Per-metric variance pooled over anchors (weighted by degrees of freedom)."""
        dof = (self.counts - 1)[:, None]
        return (dof * self.var).sum(axis=0) / dof.sum()

    def predict_var(self, X: np.ndarray) -> np.ndarray:
        """(n, m) predicted noise variance at each row of ``X``."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return self._ridge(X) if self.model == "ridge" else self._idw(X)

    def _ridge(self, X: np.ndarray) -> np.ndarray:
        """``exp(c + (x - x0) . beta)`` per metric: the precision-weighted ridge fit of the anchors'
        bias-corrected log variances, clipped to ``RIDGE_MAX_RATIO`` of ``exp(c)``."""
        nu = (self.counts - 1).astype(np.float64)
        floor = np.maximum(self.pooled_var * 1e-6, 1e-300)
        z = np.log(np.maximum(self.var, floor)) - (digamma(nu / 2) - np.log(nu / 2))[:, None]
        p = 1.0 / polygamma(1, nu / 2)
        x0 = p @ self.anchors / p.sum()
        A = self.anchors - x0
        c = p @ z / p.sum()
        beta = np.linalg.solve(A.T @ (p[:, None] * A) + RIDGE * np.eye(A.shape[1]), A.T @ (p[:, None] * (z - c)))
        lim = math.log(RIDGE_MAX_RATIO)
        return np.exp(c + np.clip((X - x0) @ beta, -lim, lim))

    def _idw(self, X: np.ndarray) -> np.ndarray:
        """Inverse-distance-weighted log variance: exact at each anchor."""
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
                "counts": self.counts.tolist(), "model": self.model,
                **({"ridge": RIDGE, "max_ratio": RIDGE_MAX_RATIO} if self.model == "ridge"
                   else {"power": IDW_POWER, "max_ratio": MAX_RATIO})}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NoiseModel:
        return cls(list(state["metrics"]), np.asarray(state["anchors"], dtype=np.float64),
                   np.asarray(state["var"], dtype=np.float64), np.asarray(state["counts"], dtype=int),
                   state.get("model", "idw"))


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
