"""`mixlab quickstart`: the whole study on the embedded toyworld (a thin layer over
:mod:`mixlab.quickstart`)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mixlab.cli.common import SetOption
from mixlab.cli.study import ShowConfigOption, run_with_bars, show_config


def quickstart_command(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", "-o", help="Directory for every stage and the report."),
    config: Path = typer.Option(None, "--config", "-c", help="A quickstart config (default: the packaged one)."),
    overrides: list[str] = SetOption,
    show: bool = ShowConfigOption,
) -> None:
    """Build a mixture, pretrain a proxy base, fine-tune it with SFT, LoRA, a KL anchor, replay (and
    GRPO), evaluate every checkpoint and write the forgetting report: a few minutes on a laptop CPU.

    Running it again resumes: finished stages are reused.

    Example: mixlab quickstart --out runs/quickstart --set target=prose
    Copy the config: mixlab quickstart --show-config > my.yaml, then mixlab quickstart --config my.yaml
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixlab.quickstart import default_config_path, load_quickstart_config, run_quickstart

    study = load_quickstart_config(config, overrides or [])
    if show:
        return show_config(config or default_config_path(), overrides or [], study)
    run_with_bars(run_quickstart, study, out)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart_command)
