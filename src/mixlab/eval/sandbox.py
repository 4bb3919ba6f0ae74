"""Run untrusted, model-written Python in an operating-system sandbox.

The boundary is the kernel, not Python: each program runs under ``unshare`` in fresh user (when
not root), network, mount and PID namespaces, so

- there is no network at all (the new network namespace has only a downed loopback);
- every mount is read-only except a fresh scratch directory, which is the working directory and
  ``$HOME`` and is deleted afterwards;
- the program sees only its own processes (a new ``/proc``), so it cannot read the parent's
  environment through ``/proc/<pid>/environ``; its own environment is a minimal fixed one;
- it holds no capabilities (bounding set emptied, ``no_new_privs``, ``SECBIT_NOROOT``), and when
  the caller is root it also runs as ``nobody``;
- ``setrlimit`` caps CPU time, address space, processes, file size and open files;
- on timeout the whole process group is killed, and because the program's first process is the
  PID namespace's init, the kernel kills every process it left behind, even ones that escaped the
  process group with ``setsid``.

If the namespaces cannot be created the sandbox refuses to run anything (``SandboxUnavailable``):
it never falls back to running code unconfined.

This file doubles as the in-namespace launcher: ``python -I sandbox.py --launch ...`` is what
``unshare`` runs. The launcher comes first and exits before the parent side's imports, so it
loads only ``ctypes``/``os``/``resource``/``sys`` (it starts once per program; the rest would
add ~100 ms each time), and it must never import anything outside the standard library.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

NOBODY = 65534
_SETUP_FAILED = 125  # exit code of the launcher when it could not build the sandbox
_SETUP_MARK = "mixlab-sandbox-setup-error:"

# --------------------------------------------------------------------------- launcher side
# Runs inside the new namespaces as their root (PID 1 of the new PID namespace).

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_SYS_MOUNT_SETATTR = 442  # same number on x86_64 and arm64 (new syscalls share one table)
_PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_SET_NO_NEW_PRIVS = 24, 28, 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SECBITS_LOCKED_NOROOT = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20 | 0x40 | 0x80


class _MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setattr(libc, path: str, attr_set: int, attr_clr: int, flags: int) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    ret = libc.syscall(
        _SYS_MOUNT_SETATTR, _AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)
    )
    _check(ret, f"mount_setattr({path})")


def _lock_filesystem(libc, scratch: str) -> None:
    """Everything read-only and nosuid, except the scratch directory; a private /proc."""
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    _check(libc.mount(scratch.encode(), scratch.encode(), None, _MS_BIND, None), "bind scratch")
    _check(
        libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None),
        "mount /proc",
    )
    ro = _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
    _setattr(libc, "/", ro, 0, _AT_RECURSIVE)
    _setattr(libc, scratch, 0, _MOUNT_ATTR_RDONLY, 0)


def _drop_privileges(libc, uid: int) -> None:
    """No capabilities now or after any exec; as real root, also become ``uid`` (nobody)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    for cap in range(last_cap + 1):
        _check(libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient caps")
    _check(libc.prctl(_PR_SET_SECUREBITS, _SECBITS_LOCKED_NOROOT, 0, 0, 0), "set securebits")
    if uid >= 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), ctypes.byref(data)), "clear capabilities")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")


def _set_limits(spec: str) -> None:
    cpu, mem_mb, nproc, fsize_mb, nofile = (int(x) for x in spec.split(","))
    for res, value in (
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, mem_mb << 20),
        (resource.RLIMIT_NPROC, nproc),
        (resource.RLIMIT_FSIZE, fsize_mb << 20),
        (resource.RLIMIT_NOFILE, nofile),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(res, (value, value))


def _run_untrusted() -> None:
    """Execute ./program.py as ``__main__`` in this (already confined) process; never returns."""
    sys.argv = ["program.py"]
    code = 0
    try:
        with open("program.py", encoding="utf-8") as f:
            compiled = compile(f.read(), "program.py", "exec")
        exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - report whatever the program raised, as Python would
        import traceback  # only now: it costs ~10 ms per program to import

        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a full disk or closed pipe is the program's problem
            pass
    os._exit(code & 0xFF)


def _launch(scratch: str, uid: int, limits: str) -> int:
    """PID 1 of the sandbox: lock everything down, run the program in a child, reap, exit."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _lock_filesystem(libc, scratch)
    except OSError as e:
        print(f"{_SETUP_MARK} {e}", file=sys.stderr)
        return _SETUP_FAILED
    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(scratch)  # while still root: the path may not be searchable by nobody
            _drop_privileges(libc, uid)
            _set_limits(limits)
        except OSError as e:
            print(f"{_SETUP_MARK} {e}", file=sys.stderr, flush=True)
            os._exit(_SETUP_FAILED)
        _run_untrusted()
    while True:  # as init we must reap orphans; stop when the program itself has ended
        done, status = os.wait()
        if done == pid:
            return os.waitstatus_to_exitcode(status) if status & 0x7F == 0 else 128 + (status & 0x7F)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--launch":
    sys.exit(_launch(sys.argv[2], int(sys.argv[3]), sys.argv[4]))


# The launcher above runs once per program, so it stops before these imports (~100 ms).
import dataclasses  # noqa: E402
import functools  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Sequence  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Literal  # noqa: E402

from mixlab.errors import MixlabError  # noqa: E402

Status = Literal["passed", "failed", "timeout", "error"]

_TAIL_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits for one program (the defaults suit HumanEval/MBPP-sized tests)."""

    timeout_s: float = 10.0  # wall clock; the CPU limit is derived from it
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    max_processes: int = 32  # RLIMIT_NPROC for the sandbox user
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file it may write (stdout/stderr included)
    max_open_files: int = 64  # RLIMIT_NOFILE


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What happened to one program. ``status`` is passed/failed/timeout/error."""

    status: Status
    returncode: int | None
    stdout: str  # the last few KiB only
    stderr: str
    duration_s: float
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class SandboxUnavailable(MixlabError):
    """The sandbox cannot be built on this machine (no namespaces, no usable interpreter);
    nothing was run. Raised up front rather than scoring every program as failed."""


# --------------------------------------------------------------------------- parent side


@functools.cache
def unshare_command() -> tuple[str, ...]:
    """The ``unshare`` prefix that works for this user, probed once; fails closed.

    As root the program gets new net/mount/PID namespaces and later drops to ``nobody``. Other
    users cannot create those directly, so they also get a user namespace (``-r`` maps them to
    root inside it, which gives the capabilities to set the sandbox up; the launcher then drops
    them all before running the program).
    """
    exe = shutil.which("unshare") or "/usr/bin/unshare"
    base = [exe, "--net", "--mount", "--pid", "--fork", "--kill-child"]
    candidates = [base, [exe, "--user", "--map-root-user", *base[1:]]]
    if os.geteuid() != 0:
        candidates = candidates[1:]
    errors = []
    for cmd in candidates:
        try:
            probe = subprocess.run([*cmd, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            errors.append(f"{' '.join(cmd)}: {e}")
            continue
        if probe.returncode == 0:
            return tuple(cmd)
        errors.append(f"{' '.join(cmd)}: {probe.stderr.decode(errors='replace').strip()}")
    raise SandboxUnavailable(
        "cannot create the namespaces the code sandbox needs, so no model-written code was run.\n"
        + "\n".join(errors)
        + "\nFix: install util-linux `unshare` and allow user namespaces "
        "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0), or run as root."
    )


def _world_readable(path: Path) -> bool:
    """Whether another user (``nobody``) can reach and read ``path``."""
    path = path.resolve()
    if not path.exists() or not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)


@functools.cache
def sandbox_python() -> str:
    """The interpreter that runs sandboxed programs (and the in-namespace launcher).

    Normally this one. As root the program runs as ``nobody``, which must be able to read the
    interpreter and its standard library; an interpreter installed under root's home (pyenv,
    uv) is not, so the system ``python3`` is used instead.
    """
    if os.geteuid() != 0 or (
        _world_readable(Path(sys.executable)) and _world_readable(Path(sys.base_prefix) / "lib")
    ):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if _world_readable(Path(candidate)):
            return candidate
    raise SandboxUnavailable(
        f"running as root, the sandbox runs code as user {NOBODY}, who cannot read {sys.executable} "
        "and no world-readable python3 was found. Install one (apt-get install python3) or pass "
        "`python=` explicitly."
    )


def _clean_env(scratch: Path) -> dict[str, str]:
    """A fixed minimal environment: nothing of the parent's (secrets, tokens, paths) leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def _tail(f, limit: int = _TAIL_BYTES) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", errors="replace")


def _classify(rc: int, stderr: str) -> tuple[Status, str]:
    if rc == 0:
        return "passed", ""
    if rc == _SETUP_FAILED and _SETUP_MARK in stderr:
        return "error", stderr.split(_SETUP_MARK, 1)[1].strip().splitlines()[0]
    if rc < 0 or rc > 128:
        signum = -rc if rc < 0 else rc - 128
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        hint = {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (killed)"}.get(name, "")
        return "failed", f"terminated by {name}{hint}"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return "failed", f"exit code {rc}" + (f": {last}" if last else "")


def run_program(
    source: str,
    limits: Limits = Limits(),
    python: str | None = None,
    scratch_parent: str | Path | None = None,
) -> SandboxResult:
    """Run a Python program's ``source`` in the sandbox and report how it ended.

    Exit code 0 is ``passed``; an exception, a non-zero exit or a signal is ``failed``; running
    past ``limits.timeout_s`` is ``timeout`` (the whole process tree is killed); ``error`` means
    the sandbox itself could not be set up for this program. Never raises for anything the
    program does; raises ``SandboxUnavailable`` if namespaces are not available at all.
    """
    prefix = unshare_command()
    as_root = os.geteuid() == 0
    scratch = Path(tempfile.mkdtemp(prefix="mixlab-sbx-", dir=scratch_parent))
    if as_root and not all(p.stat().st_mode & stat.S_IXOTH for p in scratch.parents):
        shutil.rmtree(scratch)
        raise ValueError(
            f"scratch_parent {scratch_parent} is not searchable by user {NOBODY}, who runs the "
            "sandboxed code when mixlab runs as root; pick a folder whose parents are all o+x"
        )
    try:
        (scratch / "program.py").write_text(source, encoding="utf-8")
        if as_root:  # the program will run as nobody and must own its scratch space
            for p in (scratch, scratch / "program.py"):
                os.chown(p, NOBODY, NOBODY)
        cpu = max(1, int(limits.timeout_s) + 1)
        launch = [
            *prefix,
            python or sandbox_python(),
            "-I",
            "-B",
            str(Path(__file__).resolve()),
            "--launch",
            str(scratch),
            str(NOBODY if as_root else -1),
            ",".join(
                str(v)
                for v in (cpu, limits.memory_mb, limits.max_processes, limits.max_file_mb, limits.max_open_files)
            ),
        ]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.monotonic()
            proc = subprocess.Popen(
                launch,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=scratch,
                env=_clean_env(scratch),
                start_new_session=True,  # own session and process group, killed as one
            )
            timed_out = not _exits_within(proc.pid, limits.timeout_s)
            if timed_out:
                _kill_group(proc.pid)
            rc = proc.wait()
            duration = time.monotonic() - start
            _kill_group(proc.pid)  # anything left in the group once the launcher is gone
            stdout, stderr = _tail(out), _tail(err)
        if timed_out:
            status, reason = "timeout", f"killed after {limits.timeout_s:g}s wall clock"
        else:
            status, reason = _classify(rc, stderr)
        return SandboxResult(status, None if timed_out else rc, stdout, stderr, duration, reason)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _exits_within(pid: int, timeout: float) -> bool:
    """Wait for ``pid`` to exit, up to ``timeout`` s; True if it did (it is not reaped).

    A pidfd wakes us the moment the process ends; ``Popen.wait(timeout)`` polls with sleeps
    of up to 50 ms, which for ~100 ms programs was a large share of the sandbox's overhead.
    """
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(fd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@functools.cache
def check_sandbox() -> None:
    """Build the sandbox once with a trivial program; raise ``SandboxUnavailable`` if the
    namespaces, the read-only remount or the privilege drop do not work here."""
    probe = run_program("pass", Limits(timeout_s=30))
    if probe.status != "passed":
        raise SandboxUnavailable(
            f"the code sandbox does not work on this machine ({probe.status}: {probe.reason}); "
            f"no model-written code was run.\n{probe.stderr[-1000:]}"
        )


def run_many(
    sources: Iterable[str], limits: Limits = Limits(), max_workers: int = 2
) -> list[SandboxResult]:
    """Run many programs, at most ``max_workers`` at a time, results in input order.

    Threads only wait on child processes, so the concurrency limit is the number of sandboxed
    programs alive at once; keep it near the number of cores.
    """
    check_sandbox()  # fail once, clearly, before starting anything
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return list(pool.map(lambda s: run_program(s, limits), sources))


def build_test_program(
    program: str,
    tests: str | Sequence[str],
    entry_point: str | None = None,
    setup: str = "",
) -> str:
    """Glue a candidate program to its tests, HumanEval- or MBPP-style.

    HumanEval: ``program`` is prompt + completion, ``tests`` the ``test`` field that defines
    ``check(candidate)``, and ``entry_point`` the function to pass to it. MBPP: ``tests`` is the
    list of ``assert`` lines and ``setup`` the ``test_setup_code``.
    """
    test_code = tests if isinstance(tests, str) else "\n".join(tests)
    parts = [program, setup, test_code]
    if entry_point:
        parts.append(f"check({entry_point})")
    return "\n\n".join(p for p in parts if p) + "\n"


def run_tests(
    program: str,
    tests: str | Sequence[str],
    entry_point: str | None = None,
    setup: str = "",
    timeout: float = 10.0,
    limits: Limits | None = None,
) -> SandboxResult:
    """Run ``program`` against its tests in the sandbox; ``passed`` means every test passed."""
    lim = dataclasses.replace(limits or Limits(), timeout_s=timeout)
    return run_program(build_test_program(program, tests, entry_point, setup), lim)
