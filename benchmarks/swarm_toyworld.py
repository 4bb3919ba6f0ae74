"""One real end-to-end swarm on toyworld proxies: generate, run, collect, fit, propose, then train the
proposed mixture and compare it with the natural and the uniform mixtures (same base config).

    python benchmarks/swarm_toyworld.py                     # configs/mixopt/swarm_toyworld.yaml, 8 variants
    python benchmarks/swarm_toyworld.py --variants 16 --regressor gp --out runs/swarm_e2e

The objective is the mean held-out bits-per-byte over the four toyworld domains (``bpb/mean``, lower is
better). Printed: each mixture, its held-out bpb/mean, and the proposal's predicted value with its band.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/mixopt/swarm_toyworld.yaml"))
    ap.add_argument("--variants", type=int, default=8)
    ap.add_argument("--regressor", default="loglinear")
    ap.add_argument("--metric", default="bpb/mean")
    ap.add_argument("--workers", type=int, default=None, help="local workers (default: the cores)")
    ap.add_argument("--out", default=str(ROOT / "runs/swarm_toyworld_e2e"))
    ap.add_argument("--set", action="append", default=[], help="overrides of the swarm config, e.g. set=[duration.tokens=196608]")
    ap.add_argument("--kl", type=float, default=0.0, help="KL pull of the proposal towards the priors")
    args = ap.parse_args()

    import torch

    from mixlab.mixopt import swarm as S
    from mixlab.mixopt.fit import ProposeConfig, fit, propose
    from mixlab.runs.launch import LaunchConfig
    from mixlab.train.pretrain import pretrain

    torch.set_num_threads(1)
    os.chdir(ROOT)
    out = Path(args.out)
    t0 = time.perf_counter()
    cfg = S.load_swarm_config(args.config, [f"variants={args.variants}", *args.set])
    S.generate(cfg, out / "swarm")
    S.run(out / "swarm", LaunchConfig(**({"workers": args.workers} if args.workers else {})))
    col = S.collect(out / "swarm")
    priors = S.read_priors(out / "swarm")
    info = json.loads((out / "swarm" / "priors.json").read_text())
    res = fit(col.ratios, col.metrics, args.regressor, out=out / "fit", priors=priors, folds=min(5, len(col.runs)),
              fit_metrics=[args.metric])
    cv = res.cv["per_metric"][args.metric]
    print(f"swarm of {len(col.runs)} runs, {args.regressor} fit of {args.metric}: out-of-fold spearman "
          f"{cv['spearman']:.3f}, rmse {cv['rmse']:.4f}")
    pcfg = ProposeConfig(fit=str(out / "fit"), objective={args.metric: {"weight": 1.0, "direction": "min"}},
                         constraints={"min_weight": cfg.sampling.min_weight, "max_weight": info["max_weight"]},
                         kl_to_prior=args.kl)
    prop = propose(out / "fit", pcfg, out / "proposal")
    base = S.load_base(cfg)
    domains = info["domains"]
    mixtures = {f"proposed-{args.regressor}": prop["weights"], "natural": info["priors"],
                "uniform": {d: 1 / len(domains) for d in domains}}
    rows = []
    for name, mix in mixtures.items():
        run_cfg = base.model_copy(update={"data": base.data.model_copy(update={"mixture": dict(mix)})})
        r = pretrain(run_cfg, out / "compare" / name)
        rows.append((name, mix, r.metrics[args.metric]))
    observed = {n: v for n, v in zip(col.runs, col_metric(col.metrics, args.metric))}
    best = min(observed, key=observed.get)
    print(f"{'mixture':<20} " + " ".join(f"{d:>10}" for d in domains) + f"  {args.metric:>10}")
    for name, mix, value in rows:
        print(f"{name:<20} " + " ".join(f"{mix[d]:10.3f}" for d in domains) + f"  {value:10.4f}")
    print(f"best observed in the swarm: {best} {observed[best]:.4f}")
    o = prop["objective"]
    print(f"proposal predicted objective {o['predicted']:.3f} (z-units; 95% band {o['band95'][0]:.3f} .. "
          f"{o['band95'][1]:.3f}), expected optimism {o['expected_optimism']:.3f}")
    print(f"total {time.perf_counter() - t0:.0f}s")


def col_metric(path: Path, metric: str) -> list[float]:
    from mixlab.mixopt import io

    return io.read_metrics(path).select([metric])[:, 0].tolist()


if __name__ == "__main__":
    main()
