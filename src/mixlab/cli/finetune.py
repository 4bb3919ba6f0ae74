"""`mixlab finetune`: a thin layer over :mod:`mixlab.train.finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import TextColumn

from mixlab.cli.common import DistBackendOption, NprocOption, SetOption, console, err_console, progress
from mixlab.config import config_hash
from mixlab.errors import ConfigError


def run_finetune(config: Path, out: Path | None, overrides: list[str], dry_run: bool, nproc: int = 1,
                 dist_backend: str = "auto") -> None:
    """Load the config, then print the plan (``dry_run``) or train with a progress bar (on ``nproc`` processes)."""
    from mixlab.train import distributed
    from mixlab.train import finetune as recipe

    cfg = recipe.load_finetune_config(config, overrides)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    if nproc != 1 or dist_backend != "auto":
        if not recipe.METHODS[cfg.method].loop_based:  # e.g. trl-based methods train outside mixlab's loop
            raise ConfigError(f"method {cfg.method!r} trains through its own recipe, which --nproc does not "
                              "launch; run it without --nproc")
        dist_backend = distributed.check_run(cfg, nproc, dist_backend)  # type: ignore[arg-type]
    if dry_run:
        with err_console.status("loading model and data") as st:
            prep = recipe.prepare(cfg, status=lambda m: st.update(m))
        console.print(recipe.format_plan(prep), soft_wrap=True, highlight=False)
        if nproc > 1:
            console.print(f"processes    {nproc} ({dist_backend}), {cfg.train.batch_size // nproc} examples each per step",
                          soft_wrap=True, highlight=False)
        console.print(f"config hash  {config_hash(cfg)}" + (f"; would write {out}" if out else ""),
                      soft_wrap=True, highlight=False)
        return
    if out is None:
        raise ConfigError("--out DIR is required to train (or pass --dry-run to print the plan)")
    if recipe.is_complete(cfg, out):
        console.print(f"already complete: {out} (same config hash); nothing to do", soft_wrap=True, highlight=False)
        return
    result = distributed.run(finetune_with_progress, cfg, out, nproc=nproc, backend=dist_backend)  # type: ignore[arg-type]
    console.print(f"done: {result.steps} steps -> {result.final_checkpoint}"
                  + (" (stopped early)" if result.stopped_early else ""), soft_wrap=True, highlight=False)
    if result.best_checkpoint:
        console.print(f"best checkpoint: {result.best_checkpoint}", soft_wrap=True, highlight=False)
    console.print(f"wall time: {result.timings}", soft_wrap=True, highlight=False)


def finetune_with_progress(cfg: Any, out: Path) -> Any:
    """``finetune(cfg, out)`` under a progress bar; in a process group only rank 0 draws it."""
    from mixlab.train import distributed
    from mixlab.train import finetune as recipe

    if not distributed.is_main():
        return recipe.finetune(cfg, out)
    with progress(TextColumn("{task.fields[loss]}")) as bar:
        task = bar.add_task("setup", total=None, loss="")

        def on_step(info) -> None:
            extra = {"loss": f"loss {info.loss:.3f}"} if info.loss is not None else {}
            bar.update(task, description=f"finetune ({cfg.method})", total=info.total_steps,
                       completed=info.step, **extra)

        return recipe.finetune(cfg, out, on_step=on_step, status=lambda m: bar.update(task, description=m))


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune_cmd(
        config: Path = typer.Argument(..., help="Fine-tuning config (YAML), e.g. configs/finetune/toyworld_sft.yaml"),
        out: Path = typer.Option(None, "--out", help="Run directory; a run there with checkpoints is resumed."),
        overrides: list[str] = SetOption,
        dry_run: bool = typer.Option(False, "--dry-run", help="Check data and model, print the plan; train nothing."),
        nproc: int = NprocOption,
        dist_backend: str = DistBackendOption,
    ) -> None:
        """Fine-tune a base model (sft, lora; anchor, replay, early stopping) on prompt/completion records.

        Example: mixlab finetune configs/finetune/toyworld_sft.yaml --out runs/ft_sft
        """
        run_finetune(config, out, overrides or [], dry_run, nproc, dist_backend)
