"""Backends on one machine: a swarm of tiny proxies (train, then evaluate) run one after another,
through the local backend with 2 workers, and through a local Ray cluster with 2 workers.

Targets (issue 10): local with 2 workers <= 0.6x sequential; Ray within 10% of local.

    python benchmarks/swarm_backends.py                       # 16 variants of configs/mixopt/swarm_toyworld.yaml
    python benchmarks/swarm_backends.py --variants 8 --backends sequential,local

Each backend gets its own copy of one generated swarm directory, so they train the same variants.
The machine should be otherwise idle: the ratios are wall-clock ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/mixopt/swarm_toyworld.yaml"))
    ap.add_argument("--variants", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backends", default="sequential,local,ray")
    ap.add_argument("--set", action="append", default=[], help="extra overrides of the swarm config")
    args = ap.parse_args()

    import torch

    from mixlab.mixopt import swarm as S
    from mixlab.runs.launch import LaunchConfig, RayOptions

    torch.set_num_threads(1)
    os.chdir(ROOT)  # the swarm config's base path is relative to the checkout
    cfg = S.load_swarm_config(args.config, [f"variants={args.variants}", *args.set])
    tmp = Path(tempfile.mkdtemp(prefix="swarm_backends_"))
    t0 = time.perf_counter()
    S.generate(cfg, tmp / "generated")
    print(f"generated {args.variants} variants in {time.perf_counter() - t0:.1f}s ({tmp})", flush=True)
    launches = {
        "sequential": LaunchConfig(backend="local", workers=1),
        "local": LaunchConfig(backend="local", workers=args.workers),
        "ray": LaunchConfig(backend="ray", workers=args.workers,
                            ray=RayOptions(num_cpus=args.workers, dashboard=False)),
    }
    seconds: dict[str, float] = {}
    for name in args.backends.split(","):
        d = tmp / name
        shutil.copytree(tmp / "generated", d)
        t0 = time.perf_counter()
        report = S.run(d, launches[name])
        seconds[name] = time.perf_counter() - t0
        print(f"{name:<11} {seconds[name]:7.1f}s  trained {len(report.trained)}, evaluated {report.evaluated}",
              flush=True)
    if "sequential" in seconds and "local" in seconds:
        print(f"local x{args.workers} / sequential = {seconds['local'] / seconds['sequential']:.2f}  (target <= 0.60)")
    if "ray" in seconds and "local" in seconds:
        print(f"ray / local = {seconds['ray'] / seconds['local']:.2f}  (target <= 1.10)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
