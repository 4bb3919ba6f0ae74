"""`mixlab swarm generate | run | collect`: thin layers over :mod:`mixlab.mixopt.swarm`."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from mixlab.cli import launch as L
from mixlab.cli.common import SetOption, console, err_console, progress

swarm_app = typer.Typer(help="Swarms of proxy runs on random mixtures: generate, run, collect.", no_args_is_help=True)


@swarm_app.command("generate")
def generate_cmd(
    config: Path = typer.Argument(..., help="Swarm config YAML, e.g. configs/mixopt/swarm_toyworld.yaml"),
    out: Path = typer.Option(..., "--out", "-o", help="Swarm directory to write."),
    overrides: list[str] = SetOption,
) -> None:
    """Sample mixture variants around the priors; write one runnable pretraining config per variant.

    Example: mixlab swarm generate configs/mixopt/swarm_toyworld.yaml --out runs/swarm
    """
    from mixlab.mixopt import swarm as S

    cfg = S.load_swarm_config(config, overrides or [])
    with err_console.status("reading and tokenizing the sources") as st:
        S.generate(cfg, out, status=lambda m: st.update(m))
    cfg, names = S.load_swarm(out)
    import json

    info = json.loads((out / "priors.json").read_text())
    t = Table("domain", "tokens", "prior", "max weight (repetition cap)", title=f"swarm {cfg.name}: {len(names)} variants")
    for d in info["domains"]:
        t.add_row(d, f"{info['source_tokens'][d]:,}", f"{info['priors'][d]:.3f}", f"{info['max_weight'][d]:.3f}")
    console.print(t)
    console.print(f"wrote [bold]{out}[/]: variants/{names[0]}.yaml .. {names[-1]}.yaml, requested_ratios.csv; "
                  f"next: mixlab swarm run {out}", soft_wrap=True, highlight=False)


@swarm_app.command("run")
def run_cmd(
    dir: Path = typer.Argument(..., help="A directory written by `mixlab swarm generate`."),
    backend: str = L.BackendOpt, workers: int = L.WorkersOpt, ray_address: str = L.RayAddressOpt,
    cpus: int = L.CpusOpt, gpus: float = L.GpusOpt, mem_gb: float = L.MemOpt, max_retries: int = L.RetriesOpt,
    partition: str = L.PartitionOpt, time_min: int = L.TimeOpt, array_parallelism: int = L.ArrayOpt,
    slurm_local: bool = L.SlurmLocalOpt,
) -> None:
    """Train every variant, then evaluate them all (finished work is skipped; run again to resume).

    Example: mixlab swarm run runs/swarm --workers 2   |   --backend ray   |   --backend slurm --partition gpu --gpus 1
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixlab.mixopt import swarm as S
    from mixlab.runs.poll import polling

    cfg, names = S.load_swarm(dir)
    launch = L.launch_config(cfg.launch, backend, workers, ray_address, cpus, gpus, mem_gb, max_retries,
                             partition, time_min, array_parallelism, slurm_local)
    evaluates = bool(cfg.eval.suites or cfg.eval.tasks)
    with progress() as bar:
        trained = bar.add_task("trained", total=len(names), completed=sum(S.is_trained(dir, n) for n in names))
        evaluated = bar.add_task("evaluated", total=None, visible=evaluates)
        exp = None  # the evaluation sweep, resolved once every variant is trained

        def poll() -> None:  # run directories and the store are where every backend's jobs report to
            from mixlab.runs import sweep as SW

            nonlocal exp
            n_done = sum(S.is_trained(dir, n) for n in names)
            bar.update(trained, completed=n_done)
            if evaluates and n_done == len(names):
                try:
                    exp = exp or SW.resolve(S.sweep_config(dir, cfg, names))
                    done, total = SW.progress_counts(exp)
                except Exception:  # the display must never break the run; the run reports errors
                    return
                bar.update(evaluated, completed=done, total=total)

        with polling(poll, every_s=1.0):
            report = S.run(dir, launch)
    console.print(f"trained {len(report.trained)} variant(s) ({len(report.already_trained)} already done); "
                  f"evaluated {report.evaluated} (checkpoint, task) pair(s), {report.eval_reused} found on disk; "
                  f"next: mixlab swarm collect {dir}", soft_wrap=True, highlight=False)


@swarm_app.command("collect")
def collect_cmd(
    dir: Path = typer.Argument(..., help="A swarm directory after `mixlab swarm run`."),
    metrics: str = typer.Option(None, "--metrics", help="Comma-separated metric columns (default: all)."),
) -> None:
    """Write ratios.csv and metrics.csv in olmix's layout (realized mixtures, final metrics).

    Example: mixlab swarm collect runs/swarm && mixlab fit --ratios runs/swarm/ratios.csv --metrics runs/swarm/metrics.csv --out runs/fit
    """
    from mixlab.mixopt import swarm as S

    res = S.collect(dir, [m.strip() for m in metrics.split(",")] if metrics else None)
    console.print(f"wrote {res.ratios} and {res.metrics}: {len(res.runs)} run(s) x {len(res.metric_names)} metric(s)",
                  soft_wrap=True, highlight=False)
    for run, why in res.skipped.items():
        console.print(f"  left out {run}: {why}", soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(swarm_app, name="swarm")
