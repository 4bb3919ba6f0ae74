"""`mixlab report`: tables, plots and an HTML page from a sweep's results."""

from __future__ import annotations

from pathlib import Path

import typer

from mixlab.cli.common import SetOption, console


def report_cmd(
    config: Path = typer.Argument(..., help="The sweep config whose results to report."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for report.md, report.html and the PNGs."),
    title: str = typer.Option("", help="Report title (default: the sweep's name)."),
    unit: str = typer.Option("relative", help="Forgetting unit in summaries: relative or absolute."),
    reference: str = typer.Option(None, "--reference", help="A run (e.g. plain SFT) every other run is "
                                  "contrasted with, item by item: gain and forgetting differences with CIs."),
    set_: list[str] = SetOption,
) -> None:
    """Write the forgetting and comparison report of a sweep.

    Example: `mixlab report configs/sweeps/example_toyworld.yaml --out runs/report --reference sft`
    """
    from mixlab.errors import ConfigError
    from mixlab.report.collect import collect, primary_metrics
    from mixlab.report.html import write_report
    from mixlab.runs.sweep import load_sweep_config

    if unit not in ("relative", "absolute"):
        raise ConfigError(f"--unit: expected 'relative' or 'absolute', got {unit!r}")
    cfg = load_sweep_config(config, set_ or [])
    results, metas, base = collect(cfg)
    if not results:
        raise ConfigError(f"{config}: the sweep has no results yet; run `mixlab sweep {config}` first")
    if reference is not None and reference not in {m.run for m in metas}:
        raise ConfigError(f"--reference: no run named {reference!r} in the sweep; runs: "
                          + ", ".join(sorted(m.run for m in metas)))
    files = write_report(results, metas, base, out, title=title or cfg.name, unit=unit,  # type: ignore[arg-type]
                         reference=reference, primary=primary_metrics(cfg))
    for line in files.findings:
        console.print(line, markup=False, highlight=False)
    console.print(f"wrote [bold]{files.markdown}[/], [bold]{files.html}[/] and {len(files.figures)} figures")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
