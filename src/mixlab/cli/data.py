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
def sources_cmd() -> None:
    """List the datasets mixlab can read, their domain and expected folder.

    Example: `mixlab data sources`
    """
    from mixlab.data.sources import REGISTRY, available

    t = Table("dataset", "domain", "folder", "description")
    for name in available():
        s = REGISTRY[name]
        t.add_row(name, s.domain, "(embedded)" if s.embedded else s.folder, s.description)
    console.print(t)


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
