"""A benchmark where the base model is at chance: found by a one-sided binomial test against the task's
guessing rate (recorded by the multiple-choice engine), left out of the forgetting averages, worst,
backward transfer and contrasts (a target still counts), named in the tables; the store keeps the rate
and upgrades a database written before it."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from scipy import stats as st

from mixlab import atomic
from mixlab.report import stats
from mixlab.report.contrast import contrast_runs
from mixlab.report.forgetting import checkpoint_forgetting, compare_to_base, summarize_runs
from mixlab.report.model import RunMeta
from mixlab.report.tables import changes_table, run_summary_table
from mixlab.results import Result
from mixlab.runs import store as St


def test_above_chance_pvalue_is_the_exact_one_sided_binomial_test():
    for acc, n, p in ((0.3125, 80, 0.5), (0.663, 300, 0.5), (0.195, 200, 0.25), (0.56, 100, 0.5)):
        k = round(acc * n)
        assert stats.above_chance_pvalue(acc, n, p) == pytest.approx(st.binomtest(k, n, p, alternative="greater").pvalue)
    assert stats.above_chance_pvalue(0.56, 100, 0.5) > 0.05 > stats.above_chance_pvalue(0.60, 100, 0.5)


def _items(n: int, acc: float, seed: int) -> dict[str, float]:
    k = round(acc * n)
    v = np.zeros(n)
    v[np.random.default_rng(seed).permutation(n)[:k]] = 1
    return {f"i{j}": float(x) for j, x in enumerate(v)}


def _res(run: str, task: str, acc: float, n: int, chance: float | None, seed: int) -> Result:
    items = _items(n, acc, seed)
    return Result(run, 0 if run == "base" else 100, task, "acc", float(np.mean(list(items.values()))), n,
                  task_version="v1", base_model="smollm2", items=items, chance=chance)


@pytest.fixture
def study():
    # the base: 25/80 on boolq (guessing 50%: at chance), 199/300 on piqa (above), 20/200 on a generative target
    results = [_res("base", "boolq", 0.3125, 80, 0.5, 1), _res("base", "piqa", 0.6633, 300, 0.5, 2),
               _res("base", "gsm8k", 0.10, 200, None, 3),
               _res("sft", "boolq", 0.6125, 80, 0.5, 4), _res("sft", "piqa", 0.6133, 300, 0.5, 5),
               _res("sft", "gsm8k", 0.20, 200, None, 6),
               _res("lora", "boolq", 0.5625, 80, 0.5, 7), _res("lora", "piqa", 0.6533, 300, 0.5, 8),
               _res("lora", "gsm8k", 0.15, 200, None, 9)]
    meta = [RunMeta("sft", "sft", target_tasks=("gsm8k",)), RunMeta("lora", "lora", target_tasks=("gsm8k",))]
    return results, meta


def test_a_benchmark_at_chance_is_left_out_of_the_forgetting_summaries(study):
    results, meta = study
    cmp = compare_to_base(results, "base")
    by = {(c.run, c.task): c for c in cmp.changes}
    assert by[("sft", "boolq")].base_at_chance and by[("sft", "boolq")].base_chance == 0.5
    assert not by[("sft", "piqa")].base_at_chance and not by[("sft", "gsm8k")].base_at_chance
    points, _ = checkpoint_forgetting(results, "base")
    summ = {s.run: s for s in summarize_runs(cmp, meta, points, unit="absolute")}
    sft = summ["sft"]
    # boolq's +30 points (answer bias of a base below guessing) count nowhere; piqa is the only other task
    assert sft.chance_tasks == ("boolq",) and sft.other_tasks == ("piqa",) and sft.n_tasks == 2
    assert sft.other_change == pytest.approx(0.6133 - 0.6633, abs=2e-3)
    assert sft.backward_transfer == pytest.approx(sft.other_change)
    assert sft.mean_change == pytest.approx(np.mean([sft.other_change, sft.target_gain]))
    assert sft.worst.task == "piqa"
    con = {c.run: c for c in contrast_runs(cmp, meta, "sft", unit="absolute")}["lora"]
    assert con.other_tasks == ("piqa",) and [t for t, _ in con.left_out] == ["boolq"]
    assert "the base is at chance: boolq (base 31.2%, guessing 50.0%)" in con.left_out[0][1]
    assert con.forgetting_advantage.value == pytest.approx((0.6533 - 0.6633) - (0.6133 - 0.6633), abs=2e-3)
    assert "left out of the averages" in " ".join(run_summary_table(list(summ.values())).notes)
    assert "31.2 (chance 50.0)" in [c.text for row in changes_table(cmp.changes).rows for c in row]


def test_at_chance_means_close_to_guessing_not_merely_too_few_items_to_tell():
    def change(acc: float, n: int, chance: float):
        b = Result("base", 0, "t", "acc", acc, n, task_version="v1", base_model="m", chance=chance)
        r = Result("ft", 1, "t", "acc", acc, n, task_version="v1", base_model="m", chance=chance)
        return compare_to_base([b, r], "base").changes[0]

    few = change(5 / 12, 12, 0.25)  # 17 points above guessing on 12 items: p = 0.16, yet clearly not at chance
    assert few.base_chance_p == pytest.approx(0.158, abs=1e-3) and not few.base_at_chance
    assert change(4 / 12, 12, 0.25).base_at_chance          # 8 points above, one standard error is 12.5
    assert change(0.49, 300, 0.5).base_at_chance and change(0.195, 200, 0.25).base_at_chance  # WinoGrande, MMLU
    assert not change(0.56, 300, 0.5).base_at_chance        # 6 points above, one standard error is 2.9
    assert not change(0.3, 100, None).base_at_chance        # guessing rate unknown (not multiple choice)


def test_a_target_at_chance_still_counts_and_unknown_chance_changes_nothing(study):
    results, meta = study
    meta = [RunMeta(m.run, m.method, target_tasks=("boolq", "gsm8k")) for m in meta]
    summ = {s.run: s for s in summarize_runs(compare_to_base(results, "base"), meta, unit="absolute")}
    assert summ["sft"].chance_tasks == () and summ["sft"].target_tasks == ("boolq", "gsm8k")
    plain = [Result(r.run, r.step, r.task, r.metric, r.value, r.n, task_version=r.task_version,
                    base_model=r.base_model, items=r.items) for r in results]
    s = {x.run: x for x in summarize_runs(compare_to_base(plain, "base"), study[1], unit="absolute")}["sft"]
    assert s.chance_tasks == () and s.other_tasks == ("boolq", "piqa")


def test_the_store_keeps_the_guessing_rate_and_upgrades_an_older_database(tmp_path):
    unit = tmp_path / "evals" / "base" / "step-0"
    atomic.write_json(unit / St.UNIT_FILE, {"unit": "base/step-0", "run": "base", "step": 0, "model": "/m"})
    t = unit / "tasks" / "boolq"
    atomic.write_jsonl(t / "items.jsonl", [{"id": "i0", "acc": 1.0}, {"id": "i1", "acc": 0.0}])
    atomic.write_json(t / "result.json", {
        "key": "k", "status": "done", "task": {"name": "boolq", "version": 1, "hash": "abcdef0123"}, "limit": None,
        "metrics": {"acc": 0.5, "acc_norm": 0.5, "n": 2}, "stderr": {}, "chance": {"acc": 0.5}, "n": 2,
        "items": "items.jsonl"})
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)  # the results table as it was before the chance column
    con.executescript(St._SCHEMA.replace(" chance REAL,", ""))
    con.close()
    with St.Store(db) as s:
        s.index_unit_dir(unit)
        got = {r.metric: r.chance for r in s.results(run="base")}
    assert got == {"acc": 0.5, "acc_norm": None}
