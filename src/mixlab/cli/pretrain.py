"""`mixlab pretrain`: a thin layer over :mod:`mixlab.train.pretrain`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import TextColumn

from mixlab.cli.common import DistBackendOption, NprocOption, SetOption, console, err_console, progress
from mixlab.config import config_hash
from mixlab.errors import ConfigError


def _run_pretrain(config: Path, out: Path | None, overrides: list[str], dry_run: bool, nproc: int = 1,
                  dist_backend: str = "auto") -> None:
    from mixlab.train import distributed
    from mixlab.train import pretrain as recipe

    cfg = recipe.load_pretrain_config(config, overrides)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    if nproc != 1 or dist_backend != "auto":
        dist_backend = distributed.check_run(cfg, nproc, dist_backend)  # type: ignore[arg-type]
    if dry_run:
        with err_console.status("reading and tokenizing sources") as st:
            prep = recipe.prepare(cfg, status=lambda m: st.update(m))
        console.print(recipe.format_plan(prep.plan, recipe.estimate_seconds(prep.plan)), soft_wrap=True, highlight=False)
        if nproc > 1:
            console.print(f"processes    {nproc} ({dist_backend}), {cfg.train.batch_size // nproc} sequences each per step",
                          soft_wrap=True, highlight=False)
        console.print(f"config hash  {config_hash(cfg)}" + (f"; would write {out}" if out else ""), soft_wrap=True, highlight=False)
        return
    if out is None:
        raise ConfigError("--out DIR is required to train (or pass --dry-run to print the plan)")
    if recipe.is_complete(cfg, out):
        console.print(f"already complete: {out} (same config hash); nothing to do", soft_wrap=True, highlight=False)
        return
    result = distributed.run(pretrain_with_progress, cfg, out, nproc=nproc, backend=dist_backend)  # type: ignore[arg-type]
    if result.skipped:
        console.print(f"already complete: {result.final_checkpoint}", soft_wrap=True, highlight=False)
        return
    bpb = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("bpb/")}
    console.print(f"done: {result.steps} steps, {result.tokens:,} tokens -> {result.final_checkpoint}", soft_wrap=True, highlight=False)
    console.print(f"held-out bits/byte: {bpb}", soft_wrap=True, highlight=False)
    console.print(f"wall time: {result.timings}", soft_wrap=True, highlight=False)


def pretrain_with_progress(cfg: Any, out: Path) -> Any:
    """``pretrain(cfg, out)`` under a progress bar; in a process group only rank 0 draws it."""
    from mixlab.train import distributed
    from mixlab.train import pretrain as recipe

    if not distributed.is_main():
        return recipe.pretrain(cfg, out)
    cols = (TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[loss]}"))
    with progress(*cols) as bar:
        task = bar.add_task("setup", total=None, rate="", loss="")

        def on_step(info) -> None:
            loss = f"loss {info.loss:.3f}" if info.loss is not None else None
            bar.update(task, description="pretrain", total=info.total_steps, completed=info.step,
                       rate=f"{info.tokens_per_s:,.0f} tok/s" if info.tokens_per_s else "",
                       **({"loss": loss} if loss else {}))

        return recipe.pretrain(cfg, out, on_step=on_step, status=lambda m: bar.update(task, description=m))


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain_cmd(
        config: Path = typer.Argument(..., help="Pretraining config (YAML), e.g. configs/pretrain/ci_tiny.yaml"),
        out: Path = typer.Option(None, "--out", help="Run directory; a run there with checkpoints is resumed."),
        overrides: list[str] = SetOption,
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved plan and estimated time; train nothing."),
        nproc: int = NprocOption,
        dist_backend: str = DistBackendOption,
    ) -> None:
        """Pretrain a proxy model on a token-proportion mixture of text sources.

        Example: mixlab pretrain configs/pretrain/ci_tiny.yaml --out runs/ci_tiny --nproc 2
        """
        _run_pretrain(config, out, overrides or [], dry_run, nproc, dist_backend)
