"""What the trl-based methods (GRPO, SPIN) share: mixlab's run-directory contract around a trl trainer.

trl's trainers own their optimization loop; this module makes their runs look like every other
mixlab fine-tuning run: ``train:`` settings become trainer arguments (same learning-rate schedule
shape, seed, precision), and :class:`RunCallback` writes ``metrics.jsonl`` (+ TensorBoard),
``checkpoints/step-N/`` (Hugging Face or PEFT folders through :mod:`mixlab.train.checkpoint`, so
sweeps treat them like SFT checkpoints), reports progress, and runs the ``early_stop`` evaluation
(keeping ``best/`` and stopping after ``patience`` evaluations without improvement).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mixlab.errors import MixlabError
from mixlab.runs.rundir import RunDir
from mixlab.train import checkpoint
from mixlab.train.finetune.base import merge_lora
from mixlab.train.finetune.run import (
    EarlyStopper,
    EvaluateFn,
    FinetuneResult,
    Say,
    aggregate,
    evaluate_baseline,
    flat_scores,
    load_for_run,
    open_run,
    quiet,
    run_evaluation,
    set_threads,
)
from mixlab.train.loop import MetricsLog, StepInfo

_SCHEDULERS = {"cosine": "cosine_with_min_lr", "constant": "constant_with_warmup", "wsd": "warmup_stable_decay"}


def trainer_kwargs(cfg: Any, out: Path, steps: int, device: torch.device) -> dict[str, Any]:
    """``transformers.TrainingArguments`` fields from a FinetuneConfig's ``train:`` section.

    trl's own checkpoints (optimizer and RNG state, for resuming) go to ``out/trainer`` and only the
    latest is kept; the checkpoints users read are mixlab's ``checkpoints/step-N/``.
    """
    t = cfg.train
    s = t.schedule
    sched_kwargs: dict[str, Any] = {}
    if s.kind == "cosine":
        sched_kwargs = {"min_lr_rate": s.min_lr_ratio}
    elif s.kind == "wsd":
        sched_kwargs = {"num_decay_steps": max(1, int(0.2 * steps)), "min_lr_ratio": s.min_lr_ratio}
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
    every = cfg.checkpoint.every or steps
    return dict(
        output_dir=str(out / "trainer"), max_steps=steps, learning_rate=t.lr, weight_decay=t.weight_decay,
        adam_beta1=t.betas[0], adam_beta2=t.betas[1], adam_epsilon=t.eps, max_grad_norm=t.grad_clip or 0.0,
        lr_scheduler_type=_SCHEDULERS[s.kind], lr_scheduler_kwargs=sched_kwargs,
        warmup_steps=s.warmup if s.warmup >= 1 else s.warmup * steps,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=t.log_every, report_to="none", disable_tqdm=True,
        save_strategy="steps", save_steps=every, save_total_limit=1, bf16=bf16, use_cpu=device.type == "cpu",
        dataloader_num_workers=0, dataloader_pin_memory=False, remove_unused_columns=False,
    )


@dataclass
class Inputs:
    """What GRPO and SPIN load alike: evaluation tasks, the base, the records and their prompts."""

    eval_specs: list[Any]
    device: torch.device
    model: torch.nn.Module
    tokenizer: Any
    base_path: str
    load_seconds: float
    found: list[tuple[str, Any]]
    prompts: list[Any]
    origin: str
    chat: bool


def load_inputs(cfg: Any, say: Say) -> Inputs:
    """Resolve the early-stopping tasks, load the base and read the records; questions become prompts as
    SFT formats them: a conversation when the model has a chat template (trl applies it), else
    ``data.prompt_template`` filled with the question."""
    from mixlab.train.sft_data import Formatter, select_targets

    specs, device, model, tok, base_path, load_s = load_for_run(cfg, say)
    say("reading data")
    found, origin = select_targets(cfg.data, cfg.seed)
    fmt = Formatter(tok, cfg.data)
    if fmt.chat:
        prompts: list[Any] = [[{"role": "user", "content": r.question}] for _, r in found]
    else:
        prompts = [fmt.prompt(r.question) for _, r in found]
    return Inputs(specs, device, model, tok, base_path, load_s, found, prompts, origin, fmt.chat)


def last_trainer_checkpoint(out: Path) -> str | None:
    """trl's latest resumable checkpoint under ``out/trainer``, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    where = out / "trainer"
    return get_last_checkpoint(str(where)) if where.is_dir() else None


@dataclass
class RunState:
    """What the callback accumulates during a run (read by the recipe at the end)."""

    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_seconds: float = 0.0
    io_seconds: float = 0.0
    stopped_early: bool = False


def _rename(logs: dict[str, Any]) -> dict[str, float]:
    """trl's log row with mixlab's names added for the quantities every method reports."""
    row = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
    for ours, theirs in (("reward_mean", "reward"), ("frac_zero_variance_groups", "frac_reward_zero_std"),
                         ("lr", "learning_rate")):
        if theirs in row:
            row[ours] = row[theirs]
    return row


def make_callback(out: Path, tokenizer: Any, total_steps: int, *, offset: int = 0, every: int = 0,
                  on_step: Callable[[StepInfo], None] | None = None, state: RunState | None = None,
                  evaluate: Callable[[torch.nn.Module, int], dict[str, float]] | None = None,
                  eval_every: int = 0, should_stop: Callable[[int, dict[str, float]], bool] | None = None,
                  info: Callable[[], dict[str, Any]] | None = None):
    """A ``transformers.TrainerCallback`` that keeps mixlab's run-directory contract for a trl trainer.

    ``offset`` shifts the trainer's step numbers (SPIN runs one trainer per iteration and numbers
    checkpoints by the total steps so far); ``total_steps`` is the run's last step.
    """
    from transformers import TrainerCallback

    state = state if state is not None else RunState()

    class RunCallback(TrainerCallback):
        def __init__(self) -> None:
            self.log: MetricsLog | None = None
            self.t0 = time.perf_counter()

        def on_train_begin(self, args, tstate, control, **kw):
            self.log = MetricsLog(out, offset + tstate.global_step)

        def on_train_end(self, args, tstate, control, **kw):
            if self.log is not None:
                self.log.close()

        def on_log(self, args, tstate, control, logs=None, **kw):
            row = _rename(logs or {})
            if self.log is not None and row and "train_runtime" not in row:
                self.log.write(offset + tstate.global_step, "train", row)
                state.last_metrics.update(row)

        def on_step_end(self, args, tstate, control, model=None, **kw):
            step = offset + tstate.global_step
            final = step == total_steps
            if on_step is not None:
                loss = state.last_metrics.get("loss")
                on_step(StepInfo(step, total_steps, 0, 0.0, loss))
            stop = False
            if evaluate is not None and ((eval_every and step % eval_every == 0) or final):
                t0 = time.perf_counter()
                was = model.training
                model.eval()
                with torch.no_grad():
                    scores = evaluate(model, step)
                model.train(was)
                state.eval_seconds += time.perf_counter() - t0
                state.last_metrics.update(scores)
                if self.log is not None:
                    self.log.write(step, "eval", scores)
                stop = bool(should_stop and should_stop(step, scores))
            if (every and step % every == 0) or final or stop:
                t0 = time.perf_counter()
                extra = {"step": step, "tokens": 0, "method_state": {"trainer_step": tstate.global_step},
                         **(info() if info else {})}
                checkpoint.save(checkpoint.step_dir(out, step), model, None, None, extra, tokenizer)
                state.io_seconds += time.perf_counter() - t0
            if stop:
                state.stopped_early = True
                control.should_training_stop = True
            return control

    return RunCallback()


class EarlyStopping:
    """The ``early_stop`` evaluation of SFT runs, for a trl trainer (no-op without ``early_stop``)."""

    def __init__(self, prep: Any, out: Path, say: Say, step_of_baseline: bool = True):
        self.prep, self.out, self.say = prep, out, say
        e = prep.config.early_stop
        self.every = e.every if e else 0
        self.stopper = EarlyStopper(e.maximize, e.patience, e.min_delta) if e else EarlyStopper()
        self.baseline = None
        if e is not None and e.baseline and step_of_baseline:
            say("baseline evaluation")
            t0 = time.perf_counter()
            self.baseline = evaluate_baseline(prep, out, say)
            self.baseline_seconds = time.perf_counter() - t0
        self.evaluate = self._evaluate if e else None
        self.should_stop = self._should_stop if e else None

    def _evaluate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        e = self.prep.config.early_stop
        res = run_evaluation(self.prep, model, f"{self.out}@step-{step}", str(checkpoint.step_dir(self.out, step)),
                             self.out / "eval" / f"step-{step}", self.say)
        scores = {**flat_scores(res), "score": aggregate(res, e.metric)}
        if self.stopper.improved(scores["score"]):
            checkpoint.save(self.out / "best", model, None, None, {"step": step, "score": scores["score"]},
                            self.prep.tokenizer)
        return scores

    def _should_stop(self, step: int, scores: dict[str, float]) -> bool:
        return self.stopper.update(step, scores["score"])

    def info(self) -> dict[str, Any]:
        return {"early_stop": self.stopper.state()}

    def restore(self, out: Path) -> None:
        last = checkpoint.latest(out)
        if last is not None and "early_stop" in checkpoint.read_info(last):
            self.stopper.load(checkpoint.read_info(last)["early_stop"])


@dataclass
class Run:
    """A new or resumed trl-based run: its prepared inputs, run directory, early stopping and state."""

    prep: Any
    out: Path
    rundir: RunDir
    t_start: float
    early: "EarlyStopping"
    state: RunState
    on_step: Callable[[StepInfo], None] | None

    def callback(self, total_steps: int, offset: int = 0):
        """The run's :func:`make_callback` (checkpoints, metrics, progress, early stopping)."""
        e = self.early
        return make_callback(self.out, self.prep.tokenizer, total_steps, offset=offset,
                             every=self.prep.config.checkpoint.every, on_step=self.on_step, state=self.state,
                             evaluate=e.evaluate, eval_every=e.every, should_stop=e.should_stop, info=e.info)


def start_run(cfg: Any, out: Path, prepare: Callable[[Any, Say], Any], status: Say | None,
              on_step: Callable[[StepInfo], None] | None) -> Run | FinetuneResult:
    """The finished run's ``FinetuneResult`` when ``out`` holds one; else the :class:`Run` of a new or
    resumed run whose config and ``meta.json`` (status running) are written."""
    say = status or quiet
    rundir, done = open_run(cfg, out)
    if done is not None:
        return done
    set_threads(cfg)
    t_start = time.perf_counter()
    prep = prepare(cfg, say)
    rundir.start(cfg.seed, plan=prep.summary())
    return Run(prep, out, rundir, t_start, EarlyStopping(prep, out, say), RunState(), on_step)


def quiet_trainer(trainer: Any) -> Any:
    """No log dictionaries printed to stdout and no per-shard or per-map progress bars (metrics.jsonl and
    the run's own progress bar report them)."""
    import datasets
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as hf_logging

    trainer.remove_callback(PrinterCallback)
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    return trainer


def plan_tail(cfg: Any, eval_tasks: list[str]) -> list[str]:
    """The ``--dry-run`` plan lines every trl-based method shares: LoRA and early stopping."""
    lines = []
    if cfg.lora:
        lines.append(f"lora         r={cfg.lora.r} alpha={cfg.lora.alpha:g} on {', '.join(cfg.lora.target_modules)}")
    if cfg.early_stop:
        e = cfg.early_stop
        lines.append(f"early stop   {e.metric} every {e.every} steps on {', '.join(eval_tasks)}")
    return lines


def run_method(cfg: Any, out: Path, prepare: Callable[[Any, Say], Any], train: Callable[[Run, Say], FinetuneResult],
               on_step: Callable[[StepInfo], None] | None, status: Say | None,
               evaluate_fn: EvaluateFn | None = None) -> FinetuneResult:
    """``run`` of a trl-based method: skip a finished run, else start (or resume) it and ``train`` it."""
    if evaluate_fn is not None:
        raise MixlabError(f"method {cfg.method!r} trains through trl, which takes no evaluate_fn; evaluate with "
                          "`early_stop:` instead")
    run = start_run(cfg, out, prepare, status, on_step)
    if not isinstance(run, Run):
        return run
    return train(run, status or quiet)


def finish(run: Run, step: int, result: Any, resumed: str | None, extra: dict[str, Any] | None = None):
    """Write ``merged/`` (LoRA) and the final ``meta.json``; the run's ``FinetuneResult``."""
    prep, out, state, early, t_start = run.prep, run.out, run.state, run.early, run.t_start
    cfg = prep.config
    final = checkpoint.step_dir(out, step)
    if not final.is_dir():
        raise MixlabError(f"{out}: training ended at step {step} without its checkpoint; rerun to resume")
    best = out / "best" if (out / "best").is_dir() else None
    merged = None
    if cfg.lora is not None and cfg.lora.save_merged:
        t0 = time.perf_counter()
        merged = merge_lora(prep.base_path, best or final, out / "merged")
        state.io_seconds += time.perf_counter() - t0
    total = time.perf_counter() - t_start
    runtime = float(getattr(result, "metrics", {}).get("train_runtime", total)) if result is not None else total
    timings = {"training": round(max(runtime - state.eval_seconds - state.io_seconds, 0.0), 3),
               "evaluation": round(state.eval_seconds + getattr(early, "baseline_seconds", 0.0), 3), "judging": 0.0,
               "model_io": round(state.io_seconds + prep.load_seconds, 3), "total_this_process": round(total, 3)}
    final_metrics = {k: v for k, v in state.last_metrics.items() if isinstance(v, (int, float))}
    run.rundir.finish(
        steps=step, final_checkpoint=str(final.relative_to(out)), best_checkpoint="best" if best else None,
        best_step=early.stopper.best_step, best_score=early.stopper.best, stopped_early=state.stopped_early,
        evaluations=[list(h) for h in early.stopper.history], merged="merged" if merged else None,
        resumed_from=resumed, timings=timings, final_metrics=final_metrics, baseline=early.baseline,
        threads=torch.get_num_threads(), device=str(prep.device), pid=os.getpid(), **(extra or {}),
    )
    shutil.rmtree(out / "trainer", ignore_errors=True)  # trl's resume state (optimizer too): not needed any more
    return FinetuneResult(out, final, best, step, state.stopped_early, final_metrics, timings, early.baseline)
