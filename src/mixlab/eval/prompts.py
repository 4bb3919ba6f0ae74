"""Prompt rendering for task files: Jinja2 templates and expressions over an item's fields.

lm-evaluation-harness writes its prompts as Jinja2 (``"Question: {{question}}\\nAnswer:"``), so mixlab
does too: a benchmark's prompt can be copied from lm-eval's YAML unchanged. Undefined names are
errors (``StrictUndefined``), never silently empty. Data-cleaning steps that lm-eval keeps in Python
files (HellaSwag's bracket removal) are Jinja filters registered here, named in the task file.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta


def regex_replace(text: str, pattern: str, repl: str, count: int = 0) -> str:
    return re.sub(pattern, repl, text, count=count)


def hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess``: WikiHow ``[title]`` markers and bracketed notes removed."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
ENV.filters.update(regex_replace=regex_replace, hellaswag_clean=hellaswag_clean)


@lru_cache(maxsize=512)
def template(source: str) -> jinja2.Template:
    return ENV.from_string(source)


@lru_cache(maxsize=512)
def expression(source: str):
    return ENV.compile_expression(source, undefined_to_none=False)


def names(source: str, is_expression: bool = False) -> set[str]:
    """Top-level names a template (or expression) reads, to check them against the data up front."""
    text = "{{ " + source + " }}" if is_expression else source
    return meta.find_undeclared_variables(ENV.parse(text))


def render(source: str, doc: dict[str, Any]) -> str:
    return template(source).render(**doc)


def evaluate(source: str, doc: dict[str, Any]) -> Any:
    value = expression(source)(**doc)
    if isinstance(value, jinja2.Undefined):  # StrictUndefined raises on use, not on return
        str(value)
    return value
