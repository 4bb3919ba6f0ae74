"""The results store: an SQLite database (WAL mode) indexing the per-task result files of a sweep.

The files are the truth and the database is an index over them: every evaluated checkpoint has a
*unit* directory holding ``unit.json`` (which run and step it is, which model, which base model)
and the runner's ``tasks/<task>/result.json`` / ``error.json`` / ``items.jsonl``. :func:`rebuild`
recreates the database from those files alone, so a lost or corrupted database costs nothing.

Why SQLite: one file, in the standard library, transactions that make claiming work atomic across
processes (``BEGIN IMMEDIATE``), and WAL mode so readers (``mixlab status``) never block the workers
writing results. WAL needs a local filesystem (not NFS): multi-node backends must keep the database
on a node-local or lock-correct filesystem.

Tables:

- ``units``: one row per evaluated checkpoint; ``same_as`` makes a run's step 0 an alias of its
  base model's unit (the base model is evaluated once, whatever number of runs compare against it).
- ``tasks``: one row per (unit, task) with status ``done`` / ``failed`` / ``skipped``, the result key,
  task version and hash, the error, the result file.
- ``results``: one row per (unit, task, metric): value, n, stderr, direction.
- ``claims``: who is computing a (unit, task) right now: owner, pid, host, heartbeat time.
- ``events``: an append-only audit log (claimed, reclaimed, computed, reused, failed, requeued) that
  shows every computation a sweep made; not rebuilt from files.

A result file that does not parse or lacks what a result must hold (a torn disk, a bad copy, an edit)
is never used: whoever meets it (a rebuild, a sweep's start-up) moves it aside to
``result.json.corrupt``, logs a ``requeued`` event saying why, and the task is computed again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixlab.errors import DataError
from mixlab.results import LOWER_IS_BETTER, ItemScores, Result, higher_is_better, load_items, rows_of

__all__ = ["LOWER_IS_BETTER", "Claim", "ResultRow", "Store", "Unit", "higher_is_better", "load_items", "read_unit",
           "rebuild", "problem", "requeued", "task_version"]

SCHEMA_VERSION = 1
UNIT_FILE = "unit.json"
CORRUPT_SUFFIX = ".corrupt"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    unit TEXT PRIMARY KEY, run TEXT NOT NULL, step INTEGER NOT NULL, model TEXT NOT NULL,
    base_model TEXT, same_as TEXT, dir TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS units_run ON units (run, step);
CREATE TABLE IF NOT EXISTS tasks (
    unit TEXT NOT NULL, task TEXT NOT NULL, status TEXT NOT NULL, key TEXT, task_hash TEXT,
    task_version TEXT, lim INTEGER, error TEXT, path TEXT, seconds REAL, updated REAL NOT NULL,
    PRIMARY KEY (unit, task));
CREATE TABLE IF NOT EXISTS results (
    unit TEXT NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL, value REAL, n INTEGER NOT NULL,
    stderr REAL, higher_is_better INTEGER NOT NULL, items TEXT, chance REAL,
    PRIMARY KEY (unit, task, metric));
CREATE INDEX IF NOT EXISTS results_task ON results (task, metric);
CREATE TABLE IF NOT EXISTS claims (
    unit TEXT NOT NULL, task TEXT NOT NULL, owner TEXT NOT NULL, pid INTEGER NOT NULL,
    host TEXT NOT NULL, heartbeat REAL NOT NULL, started REAL NOT NULL, PRIMARY KEY (unit, task));
CREATE INDEX IF NOT EXISTS claims_owner ON claims (owner);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, owner TEXT NOT NULL, unit TEXT NOT NULL,
    task TEXT NOT NULL, event TEXT NOT NULL, detail TEXT);
"""


@dataclass(frozen=True, slots=True)
class Unit:
    """One evaluated model: checkpoint ``step`` of ``run`` (step 0 of a base model is the model itself)."""

    unit: str
    run: str
    step: int
    model: str
    dir: str
    base_model: str | None = None
    same_as: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "run": self.run, "step": self.step, "model": self.model,
                "base_model": self.base_model, "same_as": self.same_as}


ResultRow = Result  # the store's rows are the shared Result (items: the per-item scores, lazily read)


@dataclass(frozen=True, slots=True)
class Claim:
    unit: str
    task: str
    owner: str
    pid: int
    host: str
    heartbeat: float


def task_version(describe: dict[str, Any], limit: int | None) -> str:
    """The version string results are compared by: the task file's ``version``, its definition hash
    and the item limit (results on different item sets are not comparable)."""
    v = f"v{describe.get('version', 1)}/{str(describe.get('hash', ''))[:8]}"
    return v if limit is None else f"{v}/limit={limit}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


class Store:
    """A connection to the results database (one per thread: sqlite3 connections are not shared)."""

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit mode: transactions are explicit (``transaction()``), so claims are atomic
        self.db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._setup(timeout)
                return
            except sqlite3.OperationalError as e:
                # two sweeps opening a new store at once: switching to WAL takes a lock that SQLite's
                # busy handler does not wait for, so "locked" here means "try again", not "corrupt"
                if _is_busy(e) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                self.db.close()
                if _is_busy(e):
                    raise DataError(f"the results database stayed locked for {timeout:g} s ({e}); another "
                                    "process holds it: wait for it or stop it", self.path) from None
                raise self._unreadable(e) from None
            except sqlite3.DatabaseError as e:
                self.db.close()
                raise self._unreadable(e) from None

    def _setup(self, timeout: float) -> None:
        self.db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")  # in WAL mode: durable against process kills
        with self.transaction():
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                self.db.execute(stmt)
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
            if "chance" not in cols:  # a database written before results recorded chance: its rows read None
                self.db.execute("ALTER TABLE results ADD COLUMN chance REAL")
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def _unreadable(self, e: Exception) -> DataError:
        return DataError(f"not a readable results database ({e}); it is only an index of the result files: "
                         "rebuild it with `mixlab status CONFIG --rebuild`", self.path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database's write lock up front (no upgrade deadlocks)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------ writing

    def add_unit(self, u: Unit) -> None:
        with self.transaction() as db:
            _put_unit(db, u)

    def add_result(self, unit: str, result: dict[str, Any], path: str | Path, event_owner: str | None = None,
                   event: str = "computed") -> None:
        """Index one ``result.json`` (its content and where it lies); releases any claim on it."""
        task = result["task"]["name"]
        with self.transaction() as db:
            _put_result(db, unit, result, Path(path))
            db.execute("DELETE FROM claims WHERE unit = ? AND task = ?", (unit, task))
            if event_owner is not None:
                _log(db, event_owner, unit, task, event, None)

    def add_failure(self, unit: str, task: str, error: str, status: str = "failed", path: str | None = None,
                    owner: str | None = None) -> None:
        """Record a task that failed (with its error) or was skipped (with why); releases its claim."""
        with self.transaction() as db:
            db.execute("DELETE FROM results WHERE unit = ? AND task = ?", (unit, task))
            db.execute("INSERT OR REPLACE INTO tasks (unit, task, status, error, path, updated) VALUES (?,?,?,?,?,?)",
                       (unit, task, status, error, path, time.time()))
            db.execute("DELETE FROM claims WHERE unit = ? AND task = ?", (unit, task))
            if owner is not None:
                _log(db, owner, unit, task, status, error)

    def index_unit_dir(self, unit_dir: str | Path, only_new: bool = False) -> Unit | None:
        """Index a unit directory's ``unit.json`` and every task result or error in it
        (``only_new``: skip tasks the store already has as done). No events are logged: this is
        how :func:`rebuild` recreates the index from files; a sweep's start-up uses
        :meth:`sync_unit_dir`, which records what it takes over in the audit log."""
        unit_dir = Path(unit_dir)
        u = read_unit(unit_dir)
        if u is None:
            return None
        found = _scan_tasks(unit_dir, self._done_tasks(u.unit) if only_new else set())
        with self.transaction() as db:
            _put_unit(db, u)
            for task_dir, kind, content in found:
                if kind == "corrupt":
                    _requeue(db, "rebuild", u.unit, task_dir, content["why"])
                    continue
                if kind == "result":
                    _put_result(db, u.unit, content, task_dir / "result.json")
                else:
                    _put_error(db, u.unit, task_dir, content)
        return u

    def sync_unit_dir(self, unit_dir: str | Path, owner: str, claim_timeout_s: float) -> list[str]:
        """A sweep worker's start-up sync of one unit directory: index its ``unit.json`` and the
        task files the store does not have as done (left by a worker killed between writing
        ``result.json`` and recording it); returns the tasks whose results it recorded.

        Each recorded result is logged as ``reused`` by ``owner``: it is the one time that result
        enters the store, so the audit log still shows every finished (unit, task) exactly once.
        A file whose task another worker holds a live claim on is left to that worker (it is
        between writing the file and recording it, and logs it itself; if it dies, whoever claims
        the task next reuses the file through the runner), and a file recorded by a concurrent
        worker after the scan is not recorded twice.
        """
        unit_dir = Path(unit_dir)
        u = read_unit(unit_dir)
        if u is None:
            return []
        found = _scan_tasks(unit_dir, self._done_tasks(u.unit))
        host, recorded = socket.gethostname(), []
        with self.transaction() as db:
            now = time.time()  # after the write lock is ours: claims are judged as they stand now
            _put_unit(db, u)
            for task_dir, kind, content in found:
                task = task_dir.name
                claim = db.execute("SELECT * FROM claims WHERE unit = ? AND task = ?", (u.unit, task)).fetchone()
                if claim is not None and claim["owner"] != owner and _live(claim, now, claim_timeout_s, host):
                    continue
                if kind == "corrupt":
                    _requeue(db, owner, u.unit, task_dir, content["why"])
                    continue
                if kind == "error":
                    _put_error(db, u.unit, task_dir, content)
                    continue
                path = task_dir / "result.json"
                row = db.execute("SELECT key, path FROM tasks WHERE unit = ? AND task = ? AND status = 'done'",
                                 (u.unit, task)).fetchone()
                if row is not None and row["key"] == content.get("key") and row["path"] == str(path):
                    continue  # recorded (and logged) by its worker after our scan
                _put_result(db, u.unit, content, path)
                _log(db, owner, u.unit, task, "reused", f"recorded at start-up from {path}")
                recorded.append(task)
        return recorded

    def _done_tasks(self, unit: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT task FROM tasks WHERE unit = ? AND status = 'done'", (unit,))}

    # ------------------------------------------------------------ claims

    def try_claim(self, unit: str, tasks: Sequence[tuple[str, str]], owner: str, timeout_s: float,
                  retry_failed_before: float | None) -> str | None:
        """Claim the first of ``tasks`` ((task, task_hash) pairs of ``unit``) that has no current
        result, no live claim, and is not a failure to keep; returns its name or None.

        A claim is live while its owner's heartbeat is younger than ``timeout_s`` and, on this host,
        its process exists: a SIGKILLed worker's claims are taken over at once on the same machine
        and after ``timeout_s`` from elsewhere. Failures recorded before ``retry_failed_before`` are
        retried (None: never), so a new sweep retries, while a concurrent one does not repeat them.
        """
        now, host, pid = time.time(), socket.gethostname(), os.getpid()
        with self.transaction() as db:
            for task, task_hash in tasks:
                row = db.execute("SELECT status, task_hash, updated FROM tasks WHERE unit = ? AND task = ?",
                                 (unit, task)).fetchone()
                if row is not None:
                    if row["status"] == "done" and row["task_hash"] == task_hash:
                        continue
                    if row["status"] != "done" and (retry_failed_before is None or row["updated"] >= retry_failed_before):
                        continue
                claim = db.execute("SELECT * FROM claims WHERE unit = ? AND task = ?", (unit, task)).fetchone()
                if claim is not None and _live(claim, now, timeout_s, host):
                    continue
                db.execute("INSERT OR REPLACE INTO claims VALUES (?,?,?,?,?,?,?)",
                           (unit, task, owner, pid, host, now, now))
                _log(db, owner, unit, task, "reclaimed" if claim is not None else "claimed",
                     claim["owner"] if claim is not None else None)
                return task
        return None

    def heartbeat(self, owner: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), owner))

    def release(self, owner: str, unit: str | None = None, task: str | None = None) -> None:
        with self.transaction() as db:
            if unit is None:
                db.execute("DELETE FROM claims WHERE owner = ?", (owner,))
            else:
                db.execute("DELETE FROM claims WHERE owner = ? AND unit = ? AND task = ?", (owner, unit, task))

    def live_claims(self, timeout_s: float) -> list[Claim]:
        now, host = time.time(), socket.gethostname()
        rows = self.db.execute("SELECT * FROM claims").fetchall()
        return [Claim(r["unit"], r["task"], r["owner"], r["pid"], r["host"], r["heartbeat"])
                for r in rows if _live(r, now, timeout_s, host)]

    # ------------------------------------------------------------ reading

    def units(self) -> list[Unit]:
        rows = self.db.execute("SELECT * FROM units ORDER BY run, step").fetchall()
        return [Unit(r["unit"], r["run"], r["step"], r["model"], r["dir"], r["base_model"], r["same_as"]) for r in rows]

    def task_rows(self) -> list[dict[str, Any]]:
        """Every (unit, task) status row: status, task hash and version, error, result file."""
        return [dict(r) for r in self.db.execute("SELECT * FROM tasks ORDER BY unit, task")]

    def results(self, run: str | Iterable[str] | None = None, step: int | None = None,
                task: str | Iterable[str] | None = None, metric: str | Iterable[str] | None = None) -> list[Result]:
        """Results of finished tasks, filtered by run(s), step, task(s), metric(s); a run's step 0 that
        aliases its base model (``same_as``) carries the base model's numbers."""
        where, args = [], []
        for col, val in (("u.run", run), ("r.task", task), ("r.metric", metric)):
            if val is None:
                continue
            vals = [val] if isinstance(val, str) else list(val)
            where.append(f"{col} IN ({','.join('?' * len(vals))})")
            args += vals
        if step is not None:
            where.append("u.step = ?")
            args.append(step)
        sql = ("SELECT u.run, u.step, r.task, r.metric, r.value, r.n, r.stderr, r.higher_is_better, "
               "t.task_version, u.base_model, r.items, r.chance FROM units u "
               "JOIN tasks t ON t.unit = COALESCE(u.same_as, u.unit) AND t.status = 'done' "
               "JOIN results r ON r.unit = t.unit AND r.task = t.task"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY u.run, u.step, r.task, r.metric")
        return [Result(r[0], r[1], r[2], r[3], math.nan if r[4] is None else r[4], r[5], r[6], bool(r[7]),
                       r[8] or "", r[9], ItemScores(r[10], r[3]) if r[10] else None, r[11])
                for r in self.db.execute(sql, args)]

    def events(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM events ORDER BY id")]


def read_unit(unit_dir: str | Path) -> Unit | None:
    p = Path(unit_dir) / UNIT_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        return Unit(d["unit"], d["run"], int(d["step"]), d["model"], str(Path(unit_dir)), d.get("base_model"),
                    d.get("same_as"))
    except (ValueError, KeyError) as e:
        raise DataError(f"not a unit file ({e}); delete it and re-run the sweep to rewrite it", p) from None


def problem(store_path: str | Path) -> str | None:
    """Why the database at ``store_path`` cannot be trusted (not a database, a failed integrity
    check), or None if it is sound or absent."""
    path = Path(store_path)
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in db.execute("PRAGMA quick_check")]
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    return None if rows == ["ok"] else "; ".join(rows[:3])


def requeued(store: Store) -> list[dict[str, Any]]:
    """The ``requeued`` events: result files found corrupt, moved aside, to be computed again."""
    return [e for e in store.events() if e["event"] == "requeued"]


def rebuild(store_path: str | Path, roots: Iterable[str | Path]) -> Store:
    """Recreate the database at ``store_path`` from the unit directories under ``roots`` (any
    folders holding ``unit.json`` files, at any depth). The old database is replaced atomically,
    whatever state it is in; corrupt result files are moved aside and logged (:func:`requeued`)."""
    store_path = Path(store_path)
    tmp = store_path.with_name(f".{store_path.name}.rebuild-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    with Store(tmp) as s:
        for root in roots:
            for unit_file in sorted(Path(root).rglob(UNIT_FILE)):
                s.index_unit_dir(unit_file.parent)
        s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, store_path)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    return Store(store_path)


# ---------------------------------------------------------------- helpers


def _live(claim: sqlite3.Row, now: float, timeout_s: float, host: str) -> bool:
    if now - claim["heartbeat"] > timeout_s:
        return False
    return claim["host"] != host or pid_alive(claim["pid"])


def _put_unit(db: sqlite3.Connection, u: Unit) -> None:
    db.execute("INSERT OR REPLACE INTO units VALUES (?,?,?,?,?,?,?)",
               (u.unit, u.run, u.step, u.model, u.base_model, u.same_as, u.dir))


def _has_done(db: sqlite3.Connection, unit: str, task: str) -> bool:
    return db.execute("SELECT 1 FROM tasks WHERE unit = ? AND task = ? AND status = 'done'", (unit, task)).fetchone() is not None


def _put_result(db: sqlite3.Connection, unit: str, result: dict[str, Any], path: Path) -> None:
    desc, task = result["task"], result["task"]["name"]
    items = str(path.parent / result["items"]) if result.get("items") else None
    db.execute("DELETE FROM results WHERE unit = ? AND task = ?", (unit, task))
    db.execute("INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
               (unit, task, "done", result.get("key"), desc.get("hash"), task_version(desc, result.get("limit")),
                result.get("limit"), None, str(path), result.get("seconds"), _mtime(path)))
    chance = result.get("chance") or {}
    for metric, value, n, stderr, higher in rows_of(result):
        db.execute("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?)",
                   (unit, task, metric, value, n, stderr, int(higher), items, chance.get(metric)))


def _put_error(db: sqlite3.Connection, unit: str, task_dir: Path, content: dict[str, Any]) -> None:
    """Record a task's ``error.json`` as failed, unless the task has a result (that wins)."""
    if not _has_done(db, unit, task_dir.name):
        path = task_dir / "error.json"
        db.execute("INSERT OR REPLACE INTO tasks (unit, task, status, error, path, updated) VALUES (?,?,?,?,?,?)",
                   (unit, task_dir.name, "failed", content.get("error"), str(path), _mtime(path)))


def _log(db: sqlite3.Connection, owner: str, unit: str, task: str, event: str, detail: str | None) -> None:
    db.execute("INSERT INTO events (t, owner, unit, task, event, detail) VALUES (?,?,?,?,?,?)",
               (time.time(), owner, unit, task, event, detail))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _scan_tasks(unit_dir: Path, skip: set[str] = frozenset()) -> list[tuple[Path, str, dict[str, Any]]]:
    """(task dir, 'result' | 'error' | 'corrupt', content) for every task file of a unit not in
    ``skip``; a corrupt file's content is ``{"why": ...}``."""
    out: list[tuple[Path, str, dict[str, Any]]] = []
    tasks = unit_dir / "tasks"
    if not tasks.is_dir():
        return out
    for task_dir in sorted(p for p in tasks.iterdir() if p.is_dir() and p.name not in skip):
        for name, kind in (("result.json", "result"), ("error.json", "error")):
            p = task_dir / name
            if p.is_file():
                try:
                    content = json.loads(p.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError) as e:
                    out.append((task_dir, "corrupt", {"why": f"{p.name} does not parse ({e})"}))
                    break
                why = _malformed(task_dir, content) if kind == "result" else (
                    None if isinstance(content, dict) else "error.json is not an object")
                out.append((task_dir, "corrupt", {"why": why}) if why else (task_dir, kind, content))
                break
    return out


def _malformed(task_dir: Path, result: Any) -> str | None:
    """What makes a parsed ``result.json`` unusable, or None."""
    if not isinstance(result, dict):
        return "result.json is not an object"
    task = result.get("task")
    if not isinstance(task, dict) or task.get("name") != task_dir.name:
        return f"result.json does not describe task {task_dir.name!r}"
    if not isinstance(result.get("key"), str) or not isinstance(result.get("metrics"), dict):
        return "result.json has no key or no metrics"
    if result.get("items") and not (task_dir / str(result["items"])).is_file():
        return f"its per-item file {result['items']} is missing"
    return None


def _requeue(db: sqlite3.Connection, owner: str, unit: str, task_dir: Path, why: str) -> None:
    """Move a corrupt task file aside (kept for inspection) so the task is computed again; log it."""
    for name in ("result.json", "error.json"):
        p = task_dir / name
        if p.is_file():
            os.replace(p, p.with_name(name + CORRUPT_SUFFIX))
    db.execute("DELETE FROM results WHERE unit = ? AND task = ?", (unit, task_dir.name))
    db.execute("DELETE FROM tasks WHERE unit = ? AND task = ?", (unit, task_dir.name))
    _log(db, owner, unit, task_dir.name, "requeued", f"{why}; moved aside to {task_dir.name}/*{CORRUPT_SUFFIX}")
