"""From a sweep's results store and its runs' directories to the report's in-memory data.

The store holds the numbers (one row per run, step, task, metric) and points at the per-item files;
each run directory's ``meta.json`` supplies what the report shows besides numbers (method, data,
requested vs realized mixture, runtime per stage).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixlab.report.model import DataBuild, Result, RunMeta
from mixlab.runs.store import Store
from mixlab.runs.sweep import Experiment, SweepConfig, resolve


def _method_label(meta: dict[str, Any]) -> str:
    """``sft``, ``lora+kl``, ``sft+replay``, ``grpo`` ... from a fine-tuning run's plan; ``pretrain`` for
    a pretraining run; the top-level ``method`` when a run writes one."""
    if meta.get("method"):
        return str(meta["method"])
    plan = meta.get("plan") or {}
    if meta.get("stage") == "finetune" or "method" in plan:
        label = str(plan.get("method", "finetune"))
        anchor = plan.get("anchor")
        if anchor:
            label += "+" + str(anchor.get("type", "anchor") if isinstance(anchor, dict) else anchor)
        if plan.get("replay"):
            label += "+replay"
        return label
    return "pretrain" if "tokens" in meta else ""


def _dataset_label(meta: dict[str, Any]) -> str:
    """What a run trained on: ``dataset`` when the run says, else its plan's data; a data-build
    directory is named by the build's ``name`` (its folder when unnamed)."""
    label = str(meta.get("dataset") or (meta.get("plan") or {}).get("data", ""))
    if label.startswith("build "):
        where = Path(label.removeprefix("build "))
        try:
            return str(json.loads((where / "info.json").read_text()).get("name") or where.name)
        except (OSError, ValueError):
            return where.name
    return label


def _data_build(meta: dict[str, Any]) -> DataBuild | None:
    """The data build a fine-tuning run read (``plan.data`` = ``build <dir>``), from its ``info.json``."""
    label = str((meta.get("plan") or {}).get("data", ""))
    if not label.startswith("build "):
        return None
    where = Path(label.removeprefix("build "))
    try:
        info = json.loads((where / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    counts = info.get("counts") or {}
    return DataBuild(name=str(info.get("name") or where.name), train=counts.get("train") or {},
                     test=counts.get("test") or {}, requested=info.get("requested_ratios") or {},
                     realized=info.get("realized_ratios") or {}, split=str((info.get("split") or {}).get("mode", "")),
                     contamination=info.get("contamination") or {})


def _training_data(meta: dict[str, Any]) -> dict[str, str]:
    """What a fine-tuning run trained on, in words: its target records and any replay."""
    plan = meta.get("plan") or {}
    out: dict[str, str] = {}
    if "target_examples" in plan or "records" in plan:
        out["target examples"] = f"{plan.get('target_examples', plan.get('records'))}"
    if "prompts" in plan:
        out["prompts"] = str(plan["prompts"])
    if plan.get("replay"):
        out["replay"] = f"{plan.get('replay_examples', '?')} examples of {str(plan['replay']).removeprefix('text ')}"
    return out


def _run_meta(name: str, run_dir: Path | None, targets: tuple[str, ...] = (), eval_seconds: float | None = None
              ) -> RunMeta:
    meta: dict[str, Any] = {}
    if run_dir is not None and (run_dir / "meta.json").is_file():
        meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    mixture = meta.get("mixture") or {}
    target = targets or meta.get("target_tasks") or ()
    return RunMeta(
        run=name,
        method=_method_label(meta),
        dataset=_dataset_label(meta),
        target_tasks=tuple(target),
        mixture_requested=mixture.get("requested", {}) or {},
        mixture_realized=mixture.get("realized", {}) or {},
        runtime={k: float(v) for k, v in (meta.get("timings") or {}).items() if isinstance(v, (int, float))},
        eval_seconds=eval_seconds,
        data_build=_data_build(meta),
        training_data=_training_data(meta),
    )


def _model_run_dir(model: str) -> Path | None:
    """The run directory a model folder belongs to: ``<run>/checkpoints/step-N`` or ``<run>/final``
    (a study's pretrained base); None for an alias or a folder outside any run."""
    path = Path(model)
    if not path.is_dir():
        return None
    for cand in (path.parent, path.parent.parent):
        if (cand / "meta.json").is_file() and (cand / "checkpoints").is_dir():
            return cand
    return None


def _eval_seconds(store: Store) -> dict[str, float]:
    """Seconds the sweep spent on each run's finished tasks (summed over tasks and checkpoints)."""
    run_of = {u.unit: u.run for u in store.units()}
    out: dict[str, float] = {}
    for row in store.task_rows():
        if row.get("status") == "done" and row.get("seconds") is not None and row["unit"] in run_of:
            out[run_of[row["unit"]]] = out.get(run_of[row["unit"]], 0.0) + float(row["seconds"])
    return out


def collect(cfg: SweepConfig) -> tuple[list[Result], list[RunMeta], dict[str, str]]:
    """``(results, runs_meta, base)`` for :func:`mixlab.report.html.write_report` from a sweep."""
    exp: Experiment = resolve(cfg)
    store = Store(exp.store_path)
    results = store.results()
    run_dirs: dict[str, Path | None] = {}
    base: dict[str, str] = {}
    for c in exp.checkpoints:
        u = c.unit
        is_base = u.base_model == u.run and u.step == 0
        if u.same_as is not None:  # step 0 of a fine-tuning run is its base model: not in the run directory
            run_dirs.setdefault(c.run, None)
        elif run_dirs.get(c.run) is None:
            # a checkpoint lives in <run>/checkpoints/step-N; a base model trained by mixlab (a study's
            # pretrained proxy) in <run>/final or a checkpoint folder, an alias in no run directory
            run_dirs[c.run] = _model_run_dir(u.model) if is_base else Path(u.model).parent.parent
        if u.base_model and not is_base:
            base[c.run] = u.base_model
    seconds = _eval_seconds(store)
    metas = [_run_meta(name, d, exp.targets.get(name, ()), seconds.get(name)) for name, d in run_dirs.items()]
    # the store may hold runs an earlier version of the config named: report only this experiment's
    results = [r for r in results if r.run in run_dirs]
    return results, metas, base


def primary_metrics(cfg: SweepConfig) -> dict[str, str]:
    """Task -> its primary metric (the one forgetting summaries count), for the sweep's tasks."""
    return {spec.name: spec.primary_metric for spec in resolve(cfg).specs}
