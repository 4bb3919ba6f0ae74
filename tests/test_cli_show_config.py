"""`--show-config` writes YAML that loads back unchanged whatever the terminal width (it is piped
through a real process, no tty, at COLUMNS=40 and 80: rich's console used to wrap its comments)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mixlab.cli import main
from mixlab.config import config_hash
from mixlab.quickstart import default_config_path, load_quickstart_config
from mixlab.study import load_study

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "configs/studies/smollm2_gsm8k.yaml"


def _piped(args: list[str], columns: int) -> str:
    """stdout of `mixlab ARGS` in a child process whose stdout is a pipe (what `> my.yaml` gives)."""
    env = {**os.environ, "COLUMNS": str(columns), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", "import sys; from mixlab.cli import main; sys.exit(main(sys.argv[1:]))",
                           *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _shown(args: list[str], capsys) -> str:
    """stdout of `mixlab ARGS` run in this process (pytest's capture: no tty either)."""
    assert main(args) == 0
    return capsys.readouterr().out


def test_quickstart_show_config_is_the_packaged_file(tmp_path):
    text = _piped(["quickstart", "--show-config"], 40)
    packaged = default_config_path().read_text(encoding="utf-8")
    assert max(len(line) for line in packaged.splitlines()) > 80  # the comments that used to be wrapped
    assert text == packaged
    mine = tmp_path / "my.yaml"
    mine.write_text(text)
    assert load_quickstart_config(mine).config == load_quickstart_config(None).config
    assert main(["validate", str(mine)]) == 0


def test_quickstart_config_from_show_config_with_overrides_round_trips(tmp_path, capsys):
    mine = tmp_path / "my.yaml"
    mine.write_text(_shown(["quickstart", "--show-config"], capsys))
    sets = ["target=prose", "methods.grpo=null", "methods.sft_kl.anchor.coef=2"]
    resolved = _piped(["quickstart", "--config", str(mine), "--show-config", *[a for s in sets for a in ("--set", s)]], 80)
    again = tmp_path / "prose.yaml"
    again.write_text(resolved)
    expected = load_quickstart_config(None, sets)
    got = load_quickstart_config(again)
    assert got.config == expected.config and got.config.target == "prose" and "grpo" not in got.config.methods
    # the same stage folders: running --config prose.yaml resumes what the --set command would write
    out = tmp_path / "out"
    assert [got.run_dir(out, m) for m in got.finetune] == [expected.run_dir(out, m) for m in expected.finetune]
    assert got.sweep_dir(out) == expected.sweep_dir(out)


def test_study_show_config_round_trips_with_overrides(tmp_path, capsys):
    assert _shown(["study", str(STUDY), "--show-config"], capsys) == STUDY.read_text(encoding="utf-8")
    sets = ["eval.limit=5", "methods.grpo=null", "workers=1"]
    mine = tmp_path / "study.yaml"
    mine.write_text(_piped(["study", str(STUDY), "--show-config", *[a for s in sets for a in ("--set", s)]], 40))
    got, expected = load_study(mine), load_study(STUDY, sets)
    assert got.config == expected.config and config_hash(got.config) == config_hash(expected.config)
    assert got.eval.limit == 5 and "grpo" not in got.finetune and got.workers == 1
    out = tmp_path / "out"
    assert got.sweep_dir(out) == expected.sweep_dir(out)


def test_study_without_out_says_what_to_pass(capsys):
    assert main(["study", str(STUDY)]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
