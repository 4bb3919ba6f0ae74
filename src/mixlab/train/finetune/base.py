"""The base model of a fine-tuning run: finding it, loading it, and LoRA on top of it.

``model.base`` may name a pretraining run directory (its final checkpoint), a Hugging Face folder,
an alias or a cached hub id; nothing is downloaded. LoRA adapters come from ``peft``; their
initialization is part of the run's seed, and :func:`merge_lora` writes the adapter merged into the
base as a plain Hugging Face folder (``merged/``), which every tool reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mixlab.errors import ConfigError, MixlabError
from mixlab.train import checkpoint

if TYPE_CHECKING:
    from mixlab.train.finetune.config import LoraSection, ModelSection


def resolve_base(base: str) -> Path | str:
    """A pretraining run directory resolves to its final checkpoint; anything else as ``load_model`` does."""
    from mixlab.models.pretrained import resolve

    path = Path(base).expanduser()
    meta = path / "meta.json"
    if path.is_dir() and meta.is_file() and not (path / "config.json").is_file():
        info = json.loads(meta.read_text())
        if info.get("status") != "complete" or "final_checkpoint" not in info:
            raise MixlabError(f"{path}: the pretraining run is not complete; finish it (`mixlab pretrain ... "
                              f"--out {path}`) or point model.base at a checkpoint")
        return path / info["final_checkpoint"]
    return resolve(base)


def load_base(section: ModelSection, device: torch.device) -> tuple[torch.nn.Module, Any, str]:
    """The base model (train mode) and tokenizer from ``section.base``; nothing is downloaded."""
    return load_model(section.base, section.dtype, device)


def load_model(base: str, dtype: str, device: torch.device) -> tuple[torch.nn.Module, Any, str]:
    """The model ``base`` (a run directory, folder, alias or cached hub id) in ``dtype``, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    where = resolve_base(base)
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no per-shard bar inside the run's own progress display
    try:
        tok = AutoTokenizer.from_pretrained(str(where))
        model = AutoModelForCausalLM.from_pretrained(str(where), dtype=getattr(torch, dtype))
    except OSError as e:
        raise MixlabError(f"model.base: could not load {base!r}: {e}") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device), tok, str(where)


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Short names of the model's Linear layers (what LoRA ``target_modules`` can name)."""
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def apply_lora(model: torch.nn.Module, section: LoraSection, seed: int) -> torch.nn.Module:
    """Wrap ``model`` in a peft LoRA adapter; a target module the model lacks is a ConfigError."""
    from peft import LoraConfig, get_peft_model

    have = linear_module_names(model)
    missing = [t for t in section.target_modules if t not in have]
    if missing:
        raise ConfigError(f"lora.target_modules: the model has no module(s) {', '.join(missing)}; "
                          f"its linear layers are {', '.join(sorted(have))}")
    cfg = LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                     target_modules=list(section.target_modules), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # adapter initialization is part of the run's seed
        return get_peft_model(model, cfg)


def merge_lora(base: str, adapter: str | Path, out: str | Path) -> Path:
    """Merge a LoRA adapter into its base model and write a plain HF model directory (atomic)."""
    from peft import PeftModel

    model, tok, _ = load_model(base, "float32", torch.device("cpu"))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return checkpoint.save(out, merged, None, None, {"merged_from": str(adapter), "base": base}, tok)
