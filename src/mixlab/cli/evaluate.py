"""`mixlab eval`: evaluate a model on a suite or a list of tasks (a thin layer over
:func:`mixlab.eval.runner.evaluate`)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mixlab.cli.common import console, exit_failed, progress


def eval_command(
    model: str = typer.Option(..., "--model", help="HF model directory, hub id in the local cache, or alias (smollm2-135m)."),
    out: Path = typer.Option(..., "--out", help="Output directory: results.json and tasks/<task>/{result.json,items.jsonl}."),
    suite: str = typer.Option(None, "--suite", help="Suite name (forgetting10, bpb, toyworld) or suite YAML path."),
    tasks: str = typer.Option(None, "--tasks", help="Comma-separated task names or task YAML paths."),
    adapter: Path = typer.Option(None, "--adapter", help="LoRA adapter directory (peft), merged into the model."),
    limit: int = typer.Option(None, "--limit", help="Score only the first N items of each task."),
    batch_size: int = typer.Option(32, "--batch-size", help="Items (each with all its choices) per forward pass."),
    workers: int = typer.Option(0, "--workers", min=0, help="Processes sharing log-likelihood scoring on CPU, one torch thread each (0: one per torch thread)."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    max_length: int = typer.Option(None, "--max-length", help="Context window (default: from the model config)."),
    gen_batch_size: int = typer.Option(16, "--gen-batch-size", help="Prompts per generation batch (generate/code/judge)."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", help="Cap on generated tokens for every generative task."),
    judge_url: str = typer.Option(None, "--judge-url", help="OpenAI-compatible base URL of the judge, e.g. http://127.0.0.1:8000/v1."),
    judge_name: str = typer.Option("judge", "--judge-name", help="Model name sent to the judge endpoint."),
    judge_api_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-api-key-env", help="Environment variable holding the endpoint's API key, if any."),
    judge_model: str = typer.Option(None, "--judge-model", help="Local HF judge model (directory or alias) instead of an endpoint."),
    judge_max_tokens: int = typer.Option(2048, "--judge-max-tokens", help="Tokens per judgment (FastChat: 2048)."),
    judge_cache: Path = typer.Option(None, "--judge-cache", help="Judgment cache folder (default: under the mixlab cache)."),
    base: str = typer.Option(None, "--base", help="Base model (directory or alias) for tasks that compare the model with it; loaded only when such a task runs."),
) -> None:
    """Evaluate MODEL on a suite or tasks; finished tasks in OUT are reused, so re-running resumes.
    Exits with status 1 when a task failed, after a summary of what failed and why.

    Example: mixlab eval --model smollm2-135m --suite forgetting10 --limit 100 --out runs/eval/smol
    MT-Bench: mixlab eval --model M --suite mt_bench --judge-url http://127.0.0.1:8000/v1 --judge-name NAME --out O
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixlab.eval.runner import evaluate, failed_tasks
    from mixlab.eval.tasks import resolve_tasks
    from mixlab.models.pretrained import load_model

    specs = resolve_tasks(suite=suite, tasks=[t.strip() for t in tasks.split(",") if t.strip()] if tasks else None)
    judge = _judge(judge_url, judge_name, judge_api_key_env, judge_model, judge_max_tokens, device)
    if judge is not None:
        judge.check()  # an unreachable endpoint fails before the model is even loaded
    loaded = load_model(model, adapter=adapter, device=device)
    with progress() as bar:
        bars: dict[str, int] = {}

        def on_progress(task: str, done: int, total: int) -> None:
            if task not in bars:
                bars[task] = bar.add_task(task, total=total)
            bar.update(bars[task], completed=done)

        results = evaluate(loaded, specs, out, limit=limit, batch_size=batch_size, max_length=max_length,
                           progress=on_progress, judge=judge, gen_batch_size=gen_batch_size,
                           max_new_tokens=max_new_tokens, judge_cache=judge_cache,
                           workers=workers or _auto_workers(device), base=base)
    _print_table(results)
    console.print(f"results: {out / 'results.json'}")
    failed = failed_tasks(results)
    if failed:
        exit_failed(list(failed.items()), f"{len(failed)} of {len(results)} task(s)",
                    f"tracebacks in {out / 'tasks'}/<task>/error.json; run the command again to retry them")


def _auto_workers(device: str) -> int:
    """One scoring process per torch thread on CPU (the threads are split among them): on small
    models a forward pass is largely Python and small ops that threads do not speed up."""
    import torch

    return min(torch.get_num_threads(), 8) if device == "cpu" else 1


def lm_eval_command(
    model: str = typer.Option(..., "--model", help="HF model directory, hub id in the local cache, or alias (smollm2-135m)."),
    tasks: str = typer.Option(..., "--tasks", help="Comma-separated lm-eval task names."),
    out: Path = typer.Option(..., "--out", help="Output directory: results.json (lm-eval's metrics per task)."),
    adapter: Path = typer.Option(None, "--adapter", help="LoRA adapter directory (peft), merged into the model."),
    include_path: Path = typer.Option(None, "--include-path", help="Folder of extra lm-eval task YAMLs (e.g. over local files)."),
    defaults: bool = typer.Option(True, "--defaults/--no-defaults", help="Also load lm-eval's own task registry."),
    limit: int = typer.Option(None, "--limit", help="Score only the first N items of each task."),
    batch_size: int = typer.Option(32, "--batch-size", help="Requests per forward pass (lm-eval's HF backend)."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
) -> None:
    """Run lm-evaluation-harness tasks on a mixlab model (proxy checkpoint, LoRA run, GGUF SmolLM2).

    lm-eval's own tasks read their datasets from the Hugging Face hub unless they are in the local
    cache; `--include-path` adds task YAMLs over local files (see `mixlab.eval.harness.write_task_yaml`).

    Example: mixlab lm-eval --model runs/toyworld_base/checkpoints/step-400 --tasks my_arc --include-path tasks/ --no-defaults --out runs/lmeval
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mixlab import atomic
    from mixlab.eval.harness import run_lm_eval
    from mixlab.models.pretrained import load_model

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    loaded = load_model(model, adapter=adapter, device=device)
    res = run_lm_eval(loaded, names, include_path=include_path, include_defaults=defaults, limit=limit,
                      batch_size=batch_size)["results"]
    atomic.write_json(out / "results.json", res)
    _print_table(res)
    console.print(f"results: {out / 'results.json'}")


def _judge(url: str | None, name: str, key_env: str, local: str | None, max_tokens: int, device: str):
    """The judge backend the options ask for (None when neither --judge-url nor --judge-model)."""
    from mixlab.errors import MixlabError
    from mixlab.eval.judge import HTTPJudge, LocalJudge

    if url and local:
        raise MixlabError("give either --judge-url (an endpoint) or --judge-model (a local model), not both")
    if url:
        return HTTPJudge(url, name, api_key=os.environ.get(key_env) or None, max_tokens=max_tokens)
    if local:
        from mixlab.models.pretrained import load_model

        return LocalJudge(load_model(local, device=device), max_tokens=max_tokens)
    return None


def judge_diff_command(
    a: Path = typer.Argument(..., help="Output directory of the first model's evaluation."),
    b: Path = typer.Argument(..., help="Output directory of the second model's evaluation."),
    task: str = typer.Option("mt_bench", "--task", help="The judge task to compare."),
) -> None:
    """Per-question judge-score deltas (B - A) between two evaluations of the same judge task.

    Example: mixlab judge-diff runs/eval/base runs/eval/sft --task mt_bench
    """
    from rich.table import Table

    from mixlab.eval.judge import compare_runs

    d = compare_runs(a, b, task)
    table = Table("question", "category", "A", "B", "delta")
    for q in d["per_question"]:
        table.add_row(str(q["id"]), q["category"], f"{q['a']:.2f}", f"{q['b']:.2f}", f"{q['delta']:+.2f}")
    console.print(table)
    cats = ", ".join(f"{c} {v:+.2f}" for c, v in d["categories"].items())
    console.print(f"{d['n']} questions: mean delta {d['mean_delta']:+.3f} (B wins {d['wins']}, loses {d['losses']}, "
                  f"ties {d['ties']}); by category: {cats}")


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
    app.command("judge-diff")(judge_diff_command)
    app.command("lm-eval")(lm_eval_command)
