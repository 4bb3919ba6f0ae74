"""`mixlab validate`: check any config without running it (a thin layer over :mod:`mixlab.config_kinds`)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixlab.cli.common import SetOption, console


def validate_command(
    config: Path = typer.Argument(..., help="Any mixlab config: data, pretrain, finetune, distill, sweep, swarm, "
                                  "fit, propose, study or quickstart."),
    overrides: list[str] = SetOption,
) -> None:
    """Check a config as its command would, without running it: tells its kind (its `kind:` field, or
    inferred from its keys) and reports every invalid field with its file and line.

    Example: mixlab validate configs/finetune/toyworld_sft.yaml --set train.lr=1e-5
    """
    from mixlab.config import config_hash
    from mixlab.config_kinds import KINDS, validate_file

    kind, cfg = validate_file(config, overrides or [])
    console.print(f"{config}: valid {kind} config (run it with `{KINDS[kind].command}`; hash {config_hash(cfg)})",
                  soft_wrap=True, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
