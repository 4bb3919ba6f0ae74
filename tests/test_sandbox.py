"""The code sandbox: hostile programs are contained; canonical HumanEval/MBPP solutions pass."""

from __future__ import annotations

import ast
import gzip
import json
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from mixlab.eval.sandbox import Limits, build_test_program, run_many, run_program, run_tests


def _processes_mentioning(marker: str) -> list[str]:
    """Command lines of live processes (zombies have none) that contain ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                found.append(f"{entry.name}: {cmd}")
    return found


# --------------------------------------------------------------------------- basics


def test_passing_failing_and_output():
    ok = run_program("print('hello from the sandbox')")
    assert ok.status == "passed" and ok.returncode == 0
    assert ok.stdout.strip() == "hello from the sandbox"
    bad = run_program("assert 1 + 1 == 3, 'arithmetic'")
    assert bad.status == "failed" and bad.returncode == 1
    assert "AssertionError: arithmetic" in bad.stderr and "AssertionError" in bad.reason
    exited = run_program("import sys; sys.exit(3)")
    assert exited.status == "failed" and exited.returncode == 3


@pytest.fixture
def scratch_parent():
    """A folder for scratch directories that the sandbox user can reach (pytest's is 0700)."""
    with tempfile.TemporaryDirectory(prefix="mixlab-test-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


def test_scratch_is_cwd_and_home_writable_then_removed(scratch_parent):
    parent = scratch_parent
    res = run_program(
        "import os\n"
        "open('out.txt', 'w').write('x' * 10)\n"
        "print(os.getcwd() == os.environ['HOME'], open('out.txt').read())\n",
        scratch_parent=parent,
    )
    assert res.status == "passed", res.stderr
    assert res.stdout.split() == ["True", "xxxxxxxxxx"]
    assert list(parent.iterdir()) == []  # the scratch directory is gone


# --------------------------------------------------------------------------- hostile code


def test_file_writes_outside_scratch_are_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    in_home = Path.home() / f"mixlab-sandbox-escape-{uuid.uuid4().hex}.txt"
    program = (
        "import sys\n"
        "hits = []\n"
        f"for target in {[str(outside), str(in_home), '/tmp/mixlab-escape-' + uuid.uuid4().hex]!r}:\n"
        "    try:\n"
        "        open(target, 'w').write('escaped')\n"
        "        hits.append(target)\n"
        "    except OSError as e:\n"
        "        print('refused', type(e).__name__, e.errno)\n"
        "sys.exit(1 if hits else 0)\n"
    )
    res = run_program(program)
    assert res.status == "passed", res.stdout + res.stderr
    assert res.stdout.count("refused") == 3
    assert not outside.exists() and not in_home.exists()


def test_network_is_unreachable_even_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the listener is real: from outside the sandbox it accepts
        server.accept()[0].close()
        res = run_program(
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "print('CONNECTED')\n"
        )
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()
    assert res.status == "failed"
    assert "CONNECTED" not in res.stdout
    assert "OSError" in res.stderr or "unreachable" in res.stderr.lower()


def test_parent_environment_is_invisible(monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("MIXLAB_TEST_SECRET", secret)
    program = (
        "import os, glob\n"
        "print(dict(os.environ))\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        "        print(path, open(path, 'rb').read())\n"
        "    except OSError as e:\n"
        "        print(path, e)\n"
    )
    res = run_program(program)
    assert res.status == "passed", res.stderr
    assert "PATH" in res.stdout  # it did print its own environment
    assert secret not in res.stdout + res.stderr
    assert "MIXLAB_TEST_SECRET" not in res.stdout


def test_infinite_loop_times_out_and_kills_everything(tmp_path):
    marker = f"mixlab-orphan-{uuid.uuid4().hex}"
    program = (
        "import subprocess, sys\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
        f"'{marker}'], start_new_session=True)\n"
        "while True:\n"
        "    pass\n"
    )
    start = time.monotonic()
    res = run_program(program, Limits(timeout_s=2))
    assert res.status == "timeout" and res.returncode is None
    assert 2 <= res.duration_s < 4 and time.monotonic() - start < 6
    time.sleep(0.2)
    assert _processes_mentioning(marker) == []


def test_fork_bomb_is_contained(scratch_parent):
    parent = scratch_parent
    program = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = run_program(program, Limits(timeout_s=3, max_processes=16), scratch_parent=parent)
    assert res.status == "timeout"
    time.sleep(0.2)
    assert _processes_mentioning(str(parent)) == []
    # nothing is left holding the sandbox user's process budget
    assert run_program("print('after the bomb')").stdout == "after the bomb\n"


def test_memory_hog_hits_the_address_space_limit():
    res = run_program("buf = bytearray(4 << 30)\nprint('allocated')", Limits(memory_mb=512))
    assert res.status == "failed"
    assert "MemoryError" in res.stderr and "allocated" not in res.stdout


def test_cpu_time_limit_applies_without_wall_clock_timeout():
    """CPU limit (derived from the timeout) stops a busy loop even if the wall clock did not."""
    res = run_program("while True:\n    pass\n", Limits(timeout_s=1.2))
    assert res.status in ("timeout", "failed")
    if res.status == "failed":
        assert "SIGXCPU" in res.reason


# --------------------------------------------------------------------------- HumanEval / MBPP


def _humaneval(data_dir: Path) -> list[dict]:
    with gzip.open(data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _mbpp(data_dir: Path) -> list[dict]:
    with (data_dir / "mbpp" / "mbpp.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _humaneval_program(row: dict, completion: str) -> str:
    return build_test_program(row["prompt"] + completion, row["test"], row["entry_point"])


def _mbpp_program(row: dict, code: str) -> str:
    return build_test_program(code, row["test_list"], setup=row["test_setup_code"])


def _mbpp_stub(row: dict) -> str:
    """A wrong solution: the tested function, defined with the right name, returning None."""
    defined = {n.name for n in ast.walk(ast.parse(row["code"])) if isinstance(n, ast.FunctionDef)}
    called = [
        n.func.id
        for n in ast.walk(ast.parse(row["test_list"][0]))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in defined
    ]
    return f"def {called[0]}(*args, **kwargs):\n    return None\n"


def _pass_rate(programs: list[str]) -> tuple[float, list[int]]:
    results = run_many(programs, Limits(timeout_s=20), max_workers=2)
    failed = [i for i, r in enumerate(results) if not r.passed]
    return 1 - len(failed) / len(results), failed


@pytest.mark.realdata
def test_run_tests_humaneval_and_mbpp_styles(data_dir):
    he = _humaneval(data_dir)[0]
    assert run_tests(he["prompt"] + he["canonical_solution"], he["test"], he["entry_point"]).passed
    wrong = run_tests(he["prompt"] + "    return not True\n", he["test"], he["entry_point"])
    assert wrong.status == "failed" and "AssertionError" in wrong.stderr
    mb = _mbpp(data_dir)[1]
    assert run_tests(mb["code"], mb["test_list"], setup=mb["test_setup_code"]).passed
    assert run_tests(_mbpp_stub(mb), mb["test_list"]).status == "failed"


@pytest.mark.realdata
def test_canonical_and_wrong_solutions_sample(data_dir):
    """A spread sample (every 20th task) so the default run stays quick; the full sets are slow."""
    he, mb = _humaneval(data_dir)[::20], _mbpp(data_dir)[::20]
    good = [_humaneval_program(r, r["canonical_solution"]) for r in he]
    good += [_mbpp_program(r, r["code"]) for r in mb]
    bad = [_humaneval_program(r, "    return None\n") for r in he]
    bad += [_mbpp_program(r, _mbpp_stub(r)) for r in mb]
    results = run_many(good + bad, Limits(timeout_s=20), max_workers=2)
    assert [r.status for r in results[: len(good)]] == ["passed"] * len(good)
    assert all(r.status == "failed" for r in results[len(good) :])


@pytest.mark.slow
@pytest.mark.realdata
def test_all_canonical_humaneval_solutions_pass(data_dir):
    rows = _humaneval(data_dir)
    assert len(rows) == 164
    rate, failed = _pass_rate([_humaneval_program(r, r["canonical_solution"]) for r in rows])
    assert rate == 1.0, [rows[i]["task_id"] for i in failed]


@pytest.mark.slow
@pytest.mark.realdata
def test_all_canonical_mbpp_solutions_pass(data_dir):
    rows = _mbpp(data_dir)
    assert len(rows) == 974
    rate, failed = _pass_rate([_mbpp_program(r, r["code"]) for r in rows])
    assert rate == 1.0, [rows[i]["task_id"] for i in failed]
