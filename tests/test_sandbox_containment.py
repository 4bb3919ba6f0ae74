"""The code sandbox against hostile programs, one class of attack per test (README, "Security of
model-written code", lists each and what stops it). Every test is bounded: seconds of wall clock,
small limits, and the process table is checked afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import mixlab
from mixlab.eval.sandbox import NOBODY, Limits, run_program, run_tests


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


# --------------------------------------------------------------------------- network


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
    assert "OSError: [Errno 101] Network is unreachable" in res.stderr


def test_no_dns_and_no_datagrams_to_a_local_resolver():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as resolver:
        resolver.bind(("127.0.0.1", 0))
        port = resolver.getsockname()[1]
        res = run_program(
            "import socket\n"
            "for host in ('pypi.org', 'localhost'):\n"
            "    try:\n"
            "        print(host, socket.getaddrinfo(host, 443))\n"
            "    except OSError as e:\n"
            "        print(host, 'unresolved', type(e).__name__)\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "try:\n"
            f"    s.sendto(b'exfiltrate', ('127.0.0.1', {port}))\n"
            "    print('sent')\n"
            "except OSError as e:\n"
            "    print('not sent', e.errno)\n"
        )
        resolver.settimeout(0.3)
        with pytest.raises(TimeoutError):
            resolver.recvfrom(100)
    assert res.status == "ok", res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "pypi.org unresolved gaierror"  # no /etc/resolv.conf, no route
    assert lines[2] == "not sent 101"  # ENETUNREACH


# --------------------------------------------------------------------------- files


def test_files_outside_scratch_are_not_there(tmp_path, monkeypatch):
    secret = Path("/tmp") / f"mixlab-secret-{uuid.uuid4().hex}.txt"
    secret.write_text("the secret")
    secret.chmod(0o644)  # world-readable: only the private root keeps it out of reach
    project_file = Path(mixlab.__file__).resolve()
    targets = [str(secret), str(project_file), str(Path(__file__).resolve()), "/etc/shadow", "/etc/passwd",
               "/root/.bash_history", os.environ.get("MIXLAB_DATA_DIR", "/work/shared/data") + "/README.md"]
    try:
        res = run_program(
            "for path in " + repr(targets) + ":\n"
            "    try:\n"
            "        print('GOT', path, open(path).read()[:20])\n"
            "    except OSError as e:\n"
            "        print('missing', path, e.errno)\n"
            "import os\n"
            "print(sorted(os.listdir('/')))\n"
        )
    finally:
        secret.unlink()
    assert res.status == "ok", res.stderr
    assert "GOT" not in res.stdout and "the secret" not in res.stdout
    assert res.stdout.count("missing") == len(targets)
    assert all(line.endswith(" 2") for line in res.stdout.splitlines()[:-1])  # ENOENT: not even there
    assert res.stdout.splitlines()[-1] == "['bin', 'dev', 'etc', 'lib', 'lib64', 'proc', 'sbin', 'usr', 'work']"


def test_writes_outside_scratch_are_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    targets = [str(outside), f"/tmp/mixlab-escape-{uuid.uuid4().hex}", "/usr/mixlab-escape", "/escape",
               "/dev/mixlab-escape", "/proc/mixlab-escape"]
    res = run_program(
        "hits = []\n"
        f"for target in {targets!r}:\n"
        "    try:\n"
        "        open(target, 'w').write('escaped')\n"
        "        hits.append(target)\n"
        "    except OSError as e:\n"
        "        print('refused', e.errno)\n"
        "print(hits)\n"
    )
    assert res.status == "ok", res.stderr
    assert res.stdout.count("refused") == len(targets) and res.stdout.splitlines()[-1] == "[]"
    assert not outside.exists() and not Path(targets[1]).exists()


def test_disk_fill_stops_at_the_scratch_cap():
    res = run_program(
        "import errno\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        with open(f'f{i}', 'wb') as f:\n"
        "            for _ in range(8):\n"
        "                f.write(b'x' * (1 << 20))\n"
        "                written += 1\n"
        "except OSError as e:\n"
        "    print(written, errno.errorcode[e.errno])\n",
        Limits(disk_mb=8, max_file_mb=4, timeout_s=10),
    )
    assert res.status == "ok", res.stderr
    written, error = res.stdout.split()
    assert error in ("ENOSPC", "EFBIG") and int(written) <= 8
    res = run_program("import os\nprint(os.statvfs('.').f_blocks * os.statvfs('.').f_frsize >> 20)", Limits(disk_mb=8))
    assert res.stdout.strip() == "8"  # a tmpfs of 8 MiB: the host's disk is never touched


# --------------------------------------------------------------------------- environment


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
    assert res.status == "ok", res.stderr
    assert "'HOME': '/work'" in res.stdout  # it did print its own environment
    assert secret not in res.stdout + res.stderr
    assert "MIXLAB_TEST_SECRET" not in res.stdout


# --------------------------------------------------------------------------- processes and resources


def _unique_limits(**kw) -> tuple[Limits, str]:
    """Limits no other concurrent sandbox uses, and the launcher argument that shows them: every
    process of the sandbox (forks of its launcher) carries it in its command line."""
    limits = Limits(memory_mb=600 + uuid.uuid4().int % 400, **kw)
    cpu = max(1, int(limits.timeout_s) + 1)
    return limits, f" {cpu},{limits.memory_mb},{limits.max_processes},"


def test_fork_bomb_is_bounded_by_the_process_limit():
    limits, mark = _unique_limits(timeout_s=2, max_processes=16)
    program = (
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    res = run_program(program, limits)
    assert res.status == "timeout"
    time.sleep(0.2)
    assert _processes_mentioning(mark) == []  # the kernel killed the whole namespace with its init
    assert run_program("print('after the bomb')").stdout == "after the bomb\n"


def test_memory_bomb_hits_the_address_space_limit():
    res = run_program("buf = bytearray(4 << 30)\nprint('allocated')", Limits(memory_mb=512))
    assert res.status == "failed"
    assert "MemoryError" in res.stderr and "allocated" not in res.stdout
    grow = run_program("xs = []\nwhile True:\n    xs.append(bytearray(1 << 20))\n", Limits(memory_mb=256, timeout_s=10))
    assert grow.status == "failed" and "MemoryError" in grow.stderr


def test_cpu_loop_times_out_and_cpu_limit_applies():
    res = run_program("while True:\n    pass\n", Limits(timeout_s=1.5))
    assert res.status == "timeout" and res.returncode is None and 1.5 <= res.duration_s < 3.5
    # and a CPU-time limit derived from the timeout bounds busy children the wall clock would miss
    cpu = run_program("import resource\nprint(resource.getrlimit(resource.RLIMIT_CPU))", Limits(timeout_s=1.5))
    assert cpu.stdout.strip() == "(2, 2)"


_DAEMONS = (
    "import os, signal, subprocess, sys, time\n"
    "MARK = '{marker}'\n"
    "stubborn = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'\n"
    "subprocess.Popen([sys.executable, '-c', stubborn, MARK + '-stubborn'], start_new_session=True)\n"
    "if os.fork() == 0:\n"  # the classic double fork: the daemon's parent exits at once
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', MARK + '-daemon'])\n"
    "    os._exit(0)\n"
    "time.sleep(0.5)\n"
)


@pytest.mark.parametrize("ending", ["exits", "times out"])
def test_children_that_ignore_sigterm_and_daemons_do_not_survive(ending):
    marker = f"mixlab-orphan-{uuid.uuid4().hex}"
    program = _DAEMONS.replace("{marker}", marker) + (
        "print(len([p for p in os.listdir('/proc') if p.isdigit()]))\n" if ending == "exits" else "while True:\n    pass\n")
    res = run_program(program, Limits(timeout_s=3))
    assert res.status == ("ok" if ending == "exits" else "timeout"), res.stderr
    if ending == "exits":
        assert int(res.stdout) >= 4  # init, the program, the stubborn child and the daemon were all alive
    time.sleep(0.2)
    assert _processes_mentioning(marker) == []


def test_signals_and_ptrace_cannot_reach_processes_outside():
    """A process of the same user as the program (nobody), outside the sandbox: the program can
    neither see, signal nor trace it (a separate PID namespace)."""
    victim = subprocess.Popen(["sleep", "30"], user=NOBODY if os.geteuid() == 0 else None)
    try:
        res = run_program(
            "import ctypes, os, signal\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"print('visible', os.path.exists('/proc/{victim.pid}'))\n"
            "try:\n"
            f"    os.kill({victim.pid}, signal.SIGKILL)\n"
            "    print('signalled')\n"
            "except OSError as e:\n"
            "    print('kill refused', e.errno)\n"
            f"print('ptrace', libc.ptrace(16, {victim.pid}, 0, 0), ctypes.get_errno())\n"
            "os.kill(-1, signal.SIGKILL)\n"
        )
        time.sleep(0.1)
        assert victim.poll() is None  # still alive
    finally:
        victim.kill()
        victim.wait()
    assert res.stdout.splitlines()[:3] == ["visible False", "kill refused 3", "ptrace -1 3"]  # ESRCH


def test_hostile_tests_mode_is_contained_too():
    """run_tests runs the program with the same confinement as run_program."""
    res = run_tests(
        "import os\nhits = []\nfor p in ('/tmp', '/work/main', '/root'):\n    hits += [p] if os.path.exists(p + '/.') and os.listdir(p) else []\n"
        "def f():\n    return hits\n",
        ["assert f() == []"],
    )
    assert res.status == "passed", res.reason
