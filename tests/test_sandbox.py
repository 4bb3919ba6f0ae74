"""The code sandbox's basics and the HumanEval/MBPP canonical solutions (hostile programs:
test_sandbox_containment.py; programs that try to fake passing their tests: test_sandbox_forgery.py)."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pytest

from mixlab.eval.sandbox import CodeTests, Limits, check_sandbox, run_many, run_program, run_tests

# --------------------------------------------------------------------------- basics


def test_plain_programs_exit_ok_or_failed_never_passed():
    ok = run_program("print('hello from the sandbox')")
    assert ok.status == "ok" and ok.returncode == 0 and not ok.passed  # an exit status is no test
    assert ok.stdout.strip() == "hello from the sandbox"
    bad = run_program("assert 1 + 1 == 3, 'arithmetic'")
    assert bad.status == "failed" and bad.returncode == 1
    assert "AssertionError: arithmetic" in bad.stderr and "AssertionError" in bad.reason
    exited = run_program("import sys; sys.exit(3)")
    assert exited.status == "failed" and exited.returncode == 3


def test_scratch_is_cwd_and_home_writable_and_private_to_each_run():
    first = run_program(
        "import os\n"
        "open('out.txt', 'w').write('x' * 10)\n"
        "print(os.getcwd(), os.getcwd() == os.environ['HOME'], open('out.txt').read())\n"
    )
    assert first.status == "ok", first.stderr
    assert first.stdout.split() == ["/work", "True", "xxxxxxxxxx"]
    second = run_program("import os\nprint(sorted(os.listdir('.')))")
    assert second.stdout.strip() == "['program.py']"  # the first run's file went with its tmpfs


def test_passing_needs_every_test_to_run_and_pass():
    program = "def add(a, b):\n    return a + b\n"
    ok = run_tests(program, ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"])
    assert ok.status == "passed" and ok.reason == ""
    second_fails = run_tests(program, ["assert add(2, 3) == 5", "assert add(2, 2) == 5"])
    assert second_fails.status == "failed"
    assert second_fails.reason == "test 2 of 2 failed (`assert add(2, 2) == 5`): AssertionError"
    assert "AssertionError" in second_fails.stderr


def test_values_objects_and_exceptions_cross_between_program_and_tests():
    program = (
        "import collections\n"
        "class Pair:\n"
        "    def __init__(self, a, b):\n"
        "        self.a, self.b = a, b\n"
        "def longest(pairs):\n"
        "    return max(p.b - p.a for p in pairs)\n"
        "def counts(s):\n"
        "    return collections.Counter(s)\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "def point():\n"
        "    return Point(1, 2)\n"
        "def squares(n):\n"
        "    return (i * i for i in range(n))\n"
        "def parse(s):\n"
        "    return int(s)\n"
    )
    tests = [
        "assert longest([Pair(1, 5), Pair(2, 3)]) == 4",  # objects stay in the program, as handles
        "p = Pair(1, 2); p.b = 10; assert longest([p]) == 9",
        "assert counts('aab') == {'a': 2, 'b': 1}",
        "assert point() == (1, 2)",
        "assert list(squares(4)) == [0, 1, 4, 9]",
        "try:\n    parse('x')\n    assert False\nexcept ValueError as e:\n    assert 'invalid literal' in str(e)",
    ]
    res = run_tests(program, tests)
    assert res.status == "passed", res.reason


def test_tests_that_do_not_parse_are_an_error_not_a_failure():
    res = run_tests("def f():\n    return 1\n", ["assert f( == 1"])
    assert res.status == "error" and res.reason.startswith("the tests do not parse")
    with pytest.raises(ValueError, match="no tests to run"):
        run_tests("def f():\n    return 1\n", [])


def test_check_sandbox_passes_here():
    check_sandbox()  # raises SandboxUnavailable where namespaces are missing


# --------------------------------------------------------------------------- HumanEval / MBPP


def _humaneval(data_dir: Path) -> list[dict]:
    with gzip.open(data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _mbpp(data_dir: Path) -> list[dict]:
    with (data_dir / "mbpp" / "mbpp.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _humaneval_program(row: dict, completion: str) -> CodeTests:
    return CodeTests(row["prompt"] + completion, row["test"], row["entry_point"], prompt=row["prompt"])


def _mbpp_program(row: dict, code: str) -> CodeTests:
    return CodeTests(code, row["test_list"], setup=row["test_setup_code"])


def _mbpp_stub(row: dict) -> str:
    """A wrong solution: the tested function, defined with the right name, returning None."""
    defined = {n.name for n in ast.walk(ast.parse(row["code"])) if isinstance(n, ast.FunctionDef)}
    called = [
        n.func.id
        for n in ast.walk(ast.parse(row["test_list"][0]))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in defined
    ]
    return f"def {called[0]}(*args, **kwargs):\n    return None\n"


def _pass_rate(programs: list[CodeTests]) -> tuple[float, list[int]]:
    results = run_many(programs, Limits(timeout_s=20), max_workers=2)
    failed = [i for i, r in enumerate(results) if not r.passed]
    return 1 - len(failed) / len(results), failed


@pytest.mark.realdata
def test_run_tests_humaneval_and_mbpp_styles(data_dir):
    he = _humaneval(data_dir)[0]
    assert run_tests(he["prompt"] + he["canonical_solution"], he["test"], he["entry_point"]).passed
    wrong = run_tests(he["prompt"] + "    return not True\n", he["test"], he["entry_point"])
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr
    mb = _mbpp(data_dir)[1]
    assert run_tests(mb["code"], mb["test_list"], setup=mb["test_setup_code"]).passed
    assert run_tests(_mbpp_stub(mb), mb["test_list"]).status == "failed"


@pytest.mark.realdata
def test_canonical_and_wrong_solutions_sample(data_dir):
    """A spread sample (every 20th task) so the default run stays quick; the full sets are slow."""
    he, mb = _humaneval(data_dir)[::20], _mbpp(data_dir)[::20]
    good = [_humaneval_program(r, r["canonical_solution"]) for r in he]
    good += [_mbpp_program(r, r["code"]) for r in mb]
    bad = [_humaneval_program(r, "    return None\n") for r in he]
    bad += [_mbpp_program(r, _mbpp_stub(r)) for r in mb]
    results = run_many(good + bad, Limits(timeout_s=20), max_workers=2)
    assert [r.status for r in results[: len(good)]] == ["passed"] * len(good)
    assert all(r.status == "failed" for r in results[len(good) :])


@pytest.mark.slow
@pytest.mark.realdata
def test_all_canonical_humaneval_solutions_pass(data_dir):
    rows = _humaneval(data_dir)
    assert len(rows) == 164
    rate, failed = _pass_rate([_humaneval_program(r, r["canonical_solution"]) for r in rows])
    assert rate == 1.0, [rows[i]["task_id"] for i in failed]


@pytest.mark.slow
@pytest.mark.realdata
def test_all_canonical_mbpp_solutions_pass(data_dir):
    rows = _mbpp(data_dir)
    assert len(rows) == 974
    rate, failed = _pass_rate([_mbpp_program(r, r["code"]) for r in rows])
    assert rate == 1.0, [rows[i]["task_id"] for i in failed]
