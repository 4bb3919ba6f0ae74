"""`mixlab validate` on every config the repository ships, kind inference, and advice that works."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixlab.cli import main
from mixlab.config import config_hash, read_yaml
from mixlab.config_kinds import KINDS, detect_kind, validate_file
from mixlab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*(ROOT / "configs").rglob("*.yaml"), *(ROOT / "src/mixlab/quickstart").glob("*.yaml")])

# What each shipped file is, from where it lives (configs/mixopt holds swarm*, fit* and propose configs,
# `finetune.yaml` being a propose config in fine-tuning mode).
EXPECTED = {"data": "data", "distill": "distill", "finetune": "finetune", "pretrain": "pretrain",
            "studies": "study", "sweeps": "sweep", "quickstart": "quickstart"}


def _expected(path: Path) -> str:
    if path.parent.name == "mixopt":
        return next((k for k in ("swarm", "fit") if path.name.startswith(k)), "propose")
    return EXPECTED[path.parent.name]


@pytest.fixture
def at_root(monkeypatch):
    """Shipped configs name other files (a swarm's base) relative to the repository root."""
    monkeypatch.chdir(ROOT)


def test_every_kind_has_a_shipped_config():
    assert len(SHIPPED) >= 40
    assert {_expected(p) for p in SHIPPED} == set(KINDS)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates(path, at_root, capsys):
    assert main(["validate", str(path.relative_to(ROOT))]) == 0
    out = capsys.readouterr().out
    assert f"valid {_expected(path)} config" in out and KINDS[_expected(path)].command in out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_kind_is_inferred_without_a_kind_field(path):
    data, _ = read_yaml(path)
    data.pop("kind", None)
    assert detect_kind(data, str(path)) == _expected(path)


@pytest.mark.parametrize("name", ["data/mix_433.yaml", "sweeps/example_toyworld.yaml",
                                  "mixopt/fit.yaml", "mixopt/propose.yaml", "mixopt/finetune.yaml"])
def test_a_kind_field_is_accepted_by_models_without_one_and_changes_no_hash(name, tmp_path, at_root):
    src = ROOT / "configs" / name
    kind, plain = validate_file(src)
    assert "kind" not in type(plain).model_fields
    marked = tmp_path / src.name
    marked.write_text(f"kind: {kind}\n{src.read_text()}")
    again_kind, again = validate_file(marked)
    assert again_kind == kind and again == plain and config_hash(again) == config_hash(plain)
    # the stage's own loader (what `mixlab pretrain` etc. run) reads it too
    assert config_hash(KINDS[kind].load(marked)) == config_hash(plain)


def test_a_kind_that_contradicts_the_loader_names_the_line_and_the_fix(tmp_path):
    bad = tmp_path / "mix.yaml"
    bad.write_text("name: m\nkind: sweep\n" + (ROOT / "configs/data/mix_433.yaml").read_text().replace("name:", "#"))
    from mixlab.data.api import load_config_file

    with pytest.raises(ConfigError, match=r"mix\.yaml:2: field `kind`: 'sweep', but this is read as a data "
                                          r"config \(`mixlab data build`\)\. Write `kind: data`"):
        load_config_file(bad)


def test_unknown_kind_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"unknown config kind 'sweeps'\. Did you mean 'sweep'\?"):
        detect_kind({"kind": "sweeps"}, "x.yaml")


def test_no_marker_gives_advice_that_works(tmp_path, capsys):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("ratios: swarm/ratios.csv\nfolds: 3\n")  # `metrics` forgotten: nothing marks a fit config
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell which kind" in err and "fit: metrics+ratios" in err and "--set kind=<kind>" in err
    # following the advice gets to the real problem, named with its fix
    assert main(["validate", str(cfg), "--set", "kind=fit"]) == 2
    err = capsys.readouterr().err
    assert "field `metrics`: Field required. Add `metrics:` to the config." in err
    cfg.write_text("kind: fit\nratios: swarm/ratios.csv\nmetrics: swarm/metrics.csv\nfolds: 3\n")
    assert main(["validate", str(cfg)]) == 0
    assert "valid fit config" in capsys.readouterr().out


def test_a_quickstart_without_target_or_kind_is_ambiguous_and_kind_settles_it(tmp_path, at_root):
    src = ROOT / "src/mixlab/quickstart/default.yaml"
    text = "\n".join(l for l in src.read_text().splitlines() if not l.startswith(("kind:", "target:")))
    cfg = tmp_path / "qs.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match="it could be study or quickstart"):
        validate_file(cfg)
    kind, validated = validate_file(cfg, ["kind=quickstart"])
    assert kind == "quickstart" and validated.target == "people"


def test_study_validation_checks_every_stage_it_implies(at_root):
    with pytest.raises(ConfigError, match=r"methods\.sft merged into `finetune`.*field `train\.lr`"):
        validate_file(ROOT / "configs/studies/smollm2_gsm8k.yaml", ["methods.sft.train.lr=fast"])


def test_swarm_validation_checks_its_base_config(tmp_path, at_root):
    with pytest.raises(ConfigError, match=r"toyworld_base\.yaml.*field `train\.seq_len`"):
        validate_file(ROOT / "configs/mixopt/swarm_toyworld.yaml", ["set=[train.seq_len=0]"])
