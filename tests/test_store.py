"""Results store: indexing result files, report queries, claims (exclusive, stale, dead owners),
failure retry rules, rebuild from files."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixlab import atomic
from mixlab.errors import DataError
from mixlab.runs import store as St


def _unit_dir(root: Path, run: str, step: int, base: str | None = "base", same_as: str | None = None) -> Path:
    d = root / run / f"step-{step}"
    unit = {"unit": f"{run}/step-{step}", "run": run, "step": step, "model": f"/models/{run}/{step}",
            "base_model": base, "same_as": same_as}
    atomic.write_json(d / St.UNIT_FILE, unit)
    return d


def _result(d: Path, task: str, metrics: dict, stderr: dict, n: int = 4, version: int = 1, h: str = "abcdef0123") -> Path:
    """A result.json in the runner's format (as ``eval.runner._run_one`` writes it) plus its items."""
    t = d / "tasks" / task
    atomic.write_jsonl(t / "items.jsonl", [{"id": f"i{k}", **{m: float(k % 2) for m in metrics}} for k in range(n)])
    res = {"key": f"k-{task}", "status": "done", "task": {"name": task, "version": version, "hash": h},
           "limit": None, "metrics": {**metrics, "n": n}, "stderr": stderr, "n": n, "items": "items.jsonl",
           "seconds": 0.5}
    atomic.write_json(t / "result.json", res)
    return t / "result.json"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "evals"
    base = _unit_dir(root, "base", 0)
    _result(base, "arc", {"acc": 0.5, "acc_norm": 0.25}, {"acc": 0.1, "acc_norm": 0.2})
    _result(base, "wiki", {"bpb": 1.5, "bpb_corpus": 1.4}, {"bpb": 0.05})
    _unit_dir(root, "ft", 0, same_as="base/step-0")
    ft = _unit_dir(root, "ft", 100)
    _result(ft, "arc", {"acc": 0.75, "acc_norm": 0.5}, {"acc": 0.1, "acc_norm": 0.2})
    atomic.write_json(ft / "tasks" / "wiki" / "error.json", {"error": "ValueError: boom", "key": "x"})
    return root


def _index(store: St.Store, root: Path) -> None:
    for f in sorted(root.rglob(St.UNIT_FILE)):
        store.index_unit_dir(f.parent)


def test_index_and_report_queries(tree, tmp_path):
    with St.Store(tmp_path / "s.sqlite") as s:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        _index(s, tree)
        rows = s.results(run="ft")
        assert [(r.step, r.task, r.metric, r.value) for r in rows] == [
            (0, "arc", "acc", 0.5), (0, "arc", "acc_norm", 0.25), (0, "wiki", "bpb", 1.5),
            (0, "wiki", "bpb_corpus", 1.4), (100, "arc", "acc", 0.75), (100, "arc", "acc_norm", 0.5)]
        wiki = s.results(task="wiki", metric="bpb", run=["base"])[0]
        assert (wiki.higher_is_better, wiki.stderr, wiki.n, wiki.base_model) == (False, 0.05, 4, "base")
        assert wiki.task_version == "v1/abcdef01"
        assert s.results(task="wiki", metric="bpb_corpus")[0].stderr is None
        assert len(s.results(step=100)) == 2 and s.results(metric=["acc"], step=0, run="ft")[0].value == 0.5
        assert St.load_items(wiki.items, "bpb") == {"i0": 0.0, "i1": 1.0, "i2": 0.0, "i3": 1.0}
        failed = [t for t in s.task_rows() if t["status"] == "failed"]
        assert [(t["unit"], t["task"], t["error"]) for t in failed] == [("ft/step-100", "wiki", "ValueError: boom")]
        # re-indexing is idempotent: no duplicate rows
        _index(s, tree)
        assert len(s.results()) == 10 and len(s.task_rows()) == 4
    assert St.task_version({"version": 2, "hash": "0123456789"}, 50) == "v2/01234567/limit=50"


def test_rebuild_replaces_a_broken_database(tree, tmp_path):
    db = tmp_path / "s.sqlite"
    with St.Store(db) as s:
        _index(s, tree)
        want, want_tasks = s.results(), s.task_rows()
    db.write_bytes(b"garbage, not a database" * 100)
    with St.rebuild(db, [tree]) as s:
        assert s.results() == want
        assert [t["task"] for t in s.task_rows()] == [t["task"] for t in want_tasks]


def test_unreadable_result_file_is_moved_aside_and_requeued(tree, tmp_path):
    bad = tree / "base" / "step-0" / "tasks" / "arc" / "result.json"
    bad.write_text("{not json")
    with St.Store(tmp_path / "s.sqlite") as s:
        s.index_unit_dir(bad.parents[2])
        assert [t["task"] for t in s.task_rows()] == ["wiki"]  # arc is queued again, never used
        [event] = St.requeued(s)
        assert (event["unit"], event["task"], event["owner"]) == ("base/step-0", "arc", "rebuild")
        assert event["detail"].startswith("result.json does not parse (Expecting property name")
    assert not bad.exists() and bad.with_name("result.json.corrupt").read_text() == "{not json"


def test_unreadable_database_says_how_to_rebuild_it(tmp_path):
    db = tmp_path / "s.sqlite"
    db.write_bytes(b"garbage, not a database" * 100)
    assert St.problem(db) == "file is not a database"
    with pytest.raises(DataError, match=r"s.sqlite: not a readable results database .*`mixlab status CONFIG --rebuild`"):
        St.Store(db)


TASKS = [("arc", "h1"), ("wiki", "h2")]


def test_claims_are_exclusive_and_results_are_never_reclaimed(tmp_path):
    with St.Store(tmp_path / "s.sqlite") as a, St.Store(tmp_path / "s.sqlite") as b:
        assert a.try_claim("u", TASKS, "A", 60, None) == "arc"
        assert b.try_claim("u", TASKS, "B", 60, None) == "wiki"  # arc is A's
        assert b.try_claim("u", TASKS, "B", 60, None) is None
        a.add_result("u", {"task": {"name": "arc", "hash": "h1"}, "metrics": {"acc": 1.0}, "n": 1},
                     tmp_path / "r.json", "A")
        assert a.live_claims(60)[0].owner == "B"  # A's claim went with its result
        assert a.try_claim("u", TASKS, "A", 60, None) is None  # arc is done, wiki is B's
        # a changed task definition (hash) makes a done task claimable again
        assert a.try_claim("u", [("arc", "h1-new")], "A", 60, None) == "arc"
        assert [e["event"] for e in a.events()] == ["claimed", "claimed", "computed", "claimed"]


def test_claims_of_dead_or_silent_workers_are_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with St.Store(tmp_path / "s.sqlite") as s:
        now = time.time()
        with s.transaction() as db:  # a SIGKILLed worker on this host, a silent one on another host
            db.execute("INSERT INTO claims VALUES ('u','arc','dead',?,?,?,?)", (dead.pid, socket.gethostname(), now, now))
            db.execute("INSERT INTO claims VALUES ('u','wiki','far',1,'other-host',?,?)", (now, now))
        assert [c.task for c in s.live_claims(60)] == ["wiki"]
        assert s.try_claim("u", TASKS, "me", 60, None) == "arc"
        assert s.try_claim("u", TASKS, "me", 60, None) is None  # other host, fresh heartbeat: live
        with s.transaction() as db:
            db.execute("UPDATE claims SET heartbeat = ? WHERE owner = 'far'", (now - 61,))
        assert s.try_claim("u", TASKS, "me", 60, None) == "wiki"
        ev = [(e["task"], e["event"], e["detail"]) for e in s.events()]
        assert ev == [("arc", "reclaimed", "dead"), ("wiki", "reclaimed", "far")]
        s.heartbeat("me")
        assert {c.owner for c in s.live_claims(60)} == {"me"}
        s.release("me")
        assert s.live_claims(60) == []


def test_failures_are_retried_only_by_a_later_sweep(tmp_path):
    with St.Store(tmp_path / "s.sqlite") as s:
        started = time.time()
        assert s.try_claim("u", TASKS[:1], "A", 60, started) == "arc"
        s.add_failure("u", "arc", "RuntimeError: out of memory", owner="A")
        assert s.try_claim("u", TASKS[:1], "B", 60, started) is None  # a sweep running alongside: no
        assert s.try_claim("u", TASKS[:1], "B", 60, None) is None  # retry_failed off: never
        assert s.try_claim("u", TASKS[:1], "C", 60, time.time() + 1e-3) == "arc"  # a later sweep: yes


def test_nan_values_are_stored_as_missing(tmp_path):
    with St.Store(tmp_path / "s.sqlite") as s:
        s.add_unit(St.Unit("u", "r", 1, "/m", str(tmp_path)))
        s.add_result("u", {"task": {"name": "t", "hash": "h"}, "metrics": {"acc": math.nan, "n": 0},
                           "stderr": {"acc": math.nan}, "n": 0}, tmp_path / "r.json")
        row = s.results()[0]
        assert math.isnan(row.value) and row.stderr is None and row.n == 0


def test_opening_a_store_another_process_holds_waits_instead_of_calling_it_corrupt(tmp_path):
    """Two sweeps opening a new store at once: one switches it to WAL while the other is locked out
    (SQLite's busy handler does not cover that switch). The second waits; only a lock held past the
    timeout is an error, and it says the database is locked, not unreadable."""
    import sqlite3
    import threading

    path = tmp_path / "store.sqlite"
    holder = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE t (x)")
    with pytest.raises(DataError, match="stayed locked"):
        St.Store(path, timeout=0.3)
    threading.Timer(0.5, holder.rollback).start()
    with St.Store(path, timeout=30) as store:  # waits for the holder, then opens normally
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder.close()
