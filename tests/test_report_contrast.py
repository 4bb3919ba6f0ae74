"""Method-vs-reference contrasts against hand computations: the shared-resample bootstrap is a paired
bootstrap of the per-item difference, and the verdicts follow the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.report import stats
from mixlab.report.contrast import contrast_runs
from mixlab.report.forgetting import StatsConfig, compare_to_base
from mixlab.report.html import write_report
from mixlab.report.model import Result, RunMeta


def _res(run: str, task: str, scores: np.ndarray, hib: bool = True, metric: str = "acc") -> Result:
    items = {f"{task}-{i}": float(s) for i, s in enumerate(scores)}
    return Result(run, 0 if run == "base" else 50, task, metric, float(np.mean(scores)), len(scores), None, hib,
                  "1", "base", items)


@pytest.fixture()
def study():
    rng = np.random.default_rng(0)
    n = 200
    base = {"target": rng.uniform(1.5, 2.5, n), "other_a": rng.uniform(0.8, 1.2, n), "other_b": rng.uniform(0.8, 1.2, n)}
    # bits-per-byte (lower is better): both runs learn the target; sft forgets a lot, kl a little
    sft = {"target": base["target"] - 1.0, "other_a": base["other_a"] + 0.5 + rng.normal(0, 0.1, n),
           "other_b": base["other_b"] + 0.4 + rng.normal(0, 0.1, n)}
    kl = {"target": base["target"] - 0.9, "other_a": base["other_a"] + 0.1 + rng.normal(0, 0.1, n),
          "other_b": base["other_b"] + 0.1 + rng.normal(0, 0.1, n)}
    same = {k: v + 0.01 * (-1.0) ** np.arange(n) for k, v in sft.items()}  # forgets exactly like sft on average
    results = [_res(run, t, s, hib=False, metric="bpb") for run, d in
               (("base", base), ("sft", sft), ("kl", kl), ("same", same)) for t, s in d.items()]
    metas = [RunMeta(r, method=r, target_tasks=("target",)) for r in ("sft", "kl", "same")]
    return results, metas, base, sft, kl


def test_contrast_is_a_paired_bootstrap_of_the_per_item_difference(study):
    results, metas, base, sft, kl = study
    cfg = StatsConfig(n_boot=500, seed=3)
    cmp = compare_to_base(results, "base", config=cfg)
    by = {c.run: c for c in contrast_runs(cmp, metas, "sft", unit="absolute")}
    assert set(by) == {"kl", "same"}
    c = by["kl"]
    # point estimates, by hand (absolute bpb, direction-aware: a rise in bpb is a negative change)
    other_sft = np.mean([-(sft[t] - base[t]).mean() for t in ("other_a", "other_b")])
    other_kl = np.mean([-(kl[t] - base[t]).mean() for t in ("other_a", "other_b")])
    assert c.other == pytest.approx(other_kl) and c.reference_other == pytest.approx(other_sft)
    assert c.forgetting_advantage.value == pytest.approx(other_kl - other_sft)
    assert c.gain == pytest.approx(0.9) and c.reference_gain == pytest.approx(1.0)
    assert c.gain_ratio == pytest.approx(0.9)
    # the CI equals a direct paired bootstrap of the per-item difference kl - sft (same resampled items)
    reps = np.mean([stats.bootstrap_replicates(-(kl[t] - sft[t]), 500, 3, key=t)[:, 0]
                    for t in ("other_a", "other_b")], axis=0)
    lo, hi = stats.percentile_ci(reps[:, None], 0.05)
    assert c.forgetting_advantage.ci == pytest.approx((lo[0], hi[0]))
    assert c.forgets_significantly_less() and c.comparable_gain(0.8) and not c.comparable_gain(0.95)
    # a run that forgets like the reference: no significant difference, p-value far from 0
    s = by["same"]
    assert not s.forgets_significantly_less() and not s.forgetting_advantage.significant
    assert s.forgetting_advantage.pvalue > 0.05


def test_relative_unit_and_the_report_table(study, tmp_path):
    results, metas, base, sft, kl = study
    cmp = compare_to_base(results, "base")
    c = {x.run: x for x in contrast_runs(cmp, metas, "sft", unit="relative")}["kl"]
    want = np.mean([100 * (-(kl[t].mean() - base[t].mean())) / base[t].mean() for t in ("other_a", "other_b")])
    assert c.other == pytest.approx(want)
    files = write_report(results, [RunMeta("base"), *metas], "base", tmp_path, reference="sft",
                         intro=["Finding: a sentence at the top."])
    md = files.markdown.read_text()
    assert "Against sft (paired, final checkpoints)" in md and "Finding: a sentence at the top." in md
    row = next(line for line in md.splitlines() if line.startswith("| kl "))
    assert "forgets significantly less; comparable gain (90% of the reference's)" in row


def test_unknown_reference_is_an_error(study):
    results, metas, *_ = study
    with pytest.raises(KeyError, match="reference run 'nope'"):
        contrast_runs(compare_to_base(results, "base"), metas, "nope")


def test_a_zero_base_counts_in_points_and_every_summary_names_what_it_averages(tmp_path):
    """people_em-like: a target whose base scores 0 contributes its change in points (0 -> 20% exact
    match = +20) instead of vanishing; a task only one run has is left out, with the reason."""
    n = 20
    first = lambda k: (np.arange(n) < k).astype(float)  # noqa: E731  (k of the n items right)
    base = {"tb": np.full(n, 2.0), "em": np.zeros(n), "oa": first(10)}
    sft = {"tb": np.full(n, 1.5), "em": first(4), "oa": first(8)}
    kl = {"tb": np.full(n, 1.6), "em": first(2), "oa": first(10), "extra": first(3)}
    metric = {"tb": ("bpb", False), "em": ("exact_match", True), "oa": ("acc", True), "extra": ("acc", True)}
    results = [_res(run, t, s, hib=metric[t][1], metric=metric[t][0]) for run, d in
               (("base", base), ("sft", sft), ("kl", kl)) for t, s in d.items()]
    results.append(_res("base", "extra", first(5)))
    metas = [RunMeta(r, method=r, target_tasks=("tb", "em")) for r in ("sft", "kl")]
    cfg = StatsConfig(n_boot=400, seed=1)
    cmp = compare_to_base(results, "base", config=cfg)
    (c,) = contrast_runs(cmp, metas, "sft")
    # sft: tb 2.0 -> 1.5 bpb is +25% of the base, em 0 -> 0.20 is +20 points; kl: +20% and +10 points
    assert c.reference_gain == pytest.approx((25.0 + 20.0) / 2) and c.gain == pytest.approx((20.0 + 10.0) / 2)
    assert c.reference_other == pytest.approx(-20.0) and c.other == pytest.approx(0.0)  # oa 0.5 -> 0.4 / 0.5
    assert (c.target_tasks, c.other_tasks, c.points_tasks) == (("em", "tb"), ("oa",), ("em",))
    assert c.left_out == (("extra", "no result for sft"),)
    assert c.gain_difference.n_tasks == 2 and c.gain_difference.value == pytest.approx(-7.5)
    # the CI: the em part is the paired bootstrap of the item difference, in points; tb's is constant
    reps = (100 * stats.bootstrap_replicates(kl["em"] - sft["em"], 400, 1, key="em")[:, 0] + (20.0 - 25.0)) / 2
    lo, hi = stats.percentile_ci(reps[:, None], 0.05)
    assert c.gain_difference.ci == pytest.approx((lo[0], hi[0]))
    d = c.to_dict()
    assert d["points_tasks"] == ["em"] and d["left_out"] == [{"task": "extra", "reason": "no result for sft"}]
    assert d["per_task"]["em"] == {"change": pytest.approx(10.0), "reference_change": pytest.approx(20.0),
                                   "in": "points"}
    # the per-run summaries use the same convention and name their tasks
    from mixlab.report.forgetting import summarize_runs

    s = {x.run: x for x in summarize_runs(cmp, metas)}["sft"]
    assert s.target_gain == pytest.approx(22.5) and s.target_tasks == ("em", "tb") and s.points_tasks == ("em",)
    # and the findings say exactly what the headline averages
    files = write_report(results, [RunMeta("base"), *metas], "base", tmp_path, reference="sft", config=cfg)
    lines = files.findings
    assert lines[0].startswith("Finding: sft changed its target tasks by +22.5% and the other tasks by -20.0% ")
    assert "points (absolute change) where the base value is 0" in lines[0]
    assert lines[1] == ("Averaged for sft: target tasks (2) em (base 0, counted in points: +20.0), tb; other tasks "
                        "(1) oa. Left out: extra (no result for sft).")
    assert lines[1] in files.markdown.read_text()
