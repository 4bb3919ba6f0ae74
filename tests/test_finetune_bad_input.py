"""Bad fine-tuning input fails before training with a message that names the field, file or record."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from mixlab.errors import ConfigError, DataError, MixlabError
from mixlab.train import sft
from tests.finetune_base import write_yaml
from tests.test_finetune_run import ft_config, toy_base  # noqa: F401 - session fixture


def test_an_anchor_on_a_method_that_cannot_take_one_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sft.METHODS, "rl_demo", replace(sft.METHODS["sft"], anchor=False, description="demo"))
    path = write_yaml(tmp_path / "ft.yaml", {"method": "rl_demo", "model": {"base": "x"},
                                              "data": {"datasets": ["toyworld_code"]},
                                              "anchor": {"type": "js", "coef": 0.1}})
    with pytest.raises(ConfigError, match=r"ft.yaml:\d+: .*method 'rl_demo' cannot take an anchor"):
        sft.load_finetune_config(path)
    with pytest.raises(ConfigError, match="unknown method 'dpo'"):
        sft.load_finetune_config(path, ["method=dpo"])
    assert sft.load_finetune_config(path, ["method=sft"]).anchor.type == "js"


def test_config_shape_errors(tmp_path):
    path = write_yaml(tmp_path / "ft.yaml", {"model": {"base": "x"}, "data": {"datasets": ["a"], "records": "b.jsonl"}})
    with pytest.raises(ConfigError, match="exactly one of data.build"):
        sft.load_finetune_config(path)
    with pytest.raises(ConfigError, match="train.steps or train.epochs"):
        sft.load_finetune_config(path, ["data.records=null", "train.steps=3", "train.epochs=1"])
    with pytest.raises(ConfigError, match="anchor.type"):
        sft.load_finetune_config(path, ["data.records=null", "anchor.type=kl_fwd"])


@pytest.mark.parametrize("source, kind, match", [
    ("no_such_dataset", DataError, "replay.source.*unknown dataset 'no_such_dataset'"),
    ("missing/replay.jsonl", DataError, "replay source file not found"),
    ("toyworld:poetry", ConfigError, "unknown toyworld domain 'poetry'"),
])
def test_a_missing_replay_source_fails_before_training(toy_base, tmp_path, source, kind, match):  # noqa: F811
    cfg = ft_config(toy_base, data={"replay": {"source": source, "ratio": 0.2}})
    with pytest.raises(kind, match=match):
        sft.finetune(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_records_without_a_completion_name_the_file_and_line(toy_base, tmp_path):  # noqa: F811
    rows = [{"id": f"t/{i}", "dataset": "t", "domain": "d", "question": f"q{i}", "reference_answer": "" if i == 2 else "a",
             "answer_type": "text", "metadata": {}} for i in range(4)]
    path = tmp_path / "recs.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    cfg = ft_config(toy_base, data={"datasets": None, "records": str(path)})
    with pytest.raises(DataError, match=r"1 record\(s\) have no completion.*recs.jsonl:3"):
        sft.finetune(cfg, tmp_path / "run")
    with pytest.raises(DataError, match="no mixed/train.jsonl"):
        sft.prepare(ft_config(toy_base, data={"datasets": None, "build": str(tmp_path)}))


def test_a_missing_base_model_and_bad_early_stop_metric(toy_base, tmp_path):  # noqa: F811
    with pytest.raises(MixlabError, match="model path does not exist"):
        sft.prepare(ft_config(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="early_stop.metric.*'exact_match'"):
        sft.prepare(ft_config(toy_base, early_stop={"tasks": ["toyworld_prose_mc"], "metric": "exact_match"}))
    # a kind the in-training evaluation cannot run is refused by its engine's flags, before any training
    with pytest.raises(ConfigError, match="kl_wikitext2 compare with a base model"):
        sft.prepare(ft_config(toy_base, early_stop={"tasks": ["kl_wikitext2"], "metric": "kl"}))
    with pytest.raises(ConfigError, match="judge task.*mt_bench"):
        sft.prepare(ft_config(toy_base, early_stop={"tasks": ["mt_bench"], "metric": "score"}))
    # a corpus-level metric counts as reported
    assert sft.prepare(ft_config(toy_base, early_stop={"tasks": ["toyworld_arithmetic_bpb"],
                                                        "metric": "bpb_corpus"})).eval_specs
