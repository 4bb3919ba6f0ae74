"""Which verifier checks a record, against what: the shared core of GRPO rewards and distillation filters."""

from __future__ import annotations

import pytest

from mixlab.data import toyworld
from mixlab.data.records import Record
from mixlab.errors import DataError, MixlabError
from mixlab.train import rewards


def rec(dataset, answer, kind, **kw) -> tuple[str, Record]:
    meta = kw.pop("metadata", {})
    return f"{dataset}:1", Record(id=f"{dataset}/1", dataset=dataset, domain="d", question="q?",
                                  reference_answer=answer, answer_type=kind, metadata=meta, **kw)


def test_auto_picks_the_verifier_evaluation_uses_and_scores_replies():
    found = [rec("gsm8k", "72", "numeric"), rec("math", "\\frac{1}{2}", "text"),
             rec("triviaqa", "Paris", "text", metadata={"aliases": ["Paris", "City of Light"]}),
             rec("arc", "blue", "choice", choices=["red", "blue"], label=1)]
    checks = rewards.plan_checks(found)
    assert [c.verifier for c in checks] == ["numeric", "math", "exact", "choice"]
    assert checks[2].reference == ["Paris", "City of Light"]
    replies = ["so she has #### 72", "the answer is $\\boxed{0.5}$", "the city of light", "The answer is (B)"]
    assert rewards.score_many(replies, checks) == [1.0, 1.0, 1.0, 1.0]
    assert rewards.score_many(["71", "1/3", "London", "(A)"], checks) == [0.0, 0.0, 0.0, 0.0]
    # the stop sequence cuts the reply before it is checked: only the first line counts
    assert rewards.score("7\nQ: What is 72?", checks[0], stop=["\n"]) == 0.0
    assert rewards.score("72\nQ: What is 7?", checks[0], stop=["\n"]) == 1.0


def test_code_records_run_their_tests_in_the_sandbox():
    r = toyworld.records("code", 1, 0, "train")[0]
    (check,) = rewards.plan_checks([("toyworld", r)])
    assert check.verifier == "code" and check.reference["tests"] == r.metadata["test_list"]  # MBPP-style asserts
    assert rewards.score(r.reference_answer, check) == 1.0
    assert rewards.score("def f(x):\n    return None\n", check) == 0.0
    humaneval = Record(id="humaneval/1", dataset="humaneval", domain="code", question="def add(a, b):\n",
                       reference_answer="    return a + b\n", answer_type="code",
                       metadata={"test": "def check(candidate):\n    assert candidate(1, 2) == 3\n", "entry_point": "add"})
    (check,) = rewards.plan_checks([("he", humaneval)])
    assert check.reference["entry_point"] == "add" and check.reference["prompt"] == "def add(a, b):\n"
    assert rewards.score("    return a + b\n", check) == 1.0 and rewards.score("    return a - b\n", check) == 0.0


def test_unverifiable_records_and_mismatched_verifiers_are_errors():
    with pytest.raises(DataError, match="no verifiable answer"):
        rewards.plan_checks([rec("open", "", "text")])
    with pytest.raises(DataError, match="no verifiable answer"):
        rewards.plan_checks([rec("c", "def f(): pass", "code")])
    with pytest.raises(DataError, match=r"verifier: 1 record\(s\) have an answer type the verifier cannot check"):
        rewards.plan_checks([rec("gsm8k", "72", "numeric")], "choice")
    with pytest.raises(MixlabError, match="unknown verifier 'nope'"):
        rewards.plan_checks([rec("gsm8k", "72", "numeric")], {"gsm8k": "nope"})
    # per-dataset choice, auto for the rest
    checks = rewards.plan_checks([rec("gsm8k", "72", "numeric"), rec("squad", "x", "text")], {"squad": "f1"})
    assert [c.verifier for c in checks] == ["numeric", "f1"]
