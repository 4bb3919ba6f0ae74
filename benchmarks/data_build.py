"""Data-build throughput and memory at scale.

Builds a 3-domain mixture from N records (real records from the shared data, repeated with new ids)
for several N, each in a fresh subprocess, and prints records/s and peak RSS, so linear growth is
visible. Usage:

    MIXLAB_DATA_DIR=../shared/data python benchmarks/data_build.py [--sizes 250000,500000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

DOMAINS = {"math": ["gsm8k", "math"], "qa": ["hotpotqa", "boolq"], "code": ["humaneval", "mbpp"]}
RATIOS = {"math": 4, "qa": 3, "code": 3}


def make_inputs(n_total: int, folder: Path) -> dict[str, Path]:
    """Write one records file per dataset, repeating its real records with new ids up to its share."""
    from mixlab.data.records import write_records
    from mixlab.data.sources import load_records

    names = [d for ds in DOMAINS.values() for d in ds]
    per = n_total // len(names)
    paths = {}
    for name in names:
        base = load_records(name)
        rows = [replace(base[i % len(base)], id=f"{name}/r{i}", metadata={**base[i % len(base)].metadata, "original_id": f"r{i}"})
                for i in range(per)]
        paths[name] = write_records(folder / f"{name}.jsonl", rows)
    return paths


def run_one(n_total: int, folder: Path) -> dict:
    from mixlab.config import validate
    from mixlab.data.api import build
    from mixlab.data.build import DataConfig

    paths = make_inputs(n_total, folder)
    cfg = validate(DataConfig, {
        "seed": 0,
        "domains": {d: {"ratio": RATIOS[d], "datasets": {n: {"path": str(paths[n]), "format": "records"} for n in ds}}
                    for d, ds in DOMAINS.items()},
        "contamination": {"action": "report"},
    })
    t0 = time.perf_counter()
    out = build(cfg, folder / "out")
    dt = time.perf_counter() - t0
    info = json.loads((out / "info.json").read_text())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"records": n_total, "seconds": round(dt, 2), "records_per_s": round(n_total / dt),
            "peak_rss_mb": round(peak_mb), "train_total": info["counts"]["train_total"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="250000,500000,1000000")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(run_one(args.one, Path(d))))
        return
    rows = []
    for n in map(int, args.sizes.split(",")):
        res = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, env=os.environ)
        if res.returncode != 0:
            sys.exit(res.stderr)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{r['records']:>9} records: {r['seconds']:6.1f} s  {r['records_per_s']:>8} rec/s  "
              f"peak {r['peak_rss_mb']:>5} MB  ({r['peak_rss_mb'] / r['records'] * 1e6:.0f} MB per 1M)  train {r['train_total']}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"scaling {a['records']} -> {b['records']}: time x{b['seconds'] / a['seconds']:.2f}, "
              f"memory x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} for records x{b['records'] / a['records']:.1f}")


if __name__ == "__main__":
    main()
