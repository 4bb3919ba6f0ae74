"""Swarms: many small proxy runs on random mixtures, the data every mixture regressor is fitted on.

>>> from mixlab.mixopt import swarm
>>> swarm.generate(swarm.load_swarm_config("configs/mixopt/swarm_toyworld.yaml"), "runs/swarm")
>>> swarm.run("runs/swarm")                  # train every variant, then evaluate them (resumable)
>>> swarm.collect("runs/swarm")              # ratios.csv + metrics.csv in olmix's layout

``generate`` reads the base pretraining config's sources, takes the priors from their token counts
(or the config's ``priors``) and samples variants from a Dirichlet around them
(``concentration`` x prior as pseudo-counts; ``sparsity`` leaves domains out; ``min_weight`` floors
the others). Every variant respects the repetition cap of the sampler that will train it
(``weight x trained tokens <= max_epochs x available tokens``, computed in whole sequences), so no
variant is silently renormalized at training time. A swarm directory holds::

    DIR/swarm.yaml               the swarm config (written last: its presence means "generated")
    DIR/base.yaml                the resolved base pretraining config
    DIR/priors.json              priors, source tokens, caps, budget
    DIR/requested_ratios.csv     the sampled mixtures (olmix layout)
    DIR/variants/vNNN.yaml       runnable pretraining configs (`mixlab pretrain DIR/variants/v003.yaml --out ...`)
    DIR/runs/vNNN/               the training runs (`swarm run`)
    DIR/sweep/                   the evaluation sweep's results store (`swarm run`)
    DIR/ratios.csv, metrics.csv  realized mixtures and final metrics (`swarm collect`)

``run`` hands the training jobs and then the evaluation workers to a launcher
(:mod:`mixlab.runs.launch`: local, Ray or Slurm): finished variants are skipped, a killed one
resumes from its last checkpoint, and the sweep evaluates only what its store lacks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from mixlab import atomic
from mixlab.config import StrictModel, apply_overrides, config_hash, dump_yaml, load_config, read_yaml, validate
from mixlab.errors import ConfigError, DataError, MixlabError
from mixlab.mixopt import io
from mixlab.mixopt.hierarchy import Hierarchy, flatten_nested
from mixlab.mixopt.fit import previous_mixture
from mixlab.mixopt.reuse import REUSE_FILE, ReuseConfig, plan_reuse
from mixlab.runs.launch import Job, JobResult, LaunchConfig, launcher_for, raise_failures, resources

SWARM_FILE = "swarm.yaml"
PRIOR_TOLERANCE = 1e-3

# ---------------------------------------------------------------- config


class SamplingConfig(StrictModel):
    """Dirichlet around the priors: pseudo-counts ``concentration x prior`` (larger = closer to the
    priors); each domain is left out of a variant with probability ``sparsity``; the domains kept
    get at least ``min_weight``."""

    concentration: float = Field(10.0, gt=0)
    min_weight: float = Field(0.0, ge=0, lt=1)
    sparsity: float = Field(0.0, ge=0, lt=1)
    include_natural: bool = Field(True, description="variant v000 is the (capped) priors themselves")
    within_concentration: float | None = Field(
        None, gt=0, description="hierarchical sources (leaves named group/child): Dirichlet pseudo-counts of the split "
                                "inside each group around the priors' split; null: every variant keeps the priors' split")


class SwarmEval(StrictModel):
    """What `swarm run` evaluates each variant's last checkpoint on (besides in-loop bits-per-byte)."""

    suites: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(None, ge=1)


class RepeatsConfig(StrictModel):
    """Seed repeats of a few far-apart anchor mixtures: the swarm's own measure of its noise, which
    ``fit`` turns into per-mixture weights (:mod:`mixlab.mixopt.noise`)."""

    anchors: int = Field(3, ge=1, description="variants repeated: v000 (the priors when include_natural) and then "
                                              "the variant farthest (total variation) from those chosen")
    k: int = Field(3, ge=2, description="runs per anchor, the original included; repeat r trains with seed base.seed + r")


class SwarmConfig(StrictModel):
    """``mixlab swarm generate CONFIG --out DIR``."""

    kind: Literal["swarm"] = "swarm"
    name: str
    base: str = Field(description="pretraining config every variant starts from (path from the working directory)")
    set: list[str] = Field(default_factory=list, description="overrides of the base, e.g. ['duration.tokens=32768']")
    variants: int = Field(ge=1)
    seed: int = 0
    priors: dict[str, float] | Literal["natural"] = Field(
        "natural", description="domain -> weight summing to 1; `natural`: each source's share of the tokens")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    reuse: ReuseConfig | None = Field(None, description="freeze the unchanged domains of a previous proposal as one "
                                                        "virtual domain and sample only it and the added/changed ones")
    repeats: RepeatsConfig | None = Field(None, description="seed repeats of anchor mixtures (noise model); "
                                                            "adds anchors x (k - 1) runs named vNNNrR")
    eval: SwarmEval = Field(default_factory=SwarmEval)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)

    @model_validator(mode="before")
    @classmethod
    def _nested_priors(cls, data: Any) -> Any:
        """Priors may be nested like olmix's mix (groups with a `weight` and children): flattened to leaf paths."""
        if isinstance(data, dict) and isinstance(data.get("priors"), dict):
            data = {**data, "priors": flatten_nested(data["priors"], "priors")}
        return data

    @model_validator(mode="after")
    def _check(self) -> SwarmConfig:
        if isinstance(self.priors, dict):
            if any(v < 0 for v in self.priors.values()):
                raise ValueError("priors must be non-negative")
            total = sum(self.priors.values())
            if abs(total - 1) > PRIOR_TOLERANCE:
                raise ValueError(f"priors sum to {total:.6g}, not 1; fix the weights (or use `priors: natural`)")
        return self


def load_swarm_config(path: str | Path, overrides: Sequence[str] = ()) -> SwarmConfig:
    """Read and validate a swarm config (errors name file, line and field)."""
    return load_config(path, SwarmConfig, overrides)


def load_base(cfg: SwarmConfig) -> Any:
    """The base pretraining config with the swarm's ``set`` overrides applied."""
    from mixlab.train.pretrain import PretrainConfig

    data, lines = read_yaml(cfg.base)
    return validate(PretrainConfig, apply_overrides(data, cfg.set), cfg.base, lines)


# ---------------------------------------------------------------- priors and bounds


@dataclass
class SwarmPlan:
    """What the sampler of every variant will see: priors, per-domain caps, the budget."""

    domains: list[str]
    priors: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    source_tokens: dict[str, int]
    tokens_trained: int
    max_epochs: float

    def as_json(self) -> dict[str, Any]:
        return {"domains": self.domains, "priors": dict(zip(self.domains, self.priors.tolist())),
                "min_weight": dict(zip(self.domains, self.lower.tolist())),
                "max_weight": dict(zip(self.domains, self.upper.tolist())),
                "source_tokens": self.source_tokens, "tokens_trained": self.tokens_trained,
                "max_epochs": self.max_epochs}


def plan(cfg: SwarmConfig, base: Any, status: Callable[[str], None] | None = None) -> SwarmPlan:
    """Tokenize the base config's sources once: priors from token counts, caps from the sampler's rules."""
    from mixlab.mixopt.propose import ConstraintsConfig, RepetitionConfig, feasible_bounds
    from mixlab.train.pretrain import prepare

    domains = list(base.data.sources)
    if isinstance(cfg.priors, dict):
        missing = [d for d in domains if d not in cfg.priors]
        unknown = [d for d in cfg.priors if d not in domains]
        if missing or unknown:
            raise ConfigError(f"field `priors`: {'domain(s) ' + str(missing) + ' of the base config are missing' if missing else ''}"
                              f"{'; ' if missing and unknown else ''}"
                              f"{'unknown domain(s) ' + str(unknown) if unknown else ''}; the base config's sources are "
                              f"{domains}: give every one a prior (0 if unused), or use `priors: natural`")
    prep = prepare(base, status=status)
    p = prep.plan
    seq_len = base.train.seq_len
    total_seq = p.steps * base.train.batch_size
    max_epochs = base.data.max_epochs
    # the sampler allows floor(max_epochs x available sequences) sequences of a source
    allowed = {d: math.floor(max_epochs * p.allocation.available[d]) for d in domains}
    rep = RepetitionConfig(target_tokens=total_seq * seq_len, max_epochs=max_epochs,
                           available_tokens={d: allowed[d] * seq_len / max_epochs for d in domains})
    bounds = feasible_bounds(domains, ConstraintsConfig(min_weight=cfg.sampling.min_weight, repetition=rep))
    prior = np.array([(cfg.priors if isinstance(cfg.priors, dict) else p.priors)[d] for d in domains], dtype=np.float64)
    return SwarmPlan(domains, prior / prior.sum(), bounds.lower, bounds.upper, dict(p.source_tokens),
                     total_seq * seq_len, max_epochs)


def sample_mixtures(plan: SwarmPlan, s: SamplingConfig, n: int, seed: int) -> np.ndarray:
    """``n`` mixtures inside the plan's bounds, drawn from a Dirichlet around the priors."""
    rng = np.random.default_rng(seed)
    # a flat swarm is the hierarchy whose groups are single domains (same draws, one sampler)
    return _sample_hierarchical(plan, Hierarchy.from_leaves(plan.domains, plan.priors), s, n, rng)


def _sample_hierarchical(plan: SwarmPlan, h: Hierarchy, s: SamplingConfig, n: int,
                         rng: np.random.Generator) -> np.ndarray:
    """Group weights from a Dirichlet around the groups' priors (``sparsity`` leaves whole groups
    out); each group's weight split over its leaves around the priors' split
    (``within_concentration``, or exactly the priors' split), then projected onto the leaves' bounds."""
    from mixlab.mixopt.propose import project

    gp = h.aggregate(plan.priors)[0]
    idx = [[plan.domains.index(k) for k in kids] for kids in h.groups.values()]
    out = [project(plan.priors, plan.lower, plan.upper)[0]] if s.include_natural else []
    while len(out) < n:
        for _attempt in range(1000):
            keep_g = rng.random(len(gp)) >= s.sparsity
            keep = np.zeros(len(plan.domains), dtype=bool)
            for kg, ix in zip(keep_g, idx):
                keep[ix] = kg
            lo, hi = plan.lower * keep, plan.upper * keep
            if keep.any() and hi.sum() >= 1 - 1e-9 and lo.sum() <= 1 + 1e-9:
                break
        else:
            raise ConfigError(f"sampling.sparsity = {s.sparsity:g} leaves too few domains (or groups) to fill a mixture under "
                              "the repetition caps; lower sparsity")
        g = np.zeros(len(gp))
        g[keep_g] = rng.dirichlet(np.maximum(s.concentration * gp[keep_g] / gp[keep_g].sum(), 1e-3))
        x = np.zeros(len(plan.domains))
        for gi, (name, ix) in enumerate(zip(h.names, idx)):
            share = np.array([h.split[name][plan.domains[j]] for j in ix])
            if s.within_concentration and len(ix) > 1:
                share = rng.dirichlet(np.maximum(s.within_concentration * share, 1e-3))
            x[ix] = g[gi] * share
        out.append(project(x, lo, hi)[0])
    return np.vstack(out)


def _sample_reuse(cfg: SwarmConfig, sp: SwarmPlan) -> tuple[np.ndarray, dict[str, Any]]:
    """Variants over the virtual domain and the free ones, expanded to leaves (the frozen split kept)."""
    prev, source = previous_mixture(cfg.reuse.previous)
    r = plan_reuse(prev, source, sp.domains, cfg.reuse.changed)
    h = r.hierarchy()
    share = h.expand(np.eye(len(h.names)))  # row g: group g's split over the leaves
    upper = np.array([min(sp.upper[j] / share[g, j] for j in np.flatnonzero(share[g] > 0)) for g in range(len(h.names))])
    virtual = SwarmPlan(h.names, h.aggregate(sp.priors)[0], np.full(len(h.names), cfg.sampling.min_weight),
                        np.minimum(upper, 1.0), {}, sp.tokens_trained, sp.max_epochs)
    flat = cfg.sampling.model_copy(update={"within_concentration": None})
    V = sample_mixtures(virtual, flat, cfg.variants, cfg.seed)
    return h.expand(V), r.as_json()


# ---------------------------------------------------------------- generate


def _identity(cfg: SwarmConfig) -> str:
    """The hash of what the swarm is (where it runs, ``launch``, is not part of it)."""
    return config_hash(cfg.model_dump(mode="json", exclude={"launch"}))


def variant_names(n: int) -> list[str]:
    return [f"v{i:03d}" for i in range(n)]


def generate(cfg: SwarmConfig, out: str | Path, status: Callable[[str], None] | None = None) -> Path:
    """Write the swarm directory: priors, requested ratios, one runnable pretraining config per variant.

    Re-running with the same config is a no-op; a directory holding another swarm is an error.
    """
    from mixlab.runs.sweep import _suite_task_names
    from mixlab.eval.tasks import resolve_tasks

    out = Path(out)
    existing = out / SWARM_FILE
    if existing.is_file():
        have, want = _identity(load_swarm_config(existing)), _identity(cfg)
        if have != want:
            raise MixlabError(f"{out} holds another swarm (config hash {have} != {want}); use a new --out directory")
        return out
    if cfg.eval.suites or cfg.eval.tasks:  # unknown tasks fail now, not after training
        resolve_tasks(tasks=[*_suite_task_names(cfg.eval.suites), *cfg.eval.tasks])
    base = load_base(cfg)
    sp = plan(cfg, base, status)
    if cfg.reuse is not None:
        W, reuse = _sample_reuse(cfg, sp)
        atomic.write_json(out / REUSE_FILE, reuse)
    else:
        W = sample_mixtures(sp, cfg.sampling, cfg.variants, cfg.seed)
    names = variant_names(cfg.variants)
    for name, w in zip(names, W):
        write_variant(out, name, base, dict(zip(sp.domains, w)), f"swarm {cfg.name}, variant {name}")
    if cfg.repeats is not None:
        W, names = _add_repeats(out, cfg, base, sp.domains, W, names)
    io.write_ratios(out / "requested_ratios.csv", names, [f"{cfg.name}-{n}" for n in names], sp.domains, W)
    atomic.write_json(out / "priors.json", sp.as_json())
    atomic.write_text(out / "base.yaml", dump_yaml(base))
    atomic.write_text(existing, dump_yaml(cfg))
    return out


def write_variant(dir: str | Path, name: str, base: Any, mixture: Mapping[str, float], what: str,
                  seed: int | None = None) -> Path:
    """Write ``DIR/variants/NAME.yaml``: the base pretraining config on ``mixture`` (and ``seed``), runnable
    on its own; swarms and verify rounds (:mod:`mixlab.mixopt.verify`) train exactly these files."""
    update: dict[str, Any] = {"data": base.data.model_copy(update={"mixture": {d: float(x) for d, x in mixture.items()}})}
    if seed is not None:
        update["seed"] = seed
    path = Path(dir) / "variants" / f"{name}.yaml"
    return atomic.write_text(path, f"# {what}: mixlab pretrain {path} --out RUN_DIR\n" + dump_yaml(base.model_copy(update=update)))


def _add_repeats(out: Path, cfg: SwarmConfig, base: Any, domains: Sequence[str], W: np.ndarray,
                 names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Repeat the anchors (farthest-point over the variants, from v000) ``k - 1`` times with other seeds."""
    from mixlab.mixopt.noise import farthest_point

    rep = cfg.repeats
    anchors = farthest_point(W, rep.anchors, first=0)
    rows, extra = [], []
    for a in anchors:
        for r in range(1, rep.k):
            name = f"{names[a]}r{r}"
            write_variant(out, name, base, dict(zip(domains, W[a])), f"swarm {cfg.name}, repeat {r} of {names[a]}",
                          seed=base.seed + r)
            rows.append(W[a])
            extra.append(name)
    return np.vstack([W, *rows]) if rows else W, names + extra


def load_swarm(dir: str | Path) -> tuple[SwarmConfig, list[str]]:
    """A generated swarm directory's config and variant names (repeats included, as generated)."""
    d = Path(dir)
    if not (d / SWARM_FILE).is_file():
        raise MixlabError(f"{d} is not a swarm directory (no {SWARM_FILE}); create it with "
                          "`mixlab swarm generate CONFIG --out DIR`")
    cfg = load_swarm_config(d / SWARM_FILE)
    requested = d / "requested_ratios.csv"
    if requested.is_file():
        return cfg, io.read_table(requested, "ratios").runs
    return cfg, variant_names(cfg.variants)


# ---------------------------------------------------------------- run


def train_variant(config_path: str, run_dir: str) -> dict[str, Any]:
    """A job: train (or resume, or skip when finished) one variant; returns its summary."""
    from mixlab.train.pretrain import load_pretrain_config, pretrain

    r = pretrain(load_pretrain_config(config_path), run_dir)
    return {"run_dir": str(r.run_dir), "steps": r.steps, "skipped": r.skipped, "metrics": r.metrics}


def sweep_config(dir: str | Path, cfg: SwarmConfig, names: Sequence[str], workers: int = 1) -> Any:
    """The evaluation sweep of the swarm: every variant's last checkpoint on the swarm's tasks."""
    from mixlab.runs.sweep import CheckpointSelect, RunEntry, SweepConfig

    d = Path(dir).resolve()
    return SweepConfig(name=f"swarm-{cfg.name}", out=str(d / "sweep"),
                       runs=[RunEntry(path=str(d / "runs" / n), name=n) for n in names],
                       checkpoints=CheckpointSelect(last=True), suites=cfg.eval.suites, tasks=cfg.eval.tasks,
                       limit=cfg.eval.limit, batch_size=cfg.eval.batch_size, max_length=cfg.eval.max_length,
                       workers=workers)


@dataclass
class RunReport:
    trained: list[str] = field(default_factory=list)
    already_trained: list[str] = field(default_factory=list)
    evaluated: int = 0
    eval_reused: int = 0


def is_trained(dir: str | Path, name: str) -> bool:
    meta = Path(dir) / "runs" / name / "meta.json"
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("status") == "complete"
    except (OSError, ValueError):
        return False


def run(dir: str | Path, launch: LaunchConfig | None = None, on_done: Callable[[JobResult], None] | None = None) -> RunReport:
    """Train every variant not yet trained, then evaluate them all (one chain of two stages on the
    launcher: train jobs, then evaluation workers). Resumable: run it again after any interruption."""
    d = Path(dir).resolve()
    cfg, names = load_swarm(d)
    return run_variants(d, cfg, names, launch or cfg.launch, on_done)


def run_variants(d: Path, cfg: SwarmConfig, names: Sequence[str], launch: LaunchConfig,
                 on_done: Callable[[JobResult], None] | None = None) -> RunReport:
    """Train ``d/variants/NAME.yaml`` into ``d/runs/NAME`` where not yet trained, then evaluate every
    named run on the swarm's tasks through the sweep in ``d/sweep`` (shared by :func:`run` and verify rounds)."""
    todo = [n for n in names if not is_trained(d, n)]
    report = RunReport(trained=todo, already_trained=[n for n in names if n not in todo])
    train = [Job(f"train-{n}", train_variant, (str(d / "variants" / f"{n}.yaml"), str(d / "runs" / n)),
                 resources=resources(launch)) for n in todo]
    stages = [train] if train else []
    evaluate = bool(cfg.eval.suites or cfg.eval.tasks)
    if evaluate:
        from mixlab.runs.sweep import sweep_jobs

        stages.append(sweep_jobs(sweep_config(d, cfg, names, launch.workers), launch))
    if not stages:
        return report
    launcher = launcher_for(launch, str(d / "slurm"))
    launcher.check([j for s in stages for j in s])
    results = launcher.run_stages(stages, on_done)
    for stage, what in zip(results, (["training jobs"] if train else []) + (["evaluation workers"] if evaluate else [])):
        raise_failures(stage, what)
    if evaluate:
        for r in results[-1]:
            report.evaluated += len(r.value.computed)
            report.eval_reused += len(r.value.reused)
    return report


# ---------------------------------------------------------------- collect


@dataclass
class Collected:
    ratios: Path
    metrics: Path
    runs: list[str]
    metric_names: list[str]
    skipped: dict[str, str]


def final_metrics(dir: Path, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per variant: in-loop held-out bits-per-byte of the last step, plus the sweep's results of its
    last checkpoint as ``<task>/<metric>``."""
    out: dict[str, dict[str, float]] = {}
    for n in names:
        meta = json.loads((dir / "runs" / n / "meta.json").read_text(encoding="utf-8"))
        out[n] = {k: float(v) for k, v in (meta.get("final_metrics") or {}).items()
                  if k.startswith("bpb/") and isinstance(v, (int, float))}
    store_path = dir / "sweep" / "store.sqlite"
    if store_path.is_file():
        from mixlab.runs.store import Store

        with Store(store_path) as store:
            rows = store.results(run=list(names))
        last: dict[str, int] = {}
        for r in rows:
            last[r.run] = max(last.get(r.run, -1), r.step)
        for r in rows:
            if r.step == last[r.run] and math.isfinite(r.value):
                out[r.run][f"{r.task}/{r.metric}"] = r.value
    return out


def collect(dir: str | Path, metrics: Sequence[str] | None = None) -> Collected:
    """Write ``ratios.csv`` (realized mixtures) and ``metrics.csv`` in olmix's layout.

    A variant that is not trained, or lacks one of the metric columns, is left out and named in
    ``skipped``; ``metrics`` picks columns (default: every column all kept variants have).
    """
    d = Path(dir)
    cfg, names = load_swarm(d)
    domains = json.loads((d / "priors.json").read_text(encoding="utf-8"))["domains"]
    skipped = {n: "not trained (run `mixlab swarm run`)" for n in names if not is_trained(d, n)}
    trained = [n for n in names if n not in skipped]
    if not trained:
        raise MixlabError(f"{d}: no variant is trained yet; run `mixlab swarm run {d}` first")
    values = final_metrics(d, trained)
    if metrics:
        unknown = [m for m in metrics if not any(m in v for v in values.values())]
        if unknown:
            have = sorted({k for v in values.values() for k in v})
            raise MixlabError(f"metric(s) {unknown} appear in no variant's results; available: {have}")
        cols = list(metrics)
    else:
        counts: dict[str, int] = {}
        for v in values.values():
            for k in v:
                counts[k] = counts.get(k, 0) + 1
        most = max(counts.values(), default=0)
        cols = sorted(k for k, c in counts.items() if c == most)  # columns the best-covered variants share
    keep = []
    for n in trained:
        lacking = [c for c in cols if c not in values[n]]
        if lacking:
            skipped[n] = f"no result for {lacking[:3]}{' ...' if len(lacking) > 3 else ''} (evaluation unfinished?)"
        else:
            keep.append(n)
    if not keep:
        raise MixlabError(f"{d}: no variant has every metric column {cols}; finish `mixlab swarm run {d}`")
    realized = []
    for n in keep:
        mix = json.loads((d / "runs" / n / "meta.json").read_text(encoding="utf-8"))["mixture"]["realized"]
        realized.append([float(mix.get(dm, 0.0)) for dm in domains])
    index = [names.index(n) for n in keep]
    labels = [f"{cfg.name}-{n}" for n in keep]
    r = io.write_ratios(d / "ratios.csv", keep, labels, domains, np.asarray(realized), index)
    m = io.write_metrics(d / "metrics.csv", keep, labels, cols, np.array([[values[n][c] for c in cols] for n in keep]), index)
    return Collected(r, m, keep, cols, skipped)


def read_priors(dir: str | Path) -> Mapping[str, float]:
    """The swarm's priors (for ``mixlab fit``'s ``priors:``), read as ``fit`` reads any priors file."""
    from mixlab.mixopt.fit import read_priors_file  # lazy: fit pulls in the regressors and propose

    p = Path(dir) / "priors.json"
    if not p.is_file():
        raise DataError("no priors.json; is this a swarm directory?", p)
    return read_priors_file(p)
