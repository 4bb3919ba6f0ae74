"""The ``mixlab`` command: one typer app whose subcommands mirror the flow.

Each stage's commands live in their own module here (``data``, ``pretrain``, ``evaluate``, ...) and
are thin layers over the Python API: parse arguments, load the config, call one function, print.
"""

from __future__ import annotations

import importlib
import sys

import typer

from mixlab.cli.common import err_console
from mixlab.errors import MixlabError

app = typer.Typer(
    name="mixlab",
    help="Data mixing throughout LM development: build mixtures, pretrain proxies, fine-tune, "
    "evaluate, measure forgetting, optimize mixtures.\n\n"
    "Example: mixlab data build configs/data/mix_433.yaml --out runs/mix_433",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# Each module registers its commands on `app` when imported.
COMMAND_MODULES = ("quickstart", "study", "data", "pretrain", "finetune", "distill", "evaluate", "sweep", "report", "mixopt",
                   "swarm", "verify", "validate")

for _mod in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_mod}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors print a message (no traceback) and exit with status 2; a
    command whose work partly failed (a task of `eval` or `sweep`) exits 1 after its summary."""
    try:
        # without standalone mode click returns a command's typer.Exit code instead of raising it
        code = app(args=argv, standalone_mode=False)
    except MixlabError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except Exception as e:  # click usage errors carry their own exit code and message
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        raise
    return code if type(code) is int else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
