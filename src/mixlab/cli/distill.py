"""`mixlab distill`: a thin layer over :mod:`mixlab.train.distill`."""

from __future__ import annotations

from pathlib import Path

import typer

from mixlab.cli.common import SetOption, console, progress


def run_distill(config: Path, out: Path, overrides: list[str]) -> None:
    from mixlab.train import distill as recipe

    cfg = recipe.load_distill_config(config, overrides)
    with progress() as bar:
        task = bar.add_task("setup", total=None)
        result = recipe.distill(
            cfg, out, status=lambda m: bar.update(task, description=m),
            on_chunk=lambda done, total: bar.update(task, description="sampling", completed=done, total=total),
        )
    if result.skipped:
        console.print(f"already complete: {out} (same config hash)", soft_wrap=True, highlight=False)
    for line in recipe.describe_rates(result.per_dataset):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"{result.kept:,} SFT records -> {result.train_file} (train on it with `method: sft`, "
                  f"`data.records: {result.train_file}`)", soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill_cmd(
        config: Path = typer.Argument(..., help="Distillation config (YAML), e.g. configs/distill/toyworld_self.yaml"),
        out: Path = typer.Option(..., "--out", help="Output directory; an unfinished run there is resumed."),
        overrides: list[str] = SetOption,
    ) -> None:
        """Sample k answers per question from a teacher, keep those the verifier accepts, write an SFT dataset.

        Example: mixlab distill configs/distill/toyworld_self.yaml --out runs/distill_self
        """
        run_distill(config, out, overrides or [])
