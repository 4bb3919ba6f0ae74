"""The eval kinds as one table of engines, the way :mod:`mixlab.mixopt.regressors` keeps regressors.

``ENGINES`` maps a task file's ``kind:`` to its :class:`~mixlab.eval.engine.Engine`:

* ``bpb`` - bits per byte of a gold continuation, by log-likelihood (:mod:`mixlab.eval.scoring`);
* ``mc`` - multiple choice by the log-likelihood of each choice (lm-eval's acc, acc_norm, mc1, mc2);
* ``generate`` - generated answers (:mod:`mixlab.eval.generation`), each metric scored by its
  verifier (:mod:`mixlab.eval.verifiers`, IFEval through :mod:`mixlab.eval.ifeval`);
* ``code`` - every sample run against the item's tests in the sandbox, unbiased pass@k;
* ``judge`` - both turns answered and rated by a judge (:mod:`mixlab.eval.judge`);
* ``kl_to_base`` - mean per-token forward KL(base || model) on the task's texts (:mod:`mixlab.eval.kl`).

A new kind is one module with an ``Engine`` subclass plus one entry here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from mixlab.errors import ConfigError, MixlabError
from mixlab.eval import items as I
from mixlab.eval import metrics as M
from mixlab.eval.engine import Context, Engine, Generative, Scored, Tick, Where, summarize_means
from mixlab.eval.judge import JudgeEngine
from mixlab.eval.kl import KLToBase

if TYPE_CHECKING:
    from mixlab.eval.scoring import Scorer
    from mixlab.eval.spec import TaskSpec


# ---------------------------------------------------------------- log-likelihood kinds


def score_task(spec: TaskSpec, items: list[I.Item], scorer: Scorer,
               on_progress: Tick | None = None) -> Scored:
    """Score a prepared ``bpb`` or ``mc`` task: (summary metrics with stderr, per-item rows).

    Items longer than the model's window are scored, not failed: a context is left-truncated as
    lm-eval does, a continuation longer than the window is scored in rolling windows. Their rows
    say so (``truncated``: context tokens unseen per request, ``windows``) and the summary counts
    them under ``windowing`` (kept out of the metrics)."""
    engine = get_engine(spec.kind)
    if not isinstance(engine, LogLikelihood):
        raise MixlabError(f"task {spec.name!r}: kind {spec.kind!r} is not scored by the log-likelihood engine")
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
        row.update(engine.item_scores(spec, it, lls))
        rows.append(row)
    summary: dict[str, Any] = {"n": len(rows)}
    stderr: dict[str, float] = {}
    for m in spec.metrics:
        values = [r[m] for r in rows]
        summary[m] = sum(values) / len(values) if values else float("nan")
        stderr[m] = M.mean_stderr(values)
    summary.update(engine.corpus_scores(rows))
    summary["stderr"] = stderr
    chance = engine.chance(spec, rows)
    if chance:
        summary["chance"] = chance
    if n_truncated or n_windowed:
        summary["windowing"] = {"window": scorer.max_length, "truncated_items": n_truncated,
                                "windowed_items": n_windowed}
    return summary, rows


class LogLikelihood(Engine):
    """Kinds scored from the log-likelihoods of (context, continuation) pairs."""

    def item_scores(self, spec: TaskSpec, item: I.Item, lls: list[float]) -> dict[str, Any]:
        raise NotImplementedError

    def corpus_scores(self, rows: list[dict]) -> dict[str, Any]:
        """Task-level figures that are not means over items."""
        return {}

    def score(self, spec: TaskSpec, items: Sequence[Any], ctx: Context, tick: Tick) -> Scored:
        return ctx.loglik(spec, items, tick)


class BitsPerByte(LogLikelihood):
    kind = "bpb"
    metrics = M.BPB_METRICS

    def prepare(self, spec: TaskSpec, docs: list[dict], pool: list[dict]) -> list[Any]:
        return I.continuations(spec, docs, pool)

    def item_scores(self, spec: TaskSpec, item: I.Item, lls: list[float]) -> dict[str, Any]:
        nll = -lls[0]
        return {"nll": nll, "n_bytes": item.n_bytes, "bpb": M.bits_per_byte(nll, item.n_bytes)}

    def reported(self, spec: TaskSpec) -> set[str]:
        return set(spec.metrics) | {"bpb_corpus"}

    def corpus_scores(self, rows: list[dict]) -> dict[str, Any]:
        if not rows:
            return {}
        return {"bpb_corpus": M.corpus_bits_per_byte([r["nll"] for r in rows], [r["n_bytes"] for r in rows])}


class MultipleChoice(LogLikelihood):
    kind = "mc"
    metrics = M.MC_METRICS
    scorings = ("full", "partial")

    def prepare(self, spec: TaskSpec, docs: list[dict], pool: list[dict]) -> list[Any]:
        return I.choice_requests(spec, docs, pool)

    def chance(self, spec: TaskSpec, rows: Sequence[dict]) -> dict[str, float]:
        """acc, acc_norm and mc1 of uniform guessing: the mean over items of 1 / choices (mc2, the
        probability mass on the true answers, has no such constant)."""
        if not rows:
            return {}
        c = sum(1.0 / len(r["lls"]) for r in rows) / len(rows)
        return {m: c for m in spec.metrics if m in ("acc", "acc_norm", "mc1")}

    def item_scores(self, spec: TaskSpec, item: I.Item, lls: list[float]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "gold": item.gold, "pred": M.argmax(lls),
            "pred_norm": M.argmax([ll / len(c) for ll, c in zip(lls, item.choices, strict=True)])}
        if "mc2" in spec.metrics:
            row["mc2"] = M.mc2_score(lls, item.gold)  # type: ignore[arg-type]
        else:
            scores = M.mc_scores(lls, item.choices, item.gold)
            scores["mc1"] = scores["acc"]
            row.update({m: scores[m] for m in spec.metrics})
        return row


# ---------------------------------------------------------------- generated answers


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


def score_generations(spec: TaskSpec, items: Sequence[I.GenItem], completions: Sequence[Sequence[Any]],
                      workers: int = 2) -> Scored:
    """Score generated answers (``Completion`` objects or plain strings, ``n`` per item) of a
    ``generate`` or ``code`` task: (summary metrics with stderr, per-item rows).

    Never raises on what a model wrote: an answer that does not parse scores 0 and its verifier's
    reason goes into the row. Usable on answers from anywhere (e.g. canonical solutions).
    """
    if len(completions) != len(items):
        raise ValueError(f"{len(items)} items but {len(completions)} lists of completions")
    engine = get_engine(spec.kind)
    if not isinstance(engine, (Generate, Code)):
        raise MixlabError(f"task {spec.name!r}: kind {spec.kind!r} is not scored from generations")
    return engine.score_answers(spec, items, completions, workers)


class Generate(Generative):
    kind = "generate"
    metrics = M.GENERATE_METRICS

    def verifiers_used(self, spec: TaskSpec) -> set[str]:
        return {M.GENERATE_VERIFIER[m] for m in spec.metrics if m in M.GENERATE_VERIFIER}

    def prepare(self, spec: TaskSpec, docs: list[dict], pool: list[dict]) -> list[Any]:
        return I.prompts_with_references(spec, docs, pool)

    def score(self, spec: TaskSpec, items: Sequence[Any], ctx: Context, tick: Tick) -> Scored:
        completions = ctx.generator.generate([it.prompt for it in items], spec.decoding, tick)
        return self.score_answers(spec, items, completions, ctx.code_workers)

    def score_answers(self, spec: TaskSpec, items: Sequence[I.GenItem], completions: Sequence[Sequence[Any]],
                      workers: int) -> Scored:
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
        return summarize_means(spec.metrics, rows, inst), rows


class Code(Generative):
    kind = "code"
    metrics = M.CODE_METRICS

    def is_metric(self, metric: str, spec: TaskSpec) -> bool:
        return M.pass_k(metric, 1) is not None

    def metric_hint(self) -> str:
        return " or pass@<k>"

    def verifiers_used(self, spec: TaskSpec) -> set[str]:
        return {"code"}

    def check_task(self, spec: TaskSpec, where: Where) -> None:
        for i, m in enumerate(spec.metrics):
            k = M.pass_k(m, spec.decoding.n)
            if k is not None and k > spec.decoding.n:
                raise ConfigError(f"{where(('metrics', i))}: {m} needs at least {k} samples; "
                                  f"set generation.n >= {k}")
        super().check_task(spec, where)

    def prepare(self, spec: TaskSpec, docs: list[dict], pool: list[dict]) -> list[Any]:
        items = I.prompts_with_references(spec, docs, pool)
        for it in items:
            if not (isinstance(it.reference, Mapping) and "tests" in it.reference):
                raise ConfigError(f"task {spec.name!r}, field `gold`: a code task's reference must be a mapping "
                                  f"with 'tests' (and 'entry_point', 'prompt', 'setup' as needed); item {it.id} "
                                  f"gave {type(it.reference).__name__}")
        return items

    def check(self, names: Sequence[str], ctx: Context) -> None:
        from mixlab.eval.sandbox import check_sandbox

        check_sandbox()

    def units(self, spec: TaskSpec, items: Sequence[Any]) -> int:
        return 2 * len(items)  # generations, then test runs

    def score(self, spec: TaskSpec, items: Sequence[Any], ctx: Context, tick: Tick) -> Scored:
        completions = ctx.generator.generate([it.prompt for it in items], spec.decoding, tick)
        out = self.score_answers(spec, items, completions, ctx.code_workers)
        tick(len(items))
        return out

    def score_answers(self, spec: TaskSpec, items: Sequence[I.GenItem], completions: Sequence[Sequence[Any]],
                      workers: int) -> Scored:
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
        return summarize_means(spec.metrics, rows), rows


# ---------------------------------------------------------------- the table

ENGINES: dict[str, type[Engine]] = {e.kind: e for e in (BitsPerByte, MultipleChoice, Generate, Code, JudgeEngine,
                                                              KLToBase)}


def get_engine(kind: str) -> Engine:
    """The engine of ``kind`` (a task's ``kind:``)."""
    if kind not in ENGINES:
        raise ConfigError(f"unknown eval kind {kind!r}; choose one of {', '.join(ENGINES)}")
    return ENGINES[kind]()
