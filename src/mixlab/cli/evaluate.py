"""`mixlab eval`: evaluate a model on a suite or a list of tasks (a thin layer over
:func:`mixlab.eval.runner.evaluate`)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mixlab.cli.common import console, progress


def eval_command(
    model: str = typer.Option(..., "--model", help="HF model directory, hub id in the local cache, or alias (smollm2-135m)."),
    out: Path = typer.Option(..., "--out", help="Output directory: results.json and tasks/<task>/{result.json,items.jsonl}."),
    suite: str = typer.Option(None, "--suite", help="Suite name (forgetting10, bpb, toyworld) or suite YAML path."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated task names or task YAML paths."),
    adapter: Path = typer.Option(None, "--adapter", help="LoRA adapter directory (peft), merged into the model."),
    limit: int = typer.Option(None, "--limit", help="Score only the first N items of each task."),
    batch_size: int = typer.Option(32, "--batch-size", help="Items (each with all its choices) per forward pass."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    max_length: int = typer.Option(None, "--max-length", help="Context window (default: from the model config)."),
) -> None:
    """Evaluate MODEL on a suite or tasks; finished tasks in OUT are reused, so re-running resumes.

    Example: mixlab eval --model smollm2-135m --suite forgetting10 --limit 100 --out runs/eval/smol
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixlab.eval.runner import evaluate
    from mixlab.eval.tasks import resolve_tasks
    from mixlab.models.pretrained import load_model

    specs = resolve_tasks(suite=suite, tasks=[t.strip() for t in tasks.split(",") if t.strip()] if tasks else None)
    loaded = load_model(model, adapter=adapter, device=device)
    with progress() as bar:
        bars: dict[str, int] = {}

        def on_progress(task: str, done: int, total: int) -> None:
            if task not in bars:
                bars[task] = bar.add_task(task, total=total)
            bar.update(bars[task], completed=done)

        results = evaluate(loaded, specs, out, limit=limit, batch_size=batch_size, max_length=max_length,
                           progress=on_progress)
    _print_table(results)
    console.print(f"results: {out / 'results.json'}")


def _print_table(results: dict) -> None:
    from rich.table import Table

    table = Table("task", "n", "metrics")
    for task, r in results.items():
        if "skipped" in r:
            table.add_row(task, "-", f"[yellow]skipped[/]: {r['skipped']} {r.get('path', '')}")
        elif "error" in r:
            table.add_row(task, "-", f"[red]error[/]: {r['error']}")
        else:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in r.items() if k != "n" and isinstance(v, float))
            table.add_row(task, str(r.get("n")), shown)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
