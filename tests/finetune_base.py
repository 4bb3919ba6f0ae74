"""A tiny pretrained toyworld base shared by the fine-tuning tests (pretrained once per session)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mixlab.train import pretrain as P

ROOT = Path(__file__).resolve().parents[1]


def toy_base_config() -> P.PretrainConfig:
    """configs/pretrain/toyworld_base.yaml shortened to 50 steps of 8 x 128 tokens (seconds on one thread)."""
    data = yaml.safe_load((ROOT / "configs" / "pretrain" / "toyworld_base.yaml").read_text())
    data["data"]["sources"] = {d: {"uri": f"toyworld:{d}", "toyworld_documents": 300, "toyworld_heldout_documents": 20}
                               for d in ("arithmetic", "people", "code", "prose")}
    data["duration"] = {"tokens": 50 * 8 * 128}
    data["train"].update(seq_len=128, log_every=25)
    return P.PretrainConfig.model_validate(data)


def pretrain_toy_base(root: Path) -> Path:
    """The tiny base's run directory under ``root`` (reused when already complete)."""
    out = root / "toy_base"
    P.pretrain(toy_base_config(), out)
    return out


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
