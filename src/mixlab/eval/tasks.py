"""Tasks as data: a task is a YAML file; this module validates it, finds its data and builds requests.

A task file names its data (a mixlab dataset adapter or a file), the prompt (Jinja2, as in
lm-evaluation-harness), the kind of scoring and the metrics. Adding a benchmark is writing a file in
``eval/tasks/`` (or anywhere, passed by path). Example::

    name: arc_easy
    kind: mc
    data: {source: arc_easy, split: test}
    prompt: "Question: {{question}}\\nAnswer:"
    choices: choices          # expression giving the list of choice texts (or a literal list)
    gold: label               # expression giving the gold index
    metrics: [acc, acc_norm]

Each ``kind`` is an engine (:mod:`mixlab.eval.engines`) that checks its own rules and renders the
items (:mod:`mixlab.eval.items`): ``bpb`` and ``mc`` are scored by log-likelihood; ``generate``,
``code`` and ``judge`` use the same file format with ``generation:`` (decoding), ``gold:`` (an
expression giving what the verifiers compare with, ``reference_answer`` by default), ``verifier:``
and ``judge:`` blocks. The schema is :mod:`mixlab.eval.spec`. Example::

    name: gsm8k
    kind: generate
    data: {source: gsm8k, split: test}
    prompt: "Question: {{question}}\nAnswer:"
    target: "{{solution}}"        # what a few-shot example shows as its answer
    fewshot: {n: 5, split: train}
    generation: {max_new_tokens: 256, stop: ["Question:"]}
    metrics: [numeric_match]      # each generate metric names its verifier (metrics.GENERATE_VERIFIER)
Everything a file gets wrong (unknown kind or metric, a template naming a field the data lacks, a
file that does not parse) is a :class:`~mixlab.errors.MixlabError` raised before any scoring.
"""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from mixlab.config import read_yaml, validate
from mixlab.data.records import REQUIRED, Record, iter_json_lines, record_from_dict
from mixlab.errors import ConfigError, DataError, MixlabError
from mixlab.eval import prompts
from mixlab.eval.engine import Engine, Where
from mixlab.eval.engines import ENGINES, get_engine
from mixlab.eval.items import GenItem, Item, flatten, matches
from mixlab.eval.spec import DataSpec, FewshotSpec, GenerationSpec, JudgeSpec, TaskSpec
from mixlab.settings import data_dir as _data_dir

__all__ = ["DataSpec", "FewshotSpec", "GenerationSpec", "GenItem", "Item", "JudgeSpec", "MissingData", "TaskSpec",
           "build_gen_items", "build_items", "builtin_data_files", "builtin_suites", "builtin_tasks", "data_file",
           "describe", "get_task", "load_docs", "load_task", "resolve_tasks", "suite_tasks"]

TASKS_DIR = Path(__file__).parent / "tasks"
SUITES_DIR = Path(__file__).parent / "suites"


class MissingData(MixlabError):
    """A task's data is not on this machine: the task is reported as skipped with ``path``."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------- the task file


def _where(path: Path, lines: dict[tuple, int], key: tuple) -> str:
    line = lines.get(key) or lines.get(key[:1])
    return f"{path}:{line}" if line else str(path)


def _check(spec: TaskSpec, path: Path, lines: dict[tuple, int]) -> None:
    """Semantic checks pydantic cannot express, each naming the file and line: the rules every task
    follows here, then its engine's own (:meth:`~mixlab.eval.engine.Engine.check_task`)."""

    def where(key: tuple) -> str:
        return _where(path, lines, key)

    if spec.kind not in ENGINES:
        raise ConfigError(f"{where(('kind',))}: field `kind`: unknown kind {spec.kind!r}; choose one of "
                          f"{', '.join(ENGINES)}")
    engine = get_engine(spec.kind)
    for i, m in enumerate(spec.metrics):
        if not engine.is_metric(m, spec):
            raise ConfigError(f"{where(('metrics', i))}: unknown metric {m!r} for kind "
                              f"{spec.kind!r}; choose from {', '.join(engine.metrics)}{engine.metric_hint()}")
    if not spec.metrics:
        raise ConfigError(f"{where(('metrics',))}: list at least one metric")
    if spec.primary and spec.primary not in spec.metrics:
        raise ConfigError(f"{where(('primary',))}: primary metric {spec.primary!r} is not in metrics")
    given = [k for k in ("source", "path", "generator") if getattr(spec.data, k) is not None]
    if len(given) != 1:
        raise ConfigError(f"{where(('data',))}: give exactly one of `data.source` "
                          "(a dataset adapter), `data.path` (a file) or `data.generator` (module:function)")
    if spec.scoring not in engine.scorings:
        kinds = [k for k, e in ENGINES.items() if spec.scoring in e.scorings]
        raise ConfigError(f"{where(('scoring',))}: {spec.scoring} scoring is for kind {', '.join(kinds)}")
    if spec.verifier is not None:
        _check_verifier(spec, engine, where)
    for block in ("judge",):
        if getattr(spec, block) is not None and block not in engine.blocks:
            kinds = [k for k, e in ENGINES.items() if block in e.blocks]
            raise ConfigError(f"{where((block,))}: a `{block}:` block is for kind {', '.join(kinds)}")
    engine.check_task(spec, where)
    for key in ("prompt", "description", "target"):
        try:
            if getattr(spec, key):
                prompts.template(getattr(spec, key))
        except Exception as e:  # jinja2.TemplateSyntaxError
            raise ConfigError(f"{where((key,))}: template does not parse: {e}") from None
    for key in ("choices", "gold"):
        if isinstance(getattr(spec, key), str):
            try:
                prompts.expression(getattr(spec, key))
            except Exception as e:
                raise ConfigError(f"{where((key,))}: expression does not parse: {e}") from None


def _check_verifier(spec: TaskSpec, engine: Engine, where: Where) -> None:
    """``verifier:`` must name a known verifier that the task's metrics use."""
    from mixlab.eval.verifiers import VERIFIERS

    known = sorted({*VERIFIERS, "ifeval"})
    if spec.verifier not in known:
        raise ConfigError(f"{where(('verifier',))}: unknown verifier {spec.verifier!r}; "
                          f"known verifiers: {', '.join(known)}")
    if spec.verifier not in engine.verifiers_used(spec):
        raise ConfigError(f"{where(('verifier',))}: verifier {spec.verifier!r} is not used by "
                          f"kind {spec.kind!r} with metrics {', '.join(spec.metrics)} (each generate metric "
                          "names its verifier; code tasks use 'code')")


def load_task(path: str | Path) -> TaskSpec:
    """Read and validate one task file. The task name defaults to the file name."""
    path = Path(path)
    data, lines = read_yaml(path)
    data.setdefault("name", path.stem.removesuffix(".yaml"))
    spec = validate(TaskSpec, data, str(path), lines)
    _check(spec, path, lines)
    return spec


@cache
def builtin_tasks() -> dict[str, Path]:
    """Task name -> file for every task shipped in ``eval/tasks/`` (the name is the file stem)."""
    out: dict[str, Path] = {}
    for p in sorted(TASKS_DIR.rglob("*.yaml")):
        if p.stem in out:
            raise ConfigError(f"{p}: task name {p.stem!r} also defined in {out[p.stem]}")
        out[p.stem] = p
    return out


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}


def get_task(name_or_path: str | Path) -> TaskSpec:
    """A built-in task by name, or a task file by path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return load_task(p)
    known = builtin_tasks()
    if str(name_or_path) not in known:
        import difflib

        close = difflib.get_close_matches(str(name_or_path), known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown task {str(name_or_path)!r}.{hint} Give a task name from "
                          f"{TASKS_DIR} or the path of a task YAML file.")
    return load_task(known[str(name_or_path)])


def suite_tasks(name_or_path: str | Path) -> list[str]:
    """Task names (or task file paths) listed by a suite file (``tasks: [...]``)."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        suites = builtin_suites()
        if str(name_or_path) not in suites:
            raise ConfigError(f"unknown suite {str(name_or_path)!r}; built-in suites: {', '.join(suites)}")
        p = suites[str(name_or_path)]
    data, lines = read_yaml(p)
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"{_where(p, lines, ('tasks',))}: a suite needs `tasks:`, a list of task names")
    return tasks


def resolve_tasks(suite: str | None = None, tasks: list[str] | None = None) -> list[TaskSpec]:
    """Validate every task of a suite and/or an explicit list (duplicates dropped, order kept)."""
    names = (suite_tasks(suite) if suite else []) + list(tasks or [])
    if not names:
        raise ConfigError("name a suite (--suite) or tasks (--tasks a,b)")
    seen: dict[str, TaskSpec] = {}
    for n in names:
        spec = get_task(n)
        seen.setdefault(spec.name, spec)
    return list(seen.values())


# ---------------------------------------------------------------- data


def _record_doc(r: Record, origin: str) -> dict[str, Any]:
    """Every Record field present (None when unset) so templates can write ``solution or ...``."""
    d = {f.name: getattr(r, f.name) for f in fields(Record)}
    return flatten(d) | {"_where": f"{origin}:{r.id}"}


def _read_file(path: Path) -> list[dict[str, Any]]:
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        rows = [(n, obj) for n, obj in iter_json_lines(path)]
    elif name.endswith(".json"):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg}", path, e.lineno) from None
        if not isinstance(obj, list):
            raise DataError("expected a JSON array of objects", path)
        rows = list(enumerate(obj, 1))
    elif name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(enumerate(csv.DictReader(f), 2))
    else:
        raise DataError("unsupported data file; use .jsonl, .jsonl.gz, .json or .csv", path)
    docs = []
    for n, obj in rows:
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, n)
        if all(k in obj for k in REQUIRED):  # a mixlab record file: validate it as one
            docs.append(_record_doc(record_from_dict(obj, path, n), str(path)))
        else:
            docs.append(flatten(obj) | {"_where": f"{path}:{n}"})
    return docs


def _load_source(name: str, data_dir: str | Path | None) -> list[dict[str, Any]]:
    from mixlab.data.sources import load_records

    try:
        records = load_records(name, data_dir=data_dir)
    except DataError as e:
        if e.path is not None and not Path(e.path).exists():
            raise MissingData(str(e), e.path) from None
        raise
    return [_record_doc(r, name) for r in records]


def _generate(target: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    import importlib

    module, _, func = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"data.generator {target!r} cannot be imported ({e}); write it as module:function") from None
    records = list(fn(**args))
    if not all(isinstance(r, Record) for r in records):
        raise DataError(f"data.generator {target!r} must return mixlab Records")
    return [_record_doc(r, func) for r in records]


def data_file(spec: TaskSpec, data_dir: str | Path | None = None) -> Path | None:
    """The file a task reads itself (``data.path``; relative paths are under the data dir), or None
    when a dataset adapter or a generator gives its items."""
    if spec.data.path is None:
        return None
    path = Path(spec.data.path).expanduser()
    return path if path.is_absolute() else _data_dir(data_dir) / path


def builtin_data_files(data_dir: str | Path | None = None) -> dict[str, Path]:
    """Built-in task -> the file it reads, for the tasks that read a file of their own rather than a
    registered dataset (``mixlab data sources`` shows whether each is here)."""
    found = {name: data_file(load_task(p), data_dir) for name, p in builtin_tasks().items()}
    return {name: path for name, path in found.items() if path is not None}


def load_docs(spec: TaskSpec, data_dir: str | Path | None = None) -> tuple[list[dict], list[dict]]:
    """(evaluation docs, few-shot pool) of a task, in file order. Missing data raises MissingData."""
    path = data_file(spec, data_dir)
    if path is not None:
        if not path.exists():
            raise MissingData(f"data file not found: {path}", str(path))
        docs = _read_file(path)
        origin = str(path)
    elif spec.data.generator is not None:
        docs = _generate(spec.data.generator, spec.data.args)
        origin = f"generator {spec.data.generator!r}"
    else:
        docs = _load_source(spec.data.source, data_dir)
        origin = f"dataset {spec.data.source!r}"
    docs = [d for d in docs if matches(d, spec.data.where)]

    def split(name: str | None) -> list[dict]:
        if name is None:
            return docs
        chosen = [d for d in docs if d.get("split") == name]
        if not chosen:
            have = sorted({str(d.get("split")) for d in docs})
            raise DataError(f"task {spec.name!r}: no items of split {name!r} in {origin} "
                            f"(splits present: {', '.join(have)})")
        return chosen

    evaluation = split(spec.data.split)
    pool = split(spec.fewshot.split) if spec.fewshot.n and spec.fewshot.split else evaluation
    return evaluation, pool


# ---------------------------------------------------------------- requests


def build_items(spec: TaskSpec, docs: list[dict], pool: list[dict] | None = None) -> list[Item]:
    """Render every item's requests of a log-likelihood (``bpb``/``mc``) task; any template/data
    problem raises before scoring starts."""
    engine = get_engine(spec.kind)
    if engine.generative:
        raise MixlabError(f"task {spec.name!r}: kind {spec.kind!r} is not scored by the log-likelihood engine")
    return engine.prepare(spec, docs, docs if pool is None else pool)


def build_gen_items(spec: TaskSpec, docs: list[dict], pool: list[dict] | None = None) -> list[GenItem]:
    """Render every item of a ``generate``/``code``/``judge`` task; template or data problems raise
    here, before any generation."""
    engine = get_engine(spec.kind)
    if not engine.generative:
        raise MixlabError(f"task {spec.name!r}: kind {spec.kind!r} is not a generative kind")
    return engine.prepare(spec, docs, docs if pool is None else pool)


def describe(spec: TaskSpec) -> dict[str, Any]:
    """What a result file records about the task that produced it."""
    return {"name": spec.name, "kind": spec.kind, "version": spec.version, "hash": spec.fingerprint(),
            "metrics": spec.metrics, "primary": spec.primary_metric,
            "data": yaml.safe_load(json.dumps(spec.data.model_dump(mode="json")))}
