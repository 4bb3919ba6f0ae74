"""Which domain helps which metric, and by how much beyond noise: effects and interactions of a swarm.

A fitted law (log-linear, GP, trees) predicts well but does not say, in a sentence, "more code lowers
code bpb and hurts arithmetic accuracy". The classical answer for mixture experiments (Scheffé 1958;
Cox 1971; Cornell, *Experiments with Mixtures*) is a linear mixture model read along Cox directions:

* effect of domain ``j`` on metric ``m``: the change of ``m`` when ``x_j`` rises by ``step`` (0.1) from
  the natural mixture ``p`` while the other domains shrink in proportion, from the Scheffé model
  ``y = sum_j b_j x_j`` (no intercept on the simplex): ``step * (b_j - b . p) / (1 - p_j)``, with an OLS
  t-test (``n - d`` degrees of freedom). In units of the metric's swarm std, so metrics compare.
* interaction of domains ``i, j`` on the (equal-weight, lower-is-better) objective: ``b_ij`` of the
  quadratic Scheffé model ``y = sum_j b_j x_j + sum_{i<j} b_ij x_i x_j``, fitted only when the swarm has
  at least 3 runs more than the model's parameters.

These are linear summaries with their own (linear-model) uncertainty, written next to the fitted
regressor's predictions, not a replacement for it; numpy least squares and scipy's t distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

STEP = 0.1


@dataclass(frozen=True)
class OLS:
    coef: np.ndarray
    cov: np.ndarray
    df: int


def ols(A: np.ndarray, y: np.ndarray) -> OLS:
    """Least squares with the classical covariance ``s^2 (A'A)^-1`` (pseudo-inverse when singular)."""
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    df = len(y) - A.shape[1]
    resid = y - A @ coef
    s2 = float(resid @ resid) / df if df > 0 else math.nan
    return OLS(coef, s2 * np.linalg.pinv(A.T @ A), df)


def _test(value: np.ndarray, se: np.ndarray, df: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, value / se, np.nan)
    return np.where(np.isfinite(t), 2 * stats.t.sf(np.abs(t), max(df, 1)), np.nan) if df > 0 else np.full_like(value, np.nan)


def stars(p: float | None) -> str:
    """``***`` p < 0.001, ``**`` < 0.01, ``*`` < 0.05, else nothing (NaN: not testable)."""
    if p is None or not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def domain_effects(X: np.ndarray, Y: np.ndarray, domains: Sequence[str], metrics: Sequence[str],
                   prior: np.ndarray, step: float = STEP) -> dict[str, Any]:
    """Per metric and domain: the Cox-direction effect of ``+step`` weight at ``prior`` (swarm-std units),
    its standard error and two-sided p-value."""
    d = len(domains)
    p = np.asarray(prior, dtype=np.float64) / np.sum(prior)
    # moving along e_j - p by t raises x_j by t (1 - p_j): the effect of +step on x_j is step/(1-p_j) * (e_j - p).b
    L = (np.eye(d) - p[None, :]) * (step / np.maximum(1 - p, 1e-9))[:, None]  # (d, d): row j = contrast of domain j
    sd = np.where(Y.std(axis=0) > 0, Y.std(axis=0), 1.0)
    effect, se = np.empty((len(metrics), d)), np.empty((len(metrics), d))
    df = len(X) - d
    for k in range(len(metrics)):
        fit = ols(X, Y[:, k] / sd[k])
        effect[k] = L @ fit.coef
        se[k] = np.sqrt(np.clip(np.einsum("jd,de,je->j", L, fit.cov, L), 0, None))
        df = fit.df
    pval = np.vstack([_test(effect[k], se[k], df) for k in range(len(metrics))])
    return {"domains": list(domains), "metrics": list(metrics), "step": step, "at": dict(zip(domains, p.tolist())),
            "effect": effect.tolist(), "se": se.tolist(), "p": pval.tolist(), "df": int(df),
            "units": "swarm std of the metric", "model": "Scheffé linear mixture model, OLS t-test"}


def interactions(X: np.ndarray, y: np.ndarray, domains: Sequence[str]) -> dict[str, Any] | None:
    """Pairwise interaction coefficients of the quadratic Scheffé model of ``y`` (standardized), or None
    when the swarm has fewer than (parameters + 3) runs."""
    d = len(domains)
    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
    if len(X) < d + len(pairs) + 3:
        return None
    sd = float(y.std()) or 1.0
    A = np.hstack([X, np.column_stack([X[:, i] * X[:, j] for i, j in pairs])])
    fit = ols(A, (y - y.mean()) / sd)
    coef, se = fit.coef[d:], np.sqrt(np.clip(np.diag(fit.cov)[d:], 0, None))
    pv = _test(coef, se, fit.df)
    M, S, P = (np.full((d, d), np.nan) for _ in range(3))
    for k, (i, j) in enumerate(pairs):
        M[i, j] = M[j, i] = coef[k]
        S[i, j] = S[j, i] = se[k]
        P[i, j] = P[j, i] = pv[k]
    nan = lambda A: [[None if not math.isfinite(v) else float(v) for v in row] for row in A]  # noqa: E731
    return {"domains": list(domains), "coef": nan(M), "se": nan(S), "p": nan(P), "df": int(fit.df),
            "units": "swarm std of the objective per unit of x_i x_j",
            "model": "quadratic Scheffé mixture model, OLS t-test"}

