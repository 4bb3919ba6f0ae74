"""SPIN (iterated DPO through trl): the loss of one pair is DPO's, computed by hand; iterations chain references."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from mixlab.train import checkpoint, sft
from mixlab.train.finetune import spin
from tests.test_finetune_run import toy_base  # noqa: F401 - session fixture


def spin_config(base, **over) -> sft.FinetuneConfig:
    data = {
        "seed": 0, "method": "spin", "model": {"base": str(base)},
        "data": {"datasets": ["toyworld_arithmetic"], "max_records": 8, "max_seq_len": 64},
        "train": {"steps": 2, "batch_size": 4, "lr": 1e-3, "threads": 1, "log_every": 1},
        "spin": {"iterations": 2, "beta": 0.5, "max_new_tokens": 6, "stop": ["\n"]},
    }
    for k, v in over.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    return sft.FinetuneConfig.model_validate(data)


def completion_logp(model, tok, prompt: str, completion: str) -> torch.Tensor:
    """Sum of log p(completion tokens + EOS | prompt), token by token (the hand computation)."""
    p = tok(prompt)["input_ids"]
    ids = tok(prompt + completion)["input_ids"] + [tok.eos_token_id]
    assert ids[: len(p)] == p
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    return sum(logp[i - 1, ids[i]] for i in range(len(p), len(ids)))


def test_spin_loss_on_one_pair_equals_dpo_by_hand(toy_base, tmp_path):
    cfg = spin_config(toy_base)
    prep = spin.prepare(cfg)
    ref = spin.reference_of(prep.model)  # the iteration's reference: the model as it was
    policy = prep.model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a policy that has moved away from its reference
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    prompt, chosen, rejected = "Q: What is 2 + 3?\nA: ", "5", "7 + 1"
    trainer = spin.build_trainer(prep, policy, ref, [{"prompt": prompt, "chosen": chosen, "rejected": rejected}],
                                 tmp_path, 1, [])
    batch = next(iter(trainer.get_train_dataloader()))
    policy.eval()
    with torch.no_grad():
        loss = float(trainer.compute_loss(policy, batch))
    tok = prep.tokenizer
    delta = (completion_logp(policy, tok, prompt, chosen) - completion_logp(ref, tok, prompt, chosen)) \
        - (completion_logp(policy, tok, prompt, rejected) - completion_logp(ref, tok, prompt, rejected))
    hand = float(-F.logsigmoid(cfg.spin.beta * delta))
    assert abs(float(delta)) > 0.05  # the two models really differ on this pair
    assert loss == pytest.approx(hand, abs=1e-5), (loss, hand, float(delta))


@pytest.mark.slow
def test_spin_iterations_sample_train_checkpoint_and_resume(toy_base, tmp_path):
    cfg = spin_config(toy_base)
    run = tmp_path / "run"
    result = sft.finetune(cfg, run)
    assert result.steps == 4
    steps = [s for s, _ in checkpoint.list_checkpoints(run)]
    assert steps == [2, 4]
    assert [checkpoint.read_info(p)["spin_iteration"] for _, p in checkpoint.list_checkpoints(run)] == [1, 2]
    pairs = [json.loads(x) for x in (run / "iter-1" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 8 and all(p["prompt"].startswith("Q: ") for p in pairs)
    train = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and all(r["loss"] > 0 for r in train)
    # iteration 2 pairs the same ground truth with new samples of the model
    second = [json.loads(x) for x in (run / "iter-2" / "pairs.jsonl").read_text().splitlines()]
    assert [p["chosen"] for p in second] == [p["chosen"] for p in pairs]
    meta = json.loads((run / "meta.json").read_text())
    assert [h["iteration"] for h in meta["spin_iterations"]] == [1, 2]
    # killed during iteration 2: iteration 1 is not redone, iteration 2 restarts from its checkpoint
    meta["status"] = "running"
    (run / "meta.json").write_text(json.dumps(meta))
    mtime = (run / "iter-1" / "pairs.jsonl").stat().st_mtime_ns
    import shutil

    shutil.rmtree(run / "checkpoints" / "step-4")
    again = sft.finetune(cfg, run)
    assert again.steps == 4 and (run / "iter-1" / "pairs.jsonl").stat().st_mtime_ns == mtime
    assert json.loads((run / "meta.json").read_text())["resumed_from"].endswith("step-2")
