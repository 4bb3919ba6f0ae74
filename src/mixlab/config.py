"""Config loading shared by every stage: YAML -> overrides -> pydantic validation.

Each stage defines its own pydantic model (``DataConfig``, ``PretrainConfig``, ...) next to the
code that uses it, subclassing :class:`StrictModel`; this module only knows how to read, override,
validate and hash them (reading YAML with line numbers and ``--set`` overrides live in
:mod:`mixlab.config_yaml`, below the kinds table, so neither imports the other back). Validation errors name the file, the line, the field and a fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mixlab.config_kinds import KINDS, kind_of_model
from mixlab.config_yaml import apply_overrides, override_locations, read_yaml
from mixlab.errors import ConfigError

__all__ = ["StrictModel", "apply_overrides", "config_dict", "config_hash", "dump_yaml", "format_validation_error",
           "load_config", "override_locations", "read_yaml", "validate"]

T = TypeVar("T", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors (a typo must never be ignored silently)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# ---------------------------------------------------------------- validation


def _known_fields(model: type[BaseModel], loc: Sequence) -> list[str]:
    """Field names valid at ``loc``'s parent, for 'did you mean' hints."""
    cls: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or cls is None:
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cls = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(getattr(cls, "model_fields", {}) or [])


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str, lines: dict[tuple, int | str]) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal[")) ))
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = None
        for k in range(len(loc), 0, -1):
            if loc[:k] in lines:
                line = lines[loc[:k]]
                break
        # a value set on the command line is blamed on its --set, not on a line of the file
        where = f"{source} ({line})" if isinstance(line, str) else f"{source}:{line}" if line else source
        msg = e["msg"].removeprefix("Value error, ")
        fix = ""
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _known_fields(model, loc), n=1)
            fix = f" Did you mean {close[0]!r}?" if close else " Remove it or check the spelling."
            msg = "unknown field"
        elif e["type"] == "missing":
            fix = f" Add `{loc[-1]}:` to the config."
        elif "input" in e and e["type"] != "missing":
            fix = f" (got {e['input']!r})"
        msgs.append(f"{where}: field `{field}`: {msg}.{fix}")
    return "invalid config:\n  " + "\n  ".join(msgs)


def _drop_kind(model: type[BaseModel], data: dict[str, Any], source: str, lines: dict[tuple, int | str]) -> dict[str, Any]:
    """Accept ``kind:`` on a model that declares no such field when it names that model's kind
    (:mod:`mixlab.config_kinds`), and drop it: any file may say what it is, and hashes stay the same."""
    if "kind" not in data or "kind" in model.model_fields:
        return data
    expected = kind_of_model(model)
    if expected is None:
        return data  # a section model: `kind` stays an unknown field
    if data["kind"] != expected:
        where = f"{source}:{lines[('kind',)]}" if ("kind",) in lines else source
        raise ConfigError(f"{where}: field `kind`: {data['kind']!r}, but this is read as a {expected} config "
                          f"(`{KINDS[expected].command}`). Write `kind: {expected}` or remove the line "
                          f"(`mixlab validate {source}` tells which kind a file is).")
    return {k: v for k, v in data.items() if k != "kind"}


def validate(model: type[T], data: dict[str, Any], source: str = "<config>", lines: dict[tuple, int | str] | None = None) -> T:
    data = _drop_kind(model, data, source, lines or {})
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, source, lines or {})) from None


def load_config(path: str | Path, model: type[T], overrides: Iterable[str] = ()) -> T:
    """Read ``path``, apply ``--set`` overrides, validate against ``model``; errors name file:line and field."""
    data, lines = read_yaml(path)
    overrides = list(overrides)
    data = apply_overrides(data, overrides)
    lines = {**lines, **override_locations(overrides)}
    return validate(model, data, str(path), lines)


# ---------------------------------------------------------------- hashing and dumping


def config_dict(cfg: BaseModel) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def config_hash(cfg: BaseModel | dict[str, Any], length: int = 12) -> str:
    """Stable hash of a resolved config (canonical JSON), used to name and resume run directories."""
    data = config_dict(cfg) if isinstance(cfg, BaseModel) else cfg
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def dump_yaml(cfg: BaseModel | dict[str, Any]) -> str:
    data = config_dict(cfg) if isinstance(cfg, BaseModel) else cfg
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
