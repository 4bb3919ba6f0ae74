"""Paired statistics for a change between two evaluations of the same items.

Inputs are per-item *directional* differences ``d_i = sign * (new_i - base_i)`` (sign = -1 for
lower-is-better metrics), so positive is always an improvement. Functions take a matrix ``D`` of shape
``(n_items, k)``: column j is one comparison (e.g. one run against the base on the same task), which
lets one task's comparisons across all runs share a single batch of resamples.

- Bootstrap CI: paired resampling of items (the whole pair is drawn, so the base/new correlation is
  kept), percentile interval of the mean difference (``scipy.stats.bootstrap(..., paired=True,
  method="percentile")`` computes the same quantity). The resample counts depend only on
  ``(seed, key, n)``: comparisons on the same task share them (so averaging replicates over runs is a
  joint bootstrap over the task's items) and different tasks get independent resamples (so averaging
  over tasks is a bootstrap stratified by task).
- McNemar's test for 0/1 scores, as statsmodels' ``mcnemar``: exact two-sided binomial test on the
  discordant pairs when ``b + c < exact_below`` (default 25), otherwise the chi-square statistic with
  continuity correction ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom.
- Paired permutation (sign-flip) test for continuous scores, as ``scipy.stats.permutation_test`` with
  one sample and ``permutation_type="samples"``: the null flips the sign of each difference; exact
  enumeration when at most ``exact_max`` differences are non-zero, otherwise ``n_perm`` random flips
  with scipy's +1 adjustment; two-sided p = min(1, 2 * min(p_less, p_greater)).

Why not call scipy per comparison: a report compares thousands of (run, task) pairs and scipy's
``bootstrap``/``permutation_test`` redraw resamples for every call. Measured here on 1000 binary items
(``benchmarks/report_scale.py`` prints it): scipy ~85 ms per bootstrap (1000 resamples) and ~575 ms per
permutation test (2000 flips), against ~0.5 ms and ~0.8 ms per comparison when one matrix product
per task serves all runs. The tests check these functions against scipy.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

_CHUNK_ELEMS = 4_000_000  # resample-matrix elements per chunk (~32 MB of float64)


def _rng(seed: int, key: str, n: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8")), int(n), purpose])


def _as_matrix(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    return d[:, None] if d.ndim == 1 else d


def bootstrap_replicates(D: np.ndarray, n_boot: int = 1000, seed: int = 0, key: str = "") -> np.ndarray:
    """Mean difference of each column under ``n_boot`` paired resamples of the rows: ``(n_boot, k)``.

    A resample is a vector of counts (how often each item was drawn); the replicate means of all
    columns are then one matrix product.
    """
    D = _as_matrix(D)
    n, k = D.shape
    if n == 0:
        return np.full((n_boot, k), np.nan)
    rng = _rng(seed, key, n, 1)
    D32 = D.astype(np.float32)
    out = np.empty((n_boot, k))
    rows = max(1, _CHUNK_ELEMS // n)
    for start in range(0, n_boot, rows):
        m = min(rows, n_boot - start)
        draws = rng.integers(0, n, size=(m, n))
        draws += (np.arange(m) * n)[:, None]
        counts = np.bincount(draws.ravel(), minlength=m * n).reshape(m, n).astype(np.float32)
        # float32 BLAS: counts are exact and the mean of <= 1e5 scores loses < 1e-6 relative; twice as
        # fast as float64 (an int64 matrix would not use BLAS at all)
        out[start:start + m] = counts @ D32
    return out / n


def percentile_ci(replicates: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (linear interpolation, as numpy/scipy) per column of ``replicates``."""
    lo, hi = np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return lo, hi


def paired_bootstrap_ci(base: np.ndarray, new: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                        seed: int = 0, higher_is_better: bool = True, key: str = "") -> tuple[float, float]:
    """CI of the directional mean change ``new - base`` (``base - new`` when lower is better)."""
    sign = 1.0 if higher_is_better else -1.0
    d = sign * (np.asarray(new, dtype=np.float64) - np.asarray(base, dtype=np.float64))
    lo, hi = percentile_ci(bootstrap_replicates(d, n_boot, seed, key), alpha)
    return float(lo[0]), float(hi[0])


@dataclass(frozen=True, slots=True)
class TestResult:
    statistic: float
    pvalue: float
    method: str  # "mcnemar-exact" | "mcnemar-chi2-cc" | "sign-flip-exact" | "sign-flip-mc"


def mcnemar_many(b: np.ndarray, c: np.ndarray, exact_below: int = 25) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Vectorized :func:`mcnemar`: (statistics, p-values, methods) for arrays of discordant counts."""
    b, c = np.asarray(b, dtype=np.int64), np.asarray(c, dtype=np.int64)
    n = b + c
    exact = n < exact_below
    k = np.minimum(b, c)
    p_exact = np.minimum(1.0, 2.0 * _st.binom.cdf(k, np.maximum(n, 1), 0.5))
    chi = (np.abs(b - c) - 1.0) ** 2 / np.maximum(n, 1)
    p = np.where(n == 0, 1.0, np.where(exact, p_exact, _st.chi2.sf(chi, 1)))
    stat = np.where(exact, k, chi).astype(np.float64)
    return stat, p, ["mcnemar-exact" if e else "mcnemar-chi2-cc" for e in exact]


def mcnemar(b: int, c: int, exact_below: int = 25) -> TestResult:
    """McNemar's test on the discordant counts ``b`` (correct -> wrong) and ``c`` (wrong -> correct).

    Exact: ``min(1, 2 * Binom(b + c, 1/2).cdf(min(b, c)))`` (equal to ``scipy.stats.binomtest``'s
    two-sided p for p = 1/2). Otherwise chi-square with Edwards' continuity correction, as
    statsmodels (the correction is not clipped at |b - c| = 0, matching statsmodels).
    """
    stat, p, method = mcnemar_many(np.array([b]), np.array([c]), exact_below)
    return TestResult(float(stat[0]), float(p[0]), method[0])


def _two_sided(null: np.ndarray, observed: np.ndarray, tol: np.ndarray, adjust: int) -> np.ndarray:
    n_null = null.shape[0]
    less = ((null <= observed + tol).sum(axis=0) + adjust) / (n_null + adjust)
    greater = ((null >= observed - tol).sum(axis=0) + adjust) / (n_null + adjust)
    return np.minimum(1.0, 2.0 * np.minimum(less, greater))


def _tolerance(D: np.ndarray) -> np.ndarray:
    # Sums of the same numbers in a different order differ by rounding; treat those as ties
    # (scipy uses 100 eps relative to the observed value, which is 0 when the observed mean is 0).
    return 1e-9 * np.maximum(np.abs(D).max(axis=0, initial=0.0), 1e-300)


def sign_flip_exact(d: np.ndarray) -> TestResult:
    """Exact two-sided sign-flip test of mean(d) = 0 by enumerating every sign pattern.

    Zero differences do not change under a flip, so only the non-zero ones are enumerated
    (each zero doubles every count, which leaves the p-value unchanged).
    """
    d = np.asarray(d, dtype=np.float64)
    nz = d[d != 0]
    m = len(nz)
    if m == 0:
        return TestResult(0.0, 1.0, "sign-flip-exact")
    patterns = ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1) * 2.0 - 1.0
    null = (patterns @ nz) / len(d)
    obs = np.array([d.mean()])
    p = _two_sided(null[:, None], obs, _tolerance(d[:, None]), adjust=0)
    return TestResult(float(obs[0]), float(p[0]), "sign-flip-exact")


def sign_flip_pvalues(D: np.ndarray, n_perm: int = 2000, seed: int = 0, key: str = "",
                      exact_max: int = 14) -> tuple[np.ndarray, list[str]]:
    """Two-sided sign-flip p-value per column of ``D``; exact where a column has <= ``exact_max`` non-zeros."""
    D = _as_matrix(D)
    n, k = D.shape
    p = np.ones(k)
    methods = ["sign-flip-exact"] * k
    nonzero = (D != 0).sum(axis=0)
    mc = np.flatnonzero(nonzero > exact_max)
    for j in np.flatnonzero(nonzero <= exact_max):
        p[j] = sign_flip_exact(D[:, j]).pvalue
    if len(mc):
        Dm = D[:, mc]
        rng = _rng(seed, key, n, 2)
        rows = max(1, _CHUNK_ELEMS // n)
        obs = Dm.mean(axis=0)
        tol = _tolerance(Dm)
        less = np.zeros(len(mc))
        greater = np.zeros(len(mc))
        for start in range(0, n_perm, rows):
            m = min(rows, n_perm - start)
            signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2.0 - 1.0
            null = (signs @ Dm) / n
            less += (null <= obs + tol).sum(axis=0)
            greater += (null >= obs - tol).sum(axis=0)
        p[mc] = np.minimum(1.0, 2.0 * np.minimum((less + 1) / (n_perm + 1), (greater + 1) / (n_perm + 1)))
        for j in mc:
            methods[j] = "sign-flip-mc"
    return p, methods


def is_binary(a: np.ndarray) -> bool:
    """True when every score is 0 or 1 (accuracy-like items: McNemar applies)."""
    return bool(np.all((a == 0) | (a == 1)))


def above_chance_pvalue(accuracy: float, n: int, chance: float) -> float:
    """One-sided exact binomial p-value that ``accuracy`` over ``n`` items is above ``chance``: P(X >= k)
    for X ~ Binomial(n, chance), k = round(accuracy * n) (``scipy.stats.binomtest(k, n, chance,
    alternative="greater")``). With mixed choice counts ``chance`` is the mean of 1 / choices, and the
    binomial is the usual approximation of the Poisson-binomial."""
    k = int(round(accuracy * n))
    return float(_st.binom.sf(k - 1, n, chance))
