"""``mixlab data build``: from a data config to a written, verified mixture.

The stages are: load each dataset through its adapter -> split by hash (duplicates grouped) ->
optionally drop training items that overlap test or benchmark items -> balance datasets inside
each domain -> mix domains by ratio -> add replay -> shuffle -> check contamination of the result ->
write everything into a temporary directory that is renamed into place only when complete.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mixlab.config import StrictModel, config_dict, config_hash
from mixlab.data import contamination, mix
from mixlab.data.records import Record, make_id, read_records
from mixlab.data.sources import available, load_records
from mixlab.data.split import split_records
from mixlab.errors import DataError

# ---------------------------------------------------------------- config


class DatasetRef(StrictModel):
    """A dataset inside a domain: its weight within the domain, and where to read it from."""

    weight: float = Field(1.0, ge=0, description="Relative weight inside the domain (balanced to these proportions).")
    path: str | None = Field(None, description="Folder or file to read instead of <data_dir>/<dataset folder>.")
    hub: bool = Field(False, description="Load from the Hugging Face hub with `datasets` (needs internet).")
    format: Literal["adapter", "records"] = Field(
        "adapter", description="`adapter`: the registered reader of this dataset; `records`: `path` is a mixlab records JSONL file (your own data)."
    )

    @model_validator(mode="after")
    def _records_need_path(self) -> "DatasetRef":
        if self.format == "records" and not self.path:
            raise ValueError("format 'records' needs `path:` (a mixlab records JSONL file)")
        return self


def _check_dataset_name(name: str) -> str:
    known = available()
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown dataset {name!r}; {hint}known datasets: {', '.join(known)}")
    return name


class DomainConfig(StrictModel):
    ratio: float = Field(..., ge=0, description="Relative share of this domain in the training mixture.")
    datasets: dict[str, float | DatasetRef] = Field(..., description="Dataset name -> weight (or a full dataset spec).")

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: dict[str, float | DatasetRef]) -> dict[str, DatasetRef]:
        if not v:
            raise ValueError("a domain needs at least one dataset")
        out = {}
        for name, ref in v.items():
            out[name] = DatasetRef(weight=ref) if isinstance(ref, (int, float)) else ref
            if out[name].format == "adapter":
                _check_dataset_name(name)
            if out[name].weight < 0:
                raise ValueError(f"weight of {name!r} must be >= 0")
        if sum(r.weight for r in out.values()) <= 0:
            raise ValueError("dataset weights sum to zero; give at least one a positive weight")
        return out


class SplitConfig(StrictModel):
    mode: Literal["hash", "official"] = Field("hash", description="`hash`: split by a hash of (dataset, id, seed); `official`: the published split.")
    train: float = Field(5, gt=0, description="Train share of train:test (default 5:1).")
    test: float = Field(1, gt=0, description="Test share of train:test.")
    group_ngram: int = Field(13, ge=0, description="Questions sharing a word n-gram of this length are kept on one side (0: exact duplicates only).")

    @property
    def test_fraction(self) -> float:
        return self.test / (self.train + self.test)


class MixConfig(StrictModel):
    mode: Literal["exact", "total"] = Field("exact", description="`exact`: largest mixture meeting the ratios exactly; `total`: a fixed size, upsampling as needed.")
    total: int | None = Field(None, gt=0, description="Training mixture size when mode is `total`.")
    balance: Literal["downsample", "upsample", "natural"] = Field("downsample", description="How datasets are balanced inside a domain.")
    sample_ratio: float = Field(1.0, gt=0, le=1, description="Keep this fraction of the mixture (ratios unchanged).")

    @model_validator(mode="after")
    def _total(self) -> "MixConfig":
        if self.mode == "total" and self.total is None:
            raise ValueError("mode 'total' needs `total:` (the number of training records)")
        return self


class ReplayConfig(StrictModel):
    dataset: str = Field(..., description="General-data source mixed into training (its train side only).")
    fraction: float = Field(..., ge=0, lt=1, description="Fraction of the final training mixture that is replay.")
    path: str | None = None

    @field_validator("dataset")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_dataset_name(v)


class ContaminationConfig(StrictModel):
    benchmarks: list[str] = Field(default_factory=list, description="Evaluation datasets to check the training mixture against (besides every test file).")
    ngram: int = Field(13, ge=3, description="Word n-gram length for the n-gram overlap check.")
    action: Literal["report", "fail", "drop"] = Field("report", description="`report`; `fail` the build on any overlap; `drop` overlapping training items before mixing.")

    @field_validator("benchmarks")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return [_check_dataset_name(n) for n in v]


class DataConfig(StrictModel):
    """A fine-tuning data mixture: which datasets, how they are split, balanced and mixed."""

    name: str | None = None
    seed: int = Field(0, description="Seed of every random choice (split, balance, sampling, shuffle).")
    data_dir: str | None = Field(None, description="Root of the local datasets (default: $MIXLAB_DATA_DIR).")
    split: SplitConfig = Field(default_factory=SplitConfig)
    domains: dict[str, DomainConfig]
    mix: MixConfig = Field(default_factory=MixConfig)
    replay: ReplayConfig | None = None
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: dict[str, DomainConfig]) -> dict[str, DomainConfig]:
        if not v:
            raise ValueError("at least one domain is required")
        if sum(d.ratio for d in v.values()) <= 0:
            raise ValueError("domain ratios sum to zero; give at least one domain a positive ratio")
        seen: dict[str, str] = {}
        for dname, d in v.items():
            for ds in d.datasets:
                if ds in seen:
                    raise ValueError(f"dataset {ds!r} appears in both {seen[ds]!r} and {dname!r}")
                seen[ds] = dname
        return v


# ---------------------------------------------------------------- result


@dataclass
class BuildResult:
    config: DataConfig
    train: list[Record]
    test: dict[str, list[Record]]
    info: dict[str, Any] = field(default_factory=dict)


def _ratios(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: (v / total if total else 0.0) for k, v in sorted(counts.items())}


def _load(cfg: DataConfig, name: str, ref: DatasetRef | ReplayConfig, domain: str | None) -> list[Record]:
    if getattr(ref, "format", "adapter") == "records":
        records = [r if r.dataset == name else replace(r, dataset=name, id=make_id(name, r.original_id))
                   for r in read_records(ref.path)]
        if not records:
            raise DataError("records file is empty", ref.path)
    else:
        records = load_records(name, data_dir=cfg.data_dir, path=ref.path, hub=getattr(ref, "hub", False))
    if domain is not None:
        records = [r if r.domain == domain else replace(r, domain=domain) for r in records]
    return records


def build_mixture(cfg: DataConfig, progress: Any = None) -> BuildResult:
    """Build the training mixture and test sets described by ``cfg`` (in memory; see :func:`write_build`)."""
    step = progress or (lambda msg: None)
    seed = cfg.seed
    owner = {ds: dom for dom, d in cfg.domains.items() for ds in d.datasets}

    all_records: list[Record] = []
    for dom, d in cfg.domains.items():
        for ds, ref in d.datasets.items():
            step(f"load {ds}")
            all_records.extend(_load(cfg, ds, ref, dom))
    step("split")
    split = split_records(all_records, cfg.split.test_fraction, seed, cfg.split.mode, cfg.split.group_ngram)
    test: dict[str, list[Record]] = {ds: [] for ds in owner}
    for r in split.test:
        test[r.dataset].append(r)
    for ds in test:
        test[ds].sort(key=lambda r: r.id)

    pools: dict[str, dict[str, list[Record]]] = {dom: {ds: [] for ds in d.datasets} for dom, d in cfg.domains.items()}
    for r in split.train:
        pools[owner[r.dataset]][r.dataset].append(r)

    references = {f"test/{ds}": recs for ds, recs in test.items() if recs}
    for b in cfg.contamination.benchmarks:
        step(f"load benchmark {b}")
        references[f"benchmark/{b}"] = load_records(b, data_dir=cfg.data_dir)

    dropped = 0
    if cfg.contamination.action == "drop":
        step("decontaminate")
        flat = [r for p in pools.values() for rs in p.values() for r in rs]
        _, flagged = contamination.check(flat, references, cfg.contamination.ngram)
        dropped = len(flagged)
        pools = {dom: {ds: [r for r in rs if r.id not in flagged] for ds, rs in p.items()} for dom, p in pools.items()}

    for dom, p in pools.items():
        empty = [ds for ds, rs in p.items() if not rs and cfg.domains[dom].datasets[ds].weight > 0]
        if empty:
            raise DataError(f"domain {dom!r} has no training records from {', '.join(empty)} after the split; "
                            f"check the data or remove it from `domains.{dom}.datasets`")

    step("balance")
    balanced = {
        dom: mix.balance_domain(p, {ds: r.weight for ds, r in cfg.domains[dom].datasets.items()}, cfg.mix.balance, seed, dom)
        for dom, p in pools.items()
    }
    step("mix")
    sizes = {dom: {ds: len(rs) for ds, rs in p.items()} for dom, p in balanced.items()}
    plans = mix.plan_mixture(sizes, {d: c.ratio for d, c in cfg.domains.items()}, cfg.mix.mode, cfg.mix.total, cfg.mix.sample_ratio)
    train = mix.realize(balanced, plans, seed)
    n_target = len(train)
    if n_target == 0:
        raise DataError("the mixture is empty: a domain with a positive ratio has no records")

    replay_info = None
    if cfg.replay is not None and cfg.replay.fraction > 0:
        step(f"replay {cfg.replay.dataset}")
        rep_all = _load(cfg, cfg.replay.dataset, cfg.replay, None)
        rep_train = split_records(rep_all, cfg.split.test_fraction, seed, cfg.split.mode, cfg.split.group_ngram).train
        n_rep = mix.replay_count(n_target, cfg.replay.fraction)
        rep = mix.take(rep_train, n_rep, mix.rng_for(seed, "replay", cfg.replay.dataset))
        train.extend(replace(r, metadata={**r.metadata, "replay": True}) for r in rep)
        replay_info = {"dataset": cfg.replay.dataset, "requested_fraction": cfg.replay.fraction,
                       "realized_fraction": n_rep / len(train), "count": n_rep, "pool": len(rep_train)}
    train = mix.shuffle(train, seed)

    step("contamination check")
    report, _ = contamination.check(train, references, cfg.contamination.ngram)
    overlap = sum(o.ngram for o in report)
    if cfg.contamination.action == "fail" and overlap:
        worst = ", ".join(f"{o.reference}: {o.ngram}" for o in report if o.ngram)
        raise DataError(f"contamination check failed (contamination.action: fail): {worst}")

    info = _info(cfg, train, test, pools, plans, split.groups_merged, report, dropped, replay_info)
    return BuildResult(cfg, train, test, info)


def _info(cfg, train, test, pools, plans, merged, report, dropped, replay_info) -> dict[str, Any]:
    mixed = [r for r in train if not r.metadata.get("replay")]
    dom_counts = Counter(r.domain for r in mixed)
    ds_counts = Counter(r.dataset for r in mixed)
    requested = mix.normalize_weights({d: c.ratio for d, c in cfg.domains.items()}, "domains")
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "config_hash": config_hash(cfg),
        "requested_ratios": requested,
        "realized_ratios": {d: dom_counts.get(d, 0) / max(len(mixed), 1) for d in requested},
        "requested_dataset_ratios": {
            d: mix.normalize_weights({k: v.weight for k, v in c.datasets.items()}, d) for d, c in cfg.domains.items()
        },
        "realized_dataset_ratios": {
            d: {k: ds_counts.get(k, 0) / max(dom_counts.get(d, 0), 1) for k in c.datasets} for d, c in cfg.domains.items()
        },
        "counts": {
            "train": dict(sorted(ds_counts.items())),
            "train_by_domain": dict(sorted(dom_counts.items())),
            "train_total": len(train),
            "train_pool": {ds: len(rs) for p in pools.values() for ds, rs in sorted(p.items())},
            "test": {ds: len(rs) for ds, rs in sorted(test.items())},
            "test_total": sum(len(rs) for rs in test.values()),
            "unique_train": len({r.id.split("#", 1)[0] for r in train}),
        },
        "plan": {d: {"target": p.target, "per_dataset": p.per_dataset} for d, p in sorted(plans.items())},
        "split": {"mode": cfg.split.mode, "test_fraction": cfg.split.test_fraction, "group_ngram": cfg.split.group_ngram, "records_grouped": merged},
        "replay": replay_info,
        "contamination": {
            "ngram": cfg.contamination.ngram,
            "action": cfg.contamination.action,
            "dropped_before_mixing": dropped,
            "overlaps": [o.to_dict() for o in report],
            # leaks: identical questions (after normalization) on both sides of the split
            "train_test_overlap": sum(o.normalized for o in report if o.reference.startswith("test/")),
            # training question + solution sharing an n-gram with a test question; the split groups
            # such pairs (see mixlab.data.split), so this is 0 when split.group_ngram == contamination.ngram
            "train_test_ngram_overlap": sum(o.ngram for o in report if o.reference.startswith("test/")),
        },
        "config": config_dict(cfg),
    }
