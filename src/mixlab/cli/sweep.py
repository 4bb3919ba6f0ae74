"""`mixlab sweep` and `mixlab status`: run a resumable evaluation sweep and show where it stands
(thin layers over :mod:`mixlab.runs.sweep`)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mixlab.cli import launch as L
from mixlab.cli.common import SetOption, console, exit_failed, progress


def sweep_command(
    config: Path = typer.Argument(..., help="Sweep config YAML (see configs/sweeps/)."),
    overrides: list[str] = SetOption,
    workers: int = typer.Option(None, "--workers", help="Workers: local processes, Ray tasks or Slurm jobs (default: the config's)."),
    backend: str = L.BackendOpt, ray_address: str = L.RayAddressOpt, cpus: int = L.CpusOpt, gpus: float = L.GpusOpt,
    mem_gb: float = L.MemOpt, max_retries: int = L.RetriesOpt, partition: str = L.PartitionOpt,
    time_min: int = L.TimeOpt, array_parallelism: int = L.ArrayOpt, slurm_local: bool = L.SlurmLocalOpt,
) -> None:
    """Evaluate every selected checkpoint of every run on every task that has no result yet.

    Kill it at any moment and run it again to finish; run it twice at once to share the work. Exits
    with status 1 when a (checkpoint, task) failed, after a summary of what failed and why.

    Example: mixlab sweep configs/sweeps/example_toyworld.yaml --set limit=20
    (--backend ray [--ray-address HOST:PORT] or --backend slurm --partition P --time 60 run the workers there)
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixlab.runs import sweep as S
    from mixlab.runs.poll import polling

    cfg = S.load_sweep_config(config, overrides or [])
    if workers is not None:
        cfg = cfg.model_copy(update={"workers": workers})
    exp = S.resolve(cfg)
    from mixlab.runs.sweep import sweep_backend

    launch = L.launch_config(None, backend, cfg.workers, ray_address, cpus, gpus, mem_gb, max_retries, partition,
                             time_min, array_parallelism, slurm_local)
    runner = sweep_backend(launch, str(exp.out / "slurm"))
    if hasattr(runner, "check"):  # unreachable cluster, no sbatch, unmeetable request: say so before any work
        runner.check(cfg)
    done0, total = S.progress_counts(exp)
    with progress() as bar:
        overall = bar.add_task(f"sweep {cfg.name}", total=total, completed=done0)
        current = bar.add_task("", total=1, visible=False)

        def on_task(unit: str, task: str, done: int, total: int) -> None:
            bar.update(current, description=f"{unit} {task}", completed=done, total=max(total, 1), visible=True)

        # the store is the one place every backend's workers report to
        with polling(lambda: bar.update(overall, completed=S.progress_counts(exp)[0])):
            reports = S.run_sweep(cfg, backend=runner, progress=on_task)
    computed = sum(len(r.computed) for r in reports)
    reused = sum(len(r.reused) for r in reports)
    failed = [f for r in reports for f in r.failed]
    console.print(f"computed {computed} result(s), indexed {reused} found on disk, {len(failed)} failed")
    checkpoints = S.status(cfg)
    _print_status(checkpoints, per_checkpoint=False)
    # the store, not this process's reports, says what failed: other workers' failures count too
    failures = [(f"{c.run} step-{c.step} {task}", error) for c in checkpoints for task, error in c.errors.items()]
    if failures:
        retry = "run the sweep again to retry them" if cfg.retry_failed else "set retry_failed: true to retry them"
        exit_failed(failures, f"{len(failures)} (checkpoint, task) pair(s)",
                    f"`mixlab status {config} --checkpoints` shows them; {retry}")


def status_command(
    config: Path = typer.Argument(..., help="Sweep config YAML."),
    overrides: list[str] = SetOption,
    checkpoints: bool = typer.Option(False, "--checkpoints", help="One line per checkpoint instead of per run."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the results store from the result files first."),
) -> None:
    """Print the experiment's table: run, checkpoints to evaluate, done, status (with errors).

    Example: mixlab status configs/sweeps/example_toyworld.yaml --checkpoints
    """
    from mixlab.runs import store as St
    from mixlab.runs import sweep as S

    cfg = S.load_sweep_config(config, overrides or [])
    if rebuild:
        exp = S.resolve(cfg)
        if (why := St.problem(exp.store_path)) is not None:
            console.print(f"[yellow]{exp.store_path} was unreadable ({why}); rebuilt from the result files[/]")
        with St.rebuild(exp.store_path, [exp.out / "evals"]) as store:
            for e in St.requeued(store):
                console.print(f"[yellow]re-queued {e['unit']} {e['task']}: {e['detail']}[/]")
    _print_status(S.status(cfg), per_checkpoint=checkpoints)


_STYLE = {"done": "green", "running": "cyan", "queued": "white", "failed": "red"}


def _steps(steps: list[int]) -> str:
    shown = ", ".join(str(s) for s in steps[:6])
    return shown + (f", ... ({len(steps)})" if len(steps) > 6 else "")


def _errors(errors: dict[str, str], limit: int = 2) -> str:
    lines = [f"{k}: {v.splitlines()[0][:120] if v else ''}" for k, v in list(errors.items())[:limit]]
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return "\n".join(lines)


def _print_status(checkpoints, per_checkpoint: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    from mixlab.runs.sweep import run_status

    if per_checkpoint:
        table = Table("run", "step", "tasks done", "status")
        for c in checkpoints:
            state = f"[{_STYLE[c.state]}]{c.state}[/]"
            if c.errors:
                state += "\n" + escape(_errors(c.errors))
            table.add_row(c.run, str(c.step), f"{c.done}/{c.tasks}", state)
    else:
        table = Table("run", "checkpoints to evaluate", "done", "status")
        for r in run_status(checkpoints):
            state = f"[{_STYLE[r.state]}]{r.state}[/]"
            if r.errors:
                state += "\n" + escape(_errors(r.errors))
            done = f"{r.checkpoints_done}/{len(r.steps)} ckpts, {r.tasks_done}/{r.tasks} tasks"
            table.add_row(r.run, _steps(r.steps), done, state)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
    app.command("status")(status_command)
