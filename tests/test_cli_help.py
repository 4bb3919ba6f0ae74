"""Every command's help is complete: a description and an example line a user can copy."""

import click
import typer

from mixlab.cli import app, main


def _commands(c: click.Command, path: tuple[str, ...] = ("mixlab",)):
    if hasattr(c, "commands"):
        for name, sub in c.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, c


def test_every_command_has_a_description_and_an_example():
    found = list(_commands(typer.main.get_command(app)))
    names = {" ".join(p) for p, _ in found}
    assert {"mixlab quickstart", "mixlab data build", "mixlab pretrain", "mixlab finetune", "mixlab eval",
            "mixlab sweep", "mixlab report", "mixlab fit", "mixlab propose", "mixlab distill"} <= names
    for path, cmd in found:
        text = cmd.help or ""
        assert text.strip() and "Example: mixlab" in text.replace("`", ""), f"{' '.join(path)}: help lacks an example"
        assert all(p.help for p in cmd.params if getattr(p, "param_type_name", "") == "option" and p.name != "help"), \
            f"{' '.join(path)}: an option without help"


def test_top_level_help_lists_the_quickstart(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "Example:" in out
