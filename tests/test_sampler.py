"""The mixture sampler realizes requested proportions exactly, caps repetition, and is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.data.text import TokenizedSource
from mixlab.errors import ConfigError, DataError
from mixlab.train.sampler import MixtureSampler, allocate, available_sequences, interleave


def _source(name: str, n_tokens: int, base: int) -> TokenizedSource:
    """A source whose tokens are base, base+1, ... so every row can be traced to its source and offset."""
    return TokenizedSource(name, np.arange(base, base + n_tokens, dtype=np.int32), np.zeros(4, np.int32), 1)


def test_allocation_matches_request_without_cap():
    a = allocate({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 10_000, "b": 10_000, "c": 10_000}, 997, 4.0)
    assert sum(a.sequences.values()) == 997
    assert a.capped == []
    for k, want in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        assert abs(a.realized[k] - want) <= 1 / 997  # rounding only: far inside 1%
    assert a.sequences == {"a": 499, "b": 299, "c": 199}


def test_allocation_caps_small_source_and_renormalizes_the_rest():
    # 'small' has 10 sequences and may be seen 4 times: 40 of the 50 it asked for (50% of 100).
    a = allocate({"big": 0.3, "small": 0.5, "mid": 0.2}, {"big": 1000, "small": 10, "mid": 1000}, 100, 4.0)
    assert a.capped == ["small"]
    assert a.sequences["small"] == 40
    assert a.epochs["small"] == pytest.approx(4.0)
    # the remaining 60 sequences are spread 3:2 over big and mid
    assert a.sequences["big"] == 36 and a.sequences["mid"] == 24
    assert a.realized == {"big": 0.36, "small": 0.40, "mid": 0.24}
    assert a.requested == {"big": 0.3, "small": 0.5, "mid": 0.2}


def test_allocation_cascading_caps():
    a = allocate({"a": 1, "b": 1, "c": 1}, {"a": 3, "b": 10, "c": 1000}, 90, 2.0)
    assert a.sequences == {"a": 6, "b": 20, "c": 64}
    assert sorted(a.capped) == ["a", "b"]


def test_allocation_not_enough_text_is_an_error():
    with pytest.raises(ConfigError, match="not enough text"):
        allocate({"a": 1, "b": 1}, {"a": 5, "b": 5}, 100, 4.0)


def test_interleave_every_prefix_is_within_one_sequence_of_the_mixture():
    counts = [500, 300, 150, 50]
    src = interleave(counts)
    total = sum(counts)
    assert len(src) == total
    seen = np.zeros((len(counts),))
    worst = 0.0
    for k, s in enumerate(src, 1):
        seen[s] += 1
        ideal = np.asarray(counts) * k / total
        worst = max(worst, float(np.abs(seen - ideal).max()))
    assert worst <= 1.0
    assert np.bincount(src).tolist() == counts


def _sampler(seed: int = 0, weights=None, max_epochs: float = 4.0, total: int = 200) -> MixtureSampler:
    sources = [_source("a", 10_001, 0), _source("b", 2_001, 100_000), _source("c", 1_001, 200_000)]
    return MixtureSampler(sources, weights or {"a": 0.5, "b": 0.3, "c": 0.2}, 100, total, max_epochs, seed)


def test_sampler_rows_are_contiguous_windows_of_one_source():
    s = _sampler()
    rows = s.sequences(0, len(s)).numpy()
    assert rows.shape == (200, 101)
    assert (np.diff(rows, axis=1) == 1).all()  # consecutive tokens of one source
    assert ((rows[:, 0] % 100) == 0).all()  # windows start on sequence boundaries
    which = rows[:, 0] // 100_000
    counts = np.bincount(which, minlength=3)
    assert counts.tolist() == [100, 60, 40]
    assert s.realized_tokens() == {"a": 10_000, "b": 6_000, "c": 4_000}
    # every batch of 10 rows already holds the mixture to within one row per source
    for i in range(0, 200, 10):
        c = np.bincount(which[i:i + 10], minlength=3)
        assert np.abs(c - np.array([5, 3, 2])).max() <= 1


def test_sampler_repeats_a_source_epoch_by_epoch_and_caps_it():
    s = _sampler(weights={"a": 0.2, "b": 0.2, "c": 0.6}, total=100)
    assert s.allocation.capped == ["c"]
    assert available_sequences(1_001, 100) == 10
    assert s.allocation.sequences == {"a": 30, "b": 30, "c": 40}  # 60 asked, 40 allowed; rest split 1:1
    rows = s.sequences(0, len(s)).numpy()
    c_rows = rows[rows[:, 0] >= 200_000][:, 0]
    assert len(c_rows) == 40  # 10 sequences x 4 epochs
    orders = [c_rows[e * 10:(e + 1) * 10].tolist() for e in range(4)]
    for order in orders:  # each epoch is a permutation of the 10 sequences
        assert sorted(order) == [200_000 + 100 * i for i in range(10)]
    assert len({tuple(o) for o in orders}) > 1  # reshuffled between epochs


def test_sampler_is_deterministic_and_seeded():
    a, b, c = _sampler(0), _sampler(0), _sampler(1)
    assert np.array_equal(a.sequences(0, 200).numpy(), b.sequences(0, 200).numpy())
    assert not np.array_equal(a.sequences(0, 200).numpy(), c.sequences(0, 200).numpy())
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_sampler_state_roundtrip_and_mismatch():
    a = _sampler(0)
    a.sequences(0, 30)
    b = _sampler(0)
    b.load_state_dict(a.state_dict())
    assert b.position == 30
    with pytest.raises(DataError, match="different training data"):
        _sampler(1).load_state_dict(a.state_dict())


def test_sampler_bad_input_errors():
    with pytest.raises(ConfigError, match="not defined"):
        MixtureSampler([_source("a", 1000, 0)], {"a": 1, "zzz": 1}, 100, 5)
    with pytest.raises(DataError, match="fewer than one training sequence"):
        MixtureSampler([_source("a", 1000, 0), _source("tiny", 50, 5000)], {"a": 1, "tiny": 1}, 100, 5)


def test_a_source_at_weight_zero_draws_no_rows():
    """A proposal can put a domain at 0 (the swarm still evaluates it): the sampler skips it instead of failing."""
    srcs = [_source("a", 20_000, 0), _source("b", 20_000, 100_000), _source("c", 20_000, 200_000)]
    s = MixtureSampler(srcs, {"a": 0.7, "b": 0.0, "c": 0.3}, 100, 100, max_epochs=4.0, seed=0)
    rows = s.sequences(0, len(s)).numpy()
    assert np.bincount(rows[:, 0] // 100_000, minlength=3).tolist() == [70, 0, 30]
    assert s.realized_tokens() == {"a": 7_000, "b": 0, "c": 3_000}
