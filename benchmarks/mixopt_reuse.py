"""Mixture reuse vs full recomputation over a sequence of source updates, on known loss surfaces.

A universe of 10 domain slots; the mixture starts over 6 of them and goes through 5 updates (olmix's
case study shape): add 1 domain, add 2, revise one (its effect on every task redrawn), remove one,
add 1. After each update:
  full   a new swarm of RUNS_PER_DOMAIN x (number of domains) runs over every current domain, fitted
         and optimized from scratch (what one does without reuse);
  reuse  the previous proposal's unchanged domains frozen as one virtual domain (mixlab.mixopt.reuse),
         a swarm of --reuse-per-domain x (free domains + 1) runs over the virtual and the added/changed
         domains, fitted and optimized there, expanded to leaves; a removal needs no runs (the frozen
         split renormalized);
  pooled the same kind of reuse swarm around its own previous proposal, but fitted together with every
         earlier run (mixlab.mixopt.reuse.pool_runs, then fit_pooled with its revision-block offsets as
         --offsets says: a removed domain and a revised domain's old data
         are retired columns held at zero), over every current domain: the unchanged domains' split can
         move; a removal is re-optimized on the earlier runs alone (no new runs). Its objective is
         z-scored over the model's predictions on the current design (Pooled.objective), as a full
         swarm's would be, not over the pooled runs.
All fit the surface's law family per task (loglinear on exp, mixing_law on power) (3 tasks, objective = mean z-scored loss, noise sd 0.01 against
a signal sd of 0.1). Laws: exp L_k = exp(x . t_k); power L_k = sum_j b_kj (x_j + 0.02) ** -a_kj (both scaled and
shifted). A revision redraws the revised slot's t, b, a. On the power law a run that gave the slot no weight keeps
its loss (each term is taken relative to the slot's absence, b ((x + 0.02) ** -a - 0.02 ** -a), plus the first
draw's all-absent loss): revising a source's data cannot change a model that never trained on it, as on the exp
law, where an absent slot has no term. ``--revise-absent`` gives the earlier surface, on which a revision also
shifted every run without the slot by the redrawn b 0.02 ** -a (a batch effect that pooling has to fit as an offset). Regret is normalized on the current surface: (J(x) - J*) / (J(natural) - J*),
natural = token shares. Prints per update and in total: runs of each, runs saved, mean regret, and
the regret of the best mixture that keeps reuse's frozen split (what a perfect fit of the small swarm
would reach: the cost of freezing, apart from the fit's error).

Usage: python benchmarks/mixopt_reuse.py [--seeds N] [--law exp|power]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from scipy import optimize as sopt

from mixlab.errors import ConfigError
from mixlab.mixopt.propose import ConstraintsConfig, Objective, feasible_bounds, optimize_mixture, project
from mixlab.mixopt.regressors import MixtureModel
from mixlab.mixopt.reuse import Pooled, fit_pooled, plan_reuse, pool_runs

SLOTS, TASKS, NOISE, SIGNAL_SD = 10, 3, 0.01, 0.1
S0 = 0.02  # the power law's offset: (x + S0) ** -a
RUNS_PER_DOMAIN = 6
START = list(range(6))
UPDATES = [("add", [6]), ("add", [7, 8]), ("change", [2]), ("remove", [4]), ("add", [9])]


class Surface:
    """Task losses over the slots present; ``change`` redraws one slot's parameters."""

    def __init__(self, law: str, rng: np.random.Generator, revise_absent: bool = False):
        self.law, self.rng, self.revise_absent = law, rng, revise_absent
        self.avail = 10 ** rng.uniform(0, 2.5, size=SLOTS)
        self.t = rng.uniform(-3.0, 0.5, size=(TASKS, SLOTS))
        self.b = rng.lognormal(0, 1.0, size=(TASKS, SLOTS)) * (rng.random((TASKS, SLOTS)) < 0.7)
        self.a = rng.uniform(0.15, 0.6, size=(TASKS, SLOTS))
        self.absent = (self.b * S0 ** -self.a).sum(axis=1)  # the power law's loss with every slot at 0
        X = rng.dirichlet(np.ones(SLOTS), size=4096)
        self.scale = SIGNAL_SD / self.raw(X).std(axis=0)

    def change(self, j: int) -> None:
        self.t[:, j] = self.rng.uniform(-3.0, 0.5, size=TASKS)
        self.b[:, j] = self.rng.lognormal(0, 1.0, size=TASKS)
        self.a[:, j] = self.rng.uniform(0.15, 0.6, size=TASKS)

    def raw(self, X: np.ndarray) -> np.ndarray:
        if self.law == "exp":
            return np.exp(X @ self.t.T)
        if self.revise_absent:  # the earlier surface: a revision also moves runs without the revised slot
            return np.einsum("nkd,kd->nk", (X[:, None, :] + S0) ** -self.a[None], self.b)
        # each slot's term relative to its absence, plus the all-absent loss of the first draw: the same
        # surface until a revision, which then leaves every run without the revised slot unchanged
        gain = (X[:, None, :] + S0) ** -self.a[None] - S0 ** -self.a[None]
        return np.einsum("nkd,kd->nk", gain, self.b) + self.absent

    def loss(self, x: np.ndarray, slots: list[int]) -> np.ndarray:
        X = np.zeros((len(np.atleast_2d(x)), SLOTS))
        X[:, slots] = np.atleast_2d(x)
        return 2.5 + self.scale * self.raw(X)

    def prior(self, slots: list[int]) -> np.ndarray:
        p = self.avail[slots]
        return p / p.sum()


def swarm(prior: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.dirichlet(0.3 + 2 * len(prior) * prior, size=n)


REGRESSOR = {"exp": "loglinear", "power": "mixing_law"}  # each surface's own law family


def fit_propose(X: np.ndarray, Y: np.ndarray, prior: np.ndarray, seed: int, law: str) -> np.ndarray:
    names = [f"d{j}" for j in range(X.shape[1])]
    tasks = [f"t{k}" for k in range(TASKS)]
    obj = Objective.build(tasks, Y, {t: 1.0 for t in tasks}, {t: "min" for t in tasks})
    model = MixtureModel.fit(REGRESSOR[law], names, tasks, X, Y, seed=seed)
    bounds = feasible_bounds(names, ConstraintsConfig())
    x, _ = optimize_mixture(model, obj, bounds, prior, starts=X[np.argsort(obj.value(model.predict(X)))[:4]],
                            samples=5000, refine=4, seed=seed)
    return x


def fit_propose_pooled(P: Pooled, prior: np.ndarray, seed: int, law: str, start: np.ndarray,
                       offsets: bool | str = "auto") -> np.ndarray:
    """Fit every column of the pooled table (``offsets``: an offset per revision block, kept where it
    lowers the BIC with "auto", see ``fit_pooled``); propose over the current domains (retired ones at 0)."""
    tasks = [f"t{k}" for k in range(TASKS)]
    model = fit_pooled(P, REGRESSOR[law], tasks, seed=seed, offsets=offsets).model
    design = swarm(prior, 2048, np.random.default_rng(seed))  # the swarm sampler over the current domains
    obj = P.objective(model, design, {t: 1.0 for t in tasks}, {t: "min" for t in tasks})
    bounds = feasible_bounds(P.columns, ConstraintsConfig(max_weight={c: 0.0 for c in P.retired}))
    idx = [P.columns.index(c) for c in P.retired]
    Xc = P.weights[P.weights[:, idx].sum(axis=1) <= 1e-12] if idx else P.weights
    starts = np.vstack([Xc[np.argsort(obj.value(model.predict(Xc)))[:4]], P.embed(start)])
    x, _ = optimize_mixture(model, obj, bounds, P.embed(prior)[0], starts=starts, samples=5000, refine=4, seed=seed)
    return P.restrict(x)[0]


def reuse_swarm(prev: dict[str, float], names: list[str], changed: list[str], prior: np.ndarray, n_per: int,
                rng: np.random.Generator):
    """The reuse plan's swarm over (existing, free domains) expanded to leaves, or None (a removal)."""
    try:
        plan = plan_reuse(prev, "previous", names, changed)
    except ConfigError:  # only removals: the frozen split renormalized, no runs
        return None, None, None
    h = plan.hierarchy()
    vprior = h.aggregate(prior)[0]
    V = swarm(vprior, n_per * len(h.names), rng)
    return h, vprior, V


def true_objective(surf: Surface, slots: list[int], mu: np.ndarray, sd: np.ndarray):
    return lambda x: ((surf.loss(x, slots) - mu) / sd).mean(axis=1)


def optimum(J, d: int, prior: np.ndarray, rng: np.random.Generator) -> float:
    cand = np.vstack([rng.dirichlet(np.ones(d), size=20000), rng.dirichlet(prior * d + 0.05, size=5000), np.eye(d)])
    vals = J(cand)
    best = float(vals.min())
    for i in np.argsort(vals)[:6]:
        r = sopt.minimize(lambda x: float(J(x)[0]), cand[i], method="SLSQP", bounds=[(0, 1)] * d,
                          constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}], options={"maxiter": 300})
        best = min(best, float(J(project(r.x, np.zeros(d), np.ones(d)))[0]))
    return best


def run(seed: int, law: str, reuse_per_domain: int = RUNS_PER_DOMAIN, offsets: bool | str = "auto",
        revise_absent: bool = False) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    surf = Surface(law, rng, revise_absent)
    slots = list(START)

    def observe(X, slots):
        return surf.loss(X, slots) + rng.normal(0, NOISE, size=(len(X), TASKS))

    def regret(x, slots, h=None):
        """Normalized regret of x; with ``h`` also of the best mixture keeping h's frozen split (the
        most reuse could reach with a perfect fit: the cost of freezing itself)."""
        prior = surf.prior(slots)
        ref = swarm(prior, 2048, rng)
        L = surf.loss(ref, slots)
        J = true_objective(surf, slots, L.mean(axis=0), L.std(axis=0))
        j_star = optimum(J, len(slots), prior, rng)
        r = lambda j: (j - j_star) / (float(J(prior)[0]) - j_star)  # noqa: E731
        if h is None:
            return r(float(J(x)[0]))
        g = len(h.names)
        V = np.vstack([rng.dirichlet(np.ones(g), size=20000), rng.dirichlet(np.ones(g) * 0.2, size=20000), np.eye(g)])
        return r(float(J(x)[0])), r(float(J(h.expand(V)).min()))

    X0 = swarm(surf.prior(slots), RUNS_PER_DOMAIN * len(slots), rng)
    Y0 = observe(X0, slots)
    x0 = fit_propose(X0, Y0, surf.prior(slots), seed, law)
    reuse_prev = pooled_prev = {f"s{j}": float(v) for j, v in zip(slots, x0)}
    pooled = Pooled([f"s{j}" for j in slots], [f"s{j}" for j in slots], X0, Y0, 0)
    rows = []
    for kind, what in UPDATES:
        changed = []
        if kind == "add":
            slots = slots + what
        elif kind == "remove":
            slots = [j for j in slots if j not in what]
        else:
            for j in what:
                surf.change(j)
            changed = [f"s{j}" for j in what]
        names = [f"s{j}" for j in slots]
        prior = surf.prior(slots)
        # full recomputation
        n_full = RUNS_PER_DOMAIN * len(slots)
        Xf = swarm(prior, n_full, rng)
        x_full = fit_propose(Xf, observe(Xf, slots), prior, seed, law)
        # reuse: the frozen split as one virtual domain
        h, vprior, V = reuse_swarm(reuse_prev, names, changed, prior, reuse_per_domain, rng)
        if h is None:
            kept = np.array([reuse_prev[n] for n in names])
            x_reuse, n_reuse = kept / kept.sum(), 0
        else:
            n_reuse = len(V)
            Xr = h.expand(V)
            x_reuse = h.expand(fit_propose(V, observe(Xr, slots), vprior, seed, law))[0]
        reuse_prev = dict(zip(names, x_reuse.tolist()))
        rr, ro = (regret(x_reuse, slots), regret(x_reuse, slots)) if h is None else regret(x_reuse, slots, h)
        # pooled: a reuse swarm around its own previous proposal, fitted with every earlier run
        hp, _, Vp = reuse_swarm(pooled_prev, names, changed, prior, reuse_per_domain, rng)
        Xp = np.zeros((0, len(names))) if hp is None else hp.expand(Vp)
        pooled = pool_runs(pooled.columns, pooled.weights, pooled.metrics, names, Xp, observe(Xp, slots), changed,
                           pooled.blocks)
        start = np.array([pooled_prev.get(n, 0.0) for n in names])
        x_pooled = fit_propose_pooled(pooled, prior, seed, law, start, offsets)
        pooled_prev = dict(zip(names, x_pooled.tolist()))
        rows.append({"update": f"{kind} {what}", "full_runs": n_full, "reuse_runs": n_reuse,
                     "full_regret": regret(x_full, slots), "reuse_regret": rr, "frozen_oracle": ro,
                     "pooled_runs": len(Xp), "pooled_regret": regret(x_pooled, slots)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--law", default="exp,power")
    ap.add_argument("--reuse-per-domain", default="6,10", help="reuse swarm runs per searched domain (comma list)")
    ap.add_argument("--offsets", default="auto", choices=("auto", "on", "off"),
                    help="pooled: an offset per revision block (auto: where it lowers the BIC; fit_pooled)")
    ap.add_argument("--revise-absent", action="store_true",
                    help="power law: a revision also redraws the term of runs that gave the slot no weight (the "
                         "benchmark before it was made physical; see the module docstring)")
    args = ap.parse_args(argv)
    offsets = {"auto": "auto", "on": True, "off": False}[args.offsets]
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    for law, rpd in [(la, int(r)) for la in args.law.split(",") for r in args.reuse_per_domain.split(",")]:
        res = [run(1000 * s + 5, law, rpd, offsets, args.revise_absent) for s in range(args.seeds)]
        print(f"\n{law} law, {args.seeds} seeds, reuse swarms of {rpd} runs per searched domain (full: "
              f"{RUNS_PER_DOMAIN} per domain; pooled block offsets {args.offsets}"
              f"{'; revisions move runs without the slot' if args.revise_absent and law == 'power' else ''}): runs and mean normalized regret "
              f"per update (0 = optimum, 1 = natural)")
        print(f"  {'update':18s} {'full runs':>9s} {'reuse runs':>10s} {'full regret':>12s} {'reuse regret':>13s} "
              f"{'best with the frozen split':>27s} {'pooled runs':>11s} {'pooled regret':>13s}")
        for i, (kind, what) in enumerate(UPDATES):
            r = [x[i] for x in res]
            print(f"  {r[0]['update']:18s} {r[0]['full_runs']:9d} {r[0]['reuse_runs']:10d} "
                  f"{np.mean([x['full_regret'] for x in r]):12.3f} {np.mean([x['reuse_regret'] for x in r]):13.3f} "
                  f"{np.mean([x['frozen_oracle'] for x in r]):27.3f} {r[0]['pooled_runs']:11d} "
                  f"{np.mean([x['pooled_regret'] for x in r]):13.3f}")
        full = sum(x["full_runs"] for x in res[0])
        reuse = sum(x["reuse_runs"] for x in res[0])
        fr = np.mean([x["full_regret"] for s in res for x in s])
        rr = np.mean([x["reuse_regret"] for s in res for x in s])
        print(f"  total: full {full} runs, reuse {reuse} runs: {1 - reuse / full:.0%} of the runs saved "
              f"(target >= 50%); mean regret full {fr:.3f}, reuse {rr:.3f}, difference {rr - fr:+.3f} "
              f"(target within 0.05)", flush=True)
        pooled = sum(x["pooled_runs"] for x in res[0])
        pr = [x["pooled_regret"] for s in res for x in s]
        per_seed = [np.mean([x["pooled_regret"] - x["full_regret"] for x in s]) for s in res]
        print(f"  pooled: {pooled} runs: {1 - pooled / full:.0%} of the runs saved; mean regret {np.mean(pr):.3f}, "
              f"difference {np.mean(pr) - fr:+.3f} (median over seeds of the per-seed difference "
              f"{np.median(per_seed):+.3f}; pooled below full on {sum(d < 0 for d in per_seed)} of {len(res)} seeds)",
              flush=True)
    print(f"(took {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
