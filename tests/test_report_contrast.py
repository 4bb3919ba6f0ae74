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
