"""Report tables: best in bold with the metric's direction, last-vs-first change, wins, mixtures, runtime."""

from __future__ import annotations

import pytest

from mixlab.report import tables
from mixlab.report.forgetting import compare_to_base, summarize_runs
from mixlab.report.model import Result, RunMeta, index_results, task_groups


def R(run, task, value, metric="acc", hib=True, version="1", step=100):
    return Result(run, step, task, metric, value, 100, None, hib, version, "m0")


RESULTS = [R("base", "arc", 0.50, step=0), R("base", "wiki", 1.00, "bpb", False, step=0),
           R("base", "gsm8k", 0.20, step=0),
           R("mixA", "arc", 0.55), R("mixA", "wiki", 0.95, "bpb", False), R("mixA", "gsm8k", 0.10),
           R("mixB", "arc", 0.52, step=50), R("mixB", "arc", 0.54), R("mixB", "wiki", 0.90, "bpb", False),
           R("mixB", "gsm8k", 0.30)]
META = [RunMeta("mixA", task_groups={"arc": "reasoning", "gsm8k": "math", "wiki": "lm"}, label="A"),
        RunMeta("mixB", label="B")]


def _rows():
    return tables.score_rows(index_results(RESULTS), ["base", "mixA", "mixB"], task_groups(META))


def test_best_in_bold_respects_direction_and_improvement_column():
    rows, bad = _rows()
    assert bad == []
    by = {r.key[0]: r for r in rows}
    assert by["arc"].best == (1,)  # 0.55 beats mixB's final 0.54 (its step-50 value is not used)
    assert by["wiki"].best == (2,)  # lowest bits-per-byte
    assert by["wiki"].improvement == pytest.approx(0.10)  # 1.00 -> 0.90 bpb is +0.10 better
    assert by["gsm8k"].improvement == pytest.approx(0.10)
    ts = {t.title: t for t in tables.score_tables(rows, ["base", "A", "B"])}
    lm = ts["Group: lm"]
    assert lm.header == ["task", "metric", "base", "A", "B", "Δ B vs base", "best"]
    row = lm.rows[0]
    assert [c.text for c in row] == ["wiki", "bpb ↓", "1.000", "0.950", "0.900", "+0.100", "B"]
    assert [c.bold for c in row[2:5]] == [False, False, True]
    reasoning = ts["Group: reasoning"].rows[0]
    assert [c.text for c in reasoning[2:6]] == ["50.0", "55.0", "54.0", "+4.0"]  # percent, Δ in points
    md = tables.table_markdown(lm)
    assert "| wiki | bpb ↓ | 1.000 | 0.950 | **0.900** | +0.100 | B |" in md


def test_wins_and_average_improvement():
    rows, _ = _rows()
    wins = tables.wins_table(rows, ["base", "A", "B"])
    as_text = {r[0].text: [c.text for c in r[1:]] for r in wins.rows}
    assert as_text == {"lm": ["0", "0", "1"], "math": ["0", "0", "1"], "reasoning": ["0", "1", "0"],
                       "all categories": ["0", "1", "2"]}
    avg, n, points = tables.average_improvement(rows)
    assert n == 3 and points == [] and avg == pytest.approx(100 * (0.04 / 0.5 + 0.10 / 1.0 + 0.10 / 0.2) / 3)
    # one category: no second row repeating it as the total
    one = tables.wins_table(tables.score_rows(index_results(RESULTS), ["base", "mixA", "mixB"], task_groups([]))[0],
                            ["base", "A", "B"])
    assert [[c.text for c in r] for r in one.rows] == [["all", "0", "1", "2"]]


def test_average_improvement_counts_a_zero_first_column_in_points():
    res = [R("base", "arc", 0.50, step=0), R("base", "em", 0.0, "exact_match", step=0), R("base", "judge", 0.0, "score",
           step=0), R("ft", "arc", 0.60), R("ft", "em", 0.25, "exact_match"), R("ft", "judge", 3.0, "score")]
    rows, _ = tables.score_rows(index_results(res), ["base", "ft"], task_groups([]))
    avg, n, points = tables.average_improvement(rows)
    # arc +20% of its base; em 0 -> 25%: +25 percentage points; judge 0 -> 3.0 (not accuracy-like): +3 units
    assert n == 3 and points == ["em (exact_match)", "judge (score)"]
    assert avg == pytest.approx((20.0 + 25.0 + 3.0) / 3)


def test_task_version_mismatch_is_not_ranked():
    res = [R("base", "arc", 0.5, step=0), R("mixA", "arc", 0.6, version="2")]
    rows, bad = tables.score_rows(index_results(res), ["base", "mixA"], task_groups([]))
    assert rows[0].best == () and rows[0].improvement is None
    assert len(bad) == 1 and "task versions ['1', '2'] differ" in bad[0].reason
    t = tables.score_tables(rows, ["base", "mixA"])[0]
    assert not any(c.bold for c in t.rows[0]) and "not compared" in t.rows[0][-1].text


def test_forgetting_table_method_by_dataset():
    res = [R("base", "arc", 0.5, step=0), R("base", "gsm8k", 0.2, step=0)]
    meta = []
    for i, (method, dataset, arc) in enumerate([("sft", "gsm8k", 0.40), ("lora", "gsm8k", 0.48),
                                                ("sft", "mbpp", 0.45), ("sft", "mbpp", 0.35)]):
        res += [R(f"r{i}", "arc", arc), R(f"r{i}", "gsm8k", 0.3)]
        meta.append(RunMeta(f"r{i}", method, dataset, ("gsm8k",)))
    sums = summarize_runs(compare_to_base(res, "base"), meta, unit="relative")
    avg, worst = tables.forgetting_tables(sums)
    assert avg.header == ["method", "gsm8k", "mbpp"]
    cells = {r[0].text: [c.text for c in r[1:]] for r in avg.rows}
    assert cells["sft"][0] == "+15.0%"  # (arc -20% + gsm8k +50%) / 2
    assert cells["lora"] == ["+23.0%", ""]
    assert cells["sft"][1] == "+15.0% ± 7.1 (2 runs)"  # runs at +20% and +10%: mean ± sample sd
    wcells = {r[0].text: [c.text for c in r[1:]] for r in worst.rows}
    assert wcells["sft"] == ["arc: -20.0%", "arc: -30.0%"]


def test_mixture_and_runtime_tables():
    meta = [RunMeta("p1", mixture_requested={"web": 0.6, "code": 0.4}, mixture_realized={"web": 0.58, "code": 0.42},
                    runtime={"data": 65, "pretrain": 3725.4}),
            RunMeta("ft", runtime={"finetune": 10})]
    mix = tables.mixture_table(meta)
    assert mix.header == ["run", "code", "web", "max |Δ| (points)"]
    assert [c.text for c in mix.rows[0]] == ["p1", "40.0 → 42.0", "60.0 → 58.0", "2.00"]
    rt = tables.runtime_table(meta)
    assert rt.header == ["run", "data", "pretrain", "finetune", "total"]
    assert [c.text for c in rt.rows[0]] == ["p1", "0:01:05", "1:02:05", "–", "1:03:10"]
    # a stage of zeros in every run (in-training evaluation when the sweep evaluated) is left out; the
    # sweep's evaluation of the run's checkpoints is its own column and adds to the total
    rt = tables.runtime_table([RunMeta("sft", runtime={"training": 17, "evaluation": 0.0, "total_this_process": 18},
                                       eval_seconds=41), RunMeta("base", runtime={"training": 61, "evaluation": 0.2,
                                                                                  "total_this_process": 63})])
    assert rt.header == ["run", "training", "evaluation (sweep)", "total"]
    assert [[c.text for c in r] for r in rt.rows] == [["sft", "0:00:17", "0:00:41", "0:00:59"],
                                                      ["base", "0:01:01", "–", "0:01:03"]]
    st = tables.stage_table({"data": 1.5, "pretrain": 63.0, "finetune": 55.0, "evaluate": 132.0}, {"data": "build"})
    assert [[c.text for c in r] for r in st.rows] == [["data", "0:00:02", "build"], ["pretrain", "0:01:03", ""],
                                                      ["finetune", "0:00:55", ""], ["evaluate", "0:02:12", ""],
                                                      ["total", "0:04:12", ""]]


def test_gain_ratio_is_never_rounded_onto_the_threshold():
    assert tables.fmt_ratio(0.7968, 0.8) == "79.7%" and tables.fmt_ratio(0.8127, 0.8) == "81%"
    assert tables.fmt_ratio(0.8003, 0.8) == "80%" and tables.fmt_ratio(1.0267, 0.8) == "103%"
    assert tables.mixture_table([RunMeta("x")]) is None
    # a fine-tuning run's own total (training + evaluation + I/O + overhead) is its total, not a stage
    ft = tables.runtime_table([RunMeta("sft", runtime={"training": 1032, "model_io": 6, "total_this_process": 1039})])
    assert ft.header == ["run", "training", "model_io", "total"]
    assert [c.text for c in ft.rows[0]] == ["sft", "0:17:12", "0:00:06", "0:17:19"]


def test_markdown_escapes_pipes():
    t = tables.Table("t", ["a|b"], [[tables.Cell("x|y", True)]])
    assert "| a\\|b |" in tables.table_markdown(t) and "**x\\|y**" in tables.table_markdown(t)
