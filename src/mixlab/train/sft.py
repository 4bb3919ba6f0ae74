"""The fine-tuning recipe: a base model + prompt/completion records -> the one training loop.

``method`` names the training algorithm from :data:`METHODS`: ``sft`` (full fine-tuning on the
completion tokens) or ``lora`` (the same objective through a ``peft`` LoRA adapter; a ``lora:``
section adds an adapter to any method). Orthogonal options compose with every method that takes
them: ``anchor`` (KL / reverse KL / JS to the frozen base, :mod:`mixlab.train.objectives`),
``data.replay`` and ``data.sample_ratio`` (:mod:`mixlab.train.sft_data`), and ``early_stop``
(evaluation through :func:`mixlab.eval.runner.evaluate` every N steps, keeping the best checkpoint).

``prepare(cfg)`` reads and checks the data, loads the base model, applies LoRA (failing on a target
module the model lacks) and resolves the early-stopping tasks: every user error surfaces there,
before training. ``finetune(cfg, out)`` runs it in a run directory and resumes from its latest
checkpoint (bit-identical on CPU: the data stream is a pure function of the step and the loop saves
every RNG). The run directory holds ``config.yaml``, ``meta.json`` (with runtime split into
training / evaluation / judging / model_io), ``metrics.jsonl``, ``checkpoints/step-N/`` (full HF
models, or PEFT adapters with LoRA), ``best/`` (the best early-stopping checkpoint), ``merged/``
(LoRA merged into the base) and ``eval/step-N/`` (evaluation results).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from mixlab import atomic
from mixlab.config import StrictModel, config_hash, load_config
from mixlab.errors import ConfigError, MixlabError
from mixlab.runs.rundir import base_meta, write_config
from mixlab.train import checkpoint, distributed
from mixlab.train.loop import Hooks, LoopConfig, StepInfo, train
from mixlab.train.method_options import GRPOSection, SPINSection
from mixlab.train.objectives import AnchorConfig, Reference, SFTLoss
from mixlab.runs.rundir import check_run_dir
from mixlab.train.pretrain import resolve_device
from mixlab.train.schedule import ScheduleConfig
from mixlab.train.sft_data import DataSection, SFTBatches, SFTData, build_sft_data

# ---------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A fine-tuning algorithm: which objective it trains and which options it accepts.

    ``objective`` is ``"module:factory"``; the factory takes ``(cfg, model, reference)`` and returns
    the loop's Objective. ``lora`` says whether an adapter is required, optional or impossible;
    ``anchor`` whether an anchor to the base model makes sense for it (RL methods carry their own
    KL term). Part 2 methods (distill, spin, grpo) register here the same way.
    """

    objective: str
    lora: Literal["required", "optional", "never"]
    anchor: bool
    description: str
    recipe: str | None = None  # a module with its own prepare / format_plan / finetune (trl-based methods)
    replay: bool = True  # whether data.replay / data.packing make sense for it


METHODS: dict[str, Method] = {
    "sft": Method("mixlab.train.sft:sft_objective", "optional", True,
                  "supervised fine-tuning on completion tokens (full weights, or LoRA with a `lora:` section)"),
    "lora": Method("mixlab.train.sft:sft_objective", "required", True,
                   "supervised fine-tuning of a LoRA adapter (peft); `lora:` optional, defaults apply"),
    "grpo": Method("", "optional", False, "GRPO (trl) with mixlab's verifiers as rewards; `grpo:` section",
                   recipe="mixlab.train.grpo", replay=False),
    "spin": Method("", "optional", False, "SPIN: iterated DPO (trl), ground truth vs the model's own answers; "
                   "`spin:` section", recipe="mixlab.train.spin", replay=False),
}


def recipe_module(cfg: "FinetuneConfig"):
    """The module implementing ``cfg.method`` when it is not the loop-based SFT recipe, else None."""
    import importlib

    name = METHODS[cfg.method].recipe
    return importlib.import_module(name) if name else None


def sft_objective(cfg: "FinetuneConfig", model: torch.nn.Module, reference: Reference | None) -> SFTLoss:
    return SFTLoss(cfg.anchor, reference)


def build_objective(cfg: "FinetuneConfig", model: torch.nn.Module, reference: Reference | None):
    import importlib

    mod, _, fn = METHODS[cfg.method].objective.partition(":")
    return getattr(importlib.import_module(mod), fn)(cfg, model, reference)


# ---------------------------------------------------------------- config


class ModelSection(StrictModel):
    """The base model: a pretraining run directory, a Hugging Face directory, an alias or a hub id."""

    base: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class LoraSection(StrictModel):
    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    save_merged: bool = Field(True, description="also write merged/ (adapter merged into the base weights)")


class TrainSection(StrictModel):
    steps: int | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0, description="passes over the examples (default 1 when steps is unset)")
    batch_size: int = Field(16, gt=0, description="examples per optimizer step")
    micro_batch_size: int | None = Field(None, gt=0)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    schedule: ScheduleConfig = ScheduleConfig(kind="cosine", warmup=0.05, min_lr_ratio=0.0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    threads: int | None = Field(None, gt=0)
    log_every: int = Field(10, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "TrainSection":
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give train.steps or train.epochs, not both")
        mb = self.micro_batch_size or self.batch_size
        if self.batch_size % mb:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of micro_batch_size={mb}")
        return self


class EarlyStopSection(StrictModel):
    """Evaluate ``suite``/``tasks`` every ``every`` steps; stop after ``patience`` evaluations without
    improvement of ``metric`` (``patience: null`` evaluates and keeps the best without stopping).

    ``metric`` is a metric name averaged over the tasks that report it (``acc``, ``bpb``) or one
    task's metric (``toyworld_prose_mc/acc``); ``mode: auto`` minimizes bpb and maximizes the rest.
    ``baseline`` evaluates the base model once (cached across runs) as step 0.
    """

    suite: str | None = None
    tasks: list[str] = []
    metric: str = "acc"
    mode: Literal["auto", "max", "min"] = "auto"
    every: int = Field(50, gt=0)
    patience: int | None = Field(3, gt=0)
    min_delta: float = Field(0.0, ge=0)
    limit: int | None = Field(None, gt=0, description="items per task")
    batch_size: int = Field(32, gt=0)
    baseline: bool = True

    @model_validator(mode="after")
    def _tasks(self) -> "EarlyStopSection":
        if not self.suite and not self.tasks:
            raise ValueError("early_stop needs a suite or tasks to evaluate")
        return self

    @property
    def maximize(self) -> bool:
        return self.mode == "max" or (self.mode == "auto" and not self.metric.split("/")[-1].startswith("bpb"))


class CheckpointSection(StrictModel):
    every: int = Field(0, ge=0, description="steps between checkpoints (0: only the final one)")
    keep_optimizer_states: int = Field(1, ge=1)


class FinetuneConfig(StrictModel):
    """A fine-tuning run (``mixlab finetune``)."""

    kind: Literal["finetune"] = "finetune"
    seed: int = 0
    method: str = "sft"
    model: ModelSection
    data: DataSection
    train: TrainSection = TrainSection()
    lora: LoraSection | None = None
    anchor: AnchorConfig | None = None
    early_stop: EarlyStopSection | None = None
    checkpoint: CheckpointSection = CheckpointSection()
    grpo: GRPOSection | None = None
    spin: SPINSection | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        return method

    @field_validator("anchor")
    @classmethod
    def _anchor_allowed(cls, anchor: AnchorConfig | None, info: ValidationInfo) -> AnchorConfig | None:
        method = METHODS.get(info.data.get("method", ""))
        if anchor is not None and method is not None and not method.anchor:
            raise ValueError(f"method {info.data['method']!r} cannot take an anchor (it has its own "
                             "regularizer); remove the `anchor:` section")
        return anchor

    @field_validator("lora")
    @classmethod
    def _lora_allowed(cls, lora: LoraSection | None, info: ValidationInfo) -> LoraSection | None:
        method = METHODS.get(info.data.get("method", ""))
        if lora is not None and method is not None and method.lora == "never":
            raise ValueError(f"method {info.data['method']!r} cannot train a LoRA adapter; remove the `lora:` section")
        return lora

    @model_validator(mode="after")
    def _default_lora(self) -> "FinetuneConfig":
        if METHODS[self.method].lora == "required" and self.lora is None:
            self.lora = LoraSection()
        return self

    @model_validator(mode="after")
    def _method_sections(self) -> "FinetuneConfig":
        for name, section in (("grpo", GRPOSection), ("spin", SPINSection)):
            if getattr(self, name) is not None and self.method != name:
                raise ValueError(f"a `{name}:` section needs `method: {name}` (the method is {self.method!r})")
            if self.method == name and getattr(self, name) is None:
                setattr(self, name, section())
        if not METHODS[self.method].replay:
            if self.data.replay is not None:
                raise ValueError(f"method {self.method!r} learns from the model's own answers, not from a fixed "
                                 "token stream, so data.replay does not apply; remove it (mix general data into "
                                 "the prompts with a data build instead)")
            if self.data.packing:
                raise ValueError(f"method {self.method!r} does not pack examples; remove data.packing")
        return self

    @property
    def uses_lora(self) -> bool:
        return self.lora is not None


def load_finetune_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> FinetuneConfig:
    """Read and validate a fine-tuning config (errors name file, line and field)."""
    return load_config(path, FinetuneConfig, overrides)


# ---------------------------------------------------------------- model


def resolve_base(base: str) -> Path | str:
    """A pretraining run directory resolves to its final checkpoint; anything else as ``load_model`` does."""
    from mixlab.models.pretrained import resolve

    path = Path(base).expanduser()
    meta = path / "meta.json"
    if path.is_dir() and meta.is_file() and not (path / "config.json").is_file():
        info = json.loads(meta.read_text())
        if info.get("status") != "complete" or "final_checkpoint" not in info:
            raise MixlabError(f"{path}: the pretraining run is not complete; finish it (`mixlab pretrain ... "
                              f"--out {path}`) or point model.base at a checkpoint")
        return path / info["final_checkpoint"]
    return resolve(base)


def load_base(section: ModelSection, device: torch.device) -> tuple[torch.nn.Module, Any, str]:
    """The base model (train mode) and tokenizer from ``section.base``; nothing is downloaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    where = resolve_base(section.base)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no per-shard bar inside the run's own progress display
    try:
        tok = AutoTokenizer.from_pretrained(str(where))
        model = AutoModelForCausalLM.from_pretrained(str(where), dtype=getattr(torch, section.dtype))
    except OSError as e:
        raise MixlabError(f"model.base: could not load {section.base!r}: {e}") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device), tok, str(where)


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Short names of the model's Linear layers (what LoRA ``target_modules`` can name)."""
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def apply_lora(model: torch.nn.Module, section: LoraSection, seed: int) -> torch.nn.Module:
    """Wrap ``model`` in a peft LoRA adapter; a target module the model lacks is a ConfigError."""
    from peft import LoraConfig, get_peft_model

    have = linear_module_names(model)
    missing = [t for t in section.target_modules if t not in have]
    if missing:
        raise ConfigError(f"lora.target_modules: the model has no module(s) {', '.join(missing)}; "
                          f"its linear layers are {', '.join(sorted(have))}")
    cfg = LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                     target_modules=list(section.target_modules), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # adapter initialization is part of the run's seed
        return get_peft_model(model, cfg)


def merge_lora(base: str, adapter: str | Path, out: str | Path) -> Path:
    """Merge a LoRA adapter into its base model and write a plain HF model directory (atomic)."""
    from peft import PeftModel

    model, tok, _ = load_base(ModelSection(base=base), torch.device("cpu"))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return checkpoint.save(out, merged, None, None, {"merged_from": str(adapter), "base": base}, tok)


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


# ---------------------------------------------------------------- plan


@dataclass
class FinetunePrepared:
    config: FinetuneConfig
    model: torch.nn.Module
    tokenizer: Any
    base_path: str
    data: SFTData
    steps: int
    device: torch.device
    eval_specs: list[Any]
    load_seconds: float

    def summary(self) -> dict[str, Any]:
        c, d = self.config, self.data
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {
            "method": c.method, "base": self.base_path, "device": str(self.device), "steps": self.steps,
            "batch_size": c.train.batch_size, "examples": len(d.examples), "target_examples": d.n_target,
            "replay_examples": d.n_replay, "records": d.n_records, "truncated": d.truncated,
            "completion_tokens": d.completion_tokens, "chat_template": d.chat_template, "data": d.origin,
            "replay": d.replay_origin, "packing": c.data.packing,
            "trainable_params": trainable, "total_params": sum(p.numel() for p in self.model.parameters()),
            "lora": c.lora.model_dump() if c.lora else None, "anchor": c.anchor.model_dump() if c.anchor else None,
            "early_stop_tasks": [s.name for s in self.eval_specs],
        }


def _resolve_eval(cfg: FinetuneConfig) -> list[Any]:
    if cfg.early_stop is None:
        return []
    from mixlab.eval.tasks import resolve_tasks

    specs = resolve_tasks(cfg.early_stop.suite, cfg.early_stop.tasks)
    judged = [s.name for s in specs if s.kind == "judge"]
    if judged:
        raise ConfigError(f"early_stop: judge task(s) {', '.join(judged)} cannot drive early stopping "
                          "(no judge is configured for training); choose bpb, mc or generate tasks")
    name = cfg.early_stop.metric.split("/")[-1]
    if not any(name in s.metrics or (name == "bpb_corpus" and s.kind == "bpb") for s in specs):
        raise ConfigError(f"early_stop.metric: no task of the early-stopping set reports {name!r} "
                          f"(they report {sorted({m for s in specs for m in s.metrics})})")
    return specs


def load_for_run(cfg: FinetuneConfig, say: Callable[[str], None]) -> tuple[list[Any], torch.device, torch.nn.Module,
                                                                          Any, str, float]:
    """What every method loads first: the early-stopping tasks (checked), the device, the base model and
    tokenizer, where the base came from, and the seconds loading it took."""
    specs = _resolve_eval(cfg)
    device = resolve_device(cfg.train.device)
    say("loading base model")
    t0 = time.perf_counter()
    model, tok, base_path = load_base(cfg.model, device)
    return specs, device, model, tok, base_path, time.perf_counter() - t0


def prepare(cfg: FinetuneConfig, status: Callable[[str], None] | None = None) -> FinetunePrepared:
    """Load and check everything a run needs; every user error is raised here, before training."""
    say = status or (lambda _m: None)
    if (module := recipe_module(cfg)) is not None:
        return module.prepare(cfg, say)
    specs, device, model, tok, base_path, load_s = load_for_run(cfg, say)
    say("reading data")
    data = build_sft_data(cfg.data, tok, cfg.seed)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora, cfg.seed)
    t = cfg.train
    steps = t.steps or max(1, math.ceil((t.epochs or 1.0) * len(data.examples) / t.batch_size))
    return FinetunePrepared(cfg, model, tok, base_path, data, steps, device, specs, load_s)


def format_plan(prep: FinetunePrepared) -> str:
    """Human-readable plan for ``--dry-run``."""
    if (module := recipe_module(prep.config)) is not None:
        return module.format_plan(prep)
    s = prep.summary()
    c = prep.config
    lines = [
        f"method       {c.method}: {METHODS[c.method].description}",
        f"base         {s['base']} ({s['total_params']:,} params, {s['trainable_params']:,} trainable) on {s['device']}",
        f"data         {s['data']}: {s['records']:,} records -> {s['target_examples']:,} examples"
        + (f" + {s['replay_examples']:,} replay from {s['replay']}" if s["replay"] else "")
        + f", {s['completion_tokens']:,} target tokens, chat template {'on' if s['chat_template'] else 'off'}"
        + (f", {s['truncated']} truncated" if s["truncated"] else ""),
        f"training     {s['steps']:,} steps x {c.train.batch_size} examples, lr {c.train.lr:g}, {c.train.schedule.kind}",
    ]
    if c.anchor:
        a = c.anchor
        lines.append(f"anchor       {a.type} coef {a.coef:g} from step {a.start_step} (warm-up {a.warmup_steps})"
                     + (f", last {a.last_n_tokens} tokens" if a.last_n_tokens else ""))
    if c.lora:
        lines.append(f"lora         r={c.lora.r} alpha={c.lora.alpha:g} dropout={c.lora.dropout:g} on {', '.join(c.lora.target_modules)}")
    if c.early_stop:
        e = c.early_stop
        lines.append(f"early stop   {e.metric} ({'max' if e.maximize else 'min'}) every {e.every} steps, patience "
                     f"{e.patience} on {', '.join(s['early_stop_tasks'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the run


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


def baseline_dir(prep: FinetunePrepared) -> Path:
    """Where the base model's step-0 evaluation is cached, shared by every run on the same base and tasks."""
    from mixlab.settings import cache_dir

    e = prep.config.early_stop
    assert e is not None
    key = config_hash({"base": prep.base_path, "files": _model_fingerprint(prep.base_path),
                       "tasks": [s.fingerprint() for s in prep.eval_specs], "limit": e.limit, "batch": e.batch_size})
    return cache_dir() / "finetune_baselines" / key


def _eval_model(model: torch.nn.Module) -> torch.nn.Module:
    """The causal-LM module the scorer needs (a PEFT wrapper's inner model, adapters active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def run_evaluation(prep: FinetunePrepared, model: torch.nn.Module, name: str, path: str, out: Path,
                   say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (in memory) on the early-stopping tasks into ``out`` through the eval engine."""
    from mixlab.eval.runner import evaluate
    from mixlab.models.pretrained import LoadedModel

    e = prep.config.early_stop
    assert e is not None
    loaded = LoadedModel(_eval_model(model), prep.tokenizer, name, path)
    progress = (lambda task, done, total: say(f"evaluating {task} {done}/{total}")) if say else None
    return evaluate(loaded, prep.eval_specs, out, limit=e.limit, batch_size=e.batch_size, progress=progress)


def _baseline(prep: FinetunePrepared, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
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


def _threads(cfg: FinetuneConfig) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def finetune(cfg: FinetuneConfig, out: str | Path, on_step: Callable[[StepInfo], None] | None = None,
             status: Callable[[str], None] | None = None, evaluate_fn: EvaluateFn | None = None) -> FinetuneResult:
    """Run (or resume, or skip when finished) the fine-tuning described by ``cfg`` in ``out``.

    ``evaluate_fn(model, step) -> {"score": ..., ...}`` replaces the early-stopping evaluation
    (custom metrics, tests); by default the ``early_stop`` tasks run through the evaluation engine.
    In a process group (``mixlab.train.distributed.launch(finetune, cfg, out, nproc=N)``) every rank
    calls this; rank 0 alone evaluates and writes the run directory.
    """
    if (module := recipe_module(cfg)) is not None:
        return module.finetune(cfg, out, on_step=on_step, status=status)
    out = Path(out)
    say = status or (lambda _m: None)
    meta = check_run_dir(out, cfg)
    if meta and meta.get("status") == "complete":
        best = meta.get("best_checkpoint")
        return FinetuneResult(out, out / meta["final_checkpoint"], out / best if best else None, meta["steps"],
                              meta["stopped_early"], meta.get("final_metrics", {}), meta["timings"],
                              meta.get("baseline"), skipped=True)
    _threads(cfg)
    t_start = time.perf_counter()
    main = distributed.is_main()
    _, micro = distributed.split_batch(cfg.train.batch_size, cfg.train.micro_batch_size)  # before any work
    prep = prepare(cfg, say)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, cfg)
        meta = {**base_meta(cfg, cfg.seed), "stage": "finetune", "status": "running", "plan": prep.summary()}
        atomic.write_json(out / "meta.json", meta)
    model, tok = prep.model, prep.tokenizer
    io_s = prep.load_seconds
    reference = None
    if cfg.anchor is not None and cfg.anchor.coef > 0:
        # LoRA: the base is the model with its adapter disabled; full fine-tuning: a frozen copy
        reference = Reference(None) if cfg.uses_lora else Reference(copy.deepcopy(model))
    objective = build_objective(cfg, model, reference)

    eval_s, baseline = 0.0, None
    e = cfg.early_stop
    if e is not None and e.baseline and evaluate_fn is None and main:
        say("baseline evaluation")
        t0 = time.perf_counter()
        baseline = _baseline(prep, out, say)
        eval_s += time.perf_counter() - t0
    stopper = EarlyStopper(e.maximize, e.patience, e.min_delta) if e else EarlyStopper()
    last = checkpoint.latest(out)
    total_steps = prep.steps
    if last is not None and "early_stop" in checkpoint.read_info(last):
        stopper.load(checkpoint.read_info(last)["early_stop"])
        if stopper.patience is not None and stopper.bad_evals >= stopper.patience:
            total_steps = int(checkpoint.read_info(last)["step"])  # killed after stopping: nothing left to train
    best_io = [0.0]

    def evaluate(m: torch.nn.Module, step: int) -> dict[str, float]:
        if evaluate_fn is not None:
            scores = dict(evaluate_fn(m, step))
        else:
            res = run_evaluation(prep, m, f"{out}@step-{step}", str(checkpoint.step_dir(out, step)),
                                 out / "eval" / f"step-{step}", say)
            scores = {**flat_scores(res), "score": aggregate(res, e.metric)}  # type: ignore[union-attr]
        if stopper.improved(scores["score"]):
            t0 = time.perf_counter()
            checkpoint.save(out / "best", m, None, None, {"step": step, "score": scores["score"]}, tok)
            best_io[0] += time.perf_counter() - t0
        return scores

    def should_stop(step: int, scores: dict[str, float]) -> bool:
        return stopper.update(step, scores["score"])

    t = cfg.train
    data = SFTBatches(prep.data.examples, t.batch_size, micro, tok.pad_token_id, cfg.seed, prep.device,
                      distributed.rank(), distributed.world_size())
    loop_cfg = LoopConfig(
        total_steps=total_steps, lr=t.lr, weight_decay=t.weight_decay, betas=t.betas, eps=t.eps,
        grad_clip=t.grad_clip, schedule=t.schedule, precision=t.precision, log_every=t.log_every,
        eval_every=e.every if e else 0, checkpoint_every=cfg.checkpoint.every,
        keep_optimizer_states=cfg.checkpoint.keep_optimizer_states, seed=cfg.seed,
    )
    hooks = Hooks(evaluate=evaluate if e or evaluate_fn else None, should_stop=should_stop if e or evaluate_fn else None,
                  on_step=on_step, checkpoint_info=lambda: {"early_stop": stopper.state()}, tokenizer=tok)
    say("training")
    result = train(distributed.wrap(model), data, objective, loop_cfg, out, hooks)
    final = checkpoint.step_dir(out, result.step)
    if not main:
        return FinetuneResult(out, final, None, result.step, result.stopped_early, result.last_metrics, result.timings)
    merged = None
    if cfg.lora is not None and cfg.lora.save_merged:
        t0 = time.perf_counter()
        adapter = out / "best" if (out / "best").is_dir() else final
        merged = merge_lora(prep.base_path, adapter, out / "merged")
        io_s += time.perf_counter() - t0
    timings = _timings(result.timings, eval_s, io_s, best_io[0], time.perf_counter() - t_start)
    best = out / "best" if (out / "best").is_dir() else None
    meta.update({
        "status": "complete", "steps": result.step, "final_checkpoint": str(final.relative_to(out)),
        "best_checkpoint": "best" if best else None, "best_step": stopper.best_step, "best_score": stopper.best,
        "stopped_early": result.stopped_early or total_steps < prep.steps, "evaluations": [list(h) for h in stopper.history],
        "merged": "merged" if merged else None, "resumed_from": result.resumed_from, "timings": timings,
        "final_metrics": result.last_metrics, "baseline": baseline, "tokens": result.tokens,
        "threads": torch.get_num_threads(), "device": str(prep.device), "pid": os.getpid(), **distributed.describe(),
    })
    atomic.write_json(out / "meta.json", meta)
    return FinetuneResult(out, final, best, result.step, meta["stopped_early"], result.last_metrics, timings, baseline)


def _timings(loop: dict[str, float], eval_s: float, io_s: float, best_io_s: float, total: float) -> dict[str, float]:
    """The runtime split the issue asks for: training / evaluation / judging / model_io.

    Saving the best checkpoint happens inside the loop's evaluation section; it counts as model I/O.
    Judging is 0 here: early stopping refuses judge tasks, so no judge runs during fine-tuning.
    """
    return {
        "training": round(loop.get("training", 0.0), 3),
        "evaluation": round(loop.get("evaluation", 0.0) + eval_s - best_io_s, 3),
        "judging": 0.0,
        "model_io": round(loop.get("checkpoint_io", 0.0) + io_s + best_io_s, 3),
        "total_this_process": round(total, 3),
    }


def is_complete(cfg: FinetuneConfig, out: str | Path) -> bool:
    """True when ``out`` holds a finished run of this config (``finetune`` would skip it)."""
    meta = check_run_dir(Path(out), cfg)
    return bool(meta and meta.get("status") == "complete")
