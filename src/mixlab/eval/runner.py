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

Kinds: ``bpb``/``mc`` by log-likelihood (:mod:`mixlab.eval.scoring`); ``generate`` generates
(:mod:`mixlab.eval.generation`) and scores each metric with its verifier (:mod:`mixlab.eval.verifiers`,
IFEval through :mod:`mixlab.eval.ifeval`); ``code`` runs every sample against the item's tests in the
sandbox and reports unbiased pass@k; ``judge`` answers both turns and has a judge rate them
(:mod:`mixlab.eval.judge`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixlab import atomic
from mixlab.config import config_hash
from mixlab.errors import ConfigError, MixlabError
from mixlab.eval import metrics as M
from mixlab.eval.scoring import Scorer
from mixlab.eval.tasks import (
    SCORED_KINDS,
    GenItem,
    Item,
    MissingData,
    TaskSpec,
    build_gen_items,
    build_items,
    describe,
    load_docs,
)

ENGINE_VERSION = 1
Progress = Callable[[str, int, int], None]  # (task, done, total)


@dataclass
class Prepared:
    spec: TaskSpec
    items: list[Item] | None = None
    gen_items: list[GenItem] | None = None
    skipped: dict[str, Any] | None = None

    @property
    def n(self) -> int:
        return len(self.items or self.gen_items or [])


def prepare(spec: TaskSpec, limit: int | None = None, data_dir: str | Path | None = None) -> Prepared:
    """Read the task's data and render its requests (the first ``limit`` items, in file order)."""
    try:
        docs, pool = load_docs(spec, data_dir)
    except MissingData as e:
        return Prepared(spec, skipped={"skipped": "data not found", "path": e.path})
    if limit is not None:
        docs = docs[:limit]
    if spec.kind in SCORED_KINDS:
        return Prepared(spec, items=build_items(spec, docs, pool))
    items = build_gen_items(spec, docs, pool)
    if spec.kind == "code":
        for it in items:
            if not (isinstance(it.reference, Mapping) and "tests" in it.reference):
                raise ConfigError(f"task {spec.name!r}, field `gold`: a code task's reference must be a mapping "
                                  f"with 'tests' (and 'entry_point', 'prompt', 'setup' as needed); item {it.id} "
                                  f"gave {type(it.reference).__name__}")
    return Prepared(spec, gen_items=items)


def score_task(spec: TaskSpec, items: list[Item], scorer: Scorer,
               on_progress: Callable[[int], None] | None = None) -> tuple[dict[str, Any], list[dict]]:
    """Score a prepared task: (summary metrics with stderr, per-item rows).

    Items longer than the model's window are scored, not failed: a context is left-truncated as
    lm-eval does, a continuation longer than the window is scored in rolling windows. Their rows
    say so (``truncated``: context tokens unseen per request, ``windows``) and the summary counts
    them under ``windowing`` (kept out of the metrics)."""
    scored = scorer.score_groups([it.pairs for it in items], on_progress)
    rows: list[dict[str, Any]] = []
    n_truncated = n_windowed = 0
    for it, res in zip(items, scored, strict=True):
        lls = [s.logprob for s in res]
        row: dict[str, Any] = {"id": it.id, "lls": lls, "n_tokens": [s.n_tokens for s in res]}
        if any(s.truncated for s in res):
            row["truncated"] = [s.truncated for s in res]
            n_truncated += 1
        if any(s.windows > 1 for s in res):
            row["windows"] = [s.windows for s in res]
            n_windowed += 1
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
    if n_truncated or n_windowed:
        summary["windowing"] = {"window": scorer.max_length, "truncated_items": n_truncated,
                                "windowed_items": n_windowed}
    return summary, rows


# ---------------------------------------------------------------- generative kinds


def _text(c: Any) -> str:
    return c if isinstance(c, str) else c.text


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def _ifeval_item(reference: Mapping[str, Any]):
    from mixlab.eval.ifeval import IFEvalItem

    return IFEvalItem(int(reference["key"]), str(reference.get("prompt", "")),
                      list(reference["instruction_id_list"]), list(reference["kwargs"]))


def score_generations(spec: TaskSpec, items: Sequence[GenItem], completions: Sequence[Sequence[Any]],
                      workers: int = 2) -> tuple[dict[str, Any], list[dict]]:
    """Score generated answers (``Completion`` objects or plain strings, ``n`` per item) of a
    ``generate`` or ``code`` task: (summary metrics with stderr, per-item rows).

    Never raises on what a model wrote: an answer that does not parse scores 0 and its verifier's
    reason goes into the row. Usable on answers from anywhere (e.g. canonical solutions).
    """
    if len(completions) != len(items):
        raise ValueError(f"{len(items)} items but {len(completions)} lists of completions")
    if spec.kind == "code":
        return _score_code(spec, items, completions, workers)
    if spec.kind != "generate":
        raise MixlabError(f"task {spec.name!r}: kind {spec.kind!r} is not scored from generations")
    from mixlab.eval.verifiers import get_verifier

    verifiers = {v: get_verifier(v) for v in {M.GENERATE_VERIFIER[m] for m in spec.metrics} if v != "ifeval"}
    ifeval = any(m in M.IFEVAL_METRICS for m in spec.metrics)
    rows: list[dict[str, Any]] = []
    inst: dict[str, list[float]] = {"inst_level_strict_acc": [], "inst_level_loose_acc": []}
    for it, comps in zip(items, completions, strict=True):
        texts = [_text(c) for c in comps]
        row: dict[str, Any] = {"id": it.id, "completions": texts, "reference": _jsonable(it.reference)}
        if comps and not isinstance(comps[0], str):
            row["finish"] = [c.finish for c in comps]
            row["n_tokens"] = [c.n_tokens for c in comps]
        reasons: dict[str, str] = {}
        extracted: dict[str, Any] = {}
        for name, verify in verifiers.items():
            verdicts = [verify(t, it.reference) for t in texts]
            for m in (m for m in spec.metrics if M.GENERATE_VERIFIER[m] == name):
                row[m] = sum(v.score for v in verdicts) / len(verdicts)
                if verdicts[0].reason:
                    reasons[m] = verdicts[0].reason
            extracted[name] = verdicts[0].extracted
        if ifeval:
            from mixlab.eval.ifeval import score_response

            scores = [score_response(_ifeval_item(it.reference), t) for t in texts]
            row["prompt_level_strict_acc"] = sum(s.prompt_strict for s in scores) / len(scores)
            row["prompt_level_loose_acc"] = sum(s.prompt_loose for s in scores) / len(scores)
            strict = [float(x) for s in scores for x in s.inst_strict]
            loose = [float(x) for s in scores for x in s.inst_loose]
            row["inst_level_strict_acc"] = sum(strict) / len(strict) if strict else 0.0
            row["inst_level_loose_acc"] = sum(loose) / len(loose) if loose else 0.0
            row["inst_strict"], row["inst_loose"] = scores[0].inst_strict, scores[0].inst_loose
            inst["inst_level_strict_acc"] += strict
            inst["inst_level_loose_acc"] += loose
            if scores[0].reason:
                reasons["ifeval"] = scores[0].reason
        row["extracted"] = extracted
        if reasons:
            row["reasons"] = reasons
        rows.append(row)
    return _summarize(spec.metrics, rows, inst), rows


def _score_code(spec: TaskSpec, items: Sequence[GenItem], completions: Sequence[Sequence[Any]],
                workers: int) -> tuple[dict[str, Any], list[dict]]:
    """Run every sample against its item's tests in the sandbox, ``workers`` programs at a time."""
    from mixlab.eval.sandbox import check_sandbox
    from mixlab.eval.verifiers import pass_at_k, verify_code

    check_sandbox()
    jobs = [(i, _text(c)) for i, comps in enumerate(completions) for c in comps]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        verdicts = list(pool.map(lambda job: verify_code(job[1], items[job[0]].reference), jobs))
    per_item: list[list[tuple[str, Any]]] = [[] for _ in items]
    for (i, text), v in zip(jobs, verdicts, strict=True):
        per_item[i].append((text, v))
    rows = []
    for it, results in zip(items, per_item, strict=True):
        n, c = len(results), sum(v.correct for _, v in results)
        row: dict[str, Any] = {"id": it.id, "n": n, "c": c,
                               "samples": [{"completion": t, "passed": v.correct, **({"reason": v.reason} if v.reason else {})}
                                           for t, v in results]}
        for m in spec.metrics:
            k = M.pass_k(m, n)
            if k is None or k > n:
                raise ValueError(f"{m} needs at least {k} samples per item, got {n}")
            row[m] = pass_at_k(n, c, k)
        rows.append(row)
    return _summarize(spec.metrics, rows, {}), rows


def _summarize(metrics: Sequence[str], rows: list[dict], pooled: dict[str, list[float]]) -> dict[str, Any]:
    """Mean of each metric over items with its standard error; metrics in ``pooled`` (IFEval's
    instruction-level accuracies) are means over all their pooled values instead."""
    summary: dict[str, Any] = {"n": len(rows)}
    stderr: dict[str, float] = {}
    for m in metrics:
        values = pooled.get(m) or [r[m] for r in rows]
        summary[m] = sum(values) / len(values) if values else float("nan")
        stderr[m] = M.mean_stderr(values)
    summary["stderr"] = stderr
    return summary


class _Engines:
    """The scorer, generator and judge a run needs, built on first use."""

    def __init__(self, loaded, batch_size: int, gen_batch_size: int, max_length: int | None,
                 judge, judge_cache, code_workers: int, data_dir, workers: int = 1):
        self.loaded, self.batch_size, self.gen_batch_size = loaded, batch_size, gen_batch_size
        self.workers = workers
        self.max_length, self.judge, self.judge_cache = max_length, judge, judge_cache
        self.code_workers, self.data_dir = code_workers, data_dir
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

    def units(self, p: Prepared) -> int:
        """Progress units of a task: items, plus test runs (code) or turn judgments (judge)."""
        if p.spec.kind == "code":
            return 2 * p.n
        if p.spec.kind == "judge":
            return p.n + sum(min(len(it.turns), 2) for it in p.gen_items or [])
        return p.n

    def run(self, p: Prepared, tick: Callable[[int], None]) -> tuple[dict[str, Any], list[dict]]:
        spec = p.spec
        if spec.kind in SCORED_KINDS:
            return score_task(spec, p.items or [], self.scorer, tick)
        items = p.gen_items or []
        if spec.kind == "judge":
            from mixlab.eval.judge import JudgeTaskSpec, generate_answers, judge_answers, load_judge_prompts
            from mixlab.eval.judge import JudgmentCache, summarize

            jspec = JudgeTaskSpec.model_validate(spec.judge or {})
            prompts = load_judge_prompts(jspec.prompts, self.data_dir)
            answers = generate_answers(items, self.generator, spec.decoding, jspec)
            tick(len(items))
            rows = judge_answers(items, answers, self.judge, jspec, prompts, JudgmentCache(self.judge_cache), tick)
            summary = summarize(rows)
            summary["stderr"] = {"judge_score": M.mean_stderr([r["score"] for r in rows if r["score"] is not None])}
            return summary, rows
        completions = self.generator.generate([it.prompt for it in items], spec.decoding, tick)
        summary, rows = score_generations(spec, items, completions, self.code_workers)
        if spec.kind == "code":
            tick(len(items))
        return summary, rows

    def extra(self, p: Prepared) -> dict[str, Any]:
        """What besides the task and model decides a result (part of its key) and is recorded."""
        out: dict[str, Any] = {}
        if p.spec.kind in ("generate", "code", "judge"):
            from mixlab.eval.generation import has_chat_template

            out["chat_template"] = bool(p.spec.decoding.chat_template and has_chat_template(self.loaded.tokenizer))
            out["gen_batch_size"] = self.gen_batch_size if p.spec.decoding.temperature > 0 else None
        if p.spec.kind == "judge":
            out["judge"] = self.judge.identity
        return out


def preflight(prepared: Sequence[Prepared], judge) -> None:
    """Fail before any work when a task's engine cannot run: a judge task without a judge or with an
    unreachable one, a code task where the sandbox cannot be built."""
    runnable = [p for p in prepared if p.skipped is None]
    judged = [p.spec.name for p in runnable if p.spec.kind == "judge"]
    if judged:
        if judge is None:
            raise MixlabError(f"task(s) {', '.join(judged)} need a judge: pass --judge-url (an OpenAI-compatible "
                              "endpoint) or --judge-model (a local Hugging Face model)")
        judge.check()
    if any(p.spec.kind == "code" for p in runnable):
        from mixlab.eval.sandbox import check_sandbox

        check_sandbox()


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
) -> dict[str, Any]:
    """Evaluate ``loaded`` (a :class:`~mixlab.models.pretrained.LoadedModel`) on ``specs``.

    Returns the content of ``OUT/results.json``. Finished tasks with a matching key are reused.
    ``judge`` (a :class:`~mixlab.eval.judge.HTTPJudge` or ``LocalJudge``) rates ``judge`` tasks;
    ``gen_batch_size`` is prompts per generation batch; ``max_new_tokens`` caps every generative
    task's answers (it changes the task's fingerprint, so results are kept apart); ``judge_cache``
    is the judgment cache folder (default under the mixlab cache); ``code_workers`` sandboxed
    programs run at once; ``workers`` processes share log-likelihood scoring (see
    :class:`~mixlab.eval.scoring.Scorer`; results do not depend on it).
    """
    out = Path(out_dir)
    if max_new_tokens is not None:
        specs = [s.model_copy(update={"generation": s.decoding.model_copy(update={"max_new_tokens": max_new_tokens})})
                 if s.kind in ("generate", "code", "judge") else s for s in specs]
    prepared = [prepare(s, limit, data_dir) for s in specs]  # every error in task files surfaces here
    preflight(prepared, judge)  # missing or unreachable judge, no sandbox: fail before any work
    engines = _Engines(loaded, batch_size, gen_batch_size, max_length, judge, judge_cache, code_workers, data_dir,
                       workers)
    results: dict[str, Any] = {}
    for p in prepared:
        spec, task_dir = p.spec, out / "tasks" / p.spec.name
        if p.skipped is not None:
            results[spec.name] = p.skipped
            continue
        key = _result_key(spec, loaded.identity, limit, engines.extra(p))
        done = _finished(task_dir, key)
        if done is None:
            done = _run_one(p, engines, loaded.identity, key, task_dir, limit, progress)
        elif progress is not None:
            progress(spec.name, engines.units(p), engines.units(p))
        results[spec.name] = done["metrics"] if "metrics" in done else done
        atomic.write_json(out / "results.json", results)
    atomic.write_json(out / "results.json", results)
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
        "metrics": {k: v for k, v in summary.items() if k not in ("stderr", "windowing")},
        "stderr": summary["stderr"], **({"windowing": summary["windowing"]} if "windowing" in summary else {}),
        **engines.extra(p),
        "n": summary["n"], "items": "items.jsonl", "seconds": round(time.perf_counter() - t0, 3),
        "engine_version": ENGINE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_json(task_dir / "result.json", result)
    (task_dir / "error.json").unlink(missing_ok=True)
    return result
