"""Bad input to GRPO / SPIN fails before training, naming the field and the fix."""

from __future__ import annotations

import orjson
import pytest

from mixlab.data.records import Record
from mixlab.errors import ConfigError, DataError
from mixlab.train import sft
from tests.finetune_base import write_yaml
from tests.test_finetune_grpo import grpo_config, one_records
from tests.test_finetune_run import toy_base  # noqa: F401 - session fixture


def test_an_unknown_reward_name_is_a_config_error_naming_the_known_ones(tmp_path):
    path = write_yaml(tmp_path / "ft.yaml", {"method": "grpo", "model": {"base": "x"},
                                              "data": {"datasets": ["toyworld_arithmetic"]},
                                              "grpo": {"rewards": ["numeric", "acurracy"]}})
    with pytest.raises(ConfigError, match=r"ft.yaml:\d+: .*grpo.rewards.*unknown reward 'acurracy'; known: auto, "
                                          r"choice, code, exact, f1, math, numeric"):
        sft.load_finetune_config(path)
    assert sft.load_finetune_config(path, ["grpo.rewards=[numeric, exact]"]).grpo.rewards == ["numeric", "exact"]
    with pytest.raises(ConfigError, match="reward_weights has 1 values for 2 rewards"):
        sft.load_finetune_config(path, ["grpo.rewards=[numeric, exact]", "grpo.reward_weights=[1.0]"])


@pytest.mark.parametrize("override, match", [
    (["anchor.type=kl"], "method 'grpo' cannot take an anchor"),
    (["data.replay.source=toyworld:prose"], "data.replay does not apply"),
    (["method=sft"], "a `grpo:` section needs `method: grpo`"),
    (["method=spin"], "a `grpo:` section needs `method: grpo`"),
])
def test_options_that_do_not_apply_to_grpo_are_refused(tmp_path, override, match):
    path = write_yaml(tmp_path / "ft.yaml", {"method": "grpo", "model": {"base": "x"},
                                              "data": {"datasets": ["toyworld_arithmetic"]}, "grpo": {"beta": 0.0}})
    with pytest.raises(ConfigError, match=match):
        sft.load_finetune_config(path, override)


def _write(path, records):
    path.write_bytes(b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in records))
    return path


def test_records_without_a_verifiable_answer_fail_before_training(toy_base, tmp_path):
    # answers that cannot be checked: an empty reference (trainable by SFT from its solution), code without tests
    records = [Record(id="open/1", dataset="open", domain="qa", question="Write a poem about the sea.",
                      reference_answer="", answer_type="text", solution="Waves.")]
    cfg = grpo_config(toy_base, _write(tmp_path / "open.jsonl", records), grpo={"rewards": ["auto"]})
    with pytest.raises(DataError, match=r"no verifiable answer .* e.g. dataset open|no verifiable answer"):
        sft.finetune(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    code = [Record(id="c/1", dataset="c", domain="code", question="Write f.", reference_answer="def f(): pass",
                   answer_type="code")]
    with pytest.raises(DataError, match="no verifiable answer"):
        sft.prepare(grpo_config(toy_base, _write(tmp_path / "code.jsonl", code), grpo={"rewards": ["auto"]}))
    # a reward that cannot judge the records' answer type
    with pytest.raises(DataError, match=r"grpo.rewards \(code\).*numeric answer, verifier code"):
        sft.prepare(grpo_config(toy_base, one_records(tmp_path / "ones.jsonl"), grpo={"rewards": ["code"]}))
