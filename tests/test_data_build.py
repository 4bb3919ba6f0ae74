"""`mixlab data build` end to end on records files, and its errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mixlab.cli import main
from mixlab.data.api import build, load_config_file, read_info, verify_hashes
from mixlab.data.records import Record, make_id, read_records, write_records


def _records(ds: str, domain: str, n: int, dup_every: int = 0) -> list[Record]:
    out = []
    for i in range(n):
        q = f"{ds} question {i % dup_every if dup_every else i} about item {i * 7 % 13}"
        out.append(Record(make_id(ds, i), ds, domain, q, f"answer {i}", "text",
                          solution=f"because {i} is {i}", metadata={"original_id": str(i), "source": "fixture", "split": "train"}))
    return out


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    sizes = {"ma": ("math", 600), "mb": ("math", 300), "qa": ("qa", 900), "ca": ("code", 400)}
    out = {}
    for ds, (dom, n) in sizes.items():
        out[ds] = write_records(tmp_path / f"{ds}.jsonl", _records(ds, dom, n, dup_every=(250 if ds == "qa" else 0)))
    return out


def _config(tmp_path: Path, files: dict[str, Path], **extra) -> Path:
    cfg = {
        "seed": 3,
        "domains": {
            "math": {"ratio": 4, "datasets": {"ma": {"weight": 1, "path": str(files["ma"]), "format": "records"},
                                              "mb": {"weight": 1, "path": str(files["mb"]), "format": "records"}}},
            "qa": {"ratio": 3, "datasets": {"qa": {"path": str(files["qa"]), "format": "records"}}},
            "code": {"ratio": 3, "datasets": {"ca": {"path": str(files["ca"]), "format": "records"}}},
        },
    }
    cfg.update(extra)
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_build_writes_layout_ratios_and_no_leak(tmp_path, files):
    cfg = load_config_file(_config(tmp_path, files))
    out = build(cfg, tmp_path / "out")
    info = read_info(out)
    for rel in ["mixed/train.jsonl", "mixed/test.jsonl", "test/ma.jsonl", "test/qa.jsonl", "test_index.json", "info.json"]:
        assert (out / rel).is_file(), rel
    assert all(verify_hashes(out).values())
    req, real = info["requested_ratios"], info["realized_ratios"]
    assert req == pytest.approx({"math": 0.4, "qa": 0.3, "code": 0.3})
    for d in req:
        assert abs(real[d] - req[d]) < 0.005
    # math is balanced 50:50 between ma and mb
    assert info["realized_dataset_ratios"]["math"]["ma"] == pytest.approx(0.5, abs=0.01)
    train = read_records(out / "mixed" / "train.jsonl")
    test = read_records(out / "mixed" / "test.jsonl")
    assert len(train) == info["counts"]["train_total"]
    assert {r.id for r in train}.isdisjoint({r.id for r in test})
    assert {r.question for r in train}.isdisjoint({r.question for r in test})  # duplicates grouped
    assert info["contamination"]["train_test_overlap"] == 0
    index = json.loads((out / "test_index.json").read_text())
    assert sum(len(v) for v in index.values()) == len(test)
    # the largest exact mixture: code has the smallest pool per unit of ratio
    code_pool = info["counts"]["train_pool"]["ca"]
    assert info["counts"]["train_by_domain"]["code"] == code_pool


def test_rebuild_is_byte_identical(tmp_path, files):
    cfg_path = _config(tmp_path, files)
    a = build(load_config_file(cfg_path), tmp_path / "a")
    b = build(load_config_file(cfg_path), tmp_path / "b")
    for rel in ["mixed/train.jsonl", "mixed/test.jsonl", "test_index.json", "info.json"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = build(load_config_file(cfg_path, ["seed=4"]), tmp_path / "c")
    assert (a / "mixed/train.jsonl").read_bytes() != (c / "mixed/train.jsonl").read_bytes()


def test_total_mode_sample_ratio_and_replay(tmp_path, files):
    cfg_path = _config(tmp_path, files, mix={"mode": "total", "total": 3000, "sample_ratio": 0.5})
    info = read_info(build(load_config_file(cfg_path), tmp_path / "o"))
    assert info["counts"]["train_total"] == 1500
    assert info["counts"]["train_by_domain"] == {"code": 450, "math": 600, "qa": 450}
    assert info["counts"]["unique_train"] < 1500  # code and qa pools are upsampled


def test_replay_mixes_a_named_source_at_its_fraction(tmp_path, files):
    cfg_path = _config(tmp_path, files, replay={"dataset": "toyworld_prose", "fraction": 0.2})
    out = build(load_config_file(cfg_path), tmp_path / "r")
    info = read_info(out)
    train = read_records(out / "mixed" / "train.jsonl")
    replayed = [r for r in train if r.metadata.get("replay")]
    assert {r.dataset for r in replayed} == {"toyworld_prose"}
    assert info["replay"]["count"] == len(replayed)
    assert abs(len(replayed) / len(train) - 0.2) < 0.005
    assert info["replay"]["realized_fraction"] == pytest.approx(len(replayed) / len(train))
    # replay does not change the ratios of the target domains
    assert abs(info["realized_ratios"]["math"] - 0.4) < 0.005


def _leaky_config(tmp_path, files, action):
    # questions of different datasets share the 4-gram "<i> about item <j>"; with exact-only grouping
    # in the split, some of those land on both sides and the 4-gram check must see them
    return _config(tmp_path, files, split={"group_ngram": 0}, contamination={"ngram": 4, "action": action})


def test_contamination_fail_stops_the_build_and_writes_nothing(tmp_path, files, capsys):
    report = read_info(build(load_config_file(_leaky_config(tmp_path, files, "report")), tmp_path / "rep"))
    assert report["contamination"]["train_test_ngram_overlap"] > 0
    _expect_error(capsys, ["data", "build", str(_leaky_config(tmp_path, files, "fail")), "--out", str(tmp_path / "f")],
                  "contamination check failed", "test/")
    assert not (tmp_path / "f").exists()


def test_contamination_drop_removes_overlapping_items_before_mixing(tmp_path, files):
    info = read_info(build(load_config_file(_leaky_config(tmp_path, files, "drop")), tmp_path / "d"))
    assert info["contamination"]["dropped_before_mixing"] > 0
    assert info["contamination"]["train_test_ngram_overlap"] == 0


def test_cli_build_and_inspect(tmp_path, files, capsys):
    cfg_path = _config(tmp_path, files)
    assert main(["data", "build", str(cfg_path), "--out", str(tmp_path / "cli"), "--set", "mix.sample_ratio=0.5"]) == 0
    assert main(["data", "inspect", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "math" in out and "0.400" in out


# ------------------------------------------------------------------ bad input


def _expect_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    for f in fragments:
        assert f in err, (f, err)


def test_malformed_json_line_names_file_and_line(tmp_path, files, capsys):
    bad = tmp_path / "bad.jsonl"
    lines = files["qa"].read_text().splitlines()
    lines[4] = '{"id": "qa/4", "dataset": '
    bad.write_text("\n".join(lines) + "\n")
    files = {**files, "qa": bad}
    _expect_error(capsys, ["data", "build", str(_config(tmp_path, files)), "--out", str(tmp_path / "x")], "bad.jsonl:5", "malformed JSON")
    assert not (tmp_path / "x").exists()


def test_missing_field_names_file_and_line(tmp_path, files, capsys):
    bad = tmp_path / "bad.jsonl"
    rows = [json.loads(x) for x in files["qa"].read_text().splitlines()]
    del rows[2]["question"]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _expect_error(capsys, ["data", "build", str(_config(tmp_path, {**files, "qa": bad})), "--out", str(tmp_path / "x")],
                  "bad.jsonl:3", "question")


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda c: c["domains"]["math"]["datasets"].update({"gsm8x": 1}), ["domains.math.datasets", "gsm8x", "gsm8k"]),
        (lambda c: c["domains"]["qa"].update({"ratio": -1}), ["domains.qa.ratio", "greater than or equal to 0"]),
        (lambda c: [d.update({"ratio": 0}) for d in c["domains"].values()], ["ratios sum to zero"]),
        (lambda c: c.update({"domians": {}}), ["domians", "Did you mean 'domains'"]),
        (lambda c: c["domains"]["code"].update({"datasets": {}}), ["domains.code.datasets", "at least one dataset"]),
    ],
)
def test_bad_config_names_file_line_and_field(tmp_path, files, capsys, edit, fragments):
    path = _config(tmp_path, files)
    cfg = yaml.safe_load(path.read_text())
    edit(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    _expect_error(capsys, ["data", "build", str(path), "--out", str(tmp_path / "x")], str(path), *fragments)
    assert not (tmp_path / "x").exists()


def test_empty_domain_is_an_error_and_keeps_previous_output(tmp_path, files, capsys):
    good = build(load_config_file(_config(tmp_path, files)), tmp_path / "keep")
    before = (good / "mixed/train.jsonl").read_bytes()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _expect_error(capsys, ["data", "build", str(_config(tmp_path, {**files, "ca": empty})), "--out", str(good)], "empty.jsonl", "empty")
    assert (good / "mixed/train.jsonl").read_bytes() == before  # nothing lost
