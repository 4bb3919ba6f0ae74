"""Evaluate one model on many tasks, writing each task's result the moment it finishes.

Layout of an output directory::

    OUT/results.json                 task -> metrics ({"acc": .., "acc_norm": .., "n": ..}), or
                                     {"skipped": reason, "path": ..} / {"error": message}
    OUT/tasks/<task>/result.json     one result (model, task hash, metrics, stderr, n, per-item file)
    OUT/tasks/<task>/items.jsonl     per-item outputs (log-likelihoods, prediction, gold, scores)
    OUT/tasks/<task>/error.json      why a task failed (removed when it later succeeds)

``result.json`` is written last and atomically, so it marks a finished task: a re-run with the same
model, task definition and limit reuses it instead of scoring again. Every task is prepared (data
read, prompts rendered) before the first is scored, so a bad task file fails the run up front; a
crash while scoring one task is recorded in its ``error.json`` and the others still run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixlab import atomic
from mixlab.config import config_hash
from mixlab.eval import metrics as M
from mixlab.eval.scoring import Scorer
from mixlab.eval.tasks import SCORED_KINDS, Item, MissingData, TaskSpec, build_items, describe, load_docs

ENGINE_VERSION = 1
Progress = Callable[[str, int, int], None]  # (task, done, total)


@dataclass
class Prepared:
    spec: TaskSpec
    items: list[Item] | None = None
    skipped: dict[str, Any] | None = None


def prepare(spec: TaskSpec, limit: int | None = None, data_dir: str | Path | None = None) -> Prepared:
    """Read the task's data and render its requests (the first ``limit`` items, in file order)."""
    if spec.kind not in SCORED_KINDS:
        return Prepared(spec, skipped={"skipped": f"kind {spec.kind!r} is not implemented yet (evaluation part 2)"})
    try:
        docs, pool = load_docs(spec, data_dir)
    except MissingData as e:
        return Prepared(spec, skipped={"skipped": "data not found", "path": e.path})
    if limit is not None:
        docs = docs[:limit]
    return Prepared(spec, items=build_items(spec, docs, pool))


def score_task(spec: TaskSpec, items: list[Item], scorer: Scorer,
               on_progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Score a prepared task: (summary metrics with stderr, per-item rows)."""
    scored = scorer.score_groups([it.pairs for it in items], on_progress)
    rows: list[dict[str, Any]] = []
    for it, res in zip(items, scored, strict=True):
        lls = [s.logprob for s in res]
        row: dict[str, Any] = {"id": it.id, "lls": lls, "n_tokens": [s.n_tokens for s in res]}
        if spec.kind == "bpb":
            nll = -lls[0]
            row.update(nll=nll, n_bytes=it.n_bytes, bpb=M.bits_per_byte(nll, it.n_bytes))
        else:
            row.update(gold=it.gold, pred=M.argmax(lls),
                       pred_norm=M.argmax([ll / len(c) for ll, c in zip(lls, it.choices, strict=True)]))
            if "mc2" in spec.metrics:
                row["mc2"] = M.mc2_score(lls, it.gold)  # type: ignore[arg-type]
            else:
                scores = M.mc_scores(lls, it.choices, it.gold)
                scores["mc1"] = scores["acc"]
                row.update({m: scores[m] for m in spec.metrics})
        rows.append(row)
    summary: dict[str, Any] = {"n": len(rows)}
    stderr: dict[str, float] = {}
    for m in spec.metrics:
        values = [r[m] for r in rows]
        summary[m] = sum(values) / len(values) if values else float("nan")
        stderr[m] = M.mean_stderr(values)
    if spec.kind == "bpb" and rows:
        summary["bpb_corpus"] = M.corpus_bits_per_byte([r["nll"] for r in rows], [r["n_bytes"] for r in rows])
    summary["stderr"] = stderr
    return summary, rows


def _result_key(spec: TaskSpec, identity: dict[str, Any], limit: int | None) -> str:
    return config_hash({"task": spec.fingerprint(), "model": identity, "limit": limit, "engine": ENGINE_VERSION})


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
) -> dict[str, Any]:
    """Evaluate ``loaded`` (a :class:`~mixlab.models.pretrained.LoadedModel`) on ``specs``.

    Returns the content of ``OUT/results.json``. Finished tasks with a matching key are reused.
    """
    out = Path(out_dir)
    prepared = [prepare(s, limit, data_dir) for s in specs]  # every error in task files surfaces here
    scorer = Scorer(loaded.model, loaded.tokenizer, batch_size=batch_size, max_length=max_length)
    results: dict[str, Any] = {}
    for p in prepared:
        spec, task_dir = p.spec, out / "tasks" / p.spec.name
        if p.skipped is not None:
            results[spec.name] = p.skipped
            continue
        key = _result_key(spec, loaded.identity, limit)
        done = _finished(task_dir, key)
        if done is None:
            done = _run_one(p, scorer, loaded.identity, key, task_dir, limit, progress)
        elif progress is not None:
            progress(spec.name, len(p.items or []), len(p.items or []))
        results[spec.name] = done["metrics"] if "metrics" in done else done
        atomic.write_json(out / "results.json", results)
    atomic.write_json(out / "results.json", results)
    return results


def _run_one(p: Prepared, scorer: Scorer, identity: dict, key: str, task_dir: Path,
             limit: int | None, progress: Progress | None) -> dict[str, Any]:
    spec, items = p.spec, p.items or []
    done_count = 0

    def tick(k: int) -> None:
        nonlocal done_count
        done_count += k
        if progress is not None:
            progress(spec.name, done_count, len(items))

    t0 = time.perf_counter()
    try:
        if progress is not None:
            progress(spec.name, 0, len(items))
        summary, rows = score_task(spec, items, scorer, tick)
    except Exception as e:  # one task's crash must not lose the others
        err = {"error": f"{type(e).__name__}: {e}"}
        atomic.write_json(task_dir / "error.json", err | {"traceback": traceback.format_exc(), "key": key})
        return err
    atomic.write_jsonl(task_dir / "items.jsonl", rows)
    result = {
        "key": key, "status": "done", "task": describe(spec), **identity, "limit": limit,
        "metrics": {k: v for k, v in summary.items() if k != "stderr"}, "stderr": summary["stderr"],
        "n": summary["n"], "items": "items.jsonl", "seconds": round(time.perf_counter() - t0, 3),
        "engine_version": ENGINE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_json(task_dir / "result.json", result)
    (task_dir / "error.json").unlink(missing_ok=True)
    return result
