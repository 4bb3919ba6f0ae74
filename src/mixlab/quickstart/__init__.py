"""``mixlab quickstart``: the whole mixlab story on the embedded toyworld, in minutes on a laptop CPU.

It composes the public stages, nothing else: build a fine-tuning mixture (and check it for
contamination), pretrain a proxy base on a token-proportion mixture, fine-tune it on one target
domain with several methods, evaluate every checkpoint through a resumable sweep, and write the
forgetting report with each method contrasted against plain SFT item by item.

Every stage writes its own directory under ``out`` and skips itself when its output is complete, so
running the same command again resumes where it stopped::

    from mixlab.quickstart import load_quickstart_config, run_quickstart
    cfg = load_quickstart_config(None, ["target=prose"])      # the packaged default.yaml + overrides
    result = run_quickstart(cfg, "runs/quickstart")
    print(result.headline)
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixlab import atomic
from mixlab.config import StrictModel, config_hash, dump_yaml, load_config, validate
from mixlab.errors import ConfigError

DEFAULT_CONFIG = "default.yaml"
Say = Callable[[str], None]


def default_config_path() -> Path:
    """The packaged quickstart config (``mixlab quickstart --show-config`` prints it)."""
    return Path(str(resources.files(__package__).joinpath(DEFAULT_CONFIG)))


# ---------------------------------------------------------------- config


class EvalSection(StrictModel):
    suites: list[str] = Field(["toyworld"], description="evaluation suites (every task of each)")
    tasks: list[str] = Field([], description="more task names or task YAML paths")
    limit: int | None = Field(64, ge=1, description="items per task")
    batch_size: int = Field(32, ge=1, description="items scored at once")


class QuickstartConfig(StrictModel):
    """The quickstart study. ``data``, ``pretrain`` and ``finetune`` are ordinary data-build, pretraining
    and fine-tuning configs; each entry of ``methods`` is deep-merged into ``finetune``."""

    kind: Literal["quickstart"] = "quickstart"
    seed: int = Field(0, description="seed of every stage (data, pretraining, fine-tuning, statistics)")
    target: str = Field("people", description="toyworld domain to fine-tune on")
    workers: int = Field(2, ge=1, description="processes for fine-tuning and evaluation")
    reference: str = Field("sft", description="method every other one is contrasted with")
    comparable_gain: float = Field(0.8, gt=0, le=1, description="'comparable gain': at least this fraction "
                                   "of the reference's target gain")
    data: dict[str, Any] = Field({}, description="a data-build config (see 'data build'); domains and "
                                 "contamination benchmarks are filled in from `target`")
    pretrain: dict[str, Any] = Field(..., description="a pretraining config (see 'pretrain')")
    finetune: dict[str, Any] = Field(..., description="a fine-tuning config shared by every method "
                                     "(see 'finetune'); model.base and data.build are filled in")
    methods: dict[str, dict[str, Any]] = Field(..., description="method name -> the fine-tuning config "
                                               "fields it changes (deep-merged into `finetune`)")
    eval: EvalSection = EvalSection()

    @field_validator("target")
    @classmethod
    def _domain(cls, v: str) -> str:
        from mixlab.data.toyworld import DOMAINS

        if v not in DOMAINS:
            raise ValueError(f"unknown toyworld domain {v!r}; choose one of {', '.join(DOMAINS)}")
        return v

    @field_validator("methods", mode="before")
    @classmethod
    def _drop_null(cls, v: Any) -> Any:
        """``--set methods.grpo=null`` leaves a method out."""
        return {k: m for k, m in v.items() if m is not None} if isinstance(v, dict) else v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not v:
            raise ValueError("list at least one method")
        for name in v:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"method name {name!r}: use letters, digits, '_' or '-' (it names a folder)")
        return {k: dict(m or {}) for k, m in v.items()}

    @model_validator(mode="after")
    def _reference(self) -> "QuickstartConfig":
        if self.reference not in self.methods:
            raise ValueError(f"reference {self.reference!r} is not one of the methods ({', '.join(self.methods)})")
        return self


def load_quickstart_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> "Study":
    """Read a quickstart config (default: the packaged one), apply ``--set`` overrides and validate it
    *and* every stage config it implies, so a typo fails here, before any work."""
    source = Path(path) if path is not None else default_config_path()
    cfg = load_config(source, QuickstartConfig, overrides)
    return Study.from_config(cfg, str(source))


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


@dataclass
class Study:
    """A validated quickstart: the stage configs, ready to run (paths are filled in by :func:`run_quickstart`)."""

    config: QuickstartConfig
    source: str
    data: Any  # DataConfig
    pretrain: Any  # PretrainConfig
    finetune: dict[str, dict[str, Any]]  # method -> finetune config data (model/data paths added at run time)
    target_tasks: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: QuickstartConfig, source: str) -> "Study":
        from mixlab.data.build import DataConfig
        from mixlab.data.toyworld import DOMAINS
        from mixlab.eval.tasks import resolve_tasks, suite_tasks
        from mixlab.train.pretrain import PretrainConfig
        from mixlab.train.sft import FinetuneConfig

        others = [d for d in DOMAINS if d != cfg.target]
        data = _merge({"name": f"toyworld_{cfg.target}", "seed": cfg.seed,
                       "domains": {cfg.target: {"ratio": 1, "datasets": {f"toyworld_{cfg.target}": 1}}},
                       "contamination": {"benchmarks": [f"toyworld_{d}" for d in others]}}, cfg.data)
        data_cfg = validate(DataConfig, data, f"{source} (section `data`)")
        pre_cfg = validate(PretrainConfig, _merge({"seed": cfg.seed}, cfg.pretrain), f"{source} (section `pretrain`)")
        methods: dict[str, dict[str, Any]] = {}
        for name, patch in cfg.methods.items():
            d = _merge(_merge({"kind": "finetune", "seed": cfg.seed}, cfg.finetune), patch)
            replay = (d.get("data") or {}).get("replay") or {}
            if replay.get("source") == "other_domains":
                replay["source"] = [f"toyworld:{o}" for o in others]
            d = _merge(d, {"model": {"base": "<base>"}, "data": {"build": "<data>"}})
            validate(FinetuneConfig, d, f"{source} (methods.{name} merged into `finetune`)")
            methods[name] = d
        names = [*[t for s in cfg.eval.suites for t in suite_tasks(s)], *cfg.eval.tasks]
        resolve_tasks(tasks=names)  # unknown task names fail now
        targets = [t for t in names if t.startswith(f"toyworld_{cfg.target}_")]
        return cls(cfg, source, data_cfg, pre_cfg, methods, targets)

    # Stage directories are named by what determines their content, so changing a value with --set
    # makes new runs beside the old ones (and an unchanged stage is reused) instead of clashing.
    def base_dir(self, out: Path) -> Path:
        return out / f"base-{config_hash(self.pretrain, 8)}"

    def run_dir(self, out: Path, method: str) -> Path:
        key = {"finetune": self.finetune[method], "data": config_hash(self.data), "base": config_hash(self.pretrain)}
        return out / "runs" / f"{method}-{config_hash(key, 8)}"

    def sweep_dir(self, out: Path) -> Path:
        key = {"runs": [self.run_dir(out, m).name for m in self.finetune], "eval": self.config.eval.model_dump()}
        return out / f"sweep-{config_hash(key, 8)}"

    def finetune_config(self, method: str, base: Path, data: Path) -> Any:
        from mixlab.train.sft import FinetuneConfig

        d = _merge(self.finetune[method], {"model": {"base": str(base)}, "data": {"build": str(data)}})
        return validate(FinetuneConfig, d, f"{self.source} (methods.{method})")

    def sweep_config(self, out: Path) -> Any:
        from mixlab.runs.sweep import SweepConfig

        e = self.config.eval
        return SweepConfig.model_validate({
            "name": f"quickstart_{self.config.target}", "out": str(self.sweep_dir(out)),
            "runs": [{"path": str(self.run_dir(out, m)), "name": m, "targets": self.target_tasks}
                     for m in self.finetune],
            "base_models": [{"name": "base", "path": str(self.base_dir(out) / "final")}],
            "checkpoints": {"all": True},
            "suites": e.suites, "tasks": e.tasks, "limit": e.limit, "batch_size": e.batch_size,
            "workers": self.config.workers,
        })


# ---------------------------------------------------------------- jobs (module level: picklable)


def finetune_job(cfg_data: dict[str, Any], out: str) -> dict[str, Any]:
    """One fine-tuning run in a worker process (one torch thread); returns its timings."""
    import torch
    from transformers.utils import logging as hf_logging

    from mixlab.train.sft import FinetuneConfig, finetune

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()  # the quickstart draws its own bars
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = finetune(FinetuneConfig.model_validate(cfg_data), out)
    return {"steps": res.steps, "timings": res.timings, "skipped": res.skipped}


# ---------------------------------------------------------------- the run


@dataclass
class QuickstartResult:
    out: Path
    report_md: Path
    report_html: Path
    figures: tuple[Path, ...]
    contrasts: list[Any]
    headline: list[str]
    timings: dict[str, float]


def run_quickstart(study: Study, out: str | Path, say: Say | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> QuickstartResult:
    """Run (or resume) the quickstart into ``out``; ``say`` narrates, ``progress(stage, done, total)``
    reports each stage's advance (the CLI draws bars from it)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = say or (lambda _m: None)
    bar = progress or (lambda _s, _d, _t: None)
    cfg = study.config
    timings: dict[str, float] = {}
    atomic.write_text(out / "quickstart.yaml", dump_yaml(cfg))

    t0 = time.perf_counter()
    data_dir = _build_data(study, out / "data", say)
    timings["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    base = _pretrain(study, study.base_dir(out), say, bar)
    timings["pretrain"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _finetune_all(study, out, base, data_dir, say, bar)
    timings["finetune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sweep_cfg = study.sweep_config(out)
    _evaluate(sweep_cfg, say, bar)
    timings["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    files = _report(study, out, sweep_cfg, say)
    timings["report"] = time.perf_counter() - t0
    atomic.write_json(out / "summary.json", {
        "target": cfg.target, "reference": cfg.reference, "headline": list(files.findings),
        "contrasts": [c.to_dict(cfg.comparable_gain) for c in files.contrasts], "timings": timings})
    return QuickstartResult(out, files.markdown, files.html, files.figures, list(files.contrasts),
                            list(files.findings), timings)


def _build_data(study: Study, path: Path, say: Say) -> Path:
    from mixlab.data.api import build, read_info

    key = config_hash(study.data)
    if (path / "info.json").is_file() and read_info(path).get("config_hash") == key:
        say(f"data: {path} is built (same config); reusing it")
        return path
    say(f"1. Building the fine-tuning mixture toyworld_{study.config.target} (official train/test sides) "
        "and checking it for contamination ...")
    build(study.data, path)
    info = read_info(path)
    say(f"   {info['counts']['train_total']:,} training and {info['counts']['test_total']:,} test records; "
        + _contamination_line(info.get("contamination") or {}))
    return path


def _contamination_line(c: dict[str, Any]) -> str:
    refs = len(c.get("overlaps", []))
    line = (f"{c.get('ngram', '?')}-gram contamination check against {refs} test and benchmark sets: "
            f"{c.get('train_test_ngram_overlap', 0)} overlapping training items left")
    if c.get("dropped_before_mixing"):
        line += f" ({c['dropped_before_mixing']} dropped before mixing)"
    return line


def _pretrain(study: Study, path: Path, say: Say, bar: Callable[[str, int, int], None]) -> Path:
    from mixlab.train.pretrain import pretrain

    say("2. Pretraining the proxy base on a token-proportion mixture of the four toyworld domains ...")
    res = pretrain(study.pretrain, path, on_step=lambda s: bar("pretrain", s.step, s.total_steps))
    say(f"   {res.steps} steps, {res.tokens:,} tokens; held-out bits/byte "
        + ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in res.metrics.items() if k.startswith("bpb/")))
    final = path / "final"
    if not final.exists():  # a stable name for the base model, whatever its last step
        final.symlink_to(res.final_checkpoint.relative_to(path))
    return final


def _finetune_all(study: Study, out: Path, base: Path, data_dir: Path, say: Say,
                  bar: Callable[[str, int, int], None]) -> None:
    from mixlab.runs.launch import Job, raise_failures, run_jobs
    from mixlab.runs.launch.local import LocalLauncher

    names = list(study.finetune)
    say(f"3. Fine-tuning the base on {study.config.target} with {', '.join(names)} "
        f"({study.config.workers} processes, checkpoints every {study.finetune[names[0]].get('checkpoint', {}).get('every', 0)} steps) ...")
    jobs = [Job(name, finetune_job, (study.finetune_config(name, base, data_dir).model_dump(mode="json"),
                                     str(study.run_dir(out, name)))) for name in names]
    done = [0]

    def on_done(r: Any) -> None:
        done[0] += 1
        bar("fine-tune", done[0], len(jobs))
        if r.ok:
            t = r.value["timings"]
            say(f"   {r.name}: {'already done' if r.value['skipped'] else 'done'} "
                f"({t.get('training', 0):.0f} s training)")

    bar("fine-tune", 0, len(jobs))
    raise_failures(run_jobs(LocalLauncher(study.config.workers), jobs, on_done), "fine-tuning runs")


def _evaluate(sweep_cfg: Any, say: Say, bar: Callable[[str, int, int], None]) -> None:
    from mixlab.runs import sweep as S
    from mixlab.runs.poll import polling

    exp = S.resolve(sweep_cfg)
    done0, total = S.progress_counts(exp)
    say(f"4. Evaluating {len(exp.checkpoints)} checkpoints (base included) on {len(exp.specs)} tasks "
        f"through a resumable sweep ({total - done0} results to compute) ...")
    with polling(lambda: bar("evaluate", S.progress_counts(exp)[0], total)):
        reports = S.run_sweep(sweep_cfg)
    failed = [f for r in reports for f in r.failed]
    if failed:
        raise ConfigError(f"{len(failed)} evaluation(s) failed, first: {failed[0]}; run the quickstart again "
                          "to retry them (finished results are kept)")


def _report(study: Study, out: Path, sweep_cfg: Any, say: Say) -> Any:
    """Write the report (contrasted against the reference run) and narrate its findings."""
    from mixlab.report.collect import collect, primary_metrics
    from mixlab.report.forgetting import StatsConfig
    from mixlab.report.html import write_report

    say("5. Writing the report: forgetting table with confidence intervals, change vs step, gain vs forgetting ...")
    results, metas, base = collect(sweep_cfg)
    files = write_report(results, metas, base, out, title=f"mixlab quickstart: fine-tuning on toyworld "
                         f"{study.config.target}", config=StatsConfig(seed=study.config.seed),
                         reference=study.config.reference, primary=primary_metrics(sweep_cfg),
                         comparable_gain=study.config.comparable_gain)
    for line in files.findings:
        say("   " + line)
    return files
