"""`code` kind: canonical HumanEval/MBPP solutions pass through the task files, wrong ones fail,
unparsable code scores 0 with its reason, pass@k is the unbiased estimator, bad files fail early."""

from __future__ import annotations

import math

import pytest
import yaml

from mixlab.errors import ConfigError
from mixlab.eval import runner
from mixlab.eval.tasks import get_task, load_docs, load_task

FAST = 12  # items per dataset in the quick tests; the slow ones run every canonical solution


def _canonical(task: str, limit: int | None):
    spec = get_task(task)
    p = runner.prepare(spec, limit=limit)
    docs, _ = load_docs(spec)
    by_id = {d["id"]: d["reference_answer"] for d in docs}
    return spec, p.gen_items, [[by_id[it.id]] for it in p.gen_items]


def _check_all_pass(task: str, limit: int | None):
    spec, items, answers = _canonical(task, limit)
    summary, rows = runner.score_generations(spec, items, answers)
    failed = [(r["id"], r["samples"][0].get("reason")) for r in rows if not r["samples"][0]["passed"]]
    assert failed == []
    assert summary["pass@1"] == 1.0 and summary["n"] == len(items)
    return spec, items, answers


@pytest.mark.parametrize("task", ["humaneval", "mbpp"])
def test_canonical_solutions_pass_and_wrong_ones_fail(data_dir, task):
    spec, items, answers = _check_all_pass(task, FAST)
    # Wrong: every solution returns None; broken: does not even parse. Both score 0 with a reason.
    wrong = [["    return None\n" if task == "humaneval" else a[0].split("\n")[0] + "\n    return None\n"]
             for a in answers]
    summary, rows = runner.score_generations(spec, items, wrong)
    assert summary["pass@1"] == 0.0
    broken = [["def broken(:\n    pass\n"] for _ in items]
    summary, rows = runner.score_generations(spec, items, broken)
    assert summary["pass@1"] == 0.0
    assert all("SyntaxError" in r["samples"][0]["reason"] for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["humaneval", "mbpp"])
def test_every_canonical_solution_passes(data_dir, task):
    _check_all_pass(task, None)  # 164 HumanEval problems, the 500 MBPP test tasks


def test_pass_at_k_from_n_samples(data_dir):
    spec = get_task("humaneval_sampled")
    _, items, answers = _canonical("humaneval", 3)
    right = [a[0] for a in answers]
    # item 0: 10/10 right, item 1: 3/10, item 2: 0/10
    samples = [[right[0]] * 10, [right[1]] * 3 + ["    return None\n"] * 7, ["    raise ValueError\n"] * 10]
    summary, rows = runner.score_generations(spec, items, samples)
    assert [r["c"] for r in rows] == [10, 3, 0] and all(r["n"] == 10 for r in rows)
    unbiased = lambda n, c, k: 1 - math.comb(n - c, k) / math.comb(n, k)  # noqa: E731
    assert rows[1]["pass@1"] == pytest.approx(0.3)
    assert rows[1]["pass@10"] == pytest.approx(unbiased(10, 3, 10)) == 1.0
    assert summary["pass@1"] == pytest.approx((1 + 0.3 + 0) / 3)
    assert summary["pass@10"] == pytest.approx(2 / 3)
    assert "ValueError" in rows[2]["samples"][0]["reason"]


def _code_task(tmp_path, **fields):
    spec = {"name": "c", "kind": "code", "data": {"source": "humaneval"}, "prompt": "{{question}}",
            "gold": "{'tests': test, 'entry_point': entry_point, 'prompt': question}", "metrics": ["pass@1"]} | fields
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "c.yaml"


def test_bad_code_task_files_fail_before_any_work(tmp_path, data_dir):
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: unknown verifier 'pyexec'; known verifiers: choice, code"):
        load_task(_code_task(tmp_path, verifier="pyexec"))
    with pytest.raises(ConfigError, match="pass@5 needs at least 5 samples; set generation.n >= 5"):
        load_task(_code_task(tmp_path, metrics=["pass@5"]))
    with pytest.raises(ConfigError, match="unknown metric 'pass@x'"):
        load_task(_code_task(tmp_path, metrics=["pass@x"]))
    with pytest.raises(ConfigError, match="a code task's reference must be a mapping with 'tests'"):
        runner.prepare(load_task(_code_task(tmp_path, gold="question")), limit=2)
