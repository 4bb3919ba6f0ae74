"""Config loading: overrides, file:line errors, hashing; atomic writes."""

from __future__ import annotations

import os

import pytest
from pydantic import Field

from mixlab import atomic
from mixlab.config import StrictModel, apply_overrides, config_hash, load_config
from mixlab.errors import ConfigError


class Train(StrictModel):
    lr: float = Field(1e-3, gt=0)
    steps: int = 10


class Cfg(StrictModel):
    name: str
    train: Train = Train()
    tags: list[str] = []


def test_overrides_parse_yaml_values():
    d = apply_overrides({"train": {"lr": 1}}, ["train.lr=1e-5", "tags=[a, b]", "train.new.deep=true"])
    assert d == {"train": {"lr": 1e-5, "new": {"deep": True}}, "tags": ["a", "b"]}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["train.lr"])


def test_errors_name_file_line_field_and_fix(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ntrain:\n  lr: -1\n  stpes: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, Cfg)
    msg = str(e.value)
    assert f"{p}:3: field `train.lr`" in msg and "greater than 0" in msg
    assert f"{p}:4: field `train.stpes`: unknown field" in msg and "Did you mean 'steps'?" in msg


def test_missing_field_and_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {lr: 1}\n")
    with pytest.raises(ConfigError, match="field `name`.*Add `name:`"):
        load_config(p, Cfg)
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(p, Cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", Cfg)


def test_override_applies_before_validation_and_changes_hash(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\n")
    a = load_config(p, Cfg)
    b = load_config(p, Cfg, ["train.steps=20"])
    assert b.train.steps == 20 and config_hash(a) != config_hash(b)
    assert config_hash(a) == config_hash(load_config(p, Cfg))


def test_atomic_directory_leaves_old_output_on_failure(tmp_path):
    final = tmp_path / "out"
    with atomic.directory(final) as d:
        (d / "f").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic.directory(final) as d:
            (d / "f").write_text("two")
            raise RuntimeError("boom")
    assert (final / "f").read_text() == "one"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary left behind


def test_atomic_write_json_is_sorted_and_complete(tmp_path):
    p = atomic.write_json(tmp_path / "a" / "r.json", {"b": 1, "a": 2})
    assert p.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert [f for f in os.listdir(p.parent) if f.endswith(".tmp")] == []


def test_atomic_outputs_get_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        p = atomic.write_text(tmp_path / "x.txt", "hi")
        with atomic.directory(tmp_path / "d") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(mask)
    assert (p.stat().st_mode & 0o777) == 0o644
    assert ((tmp_path / "d").stat().st_mode & 0o777) == 0o755
