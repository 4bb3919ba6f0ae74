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
the weights.

How much to shrink is chosen by the evidence for heteroscedasticity, not fixed: the slope has a
Gaussian prior ``N(0, tau^2 I)``, so the anchors' corrected log variances are jointly Gaussian with
covariance ``tau^2 (x_i - x0) . (x_j - x0) + trigamma(nu_i/2) delta_ij`` (the sampling variance of a
log sample variance is known from ``nu`` alone), and ``tau^2`` maximizes their restricted (REML)
likelihood, summed over metrics (one ``tau^2`` shared by the metrics, a slope of their own each).
When the anchors' log variances spread no more than k-run sampling noise explains, ``tau^2`` -> 0
and the weights are uniform (weighting cannot hurt by much); when they spread far more, the slope
is barely shrunk. The earlier fixed penalty (0.3, read from old fits) shrank 4-anchor slopes so hard
that the predicted variances spanned 1.2-4x over the runs where the true noise variance spanned 36-300x
(``benchmarks/mixopt_synthetic.py --hetero`` surfaces, 64 runs, seeds 16-31; REML: 1-100x, capped by
``RIDGE_MAX_RATIO``). ``fit`` weights every
run by ``1 / variance`` (weighted least squares in the regressors), reports the noise floor beside
the out-of-fold error, and ``propose`` says whether the predicted improvement over the best observed
run exceeds the noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.special import digamma, polygamma

# Rows whose mixtures differ by less than this (total variation) are repeats of one mixture: the
# realized mixture of a seed repeat can move by a sequence or two when its held-out split differs.
REPEAT_TV = 1e-3
# Predicted variances are kept within this factor of the pooled variance: an anchor's variance from
# k = 3 runs has 2 degrees of freedom, so a single estimate can be 20x too small by chance (5% of
# the time), and an unbounded weight would let that one mixture dominate the fit.
MAX_RATIO = 100.0
IDW_POWER = 2.0
# The ridge model: the largest factor between a predicted variance and the pooled one (weights then
# span <= 100x), and the grid of prior slope variances tau^2 searched by REML (0 = no slope: uniform
# weights). A slope of 1/tau per unit of mixture weight moves the variance e-fold; the grid spans
# slopes from ~0.03 to ~300 per unit.
RIDGE_MAX_RATIO = 10.0
TAU2_GRID = np.concatenate([[0.0], np.logspace(-3, 5, 25)])


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
    ridge: float | None = None   # a fixed slope penalty (fits written before the REML choice); None: REML
    tau2: tuple[float, float] | None = None  # (shared, per-metric) prior slope variances; None: chosen by REML
    corr: np.ndarray | None = None  # (m, m) within-mixture correlation of the metrics' noise; None: identity

    @classmethod
    def estimate(cls, X: np.ndarray, Y: np.ndarray, metrics: Sequence[str],
                 groups: np.ndarray | None = None, model: str = "ridge") -> NoiseModel | None:
        """The model from every group of >= 2 runs; None when no mixture was repeated."""
        groups = repeat_groups(X) if groups is None else np.asarray(groups)
        Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
        anchors, var, counts, resid = [], [], [], []
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            if len(rows) < 2:
                continue
            anchors.append(X[rows].mean(axis=0))
            var.append(Y[rows].var(axis=0, ddof=1))
            counts.append(len(rows))
            resid.append(Y[rows] - Y[rows].mean(axis=0))
        if not anchors:
            return None
        nm = cls(list(metrics), np.array(anchors), np.array(var), np.array(counts), model,
                 corr=_noise_corr(np.vstack(resid)))
        if model != "ridge":
            return nm
        return replace(nm, tau2=reml_tau2(*nm._log_var_data(), nm._corr2()))

    @property
    def pooled_var(self) -> np.ndarray:
        """Per-metric variance pooled over anchors (weighted by degrees of freedom)."""
        dof = (self.counts - 1)[:, None]
        return (dof * self.var).sum(axis=0) / dof.sum()

    def predict_var(self, X: np.ndarray) -> np.ndarray:
        """(n, m) predicted noise variance at each row of ``X``."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if self.model != "ridge":
            return self._idw(X)
        return self._fixed_ridge(X) if self.ridge is not None else self._reml_ridge(X)

    def _log_var_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a, m) bias-corrected log sample variances, (a,) their sampling variances trigamma(nu/2),
        (a, d) anchors."""
        nu = (self.counts - 1).astype(np.float64)
        floor = np.maximum(self.pooled_var * 1e-6, 1e-300)
        z = np.log(np.maximum(self.var, floor)) - (digamma(nu / 2) - np.log(nu / 2))[:, None]
        return z, polygamma(1, nu / 2), self.anchors

    def _corr2(self) -> np.ndarray:
        """Sampling correlation of two metrics' log sample variances at one anchor: ~ rho^2 for noise
        correlated rho (``Cov(s1^2, s2^2) = 2 rho^2 s1^2 s2^2 / nu``), so two near-copies of one metric
        count as one piece of evidence, not two."""
        m = self.var.shape[1]
        return np.eye(m) if self.corr is None else np.asarray(self.corr) ** 2

    def _tau2(self) -> tuple[float, float]:
        """The prior slope variances: the estimated ones, or chosen by REML for a model built by hand."""
        return self.tau2 if self.tau2 is not None else reml_tau2(*self._log_var_data(), self._corr2())

    def _reml_ridge(self, X: np.ndarray) -> np.ndarray:
        """``exp(c_j + (x - x0) . B_j)``: the posterior mean of the hierarchical log-variance model with
        the REML ``tau2`` (module docstring), clipped to ``RIDGE_MAX_RATIO`` of ``exp(c_j)``."""
        z, v, anchors = self._log_var_data()
        _, c, B = _hier_gls(z, v, anchors - anchors.mean(axis=0), self._corr2(), *self._tau2())
        lim = math.log(RIDGE_MAX_RATIO)
        return np.exp(c + np.clip((X - anchors.mean(axis=0)) @ B, -lim, lim))

    def _fixed_ridge(self, X: np.ndarray) -> np.ndarray:
        """Fits written before the REML choice: each metric's precision-weighted ridge fit of the
        anchors' bias-corrected log variances with the saved penalty, clipped to ``RIDGE_MAX_RATIO``."""
        z, v, anchors = self._log_var_data()
        p = 1.0 / v
        x0 = p @ anchors / p.sum()
        A = anchors - x0
        c = p @ z / p.sum()
        beta = np.linalg.solve(A.T @ (p[:, None] * A) + float(self.ridge) * np.eye(A.shape[1]),
                               A.T @ (p[:, None] * (z - c)))
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
        extra: dict[str, Any]
        if self.model != "ridge":
            extra = {"power": IDW_POWER, "max_ratio": MAX_RATIO}
        elif self.ridge is not None:
            extra = {"ridge": self.ridge, "max_ratio": RIDGE_MAX_RATIO}
        else:
            tau2 = self._tau2()
            extra = {"tau2_shared": tau2[0], "tau2_metric": tau2[1], "max_ratio": RIDGE_MAX_RATIO,
                     "corr": None if self.corr is None else np.asarray(self.corr).tolist()}
        return {"metrics": self.metrics, "anchors": self.anchors.tolist(), "var": self.var.tolist(),
                "counts": self.counts.tolist(), "model": self.model, **extra}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NoiseModel:
        tau2 = (float(state["tau2_shared"]), float(state["tau2_metric"])) if "tau2_shared" in state else None
        corr = np.asarray(state["corr"], dtype=np.float64) if state.get("corr") is not None else None
        return cls(list(state["metrics"]), np.asarray(state["anchors"], dtype=np.float64),
                   np.asarray(state["var"], dtype=np.float64), np.asarray(state["counts"], dtype=int),
                   state.get("model", "idw"), None if tau2 is not None else state.get("ridge"), tau2, corr)


def _noise_corr(R: np.ndarray) -> np.ndarray:
    """Correlation of the metrics' within-mixture deviations (pooled over anchors); 0 off the diagonal
    for a metric without spread."""
    cov = R.T @ R
    sd = np.sqrt(np.diag(cov))
    ok = sd > 0
    C = np.eye(len(sd))
    C[np.ix_(ok, ok)] = cov[np.ix_(ok, ok)] / np.outer(sd[ok], sd[ok])
    return np.clip(C, -1.0, 1.0)


def _hier_gls(z: np.ndarray, v: np.ndarray, A: np.ndarray, R2: np.ndarray, t_shared: float, t_metric: float):
    """REML log likelihood, GLS intercepts (m,) and posterior-mean slopes (d, m) of the model
    ``z_ij = c_j + A_i . B_j + e_ij``, ``B_j = b + b_j`` with ``b ~ N(0, t_shared I)`` shared by the
    metrics and ``b_j ~ N(0, t_metric I)`` of their own, ``Cov(e_i.) = v_i R2``."""
    a, m = z.shape
    G = t_shared * np.ones((m, m)) + t_metric * np.eye(m)
    S = np.kron(A @ A.T, G) + np.kron(np.diag(v), R2)
    S[np.diag_indices_from(S)] += 1e-9 * float(v.max())    # two identical metrics make R2 singular
    cf = cho_factor(S, lower=True)
    F = np.kron(np.ones((a, 1)), np.eye(m))
    SiF = cho_solve(cf, F)
    FSF = F.T @ SiF
    zv = z.reshape(-1)
    c = np.linalg.solve(FSF, SiF.T @ zv)
    r = zv - F @ c
    Sir = cho_solve(cf, r)
    ll = -0.5 * (2 * np.log(np.diag(cf[0])).sum() + np.linalg.slogdet(FSF)[1] + float(r @ Sir))
    return ll, c, A.T @ Sir.reshape(a, m) @ G


def reml_tau2(z: np.ndarray, v: np.ndarray, anchors: np.ndarray, R2: np.ndarray | None = None,
              grid: np.ndarray = TAU2_GRID) -> tuple[float, float]:
    """The prior slope variances (shared by the metrics, each metric's own) on ``grid`` x ``grid`` that
    maximize the restricted likelihood of the anchors' log variances ``z`` (a, m) (see ``_hier_gls``).

    Why REML: each metric's intercept is estimated from the same few anchors, and plain maximum
    likelihood then under-estimates the spread (with 4 anchors, by a third of the residual degrees
    of freedom), i.e. shrinks too hard. Why a shared part: run-to-run noise comes from the run (its
    seed, data order), so metrics of one run tend to be noisy at the same mixtures; the evidence
    decides how much they share (``t_metric`` >> ``t_shared`` when they do not)."""
    a, m = z.shape
    if a < 2:
        return 0.0, 0.0
    A = anchors - anchors.mean(axis=0)             # the free intercepts make the centre immaterial
    R2 = np.eye(m) if R2 is None else R2
    best, best_ll = (0.0, 0.0), -math.inf
    for ts in grid:
        for tm in grid:
            ll = _hier_gls(z, v, A, R2, float(ts), float(tm))[0]
            if ll > best_ll + 1e-9:
                best, best_ll = (float(ts), float(tm)), ll
    return best


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
