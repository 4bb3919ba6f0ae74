"""`mixlab study`: a whole forgetting study from one config (a thin layer over :mod:`mixlab.study`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from mixlab.cli.common import SetOption, console, print_raw, progress
from mixlab.errors import ConfigError


def run_with_bars(run: Callable[..., Any], study: Any, out: Path) -> Any:
    """Run a study with one progress bar per stage and the narration above them; prints where the report is."""
    t0 = time.perf_counter()
    with progress() as bars:
        ids: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in ids:
                ids[stage] = bars.add_task(stage, total=max(total, 1))
            bars.update(ids[stage], completed=done, total=max(total, 1))

        result = run(study, out, say=lambda m: bars.console.print(m, markup=False, highlight=False),
                     progress=on_progress)
    console.print(f"\nreport: [bold]{result.report_md}[/] and [bold]{result.report_html}[/] "
                  f"({len(result.figures)} figures); total {time.perf_counter() - t0:.0f} s")
    return result


def show_config(source: Path, overrides: list[str], study: Any) -> None:
    """Print a validated study config so that it loads back unchanged: the file itself (comments
    kept) when nothing is overridden, else the resolved config with the ``--set`` values in it."""
    from mixlab.config import dump_yaml

    print_raw(dump_yaml(study.config) if overrides else source.read_text(encoding="utf-8"))


ShowConfigOption = typer.Option(
    False, "--show-config", help="Validate the config, print it as YAML (with the --set values when given) and exit; "
    "save it with `> my.yaml` and run it with --config.",
)


def study_command(
    config: Path = typer.Argument(..., help="A study config (configs/studies/*.yaml)."),
    out: Path = typer.Option(None, "--out", "-o", help="Directory for every stage and the report."),
    overrides: list[str] = SetOption,
    show: bool = ShowConfigOption,
) -> None:
    """Run a forgetting study: (build data,) take or pretrain a base, (distill,) fine-tune it with every
    method of the config, evaluate the base and the checkpoints through a resumable sweep, and write the
    report contrasting each method with the reference.

    Running it again resumes: finished stages, runs and evaluations are reused.

    Example: mixlab study configs/studies/smollm2_gsm8k.yaml --out runs/smollm2_gsm8k --set eval.limit=20
    Copy it: mixlab study configs/studies/smollm2_gsm8k.yaml --show-config --set eval.limit=20 > my.yaml
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixlab.study import load_study, run_study

    study = load_study(config, overrides or [])
    if show:
        return show_config(config, overrides or [], study)
    if out is None:
        raise ConfigError("--out DIR is required to run the study (or pass --show-config to print the config)")
    run_with_bars(run_study, study, out)


def register(app: typer.Typer) -> None:
    app.command("study")(study_command)
