"""The embedded toyworld: deterministic, leakage-free, answers that verify, valid records, sources."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from mixlab.data import toyworld as tw
from mixlab.data.records import record_from_dict
from mixlab.data.sources import load_records
from mixlab.errors import ConfigError

N = 200


def _dicts(recs):
    return [r.to_dict() for r in recs]


@pytest.mark.parametrize("domain", tw.DOMAINS)
def test_same_seed_same_output_and_other_seed_differs(domain):
    assert tw.documents(domain, 20, seed=3) == tw.documents(domain, 20, seed=3)
    assert _dicts(tw.records(domain, 50, seed=3, split="test")) == _dicts(tw.records(domain, 50, seed=3, split="test"))
    assert _dicts(tw.mc_items(domain, 30, seed=3)) == _dicts(tw.mc_items(domain, 30, seed=3))
    assert tw.documents(domain, 20, seed=3) != tw.documents(domain, 20, seed=4)
    assert [r.question for r in tw.records(domain, 50, seed=3)] != [r.question for r in tw.records(domain, 50, seed=4)]
    # a larger request extends a smaller one rather than reshuffling it
    assert tw.documents(domain, 30, seed=3)[:20] == tw.documents(domain, 20, seed=3)
    assert _dicts(tw.records(domain, 80, seed=3))[:50] == _dicts(tw.records(domain, 50, seed=3))


def test_world_is_consistent_and_seeded():
    w = tw.build_world(0)
    assert len(w.people) == tw.N_PEOPLE and len({p.name for p in w.people}) == tw.N_PEOPLE
    assert {p.last: p.town for p in w.people} == {p.last: p.town for p in reversed(w.people)}  # families share a town
    assert all(w.people[p.friend] is not p for p in w.people)
    assert [p.name for p in tw.build_world(1).people] != [p.name for p in w.people]


@pytest.mark.parametrize("domain", tw.DOMAINS)
def test_train_test_heldout_are_disjoint(domain):
    train = tw.records(domain, N, split="train")
    test = tw.records(domain, N // 4, split="test")
    mc = tw.mc_items(domain, N // 4)
    assert not {r.question for r in train} & {r.question for r in test}
    assert not {r.metadata["key"] for r in train} & {r.metadata["key"] for r in test}
    assert all(tw.is_eval_key(domain, r.metadata["key"]) for r in test + mc)
    assert not any(tw.is_eval_key(domain, r.metadata["key"]) for r in train)
    train_docs = tw.documents(domain, N, split="train")
    heldout = tw.documents(domain, N // 2, split="heldout")
    assert not set(train_docs) & set(heldout)
    # no evaluation question (QA or MC phrasing) appears anywhere in the training text
    corpus = "\n".join(train_docs)
    leaked = [r.question for r in test + mc if tw.format_prompt(r.question) in corpus]
    assert leaked == []
    # and every QA line in the training text asks a train-side question
    for q in re.findall(r"Q: (.*?)\nA: ", corpus):
        assert q not in {r.question for r in test}


@pytest.mark.parametrize("domain", tw.DOMAINS)
def test_counts_schema_and_ids(domain):
    for split in tw.RECORD_SPLITS:
        recs = tw.records(domain, 60, seed=1, split=split)
        assert len(recs) == 60
        assert len({r.id for r in recs}) == 60
        for r in recs:
            assert record_from_dict(json.loads(json.dumps(r.to_dict()))) == r
            assert r.dataset == f"toyworld_{domain}" and r.domain == domain
            assert r.metadata["split"] == split and r.metadata["tier"] in (1, 2, 3)
    docs = tw.documents(domain, 25, split="heldout")
    assert len(docs) == 25 and all(15 < len(d) < 1500 for d in docs)
    assert {r.metadata["tier"] for r in tw.records(domain, 300)} == {1, 2, 3}


@pytest.mark.parametrize("domain", tw.DOMAINS)
def test_mc_items_are_well_formed(domain):
    items = tw.mc_items(domain, 60)
    assert len(items) == 60
    for r in items:
        assert r.answer_type == "choice" and len(r.choices) == tw.N_CHOICES == len(set(r.choices))
        assert r.choices[r.label] == r.reference_answer
        assert record_from_dict(r.to_dict()) == r
    labels = [r.label for r in items]
    assert len(set(labels)) == tw.N_CHOICES  # the gold position is shuffled, not always first


def test_mc_difficulty_is_graded_by_tier():
    """Tier 1 offers two wrong choices of another type (words for a sum), tier 3 only near misses."""
    items = tw.mc_items("arithmetic", 120)
    for r in items:
        words = sum(not c.isdigit() for c in r.choices)
        assert words == tw.OFF_TYPE_DISTRACTORS[r.metadata["tier"]]
    assert {r.metadata["tier"] for r in items} == {1, 2, 3}


def test_arithmetic_answers_equal_the_expression():
    recs = tw.records("arithmetic", 400) + tw.records("arithmetic", 200, split="test")
    for r in recs:
        expected = eval(r.metadata["expression"], {"__builtins__": {}})  # only digits and + - * here
        assert r.reference_answer == str(expected), r.question
        if r.solution:
            assert re.findall(r"-?\d+", r.solution)[-1] == r.reference_answer
    assert any(r.solution for r in recs) and any(r.solution is None for r in recs)
    assert {r.answer_type for r in recs} == {"numeric"}


def test_people_answers_match_the_world():
    world = tw.build_world(0)
    by_name = {p.name: p for p in world.people}
    for r in tw.records("people", 300) + tw.records("people", 60, split="test"):
        p = by_name[r.metadata["person"]]
        friend = world.people[p.friend]
        expected = {"town": p.town, "job": p.job, "pet": p.pet, "age": str(p.age), "friend": friend.name,
                    "friend_town": friend.town}[r.metadata["attribute"]]
        assert r.reference_answer == expected
    bio = tw.biography(world.people[0], world, random.Random(0))
    p = world.people[0]
    assert p.town in bio and p.job in bio and str(p.age) in bio and world.people[p.friend].name in bio


def test_prose_answers_are_consistent():
    for r in tw.records("prose", 300) + tw.mc_items("prose", 60):
        q, a = r.question, r.reference_answer
        if q.startswith("What does a ") and q.endswith(" eat?"):
            assert tw.ANIMALS[q.split()[3]][0] == a
        elif "What color is the" in q:
            animal, name = re.search(r"What color is the (\w+) of (\w+)\?", q).groups()
            assert f"{name} has {'an' if a[0] in 'aeiou' else 'a'} {a} {animal}." in q


def test_code_reference_solutions_pass_their_tests():
    """Run every reference solution and its asserts in a fresh Python process."""
    recs = tw.records("code", 150) + tw.records("code", 60, split="test")
    program = []
    for r in recs:
        assert r.metadata["entry_point"] in r.reference_answer and len(r.metadata["test_list"]) == 4
        # the expected values differ, so no constant function passes
        assert len({t.rsplit("==", 1)[1] for t in r.metadata["test_list"]}) > 1, r.metadata["test_list"]
        program += [r.reference_answer, *r.metadata["test_list"], ""]
    for r in tw.mc_items("code", 30):  # the gold choice of a code MC item is the function, renamed f
        program += [r.choices[r.label], f"{r.metadata['entry_point']} = f", *r.metadata["test_list"], ""]
    program.append("print('ok')")
    done = subprocess.run([sys.executable, "-c", "\n".join(program)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    # and the tests can fail: a wrong body is caught
    broken = recs[0].reference_answer.rsplit("\n", 1)[0] + "\n    return None"
    bad = subprocess.run([sys.executable, "-c", "\n".join([broken, *recs[0].metadata["test_list"]])],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def test_qa_lines_use_the_prompt_template():
    r = tw.records("arithmetic", 1)[0]
    assert tw.format_example(r) == f"Q: {r.question}\nA: {r.completion}"
    assert "\nA: " in tw.documents("arithmetic", 5)[0] or "=" in tw.documents("arithmetic", 5)[0]


def test_bad_requests_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown toyworld domain 'chess'"):
        tw.records("chess", 5)
    with pytest.raises(ConfigError, match="split 'valid'"):
        tw.documents("prose", 5, split="valid")
    with pytest.raises(ConfigError, match="only about"):
        tw.records("people", 200, split="test")


@pytest.mark.parametrize("domain", tw.DOMAINS)
def test_registered_sources_load(domain):
    from mixlab.data.sources.toyworld_sources import SIZES

    recs = load_records(f"toyworld_{domain}")
    n_train, n_test = SIZES[domain]
    splits = [r.metadata["split"] for r in recs]
    assert splits.count("train") == n_train and splits.count("test") == n_test
    assert len({r.id for r in recs}) == len(recs)
    assert not {r.question for r in recs if r.metadata["split"] == "train"} & {
        r.question for r in recs if r.metadata["split"] == "test"}
    assert _dicts(recs) == _dicts(load_records(f"toyworld_{domain}"))
