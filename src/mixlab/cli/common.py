"""Shared CLI pieces: consoles, the ``--set`` option, raw output, and progress bars."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)


def print_raw(text: str) -> None:
    """Write ``text`` to stdout unchanged (plus a final newline if it lacks one). Output meant to be saved and read back (a config)
    must not go through the rich console, which wraps long lines at the terminal width (``COLUMNS``,
    80 when piped) and so breaks YAML comments."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def exit_failed(failures: Sequence[tuple[str, str]], what: str, hint: str) -> NoReturn:
    """End a command whose work partly failed: list each failure (where, the first line of its
    error) on stderr and exit with status 1, so that a script or CI sees it (user errors exit 2)."""
    err_console.print(f"[bold red]{what} failed[/] ({hint}):", highlight=False, soft_wrap=True)
    for where, error in failures:
        first = error.strip().splitlines()[0] if error.strip() else "(no message)"
        err_console.print(f"  {where}: {first}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


SetOption = typer.Option(
    None,
    "--set",
    help="Override a config value, e.g. --set train.lr=1e-5 (repeatable; values parsed as YAML).",
)

NprocOption = typer.Option(
    1, "--nproc", min=1,
    help="Train on N processes of this machine through torch.distributed (DDP; one GPU each, or CPU cores "
    "with gloo). Same global batch, checkpoints and resume as one process.",
)
DistBackendOption = typer.Option(
    "auto", "--dist-backend", help="Process-group backend with --nproc: auto (nccl on GPUs, gloo on CPU), nccl, gloo.",
)


@contextmanager
def progress(*extra_columns) -> Iterator[Progress]:
    """A rich progress bar with count, elapsed time and ETA (plus any extra columns)."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as p:
        yield p
