"""``mixlab study``: a whole forgetting study from one config, resumable stage by stage.

A study composes the public stages and nothing else:

1. ``data`` (optional): build the fine-tuning mixture and check it for contamination;
2. the base model: ``base`` (an alias such as ``smollm2-135m``, a Hugging Face folder, a cached hub id)
   or a ``pretrain`` section that trains a proxy base from scratch;
3. ``distill`` (optional): sample answers from the base (self-distillation) or another teacher and keep
   the ones a verifier accepts; a method trains on them with ``data: {records: "@distill"}``;
4. fine-tune the base once per entry of ``methods`` (each deep-merged into ``finetune``), several
   processes at once, checkpoints every N steps;
5. evaluate the base and the selected checkpoints of every run through a resumable sweep
   (``eval.limits`` caps items per task so a study fits a small machine);
6. write the forgetting report (``eval.targets`` are the gain axis, every other task counts towards
   forgetting) with each method contrasted item by item against ``reference``.

Stage folders under ``out`` are named by a hash of what determines them (``base-<h>``,
``distill-<h>``, ``runs/<method>-<h>``, ``sweep-<h>``): a changed value runs beside the old stages,
an unchanged stage is reused, and a stopped study resumes where it stopped (the sweep resumes per task).
``summary.json`` records the findings (with the benchmarks each mean averages and leaves out) and the
wall time of every stage and run: ``timings`` sums, per stage, every invocation of the same config (a
stage reused on a resume adds ~0 s, a resumed one the time it still took), ``invocations`` keeps each::

    from mixlab.study import load_study, run_study
    study = load_study("configs/studies/smollm2_gsm8k.yaml", ["eval.limit=20"])
    result = run_study(study, "runs/smollm2_gsm8k")
    print(result.headline)

``mixlab quickstart`` is a study on the embedded toyworld (:mod:`mixlab.quickstart` builds it).
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixlab import atomic
from mixlab.config import StrictModel, config_hash, dump_yaml, load_config, validate
from mixlab.errors import ConfigError
from mixlab.runs.sweep import CheckpointSelect

Say = Callable[[str], None]
Bar = Callable[[str, int, int], None]
DISTILL_REF = "@distill"  # data.records of a method that trains on the distilled answers


# ---------------------------------------------------------------- config


class StudyEval(StrictModel):
    """What the sweep evaluates: every task of ``suites`` plus ``tasks``, on the base and the
    ``checkpoints`` of each run; ``targets`` are the tasks the fine-tuning data is meant to improve."""

    suites: list[str] = Field([], description="evaluation suites (every task of each)")
    tasks: list[str] = Field([], description="more task names or task YAML paths")
    exclude: list[str] = Field([], description="tasks of the suites to leave out (e.g. one whose data is not here)")
    targets: list[str] = Field([], description="tasks measuring the fine-tuning target (the report's gain axis); "
                               "every other task measures forgetting")
    limit: int | None = Field(None, ge=1, description="items per task (null: all)")
    limits: dict[str, int] = Field({}, description="task -> items, overriding `limit` for that task")
    batch_size: int = Field(32, ge=1, description="items scored (or prompts generated) at once")
    device: str = Field("auto", description="torch device of the evaluation (auto: CUDA when available, else CPU)")
    checkpoints: CheckpointSelect = Field(CheckpointSelect(all=True), description="which checkpoints of each "
                                          "run to evaluate: all, every k-th, last, explicit steps")

    def task_names(self) -> list[str]:
        from mixlab.eval.tasks import suite_tasks

        names = [*[t for s in self.suites for t in suite_tasks(s)], *self.tasks]
        return [t for t in dict.fromkeys(names) if t not in self.exclude]


class MethodsStudy(StrictModel):
    """What every study config has (``mixlab study`` and the quickstart): a fine-tuning config shared by
    the methods, the methods deep-merged into it, and the reference every other method is contrasted with."""

    kind: str
    seed: int = Field(0, description="seed of every stage (data, training, sampling, statistics)")
    workers: int = Field(2, ge=1, description="processes for fine-tuning and evaluation (one torch thread each)")
    reference: str = Field(..., description="method every other one is contrasted with")
    comparable_gain: float = Field(0.8, gt=0, le=1, description="'comparable gain': at least this fraction "
                                   "of the reference's target gain")
    finetune: dict[str, Any] = Field(..., description="a fine-tuning config shared by every method "
                                     "(see 'finetune'); model.base (and data.build) are filled in")
    methods: dict[str, dict[str, Any]] = Field(..., description="method name -> the fine-tuning config fields it "
                                               "changes (deep-merged into `finetune`; null leaves it out)")

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
    def _reference(self) -> "MethodsStudy":
        if self.reference not in self.methods:
            raise ValueError(f"reference {self.reference!r} is not one of the methods ({', '.join(self.methods)})")
        return self


class StudyConfig(MethodsStudy):
    """A forgetting study (``mixlab study``). ``data``, ``pretrain``, ``distill`` and ``finetune`` are
    ordinary mixlab configs (see their commands); each entry of ``methods`` is deep-merged into ``finetune``."""

    kind: Literal["study"] = "study"
    name: str = Field(..., description="the study's name (report title, sweep name)")
    title: str | None = Field(None, description="the report's title (default: from `name`)")
    base: str | None = Field(None, description="the base model: an alias (smollm2-135m), a Hugging Face folder or "
                             "a cached hub id; or give `pretrain` instead")
    pretrain: dict[str, Any] | None = Field(None, description="a pretraining config (see 'pretrain') whose final "
                                            "checkpoint is the base")
    data: dict[str, Any] | None = Field(None, description="a data-build config (see 'data build'); when given, "
                                        "fine-tuning reads its mixture")
    distill: dict[str, Any] | None = Field(None, description="a distillation config (see 'distill'); teacher.model "
                                           "defaults to the base (self-distillation), data to the fine-tuning data")
    eval: StudyEval = StudyEval()

    @model_validator(mode="after")
    def _check(self) -> "StudyConfig":
        if (self.base is None) == (self.pretrain is None):
            raise ValueError("give exactly one of `base` (a pretrained model) or `pretrain` (train one)")
        if not self.eval.targets:
            raise ValueError("eval.targets: name the task(s) that measure the fine-tuning target")
        return self


def _trains_on_distill(finetune: dict[str, Any]) -> bool:
    """Whether a method's fine-tuning config data reads the distillation stage's answers."""
    return (finetune.get("data") or {}).get("records") == DISTILL_REF


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` deep-merged into a copy of ``base`` (a None in ``patch`` replaces, so it can unset a field)."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_study(path: str | Path, overrides: Sequence[str] = ()) -> "Study":
    """Read a study config, apply ``--set`` overrides and validate it *and* every stage config it
    implies, so a typo fails here, before any work."""
    cfg = load_config(Path(path), StudyConfig, overrides)
    return Study.from_config(cfg, str(path))


# ---------------------------------------------------------------- the validated study


@dataclass
class Study:
    """A validated study: every stage config, ready to run (paths are filled in by :func:`run_study`)."""

    name: str
    title: str
    source: str
    seed: int
    workers: int
    reference: str
    comparable_gain: float
    eval: StudyEval
    targets: list[str]
    finetune: dict[str, dict[str, Any]]  # method -> finetune config data (model/data paths added at run time)
    base: str | None = None
    pretrain: Any = None  # PretrainConfig
    data: Any = None  # DataConfig
    distill: dict[str, Any] | None = None  # distill config data (teacher/data paths added at run time)
    config: Any = None  # the StudyConfig (or QuickstartConfig) it came from
    describe: dict[str, str] = field(default_factory=dict)  # stage -> a sentence for the narration

    @classmethod
    def from_config(cls, cfg: StudyConfig, source: str) -> "Study":
        from mixlab.data.build import DataConfig
        from mixlab.train.pretrain import PretrainConfig

        data = validate(DataConfig, merge({"seed": cfg.seed}, cfg.data), f"{source} (section `data`)") \
            if cfg.data is not None else None
        pre = validate(PretrainConfig, merge({"seed": cfg.seed}, cfg.pretrain), f"{source} (section `pretrain`)") \
            if cfg.pretrain is not None else None
        return cls.assemble(cfg, source, name=cfg.name, title=cfg.title or cfg.name, base=cfg.base, pretrain=pre,
                            data=data, distill=cfg.distill, finetune=cfg.finetune, methods=cfg.methods,
                            evaluation=cfg.eval)

    @classmethod
    def assemble(cls, cfg: Any, source: str, *, name: str, title: str, base: str | None, pretrain: Any, data: Any,
                 distill: dict[str, Any] | None, finetune: dict[str, Any], methods: dict[str, dict[str, Any]],
                 evaluation: StudyEval, describe: dict[str, str] | None = None) -> "Study":
        """Merge and validate every stage config (shared by :class:`StudyConfig` and the quickstart)."""
        from mixlab.eval.tasks import resolve_tasks
        from mixlab.train.distill import DistillConfig
        from mixlab.train.finetune.config import FinetuneConfig

        shared = merge({"kind": "finetune", "seed": cfg.seed}, finetune)
        shared = merge(shared, {"model": {"base": "<base>"}})
        if data is not None:
            shared = merge(shared, {"data": {"build": "<data>"}})
        runs: dict[str, dict[str, Any]] = {}
        uses_distill = False
        for mname, patch in methods.items():
            d = merge(shared, patch)
            if _trains_on_distill(d):
                uses_distill = True
                d["data"] = {k: v for k, v in d["data"].items() if k not in ("build", "datasets")}
            validate(FinetuneConfig, d, f"{source} (methods.{mname} merged into `finetune`)")
            runs[mname] = d
        dist = None
        if distill is not None:
            dist = merge({"kind": "distill", "seed": cfg.seed, "teacher": {"model": "<base>"},
                          "data": {k: v for k, v in shared["data"].items() if k not in ("replay", "packing")}}, distill)
            validate(DistillConfig, dist, f"{source} (section `distill`)")
        elif uses_distill:
            raise ConfigError(f"{source}: a method trains on {DISTILL_REF!r} but the study has no `distill:` section")
        names = evaluation.task_names()
        if not names:
            raise ConfigError(f"{source}: eval: list suites and/or tasks to evaluate")
        resolve_tasks(tasks=names)  # unknown task names fail now
        for key, listed in (("targets", evaluation.targets), ("limits", list(evaluation.limits))):
            unknown = [t for t in listed if t not in names]
            if unknown:
                raise ConfigError(f"{source}: eval.{key}: {', '.join(unknown)} not among the evaluated tasks "
                                  f"({', '.join(names)})")
        return cls(name=name, title=title, source=source, seed=cfg.seed, workers=cfg.workers,
                   reference=cfg.reference, comparable_gain=cfg.comparable_gain, eval=evaluation,
                   targets=list(evaluation.targets), finetune=runs, base=base, pretrain=pretrain, data=data,
                   distill=dist, config=cfg, describe=describe or {})

    # Stage directories are named by what determines their content, so changing a value with --set
    # makes new stages beside the old ones (and an unchanged stage is reused) instead of clashing.
    def base_key(self) -> str:
        return config_hash(self.pretrain) if self.pretrain is not None else str(self.base)

    def base_dir(self, out: Path) -> Path:
        return out / f"base-{config_hash(self.pretrain, 8)}"

    def distill_dir(self, out: Path) -> Path:
        key = {"distill": self.distill, "data": self._data_key(), "base": self.base_key()}
        return out / f"distill-{config_hash(key, 8)}"

    def run_dir(self, out: Path, method: str) -> Path:
        key: dict[str, Any] = {"finetune": self.finetune[method], "data": self._data_key(), "base": self.base_key()}
        if self.uses_distill(method):
            key["distill"] = self.distill_dir(out).name
        return out / "runs" / f"{method}-{config_hash(key, 8)}"

    def sweep_dir(self, out: Path) -> Path:
        # Which checkpoints and tasks are evaluated is not part of the key: results are stored per
        # (checkpoint, task), so widening the selection later (--set eval.checkpoints.all=true, a task
        # added to eval.tasks) adds to the same sweep; the report reads only the tasks the config names.
        key = {"runs": [self.run_dir(out, m).name for m in self.finetune],
               "eval": self.eval.model_dump(exclude={"checkpoints", "tasks", "suites", "exclude", "targets", "device"}),
               "base": self.base_key()}
        return out / f"sweep-{config_hash(key, 8)}"

    def _data_key(self) -> str | None:
        return config_hash(self.data) if self.data is not None else None

    def uses_distill(self, method: str) -> bool:
        return _trains_on_distill(self.finetune[method])

    def finetune_config(self, method: str, base: str, data: Path | None, distilled: Path | None) -> Any:
        from mixlab.train.finetune.config import FinetuneConfig

        patch: dict[str, Any] = {"model": {"base": base}}
        if self.uses_distill(method):
            patch["data"] = {"records": str(distilled)}
        elif data is not None:
            patch["data"] = {"build": str(data)}
        d = merge(self.finetune[method], patch)
        return validate(FinetuneConfig, d, f"{self.source} (methods.{method})")

    def distill_config(self, base: str, data: Path | None) -> Any:
        from mixlab.train.distill import DistillConfig

        assert self.distill is not None
        d = copy.deepcopy(self.distill)
        if d["teacher"]["model"] == "<base>":
            d["teacher"]["model"] = base
        if d["data"].get("build") == "<data>":
            d["data"]["build"] = str(data)
        return validate(DistillConfig, d, f"{self.source} (section `distill`)")

    def base_model(self, out: Path) -> str:
        """The base every method starts from: the pretraining stage's final checkpoint, or ``base``."""
        return str(self.base_dir(out) / "final") if self.pretrain is not None else str(self.base)

    def sweep_config(self, out: Path) -> Any:
        from mixlab.runs.sweep import SweepConfig

        e, base = self.eval, self.base_model(out)
        return SweepConfig.model_validate({
            "name": self.name, "out": str(self.sweep_dir(out)),
            "runs": [{"path": str(self.run_dir(out, m)), "name": m, "targets": self.targets} for m in self.finetune],
            "base_models": [{"name": "base", "path": base}],
            "checkpoints": e.checkpoints.model_dump(), "tasks": e.task_names(), "limit": e.limit,
            "limits": e.limits, "batch_size": e.batch_size, "device": e.device, "workers": self.workers,
        })


# ---------------------------------------------------------------- jobs (module level: picklable)


def _worker_setup() -> None:
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()  # the study draws its own bars
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def finetune_job(cfg_data: dict[str, Any], out: str) -> dict[str, Any]:
    """One fine-tuning run in a worker process (one torch thread); returns its timings."""
    from mixlab.train.finetune import FinetuneConfig, finetune

    _worker_setup()
    t0 = time.perf_counter()
    res = finetune(FinetuneConfig.model_validate(cfg_data), out)
    return {"steps": res.steps, "timings": res.timings, "skipped": res.skipped, "seconds": time.perf_counter() - t0}


def distill_job(cfg_data: dict[str, Any], out: str) -> dict[str, Any]:
    """Sample and verify the distillation data in a worker process (one torch thread)."""
    from mixlab.train.distill import DistillConfig, describe_rates, distill

    _worker_setup()
    t0 = time.perf_counter()
    res = distill(DistillConfig.model_validate(cfg_data), out)
    return {"kept": res.kept, "sampled": res.sampled, "rates": describe_rates(res.per_dataset),
            "skipped": res.skipped, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- the run


@dataclass
class StudyResult:
    out: Path
    report_md: Path
    report_html: Path
    figures: tuple[Path, ...]
    contrasts: list[Any]
    headline: list[str]
    timings: dict[str, Any]


def run_study(study: Study, out: str | Path, say: Say | None = None, progress: Bar | None = None) -> StudyResult:
    """Run (or resume) ``study`` into ``out``; ``say`` narrates, ``progress(stage, done, total)``
    reports each stage's advance (the CLI draws bars from it)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = _numbered(say or (lambda _m: None))
    bar = progress or (lambda _s, _d, _t: None)
    if study.config is not None:
        atomic.write_text(out / "study.yaml", dump_yaml(study.config))
    timings: dict[str, Any] = {}

    t0 = time.perf_counter()
    data_dir = _build_data(study, out / "data", say) if study.data is not None else None
    timings["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if study.pretrain is not None:
        _pretrain(study, study.base_dir(out), say, bar)
    base = study.base_model(out)
    timings["pretrain"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    jobs = _finetune_all(study, out, base, data_dir, say, bar)
    timings["finetune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sweep_cfg = study.sweep_config(out)
    _evaluate(sweep_cfg, say, bar)
    timings["evaluate"] = time.perf_counter() - t0

    summary_path = out / "summary.json"
    # a resumed study reuses finished stages, so each invocation's timings are kept, not overwritten
    history = _read_json(summary_path).get("invocations", [])
    key = config_hash(study.config) if study.config is not None else None
    t0 = time.perf_counter()
    so_far = {k: v for k, v in stage_timings(history, key, timings).items() if k in timings}  # the report: not yet
    files = _report(study, out, sweep_cfg, say, so_far, _stage_notes(study, jobs))
    timings["report"] = time.perf_counter() - t0
    env = environment()
    history.append({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": env.get("commit"),
                    "config_hash": key, "timings": timings, "jobs": jobs})
    total = stage_timings(history[:-1], key, timings)
    atomic.write_json(summary_path, {
        "name": study.name, "reference": study.reference, "headline": list(files.findings),
        "contrasts": [c.to_dict(study.comparable_gain) for c in files.contrasts],
        "timings": total, "jobs": jobs, "environment": env, "invocations": history})
    return StudyResult(out, files.markdown, files.html, files.figures, list(files.contrasts),
                       list(files.findings), total)


def stage_timings(history: Sequence[dict[str, Any]], key: str | None, current: dict[str, float]) -> dict[str, float]:
    """Wall seconds per stage spent by the earlier invocations of the same config (``key``) plus this
    one's: what each stage really cost, whether it ran at once or over several resumed invocations (a
    reused stage adds its ~0 s check; a changed config starts its own count)."""
    out = dict.fromkeys(current, 0.0)
    for inv in history:
        if inv.get("config_hash") != key:
            continue
        for stage, v in (inv.get("timings") or {}).items():
            if isinstance(v, (int, float)):
                out[stage] = out.get(stage, 0.0) + float(v)
    for stage, v in current.items():
        out[stage] += v
    return out


def _stage_notes(study: Study, jobs: dict[str, Any]) -> dict[str, str]:
    """What each stage did, for the report's wall-time table."""
    runs = [n for n in jobs if n != "distill"]
    notes = {"data": f"build {study.data.name or 'the fine-tuning mixture'} and its contamination check"
             if study.data is not None else "no data stage",
             "pretrain": "pretrain the proxy base" if study.pretrain is not None else f"base {study.base}: nothing to train",
             "finetune": f"{len(runs)} fine-tuning runs" + (" and the distillation data" if "distill" in jobs else "")
             + f", {study.workers} at a time",
             "evaluate": f"the sweep: the base and every selected checkpoint on {len(study.eval.task_names())} tasks, "
                         f"{study.workers} workers"}
    return notes


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _numbered(say: Say) -> Say:
    """Narration whose stage lines (those not indented) are numbered 1., 2., ..."""
    n = [0]

    def numbered(message: str) -> None:
        if message.startswith(" "):
            say(message)
        else:
            n[0] += 1
            say(f"{n[0]}. {message}")
    return numbered


def environment() -> dict[str, Any]:
    """Where the study ran: the mixlab checkout's commit, library versions, CPU count (as runs record them)."""
    from mixlab.runs.rundir import git_commit, versions

    return {"commit": git_commit(), "versions": versions(), "cpus": os.cpu_count(), "machine": platform.machine()}


def _build_data(study: Study, path: Path, say: Say) -> Path:
    from mixlab.data.api import build, read_info

    key = config_hash(study.data)
    if (path / "info.json").is_file() and read_info(path).get("config_hash") == key:
        say(f"data: {path} is built (same config); reusing it")
        return path
    say(study.describe.get("data", f"Building the fine-tuning mixture {study.data.name or ''} and checking it "
                                   "for contamination ..."))
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


def _pretrain(study: Study, path: Path, say: Say, bar: Bar) -> Path:
    from mixlab.train.pretrain import pretrain

    say(study.describe.get("pretrain", "Pretraining the base on its token-proportion mixture ..."))
    res = pretrain(study.pretrain, path, on_step=lambda s: bar("pretrain", s.step, s.total_steps))
    say(f"   {res.steps} steps, {res.tokens:,} tokens; held-out bits/byte "
        + ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in res.metrics.items() if k.startswith("bpb/")))
    final = path / "final"
    if not final.exists():  # a stable name for the base model, whatever its last step
        final.symlink_to(res.final_checkpoint.relative_to(path))
    return final


def _finetune_all(study: Study, out: Path, base: str, data_dir: Path | None, say: Say, bar: Bar) -> dict[str, Any]:
    """The distillation data and every fine-tuning run, ``workers`` at a time; runs that train on the
    distilled answers start once those exist (at once when a resumed study finds them made; otherwise
    after the first batch, which holds the distillation). Returns each job's timings."""
    from mixlab.runs.launch import Job, raise_failures, run_jobs
    from mixlab.runs.launch.local import LocalLauncher

    names = list(study.finetune)
    every = study.finetune[names[0]].get("checkpoint", {}).get("every", 0)
    say(study.describe.get("finetune", f"Fine-tuning the base with {', '.join(names)}") +
        f" ({study.workers} processes, checkpoints every {every} steps) ...")
    first: list[Any] = []
    ready = True  # whether the distilled answers exist already (a resumed study): then every run starts at once
    if study.distill is not None:
        from mixlab.runs.rundir import RunDir

        dcfg = study.distill_config(base, data_dir)
        first.append(Job("distill", distill_job, (dcfg.model_dump(mode="json"), str(study.distill_dir(out)))))
        ready = RunDir.open(study.distill_dir(out), dcfg, "distill").complete
    distilled = study.distill_dir(out) / "train.jsonl" if study.distill is not None else None

    def job(name: str) -> Any:
        cfg = study.finetune_config(name, base, data_dir, distilled)
        return Job(name, finetune_job, (cfg.model_dump(mode="json"), str(study.run_dir(out, name))))

    first += [job(n) for n in names if ready or not study.uses_distill(n)]
    total = len(first) + sum(study.uses_distill(n) for n in names)
    done: dict[str, Any] = {}

    def on_done(r: Any) -> None:
        bar("fine-tune", len(done) + 1, total)
        if not r.ok:
            done[r.name] = {"error": str(getattr(r, "error", "failed"))}
            return
        done[r.name] = r.value
        v = r.value
        state = "already done" if v.get("skipped") else f"done in {v['seconds']:.0f} s"
        extra = f"; {'; '.join(v['rates'])}" if "rates" in v else ""
        say(f"   {r.name}: {state}{extra}")

    bar("fine-tune", 0, total)
    launcher = LocalLauncher(study.workers)
    raise_failures(run_jobs(launcher, first, on_done), "fine-tuning runs")
    later = [] if ready else [job(n) for n in names if study.uses_distill(n)]
    if later:
        raise_failures(run_jobs(launcher, later, on_done), "fine-tuning runs on distilled data")
    return done


def _evaluate(sweep_cfg: Any, say: Say, bar: Bar) -> None:
    from mixlab.runs import sweep as S
    from mixlab.runs.poll import polling

    exp = S.resolve(sweep_cfg)
    done0, total = S.progress_counts(exp)
    say(f"Evaluating {len(exp.checkpoints)} checkpoints (base included) on {len(exp.specs)} tasks "
        f"through a resumable sweep ({total - done0} results to compute) ...")
    with polling(lambda: bar("evaluate", S.progress_counts(exp)[0], total)):
        reports = S.run_sweep(sweep_cfg)
    failed = [f for r in reports for f in r.failed]
    if failed:
        raise ConfigError(f"{len(failed)} evaluation(s) failed, first: {failed[0]}; run the study again "
                          "to retry them (finished results are kept)")


def _report(study: Study, out: Path, sweep_cfg: Any, say: Say, stages: dict[str, float],
            notes: dict[str, str]) -> Any:
    """Write the report (contrasted against the reference run, with the stages' wall time) and narrate
    its findings."""
    from mixlab.report.collect import collect, primary_metrics
    from mixlab.report.forgetting import StatsConfig
    from mixlab.report.html import write_report

    say("Writing the report: forgetting table with confidence intervals, change vs step, gain vs forgetting ...")
    results, metas, base = collect(sweep_cfg)
    wanted = set(sweep_cfg.tasks)  # the sweep may hold tasks an earlier version of the config named
    results = [r for r in results if r.task in wanted]
    files = write_report(results, metas, base, out, title=study.title, config=StatsConfig(seed=study.seed),
                         reference=study.reference, primary=primary_metrics(sweep_cfg),
                         comparable_gain=study.comparable_gain, stages=stages, stage_notes=notes)
    for line in files.findings:
        say("   " + line)
    return files
