"""`mixlab evaluate` commands (being written; registers nothing yet)."""

import typer


def register(app: typer.Typer) -> None:
    return None
