"""Propose a mixture: minimize a weighted, per-metric-normalized objective under constraints.

Feasible set: ``lower <= x <= upper``, ``sum x = 1``, where the bounds combine min/max weights,
fixed domains and the repetition cap ``x_j * target_tokens <= max_epochs * available_tokens_j``.
Infeasible constraints are a :class:`ConfigError` that says which ones clash.

* Log-linear law: the objective ``sum_m a_m s_m exp(x . t_m)`` (+ optional KL pull to the prior) is
  convex whenever every term points the same way as its metric, and is solved exactly with SLSQP
  and analytic gradients (scipy). Otherwise the same solver runs from several starts.
* Other regressors: many feasible samples (Dirichlet around the prior and flat, projected onto the
  feasible set), the best few refined with SLSQP.

The report carries the predicted score, an uncertainty band and the expected optimism measured
from out-of-fold errors (see :func:`uncertainty`), the objective in metric units (each metric's
weight, direction and predicted value at the proposal against the best observed run), and how far
the proposal lies from the swarm's support (:func:`support`): a law fitted on a swarm whose largest
weight of a domain was 0.37 says little about a mixture with 1.0 of it. ``within`` keeps the
proposal inside the swarm: ``box`` (each domain within its observed range), ``hull`` (the swarm's
convex hull) or ``trust:R`` (total-variation distance <= R from the best observed run); hull and
trust regions are solved by simplicial decomposition (:func:`optimize_in_polytope`).

Fine-tuning mode (:func:`finetune_proposal`): from a results table of fine-tuning runs (mixture of
target vs replay sources, anchor coefficient, ...), the run or predicted setting with the most target
gain subject to forgetting <= a bound, and the Pareto front of gain vs forgetting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from scipy import optimize

from mixlab.config import StrictModel
from mixlab.errors import ConfigError, MixlabError
from mixlab.mixopt.regressors import LogLinearLaw, MixtureModel

# ---------------------------------------------------------------- config


class RepetitionConfig(StrictModel):
    """``weight * target_tokens <= max_epochs * available_tokens`` for each listed domain."""

    target_tokens: float = Field(gt=0)
    max_epochs: float = Field(4.0, gt=0)
    available_tokens: dict[str, float] = Field(default_factory=dict)


class ConstraintsConfig(StrictModel):
    min_weight: float | dict[str, float] = 0.0
    max_weight: float | dict[str, float] = 1.0
    fixed: dict[str, float] = Field(default_factory=dict)
    repetition: RepetitionConfig | None = None


class MetricObjective(StrictModel):
    weight: float = Field(1.0, ge=0)
    direction: Literal["min", "max"] | None = None


class SearchConfig(StrictModel):
    samples: int = Field(20000, ge=100)
    refine: int = Field(8, ge=0)
    seed: int = 0


class ProposeConfig(StrictModel):
    """``mixlab propose CONFIG``: which fit, what to optimize, under which constraints."""

    mode: Literal["pretrain"] = "pretrain"
    fit: str = Field(description="a directory written by `mixlab fit`")
    objective: dict[str, MetricObjective] = Field(
        default_factory=dict, description="metric -> weight/direction; unlisted metrics weigh 0 if any listed "
                                          "weight is > 0, else 1 (empty = all metrics, equal weights)")
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    kl_to_prior: float = Field(0.0, ge=0)
    risk: float = Field(0.0, ge=0, description="add risk x predictive std to the objective (GP only)")
    within: str = Field("any", description="where the proposal may lie: any (the whole feasible simplex) | box "
                                           "(each domain within the swarm's observed range) | hull (the swarm's "
                                           "convex hull) | trust:R (total-variation distance <= R from the best "
                                           "observed run, 0 < R <= 1)")
    search: SearchConfig = Field(default_factory=SearchConfig)

    @field_validator("within")
    @classmethod
    def _within(cls, v: str) -> str:
        parse_within(v)
        return v


class FinetuneConfig(StrictModel):
    """``mixlab propose CONFIG`` in fine-tuning mode: gain vs forgetting from a results table."""

    mode: Literal["finetune"]
    results: str
    mixture: list[str] = Field(default_factory=list, description="columns that form the fine-tuning mixture")
    scalars: dict[str, tuple[float, float]] = Field(default_factory=dict, description="other knobs -> [low, high]")
    gain: str = "target_gain"
    forgetting: str = "forgetting"
    max_forgetting: float
    regressor: str | None = Field("gp", description="model gain/forgetting over the knobs; null = observed runs only")
    risk: float = Field(0.0, ge=0)
    samples: int = Field(20000, ge=100)
    seed: int = 0

    @model_validator(mode="after")
    def _some_variables(self) -> FinetuneConfig:
        if not self.mixture and not self.scalars:
            raise ValueError("name the knobs: `mixture` (columns summing to 1) and/or `scalars`")
        bad = [k for k, (lo, hi) in self.scalars.items() if not lo < hi]
        if bad:
            raise ValueError(f"scalars {bad}: each range must be [low, high] with low < high")
        return self


# ---------------------------------------------------------------- metric directions

_MAX = re.compile(r"acc|exact|\bem\b|pass@|f1|score|win|reward|gain|correct", re.I)
_MIN = re.compile(r"loss|bpb|bits|ppl|perplexity|nll|error|\bce\b|forget", re.I)


def infer_direction(metric: str) -> Literal["min", "max"] | None:
    """'min' for losses/bpb/perplexity, 'max' for accuracies/scores; None when the name does not say."""
    is_min, is_max = bool(_MIN.search(metric)), bool(_MAX.search(metric))
    if is_min == is_max:
        return None
    return "min" if is_min else "max"


def resolve_directions(metrics: Sequence[str], explicit: Mapping[str, str | None] | None = None,
                       default: Literal["min", "max"] | None = None) -> dict[str, str]:
    out = {}
    for m in metrics:
        d = (explicit or {}).get(m) or infer_direction(m) or default
        if d is None:
            raise ConfigError(f"cannot tell whether metric {m!r} should go down or up; set "
                              f"`objective.{m}.direction: min|max` (or --minimize/--maximize {m})")
        out[m] = d
    return out


# ---------------------------------------------------------------- feasible set


@dataclass(frozen=True)
class Bounds:
    domains: list[str]
    lower: np.ndarray
    upper: np.ndarray
    why_upper: list[str]


def _per_domain(value: float | Mapping[str, float], domains: Sequence[str], default: float, field: str) -> np.ndarray:
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in domains]
        if unknown:
            raise ConfigError(f"constraints.{field}: unknown domain(s) {unknown}; domains are {list(domains)}")
        return np.array([float(value.get(d, default)) for d in domains])
    return np.full(len(domains), float(value))


def feasible_bounds(domains: Sequence[str], c: ConstraintsConfig) -> Bounds:
    """Per-domain bounds from all constraints; raises ConfigError naming what cannot hold together."""
    domains = list(domains)
    lo = _per_domain(c.min_weight, domains, 0.0, "min_weight")
    hi = _per_domain(c.max_weight, domains, 1.0, "max_weight")
    why = ["max_weight" if h < 1 else "" for h in hi]
    if c.repetition is not None:
        r = c.repetition
        unknown = [k for k in r.available_tokens if k not in domains]
        if unknown:
            raise ConfigError(f"constraints.repetition.available_tokens: unknown domain(s) {unknown}; "
                              f"domains are {domains}")
        for j, d in enumerate(domains):
            if d in r.available_tokens:
                cap = r.max_epochs * r.available_tokens[d] / r.target_tokens
                if cap < hi[j]:
                    hi[j], why[j] = cap, (f"repetition cap {r.max_epochs:g} epochs x {r.available_tokens[d]:.3g} "
                                          f"tokens / {r.target_tokens:.3g} target tokens")
    for d, v in c.fixed.items():
        if d not in domains:
            raise ConfigError(f"constraints.fixed: unknown domain {d!r}; domains are {domains}")
        j = domains.index(d)
        if not (lo[j] - 1e-12 <= v <= hi[j] + 1e-12):
            raise ConfigError(f"constraints.fixed.{d} = {v:g} is outside its allowed range [{lo[j]:.4g}, {hi[j]:.4g}]"
                              f"{' (' + why[j] + ')' if why[j] else ''}")
        lo[j] = hi[j] = v
        why[j] = "fixed"
    return _checked(domains, lo, hi, why, "constraints cannot all hold")


def _checked(domains: list[str], lo: np.ndarray, hi: np.ndarray, why: list[str], what: str) -> Bounds:
    bad = [f"{d}: min {lo[j]:.4g} > max {hi[j]:.4g}{' (' + why[j] + ')' if why[j] else ''}"
           for j, d in enumerate(domains) if lo[j] > hi[j] + 1e-12]
    if bad:
        raise ConfigError(f"{what}: " + "; ".join(bad))
    if lo.sum() > 1 + 1e-9:
        raise ConfigError(f"{what}: minimum and fixed weights sum to {lo.sum():.4g} > 1; "
                          "lower constraints.min_weight or the fixed weights")
    if hi.sum() < 1 - 1e-9:
        capped = [f"{d} <= {hi[j]:.4g} ({why[j] or 'max_weight'})" for j, d in enumerate(domains)]
        raise ConfigError(f"{what}: the largest allowed weights sum to {hi.sum():.4g} < 1: "
                          + ", ".join(capped) + ". Raise max_weight or max_epochs, or lower target_tokens.")
    return Bounds(domains, lo, hi, why)


def within_box(bounds: Bounds, X: np.ndarray) -> Bounds:
    """``within: box``: the bounds narrowed to each domain's observed range in the swarm."""
    lo, hi = X.min(axis=0), X.max(axis=0)
    why = [b if hi[j] >= bounds.upper[j] else "swarm max" for j, b in enumerate(bounds.why_upper)]
    return _checked(bounds.domains, np.maximum(bounds.lower, lo), np.minimum(bounds.upper, hi), why,
                    "within box: the constraints and the swarm's observed ranges cannot all hold")


def project(V: np.ndarray, lower: np.ndarray, upper: np.ndarray, iters: int = 60) -> np.ndarray:
    """Euclidean projection of each row onto ``{lower <= x <= upper, sum x = 1}``.

    ``x = clip(v - tau, lower, upper)`` with ``tau`` found by bisection (vectorized over rows):
    the projection's KKT conditions, solved to ~1e-18 in 60 halvings.
    """
    V = np.atleast_2d(np.asarray(V, dtype=np.float64))
    a = (V - upper).min(axis=1) - 1.0
    b = (V - lower).max(axis=1) + 1.0
    for _ in range(iters):
        tau = 0.5 * (a + b)
        s = np.clip(V - tau[:, None], lower, upper).sum(axis=1)
        a = np.where(s > 1, tau, a)
        b = np.where(s > 1, b, tau)
    return np.clip(V - (0.5 * (a + b))[:, None], lower, upper)


def sample_feasible(n: int, prior: np.ndarray, bounds: Bounds, rng: np.random.Generator) -> np.ndarray:
    """Feasible mixtures: thirds from a flat Dirichlet and Dirichlets centred on the prior, projected."""
    d = len(prior)
    p = np.clip(prior, 1e-6, None) / np.clip(prior, 1e-6, None).sum()
    parts = [rng.dirichlet(np.ones(d), size=n - 2 * (n // 3))]
    for conc in (d, 5 * d):
        parts.append(rng.dirichlet(np.maximum(p * conc, 0.05), size=n // 3))
    return project(np.vstack(parts), bounds.lower, bounds.upper)


# ---------------------------------------------------------------- objective


@dataclass(frozen=True)
class Objective:
    """``sum_m w_m * sign_m * (y_m - mean_m) / std_m / sum w``: lower is better, unit-free."""

    metrics: list[str]
    weights: np.ndarray
    signs: np.ndarray
    means: np.ndarray
    stds: np.ndarray

    @classmethod
    def build(cls, metrics: Sequence[str], Y: np.ndarray, weights: Mapping[str, float],
              directions: Mapping[str, str]) -> Objective:
        w = np.array([float(weights.get(m, 0.0)) for m in metrics])
        if w.sum() <= 0:
            raise ConfigError("objective: all metric weights are zero; give at least one metric a weight > 0")
        sd = Y.std(axis=0)
        return cls(list(metrics), w / w.sum(), np.array([1.0 if directions[m] == "min" else -1.0 for m in metrics]),
                   Y.mean(axis=0), np.where(sd > 0, sd, 1.0))

    @property
    def coef(self) -> np.ndarray:
        """Per-metric multiplier of the raw prediction in the objective."""
        return self.weights * self.signs / self.stds

    def value(self, Y: np.ndarray) -> np.ndarray:
        return (Y - self.means) @ self.coef

    def std(self, S: np.ndarray | None) -> np.ndarray | None:
        """Objective std from per-metric predictive stds, treating metrics as independent."""
        return None if S is None else np.sqrt((S**2) @ (self.coef**2))


def _kl(x: np.ndarray, p: np.ndarray) -> tuple[float, np.ndarray]:
    xs = np.clip(x, 1e-12, None)
    return float(np.sum(xs * np.log(xs / p))), np.log(xs / p) + 1.0


def _slsqp(f, x0: np.ndarray, bounds: Bounds, jac=None) -> optimize.OptimizeResult:
    return optimize.minimize(
        f, x0, jac=jac, method="SLSQP", bounds=list(zip(bounds.lower, bounds.upper)),
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones_like(x)}],
        options={"maxiter": 300, "ftol": 1e-12})


def _loglinear_terms(model: MixtureModel, obj: Objective) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not all(isinstance(model.models[m], LogLinearLaw) for m in model.metrics):
        return None
    laws = [model.models[m] for m in model.metrics]
    T = np.array([law.t for law in laws])  # (m, d)
    logk = np.array([law.log_k for law in laws])
    amp = obj.coef * np.array([law.sign for law in laws])  # objective = const + sum_m amp_m exp(logk_m + x.t_m)
    return T, logk, amp


def optimize_mixture(model: MixtureModel, obj: Objective, bounds: Bounds, prior: np.ndarray, *,
                     starts: np.ndarray, kl_to_prior: float = 0.0, risk: float = 0.0,
                     samples: int = 20000, refine: int = 8, seed: int = 0,
                     region: Polytope | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The feasible mixture minimizing the objective (+ KL pull, + risk x std); returns (x, solver info).

    With ``region`` (``within: hull`` or ``trust:R``), the mixture also lies in that polytope; ``starts``
    are then swarm runs (inside the hull), used where they meet the constraints."""
    if kl_to_prior > 0 and (prior <= 0).any():
        raise ConfigError("kl_to_prior needs a prior with every weight > 0")
    p = prior / prior.sum()
    terms = _loglinear_terms(model, obj)
    if terms is not None:
        T, logk, amp = terms

        def f(x):
            e = np.exp(np.clip(logk + T @ x, -700, 700))
            val, grad = float(amp @ e), (amp * e) @ T
            if kl_to_prior > 0:
                kv, kg = _kl(x, p)
                val, grad = val + kl_to_prior * kv, grad + kl_to_prior * kg
            return val, grad

        convex = bool((amp >= 0).all())
        if region is not None:
            x, used = optimize_in_polytope(f, region, _region_starts(region, starts, p))
            return x, {"method": "simplicial-decomposition", "convex": convex, "iterations": used,
                       "region": region.kind}
        x0s = project(np.vstack([p, starts, np.full(len(p), 1 / len(p))]), bounds.lower, bounds.upper)
        results = [_slsqp(f, x0, bounds, jac=True) for x0 in x0s]
        best = min(results, key=lambda r: r.fun)
        return project(best.x, bounds.lower, bounds.upper)[0], {
            "method": "slsqp-exact" if convex else "slsqp-multistart", "convex": convex,
            "success": bool(best.success), "starts": len(x0s)}

    rng = np.random.default_rng(seed)

    def batch(X):
        v = obj.value(model.predict(X))
        if risk > 0:
            s = obj.std(model.predict_std(X))
            v = v + risk * s if s is not None else v
        if kl_to_prior > 0:
            xs = np.clip(X, 1e-12, None)
            v = v + kl_to_prior * np.sum(xs * np.log(xs / p), axis=1)
        return v

    def value_and_grad(x):
        """Forward differences evaluated in one batched predict: d+1 rows per call instead of d+1 calls."""
        h = 1e-6
        v = batch(np.vstack([x, x + h * np.eye(len(x))]))
        return float(v[0]), (v[1:] - v[0]) / h

    if region is not None:
        cand = np.vstack([region.sample(samples, p, rng), *_region_starts(region, starts, p)])
        vals = batch(cand)
        order = np.argsort(vals)
        x, used = optimize_in_polytope(value_and_grad, region, [cand[i] for i in order[:max(1, refine)]])
        if float(batch(x[None, :])[0]) > vals[order[0]]:
            x = cand[order[0]]
        return x, {"method": "search+simplicial-decomposition", "convex": False, "samples": len(cand),
                   "iterations": used, "region": region.kind}

    cand = np.vstack([sample_feasible(samples, p, bounds, rng),
                      project(np.vstack([p, starts]), bounds.lower, bounds.upper)])
    vals = batch(cand)
    order = np.argsort(vals)
    best_x, best_v = cand[order[0]], float(vals[order[0]])

    for i in order[:refine]:
        r = _slsqp(value_and_grad, cand[i], bounds, jac=True)
        x = project(r.x, bounds.lower, bounds.upper)[0]
        v = float(batch(x[None, :])[0])
        if v < best_v:
            best_x, best_v = x, v
    return best_x, {"method": "search+slsqp", "convex": False, "samples": len(cand), "refined": min(refine, len(cand))}


# ---------------------------------------------------------------- staying inside the swarm

# A proposal farther than this (total variation) from the swarm's convex hull is reported as an
# extrapolation: 0.01 is the rounding tolerance of published mixture files, so anything beyond it is
# a real step outside what the swarm measured.
SUPPORT_SLACK = 0.01


def parse_within(value: str) -> tuple[str, float | None]:
    """``any | box | hull | trust:R`` -> (kind, R)."""
    v = value.strip()
    if v in ("any", "box", "hull"):
        return v, None
    m = re.fullmatch(r"trust:([0-9.eE+-]+)", v)
    if m:
        try:
            r = float(m.group(1))
        except ValueError:
            r = math.nan
        if 0 < r <= 1:
            return "trust", r
    raise ValueError(f"within {value!r}: expected any, box, hull or trust:R with 0 < R <= 1 "
                     "(R: total-variation distance from the best observed run, e.g. trust:0.2)")


def _tv(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Total-variation distance (half the L1 distance): the share of the mixture that differs."""
    return 0.5 * np.abs(np.atleast_2d(A) - x).sum(axis=1)


def hull_distance(x: np.ndarray, X: np.ndarray) -> float:
    """Total-variation distance from ``x`` to the convex hull of the rows of ``X`` (0 inside).

    An LP (scipy's HiGHS): min 1/2 sum(u + v) s.t. X^T lam + u - v = x, sum lam = 1, lam, u, v >= 0."""
    n, d = X.shape
    c = np.concatenate([np.zeros(n), np.full(2 * d, 0.5)])
    A_eq = np.vstack([np.hstack([X.T, np.eye(d), -np.eye(d)]), np.concatenate([np.ones(n), np.zeros(2 * d)])])
    r = optimize.linprog(c, A_eq=A_eq, b_eq=np.concatenate([x, [1.0]]), bounds=(0, None), method="highs")
    return max(float(r.fun), 0.0) if r.status == 0 else math.nan


def support(x: np.ndarray, X: np.ndarray, runs: Sequence[str], domains: Sequence[str]) -> dict[str, Any]:
    """How far ``x`` lies from what the swarm measured: per-domain excess over the observed range,
    total-variation distance to the nearest run (against the swarm's own median nearest-neighbour
    distance, for scale) and to the swarm's convex hull; ``warning`` when beyond ``SUPPORT_SLACK``."""
    from sklearn.neighbors import NearestNeighbors

    lo, hi = X.min(axis=0), X.max(axis=0)
    excess = np.maximum(np.maximum(x - hi, lo - x), 0.0)
    j = int(np.argmax(excess))
    nn = NearestNeighbors(n_neighbors=min(2, len(X)), metric="manhattan").fit(X)
    d_x, i_x = nn.kneighbors(x[None, :], n_neighbors=1)
    scale = float(np.median(nn.kneighbors(X)[0][:, -1]) / 2) if len(X) > 1 else math.nan
    hull = hull_distance(x, X)
    out: dict[str, Any] = {
        "max_excess": float(excess[j]), "max_excess_domain": domains[j],
        "observed_range": {d: [float(lo[k]), float(hi[k])] for k, d in enumerate(domains)},
        "nearest_run": runs[int(i_x[0, 0])], "nearest_run_tv": float(d_x[0, 0] / 2),
        "swarm_median_nearest_tv": scale, "hull_tv": hull, "slack": SUPPORT_SLACK,
        "outside": bool(hull > SUPPORT_SLACK), "warning": None,
    }
    if out["outside"]:
        beyond = (f"; {domains[j]} = {x[j]:.3f} is {excess[j]:.3f} beyond its observed range "
                  f"[{lo[j]:.3f}, {hi[j]:.3f}]" if excess[j] > SUPPORT_SLACK else "")
        out["warning"] = (f"the proposal lies outside the swarm: total-variation distance {hull:.3f} from the swarm's "
                          f"convex hull{beyond}; the prediction there is an extrapolation. Stay inside with "
                          "`within: hull` (--within hull), `box` or `trust:R`, or run a swarm that covers it.")
    return out


@dataclass(frozen=True)
class Polytope:
    """A convex feasible set reached through a linear-minimization oracle: the constraints' bounds
    intersected with the swarm's convex hull (``hull``) or a total-variation ball (``trust``)."""

    kind: str
    bounds: Bounds
    X: np.ndarray                      # the swarm's mixtures (hull)
    center: np.ndarray | None = None   # trust: the ball's centre
    radius: float | None = None

    def _linprog(self, g: np.ndarray) -> np.ndarray | None:
        lo, hi, d = self.bounds.lower, self.bounds.upper, len(self.bounds.lower)
        if self.kind == "hull":
            n = len(self.X)
            rows, rhs = [], []
            for j in range(d):  # only the bounds that can bind: the hull already lies in [0, 1]
                if hi[j] < 1:
                    rows.append(self.X[:, j])
                    rhs.append(hi[j])
                if lo[j] > 0:
                    rows.append(-self.X[:, j])
                    rhs.append(-lo[j])
            if not rows:
                return self.X[int(np.argmin(self.X @ g))]
            r = optimize.linprog(self.X @ g, A_ub=np.array(rows), b_ub=np.array(rhs), A_eq=np.ones((1, n)),
                                 b_eq=[1.0], bounds=(0, None), method="highs")
            return None if r.status != 0 else self.X.T @ r.x
        # trust: variables (x, s) with s >= |x - c|, sum s <= 2R
        c, eye = self.center, np.eye(d)
        A_ub = np.vstack([np.hstack([eye, -eye]), np.hstack([-eye, -eye]),
                          np.concatenate([np.zeros(d), np.ones(d)])[None, :]])
        b_ub = np.concatenate([c, -c, [2 * self.radius]])
        A_eq = np.concatenate([np.ones(d), np.zeros(d)])[None, :]
        r = optimize.linprog(np.concatenate([g, np.zeros(d)]), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0],
                             bounds=[*zip(lo, hi), *[(0, None)] * d], method="highs")
        return None if r.status != 0 else r.x[:d]

    def lmo(self, g: np.ndarray) -> np.ndarray:
        """The feasible point minimizing ``g . x`` (a vertex); ConfigError when the set is empty."""
        v = self._linprog(g)
        if v is None:
            where = ("the swarm's convex hull" if self.kind == "hull"
                     else f"total-variation distance {self.radius:g} of the best observed run")
            raise ConfigError(f"within {self.kind}: no mixture within {where} satisfies the constraints "
                              f"(min/max/fixed weights, repetition cap); loosen them or use a wider `within`")
        return np.clip(v, self.bounds.lower, self.bounds.upper)

    def contains(self, P: np.ndarray) -> np.ndarray:
        """Which rows of ``P`` are inside (bounds, plus the ball for ``trust``; hull points come from the hull)."""
        ok = ((P >= self.bounds.lower - 1e-9) & (P <= self.bounds.upper + 1e-9)).all(axis=1)
        if self.kind == "trust":
            ok &= _tv(P, self.center) <= self.radius + 1e-9
        return ok

    def sample(self, n: int, prior: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Feasible candidates: mixtures of 2-4 runs (hull) or steps from the centre towards feasible
        samples, shortened to the radius (trust); those breaking a bound are dropped."""
        if self.kind == "hull":
            k = rng.integers(2, 5, size=n)
            idx = rng.integers(0, len(self.X), size=(n, 4))
            lam = rng.dirichlet(np.ones(4), size=n) * (np.arange(4) < k[:, None])
            lam /= lam.sum(axis=1, keepdims=True)
            P = np.einsum("nk,nkd->nd", lam, self.X[idx])
        else:
            Y = sample_feasible(n, prior, self.bounds, rng)
            dist = _tv(Y, self.center)
            t = np.minimum(1.0, self.radius / np.maximum(dist, 1e-12)) * rng.uniform(0.2, 1.0, size=n)
            P = self.center + t[:, None] * (Y - self.center)
        return P[self.contains(P)]


def optimize_in_polytope(fg: Callable[[np.ndarray], tuple[float, np.ndarray]], poly: Polytope,
                         starts: Sequence[np.ndarray], iters: int = 200, tol: float = 1e-9) -> tuple[np.ndarray, int]:
    """Minimize ``fg`` (value, gradient) over ``poly`` by simplicial decomposition (Holloway 1974).

    The iterate is a convex combination of vertices found by the oracle; SLSQP solves the small
    problem over those weights, and the vertex minimizing the gradient is added until the
    Frank-Wolfe gap ``g . (x - v)`` closes. Exact for convex objectives on a polytope (finitely
    many vertices); a local method from each start otherwise. Written here because the hull has one
    variable per run: SLSQP over 512 run weights took 2.7 s per start, this takes a few vertices.
    Returns the best point and the number of iterations used."""
    best_x, best_v, used = None, math.inf, 0
    for x0 in starts:
        P, mu = [np.asarray(x0, dtype=np.float64)], np.ones(1)
        for it in range(iters):
            V = np.array(P)

            def master(w, V=V):
                val, g = fg(V.T @ w)
                return val, V @ g

            if len(P) > 1:
                r = optimize.minimize(master, mu, jac=True, method="SLSQP", bounds=[(0, 1)] * len(P),
                                      constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0,
                                                    "jac": lambda w: np.ones_like(w)}],
                                      options={"maxiter": 300, "ftol": 1e-14})
                mu = np.clip(r.x, 0, None) / np.clip(r.x, 0, None).sum()
            x = V.T @ mu
            val, g = fg(x)
            v = poly.lmo(g)
            used += 1
            if g @ (x - v) <= tol * max(1.0, abs(val)):
                break
            keep = mu > 1e-12
            P = [P[i] for i in np.flatnonzero(keep)] + [v]
            mu = np.append(mu[keep], 0.0)
        if val < best_v:
            best_x, best_v = x, val
    return best_x, used


def _region_starts(region: Polytope, starts: np.ndarray, prior: np.ndarray) -> list[np.ndarray]:
    """Feasible starting points inside ``region``: the given runs (and, for a trust region, its centre
    and the prior) where they meet the constraints, else one vertex of the region."""
    cands = np.asarray(starts).reshape(-1, len(prior))
    if region.kind == "trust":
        cands = np.vstack([region.center, cands, prior])
    ok = cands[region.contains(cands)] if len(cands) else cands
    return list(ok) if len(ok) else [region.lmo(np.zeros(len(prior)))]


# ---------------------------------------------------------------- uncertainty and optimism


def uncertainty(x: np.ndarray, predicted: float, model_std: float | None, X: np.ndarray, y_obj: np.ndarray,
                oof_obj: np.ndarray, realization_var: float = 0.0) -> dict[str, Any]:
    """Band and optimism of the predicted objective at ``x`` from out-of-fold errors.

    ``local``: runs nearest to ``x`` (k = max(3, n/10)); their OOF error ``actual - predicted`` says
    how far predictions were off here. ``top``: runs the OOF model ranked best (same k); their error
    is the winner's-curse bias of picking by prediction. Expected optimism is the larger of the two
    (never below 0), and the 95% band combines the local OOF RMSE with the model's std and
    ``realization_var``: the variance of the value to be checked about the fit's level that
    out-of-fold error cannot see (``mixlab verify``: the seed noise of runs at fresh seeds).
    """
    n = len(X)
    k = max(3, math.ceil(n / 10))
    near = np.argsort(np.linalg.norm(X - x, axis=1))[:k]
    top = np.argsort(oof_obj)[:k]
    err = y_obj - oof_obj
    local_bias, top_bias = float(err[near].mean()), float(err[top].mean())
    local_rmse = float(np.sqrt(np.mean(err[near] ** 2)))
    sd = math.sqrt(local_rmse**2 + (model_std or 0.0) ** 2 + realization_var)
    optimism = max(local_bias, top_bias, 0.0)
    return {"predicted": predicted, "std": sd, "band95": [predicted - 1.96 * sd, predicted + 1.96 * sd],
            "model_std": model_std, "oof_rmse_near": local_rmse, "optimism_near": local_bias,
            "optimism_top": top_bias, "expected_optimism": optimism, "expected_realized": predicted + optimism,
            "neighbours": int(k)}


def noise_check(X: np.ndarray, y_obj: np.ndarray, best: int, x: np.ndarray, expected: float) -> dict[str, Any]:
    """Whether the proposal's expected objective beats the best observed run by more than the repeat-seed
    noise predicted at both mixtures (:mod:`mixlab.mixopt.noise`); ``exceeds_noise`` is None without repeats."""
    from mixlab.mixopt.noise import NoiseModel, improvement_check

    nm = NoiseModel.estimate(X, y_obj[:, None], ["objective"])
    if nm is None:
        return {"exceeds_noise": None, "improvement": float(y_obj[best] - expected),
                "note": "no mixture was repeated, so the noise is unknown; add `repeats:` to the swarm config"}
    v = nm.predict_var(np.vstack([X[best], x]))[:, 0]
    return improvement_check(float(y_obj[best]), float(expected), math.sqrt(v[0]), math.sqrt(v[1]))


def objective_weights(metrics: Sequence[str], objective: Mapping[str, MetricObjective]) -> dict[str, float]:
    """Listed metrics take their weight; unlisted ones weigh 0 once any listed weight is > 0, else 1
    (so ``--weight acc=0`` means "everything but acc", and listing one metric means "just that")."""
    listed = {m: o.weight for m, o in objective.items()}
    rest = 0.0 if any(w > 0 for w in listed.values()) else 1.0
    return {**{m: rest for m in metrics}, **listed}


def propose_from_model(model: MixtureModel, X: np.ndarray, Y: np.ndarray, oof: np.ndarray, runs: Sequence[str],
                       prior: np.ndarray, cfg: ProposeConfig, directions: Mapping[str, str],
                       prior_source: str = "priors", reference: np.ndarray | None = None) -> dict[str, Any]:
    """Everything ``proposal.json`` holds: weights by domain, the objective in metric units,
    predictions against the best observed run and the prior, band, optimism, bounds, and the
    proposal's distance from the swarm's support. ``reference``: the metric values the objective is
    z-scored over (default ``Y``; a pooled fit passes every pooled run, ``Y`` only those trainable now)."""
    weights = objective_weights(model.metrics, cfg.objective)
    unknown = [m for m in weights if m not in model.metrics]
    if unknown:
        raise ConfigError(f"objective: unknown metric(s) {unknown}; the fit has {model.metrics}")
    obj = Objective.build(model.metrics, Y if reference is None else reference, weights, directions)
    bounds = feasible_bounds(model.domains, cfg.constraints)
    y_obj, oof_obj = obj.value(Y), obj.value(oof)
    best_obs = int(np.argmin(y_obj))
    kind, radius = parse_within(cfg.within)
    if kind == "box":
        bounds = within_box(bounds, X)
    region = (Polytope(kind, bounds, X, X[best_obs] if kind == "trust" else None, radius)
              if kind in ("hull", "trust") else None)
    starts = X[np.argsort(oof_obj)[:4]]
    x, info = optimize_mixture(model, obj, bounds, prior, starts=starts, kl_to_prior=cfg.kl_to_prior, risk=cfg.risk,
                               samples=cfg.search.samples, refine=cfg.search.refine, seed=cfg.search.seed,
                               region=region)
    pred = model.predict(x[None, :])[0]
    S = model.predict_std(x[None, :])
    obj_pred = float(obj.value(pred[None, :])[0])
    obj_std = obj.std(S)
    unc = uncertainty(x, obj_pred, None if obj_std is None else float(obj_std[0]), X, y_obj, oof_obj)
    noise = noise_check(X, y_obj, best_obs, x, unc["expected_realized"])
    p = prior / prior.sum()
    prior_in = project(p, bounds.lower, bounds.upper)[0]
    at_prior = model.predict(prior_in[None, :])[0]
    at_best = model.predict(X[best_obs][None, :])[0]
    active = [d for j, d in enumerate(model.domains)
              if x[j] >= bounds.upper[j] - 1e-6 and bounds.upper[j] < 1 or x[j] <= bounds.lower[j] + 1e-6 and bounds.lower[j] > 0]
    return {
        "weights": {d: float(v) for d, v in zip(model.domains, x)},
        "regressor": model.regressor,
        "solver": info,
        "within": cfg.within,
        "objective": {**unc, "weights": dict(zip(model.metrics, obj.weights.tolist())),
                      "note": "sum over metrics of weight x (value - swarm mean) / swarm std, negated for metrics "
                              "to maximize: lower is better; 1 unit = 1 swarm std of a weight-1 metric"},
        "metrics": {m: {"weight": float(obj.weights[j]), "direction": directions[m],
                        "predicted": float(pred[j]), "std": None if S is None else float(S[0, j]),
                        "swarm_mean": float(obj.means[j]), "swarm_std": float(obj.stds[j]),
                        "best_observed": float(Y[best_obs, j]), "best_observed_predicted": float(at_best[j]),
                        "prior_predicted": float(at_prior[j]),
                        "swarm_best": float(Y[:, j].min() if directions[m] == "min" else Y[:, j].max())}
                    for j, m in enumerate(model.metrics)},
        "best_observed": {"run": runs[best_obs], "objective": float(y_obj[best_obs]),
                          "predicted_objective": float(obj.value(at_best[None, :])[0]),
                          "weights": {d: float(v) for d, v in zip(model.domains, X[best_obs])}},
        "prior": {"weights": {d: float(v) for d, v in zip(model.domains, p)}, "source": prior_source,
                  "predicted_objective": float(obj.value(at_prior[None, :])[0])},
        "support": support(x, X, runs, model.domains),
        "noise": noise,
        "bounds": {d: [float(bounds.lower[j]), float(bounds.upper[j]), bounds.why_upper[j]]
                   for j, d in enumerate(model.domains)},
        "active_constraints": active,
        "kl_to_prior": cfg.kl_to_prior,
        "risk": cfg.risk,
    }


# ---------------------------------------------------------------- fine-tuning mode


def pareto_front(gain: np.ndarray, forgetting: np.ndarray) -> np.ndarray:
    """Indices of non-dominated points (more gain, less forgetting), by increasing forgetting.

    Sorting by forgetting (ties: more gain first) and keeping each point that beats the best gain
    seen so far is exact in O(n log n); of identical points only the first is kept.
    """
    order = np.lexsort((-gain, forgetting))
    front, best = [], -np.inf
    for i in order:
        if gain[i] > best:
            front.append(int(i))
            best = gain[i]
    return np.array(front, dtype=int)


def best_under_bound(gain: np.ndarray, forgetting: np.ndarray, bound: float) -> int | None:
    """Row with the most gain among those with forgetting <= bound (ties: less forgetting)."""
    ok = np.flatnonzero(forgetting <= bound)
    if len(ok) == 0:
        return None
    return int(ok[np.lexsort((forgetting[ok], -gain[ok]))[0]])


def _sample_knobs(n: int, n_mix: int, lows: np.ndarray, highs: np.ndarray, observed: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    parts = []
    if n_mix:
        mix = np.vstack([rng.dirichlet(np.ones(n_mix), size=n - n // 2),
                         rng.dirichlet(np.maximum(observed[:, :n_mix].mean(axis=0) * 2 * n_mix, 0.05), size=n // 2)])
        parts.append(mix)
    if len(lows):
        parts.append(rng.uniform(lows, highs, size=(n, len(lows))))
    return np.hstack(parts)


def finetune_proposal(runs: Sequence[str], knobs: np.ndarray, gain: np.ndarray, forgetting: np.ndarray,
                      cfg: FinetuneConfig) -> dict[str, Any]:
    """Max gain s.t. forgetting <= bound, among observed runs and (with a regressor) over the knob space."""
    from mixlab.mixopt.regressors import make_regressor

    names = [*cfg.mixture, *cfg.scalars]
    front = pareto_front(gain, forgetting)
    best = best_under_bound(gain, forgetting, cfg.max_forgetting)
    if best is None:
        i = int(np.argmin(forgetting))
        raise MixlabError(f"{cfg.results}: no run has {cfg.forgetting} <= {cfg.max_forgetting:g}; the lowest is "
                          f"{forgetting[i]:.4g} (run {runs[i]!r}). Raise max_forgetting or add runs with more replay.")
    point = lambda i: {"run": runs[i], "gain": float(gain[i]), "forgetting": float(forgetting[i]),  # noqa: E731
                       "knobs": dict(zip(names, map(float, knobs[i])))}
    out: dict[str, Any] = {
        "max_forgetting": cfg.max_forgetting,
        "observed": {"best": point(best), "pareto_front": [point(i) for i in front]},
    }
    if cfg.regressor is None:
        return out
    rng = np.random.default_rng(cfg.seed)
    g_model = make_regressor(cfg.regressor, cfg.seed).fit(knobs, gain)
    f_model = make_regressor(cfg.regressor, cfg.seed).fit(knobs, forgetting)
    lows = np.array([lo for lo, _ in cfg.scalars.values()])
    highs = np.array([hi for _, hi in cfg.scalars.values()])
    cand = np.vstack([knobs, _sample_knobs(cfg.samples, len(cfg.mixture), lows, highs, knobs, rng)])
    g, f = g_model.predict(cand), f_model.predict(cand)
    f_sd = f_model.predict_std(cand)
    f_risk = f + cfg.risk * f_sd if f_sd is not None else f
    j = best_under_bound(g, f_risk, cfg.max_forgetting)
    pf = pareto_front(g, f_risk)
    step = max(1, len(pf) // 50)
    pred_point = lambda i: {"gain": float(g[i]), "forgetting": float(f[i]),  # noqa: E731
                            "knobs": dict(zip(names, map(float, cand[i])))}
    out["model"] = {
        "regressor": cfg.regressor, "risk": cfg.risk,
        "best": None if j is None else {**pred_point(j), "forgetting_std": None if f_sd is None else float(f_sd[j])},
        "pareto_front": [pred_point(i) for i in pf[::step]],
    }
    return out
