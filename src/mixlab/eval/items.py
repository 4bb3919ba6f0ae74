"""A task's items: its data rendered into requests (prompt templates, few-shot prefixes, choices,
gold answers), the part every engine shares. Each engine picks the rendering it scores:
:func:`continuations` (bpb), :func:`choice_requests` (mc), :func:`prompts_with_references`
(generate, code), :func:`conversations` (judge). Template and data errors name the task's field
and the offending item, before any model work.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mixlab.errors import ConfigError
from mixlab.eval import prompts

if TYPE_CHECKING:
    from mixlab.eval.spec import TaskSpec


def flatten(d: dict[str, Any]) -> dict[str, Any]:
    """A record as template fields: metadata keys at top level, record fields winning on clashes."""
    meta = d.get("metadata") or {}
    return {**meta, **d, "metadata": meta}


def matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    for k, v in where.items():
        value = doc.get(k)
        if isinstance(v, list) and value not in v:
            return False
        if not isinstance(v, list) and value != v:
            return False
    return True


@dataclass
class Item:
    """One scored item: its requests and what its metrics need."""

    id: str
    pairs: list[tuple[str, str]]
    choices: list[str] = field(default_factory=list)
    gold: int | list[int] = 0
    n_bytes: int = 0


def doc_id(spec: TaskSpec, doc: dict[str, Any], index: int) -> str:
    return str(doc.get("id") or f"{spec.name}/{index}")


class Renderer:
    """Renders one task's fields for a doc, turning template errors into messages naming the task
    file's field and the offending item."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec

    def fail(self, key: str, doc: dict, e: Exception) -> ConfigError:
        fields = sorted(k for k in doc if not k.startswith("_"))
        return ConfigError(f"task {self.spec.name!r}, field `{key}`: {e} (item {doc.get('_where', '?')}; "
                           f"fields available: {', '.join(fields)})")

    def text(self, key: str, doc: dict) -> str:
        try:
            return prompts.render(getattr(self.spec, key), doc)
        except Exception as e:
            raise self.fail(key, doc, e) from None

    def choices(self, doc: dict) -> list[str]:
        c = self.spec.choices if self.spec.choices is not None else "choices"
        if isinstance(c, list):
            return list(c)
        try:
            value = prompts.evaluate(c, doc)
        except Exception as e:
            raise self.fail("choices", doc, e) from None
        if not (isinstance(value, list) and value and all(isinstance(x, str) for x in value)):
            raise self.fail("choices", doc, ValueError(f"expected a non-empty list of strings, got {value!r}"))
        return value

    def gold(self, doc: dict, n_choices: int) -> int | list[int]:
        try:
            value = prompts.evaluate(self.spec.gold, doc)
        except Exception as e:
            raise self.fail("gold", doc, e) from None
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        ok = (isinstance(value, int) and 0 <= value < n_choices) or (
            isinstance(value, list) and value and all(isinstance(v, int) for v in value))
        if not ok:
            raise self.fail("gold", doc, ValueError(f"expected an index below {n_choices} or a list of ints, got {value!r}"))
        return value

    def answer(self, doc: dict) -> str:
        """The gold continuation's text (for bpb and for few-shot examples)."""
        if self.spec.target is not None:
            return self.text("target", doc)
        choices = self.choices(doc)
        gold = self.gold(doc, len(choices))
        return choices[gold[0] if isinstance(gold, list) else gold]


class Shots:
    """Few-shot examples for a task: per item, ``n`` docs drawn with a seed derived from the item id
    (so an item's context does not depend on ``--limit`` or order), never the item itself, from the
    pool docs sharing the ``match`` fields. Rendered shot texts are cached."""

    def __init__(self, spec: TaskSpec, renderer: Renderer, pool: list[dict]):
        self.spec, self.r = spec, renderer
        fs = spec.fewshot
        if fs.samples:
            pool = [flatten(dict(d)) | {"_where": f"task {spec.name!r} fewshot.samples[{i}]"}
                    for i, d in enumerate(fs.samples)]
        self.by_key: dict[tuple, list[dict]] = {}
        for d in pool:
            if matches(d, fs.where):
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


def _prompted(spec: TaskSpec, docs: list[dict], pool: list[dict] | None) -> Iterator[tuple[Renderer, dict, str, str]]:
    """(renderer, doc, item id, prompt with its few-shot prefix) for every doc, in order."""
    r = Renderer(spec)
    shots = Shots(spec, r, docs if pool is None else pool)
    for i, doc in enumerate(docs):
        item_id = doc_id(spec, doc, i)
        yield r, doc, item_id, shots.prefix(doc, item_id) + r.text("prompt", doc)


def continuations(spec: TaskSpec, docs: list[dict], pool: list[dict] | None = None) -> list[Item]:
    """A ``bpb`` task's requests: each item's gold continuation (``target``, else the gold choice)
    after its prompt; any template/data problem raises before scoring starts."""
    items = []
    for r, doc, item_id, ctx in _prompted(spec, docs, pool):
        cont = spec.target_delimiter + r.answer(doc)
        if not cont:
            raise r.fail("target", doc, ValueError("the continuation is empty"))
        items.append(Item(item_id, [(ctx, cont)], n_bytes=len(cont.encode("utf-8"))))
    return items


def choice_requests(spec: TaskSpec, docs: list[dict], pool: list[dict] | None = None) -> list[Item]:
    """An ``mc`` task's requests: one (context, choice) pair per choice (``scoring: partial`` puts
    each choice in the prompt's blank and scores the rest); problems raise before scoring starts."""
    items = []
    for r, doc, item_id, ctx in _prompted(spec, docs, pool):
        d = spec.target_delimiter
        choices = r.choices(doc)
        gold = r.gold(doc, len(choices))
        if "mc2" in spec.metrics and not (isinstance(gold, list) and len(gold) == len(choices)):
            raise r.fail("gold", doc, ValueError("mc2 needs one 0/1 label per choice"))
        if spec.scoring == "partial":
            # WinoGrande: each option fills the blank; score the rest of the sentence after it.
            if "_" not in ctx:
                raise r.fail("prompt", doc, ValueError("partial scoring needs a '_' blank in the prompt"))
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


def prompts_with_references(spec: TaskSpec, docs: list[dict], pool: list[dict] | None = None) -> list[GenItem]:
    """Every item of a ``generate``/``code`` task: its prompt (few-shot prefix included) and the
    reference its answers are checked against; template or data problems raise here."""
    items = []
    for r, doc, item_id, prompt in _prompted(spec, docs, pool):
        try:
            reference = prompts.evaluate(spec.reference, doc)
        except Exception as e:
            raise r.fail("gold", doc, e) from None
        items.append(GenItem(item_id, prompt, reference))
    return items


def conversations(spec: TaskSpec, docs: list[dict], pool: list[dict] | None = None) -> list[GenItem]:
    """Every item of a ``judge`` task: its turns, category and reference turns, read with the
    expressions of the task's ``judge:`` block; problems raise before any generation."""
    judge = spec.judging
    items = []
    for r, doc, item_id, prompt in _prompted(spec, docs, pool):
        values = {}
        for key in ("turns", "category", "reference"):
            try:
                values[key] = prompts.evaluate(getattr(judge, key), doc)
            except Exception as e:
                raise r.fail(f"judge.{key}", doc, e) from None
        turns = values["turns"]
        if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
            raise r.fail("judge.turns", doc, ValueError(f"expected a non-empty list of strings, got {turns!r}"))
        refs = values["reference"] or []
        items.append(GenItem(item_id, prompt, None, list(turns), str(values["category"] or ""),
                             [str(x) for x in refs]))
    return items
