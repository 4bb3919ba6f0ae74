"""Checkpoints: Hugging Face model directories plus the state needed to resume bit-identically.

``checkpoints/step-N/`` holds what ``save_pretrained`` writes (``config.json``, ``model.safetensors``;
the tokenizer too when given), so ``AutoModelForCausalLM.from_pretrained`` and every other tool read
it (with ``use_cache: true``, whatever the training model used), plus ``trainer_state.pt`` (optimizer, LR schedule, every RNG) and ``trainer_state.json`` (step,
data position, timings). The directory is built in a temporary sibling and renamed into place
(:func:`mixlab.atomic.directory`), so a killed run leaves either a complete checkpoint or none.
"""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from mixlab import atomic
from mixlab.errors import DataError

STATE_PT = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (``trainer_state.json`` present), oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and (p / STATE_JSON).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
         scheduler: Any | None, info: dict[str, Any], tokenizer: Any | None = None) -> Path:
    """Write a checkpoint directory atomically; ``info`` must be JSON-serializable."""
    with atomic.directory(path) as tmp, _quiet_transformers(), _serving_config(unwrap(model)):
        unwrap(model).save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if optimizer is not None:
            state = {"optimizer": optimizer.state_dict(), "rng": rng_state(),
                     "scheduler": scheduler.state_dict() if scheduler is not None else None}
            torch.save(state, tmp / STATE_PT)
        (tmp / STATE_JSON).write_bytes(orjson.dumps(info, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    return Path(path)


@contextlib.contextmanager
def _serving_config(model: torch.nn.Module) -> Iterator[None]:
    """Save the config with ``use_cache: true`` (the Hugging Face default) while training keeps it off.

    Proxies train with ``use_cache=False`` (no KV cache built in training forwards); written as is,
    the checkpoint's ``generation_config.json`` made a user's ``model.generate`` recompute the whole
    prefix at every new token (2x slower at 200 tokens on ci_tiny, and quadratic).
    """
    configs = [c for c in (getattr(model, "config", None), getattr(model, "generation_config", None))
               if c is not None and hasattr(c, "use_cache")]
    before = [c.use_cache for c in configs]
    for c in configs:
        c.use_cache = True
    try:
        yield
    finally:
        for c, value in zip(configs, before, strict=True):
            c.use_cache = value


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No per-shard progress bar from ``save_pretrained`` inside a training progress display."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def read_info(path: str | Path) -> dict[str, Any]:
    return orjson.loads((Path(path) / STATE_JSON).read_bytes())


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a checkpoint's weights into ``model`` in place (PEFT adapters or full safetensors)."""
    model = unwrap(model)
    path = Path(path)
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(model, load_peft_weights(str(path), device="cpu"))
        return
    from safetensors.torch import load_file

    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise DataError("checkpoint holds no model*.safetensors", path)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if getattr(model.config, "tie_word_embeddings", False) and k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise DataError(f"checkpoint does not match the model: missing {sorted(set(missing) - tied)[:5]}, "
                        f"unexpected {sorted(unexpected)[:5]}", path)


def restore(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any | None) -> dict[str, Any]:
    """Load weights, optimizer, schedule and RNG state from ``path``; returns its info dict."""
    path = Path(path)
    load_weights(model, path)
    if not (path / STATE_PT).is_file():
        raise DataError(f"checkpoint has no {STATE_PT} (optimizer state was pruned); resume from the latest one", path)
    state = torch.load(path / STATE_PT, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return read_info(path)


def prune_optimizer_states(run_dir: str | Path, keep: int) -> None:
    """Drop optimizer/RNG state from all but the newest ``keep`` checkpoints (weights stay).

    Older checkpoints remain loadable models for evaluation over training; only the newest are
    needed to resume, and the optimizer state is twice the model's size.
    """
    if keep <= 0:
        return
    for _, p in list_checkpoints(run_dir)[:-keep]:
        (p / STATE_PT).unlink(missing_ok=True)
