"""``mixlab quickstart``: the whole mixlab story on the embedded toyworld, in minutes on a laptop CPU.

The quickstart is a :mod:`mixlab.study` whose config is written for the toyworld: build a fine-tuning
mixture for one ``target`` domain (checked for contamination against the other domains), pretrain a
proxy base on a token-proportion mixture of all four, fine-tune it with several methods, evaluate every
checkpoint through a resumable sweep, and write the forgetting report with each method contrasted
against plain SFT item by item. This module only turns ``target`` into the study's data, replay and
evaluation settings.

Every stage writes its own directory under ``out`` and skips itself when its output is complete, so
running the same command again resumes where it stopped::

    from mixlab.quickstart import load_quickstart_config, run_quickstart
    cfg = load_quickstart_config(None, ["target=prose"])      # the packaged default.yaml + overrides
    result = run_quickstart(cfg, "runs/quickstart")
    print(result.headline)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from mixlab.config import StrictModel, load_config, validate
from mixlab.study import MethodsStudy, Study, StudyEval, StudyResult, merge, run_study

DEFAULT_CONFIG = "default.yaml"
QuickstartResult = StudyResult


def default_config_path() -> Path:
    """The packaged quickstart config (``mixlab quickstart --show-config`` prints it)."""
    return Path(str(resources.files(__package__).joinpath(DEFAULT_CONFIG)))


# ---------------------------------------------------------------- config


class EvalSection(StrictModel):
    suites: list[str] = Field(["toyworld"], description="evaluation suites (every task of each)")
    tasks: list[str] = Field([], description="more task names or task YAML paths")
    limit: int | None = Field(64, ge=1, description="items per task")
    batch_size: int = Field(32, ge=1, description="items scored at once")


class QuickstartConfig(MethodsStudy):
    """The quickstart study. ``data``, ``pretrain`` and ``finetune`` are ordinary data-build, pretraining
    and fine-tuning configs; each entry of ``methods`` is deep-merged into ``finetune``."""

    kind: Literal["quickstart"] = "quickstart"
    target: str = Field("people", description="toyworld domain to fine-tune on")
    reference: str = Field("sft", description="method every other one is contrasted with")
    data: dict[str, Any] = Field({}, description="a data-build config (see 'data build'); domains and "
                                 "contamination benchmarks are filled in from `target`")
    pretrain: dict[str, Any] = Field(..., description="a pretraining config (see 'pretrain')")
    eval: EvalSection = EvalSection()

    @field_validator("target")
    @classmethod
    def _domain(cls, v: str) -> str:
        from mixlab.data.toyworld import DOMAINS

        if v not in DOMAINS:
            raise ValueError(f"unknown toyworld domain {v!r}; choose one of {', '.join(DOMAINS)}")
        return v


def load_quickstart_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Study:
    """Read a quickstart config (default: the packaged one), apply ``--set`` overrides and validate it
    *and* every stage config it implies, so a typo fails here, before any work."""
    source = Path(path) if path is not None else default_config_path()
    cfg = load_config(source, QuickstartConfig, overrides)
    return study_from_quickstart(cfg, str(source))


def study_from_quickstart(cfg: QuickstartConfig, source: str) -> Study:
    """The study a quickstart config describes: ``target`` picks the mixture's domain, the contamination
    references, replay from ``other_domains`` and the target tasks (``toyworld_<target>_*``)."""
    from mixlab.data.build import DataConfig
    from mixlab.data.toyworld import DOMAINS
    from mixlab.train.pretrain import PretrainConfig

    others = [d for d in DOMAINS if d != cfg.target]
    data = merge({"name": f"toyworld_{cfg.target}", "seed": cfg.seed,
                  "domains": {cfg.target: {"ratio": 1, "datasets": {f"toyworld_{cfg.target}": 1}}},
                  "contamination": {"benchmarks": [f"toyworld_{d}" for d in others]}}, cfg.data)
    data_cfg = validate(DataConfig, data, f"{source} (section `data`)")
    pre_cfg = validate(PretrainConfig, merge({"seed": cfg.seed}, cfg.pretrain), f"{source} (section `pretrain`)")
    methods: dict[str, dict[str, Any]] = {}
    for name, patch in cfg.methods.items():
        replay = ((patch.get("data") or {}).get("replay") or {})
        if replay.get("source") == "other_domains":
            patch = merge(patch, {"data": {"replay": {"source": [f"toyworld:{o}" for o in others]}}})
        methods[name] = patch
    e = cfg.eval
    probe = StudyEval(suites=e.suites, tasks=e.tasks)
    targets = [t for t in probe.task_names() if t.startswith(f"toyworld_{cfg.target}_")]
    evaluation = StudyEval(suites=e.suites, tasks=e.tasks, targets=targets, limit=e.limit, batch_size=e.batch_size)
    describe = {
        "data": f"Building the fine-tuning mixture toyworld_{cfg.target} (official train/test sides) "
                "and checking it for contamination ...",
        "pretrain": "Pretraining the proxy base on a token-proportion mixture of the four toyworld domains ...",
        "finetune": f"Fine-tuning the base on {cfg.target} with {', '.join(methods)}",
    }
    return Study.assemble(cfg, source, name=f"quickstart_{cfg.target}",
                          title=f"mixlab quickstart: fine-tuning on toyworld {cfg.target}", base=None,
                          pretrain=pre_cfg, data=data_cfg, distill=None, finetune=cfg.finetune, methods=methods,
                          evaluation=evaluation, describe=describe)


def run_quickstart(study: Study, out: str | Path, say: Callable[[str], None] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> StudyResult:
    """Run (or resume) the quickstart into ``out`` (:func:`mixlab.study.run_study`)."""
    return run_study(study, out, say, progress)
