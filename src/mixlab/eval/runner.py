"""Evaluate one model on many tasks, writing each task's result the moment it finishes.

Layout of an output directory::

    OUT/results.json                 task -> metrics ({"acc": .., "acc_norm": .., "n": ..}), or
                                     {"skipped": reason, "path": ..} / {"error": message}
    OUT/tasks/<task>/result.json     one result (model, task hash, metrics, stderr, n, per-item file)
    OUT/tasks/<task>/items.jsonl     per-item outputs (log-likelihoods, prediction, gold, scores; for
                                     generative kinds the completions, each metric's score and, when
                                     an answer scored 0, the verifier's reason)
    OUT/tasks/<task>/error.json      why a task failed (removed when it later succeeds)

``result.json`` is written last and atomically, so it marks a finished task: a re-run with the same
model, task definition and limit reuses it instead of scoring again. Every task is prepared (data
read, prompts rendered) before the first is scored, and the engines the tasks need are checked
(the code sandbox can be built, the judge answers), so a bad task file, a missing judge or an
unreachable endpoint fails the run up front; a crash while scoring one task is recorded in its
``error.json`` and the others still run.

What differs between kinds (items, checks, scoring, metrics) is each kind's engine
(:mod:`mixlab.eval.engines`); this module runs every kind the same way. An engine that compares the
model with a base model gets it from ``base`` (a loaded model or a path, loaded on first use).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixlab import atomic
from mixlab.config import config_hash
from mixlab.eval.engine import Engine, Scored, Tick
from mixlab.eval.engines import get_engine, score_generations, score_task
from mixlab.eval.scoring import Scorer
from mixlab.eval.tasks import GenItem, Item, MissingData, TaskSpec, describe, load_docs
from mixlab.results import Outcome

__all__ = ["Evaluation", "Prepared", "evaluate", "failed_tasks", "prepare", "preflight", "score_generations", "score_task"]

ENGINE_VERSION = 1
Progress = Callable[[str, int, int], None]  # (task, done, total)


@dataclass
class Prepared:
    """A task ready to run: its engine and items (``items`` for log-likelihood kinds, ``gen_items``
    for kinds that generate), or why it is skipped (its data is not on this machine)."""

    spec: TaskSpec
    engine: Engine
    items: list[Item] | None = None
    gen_items: list[GenItem] | None = None
    skipped: dict[str, Any] | None = None

    @property
    def requests(self) -> list[Any]:
        return self.items or self.gen_items or []

    @property
    def n(self) -> int:
        return len(self.requests)


def prepare(spec: TaskSpec, limit: int | None = None, data_dir: str | Path | None = None) -> Prepared:
    """Read the task's data and render its requests (the first ``limit`` items, in file order)."""
    engine = get_engine(spec.kind)
    try:
        docs, pool = load_docs(spec, data_dir)
    except MissingData as e:
        return Prepared(spec, engine, skipped={"skipped": "data not found", "path": e.path})
    if limit is not None:
        docs = docs[:limit]
    items = engine.prepare(spec, docs, pool)
    if engine.generative:
        return Prepared(spec, engine, gen_items=items)
    return Prepared(spec, engine, items=items)


class _Engines:
    """What the engines of one run share (:class:`mixlab.eval.engine.Context`): the model, its
    scorer and generator (built on first use), the judge and the base model."""

    def __init__(self, loaded, batch_size: int, gen_batch_size: int, max_length: int | None,
                 judge, judge_cache, code_workers: int, data_dir, workers: int = 1, base=None):
        self.loaded, self.batch_size, self.gen_batch_size = loaded, batch_size, gen_batch_size
        self.workers = workers
        self.max_length, self.judge, self.judge_cache = max_length, judge, judge_cache
        self.code_workers, self.data_dir = code_workers, data_dir
        self._base = base
        self._scorer: Scorer | None = None
        self._generator = None

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = Scorer(self.loaded.model, self.loaded.tokenizer, batch_size=self.batch_size,
                                  max_length=self.max_length, workers=self.workers)
        return self._scorer

    @property
    def generator(self):
        if self._generator is None:
            from mixlab.eval.generation import Generator

            self._generator = Generator(self.loaded.model, self.loaded.tokenizer, batch_size=self.gen_batch_size,
                                        max_length=self.max_length)
        return self._generator

    @property
    def base(self):
        """The base model (a LoadedModel), loaded on first use when given as a path."""
        if isinstance(self._base, (str, Path)):
            from mixlab.models.pretrained import load_model

            device = str(next(self.loaded.model.parameters()).device)
            self._base = load_model(str(self._base), device=device)
        return self._base

    @property
    def base_identity(self) -> dict[str, Any] | None:
        return None if self._base is None else self.base.identity

    def loglik(self, spec: TaskSpec, items: Sequence[Any], tick: Tick | None) -> Scored:
        # through this module's score_task, looked up when called, so a caller can wrap it
        return score_task(spec, list(items), self.scorer, tick)

    def units(self, p: Prepared) -> int:
        """Progress units of a task (items, plus test runs or turn judgments: its engine says)."""
        return p.engine.units(p.spec, p.requests)

    def run(self, p: Prepared, tick: Tick) -> Scored:
        return p.engine.score(p.spec, p.requests, self, tick)

    def extra(self, p: Prepared) -> dict[str, Any]:
        """What besides the task and model decides a result (part of its key) and is recorded."""
        return p.engine.extra(p.spec, self)


def preflight(prepared: Sequence[Prepared], ctx: _Engines) -> None:
    """Fail before any work when a task's engine cannot run: a judge task without a judge or with an
    unreachable one, a code task where the sandbox cannot be built, a task comparing with a base
    model when none is given."""
    by_kind: dict[str, list[Prepared]] = {}
    for p in prepared:
        if p.skipped is None:
            by_kind.setdefault(p.spec.kind, []).append(p)
    for group in by_kind.values():
        group[0].engine.check([p.spec.name for p in group], ctx)


class Evaluation(dict):
    """What :func:`evaluate` returns: task -> what ``results.json`` shows for it (its metrics, or
    ``{"skipped": reason, "path": ..}`` / ``{"error": message}``), and in ``outcomes`` task ->
    :class:`~mixlab.results.Outcome` (computed, reused, skipped or failed, with the result)."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, Outcome] = {}

    def add(self, outcome: Outcome) -> None:
        self[outcome.task] = outcome.entry
        self.outcomes[outcome.task] = outcome


def _result_key(spec: TaskSpec, identity: dict[str, Any], limit: int | None, extra: dict | None = None) -> str:
    data = {"task": spec.fingerprint(), "model": identity, "limit": limit, "engine": ENGINE_VERSION}
    if extra:
        data["extra"] = extra
    return config_hash(data)


def failed_tasks(results: Mapping[str, Any]) -> dict[str, str]:
    """Task -> error of every task that crashed in ``results`` (what :func:`evaluate` returns; the
    traceback is in ``OUT/tasks/<task>/error.json``). Skipped tasks (their data is not on this
    machine) are not failures: they are reported with the path that was looked for."""
    return {task: r["error"] for task, r in results.items() if "error" in r}


def _finished(task_dir: Path, key: str) -> dict[str, Any] | None:
    import json

    path = task_dir / "result.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if result.get("key") == key else None


def evaluate(
    loaded,
    specs: list[TaskSpec],
    out_dir: str | Path,
    limit: int | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    judge=None,
    gen_batch_size: int = 16,
    max_new_tokens: int | None = None,
    judge_cache: str | Path | None = None,
    code_workers: int = 2,
    workers: int = 1,
    base=None,
) -> Evaluation:
    """Evaluate ``loaded`` (a :class:`~mixlab.models.pretrained.LoadedModel`) on ``specs``.

    Returns the content of ``OUT/results.json`` with each task's outcome (:class:`Evaluation`). Finished tasks with a matching key are reused.
    ``judge`` (a :class:`~mixlab.eval.judge.HTTPJudge` or ``LocalJudge``) rates ``judge`` tasks;
    ``gen_batch_size`` is prompts per generation batch; ``max_new_tokens`` caps every generative
    task's answers (it changes the task's fingerprint, so results are kept apart); ``judge_cache``
    is the judgment cache folder (default under the mixlab cache); ``code_workers`` sandboxed
    programs run at once; ``workers`` processes share log-likelihood scoring (see
    :class:`~mixlab.eval.scoring.Scorer`; results do not depend on it); ``base`` is the base model
    (a LoadedModel or a path) for tasks whose engine compares with one.
    """
    out = Path(out_dir)
    if max_new_tokens is not None:
        specs = [s.model_copy(update={"generation": s.decoding.model_copy(update={"max_new_tokens": max_new_tokens})})
                 if get_engine(s.kind).generative else s for s in specs]
    prepared = [prepare(s, limit, data_dir) for s in specs]  # every error in task files surfaces here
    engines = _Engines(loaded, batch_size, gen_batch_size, max_length, judge, judge_cache, code_workers, data_dir,
                       workers, base)
    preflight(prepared, engines)  # missing or unreachable judge, no sandbox: fail before any work
    results = Evaluation()
    for p in prepared:
        spec, task_dir = p.spec, out / "tasks" / p.spec.name
        if p.skipped is not None:
            results.add(Outcome(spec.name, "skipped", p.skipped))
            continue
        key = _result_key(spec, loaded.identity, limit, engines.extra(p))
        done = _finished(task_dir, key)
        if done is not None:
            if progress is not None:
                progress(spec.name, engines.units(p), engines.units(p))
            results.add(Outcome(spec.name, "reused", done["metrics"], done))
        else:
            done = _run_one(p, engines, loaded.identity, key, task_dir, limit, progress)
            failed = "metrics" not in done
            results.add(Outcome(spec.name, "failed", done) if failed
                        else Outcome(spec.name, "computed", done["metrics"], done))
        atomic.write_json(out / "results.json", dict(results))
    atomic.write_json(out / "results.json", dict(results))
    return results


def _run_one(p: Prepared, engines: _Engines, identity: dict, key: str, task_dir: Path,
             limit: int | None, progress: Progress | None) -> dict[str, Any]:
    spec, total = p.spec, engines.units(p)
    done_count = 0

    def tick(k: int) -> None:
        nonlocal done_count
        done_count += k
        if progress is not None:
            progress(spec.name, done_count, total)

    t0 = time.perf_counter()
    try:
        if progress is not None:
            progress(spec.name, 0, total)
        summary, rows = engines.run(p, tick)
    except Exception as e:  # one task's crash must not lose the others
        err = {"error": f"{type(e).__name__}: {e}"}
        atomic.write_json(task_dir / "error.json", err | {"traceback": traceback.format_exc(), "key": key})
        return err
    atomic.write_jsonl(task_dir / "items.jsonl", rows)
    result = {
        "key": key, "status": "done", "task": describe(spec), **identity, "limit": limit,
        "metrics": {k: v for k, v in summary.items() if k not in ("stderr", "windowing", "chance")},
        "stderr": summary["stderr"], **{k: summary[k] for k in ("windowing", "chance") if k in summary},
        **engines.extra(p),
        "n": summary["n"], "items": "items.jsonl", "seconds": round(time.perf_counter() - t0, 3),
        "engine_version": ENGINE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_json(task_dir / "result.json", result)
    (task_dir / "error.json").unlink(missing_ok=True)
    return result
