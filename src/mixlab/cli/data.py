"""`mixlab data build | inspect | sources`: the data stage."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from mixlab.cli.common import SetOption, console, progress

data_app = typer.Typer(help="Build fine-tuning mixtures from real datasets: split, balance, mix, check contamination.",
                       no_args_is_help=True)


def _n_steps(cfg) -> int:
    n = sum(len(d.datasets) for d in cfg.domains.values()) + len(cfg.contamination.benchmarks)
    return n + 5 + (cfg.replay is not None) + (cfg.contamination.action == "drop")


@data_app.command("build")
def build_cmd(
    config: Path = typer.Argument(..., help="Data config YAML, e.g. configs/data/mix_433.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (replaced atomically when the build succeeds)."),
    set_: list[str] = SetOption,
) -> None:
    """Build a training mixture and test sets from a data config.

    Example: `mixlab data build configs/data/mix_433.yaml --out runs/mix_433 --set seed=1`
    """
    from mixlab.data.api import build

    t0 = time.perf_counter()
    from mixlab.config import load_config
    from mixlab.data.build import DataConfig

    cfg = load_config(config, DataConfig, set_ or [])
    with progress() as p:
        task = p.add_task("data build", total=_n_steps(cfg))

        def step(msg: str) -> None:
            p.update(task, description=msg, advance=1)

        build(cfg, out, progress=step)
        p.update(task, description="done", completed=_n_steps(cfg))
    console.print(f"wrote [bold]{out}[/] in {time.perf_counter() - t0:.1f}s")
    _print_info(out)


@data_app.command("inspect")
def inspect_cmd(build_dir: Path = typer.Argument(..., help="A directory written by `mixlab data build`.")) -> None:
    """Print counts and requested vs realized ratios of a built mixture.

    Example: `mixlab data inspect runs/mix_433`
    """
    _print_info(build_dir)


@data_app.command("sources")
def sources_cmd(
    check: bool = typer.Option(False, "--check", help="Also read every dataset whose files are here and count its "
                               "records per split (slow: it loads them all)."),
) -> None:
    """List the datasets mixlab reads, whether their files are here (under MIXLAB_DATA_DIR), and how to
    add the missing ones; also the pretraining text corpora and the evaluation tasks that read a file.

    Example: `mixlab data sources --check`
    """
    import os

    from mixlab.data.sources import availability, available, corpus_availabilities
    from mixlab.eval.tasks import builtin_data_files
    from mixlab.settings import DATA_DIR_ENV, data_dir

    root = data_dir()
    how = f"${DATA_DIR_ENV}" if os.environ.get(DATA_DIR_ENV) else f"${DATA_DIR_ENV} is not set"
    console.print(f"data folder: [bold]{root}[/] ({how})", soft_wrap=True, highlight=False)
    names = available()
    with progress() as bar:
        task = bar.add_task("reading datasets" if check else "looking for files", total=len(names))
        found = []
        for name in names:
            found.append(availability(name, check=check))
            bar.advance(task)
    wide = console.width >= 110  # below that, descriptions would squeeze the state columns unreadable
    t = Table(title="datasets" if wide else "datasets (a terminal of 110 columns or more adds descriptions)")
    for col in ("dataset", "domain", "here", "folder"):
        t.add_column(col, no_wrap=True)
    if wide:
        t.add_column("description", ratio=1)
    for a in found:
        folder = "(generated)" if a.folder is None else f"{a.folder.name}/"
        t.add_row(a.name, a.domain, _here(a), folder, *([a.description] if wide else []))
    console.print(t)
    corpora = corpus_availabilities()
    t = Table("corpus", "here", "folder", title="text corpora (pretraining sources `corpus:<name>`)")
    for a in corpora:
        t.add_row(a.name, _here(a), f"{a.folder.name}/" if a.folder else "")
    console.print(t)
    files = builtin_data_files()
    t = Table("task", "here", "file", title="evaluation tasks that read a file of their own")
    for name, path in files.items():
        t.add_row(name, "[green]present[/]" if path.is_file() else "[red]missing[/]", _under(path, root))
    console.print(t)
    _print_how_to_add([a for a in [*found, *corpora] if not a.readable],
                      {n: p for n, p in files.items() if not p.is_file()})


def _here(a) -> str:
    """A dataset's state for the table: present (with files or record counts), missing, empty, unreadable."""
    if a.error:
        return "[red]unreadable[/] (below)"
    if a.records is not None:
        state = "embedded" if a.status == "embedded" else "[green]present[/]"
        return f"{state} " + ", ".join(f"{k} {v:,}" for k, v in a.records.items())
    return {"present": f"[green]present[/] ({a.files} file{'s' * (a.files != 1)})", "missing": "[red]missing[/]",
            "empty": "[yellow]empty folder[/]", "embedded": "embedded"}[a.status]


def _under(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _print_how_to_add(datasets, task_files: dict[str, Path]) -> None:
    if not datasets and not task_files:
        console.print("every dataset, corpus and task file is here")
        return
    console.print(f"\n[bold]not readable here[/]: {', '.join([a.name for a in datasets] + list(task_files))}. "
                  "To add one:", soft_wrap=True, highlight=False)
    for a in datasets:
        what = f"{a.error.splitlines()[0]}; fix its files: " if a.error else ""
        console.print(f"- {a.name}: {what}{a.how_to_add()}", markup=False, soft_wrap=True, highlight=False)
    from mixlab.eval.tasks import builtin_tasks

    by_file: dict[Path, list[str]] = {}
    for name, path in task_files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        console.print(f"- task{'s' * (len(names) > 1)} {', '.join(names)}: put the file at {path} (where it comes "
                      f"from: the comment in {builtin_tasks()[names[0]]}); until then `mixlab eval` reports "
                      f"{'them' if len(names) > 1 else 'it'} as skipped", markup=False, soft_wrap=True, highlight=False)


def _print_info(build_dir: Path) -> None:
    from mixlab.data.manifest import read_info

    info = read_info(build_dir)
    t = Table("domain", "requested", "realized", "dataset", "train", "in-domain", "test", title=f"mixture {build_dir}")
    counts = info["counts"]
    for dom, req in info["requested_ratios"].items():
        first = True
        for ds, share in info["realized_dataset_ratios"][dom].items():
            t.add_row(dom if first else "", f"{req:.3f}" if first else "", f"{info['realized_ratios'][dom]:.3f}" if first else "",
                      ds, str(counts["train"].get(ds, 0)), f"{share:.3f}", str(counts["test"].get(ds, 0)))
            first = False
    console.print(t)
    rep = info.get("replay")
    if rep:
        console.print(f"replay: {rep['dataset']} {rep['count']} records, realized {rep['realized_fraction']:.3f} (requested {rep['requested_fraction']})")
    c = info["contamination"]
    console.print(f"train total {counts['train_total']} (unique {counts['unique_train']}), test total {counts['test_total']}; "
                  f"train/test overlap {c['train_test_overlap']} (n-gram {c['train_test_ngram_overlap']}); seed {info['seed']}; config {info['config_hash']}")
    for o in c["overlaps"]:
        if o["ngram"]:
            console.print(f"  [yellow]overlap[/] {o['reference']}: exact {o['exact']}, normalized {o['normalized']}, {c['ngram']}-gram {o['ngram']}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
