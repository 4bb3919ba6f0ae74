"""The config reference, generated from the pydantic models so it cannot drift from the code.

``python -m mixlab.config_reference > docs/config-reference.md`` rewrites the committed page; a test
fails when the page and the models disagree. Each config kind is one table per nested section:
field, type, default, and the field's description.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mixlab.config_kinds import ALL_KINDS

# (title, "module:Class", what the config is for), from the one table of config kinds
KINDS: list[tuple[str, str, str]] = [(k.title, k.models[0], k.usage) for k in ALL_KINDS]


def _load(ref: str) -> type[BaseModel] | None:
    mod, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        return None


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def _type_name(annotation: object) -> str:
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and not typing.get_args(annotation):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    name = getattr(origin, "__name__", str(origin))
    return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name


def _default(field) -> str:
    if field.default is PydanticUndefined:
        return "required" if field.default_factory is None else _short(field.default_factory())
    return _short(field.default)


def _short(value: object) -> str:
    if isinstance(value, BaseModel):
        return "(section)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sections(model: type[BaseModel], path: str, seen: set[type]) -> Iterator[tuple[str, type[BaseModel]]]:
    if model in seen:
        return
    seen.add(model)
    yield path, model
    for name, field in model.model_fields.items():
        for sub in _models_in(field.annotation):
            yield from _sections(sub, f"{path}.{name}" if path else name, seen)


def render() -> str:
    """The whole reference as Markdown."""
    out = ["# Configuration reference", "",
           "Generated from the pydantic models by `python -m mixlab.config_reference` (a test checks it is "
           "current). Every field can be overridden on the command line: `--set section.field=value` "
           "(values parsed as YAML, e.g. `--set train.lr=1e-5`, `--set data.datasets=[gsm8k]`).", ""]
    for title, ref, usage in KINDS:
        model = _load(ref)
        if model is None:
            continue
        out += [f"## {title}", "", f"{usage}. Model: `{ref.replace(':', '.')}`.", ""]
        doc = inspect.getdoc(model)
        if doc:
            out += [doc.split("\n\n")[0].replace("\n", " "), ""]
        for path, sub in _sections(model, "", set()):
            if path:
                out += [f"### `{title}`: `{path}`", ""]
            out += ["| field | type | default | meaning |", "|---|---|---|---|"]
            for name, field in sub.model_fields.items():
                out.append(f"| `{name}` | {_cell(_type_name(field.annotation))} | `{_cell(_default(field))}` | "
                           f"{_cell(field.description or '')} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
