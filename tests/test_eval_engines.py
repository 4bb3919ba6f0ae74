"""The engine table: every kind is one engine with its metrics; an engine that compares with a base
model gets it from the caller (loaded on first use), fails up front without one, and keys its
results by it; evaluate() says per task whether it was computed or reused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))
import tiny_lm  # noqa: E402

from mixlab.errors import ConfigError, MixlabError  # noqa: E402
from mixlab.eval import engines as E  # noqa: E402
from mixlab.eval import runner  # noqa: E402
from mixlab.eval.engine import Engine  # noqa: E402
from mixlab.eval.tasks import load_task  # noqa: E402
from mixlab.models.pretrained import load_model  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


class _BaseGap(Engine):
    """Per item, the model's log-likelihood of the first choice minus the base model's."""

    kind = "base_gap"
    metrics = ("gap",)
    needs_base = True

    def prepare(self, spec, docs, pool):
        return E.MultipleChoice().prepare(spec, docs, pool)

    def score(self, spec, items, ctx, tick):
        from mixlab.eval.scoring import Scorer

        pairs = [[it.pairs[0]] for it in items]
        mine = ctx.scorer.score_groups(pairs)
        theirs = Scorer(ctx.base.model, ctx.base.tokenizer, batch_size=4).score_groups(pairs)
        rows = [{"id": it.id, "gap": a[0].logprob - b[0].logprob} for it, a, b in zip(items, mine, theirs, strict=True)]
        tick(len(items))
        return E.summarize_means(spec.metrics, rows), rows


@pytest.fixture
def gap_engine(monkeypatch):
    monkeypatch.setitem(E.ENGINES, "base_gap", _BaseGap)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return tiny_lm.build(root / "a"), tiny_lm.build(root / "b", seed=1)


def _task(tmp: Path, kind: str, metrics: list[str]) -> Path:
    p = tmp / f"{kind}.yaml"
    p.write_text(yaml.safe_dump({"name": kind, "kind": kind, "data": {"path": str(FIXTURES / "boundary.jsonl")},
                                 "prompt": "{{question}}", "metrics": metrics}))
    return p


def test_every_kind_is_one_engine_with_its_metrics():
    assert {"bpb", "mc", "generate", "code", "judge"} <= set(E.ENGINES)
    for kind, cls in E.ENGINES.items():
        engine = E.get_engine(kind)
        assert engine.kind == kind and engine.metrics
    with pytest.raises(ConfigError, match="unknown eval kind 'ranking'"):
        E.get_engine("ranking")


def test_an_engine_needing_the_base_model_gets_it_from_the_caller(gap_engine, models, tmp_path):
    spec = load_task(_task(tmp_path, "base_gap", ["gap"]))
    loaded = load_model(str(models[0]))
    with pytest.raises(MixlabError, match="compare the model with its base model"):
        runner.evaluate(loaded, [spec], tmp_path / "none")
    res = runner.evaluate(loaded, [spec], tmp_path / "o", base=str(models[1]))
    assert res.outcomes["base_gap"].status == "computed" and res["base_gap"]["n"] == res.outcomes["base_gap"].result["n"]
    assert res.outcomes["base_gap"].result["base"]["model"] == str(models[1])
    again = runner.evaluate(loaded, [spec], tmp_path / "o", base=str(models[1]))
    assert again.outcomes["base_gap"].status == "reused" and again["base_gap"] == res["base_gap"]
    # against itself the gap is zero; another base is another result
    same = runner.evaluate(loaded, [spec], tmp_path / "o", base=loaded)
    assert same.outcomes["base_gap"].status == "computed" and same["base_gap"]["gap"] == pytest.approx(0.0, abs=1e-5)


def test_a_sweep_gives_each_checkpoint_its_run_s_base_model(gap_engine, models, tmp_path):
    from mixlab.runs import sweep as S
    from mixlab.runs.store import Store
    from mixlab.train import checkpoint

    tuned = load_model(str(models[1]))
    checkpoint.save(checkpoint.step_dir(tmp_path / "runs" / "ft", 10), tuned.model, None, None, {"step": 10}, tuned.tokenizer)
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "t", "out": str(tmp_path / "sweep"), "runs": [str(tmp_path / "runs" / "*")],
        "base_models": [{"name": "base", "path": str(models[0])}], "checkpoints": {"all": True, "steps": [0]},
        "tasks": [str(_task(tmp_path, "base_gap", ["gap"]))], "batch_size": 4}))
    cfg = S.load_sweep_config(cfg_path)
    report = S.work(cfg)
    assert len(report.computed) == 2 and not report.failed  # the base model and step 10 (step 0 is the base)
    with Store(S.resolve(cfg).store_path) as store:
        gap = {(r.run, r.step): r.value for r in store.results(metric="gap")}
    assert gap[("base", 0)] == pytest.approx(0.0, abs=1e-5) and gap[("ft", 0)] == gap[("base", 0)]
    assert abs(gap[("ft", 10)]) > 1e-3  # the tuned weights against the base model's
