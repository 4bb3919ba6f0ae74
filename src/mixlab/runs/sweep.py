"""Resumable evaluation sweeps: every selected checkpoint of every run (and the base models) on
every task, each (checkpoint, task) result computed exactly once however the sweep is interrupted.

Layout of a sweep's ``out`` directory::

    OUT/store.sqlite                     the results store (:mod:`mixlab.runs.store`), WAL mode
    OUT/evals/<run>/step-<N>/unit.json   which run, step, model and base model this folder evaluates
    OUT/evals/<run>/step-<N>/tasks/...   the runner's per-task result.json / items.jsonl / error.json
    OUT/evals/<run>/step-<N>/results.json  summary of the checkpoint's tasks, rewritten from the store

How exactly-once holds: a worker takes a *claim* on a (checkpoint, task) in one SQLite transaction
before computing it, keeps its claims alive with a heartbeat thread, and records the result and drops
the claim in one transaction after the runner has written ``result.json`` atomically. A worker
killed at any moment (SIGKILL included) leaves either no file (the task is recomputed) or a complete
file that the next worker records without scoring again: at start-up (logged as ``reused``), or,
while the dead worker's claim still looks live, once the claim is taken over (the runner reuses a
finished result with the same key). Its claims die with it (same host: its pid is gone; elsewhere:
the heartbeat goes stale after ``claim_timeout_s``). Two sweeps of the same experiment share the store and split the
work through the claims.

Backends: a backend only has to start workers that call :func:`work` with the same config; all
coordination goes through the store. :class:`InlineBackend` runs one worker in this process; N local
worker processes, Ray tasks or Slurm jobs are launcher jobs (:mod:`mixlab.runs.launch`) run by
:class:`LauncherBackend`; the launchers know nothing of sweeps.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field, field_validator, model_validator

from mixlab import atomic
from mixlab.config import StrictModel, load_config
from mixlab.errors import ConfigError
from mixlab.runs.launch import Job, LaunchConfig, launcher_for, raise_failures, resources, run_jobs
from mixlab.runs.store import UNIT_FILE, Store, Unit

Progress = Callable[[str, str, int, int], None]  # (unit, task, done, total) within a task
STORE_FILE = "store.sqlite"


# ---------------------------------------------------------------- config


class RunEntry(StrictModel):
    """Run directories (``path`` may be a glob); ``name`` renames a single run; ``base_model`` names
    the entry of ``base_models`` these runs started from (default: the only one, if one is given)."""

    path: str
    name: str | None = None
    base_model: str | None = None
    targets: list[str] = Field(default_factory=list, description="tasks the run's training data is meant to "
                               "improve (the report's gain axis; every other task counts towards forgetting)")


class BaseModelEntry(StrictModel):
    """A model to compare against, evaluated as run ``name`` at step 0: a HF directory, an alias
    (``smollm2-135m``) or a hub id already in the local cache."""

    name: str
    path: str


class CheckpointSelect(StrictModel):
    """Which checkpoints of each run to evaluate (the union of what is asked): ``all``; ``every``
    k-th (the k-th, 2k-th, ... of the run's checkpoints in step order); the ``last``; explicit
    ``steps`` (step 0 is the run's base model unless the run saved a ``step-0`` checkpoint)."""

    all: bool = False
    every: int | None = Field(None, ge=1)
    last: bool = True
    steps: list[int] = Field(default_factory=list)

    def select(self, available: Sequence[int]) -> list[int]:
        chosen: set[int] = set(available) if self.all else set()
        if self.every:
            chosen |= {s for i, s in enumerate(available) if (i + 1) % self.every == 0}
        if self.last and available:
            chosen.add(available[-1])
        chosen |= set(self.steps)
        return sorted(chosen)


class SweepConfig(StrictModel):
    """An evaluation experiment: runs x checkpoints (+ base models) x tasks, written under ``out``.

    Relative paths are relative to the working directory. ``claim_timeout_s``: a claim whose
    heartbeat (every ``heartbeat_s``) is older than this is taken over by another worker.
    ``retry_failed``: a new sweep retries tasks that failed in an earlier one.
    """

    name: str
    out: str
    runs: list[str | RunEntry] = Field(default_factory=list)
    checkpoints: CheckpointSelect = Field(default_factory=CheckpointSelect)
    base_models: list[str | BaseModelEntry] = Field(default_factory=list)
    suites: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)
    limits: dict[str, int] = Field(default_factory=dict, description="task -> items, overriding `limit` for that "
                                   "task (e.g. fewer items for a slow generation task)")
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=1)
    device: str = "cpu"
    workers: int = Field(1, ge=1)
    claim_timeout_s: float = Field(120.0, gt=0)
    heartbeat_s: float = Field(5.0, gt=0)
    retry_failed: bool = True

    @field_validator("runs")
    @classmethod
    def _runs(cls, v: list[str | RunEntry]) -> list[str | RunEntry]:
        named = [r.name for r in v if isinstance(r, RunEntry) and r.name]
        if dup := sorted({n for n in named if named.count(n) > 1}):
            raise ValueError(f"two runs are named {dup[0]!r}; give each run a different `name:`")
        return [RunEntry(path=r) if isinstance(r, str) else r for r in v]

    @field_validator("base_models")
    @classmethod
    def _bases(cls, v: list[str | BaseModelEntry]) -> list[str | BaseModelEntry]:
        return [BaseModelEntry(name=Path(b.rstrip("/")).name, path=b) if isinstance(b, str) else b for b in v]

    @model_validator(mode="after")
    def _something_to_do(self) -> SweepConfig:
        if not self.runs and not self.base_models:
            raise ValueError("list `runs:` (run directories or globs) and/or `base_models:`")
        if not self.suites and not self.tasks:
            raise ValueError("list `suites:` and/or `tasks:` to evaluate")
        if self.heartbeat_s * 2 > self.claim_timeout_s:
            raise ValueError("claim_timeout_s must be at least twice heartbeat_s, or live claims look stale")
        return self


def load_sweep_config(path: str | Path, overrides: Sequence[str] = ()) -> SweepConfig:
    """Read and validate a sweep config (errors name file, line and field)."""
    return load_config(path, SweepConfig, overrides)


# ---------------------------------------------------------------- the experiment, resolved


@dataclass(frozen=True)
class Checkpoint:
    """A (run, step) of the experiment and the unit that evaluates it (a base model's, for an
    aliased step 0)."""

    run: str
    step: int
    unit: Unit


@dataclass
class Experiment:
    cfg: SweepConfig
    out: Path
    checkpoints: list[Checkpoint]
    specs: list[Any]  # TaskSpec
    targets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # run -> its entry's target tasks

    @property
    def store_path(self) -> Path:
        return self.out / STORE_FILE

    @property
    def units(self) -> list[Unit]:
        """The units that compute (aliases excluded), base models first."""
        seen: dict[str, Unit] = {}
        for c in sorted(self.checkpoints, key=lambda c: c.unit.same_as is not None):
            if c.unit.same_as is None:
                seen.setdefault(c.unit.unit, c.unit)
        return list(seen.values())

    @functools.cached_property
    def _keys(self) -> list[tuple[str, str]]:
        return [(s.name, s.fingerprint()) for s in self.specs]

    def task_keys(self) -> list[tuple[str, str]]:
        """(task, definition hash) pairs: a result counts as done only for the current definition."""
        return self._keys

    def base_path(self, unit: Unit) -> str | None:
        """The model folder (or alias) of ``unit``'s base model, for tasks that compare with it."""
        for c in self.checkpoints:
            if c.unit.run == unit.base_model and c.step == 0 and c.unit.same_as is None:
                return c.unit.model
        return run_base_model(unit.model)


def _safe_name(name: str, where: str) -> str:
    if not name or name in (".", "..") or "/" in name or name.startswith("."):
        raise ConfigError(f"{where}: {name!r} cannot name a run folder; give the entry a `name:`")
    return name


def _run_dirs(entry: RunEntry) -> list[Path]:
    pattern = os.path.expanduser(entry.path)
    found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
    if not found:
        raise ConfigError(f"field `runs`: {entry.path!r} matches no directory; check the path or glob")
    if entry.name and len(found) > 1:
        raise ConfigError(f"field `runs`: {entry.path!r} matches {len(found)} directories but sets one `name`")
    return found


def resolve(cfg: SweepConfig) -> Experiment:
    """Expand globs, select checkpoints, validate tasks; no model is loaded. Errors name the field."""
    from mixlab.eval.tasks import resolve_tasks
    from mixlab.train.checkpoint import list_checkpoints

    out = Path(cfg.out).expanduser().resolve()
    evals = out / "evals"
    bases: dict[str, Unit] = {}
    for b in cfg.base_models:
        name = _safe_name(b.name, "field `base_models`")
        if name in bases:
            raise ConfigError(f"field `base_models`: two base models are named {name!r}; rename one")
        path = str(Path(b.path).expanduser().resolve()) if Path(b.path).expanduser().exists() else b.path
        bases[name] = Unit(f"{name}/step-0", name, 0, path, str(evals / name / "step-0"), base_model=name)
    checkpoints = [Checkpoint(u.run, 0, u) for u in bases.values()]
    seen_runs: dict[str, Path] = {}
    targets: dict[str, tuple[str, ...]] = {}
    for entry in cfg.runs:
        base = entry.base_model or (next(iter(bases)) if len(bases) == 1 else None)
        if base is not None and base not in bases:
            raise ConfigError(f"field `runs`: base_model {base!r} is not in `base_models` ({', '.join(bases) or 'none'})")
        for run_dir in _run_dirs(entry):
            name = _safe_name(entry.name or run_dir.name, "field `runs`")
            if name in seen_runs or name in bases:
                raise ConfigError(f"field `runs`: two runs are named {name!r} ({seen_runs.get(name, 'a base model')} "
                                  f"and {run_dir}); give one a `name:`")
            seen_runs[name] = run_dir
            targets[name] = tuple(entry.targets)
            checkpoints += _run_checkpoints(cfg, name, run_dir, list_checkpoints(run_dir), bases.get(base) if base else None, evals)
    specs = resolve_tasks(tasks=[*_suite_task_names(cfg.suites), *cfg.tasks])
    unknown = sorted(set(cfg.limits) - {s.name for s in specs})
    if unknown:
        raise ConfigError(f"field `limits`: {', '.join(unknown)} is not among the sweep's tasks "
                          f"({', '.join(s.name for s in specs)})")
    return Experiment(cfg, out, checkpoints, specs, targets)


def _suite_task_names(suites: Sequence[str]) -> list[str]:
    from mixlab.eval.tasks import suite_tasks

    return [t for s in suites for t in suite_tasks(s)]


def run_base_model(checkpoint: str) -> str | None:
    """The base model a fine-tuning run names in its resolved ``config.yaml`` (``model.base``), for a
    checkpoint ``RUN/checkpoints/step-N`` of a run the sweep lists without a ``base_models:`` entry."""
    import yaml

    path = Path(checkpoint)
    if path.parent.name != "checkpoints":
        return None
    cfg = path.parent.parent / "config.yaml"
    try:
        data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    base = (data.get("model") or {}).get("base") if isinstance(data, dict) else None
    if not isinstance(base, str):
        return None
    local = Path(base).expanduser()
    meta = local / "meta.json"
    if local.is_dir() and meta.is_file() and not (local / "config.json").is_file():  # a pretraining run
        try:
            final = json.loads(meta.read_text(encoding="utf-8")).get("final_checkpoint")
        except (OSError, ValueError):
            final = None
        return str(local / final) if final else base
    return base


def _run_checkpoints(cfg: SweepConfig, name: str, run_dir: Path, found: list[tuple[int, Path]],
                     base: Unit | None, evals: Path) -> list[Checkpoint]:
    by_step = dict(found)
    if not found and not (cfg.checkpoints.steps == [0] and base is not None):
        raise ConfigError(f"field `runs`: {run_dir} holds no complete checkpoint (checkpoints/step-N/ with "
                          "trainer_state.json); train it first or remove it from the sweep")
    out = []
    for step in cfg.checkpoints.select([s for s, _ in found]):
        if step in by_step:
            unit = Unit(f"{name}/step-{step}", name, step, str(by_step[step].resolve()),
                        str(evals / name / f"step-{step}"), base_model=base.run if base else None)
        elif step == 0 and base is not None:
            unit = Unit(f"{name}/step-0", name, 0, base.model, str(evals / name / "step-0"), base.run, base.unit)
        else:
            have = ", ".join(str(s) for s, _ in found) or "none"
            hint = " (step 0 needs a base model: add `base_models:`)" if step == 0 else ""
            raise ConfigError(f"field `checkpoints.steps`: run {name} ({run_dir}) has no checkpoint at step {step}; "
                              f"it has steps {have}{hint}")
        out.append(Checkpoint(name, step, unit))
    return out


def _write_unit_files(exp: Experiment, store: Store, owner: str) -> list[tuple[str, str]]:
    """Write each checkpoint's ``unit.json`` (once; atomically) and sync what its folder already
    holds, so results written by a killed worker before it reached the database count as done
    (and are logged once, as reused by ``owner``); returns those (unit, task) pairs."""
    recovered: list[tuple[str, str]] = []
    for c in exp.checkpoints:
        u = c.unit
        path = Path(u.dir) / UNIT_FILE
        want = u.as_json()
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            have = None
        if have != want:
            atomic.write_json(path, want)
        recovered += [(u.unit, t) for t in store.sync_unit_dir(u.dir, owner, exp.cfg.claim_timeout_s)]
    return recovered


# ---------------------------------------------------------------- the worker


@dataclass
class WorkerReport:
    """What one worker did: (unit, task) pairs computed, reused from files, failed, skipped."""

    owner: str
    computed: list[tuple[str, str]] = field(default_factory=list)
    reused: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0


class _Heartbeat:
    """Refreshes the owner's claims every ``interval`` seconds on its own connection (thread)."""

    def __init__(self, store_path: Path, owner: str, interval: float):
        self.store_path, self.owner, self.interval = store_path, owner, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sweep-heartbeat", daemon=True)

    def _beat(self) -> None:
        with Store(self.store_path) as store:
            while not self._stop.wait(self.interval):
                store.heartbeat(self.owner)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def work(cfg: SweepConfig, owner: str | None = None, progress: Progress | None = None,
         on_task_done: Callable[[str, str, str], None] | None = None) -> WorkerReport:
    """Evaluate claimed (checkpoint, task) pairs until none is left to claim; returns what was done.

    Safe to run in any number of processes at once on the same config (they split the work), and
    to kill at any moment. ``progress`` follows the current task; ``on_task_done(unit, task, status)``
    is called as each finishes.
    """
    exp = resolve(cfg)
    owner = owner or new_owner()
    report, t0 = WorkerReport(owner), time.perf_counter()
    retry_before = time.time() if cfg.retry_failed else None
    with Store(exp.store_path) as store:
        report.reused += _write_unit_files(exp, store, owner)
        specs = {s.name: s for s in exp.specs}
        with _Heartbeat(exp.store_path, owner, cfg.heartbeat_s):
            try:
                while (picked := _next_claim(store, exp, owner, retry_before)) is not None:
                    unit, task = picked
                    _evaluate_unit(store, exp, unit, task, specs, owner, retry_before, report, progress, on_task_done)
            finally:
                store.release(owner)
    report.seconds = time.perf_counter() - t0
    return report


def _next_claim(store: Store, exp: Experiment, owner: str, retry_before: float | None) -> tuple[Unit, str] | None:
    """Claim a task in the unit fewest other workers are on (so concurrent sweeps spread over
    checkpoints and each loads fewer models)."""
    busy: dict[str, int] = {}
    for c in store.live_claims(exp.cfg.claim_timeout_s):
        if c.owner != owner:
            busy[c.unit] = busy.get(c.unit, 0) + 1
    for unit in sorted(exp.units, key=lambda u: busy.get(u.unit, 0)):
        task = store.try_claim(unit.unit, exp.task_keys(), owner, exp.cfg.claim_timeout_s, retry_before)
        if task is not None:
            return unit, task
    return None


def _evaluate_unit(store: Store, exp: Experiment, unit: Unit, first: str, specs: dict[str, Any], owner: str,
                   retry_before: float | None, report: WorkerReport, progress: Progress | None,
                   on_task_done: Callable[[str, str, str], None] | None) -> None:
    """Load the unit's model once and run every task of it this worker can claim."""
    loaded: Any = None
    load_error: str | None = None
    task: str | None = first
    while task is not None:
        if loaded is None and load_error is None:
            try:
                loaded = _load(unit, exp.cfg)
            except Exception as e:  # a broken checkpoint fails its tasks, not the sweep
                load_error = f"model did not load: {type(e).__name__}: {e}"
        if load_error is not None:
            store.add_failure(unit.unit, task, load_error, owner=owner)
            report.failed.append((unit.unit, task, load_error))
            status = "failed"
        else:
            status = _run_task(store, exp, unit, specs[task], loaded, owner, report, progress)
        _write_summary(store, unit, list(specs))
        if on_task_done is not None:
            on_task_done(unit.unit, task, status)
        task = store.try_claim(unit.unit, exp.task_keys(), owner, exp.cfg.claim_timeout_s, retry_before)


def _load(unit: Unit, cfg: SweepConfig) -> Any:
    from transformers.utils import logging as hf_logging

    from mixlab.models.pretrained import load_model

    hf_logging.disable_progress_bar()  # no per-load bar inside the sweep's own progress display
    return load_model(unit.model, device=cfg.device)


def _run_task(store: Store, exp: Experiment, unit: Unit, spec: Any, loaded: Any, owner: str,
              report: WorkerReport, progress: Progress | None) -> str:
    from mixlab.eval.runner import evaluate
    from mixlab.results import Outcome

    cfg, name = exp.cfg, spec.name
    result_path = Path(unit.dir) / "tasks" / name / "result.json"
    tick = (lambda task, done, total: progress(unit.unit, task, done, total)) if progress else None
    base = loaded if unit.run == unit.base_model else exp.base_path(unit)  # loaded only by a task that needs it
    try:
        outcome = evaluate(loaded, [spec], unit.dir, limit=cfg.limits.get(name, cfg.limit), batch_size=cfg.batch_size,
                           max_length=cfg.max_length, progress=tick, base=base).outcomes[name]
    except Exception as e:  # a task the runner refused up front (bad data, no sandbox)
        outcome = Outcome(name, "failed", {"error": f"{type(e).__name__}: {e}"})
    r = outcome.entry
    if outcome.status == "skipped":
        why = f"{r['skipped']}: {r.get('path', '')}".rstrip(": ")
        store.add_failure(unit.unit, name, why, status="skipped", owner=owner)
        report.skipped.append((unit.unit, name, why))
        return "skipped"
    if outcome.status == "failed":
        err_path = result_path.with_name("error.json")
        store.add_failure(unit.unit, name, r["error"], path=str(err_path) if err_path.is_file() else None, owner=owner)
        report.failed.append((unit.unit, name, r["error"]))
        return "failed"
    store.add_result(unit.unit, outcome.result, result_path, owner, outcome.status)
    (report.reused if outcome.status == "reused" else report.computed).append((unit.unit, name))
    return "done"


def _write_summary(store: Store, unit: Unit, tasks: Sequence[str]) -> None:
    """Rewrite the unit's ``results.json`` (task -> metrics or error) from the store; under the
    database's write lock, so concurrent workers' rewrites are serialized and the last is complete."""
    with store.transaction() as db:
        summary: dict[str, Any] = {}
        for row in db.execute("SELECT task, status, error FROM tasks WHERE unit = ?", (unit.unit,)):
            if row["status"] == "done":
                metrics = {r["metric"]: r["value"] for r in db.execute(
                    "SELECT metric, value, n FROM results WHERE unit = ? AND task = ?", (unit.unit, row["task"]))}
                n = db.execute("SELECT MAX(n) FROM results WHERE unit = ? AND task = ?",
                               (unit.unit, row["task"])).fetchone()[0]
                summary[row["task"]] = metrics | {"n": n}
            else:
                summary[row["task"]] = {row["status"] if row["status"] == "skipped" else "error": row["error"]}
        atomic.write_json(Path(unit.dir) / "results.json", {t: summary[t] for t in tasks if t in summary})


# ---------------------------------------------------------------- status


@dataclass
class CheckpointStatus:
    """Where one (run, checkpoint) stands: ``state`` is queued / running / done / failed."""

    run: str
    step: int
    unit: str
    tasks: int
    done: int
    running: int
    failed: int
    skipped: int
    errors: dict[str, str]
    state: str


def status(cfg: SweepConfig) -> list[CheckpointStatus]:
    """Status of every (run, checkpoint) of the experiment from the store (no model loaded)."""
    exp = resolve(cfg)
    keys = dict(exp.task_keys())
    with Store(exp.store_path) as store:
        rows = store.task_rows()
        live = store.live_claims(cfg.claim_timeout_s)
    by_unit: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_unit.setdefault(r["unit"], {})[r["task"]] = r
    running: dict[str, set[str]] = {}
    for c in live:
        running.setdefault(c.unit, set()).add(c.task)
    out = []
    for c in exp.checkpoints:
        uid = c.unit.same_as or c.unit.unit
        tasks = by_unit.get(uid, {})
        done = sum(1 for t, h in keys.items() if t in tasks and tasks[t]["status"] == "done" and tasks[t]["task_hash"] == h)
        failed = {t: tasks[t]["error"] or "" for t in keys if t in tasks and tasks[t]["status"] == "failed"}
        skipped = sum(1 for t in keys if t in tasks and tasks[t]["status"] == "skipped")
        n_running = len(running.get(uid, set()) & set(keys))
        state = ("running" if n_running else "failed" if failed else
                 "done" if done + skipped == len(keys) else "queued")
        out.append(CheckpointStatus(c.run, c.step, c.unit.unit, len(keys), done, n_running, len(failed), skipped,
                                    failed, state))
    return out


@dataclass
class RunStatus:
    """A run's line of the status table: its checkpoints, how many are done, its state and errors."""

    run: str
    steps: list[int]
    checkpoints_done: int
    tasks: int
    tasks_done: int
    state: str
    errors: dict[str, str]  # "step-N/task" -> error


def run_status(checkpoints: Sequence[CheckpointStatus]) -> list[RunStatus]:
    """Group checkpoint states by run: running beats failed beats queued beats done."""
    order = {"running": 0, "failed": 1, "queued": 2, "done": 3}
    runs: dict[str, RunStatus] = {}
    for c in checkpoints:
        r = runs.setdefault(c.run, RunStatus(c.run, [], 0, 0, 0, "done", {}))
        r.steps.append(c.step)
        r.checkpoints_done += c.state == "done"
        r.tasks += c.tasks
        r.tasks_done += c.done
        r.errors |= {f"step-{c.step}/{t}": e for t, e in c.errors.items()}
        if order[c.state] < order[r.state]:
            r.state = c.state
    return list(runs.values())


def progress_counts(exp: Experiment) -> tuple[int, int]:
    """(finished, total) (checkpoint, task) pairs of the computing units: finished counts done,
    failed and skipped tasks."""
    keys = dict(exp.task_keys())
    units = {u.unit for u in exp.units}
    with Store(exp.store_path) as store:
        rows = store.task_rows()
    finished = sum(1 for r in rows if r["unit"] in units and r["task"] in keys
                   and (r["status"] != "done" or r["task_hash"] == keys[r["task"]]))
    return finished, len(units) * len(keys)


# ---------------------------------------------------------------- backends


class Backend(Protocol):
    """Starts workers that each call :func:`work` on the same config and waits for them."""

    def launch(self, cfg: SweepConfig, progress: Progress | None = None) -> list[WorkerReport]: ...


class InlineBackend:
    """One worker in this process (progress per task is reported through ``progress``)."""

    def launch(self, cfg: SweepConfig, progress: Progress | None = None) -> list[WorkerReport]:
        return [work(cfg, progress=progress)]


def sweep_worker(cfg_data: dict[str, Any], threads: int = 1) -> WorkerReport:
    """A job: one sweep worker (:func:`work`) with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    return work(SweepConfig.model_validate(cfg_data))


def sweep_jobs(cfg: SweepConfig, launch: LaunchConfig) -> list[Job]:
    """``launch.workers`` sweep workers; they split the work through the results store's claims."""
    data = cfg.model_dump(mode="json")
    return [Job(f"sweep-worker-{i}", sweep_worker, (data, launch.cpus), resources=resources(launch))
            for i in range(launch.workers)]


class LauncherBackend:
    """A sweep backend that runs the workers as launcher jobs (local pool, Ray tasks, Slurm array)."""

    def __init__(self, launch: LaunchConfig, folder: str | None = None):
        self.launch_cfg = launch
        self.launcher = launcher_for(launch, folder)

    def check(self, cfg: SweepConfig) -> None:
        """The backend's checks (reachable, sbatch present, resources) before anything starts."""
        self.launcher.check(sweep_jobs(cfg, self.launch_cfg))

    def launch(self, cfg: SweepConfig, progress: Progress | None = None) -> list[WorkerReport]:
        jobs = sweep_jobs(cfg, self.launch_cfg)
        self.launcher.check(jobs)
        results = run_jobs(self.launcher, jobs)
        raise_failures(results, "sweep workers")
        return [r.value for r in results]


def sweep_backend(launch: LaunchConfig, folder: str | None = None) -> InlineBackend | LauncherBackend:
    """The backend ``mixlab sweep --backend`` uses: one local worker runs in this process (live
    per-task progress); otherwise the workers are launcher jobs (local pool, Ray tasks, Slurm array)."""
    if launch.backend == "local" and launch.workers <= 1:
        return InlineBackend()
    return LauncherBackend(launch, folder)


def backend_for(workers: int) -> Backend:
    """One worker in this process, or ``workers`` local processes with one torch thread each (the
    launcher's local pool, the same path ``--backend local`` takes)."""
    return sweep_backend(LaunchConfig(backend="local", workers=workers))


def run_sweep(cfg: SweepConfig, backend: Backend | None = None, progress: Progress | None = None) -> list[WorkerReport]:
    """Run the sweep to completion on ``backend`` (default: ``cfg.workers`` local workers).

    Re-running after an interruption (or while another sweep of the same config runs) evaluates
    only what is missing. Returns each worker's report.
    """
    resolve(cfg)  # config errors surface before any worker starts
    return (backend or backend_for(cfg.workers)).launch(cfg, progress)
