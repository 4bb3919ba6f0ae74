"""The run contract every fine-tuning method keeps: what it loads first, how it evaluates and stops
early, the base model's baseline, and the :class:`FinetuneResult` it returns.

A method's ``prepare`` starts with :func:`load_for_run` (early-stopping tasks checked, device, base
model and tokenizer); its prepared object exposes ``config``, ``model``, ``tokenizer``, ``base_path``,
``eval_specs`` and ``summary()``, which is all :func:`run_evaluation` and :func:`evaluate_baseline`
read. Its ``run`` opens the run directory with :func:`open_run` (a finished run is returned as it
is), keeps the best checkpoint with an :class:`EarlyStopper`, and ends with a ``meta.json`` holding
the fields :func:`completed_result` reads back, so a finished run of any method is skipped alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mixlab import atomic
from mixlab.config import config_hash
from mixlab.errors import ConfigError, MixlabError
from mixlab.runs.rundir import RunDir
from mixlab.train.finetune.base import load_base
from mixlab.train.pretrain import resolve_device

if TYPE_CHECKING:
    from mixlab.train.finetune.config import FinetuneConfig

Say = Callable[[str], None]
EvaluateFn = Callable[[torch.nn.Module, int], dict[str, float]]


def quiet(_message: str) -> None:
    """The ``status`` callback of a run nobody watches."""


# ---------------------------------------------------------------- what every method loads first


def resolve_eval(cfg: FinetuneConfig) -> list[Any]:
    if cfg.early_stop is None:
        return []
    from mixlab.eval.engines import get_engine
    from mixlab.eval.tasks import resolve_tasks

    specs = resolve_tasks(cfg.early_stop.suite, cfg.early_stop.tasks)
    engines = {s.name: get_engine(s.kind) for s in specs}
    judged = [n for n, e in engines.items() if e.needs_judge]
    if judged:
        raise ConfigError(f"early_stop: judge task(s) {', '.join(judged)} cannot drive early stopping "
                          "(no judge is configured for training); choose bpb, mc or generate tasks")
    based = [n for n, e in engines.items() if e.needs_base]
    if based:
        raise ConfigError(f"early_stop: task(s) {', '.join(based)} compare with a base model, which the "
                          "in-training evaluation does not load; choose bpb, mc or generate tasks")
    name = cfg.early_stop.metric.split("/")[-1]
    reported = {m for s in specs for m in engines[s.name].reported(s)}
    if name not in reported:
        raise ConfigError(f"early_stop.metric: no task of the early-stopping set reports {name!r} "
                          f"(they report {sorted(reported)})")
    return specs


def load_for_run(cfg: FinetuneConfig, say: Say) -> tuple[list[Any], torch.device, torch.nn.Module, Any, str, float]:
    """What every method loads first: the early-stopping tasks (checked), the device, the base model and
    tokenizer, where the base came from, and the seconds loading it took."""
    specs = resolve_eval(cfg)
    device = resolve_device(cfg.train.device)
    say("loading base model")
    t0 = time.perf_counter()
    model, tok, base_path = load_base(cfg.model, device)
    return specs, device, model, tok, base_path, time.perf_counter() - t0


def set_threads(cfg: FinetuneConfig) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


# ---------------------------------------------------------------- early stopping


@dataclass
class EarlyStopper:
    """Tracks the best score; ``update`` says whether to stop (after ``patience`` evals without improvement)."""

    maximize: bool = True
    patience: int | None = 3
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)

    def improved(self, score: float) -> bool:
        if self.best is None:
            return True
        return score > self.best + self.min_delta if self.maximize else score < self.best - self.min_delta

    def update(self, step: int, score: float) -> bool:
        """Record ``score`` at ``step``; True when training should stop."""
        self.history.append((step, score))
        if self.improved(score):
            self.best, self.best_step, self.bad_evals = score, step, 0
        else:
            self.bad_evals += 1
        return self.patience is not None and self.bad_evals >= self.patience

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "history": [list(h) for h in self.history]}

    def load(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.bad_evals = state["best"], state["best_step"], state["bad_evals"]
        self.history = [(int(s), float(v)) for s, v in state["history"]]


def aggregate(results: dict[str, Any], metric: str) -> float:
    """One score from evaluation results: ``task/metric``, or ``metric`` averaged over tasks reporting it."""
    if "/" in metric:
        task, _, name = metric.partition("/")
        value = results.get(task, {}).get(name)
        if not isinstance(value, (int, float)):
            raise MixlabError(f"early_stop.metric {metric!r}: task {task!r} reported {results.get(task)}")
        return float(value)
    values = [float(r[metric]) for r in results.values() if isinstance(r, dict) and isinstance(r.get(metric), (int, float))]
    if not values:
        raise MixlabError(f"early_stop.metric {metric!r}: no evaluated task reported it ({results})")
    return sum(values) / len(values)


def flat_scores(results: dict[str, Any]) -> dict[str, float]:
    return {f"{t}/{k}": float(v) for t, r in results.items() if isinstance(r, dict)
            for k, v in r.items() if isinstance(v, (int, float)) and k != "n"}


# ---------------------------------------------------------------- the result and the run directory


@dataclass
class FinetuneResult:
    run_dir: Path
    final_checkpoint: Path
    best_checkpoint: Path | None
    steps: int
    stopped_early: bool
    metrics: dict[str, float]
    timings: dict[str, float]
    baseline: dict[str, Any] | None = None
    skipped: bool = False


EvaluateFn = Callable[[torch.nn.Module, int], dict[str, float]]


def _model_fingerprint(path: str) -> list[Any]:
    """What identifies the base's weights on disk (so a cached baseline never outlives them)."""
    p = Path(path)
    if not p.is_dir():
        return [path]
    return sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in p.iterdir() if f.is_file())


def baseline_dir(prep: Any) -> Path:
    """Where the base model's step-0 evaluation is cached, shared by every run on the same base and tasks."""
    from mixlab.settings import cache_dir

    e = prep.config.early_stop
    assert e is not None
    key = config_hash({"base": prep.base_path, "files": _model_fingerprint(prep.base_path),
                       "tasks": [s.fingerprint() for s in prep.eval_specs], "limit": e.limit, "batch": e.batch_size})
    return cache_dir() / "finetune_baselines" / key


def eval_model(model: torch.nn.Module) -> torch.nn.Module:
    """The causal-LM module the scorer needs (a PEFT wrapper's inner model, adapters active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def run_evaluation(prep: Any, model: torch.nn.Module, name: str, path: str, out: Path,
                   say: Say | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (in memory) on the early-stopping tasks into ``out`` through the eval engine."""
    from mixlab.eval.runner import evaluate
    from mixlab.models.pretrained import LoadedModel

    e = prep.config.early_stop
    assert e is not None
    loaded = LoadedModel(eval_model(model), prep.tokenizer, name, path)
    progress = (lambda task, done, total: say(f"evaluating {task} {done}/{total}")) if say else None
    return evaluate(loaded, prep.eval_specs, out, limit=e.limit, batch_size=e.batch_size, progress=progress)


def evaluate_baseline(prep: Any, out: Path, say: Say) -> dict[str, Any]:
    where = baseline_dir(prep)
    model = prep.model
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    with torch.no_grad(), ctx:
        results = run_evaluation(prep, model, prep.config.model.base, prep.base_path, where, say)
    model.train(was_training)
    atomic.write_json(out / "eval" / "step-0" / "results.json", results)
    return results


def completed_result(out: Path, meta: dict[str, Any]) -> FinetuneResult:
    """The result of the finished run whose ``meta.json`` is ``meta`` (``skipped``: nothing was redone)."""
    best = meta.get("best_checkpoint")
    return FinetuneResult(out, out / meta["final_checkpoint"], out / best if best else None, meta["steps"],
                          meta["stopped_early"], meta.get("final_metrics", {}), meta["timings"],
                          meta.get("baseline"), skipped=True)


def open_run(cfg: FinetuneConfig, out: Path) -> tuple[RunDir, FinetuneResult | None]:
    """The run directory of ``cfg`` in ``out``, and the finished run's result when there is one."""
    run = RunDir.open(out, cfg, "finetune")
    return run, completed_result(run.path, run.meta) if run.complete else None
