"""``method: spin``: self-play fine-tuning (Chen et al. 2024) as iterated DPO through trl's ``DPOTrainer``.

Each iteration samples the current model's own answer to every training question (the *rejected*
answer), pairs it with the ground truth (the record's completion, the *chosen* answer) and trains
DPO against a frozen copy of the model as it was when the iteration began: iteration 1's reference
is the base, iteration t's is iteration t-1's result. ``train.steps`` (or ``epochs``) counts steps
per iteration; checkpoints are numbered by the total steps so far (``checkpoints/step-N/``, the SFT
layout), and every iteration ends with one. ``iter-T/pairs.jsonl`` keeps the pairs of iteration T.

Options of part 1: ``lora`` works (one adapter trained through all iterations; the reference is the
current model with the adapter merged); ``early_stop`` works; ``data.sample_ratio`` and
``max_records`` work. ``anchor`` does not apply (``spin.beta`` already ties the model to its
reference), nor do ``data.replay`` and ``data.packing`` (DPO trains on pairs): the config refuses them.

Resuming: finished iterations are not redone (the model restarts from the last iteration's
checkpoint); an interrupted iteration restarts from its beginning; a finished run is skipped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mixlab import atomic
from mixlab.data.records import Record
from mixlab.train import checkpoint
from mixlab.train.finetune.base import apply_lora
from mixlab.train.finetune.run import FinetuneResult, Say, eval_model, quiet
from mixlab.train.finetune.trl_bridge import (
    Run,
    finish,
    load_inputs,
    plan_tail,
    quiet_trainer,
    run_method,
    trainer_kwargs,
)
from mixlab.train.loop import StepInfo


@dataclass
class SPINPrepared:
    config: Any
    model: torch.nn.Module
    tokenizer: Any
    base_path: str
    records: list[Record]
    prompts: list[Any]
    chat: bool
    steps_per_iteration: int
    device: torch.device
    eval_specs: list[Any]
    load_seconds: float
    origin: str

    @property
    def steps(self) -> int:
        return self.steps_per_iteration * self.config.spin.iterations

    def summary(self) -> dict[str, Any]:
        c, s = self.config, self.config.spin
        return {
            "method": "spin", "base": self.base_path, "device": str(self.device), "iterations": s.iterations,
            "steps_per_iteration": self.steps_per_iteration, "steps": self.steps, "batch_size": c.train.batch_size,
            "pairs": len(self.records), "data": self.origin, "chat_template": self.chat, "beta": s.beta,
            "loss_type": s.loss_type, "total_params": sum(p.numel() for p in self.model.parameters()),
            "lora": c.lora.model_dump() if c.lora else None, "early_stop_tasks": [x.name for x in self.eval_specs],
        }


def prepare(cfg: Any, say: Say = quiet) -> SPINPrepared:
    """Load the base and the questions with their ground-truth answers; user errors surface here."""
    x = load_inputs(cfg, say)
    model = apply_lora(x.model, cfg.lora, cfg.seed) if cfg.lora is not None else x.model
    t = cfg.train
    per_iter = t.steps or max(1, math.ceil((t.epochs or 1.0) * len(x.found) / t.batch_size))
    return SPINPrepared(cfg, model, x.tokenizer, x.base_path, [r for _, r in x.found], x.prompts, x.chat, per_iter,
                        x.device, x.eval_specs, x.load_seconds, x.origin)


def format_plan(prep: SPINPrepared, method: Any = None) -> str:
    s, c = prep.summary(), prep.config
    sp = c.spin
    lines = [
        f"method       spin: {sp.iterations} iterations of DPO (trl), chosen = ground truth, rejected = own sample "
        f"(T={sp.temperature:g}, <= {sp.max_new_tokens} tokens)",
        f"base         {s['base']} ({s['total_params']:,} params) on {s['device']}",
        f"data         {s['data']}: {s['pairs']:,} questions, chat template {'on' if s['chat_template'] else 'off'}",
        f"training     {s['steps_per_iteration']:,} steps x {c.train.batch_size} pairs per iteration "
        f"({s['steps']:,} in all), lr {c.train.lr:g}, beta {sp.beta:g}, loss {sp.loss_type}",
    ]
    return "\n".join(lines + plan_tail(c, s["early_stop_tasks"]))


def own_answers(prep: SPINPrepared, model: torch.nn.Module, iteration: int) -> list[str]:
    """The model's answer to every question (the rejected side of iteration ``iteration``'s pairs)."""
    from mixlab.eval.generation import Generator
    from mixlab.eval.tasks import GenerationSpec

    sp = prep.config.spin
    spec = GenerationSpec(max_new_tokens=sp.max_new_tokens, stop=sp.stop, temperature=sp.temperature, top_p=sp.top_p,
                          seed=prep.config.seed * 1_000_003 + iteration, chat_template=prep.chat)
    was = model.training
    model.eval()
    gen = Generator(eval_model(model), prep.tokenizer, batch_size=sp.generation_batch_size)
    questions = [r.question if prep.chat else p for r, p in zip(prep.records, prep.prompts, strict=True)]
    out = [c[0].text for c in gen.generate(questions, spec)]
    model.train(was)
    return out


def pairs_for(prep: SPINPrepared, rejected: list[str]) -> list[dict[str, Any]]:
    """DPO rows: the prompt, the ground truth (chosen) and the model's answer (rejected)."""
    rows = []
    for r, prompt, own in zip(prep.records, prep.prompts, rejected, strict=True):
        if prep.chat:
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": r.completion}],
                         "rejected": [{"role": "assistant", "content": own}]})
        else:
            rows.append({"prompt": prompt, "chosen": r.completion, "rejected": own})
    return rows


def reference_of(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` as it is now (with LoRA: the adapter merged into the weights)."""
    ref = copy.deepcopy(model)
    if hasattr(ref, "merge_and_unload"):
        ref = ref.merge_and_unload()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref.eval()


def build_trainer(prep: SPINPrepared, model: torch.nn.Module, ref_model: torch.nn.Module, rows: list[dict[str, Any]],
                  out: Path, iteration: int, callbacks: list[Any]):
    """trl's DPOTrainer for one SPIN iteration."""
    import datasets
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    cfg, t, sp = prep.config, prep.config.train, prep.config.spin
    micro = t.micro_batch_size or t.batch_size
    kwargs = trainer_kwargs(cfg, out, prep.steps_per_iteration, prep.device)
    kwargs.update(output_dir=str(out / "trainer" / f"iter-{iteration}"), save_strategy="no")
    args = DPOConfig(**kwargs, per_device_train_batch_size=micro, gradient_accumulation_steps=t.batch_size // micro,
                     beta=sp.beta, loss_type=[sp.loss_type], max_length=cfg.data.max_seq_len,
                     activation_checkpointing=False, dataset_num_proc=None)
    datasets.disable_progress_bars()  # no per-map bar inside the run's own progress display
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=prep.tokenizer, callbacks=callbacks)
    return quiet_trainer(trainer)


def _finished_iterations(out: Path, per_iter: int, iterations: int) -> int:
    done = 0
    for it in range(1, iterations + 1):
        path = checkpoint.step_dir(out, it * per_iter)
        if path.is_dir() and (path / checkpoint.STATE_JSON).is_file() and \
                checkpoint.read_info(path).get("spin_iteration") == it:
            done = it
    return done


def run(cfg: Any, out: Path, on_step: Callable[[StepInfo], None] | None = None, status: Say | None = None,
        evaluate_fn: Any = None) -> FinetuneResult:
    """Run (or resume, or skip when finished) a SPIN run in ``out``."""
    return run_method(cfg, out, prepare, train, on_step, status, evaluate_fn)


def train(run: Run, say: Say) -> FinetuneResult:
    """Train a started SPIN run: the iterations not finished yet, each from the previous one's model."""
    cfg, prep, out = run.prep.config, run.prep, run.out
    model, S, n_iter = prep.model, prep.steps_per_iteration, cfg.spin.iterations
    done = _finished_iterations(out, S, n_iter)
    resumed = None
    if done:
        resumed = str(checkpoint.step_dir(out, done * S))
        checkpoint.load_weights(model, resumed)
        run.early.restore(out)
    history = []
    step = done * S
    for it in range(done + 1, n_iter + 1):
        say(f"iteration {it}/{n_iter}: sampling the model's own answers")
        rejected = own_answers(prep, model, it)
        rows = pairs_for(prep, rejected)
        same = sum(r.completion.strip() == own.strip() for r, own in zip(prep.records, rejected, strict=True))
        atomic.write_jsonl(out / f"iter-{it}" / "pairs.jsonl", rows)
        say(f"iteration {it}/{n_iter}: DPO")
        trainer = build_trainer(prep, model, reference_of(model), rows, out, it,
                                [run.callback(n_iter * S, offset=(it - 1) * S)])
        trainer.train()
        step = (it - 1) * S + trainer.state.global_step
        info = {"step": step, "tokens": 0, "spin_iteration": it, "identical_pairs": same, **run.early.info()}
        checkpoint.save(checkpoint.step_dir(out, step), model, None, None, info, prep.tokenizer)
        history.append({"iteration": it, "step": step, "pairs": len(rows), "identical_pairs": same})
        if run.state.stopped_early:
            break
    return finish(run, step, None, resumed, {"spin_iterations": history})
