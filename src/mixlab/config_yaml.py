"""Reading config YAML with the line of every key, and ``--set a.b=value`` overrides.

Below :mod:`mixlab.config` and :mod:`mixlab.config_kinds` (both read files through it), so the kinds
table and validation do not import each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from mixlab.errors import ConfigError

# ---------------------------------------------------------------- YAML with line numbers


def _line_map(node: yaml.Node | None, prefix: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path in a composed YAML document to its 1-based line."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (key_node.value,)
            out[path] = key_node.start_mark.line + 1
            _line_map(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[prefix + (i,)] = item.start_mark.line + 1
            _line_map(item, prefix + (i,), out)
    return out


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[tuple, int]]:
    """Read a YAML mapping and its key -> line map. Syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines = _line_map(yaml.compose(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config must be a mapping of fields, got {type(data).__name__}")
    return data, lines


# ---------------------------------------------------------------- overrides


def _parse_value(raw: str) -> Any:
    """YAML scalar parsing, plus floats like ``1e-5`` that YAML 1.1 leaves as strings."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set a.b.c=value`` overrides; values are parsed as YAML (``1e-5``, ``[a, b]``, ``true``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set train.lr=1e-5")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        value = _parse_value(raw)
        node = data
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {p!r} is not a section (it holds {nxt!r})")
            node = nxt
        node[parts[-1]] = value
    return data


def override_locations(overrides: Iterable[str]) -> dict[tuple, str]:
    """Field path -> ``--set KEY=VALUE``, so a bad override's error names the override (errors
    look up the longest field path they have a location for: a line number or this)."""
    return {tuple(p for p in item.split("=", 1)[0].strip().split(".") if p): f"--set {item}"
            for item in overrides if "=" in item}
