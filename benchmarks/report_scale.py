"""Time aggregation + report writing at the scale of a forgetting study: 100 runs x 20 checkpoints x 60 tasks.

Generated results (seeded): 50 accuracy tasks and 10 bits-per-byte tasks in 6 groups, 200-1000 items
each; per-item scores for the base model and every run's final checkpoint (the pairs the statistics
use; the other checkpoints carry only their task-level number, as a store would load items lazily).
Also prints the per-comparison cost of scipy's bootstrap/permutation test against the batched
statistics in mixlab.report.stats, on the same 1000-item data — the reason those are hand-written.

    .venv/bin/python benchmarks/report_scale.py [--runs 100 --steps 20 --tasks 60 --out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mixlab.report.forgetting import StatsConfig
from mixlab.report.html import write_report
from mixlab.report.model import Result, RunMeta

METHODS = ("sft", "lora", "kl", "replay", "distill")
DATASETS = ("gsm8k", "squad2", "mbpp", "hotpotqa")


def generate(n_runs: int, n_steps: int, n_tasks: int, seed: int = 0) -> tuple[list[Result], list[RunMeta]]:
    rng = np.random.default_rng(seed)
    tasks = [(f"task{t:02d}", "bpb" if t % 6 == 5 else "acc") for t in range(n_tasks)]
    groups = {name: f"group{t % 6}" for t, (name, _) in enumerate(tasks)}
    sizes = rng.integers(200, 1001, n_tasks)
    results: list[Result] = []
    base_p = {}
    for (name, metric), n in zip(tasks, sizes, strict=True):
        ids = [f"{name}-{i}" for i in range(n)]
        if metric == "acc":
            p = rng.uniform(0.3, 0.8, n)
            items = (rng.random(n) < p).astype(float)
        else:
            p = rng.uniform(0.7, 1.3, n)
            items = p + rng.normal(0, 0.05, n)
        base_p[name] = (ids, p)
        results.append(Result("base", 0, name, metric, float(items.mean()), int(n), None, metric == "acc", "1",
                              "smollm2-135m", dict(zip(ids, items.tolist(), strict=True))))
    metas = []
    for r in range(n_runs):
        run = f"run{r:03d}"
        method, dataset = METHODS[r % len(METHODS)], DATASETS[(r // len(METHODS)) % len(DATASETS)]
        target = tasks[(r // len(METHODS)) % len(DATASETS)][0]
        metas.append(RunMeta(run, method, dataset, (target,), task_groups=groups, runtime={
            "data": float(rng.uniform(10, 60)), "finetune": float(rng.uniform(600, 3600)),
            "eval": float(rng.uniform(300, 900))}))
        strength = rng.uniform(0.0, 0.15)
        for s in range(1, n_steps + 1):
            frac = s / n_steps
            for (name, metric), n in zip(tasks, sizes, strict=True):
                ids, p = base_p[name]
                shift = (0.2 if name == target else -strength) * frac
                if metric == "acc":
                    q = np.clip(p + shift, 0, 1)
                    value = float(q.mean() + rng.normal(0, 0.005))
                    items = (rng.random(n) < q).astype(float) if s == n_steps else None
                else:
                    q = p * (1 - 0.5 * shift)
                    value = float(q.mean() + rng.normal(0, 0.002))
                    items = q + rng.normal(0, 0.05, n) if s == n_steps else None
                results.append(Result(run, s * 100, name, metric, value, int(n), None, metric == "acc", "1",
                                      "smollm2-135m", None if items is None else dict(zip(ids, items.tolist(),
                                                                                          strict=True))))
    return results, metas


def scipy_vs_batched() -> None:
    from scipy import stats as sst

    from mixlab.report import stats

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, 1000).astype(float), rng.integers(0, 2, 1000).astype(float)
    t = time.perf_counter()
    for _ in range(5):
        sst.bootstrap((a, b), lambda x, y, axis: np.mean(y - x, axis=axis), paired=True, vectorized=True,
                      n_resamples=1000, method="percentile", rng=np.random.default_rng(0))
    t_boot = (time.perf_counter() - t) / 5
    t = time.perf_counter()
    for _ in range(2):
        sst.permutation_test((b - a,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                             vectorized=True, n_resamples=2000, rng=np.random.default_rng(0))
    t_perm = (time.perf_counter() - t) / 2
    D = np.stack([b - a] * 100, axis=1)
    t = time.perf_counter()
    stats.bootstrap_replicates(D, 1000, 0, "x")
    o_boot = (time.perf_counter() - t) / 100
    t = time.perf_counter()
    stats.sign_flip_pvalues(D, 2000, 0, "x")
    o_perm = (time.perf_counter() - t) / 100
    print(f"per comparison (1000 items): scipy.stats.bootstrap {1e3 * t_boot:.1f} ms vs batched "
          f"{1e3 * o_boot:.2f} ms ({t_boot / o_boot:.0f}x); scipy.stats.permutation_test {1e3 * t_perm:.1f} ms "
          f"vs batched {1e3 * o_perm:.2f} ms ({t_perm / o_perm:.0f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-scipy", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    results, metas = generate(args.runs, args.steps, args.tasks)
    n_items = sum(len(r.items) for r in results if r.items is not None)
    print(f"generated {len(results)} results ({n_items} per-item scores) in {time.perf_counter() - t0:.1f} s "
          "(not timed below)")
    out = args.out or Path(tempfile.mkdtemp(prefix="mixlab-report-scale-"))
    t, cpu = time.perf_counter(), time.process_time()
    files = write_report(results, metas, "base", out, "report_scale", StatsConfig(n_boot=1000, n_perm=2000))
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    size = files.html.stat().st_size / 1e6
    print(f"aggregation + report writing: {elapsed:.2f} s wall, {cpu:.2f} s CPU (target < 10 s: {elapsed / 10:.2f} "
          "of the budget); "
          f"report.html {size:.1f} MB, {len(files.figures)} figures, in {out}")
    if not args.skip_scipy:
        scipy_vs_batched()


if __name__ == "__main__":
    main()
