"""Faults in the long jobs, counted: SIGKILLs at random (seeded) moments and concurrent sweeps,
a full disk under a result and a checkpoint, corrupt result files and a corrupt store."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mixlab.cli import sweep as sweep_cli
from mixlab.errors import DataError
from mixlab.runs import store as St
from mixlab.runs import sweep as S
from tests.test_sweep import _check_complete, _config, _lines, _start, _start_together, reference, world  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- kills and concurrency


def _kill_at_random(proc: subprocess.Popen, counter: Path, rng: random.Random) -> bool:
    """Once ``proc`` has scored a random 1-3 new results, SIGKILL it after a random delay of at most
    50 ms (in the middle of the next result, or between two); False if it ended first. Counting
    results rather than waiting a fixed time keeps work left over however fast the machine scores."""
    until = len(_lines(counter)) + rng.randint(1, 3)
    while len(_lines(counter)) < until and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


@pytest.mark.slow
def test_random_kills_and_concurrent_sweeps_lose_and_duplicate_nothing(world, reference, tmp_path):
    """Kill one sweep at seeded random moments, then run two at once and kill one of those too: the
    store ends with exactly the expected results, each recorded once in its log (computed or reused)."""
    cfg_path = _config(world, tmp_path / "faults")
    cfg = S.load_sweep_config(cfg_path)
    counter = tmp_path / "scored.log"
    rng = random.Random(20)
    kills = sum(_kill_at_random(_start(cfg_path, counter), counter, rng) for _ in range(2))
    assert kills == 2 and S.progress_counts(S.resolve(cfg))[0] < 14

    pair = _start_together(cfg_path, counter, tmp_path / "barrier")
    kills += _kill_at_random(pair[0], counter, rng)  # one of the two dies mid-work; the other goes on
    last = _start(cfg_path, counter)
    for p in (pair[1], last):
        assert p.wait(timeout=180) == 0, p.stderr.read().decode()

    events = _check_complete(cfg, reference[0])  # expected == present; one computed/reused event each
    computed = Counter((e["unit"], e["task"]) for e in events if e["event"] == "computed")
    assert max(computed.values()) == 1
    scored = Counter(_lines(counter))
    assert len(scored) == 14 and sum(scored.values()) - 14 <= kills  # re-scored only when killed mid-record
    assert {s.state for s in S.status(cfg)} == {"done"}


# --------------------------------------------------------------------------- corrupt files


def _status_app() -> typer.Typer:
    app = typer.Typer()
    sweep_cli.register(app)
    return app


def test_corrupt_result_file_and_store_are_found_by_rebuild_and_requeued(world, tmp_path):
    cfg_path = _config(world, tmp_path / "corrupt", checkpoints={"last": True, "steps": [0]})
    cfg = S.load_sweep_config(cfg_path)
    first = S.work(cfg)
    assert len(first.computed) == 6  # base, ft_a step 30, ft_b step 30 x 2 tasks
    exp = S.resolve(cfg)
    torn = Path(exp.out) / "evals" / "ft_a" / "step-30" / "tasks" / "tiny_mc" / "result.json"
    good = torn.read_text()
    torn.write_text(good[: len(good) // 2])  # a torn write: half a JSON document
    exp.store_path.write_bytes(b"\0" * 100 + exp.store_path.read_bytes()[100:])  # header smashed
    for suffix in ("-wal", "-shm"):
        Path(f"{exp.store_path}{suffix}").unlink(missing_ok=True)

    res = CliRunner().invoke(_status_app(), ["status", str(cfg_path), "--checkpoints"], env={"COLUMNS": "200"})
    # (mixlab's main() prints a DataError's message and exits 1; this bare app shows the exception)
    assert isinstance(res.exception, DataError) and "store.sqlite: not a readable results database" in str(res.exception)
    assert "rebuild it with `mixlab status CONFIG --rebuild`" in str(res.exception)

    res = CliRunner().invoke(_status_app(), ["status", str(cfg_path), "--checkpoints", "--rebuild"],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "was unreadable (file is not a database); rebuilt from the result files" in res.output
    assert "re-queued ft_a/step-30 tiny_mc: result.json does not parse" in res.output
    rows = {(c.run, c.step): (c.done, c.state) for c in S.status(cfg)}
    assert rows[("ft_a", 30)] == (1, "queued") and rows[("ft_b", 30)] == (2, "done")
    assert torn.with_name("result.json.corrupt").read_text() == good[: len(good) // 2] and not torn.exists()

    again = S.work(cfg)  # only the re-queued task is computed, and it equals the original
    assert again.computed == [("ft_a/step-30", "tiny_mc")] and not again.reused
    assert json.loads(torn.read_text())["metrics"] == json.loads(good)["metrics"]


# --------------------------------------------------------------------------- a full disk

_FULL_DISK = textwrap.dedent(r"""
    import json, os, subprocess, sys
    import torch
    from mixlab import atomic
    from mixlab.models.tokenizer import byte_tokenizer
    from mixlab.train import checkpoint
    from transformers import LlamaConfig, LlamaForCausalLM
    disk = sys.argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", disk], check=True)
    out = {}
    result = os.path.join(disk, "tasks", "t", "result.json")
    atomic.write_json(result, {"metrics": {"acc": 0.5}})
    tok = byte_tokenizer()
    def model(seed):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2))
    ckpt = checkpoint.step_dir(os.path.join(disk, "run"), 10)
    checkpoint.save(ckpt, model(1), None, None, {"step": 10}, tok)
    before = {k: v.clone() for k, v in model(1).state_dict().items()}
    with open(os.path.join(disk, "filler"), "wb") as f:  # leave ~100 KiB: less than one checkpoint
        while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > 100 << 10:
            f.write(b"x" * (16 << 10))
            f.flush()
    for what, write in (("result", lambda: atomic.write_json(result, {"metrics": {"acc": 0.9}, "pad": "y" * (1 << 20)})),
                        ("checkpoint", lambda: checkpoint.save(ckpt, model(2), None, None, {"step": 10}, tok))):
        try:
            write()
            out[what] = "written"
        except atomic.DiskFullError as e:
            out[what] = str(e)
    out["result_after"] = json.load(open(result))
    reloaded = LlamaForCausalLM.from_pretrained(ckpt)
    out["checkpoint_intact"] = all(torch.equal(before[k], v) for k, v in reloaded.state_dict().items() if k in before)
    out["leftovers"] = sorted(n for n in os.listdir(disk) + os.listdir(os.path.dirname(result)) if n.startswith("."))
    print(json.dumps(out))
""")


def test_a_full_disk_leaves_the_previous_result_and_checkpoint_intact(tmp_path):
    """On a 3 MiB tmpfs mounted in a private mount namespace (so nothing outlives the test)."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare to mount a small tmpfs (a full disk); not available here")
    probe = subprocess.run([unshare, "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace for the tmpfs: {probe.stderr.decode().strip()}")
    disk = tmp_path / "disk"
    disk.mkdir()
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([unshare, "--mount", "--propagation", "private", sys.executable, "-c", _FULL_DISK, str(disk)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    for what in ("result", "checkpoint"):
        assert out[what].startswith("[Errno 28] the disk is full: writing "), out[what]
        assert "is intact; free some space and run again" in out[what]
    assert out["result_after"] == {"metrics": {"acc": 0.5}}  # the previous version, whole
    assert out["checkpoint_intact"] is True
    assert out["leftovers"] == []  # no temporary siblings left behind
    assert list(disk.iterdir()) == []  # the tmpfs lived only in the test's mount namespace
