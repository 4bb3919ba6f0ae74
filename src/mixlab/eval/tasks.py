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

Kinds: ``bpb`` and ``mc`` are scored by log-likelihood (``build_items``); ``generate``, ``code`` and
``judge`` use the same file format with ``generation:`` (decoding), ``gold:`` (an expression giving
what the verifiers compare with, ``reference_answer`` by default), ``verifier:`` and ``judge:`` blocks
and are rendered by ``build_gen_items`` for the generation engine. Example::

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
import random
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from mixlab.config import StrictModel, config_hash, read_yaml, validate
from mixlab.data.records import REQUIRED, Record, iter_json_lines, record_from_dict
from mixlab.errors import ConfigError, DataError, MixlabError
from mixlab.eval import prompts
from mixlab.eval.metrics import GENERATE_VERIFIER, METRICS_BY_KIND, is_metric, pass_k
from mixlab.settings import data_dir as _data_dir

TASKS_DIR = Path(__file__).parent / "tasks"
SUITES_DIR = Path(__file__).parent / "suites"
SCORED_KINDS = ("bpb", "mc")  # kinds scored by log-likelihood
GENERATIVE_KINDS = ("generate", "code", "judge")  # kinds that generate text first


class MissingData(MixlabError):
    """A task's data is not on this machine: the task is reported as skipped with ``path``."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------- the task file


class DataSpec(StrictModel):
    """Where items come from: a dataset adapter (``source``), a file (``path``; relative paths are
    under the data dir), or a function returning records (``generator: "module:function"`` called
    with ``args``, e.g. toyworld's item makers); filtered by ``split`` and ``where`` (field -> value
    or list of values)."""

    source: str | None = None
    path: str | None = None
    generator: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    split: str | None = None
    where: dict[str, Any] = Field(default_factory=dict)


class FewshotSpec(StrictModel):
    """``n`` examples before each item, drawn with ``seed`` from ``split`` (else the other items);
    ``match`` lists fields a shot must share with the item (MMLU: the subject); ``where`` filters the
    pool like ``data.where``. ``sampler: first_n`` takes the pool's first ``n`` in file order instead
    of a seeded draw, and ``samples`` gives the examples inline (lm-eval's ``fewshot_config.samples``,
    e.g. Minerva MATH's four worked solutions), used in order."""

    n: int = Field(0, ge=0)
    split: str | None = None
    match: list[str] = Field(default_factory=list)
    where: dict[str, Any] = Field(default_factory=dict)
    sampler: Literal["random", "first_n"] = "random"
    samples: list[dict[str, Any]] = Field(default_factory=list)
    seed: int = 1234
    delimiter: str = "\n\n"


class GenerationSpec(StrictModel):
    """Decoding settings for ``generate``/``code``/``judge`` kinds (``mixlab.eval.generation``):
    greedy when ``temperature`` is 0, else sampled with ``top_p``; ``n`` answers per prompt;
    ``stop`` sequences end an answer (it is cut before them); ``chat_template`` renders the prompt
    as a user turn with the tokenizer's chat template when it has one."""

    max_new_tokens: int = Field(256, ge=1)
    stop: list[str] = Field(default_factory=list)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    seed: int = 1234
    chat_template: bool = False


class TaskSpec(StrictModel):
    name: str
    kind: Literal["bpb", "mc", "generate", "code", "judge"]
    data: DataSpec
    prompt: str
    description: str = ""
    target_delimiter: str = " "
    choices: str | list[str] | None = None
    gold: str = "label"
    target: str | None = None
    scoring: Literal["full", "partial"] = "full"
    metrics: list[str]
    primary: str | None = None
    fewshot: FewshotSpec = Field(default_factory=FewshotSpec)
    generation: GenerationSpec | None = None
    verifier: str | None = None
    judge: dict[str, Any] | None = None
    version: int = 1

    @property
    def primary_metric(self) -> str:
        return self.primary or self.metrics[0]

    @property
    def decoding(self) -> GenerationSpec:
        """The generation settings (defaults when the file has no ``generation:`` block)."""
        return self.generation or GenerationSpec()

    @property
    def reference(self) -> str:
        """Expression giving a generated answer's reference: ``gold`` when the file sets it."""
        return self.gold if "gold" in self.model_fields_set else "reference_answer"

    def fingerprint(self) -> str:
        return config_hash(self)


def _where(path: Path, lines: dict[tuple, int], key: tuple) -> str:
    line = lines.get(key) or lines.get(key[:1])
    return f"{path}:{line}" if line else str(path)


def _check(spec: TaskSpec, path: Path, lines: dict[tuple, int]) -> None:
    """Semantic checks pydantic cannot express, each naming the file and line."""
    allowed = METRICS_BY_KIND[spec.kind]
    for i, m in enumerate(spec.metrics):
        if not is_metric(spec.kind, m):
            extra = " or pass@<k>" if spec.kind == "code" else ""
            raise ConfigError(f"{_where(path, lines, ('metrics', i))}: unknown metric {m!r} for kind "
                              f"{spec.kind!r}; choose from {', '.join(allowed)}{extra}")
        k = pass_k(m, spec.decoding.n)
        if spec.kind == "code" and k is not None and k > spec.decoding.n:
            raise ConfigError(f"{_where(path, lines, ('metrics', i))}: {m} needs at least {k} samples; "
                              f"set generation.n >= {k}")
    if not spec.metrics:
        raise ConfigError(f"{_where(path, lines, ('metrics',))}: list at least one metric")
    if spec.primary and spec.primary not in spec.metrics:
        raise ConfigError(f"{_where(path, lines, ('primary',))}: primary metric {spec.primary!r} is not in metrics")
    given = [k for k in ("source", "path", "generator") if getattr(spec.data, k) is not None]
    if len(given) != 1:
        raise ConfigError(f"{_where(path, lines, ('data',))}: give exactly one of `data.source` "
                          "(a dataset adapter), `data.path` (a file) or `data.generator` (module:function)")
    if spec.scoring == "partial" and spec.kind != "mc":
        raise ConfigError(f"{_where(path, lines, ('scoring',))}: partial scoring is for kind mc")
    _check_generative(spec, path, lines)
    for key in ("prompt", "description", "target"):
        try:
            if getattr(spec, key):
                prompts.template(getattr(spec, key))
        except Exception as e:  # jinja2.TemplateSyntaxError
            raise ConfigError(f"{_where(path, lines, (key,))}: template does not parse: {e}") from None
    for key in ("choices", "gold"):
        if isinstance(getattr(spec, key), str):
            try:
                prompts.expression(getattr(spec, key))
            except Exception as e:
                raise ConfigError(f"{_where(path, lines, (key,))}: expression does not parse: {e}") from None


def _check_generative(spec: TaskSpec, path: Path, lines: dict[tuple, int]) -> None:
    """``verifier:`` must name a known verifier that the task's metrics use; ``judge:`` must be a
    valid judge block (and only on judge tasks)."""
    if spec.verifier is not None:
        from mixlab.eval.verifiers import VERIFIERS

        known = sorted({*VERIFIERS, "ifeval"})
        if spec.verifier not in known:
            raise ConfigError(f"{_where(path, lines, ('verifier',))}: unknown verifier {spec.verifier!r}; "
                              f"known verifiers: {', '.join(known)}")
        used = {"code"} if spec.kind == "code" else {GENERATE_VERIFIER.get(m) for m in spec.metrics}
        if spec.kind not in ("generate", "code") or spec.verifier not in used:
            raise ConfigError(f"{_where(path, lines, ('verifier',))}: verifier {spec.verifier!r} is not used by "
                              f"kind {spec.kind!r} with metrics {', '.join(spec.metrics)} (each generate metric "
                              "names its verifier; code tasks use 'code')")
    if spec.judge is not None and spec.kind != "judge":
        raise ConfigError(f"{_where(path, lines, ('judge',))}: a `judge:` block is for kind judge")
    if spec.kind == "judge":
        from mixlab.eval.judge import JudgeTaskSpec

        validate(JudgeTaskSpec, spec.judge or {}, f"{path} (judge block)", {})
    if spec.kind in GENERATIVE_KINDS and spec.fewshot.n and spec.target is None:
        raise ConfigError(f"{_where(path, lines, ('fewshot',))}: few-shot examples of a {spec.kind} task need "
                          "`target:`, the template of an example's answer (e.g. \"{{solution}}\")")
    if spec.kind in GENERATIVE_KINDS and "gold" in spec.model_fields_set:
        try:
            prompts.expression(spec.gold)
        except Exception as e:
            raise ConfigError(f"{_where(path, lines, ('gold',))}: expression does not parse: {e}") from None


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


def _flatten(d: dict[str, Any]) -> dict[str, Any]:
    """A record as template fields: metadata keys at top level, record fields winning on clashes."""
    meta = d.get("metadata") or {}
    return {**meta, **d, "metadata": meta}


def _record_doc(r: Record, origin: str) -> dict[str, Any]:
    """Every Record field present (None when unset) so templates can write ``solution or ...``."""
    d = {f.name: getattr(r, f.name) for f in fields(Record)}
    return _flatten(d) | {"_where": f"{origin}:{r.id}"}


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
            docs.append(_flatten(obj) | {"_where": f"{path}:{n}"})
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


def _matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    for k, v in where.items():
        value = doc.get(k)
        if isinstance(v, list) and value not in v:
            return False
        if not isinstance(v, list) and value != v:
            return False
    return True


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
    docs = [d for d in docs if _matches(d, spec.data.where)]

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


@dataclass
class Item:
    """One scored item: its requests and what its metrics need."""

    id: str
    pairs: list[tuple[str, str]]
    choices: list[str] = field(default_factory=list)
    gold: int | list[int] = 0
    n_bytes: int = 0


def _doc_id(spec: TaskSpec, doc: dict[str, Any], index: int) -> str:
    return str(doc.get("id") or f"{spec.name}/{index}")


class _Renderer:
    """Renders one task's fields for a doc, turning template errors into messages naming the task
    file's field and the offending item."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec

    def _fail(self, key: str, doc: dict, e: Exception) -> ConfigError:
        fields = sorted(k for k in doc if not k.startswith("_"))
        return ConfigError(f"task {self.spec.name!r}, field `{key}`: {e} (item {doc.get('_where', '?')}; "
                           f"fields available: {', '.join(fields)})")

    def text(self, key: str, doc: dict) -> str:
        try:
            return prompts.render(getattr(self.spec, key), doc)
        except Exception as e:
            raise self._fail(key, doc, e) from None

    def choices(self, doc: dict) -> list[str]:
        c = self.spec.choices if self.spec.choices is not None else "choices"
        if isinstance(c, list):
            return list(c)
        try:
            value = prompts.evaluate(c, doc)
        except Exception as e:
            raise self._fail("choices", doc, e) from None
        if not (isinstance(value, list) and value and all(isinstance(x, str) for x in value)):
            raise self._fail("choices", doc, ValueError(f"expected a non-empty list of strings, got {value!r}"))
        return value

    def gold(self, doc: dict, n_choices: int) -> int | list[int]:
        try:
            value = prompts.evaluate(self.spec.gold, doc)
        except Exception as e:
            raise self._fail("gold", doc, e) from None
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        ok = (isinstance(value, int) and 0 <= value < n_choices) or (
            isinstance(value, list) and value and all(isinstance(v, int) for v in value))
        if not ok:
            raise self._fail("gold", doc, ValueError(f"expected an index below {n_choices} or a list of ints, got {value!r}"))
        return value

    def answer(self, doc: dict) -> str:
        """The gold continuation's text (for bpb and for few-shot examples)."""
        if self.spec.target is not None:
            return self.text("target", doc)
        choices = self.choices(doc)
        gold = self.gold(doc, len(choices))
        return choices[gold[0] if isinstance(gold, list) else gold]


class _Shots:
    """Few-shot examples for a task: per item, ``n`` docs drawn with a seed derived from the item id
    (so an item's context does not depend on ``--limit`` or order), never the item itself, from the
    pool docs sharing the ``match`` fields. Rendered shot texts are cached."""

    def __init__(self, spec: TaskSpec, renderer: _Renderer, pool: list[dict]):
        self.spec, self.r = spec, renderer
        fs = spec.fewshot
        if fs.samples:
            pool = [_flatten(dict(d)) | {"_where": f"task {spec.name!r} fewshot.samples[{i}]"}
                    for i, d in enumerate(fs.samples)]
        self.by_key: dict[tuple, list[dict]] = {}
        for d in pool:
            if _matches(d, fs.where):
                self.by_key.setdefault(self._key(d), []).append(d)
        if fs.n and fs.where and not self.by_key:
            raise ConfigError(f"task {spec.name!r}: no few-shot examples match fewshot.where {fs.where}")
        self.cache: dict[int, str] = {}

    def _key(self, doc: dict) -> tuple:
        return tuple(str(doc.get(k)) for k in self.spec.fewshot.match)

    def _text(self, doc: dict) -> str:
        k = id(doc)
        if k not in self.cache:
            self.cache[k] = (self.r.text("prompt", doc) + self.spec.target_delimiter + self.r.answer(doc)
                             + self.spec.fewshot.delimiter)
        return self.cache[k]

    def prefix(self, doc: dict, item_id: str) -> str:
        head = self.r.text("description", doc) if self.spec.description else ""
        n = self.spec.fewshot.n
        if not n:
            return head
        cands = self.by_key.get(self._key(doc), [])
        me = doc.get("id") or doc.get("_where")
        if self.spec.fewshot.sampler == "first_n" or self.spec.fewshot.samples:
            picked = cands[:n + 1]
        else:
            rng = random.Random(f"{self.spec.fewshot.seed}:{item_id}")
            picked = [cands[i] for i in rng.sample(range(len(cands)), min(n + 1, len(cands)))]
        shots = [d for d in picked if (d.get("id") or d.get("_where")) != me][:n]
        return head + "".join(self._text(d) for d in shots)


def build_items(spec: TaskSpec, docs: list[dict], pool: list[dict] | None = None) -> list[Item]:
    """Render every item's requests; any template/data problem raises before scoring starts."""
    if spec.kind not in SCORED_KINDS:
        raise MixlabError(f"task {spec.name!r}: kind {spec.kind!r} is not scored by the log-likelihood engine")
    r = _Renderer(spec)
    shots = _Shots(spec, r, docs if pool is None else pool)
    items = []
    for i, doc in enumerate(docs):
        item_id = _doc_id(spec, doc, i)
        ctx = shots.prefix(doc, item_id) + r.text("prompt", doc)
        d = spec.target_delimiter
        if spec.kind == "bpb":
            cont = d + r.answer(doc)
            if not cont:
                raise r._fail("target", doc, ValueError("the continuation is empty"))
            items.append(Item(item_id, [(ctx, cont)], n_bytes=len(cont.encode("utf-8"))))
            continue
        choices = r.choices(doc)
        gold = r.gold(doc, len(choices))
        if "mc2" in spec.metrics and not (isinstance(gold, list) and len(gold) == len(choices)):
            raise r._fail("gold", doc, ValueError("mc2 needs one 0/1 label per choice"))
        if spec.scoring == "partial":
            # WinoGrande: each option fills the blank; score the rest of the sentence after it.
            if "_" not in ctx:
                raise r._fail("prompt", doc, ValueError("partial scoring needs a '_' blank in the prompt"))
            cut = ctx.index("_")
            contexts = [ctx[:cut] + c for c in choices]
            rest = ctx[cut + 1:].strip()
            items.append(Item(item_id, [(c, d + rest) for c in contexts], contexts, gold))
        else:
            items.append(Item(item_id, [(ctx, d + c) for c in choices], choices, gold))
    return items


@dataclass
class GenItem:
    """One item of a generative task: the prompt to complete (few-shot prefix included) and the
    reference its answers are checked against. Judge items also carry the conversation's turns,
    the question's category and the reference turns the judge is shown."""

    id: str
    prompt: str
    reference: Any = None
    turns: list[str] = field(default_factory=list)
    category: str = ""
    reference_turns: list[str] = field(default_factory=list)


def build_gen_items(spec: TaskSpec, docs: list[dict], pool: list[dict] | None = None) -> list[GenItem]:
    """Render every item of a ``generate``/``code``/``judge`` task; template or data problems raise
    here, before any generation."""
    if spec.kind not in GENERATIVE_KINDS:
        raise MixlabError(f"task {spec.name!r}: kind {spec.kind!r} is not a generative kind")
    r = _Renderer(spec)
    shots = _Shots(spec, r, docs if pool is None else pool)
    judge = None
    if spec.kind == "judge":
        from mixlab.eval.judge import JudgeTaskSpec

        judge = JudgeTaskSpec.model_validate(spec.judge or {})
    items = []
    for i, doc in enumerate(docs):
        item_id = _doc_id(spec, doc, i)
        prompt = shots.prefix(doc, item_id) + r.text("prompt", doc)
        if judge is None:
            try:
                reference = prompts.evaluate(spec.reference, doc)
            except Exception as e:
                raise r._fail("gold", doc, e) from None
            items.append(GenItem(item_id, prompt, reference))
            continue
        values = {}
        for key in ("turns", "category", "reference"):
            try:
                values[key] = prompts.evaluate(getattr(judge, key), doc)
            except Exception as e:
                raise r._fail(f"judge.{key}", doc, e) from None
        turns = values["turns"]
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise r._fail("judge.turns", doc, ValueError(f"expected a non-empty list of strings, got {turns!r}"))
        refs = values["reference"] or []
        items.append(GenItem(item_id, prompt, None, list(turns), str(values["category"] or ""),
                             [str(x) for x in refs]))
    return items


def describe(spec: TaskSpec) -> dict[str, Any]:
    """What a result file records about the task that produced it."""
    return {"name": spec.name, "kind": spec.kind, "version": spec.version, "hash": spec.fingerprint(),
            "metrics": spec.metrics, "primary": spec.primary_metric,
            "data": yaml.safe_load(json.dumps(spec.data.model_dump(mode="json")))}
