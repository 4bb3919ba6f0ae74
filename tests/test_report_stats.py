"""Paired statistics against scipy and hand computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sst

from mixlab.report import stats


@pytest.mark.parametrize("b,c", [(0, 1), (3, 9), (7, 7), (12, 0), (2, 20), (11, 13)])
def test_mcnemar_exact_matches_binomtest(b, c):
    res = stats.mcnemar(b, c)
    assert res.method == "mcnemar-exact"
    assert res.pvalue == pytest.approx(sst.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12)


def test_mcnemar_exact_hand_value():
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    assert stats.mcnemar(1, 9).pvalue == pytest.approx(22 / 1024, rel=1e-12)


def test_mcnemar_chi2_continuity_corrected():
    res = stats.mcnemar(30, 15)
    assert res.method == "mcnemar-chi2-cc"
    assert res.statistic == pytest.approx(14 ** 2 / 45)
    assert res.pvalue == pytest.approx(sst.chi2.sf(196 / 45, df=1), rel=1e-12)
    assert 0.03 < res.pvalue < 0.04  # 196/45 = 4.356 lies between the 5% and 2.5% critical values
    # the threshold is configurable: the same counts exactly
    assert stats.mcnemar(30, 15, exact_below=100).pvalue == pytest.approx(sst.binomtest(15, 45, 0.5).pvalue)


def test_mcnemar_no_discordant_pairs():
    assert stats.mcnemar(0, 0).pvalue == 1.0


def _hand_sign_flip(d):
    d = np.asarray(d, float)
    obs = d.mean()
    null = np.array([np.mean(d * np.array(s)) for s in itertools.product([1, -1], repeat=len(d))])
    less = np.mean(null <= obs + 1e-12)
    greater = np.mean(null >= obs - 1e-12)
    return min(1.0, 2 * min(less, greater))


@pytest.mark.parametrize("d", [[1.0, -2.0, 3.0, 0.5, 4.0, -1.0], [0.3, 0.1, 0.25, 0.2, 0.05, 0.4, 0.15],
                               [0.0, 0.0, 1.5, -0.5, 0.0, 2.5]])
def test_sign_flip_exact_matches_hand_enumeration_and_scipy(d):
    ours = stats.sign_flip_exact(d).pvalue
    assert ours == pytest.approx(_hand_sign_flip(d), abs=1e-12)
    ref = sst.permutation_test((np.array(d),), np.mean, permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided")
    assert ours == pytest.approx(ref.pvalue, abs=1e-12)


def test_sign_flip_all_positive_hand_value():
    # 7 positive differences: only the identity (and nothing else) reaches the observed mean, so
    # p = 2 * 1/128
    assert stats.sign_flip_exact(np.arange(1, 8) / 10).pvalue == pytest.approx(2 / 128)


def test_sign_flip_monte_carlo_close_to_exact():
    rng = np.random.default_rng(3)
    d = rng.normal(0.15, 1.0, size=16)
    exact = stats.sign_flip_exact(d).pvalue  # 2^16 patterns
    p, methods = stats.sign_flip_pvalues(d, n_perm=40_000, seed=1, exact_max=14)
    assert methods == ["sign-flip-mc"]
    assert abs(p[0] - exact) < 0.01
    # and scipy's randomized version agrees within Monte Carlo error
    ref = sst.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=40_000,
                               vectorized=False, rng=np.random.default_rng(0)).pvalue
    assert abs(p[0] - ref) < 0.015


def test_sign_flip_batch_uses_exact_where_small():
    D = np.zeros((40, 2))
    D[:5, 0] = [0.5, 0.2, 0.9, 0.1, 0.3]
    D[:, 1] = np.linspace(-1, 2, 40)
    p, methods = stats.sign_flip_pvalues(D, n_perm=500, exact_max=14)
    assert methods == ["sign-flip-exact", "sign-flip-mc"]
    assert p[0] == pytest.approx(_hand_sign_flip(D[:5, 0]))  # zeros do not change the exact p


def test_bootstrap_constant_difference_has_degenerate_ci():
    base = np.array([0.2, 0.4, 0.9, 1.3])
    lo, hi = stats.paired_bootstrap_ci(base, base + 0.25, n_boot=200)
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_bootstrap_direction_lower_is_better():
    base = np.array([1.0, 1.2, 0.8, 1.1, 0.9])
    lo, hi = stats.paired_bootstrap_ci(base, base + 0.1, n_boot=100, higher_is_better=False)
    assert lo == pytest.approx(-0.1) and hi == pytest.approx(-0.1)


def test_bootstrap_matches_scipy_paired_percentile():
    rng = np.random.default_rng(7)
    base = rng.normal(1.0, 0.3, size=300)
    new = base + rng.normal(0.05, 0.2, size=300)  # correlated pairs: pairing matters
    lo, hi = stats.paired_bootstrap_ci(base, new, n_boot=20_000, seed=5)
    ref = sst.bootstrap((base, new), lambda x, y, axis: np.mean(y - x, axis=axis), paired=True,
                        vectorized=True, n_resamples=20_000, method="percentile", rng=np.random.default_rng(1))
    assert lo == pytest.approx(ref.confidence_interval.low, abs=2e-3)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=2e-3)
    # the known large-sample answer: mean +- 1.96 * sd / sqrt(n)
    d = new - base
    half = 1.96 * d.std(ddof=0) / np.sqrt(len(d))
    assert lo == pytest.approx(d.mean() - half, abs=3e-3)
    assert hi == pytest.approx(d.mean() + half, abs=3e-3)
    # an unpaired interval would be far wider: the pairing is really used
    assert (hi - lo) < 0.5 * 2 * 1.96 * np.sqrt(base.var() / 300 + new.var() / 300)


def test_bootstrap_seeded_and_independent_of_batch():
    rng = np.random.default_rng(0)
    D = rng.integers(-1, 2, size=(50, 3)).astype(float)
    a = stats.bootstrap_replicates(D, 300, seed=4, key="arc")
    b = stats.bootstrap_replicates(D[:, 1], 300, seed=4, key="arc")
    np.testing.assert_array_equal(a[:, 1], b[:, 0])
    assert not np.array_equal(a, stats.bootstrap_replicates(D, 300, seed=5, key="arc"))
    assert not np.array_equal(a, stats.bootstrap_replicates(D, 300, seed=4, key="boolq"))


def test_bootstrap_chunks_agree_with_one_block(monkeypatch):
    D = np.random.default_rng(1).normal(size=(30, 2))
    whole = stats.bootstrap_replicates(D, 50, seed=2, key="t")
    monkeypatch.setattr(stats, "_CHUNK_ELEMS", 30 * 7)  # 7 resamples per chunk
    chunked = stats.bootstrap_replicates(D, 50, seed=2, key="t")
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)  # the same stream of draws, in pieces
