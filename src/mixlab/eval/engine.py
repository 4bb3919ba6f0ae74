"""The interface every eval kind implements: one :class:`Engine` per ``kind:`` of a task file.

An engine owns everything that differs between kinds: the metrics a task may report, the rules a
task file of its kind must follow, how items are built from the task's data, what must be
checked before any model work (the sandbox can be built, the judge answers, a base model is
given), how progress is counted, what besides task and model keys its results, and how a task is
scored. The runner (:mod:`mixlab.eval.runner`) does the rest the same way for every kind: reading
data, reusing finished results, writing files, isolating failures.

Engines receive a :class:`Context`: the run's shared resources (the model, its scorer and
generator, the judge, the base model), built on first use by the runner. An engine that compares
the model with a base model declares ``needs_base = True``; the caller resolves the base (a path
or a loaded model) and the engine reads ``ctx.base``. The table of engines is
:data:`mixlab.eval.engines.ENGINES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mixlab.errors import MixlabError
from mixlab.eval import metrics as M

if TYPE_CHECKING:
    from mixlab.eval.spec import TaskSpec

Where = Callable[[tuple], str]  # task-file field path -> "file:line" for error messages
Tick = Callable[[int], None]  # progress: k more units done
Scored = tuple[dict[str, Any], list[dict]]  # (summary: metrics, "n", "stderr", ...; per-item rows)


class Context(Protocol):
    """What engines draw on during one run (see :class:`mixlab.eval.runner._Engines`)."""

    loaded: Any  # the LoadedModel being evaluated
    judge: Any  # a judge backend or None
    judge_cache: Any
    data_dir: Any
    code_workers: int
    gen_batch_size: int

    @property
    def scorer(self) -> Any: ...  # mixlab.eval.scoring.Scorer over the model

    @property
    def generator(self) -> Any: ...  # mixlab.eval.generation.Generator over the model

    @property
    def base(self) -> Any: ...  # the base model (LoadedModel) for engines with needs_base

    @property
    def base_identity(self) -> dict[str, Any] | None: ...  # what names the base in result keys

    def loglik(self, spec: TaskSpec, items: Sequence[Any], tick: Tick | None) -> Scored: ...


class Engine:
    """One eval kind. Subclasses set ``kind`` and ``metrics`` and implement :meth:`prepare` and
    :meth:`score`; the other methods have defaults that fit most kinds."""

    kind: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # the metric names a task of this kind may list
    generative: ClassVar[bool] = False  # generates text: `generation:` applies, --max-new-tokens caps it
    needs_base: ClassVar[bool] = False  # compares with a base model, resolved by the caller (ctx.base)
    needs_judge: ClassVar[bool] = False  # rated by the run's judge model (none exists inside training)
    scorings: ClassVar[tuple[str, ...]] = ("full",)  # the `scoring:` values it accepts
    blocks: ClassVar[tuple[str, ...]] = ()  # the kind-specific task-file blocks it reads (e.g. "judge")

    def is_metric(self, metric: str, spec: TaskSpec) -> bool:
        return metric in self.metrics

    def reported(self, spec: TaskSpec) -> set[str]:
        """The metric names a result of ``spec`` reports (its listed metrics plus corpus-level ones)."""
        return set(spec.metrics)

    def metric_hint(self) -> str:
        """What an unknown-metric error offers besides the listed metrics."""
        return ""

    def verifiers_used(self, spec: TaskSpec) -> set[str]:
        """The verifiers the task's metrics use (what a `verifier:` line may name)."""
        return set()

    def check_task(self, spec: TaskSpec, where: Where) -> None:
        """Rules of this kind a task file must follow (beyond the schema); raise ConfigError naming
        ``where((field, ...))``."""

    def prepare(self, spec: TaskSpec, docs: list[dict], pool: list[dict]) -> list[Any]:
        """The task's items from its docs (and few-shot pool); every template or data problem
        raises here, before any model work."""
        raise NotImplementedError

    def check(self, names: Sequence[str], ctx: Context) -> None:
        """Fail before any work when tasks ``names`` of this kind cannot run (engine resources)."""
        if self.needs_base and ctx.base_identity is None:
            raise MixlabError(f"task(s) {', '.join(names)} compare the model with its base model: pass the "
                              "base model (evaluate(..., base=PATH); a sweep gives each run's base)")

    def units(self, spec: TaskSpec, items: Sequence[Any]) -> int:
        """Progress units of a task (default: its items)."""
        return len(items)

    def chance(self, spec: TaskSpec, rows: Sequence[dict]) -> dict[str, float]:
        """Metric -> its expected value under uniform guessing, where the kind has one (multiple choice:
        the mean of 1 / choices). The report uses it to tell a base model that is at chance on a
        benchmark, whose changes measure answer bias rather than knowledge."""
        return {}

    def extra(self, spec: TaskSpec, ctx: Context) -> dict[str, Any]:
        """What besides the task and model decides a result (part of its key) and is recorded."""
        out: dict[str, Any] = {}
        if self.generative:
            from mixlab.eval.generation import has_chat_template

            out["chat_template"] = bool(spec.decoding.chat_template and has_chat_template(ctx.loaded.tokenizer))
            out["gen_batch_size"] = ctx.gen_batch_size if spec.decoding.temperature > 0 else None
        if self.needs_base:
            out["base"] = ctx.base_identity
        return out

    def score(self, spec: TaskSpec, items: Sequence[Any], ctx: Context, tick: Tick) -> Scored:
        raise NotImplementedError


def summarize_means(metrics: Sequence[str], rows: list[dict], pooled: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """Mean of each metric over items with its standard error; metrics in ``pooled`` (IFEval's
    instruction-level accuracies) are means over all their pooled values instead."""
    pooled = pooled or {}
    summary: dict[str, Any] = {"n": len(rows)}
    stderr: dict[str, float] = {}
    for m in metrics:
        values = pooled.get(m) or [r[m] for r in rows]
        summary[m] = sum(values) / len(values) if values else float("nan")
        stderr[m] = M.mean_stderr(values)
    summary["stderr"] = stderr
    return summary


class Generative(Engine):
    """Base of the kinds that generate text first (``generation:`` sets the decoding)."""

    generative = True

    def check_task(self, spec: TaskSpec, where: Where) -> None:
        from mixlab.errors import ConfigError
        from mixlab.eval import prompts

        if spec.fewshot.n and spec.target is None:
            raise ConfigError(f"{where(('fewshot',))}: few-shot examples of a {spec.kind} task need "
                              "`target:`, the template of an example's answer (e.g. \"{{solution}}\")")
        if "gold" in spec.model_fields_set:
            try:
                prompts.expression(spec.gold)
            except Exception as e:
                raise ConfigError(f"{where(('gold',))}: expression does not parse: {e}") from None
