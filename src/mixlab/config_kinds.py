"""Every kind of mixlab config, how to tell which one a YAML file is, and validating any of them.

:data:`ALL_KINDS` is the one table of config kinds: each names its pydantic model(s), the loader its
own command uses, the top-level keys that give it away, and its entry in the configuration reference
(:mod:`mixlab.config_reference` renders it); :data:`KINDS` holds the ones a file can be
(``mixlab validate`` and the ``kind:`` field read it). ``validate`` calls that loader, so it checks exactly what the command would check before
any work, including what the loader adds on top of the schema (a study's or quickstart's stage
configs, a swarm's base pretraining config)::

    from mixlab.config_kinds import validate_file
    kind, cfg = validate_file("configs/studies/smollm2_gsm8k.yaml", ["eval.limit=5"])   # "study", StudyConfig

A file's kind is its ``kind:`` field when it has one, else inferred from its keys (``duration`` is a
pretraining config, ``runs`` a sweep, ``ratios`` + ``metrics`` a fit ...). ``kind:`` is accepted by
every config, also by the models that declare no such field (data, sweep, fit, propose):
:func:`mixlab.config.validate` drops it there once it has checked that it names that model's kind, so
the advice "add ``kind: X``" always works and no config hash changes.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mixlab.config_yaml import apply_overrides, read_yaml
from mixlab.errors import ConfigError


def _attr(ref: str) -> Any:
    mod, _, name = ref.partition(":")
    return getattr(importlib.import_module(mod), name)


@dataclass(frozen=True)
class ConfigKind:
    """One kind of config: ``models`` ("module:Class"; a propose config has a pretraining and a
    fine-tuning mode), the ``loader`` "module:function(path, overrides)" its command reads it with,
    ``markers`` (a file holding every key of any one of these sets is of this kind), the ``command``
    that runs it, and its ``title`` and ``usage`` line in the configuration reference
    (:mod:`mixlab.config_reference`). A kind without a loader is documented there but is no file
    ``mixlab validate`` reads on its own (the launch options, a task file)."""

    name: str
    models: tuple[str, ...]
    loader: str | None
    markers: tuple[frozenset[str], ...]
    command: str
    title: str
    usage: str

    def fields(self) -> set[str]:
        """Every top-level field the kind's models accept."""
        return {f for m in self.models for f in _attr(m).model_fields}

    def load(self, path: str | Path, overrides: Sequence[str] = ()) -> Any:
        assert self.loader is not None, f"{self.name} configs are not read on their own"
        return _attr(self.loader)(path, list(overrides))


def _kind(name: str, models: str | tuple[str, ...], loader: str | None, markers: Sequence[Sequence[str]],
          command: str, usage: str, title: str | None = None) -> ConfigKind:
    return ConfigKind(name, (models,) if isinstance(models, str) else models, loader,
                      tuple(frozenset(m) for m in markers), command, title or name, usage)


# Every config kind, in the order the reference documents them.
ALL_KINDS: tuple[ConfigKind, ...] = (
    _kind("data", "mixlab.data.build:DataConfig", "mixlab.data.api:load_config_file", [["domains"]],
          "mixlab data build", "`mixlab data build CONFIG --out DIR`", title="data build"),
    _kind("pretrain", "mixlab.train.pretrain:PretrainConfig", "mixlab.train.pretrain:load_pretrain_config",
          [["duration"]], "mixlab pretrain", "`mixlab pretrain CONFIG --out DIR`"),
    _kind("finetune", "mixlab.train.finetune.config:FinetuneConfig",
          "mixlab.train.finetune.config:load_finetune_config", [["method"]], "mixlab finetune",
          "`mixlab finetune CONFIG --out DIR`"),
    _kind("distill", "mixlab.train.distill:DistillConfig", "mixlab.train.distill:load_distill_config",
          [["teacher"]], "mixlab distill", "`mixlab distill CONFIG --out DIR`"),
    _kind("sweep", "mixlab.runs.sweep:SweepConfig", "mixlab.runs.sweep:load_sweep_config",
          [["runs"], ["base_models"]], "mixlab sweep",
          "`mixlab sweep CONFIG`, `mixlab status CONFIG`, `mixlab report CONFIG`"),
    _kind("launch", "mixlab.runs.launch:LaunchConfig", None, [], "--backend",
          "`--backend local|ray|slurm` and its options"),
    _kind("swarm", "mixlab.mixopt.swarm:SwarmConfig", "mixlab.config_kinds:load_swarm_and_base", [["variants"]],
          "mixlab swarm generate", "`mixlab swarm generate CONFIG --out DIR`"),
    _kind("fit", "mixlab.mixopt.fit:FitConfig", "mixlab.mixopt.fit:load_fit_config", [["ratios", "metrics"]],
          "mixlab fit", "`mixlab fit CONFIG --out DIR`"),
    _kind("propose", ("mixlab.mixopt.propose:ProposeConfig", "mixlab.mixopt.propose:FinetuneConfig"),
          "mixlab.mixopt.fit:load_propose_config", [["fit"], ["mode", "results"]], "mixlab propose",
          "`mixlab propose CONFIG --out DIR`"),
    _kind("study", "mixlab.study:StudyConfig", "mixlab.study:load_study", [["methods"]], "mixlab study",
          "`mixlab study CONFIG --out DIR` (configs/studies/)"),
    _kind("quickstart", "mixlab.quickstart:QuickstartConfig", "mixlab.quickstart:load_quickstart_config",
          [["methods"]], "mixlab quickstart --config",
          "`mixlab quickstart --config FILE` (default: the packaged one)"),
    _kind("task", "mixlab.eval.tasks:TaskSpec", None, [], "mixlab eval",
          "an evaluation task YAML (`src/mixlab/eval/tasks/**`)"),
)

# The kinds of config file (``mixlab validate`` and the ``kind:`` field read these).
KINDS: dict[str, ConfigKind] = {k.name: k for k in ALL_KINDS if k.loader is not None}


def load_swarm_and_base(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """A swarm config, with its ``base`` pretraining config (plus ``set:``) validated too, as
    ``mixlab swarm generate`` reads both before it samples anything."""
    from mixlab.mixopt.swarm import load_base, load_swarm_config

    cfg = load_swarm_config(path, overrides)
    load_base(cfg)
    return cfg


def kind_of_model(model: type[BaseModel]) -> str | None:
    """The kind whose config ``model`` is (None for section models, which no file holds alone)."""
    ref = f"{model.__module__}:{model.__qualname__}"
    return next((k.name for k in KINDS.values() if ref in k.models), None)


def _add_kind_advice(source: str) -> str:
    return (f"add a line `kind: <kind>` to {source} (one of {', '.join(KINDS)}), "
            f"or check it with `mixlab validate {source} --set kind=<kind>`")


def detect_kind(data: dict[str, Any], source: str) -> str:
    """The config's kind: its ``kind:`` field, else the one kind whose marker keys it holds (when
    several match, the one whose model knows every top-level key)."""
    if "kind" in data:
        kind = data["kind"]
        if kind not in KINDS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: field `kind`: unknown config kind {kind!r}.{hint} "
                              f"Known: {', '.join(KINDS)}")
        return str(kind)
    keys = set(data)
    hits = [k for k in KINDS.values() if any(m <= keys for m in k.markers)]
    if len(hits) > 1:
        fitting = [k for k in hits if keys <= k.fields()]
        hits = fitting if fitting else hits
    if len(hits) == 1:
        return hits[0].name
    if hits:
        raise ConfigError(f"{source}: cannot tell which kind of config this is: it could be "
                          f"{' or '.join(k.name for k in hits)}; {_add_kind_advice(source)}")
    marks = "; ".join(f"{k.name}: {' or '.join('+'.join(sorted(m)) for m in k.markers)}" for k in KINDS.values())
    raise ConfigError(f"{source}: cannot tell which kind of config this is: it has none of the keys that mark a "
                      f"kind ({marks}); {_add_kind_advice(source)}")


def validate_file(path: str | Path, overrides: Sequence[str] = ()) -> tuple[str, BaseModel]:
    """Validate a config of any kind as its command would (nothing is run or written); returns
    (kind, validated config). Errors name the file, the line and the field."""
    data, _ = read_yaml(path)
    kind = detect_kind(apply_overrides(data, overrides), str(path))
    loaded = KINDS[kind].load(path, overrides)
    return kind, getattr(loaded, "config", loaded)  # a study loads as a Study, which keeps its config


__all__ = ["ALL_KINDS", "KINDS", "ConfigKind", "detect_kind", "kind_of_model", "load_swarm_and_base", "validate_file"]
