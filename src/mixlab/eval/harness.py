"""Bridge to lm-evaluation-harness, both ways.

* mixlab models in lm-eval: :func:`lm_eval_model` wraps a loaded mixlab model (proxy checkpoint,
  merged LoRA adapter, converted GGUF SmolLM2) in lm-eval's Hugging Face backend; importing this module
  also registers the model type ``mixlab`` so ``simple_evaluate(model="mixlab",
  model_args="pretrained=smollm2-135m,adapter=DIR")`` resolves names the way ``mixlab eval`` does.
* lm-eval tasks from mixlab: :func:`run_lm_eval` runs any lm-eval task (its own registry, or task
  YAMLs in ``include_path``) on a mixlab model and returns metrics in mixlab's shape.
* :func:`write_task_yaml` writes an lm-eval task reading a local JSONL file, which is how the parity
  tests and the throughput benchmark make lm-eval read exactly the files mixlab reads (no download).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from mixlab.models.pretrained import LoadedModel, load_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


# lm-eval's own prompt templates (lm_eval/tasks/arc/arc_easy.yaml, piqa/piqa.yaml,
# super_glue/boolq/default.yaml) over the shared data files as published (paths under the data dir):
# task -> (file, write_task_yaml fields). Used by the parity tests and the throughput benchmark.
LM_EVAL_LOCAL: dict[str, tuple[str, dict[str, Any]]] = {
    "arc_easy": ("arc_easy/test.parsed.jsonl", dict(
        doc_to_text="Question: {{question}}\nAnswer:", doc_to_choice="{{choices}}", doc_to_target="{{label}}")),
    "piqa": ("piqa/test.parsed.jsonl", dict(
        doc_to_text="Question: {{goal}}\nAnswer:", doc_to_choice="{{choices}}", doc_to_target="{{label}}")),
    "boolq": ("boolq/dev.jsonl", dict(
        doc_to_text="{{passage}}\nQuestion: {{question}}?\nAnswer:", doc_to_choice=["no", "yes"],
        doc_to_target="{{answer | int}}")),
}


def lm_eval_model(loaded: LoadedModel, batch_size: int = 32, max_length: int | None = None) -> HFLM:
    """lm-eval's HF backend around an already-loaded mixlab model (no second copy in memory)."""
    return HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size, max_length=max_length)


@register_model("mixlab")
class MixlabLM(HFLM):
    """lm-eval model type ``mixlab``: ``pretrained`` is anything ``mixlab eval --model`` accepts
    (a directory, a hub id in the local cache, or an alias such as ``smollm2-135m``)."""

    def __init__(self, pretrained: str, adapter: str | None = None, device: str = "cpu", **kwargs: Any):
        loaded = load_model(pretrained, adapter=adapter, device=device)
        kwargs.pop("tokenizer", None)
        super().__init__(pretrained=loaded.model, tokenizer=loaded.tokenizer, **kwargs)


def write_task_yaml(
    folder: str | Path,
    name: str,
    data_file: str | Path,
    doc_to_text: str,
    doc_to_choice: str | list[str],
    doc_to_target: str,
    metrics: list[str] = ("acc", "acc_norm"),  # type: ignore[assignment]
    target_delimiter: str = " ",
    **extra: Any,
) -> Path:
    """An lm-eval multiple-choice task over a local JSONL file (loaded by ``datasets``' json builder)."""
    cfg = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": doc_to_text,
        "doc_to_choice": doc_to_choice,
        "doc_to_target": doc_to_target,
        "target_delimiter": target_delimiter,
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics],
        "metadata": {"version": 1.0},
        **extra,
    }
    path = Path(folder) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def run_lm_eval(
    model: LoadedModel | HFLM,
    tasks: list[str],
    include_path: str | Path | None = None,
    include_defaults: bool = True,
    limit: int | None = None,
    batch_size: int = 32,
    log_samples: bool = False,
) -> dict[str, Any]:
    """Run lm-eval tasks on a mixlab model. Returns ``{"results": {task: {metric: value, "n": n}},
    "samples": {task: [...]}}`` (samples only with ``log_samples``)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    lm = model if isinstance(model, HFLM) else lm_eval_model(model, batch_size=batch_size)
    manager = TaskManager(include_path=str(include_path) if include_path else None,
                          include_defaults=include_defaults)
    out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                          log_samples=log_samples, bootstrap_iters=0)
    results: dict[str, Any] = {}
    for task, metrics in out["results"].items():
        clean = {k.split(",")[0]: v for k, v in metrics.items()
                 if "," in k and "stderr" not in k and isinstance(v, (int, float))}
        n = out.get("n-samples", {}).get(task, {}).get("effective")
        results[task] = clean | ({"n": n} if n is not None else {})
    return {"results": results, "samples": out.get("samples", {}) if log_samples else {}}
