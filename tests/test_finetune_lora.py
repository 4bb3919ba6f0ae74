"""LoRA fine-tuning: PEFT-format adapters, merged == unmerged logits, anchored LoRA, missing targets."""

from __future__ import annotations

import json

import pytest
import torch

from mixlab.errors import ConfigError
from mixlab.train import sft
from tests.test_finetune_run import ft_config, toy_base  # noqa: F401 - session fixture


def test_lora_run_saves_a_peft_adapter_whose_merge_gives_the_same_logits(toy_base, tmp_path):  # noqa: F811
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = ft_config(toy_base, method="lora", lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]},
                    anchor={"type": "kl", "coef": 0.5}, train={"lr": 1e-2})
    assert cfg.lora is not None and cfg.lora.r == 4
    result = sft.finetune(cfg, tmp_path / "run")
    adapter = result.final_checkpoint
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists()  # only the adapter is saved per step
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    base_dir = sft.resolve_base(str(toy_base))
    ids = torch.tensor([list(b"Q: What is 3 + 4?\nA: 7")])
    base = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval()
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        unmerged = PeftModel.from_pretrained(base, str(adapter)).eval()(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "run" / "merged")).eval()(input_ids=ids).logits
    assert (unmerged - base_logits).abs().max() > 1e-3  # training moved the adapter off zero
    assert torch.allclose(merged, unmerged, atol=1e-4)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["merged"] == "merged" and meta["plan"]["trainable_params"] < meta["plan"]["total_params"] / 5


def test_a_lora_target_the_model_lacks_fails_before_training(toy_base, tmp_path):  # noqa: F811
    cfg = ft_config(toy_base, method="lora", lora={"target_modules": ["q_proj", "c_attn"]})
    with pytest.raises(ConfigError, match=r"lora.target_modules.*c_attn.*q_proj"):
        sft.finetune(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
