"""`mixlab verify`: a thin layer over :func:`mixlab.mixopt.verify.verify`."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from mixlab.cli import launch as L
from mixlab.cli.common import console, progress


def verify_cmd(
    swarm_dir: Path = typer.Argument(..., help="The swarm directory whose base config trains the round."),
    proposal: Path = typer.Option(..., "--proposal", "-p", help="A directory written by `mixlab propose`."),
    out: Path = typer.Option(..., "--out", "-o", help="The round's directory (prediction.json, runs, verify.json)."),
    fit_dir: Path | None = typer.Option(None, "--fit", help="The fit (default: the one proposal.json names)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated training seeds (default: base seed +1, +2)."),
    history: Path | None = typer.Option(None, "--history", help="History table (default SWARM_DIR/verify_history.jsonl)."),
    backend: str = L.BackendOpt, workers: int = L.WorkersOpt, ray_address: str = L.RayAddressOpt,
    cpus: int = L.CpusOpt, gpus: float = L.GpusOpt, mem_gb: float = L.MemOpt, max_retries: int = L.RetriesOpt,
    partition: str = L.PartitionOpt, time_min: int = L.TimeOpt, array_parallelism: int = L.ArrayOpt,
    slurm_local: bool = L.SlurmLocalOpt,
) -> None:
    """Train the proposal, the natural and the best observed mixture; check the pre-registered prediction.

    Example: mixlab verify runs/swarm --proposal runs/proposal --out runs/verify1 --workers 2
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixlab.mixopt import swarm as S
    from mixlab.mixopt import verify as V

    cfg, _ = S.load_swarm(swarm_dir)
    launch = L.launch_config(cfg.launch, backend, workers, ray_address, cpus, gpus, mem_gb, max_retries,
                             partition, time_min, array_parallelism, slurm_local)
    seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    rec = V.preregister(swarm_dir, proposal, out, seed_list, fit_dir)
    console.print(f"pre-registered {out / V.PREDICTION} (sha256 {rec['sha256'][:12]}, {rec['registered_utc']})",
                  highlight=False, soft_wrap=True)
    with progress() as bar:
        task = bar.add_task("verify round: train + evaluate", total=len(rec["prediction"]["runs"]) + 1)
        v = V.verify(swarm_dir, proposal, out, seeds=seed_list, fit_dir=fit_dir, launch=launch, history=history,
                     on_done=lambda r: bar.update(task, advance=1))
        bar.update(task, completed=len(rec["prediction"]["runs"]) + 1)
    t = Table("arm", "predicted objective", "95% band", "realized (mean of seeds)", "covered",
              title="pre-registered prediction vs training (objective: lower is better)")
    for a, x in v["arms"].items():
        p, r = x["predicted_objective"], x["realized_objective"]
        t.add_row(a, f"{p['predicted']:.3f}", f"{p['band95'][0]:.3f} .. {p['band95'][1]:.3f}",
                  f"{r['mean']:.3f}", "yes" if r["covered"] else "[red]no[/]")
    console.print(t)
    vd = v["verdict"]
    console.print(f"proposal vs natural: improvement {vd['improvement_over_natural']:+.3f} (noise floor "
                  f"{'n/a (one seed)' if vd['noise_floor'] is None else format(vd['noise_floor'], '.3f')}: {'beyond' if vd['beats_natural_beyond_noise'] else 'not beyond'} it); vs best "
                  f"observed {vd['improvement_over_best_observed']:+.3f}; regret {vd['regret']:.3f} (best arm "
                  f"{vd['best_arm']}); wrote {out}/verify.json, verify.png; next round's tables in {v['next']}; "
                  f"history {v['history']['path']} (round {v['history']['round']})", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)
