"""Forgetting against hand computations: direction, flips, drops from the best earlier checkpoint,
backward transfer, and pairs that must not be compared."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sst

from mixlab.report.forgetting import StatsConfig, checkpoint_forgetting, compare_to_base, summarize_runs
from mixlab.report.model import Result, RunMeta


def R(run, step, task, value, metric="acc", hib=True, items=None, version="1", base_model="m0", n=None):
    return Result(run, step, task, metric, value, n if n is not None else (len(items) if items else 100),
                  None, hib, version, base_model, items)


def _items(scores, prefix="q"):
    return {f"{prefix}{i}": float(s) for i, s in enumerate(scores)}


def test_direction_bpb_lower_is_better():
    res = [R("base", 0, "wiki", 1.00, "bpb", hib=False), R("ft", 10, "wiki", 1.10, "bpb", hib=False),
           R("base", 0, "arc", 0.50), R("ft", 10, "arc", 0.60)]
    cmp = compare_to_base(res, "base")
    by = {c.task: c for c in cmp.changes}
    assert by["wiki"].delta == pytest.approx(-0.10) and by["wiki"].rel == pytest.approx(-0.10)
    assert by["arc"].delta == pytest.approx(0.10) and by["arc"].rel == pytest.approx(0.20)
    assert cmp.incomparable == []


def test_flips_and_mcnemar_on_items():
    base = [1] * 30 + [0] * 20  # 50 items
    new = list(base)
    for i in range(8):  # 8 correct -> wrong
        new[i] = 0
    for i in range(30, 32):  # 2 wrong -> correct
        new[i] = 1
    res = [R("base", 0, "boolq", np.mean(base), items=_items(base)),
           R("ft", 5, "boolq", np.mean(new), items=_items(new))]
    (ch,) = compare_to_base(res, "base").changes
    assert (ch.flips_correct_to_wrong, ch.flips_wrong_to_correct) == (8, 2)
    assert ch.test == "mcnemar-exact"
    assert ch.pvalue == pytest.approx(sst.binomtest(2, 10, 0.5).pvalue)  # 0.109: not significant
    assert ch.delta == pytest.approx(-6 / 50)
    assert ch.nonsignificant_drop and ch.marker == "ns"
    assert ch.ci[0] < ch.delta < ch.ci[1] and ch.n_paired == 50


def test_significant_drop_and_item_alignment():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2, 400)
    new = base.copy()
    new[np.flatnonzero(base == 1)[:60]] = 0  # 60 correct -> wrong, none back
    b_items = _items(base)
    n_items = dict(reversed(list(_items(new).items())))  # other order: aligned by id, not position
    n_items.pop("q399")
    res = [R("base", 0, "piqa", base.mean(), items=b_items), R("ft", 1, "piqa", new.mean(), items=n_items)]
    (ch,) = compare_to_base(res, "base", config=StatsConfig(n_boot=500)).changes
    assert ch.n_paired == 399
    assert np.flatnonzero(base == 1)[59] < 399  # the dropped item is not one of the flipped ones
    assert ch.flips_correct_to_wrong == 60 and ch.flips_wrong_to_correct == 0
    assert ch.test == "mcnemar-chi2-cc" and ch.pvalue < 1e-10 and ch.marker == "*"
    assert ch.ci[1] < 0


def test_continuous_items_use_sign_flip():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.8, 1.2, 200)
    new = base + rng.normal(0.02, 0.01, 200)  # bpb got worse
    res = [R("base", 0, "c4", base.mean(), "bpb", hib=False, items=_items(base)),
           R("ft", 1, "c4", new.mean(), "bpb", hib=False, items=_items(new))]
    (ch,) = compare_to_base(res, "base").changes
    assert ch.test == "sign-flip-mc" and ch.pvalue < 0.01 and ch.delta < 0 and ch.ci[1] < 0
    assert ch.flips_correct_to_wrong is None


def test_incomparable_pairs_have_reasons():
    res = [R("base", 0, "arc", 0.5), R("base", 0, "hella", 0.4, version="2"),
           R("ft", 3, "arc", 0.6, base_model="other-model"), R("ft", 3, "hella", 0.5, version="1"),
           R("ft", 3, "mmlu", 0.3), R("ok", 3, "arc", 0.55)]
    cmp = compare_to_base(res, "base")
    assert [(c.run, c.task) for c in cmp.changes] == [("ok", "arc")]
    reasons = {(i.run, i.task): i.reason for i in cmp.incomparable}
    assert "base model 'other-model' differs from 'm0'" in reasons[("ft", "arc")]
    assert "task version '1' differs from '2'" in reasons[("ft", "hella")]
    assert "no result" in reasons[("ft", "mmlu")]
    assert {i.pair for i in cmp.incomparable} == {("ft@3", "base@0"), ("ft@3", "base")}


def test_drop_from_best_earlier_checkpoint():
    vals = {100: 0.60, 200: 0.70, 300: 0.55, 400: 0.65}
    res = [R("base", 0, "arc", 0.50)] + [R("ft", s, "arc", v) for s, v in vals.items()]
    points, bad = checkpoint_forgetting(res, "base")
    assert bad == []
    got = {p.step: (p.drop, p.best_earlier_step) for p in points}
    assert got[100][0] == pytest.approx(-0.10) and got[100][1] == -1  # best earlier: the base
    assert got[200][0] == pytest.approx(-0.10) and got[200][1] == 100
    assert got[300][0] == pytest.approx(0.15) and got[300][1] == 200
    assert got[400][0] == pytest.approx(0.05) and got[400][1] == 200
    assert {p.step: round(p.delta, 6) for p in points} == {100: 0.1, 200: 0.2, 300: 0.05, 400: 0.15}


def test_drop_lower_is_better_and_version_break():
    res = [R("ft", 1, "wiki", 1.0, "bpb", hib=False), R("ft", 2, "wiki", 0.9, "bpb", hib=False),
           R("ft", 3, "wiki", 1.2, "bpb", hib=False), R("ft", 4, "wiki", 1.3, "bpb", hib=False, version="2"),
           R("ft", 5, "wiki", 1.25, "bpb", hib=False, version="2")]
    points, bad = checkpoint_forgetting(res)
    drops = {p.step: p.drop for p in points}
    assert drops[1] is None and drops[2] == pytest.approx(-0.1) and drops[3] == pytest.approx(0.3)
    assert drops[4] is None  # new task version: earlier checkpoints are not compared
    assert drops[5] == pytest.approx(-0.05)
    assert len(bad) == 1 and bad[0].step == 4 and "task version changed" in bad[0].reason


def test_run_summary_mean_worst_and_backward_transfer():
    res = [R("base", 0, "arc", 0.50), R("base", 0, "gsm8k", 0.20), R("base", 0, "wiki", 1.0, "bpb", hib=False),
           R("ft", 1, "arc", 0.45), R("ft", 1, "gsm8k", 0.25), R("ft", 1, "wiki", 1.05, "bpb", hib=False),
           R("ft", 2, "arc", 0.40), R("ft", 2, "gsm8k", 0.30), R("ft", 2, "wiki", 1.10, "bpb", hib=False)]
    meta = [RunMeta("ft", method="sft", dataset="gsm8k", target_tasks=("gsm8k",))]
    cmp = compare_to_base(res, "base")
    points, _ = checkpoint_forgetting(res, "base")
    (s_abs,) = summarize_runs(cmp, meta, points, unit="absolute")
    assert s_abs.step == 2 and s_abs.n_tasks == 3
    assert s_abs.mean_change == pytest.approx((-0.10 + 0.10 - 0.10) / 3)
    assert s_abs.target_gain == pytest.approx(0.10)
    assert s_abs.backward_transfer == pytest.approx(-0.10)  # mean of arc (-0.10) and wiki (-0.10)
    assert s_abs.max_forgetting == pytest.approx(0.10)  # arc 0.50 -> 0.40; wiki 1.0 -> 1.1
    (s_rel,) = summarize_runs(cmp, meta, points, unit="relative")
    assert s_rel.worst.task == "arc" and s_rel.worst_change == pytest.approx(-20.0)  # -0.1 / 0.5
    assert s_rel.mean_change == pytest.approx((-20.0 + 50.0 - 10.0) / 3)
    assert s_rel.backward_transfer == pytest.approx((-20.0 - 10.0) / 2)
    assert s_rel.mean_ci is None  # no items: no bootstrap


def test_run_summary_mean_ci_from_item_replicates():
    rng = np.random.default_rng(2)
    res = []
    for t in ("a", "b", "c"):
        base = rng.integers(0, 2, 300)
        new = np.where(rng.random(300) < 0.15, 0, base)
        res += [R("base", 0, t, base.mean(), items=_items(base)), R("ft", 1, t, new.mean(), items=_items(new))]
    cmp = compare_to_base(res, "base", config=StatsConfig(n_boot=400))
    (s,) = summarize_runs(cmp, [RunMeta("ft")], unit="absolute")
    assert s.mean_ci[0] <= s.mean_change <= s.mean_ci[1] and s.mean_ci[1] < 0 and s.mean_marker == "*"
    assert s.n_significant_drops == 3


def test_several_base_models_by_mapping():
    res = [R("base-a", 0, "arc", 0.50, base_model="a"), R("base-b", 0, "arc", 0.30, base_model="b"),
           R("ft-a", 1, "arc", 0.45, base_model="a"), R("ft-b", 1, "arc", 0.36, base_model="b"),
           R("ft-x", 1, "arc", 0.40, base_model="b")]
    cmp = compare_to_base(res, {"ft-a": "base-a", "ft-b": "base-b", "ft-x": "base-a"})
    assert {c.run: round(c.delta, 6) for c in cmp.changes} == {"ft-a": -0.05, "ft-b": 0.06}
    assert [(i.run, i.against) for i in cmp.incomparable] == [("ft-x", "base-a@0")]
