"""The generic loop with a non-pretraining objective: masked-token loss, early stop, resume state."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from mixlab.models.registry import ModelConfig, build_model, hf_config
from mixlab.train import checkpoint
from mixlab.train.loop import Hooks, LoopConfig, train


class FixedBatches:
    """Step ``s`` -> two micro-batches with a completion mask, drawn from a seeded generator."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def batch(self, step: int):
        g = torch.Generator().manual_seed(step)
        self.calls.append(step)
        out = []
        for prompt_len in (3, 9):  # different numbers of completion tokens per micro-batch
            ids = torch.randint(0, 250, (2, 16), generator=g)
            labels = ids.clone()
            labels[:, :prompt_len] = -100
            out.append({"input_ids": ids, "labels": labels})
        return out

    def state_dict(self):
        return {"calls": len(self.calls)}

    def load_state_dict(self, state) -> None:
        self.restored = dict(state)


class CompletionLoss:
    """Summed loss on completion tokens only (labels -100 are prompt)."""

    def count(self, batch) -> int:
        return int((batch["labels"][:, 1:] != -100).sum())

    def __call__(self, model, batch):
        logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100, reduction="sum"), {}


def test_generic_loop_masked_loss_and_early_stop(tmp_path):
    torch.manual_seed(0)
    model = build_model(hf_config(ModelConfig(size=None, d_model=32, n_layers=1, n_heads=2), 258, 16), seed=0)
    data = FixedBatches()
    evals: list[int] = []

    def evaluate(m, step):
        evals.append(step)
        return {"score": float(step)}

    cfg = LoopConfig(total_steps=10, lr=1e-3, log_every=1, eval_every=2, checkpoint_every=0)
    res = train(model, data, CompletionLoss(), cfg, tmp_path,
                Hooks(evaluate=evaluate, should_stop=lambda step, scores: scores["score"] >= 4))
    assert res.stopped_early and res.step == 4 and evals == [2, 4]
    assert data.calls == [0, 1, 2, 3]
    assert res.tokens == 4 * (2 * 13 + 2 * 7)  # completion targets only: 15 - 2 and 15 - 8 per row
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [4]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["kind"] == "train")
    # logged loss is the mean over completion tokens of the step; check it against a direct computation
    fresh = build_model(hf_config(ModelConfig(size=None, d_model=32, n_layers=1, n_heads=2), 258, 16), seed=0)
    loss_fn = CompletionLoss()
    with torch.no_grad():
        mbs = FixedBatches().batch(0)
        want = sum(loss_fn(fresh, mb)[0] for mb in mbs) / sum(loss_fn.count(mb) for mb in mbs)
    assert abs(first["loss"] - float(want)) < 1e-5
