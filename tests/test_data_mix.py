"""Split, balance and ratio mixing: exact counts on synthetic records."""

from __future__ import annotations

from collections import Counter

import pytest

from mixlab.data import mix
from mixlab.data.records import Record, make_id
from mixlab.data.split import split_records, unit_hash
from mixlab.errors import ConfigError


def rec(ds: str, i: int, q: str | None = None, domain: str = "d") -> Record:
    return Record(make_id(ds, i), ds, domain, q if q is not None else f"{ds} question number {i}", str(i), "numeric",
                  metadata={"original_id": str(i), "source": "mem"})


def test_unit_hash_is_stable_and_uniform():
    assert unit_hash(0, "gsm8k", "1") == unit_hash(0, "gsm8k", "1")
    assert unit_hash(0, "gsm8k", "1") != unit_hash(1, "gsm8k", "1")
    us = [unit_hash(3, "x", i) for i in range(60000)]
    assert abs(sum(u < 1 / 6 for u in us) / len(us) - 1 / 6) < 0.01


def test_split_fraction_and_stability_when_data_grows():
    small = [rec("a", i) for i in range(3000)]
    big = small + [rec("a", i) for i in range(3000, 9000)]
    s1 = split_records(small, 1 / 6, seed=7)
    s2 = split_records(big, 1 / 6, seed=7)
    assert abs(len(s1.test) / 3000 - 1 / 6) < 0.03
    test1 = {r.id for r in s1.test}
    test2 = {r.id for r in s2.test}
    assert test1 == {r.id for r in small if r.id in test2}  # no old record moved
    assert split_records(small, 1 / 6, seed=8).test != s1.test  # the seed matters


def test_duplicates_never_straddle_the_split():
    records = []
    for i in range(2000):
        records.append(rec("a", i, q=f"Shared question {i % 300}?"))
        records.append(rec("b", i, q=f"  shared QUESTION {i % 300} "))  # same after normalization
    s = split_records(records, 1 / 6, seed=0)
    from mixlab.data.normalize import normalize_text

    train_q = {normalize_text(r.question) for r in s.train}
    test_q = {normalize_text(r.question) for r in s.test}
    assert train_q and test_q and not train_q & test_q
    assert s.groups_merged == 4000 - 300


def test_largest_remainder_sums_exactly():
    c = mix.largest_remainder({"a": 0.4, "b": 0.3, "c": 0.3}, 1001)
    assert sum(c.values()) == 1001 and c == {"a": 401, "b": 300, "c": 300}


def test_take_downsamples_without_and_upsamples_with_unique_ids():
    pool = [rec("a", i) for i in range(10)]
    down = mix.take(pool, 4, mix.rng_for(0, "t"))
    assert len(down) == 4 and len({r.id for r in down}) == 4
    up = mix.take(pool, 25, mix.rng_for(0, "t"))
    assert len(up) == 25 and len({r.id for r in up}) == 25
    base = Counter(r.id.split("#")[0] for r in up)
    assert sorted(base.values()) == [2] * 5 + [3] * 5  # every record twice, five of them three times


def test_balance_downsample_and_upsample():
    pools = {"a": [rec("a", i) for i in range(100)], "b": [rec("b", i) for i in range(30)]}
    down = mix.balance_domain(pools, {"a": 1, "b": 1}, "downsample", 0, "d")
    assert {k: len(v) for k, v in down.items()} == {"a": 30, "b": 30}
    up = mix.balance_domain(pools, {"a": 1, "b": 1}, "upsample", 0, "d")
    assert {k: len(v) for k, v in up.items()} == {"a": 100, "b": 100}
    skew = mix.balance_domain(pools, {"a": 3, "b": 1}, "downsample", 0, "d")
    assert {k: len(v) for k, v in skew.items()} == {"a": 90, "b": 30}


def test_plan_exact_is_largest_mix_meeting_ratios():
    sizes = {"math": {"g": 500, "m": 500}, "qa": {"h": 900}, "code": {"c": 300}}
    plans = mix.plan_mixture(sizes, {"math": 4, "qa": 3, "code": 3}, "exact")
    # N = min(1000/.4, 900/.3, 300/.3) = 1000
    assert {d: p.target for d, p in plans.items()} == {"math": 400, "qa": 300, "code": 300}
    assert plans["math"].per_dataset == {"g": 200, "m": 200}


def test_plan_total_upsamples_and_sample_ratio():
    sizes = {"x": {"a": 10}, "y": {"b": 1000}}
    plans = mix.plan_mixture(sizes, {"x": 1, "y": 1}, "total", total=200, sample_ratio=0.5)
    assert {d: p.target for d, p in plans.items()} == {"x": 50, "y": 50}


@pytest.mark.parametrize("weights", [{"a": -1, "b": 2}, {"a": 0, "b": 0}])
def test_bad_weights(weights):
    with pytest.raises(ConfigError):
        mix.normalize_weights(weights, "domains")


def test_replay_count():
    assert mix.replay_count(800, 0.2) == 200
    with pytest.raises(ConfigError):
        mix.replay_count(800, 1.0)


def test_near_duplicates_sharing_a_13gram_stay_together_and_groups_are_unbiased():
    stem = "write a python function to check whether the given number is"
    s2 = split_records([rec("m", i, q=f"item {i} {stem[:20]}") for i in range(6000)], 1 / 6, seed=1, ngram=13)
    assert s2.groups_merged == 0
    groups = [[rec("g", 10 * k + j, q=f"shared long question text number {k} with many words here to reach thirteen {j}")
               for j in range(10)] for k in range(3000)]
    s3 = split_records([r for g in groups for r in g], 1 / 6, seed=2, ngram=13)
    assert s3.groups_merged == 30000 - 3000
    # groups of 10 land in test with probability 1/6, not 1 - (5/6)^10
    assert abs(len(s3.test) / 30000 - 1 / 6) < 0.02
    test_ids = {r.id for r in s3.test}
    for g in groups[:200]:
        assert len({r.id in test_ids for r in g}) == 1


def test_fast_normalization_matches_the_regular_expression_definition():
    import random
    import string
    import unicodedata

    from mixlab.data.normalize import _NON_WORD, _OPERATOR, _SPACE, normalize_text

    def reference(t: str) -> str:
        t = unicodedata.normalize("NFKC", t).lower()
        return _SPACE.sub(" ", _OPERATOR.sub(r" \1 ", _NON_WORD.sub(" ", t))).strip()

    rng = random.Random(0)
    alphabet = string.printable + "éß—’ﬁ"
    for _ in range(5000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert normalize_text(t) == reference(t), repr(t)
    assert normalize_text("What is 4+0?") == "what is 4 + 0" != normalize_text("What is 4 - 0?")
    assert normalize_text("Is it TRUE?!") == normalize_text("is it true") == "is it true"


def test_gram_hasher_finds_exactly_the_shared_ngrams():
    import numpy as np

    from mixlab.data.normalize import GramHasher

    texts = ["a b c d e", "x a b c y", "c d e f", "a b"]
    h, owner = GramHasher(3).hashes(texts)
    assert owner.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]  # windows never cross texts; "a b" has none
    grams = {}
    for hv, o in zip(h.tolist(), owner.tolist()):
        grams.setdefault(hv, set()).add(o)
    shared = sorted(sorted(v) for v in grams.values() if len(v) > 1)
    assert shared == [[0, 1], [0, 2]]  # "a b c" and "c d e"
    assert len(np.unique(h)) == 6


def test_a_solution_quoting_another_question_keeps_both_on_one_side():
    # MATH solutions repeat other problems' Asymptote figures: the contamination check counts a
    # 13-gram shared between a training solution and a test question, so the split groups them
    figure = "unitsize 0 3 cm pair a b c d e f h a 5 12 b 0 0 c 14 0 draw a b c cycle"
    quoted = [Record(make_id("q", k), "q", "d", f"problem {k} find the area", "1", "numeric",
                     solution=f"draw it {figure} {k} so the area is 1", metadata={"original_id": str(k), "source": "mem"})
              for k in range(600)]
    owners = [rec("o", k, q=f"figure {k} {figure} {k} what is h") for k in range(600)]
    s = split_records(quoted + owners, 1 / 6, seed=5, ngram=13)
    assert s.groups_merged == 1200 - 1  # every record shares the figure's grams: one group
    assert len(s.test) in (0, 1200)
    # distinct figures per pair: 600 groups of two, each on one side, about 1/6 of them in test
    def fig(k: int) -> str:
        return " ".join(f"p{k}x{j}" for j in range(14))

    quoted = [Record(make_id("q", k), "q", "d", f"problem {k} find the area", "1", "numeric",
                     solution=f"draw it {fig(k)} so", metadata={"original_id": str(k), "source": "mem"})
              for k in range(600)]
    owners = [rec("o", k, q=f"{fig(k)} what is h") for k in range(600)]
    s = split_records(quoted + owners, 1 / 6, seed=5, ngram=13)
    assert s.groups_merged == 600
    test_ids = {r.id for r in s.test}
    assert all((q.id in test_ids) == (o.id in test_ids) for q, o in zip(quoted, owners))
    assert 0.1 < len(s.test) / 1200 < 0.24
    # without solutions the pairs are split independently, and some straddle the line
    plain = [Record(q.id, q.dataset, q.domain, q.question, "1", "numeric", metadata=q.metadata) for q in quoted]
    test_ids = {r.id for r in split_records(plain + owners, 1 / 6, seed=5, ngram=13).test}
    assert any((q.id in test_ids) != (o.id in test_ids) for q, o in zip(plain, owners))


def test_official_split_keeps_the_published_sides():
    rows = [Record(make_id("m", i), "m", "d", f"q {i}", "1", "numeric",
                   metadata={"original_id": str(i), "source": "mem", "split": "train" if i % 3 else "test"}) for i in range(30)]
    s = split_records(rows, 1 / 6, seed=0, mode="official")
    assert [r.id for r in s.test] == [r.id for r in rows if r.metadata["split"] == "test"]
    assert len(s.train) == 20
    with pytest.raises(Exception, match="no official train split"):
        split_records([r for r in rows if r.metadata["split"] == "test"], 1 / 6, seed=0, mode="official")
