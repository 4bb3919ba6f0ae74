"""Run untrusted, model-written Python in an operating-system sandbox, and test it soundly.

**Containment.** The boundary is the kernel, not Python: each program runs under ``unshare`` in
fresh user (when not root), network, mount and PID namespaces (the code that runs in there is
:mod:`mixlab.eval.sandbox_inside`), so

- there is no network at all (the new network namespace has only a downed loopback; no DNS);
- the file system is a new minimal root: ``/usr``, the interpreter and ``/dev/null``-like devices,
  read-only, plus a size-capped tmpfs scratch at ``/work`` (cwd and ``$HOME``). The project, the
  data, ``/tmp``, ``/home``, ``/etc`` are not there at all, and a disk-filling program fills only
  the scratch's cap;
- the program sees only its own processes (a new ``/proc``), so it can neither signal, trace nor
  read the environment of anything outside; its own environment is a minimal fixed one;
- it holds no capabilities (bounding set emptied, ``no_new_privs``, ``SECBIT_NOROOT``), and when
  the caller is root it runs as ``nobody``, so ``RLIMIT_NPROC`` applies to it;
- ``setrlimit`` caps CPU time, address space, processes, file size and open files;
- on timeout the whole process group is killed, and because the sandbox's first process is the
  PID namespace's init, the kernel kills every process left behind when it exits, even ones that
  escaped the process group with ``setsid`` or ignore SIGTERM.

If the namespaces cannot be created the sandbox refuses to run anything (``SandboxUnavailable``):
it never falls back to running code unconfined.

**Testing (threat model).** The candidate program is adversarial: it may exit early (``sys.exit``,
``os._exit``, ``atexit``), patch ``builtins``/``sys.excepthook``/the assert machinery, print fake
results, look for the tests (files, ``/proc``, ``gc``, frames), return objects whose ``__eq__``
always says True, or kill processes. In the HumanEval/MBPP harnesses the candidate and its
assertions share one interpreter, so all of this works and "exit code 0" proves nothing. Here:

- the tests run in a separate *test runner* process that never executes the candidate's code. The
  candidate's functions and objects are proxies; each call is a request to the candidate's process,
  and answers come back as data decoded by a restricted unpickler into built-in and standard-library
  value types only. Every comparison the tests make runs on genuine ``int``/``list``/... objects;
  anything else stays in the candidate and compares by identity (so a forged ``__eq__`` fails);
- names the tests take from Python itself (``len``, ``sorted``, ``math``) and helpers the dataset's
  prompt defines (HumanEval's ``poly``) are the runner's own, not the candidate's redefinitions;
- the runner reads the tests and a per-run random token from a file descriptor the candidate's
  process closed before its code started, runs as another uid (when root) and is non-dumpable, so
  the candidate cannot read, trace or (as another uid) signal it; it writes one report line per test
  and the token after the last one to a file only it and the init process hold;
- the parent (here) says ``passed`` only if that report carries the token and every one of the
  expected tests ran and passed; a candidate that ends, is killed, kills the runner or breaks the
  protocol before that is ``failed``, with the reason.

What this does not stop: a candidate that computes the right answers (by any means it can see,
e.g. hard-coding the arguments it is called with) passes, as it would anywhere.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import json
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from mixlab.errors import MixlabError
from mixlab.eval import sandbox_inside as inside

NOBODY = 65534  # runs the candidate program when mixlab runs as root
RUNNER_UID = 65533  # runs the test runner when root: another uid, so the program cannot signal it

Status = Literal["passed", "ok", "failed", "timeout", "error"]

_TAIL_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits for one program (the defaults suit HumanEval/MBPP-sized tests)."""

    timeout_s: float = 10.0  # wall clock; the CPU limit is derived from it
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    max_processes: int = 32  # RLIMIT_NPROC for the sandbox user
    max_file_mb: int = 16  # RLIMIT_FSIZE: largest file it may write (stdout/stderr included)
    max_open_files: int = 64  # RLIMIT_NOFILE
    disk_mb: int = 64  # size of the scratch tmpfs: everything it may write, together


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What happened to one program.

    ``status``: ``passed`` (tests only: every test ran and passed, proven by the test runner's
    report), ``ok`` (a plain program exited 0: says nothing about tests), ``failed``, ``timeout``,
    ``error`` (the sandbox could not be set up, or the tests themselves are broken).
    """

    status: Status
    returncode: int | None
    stdout: str  # the last few KiB only
    stderr: str
    duration_s: float
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclasses.dataclass(frozen=True)
class CodeTests:
    """A candidate program and the tests it must pass, HumanEval- or MBPP-style.

    HumanEval: ``tests`` is the ``test`` field defining ``check(candidate)``, ``entry_point`` the
    function passed to it and ``prompt`` the task's prompt (its helpers are trusted). MBPP:
    ``tests`` is the list of ``assert`` lines (each one test) and ``setup`` ``test_setup_code``.
    """

    program: str
    tests: str | Sequence[str]
    entry_point: str | None = None
    setup: str = ""
    prompt: str = ""


class SandboxUnavailable(MixlabError):
    """The sandbox cannot be built on this machine (no namespaces, no usable interpreter);
    nothing was run. Raised up front rather than scoring every program as failed."""


# --------------------------------------------------------------------------- the sandbox itself


@functools.cache
def unshare_command() -> tuple[str, ...]:
    """The ``unshare`` prefix that works for this user, probed once; fails closed.

    As root the program gets new net/mount/PID namespaces and later drops to ``nobody``. Other
    users cannot create those directly, so they also get a user namespace (``-r`` maps them to
    root inside it, which gives the capabilities to set the sandbox up; the launcher then drops
    them all before running the program). util-linux ``unshare`` is on every Linux; bubblewrap
    would do the same but is not installed by default nor installable from PyPI.
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

    This one's base interpreter (a virtualenv's packages are not needed, only the standard
    library). As root the program runs as ``nobody``, which must be able to read the interpreter
    and its standard library; one installed under root's home (pyenv, uv) is not, so the system
    ``python3`` is used instead.
    """
    base = getattr(sys, "_base_executable", None) or sys.executable
    if os.geteuid() != 0 or (
        _world_readable(Path(base)) and _world_readable(Path(sys.base_prefix) / "lib")
    ):
        return base
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if _world_readable(Path(candidate)):
            return candidate
    raise SandboxUnavailable(
        f"running as root, the sandbox runs code as user {NOBODY}, who cannot read {base} "
        "and no world-readable python3 was found. Install one (apt-get install python3)."
    )


def _clean_env() -> dict[str, str]:
    """A fixed minimal environment: nothing of the parent's (secrets, tokens, paths) leaks in."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": inside.SCRATCH,
        "TMPDIR": inside.SCRATCH,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def _tail(f, limit: int = _TAIL_BYTES) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", errors="replace")


def _signal_name(rc: int) -> str:
    signum = -rc if rc < 0 else rc - 128
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
    return name + {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (killed)"}.get(name, "")


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def _classify_exit(rc: int, stderr: str) -> tuple[Status, str]:
    """A plain program's outcome from its exit status."""
    if rc == 0:
        return "ok", ""
    if rc < 0 or rc > 128:
        return "failed", f"terminated by {_signal_name(rc)}"
    last = _last_line(stderr)
    return "failed", f"exit code {rc}" + (f": {last}" if last else "")


def _run(mode: str, source: str, limits: Limits, tests_payload: bytes = b"") -> tuple[int | None, str, str, float, bytes]:
    """Start the sandbox on ``source``; (exit code or None on timeout, stdout, stderr, seconds, report)."""
    prefix = unshare_command()
    as_root = os.geteuid() == 0
    cpu = max(1, int(limits.timeout_s) + 1)
    spec = ",".join(str(v) for v in (cpu, limits.memory_mb, limits.max_processes, limits.max_file_mb,
                                     limits.max_open_files))
    with tempfile.TemporaryFile() as program, tempfile.TemporaryFile() as tests, \
            tempfile.TemporaryFile() as report, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for f, data in ((program, source.encode("utf-8", errors="surrogatepass")), (tests, tests_payload)):
            f.write(data)
            f.flush()
            f.seek(0)
        fds = (program.fileno(), tests.fileno(), report.fileno())
        launch = [
            *prefix, sandbox_python(), "-I", "-B", str(Path(inside.__file__).resolve()), "--launch", mode,
            str(NOBODY if as_root else -1), str(RUNNER_UID if as_root else -1), spec, str(limits.disk_mb),
            *(str(fd) for fd in fds),
        ]
        start = time.monotonic()
        proc = subprocess.Popen(
            launch,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd="/",
            env=_clean_env(),
            pass_fds=fds,
            start_new_session=True,  # own session and process group, killed as one
        )
        timed_out = not _exits_within(proc.pid, limits.timeout_s)
        if timed_out:
            _kill_group(proc.pid)
        rc = proc.wait()
        duration = time.monotonic() - start
        _kill_group(proc.pid)  # anything left in the group once the launcher is gone
        report.seek(0)
        return None if timed_out else rc, _tail(out), _tail(err), duration, report.read(1 << 20)


def _setup_error(rc: int | None, stderr: str) -> str | None:
    if rc == inside.SETUP_FAILED and inside.SETUP_MARK in stderr:
        return stderr.split(inside.SETUP_MARK, 1)[1].strip().splitlines()[0]
    return None


def run_program(source: str, limits: Limits = Limits()) -> SandboxResult:
    """Run a Python program's ``source`` in the sandbox and report how it ended.

    Exit code 0 is ``ok`` (never ``passed``: an exit status proves nothing about tests; use
    :func:`run_tests`); an exception, a non-zero exit or a signal is ``failed``; running past
    ``limits.timeout_s`` is ``timeout`` (the whole process tree is killed); ``error`` means the
    sandbox itself could not be set up. Never raises for anything the program does; raises
    ``SandboxUnavailable`` if namespaces are not available at all.
    """
    rc, stdout, stderr, duration, _ = _run("program", source, limits)
    if rc is None:
        status, reason = "timeout", f"killed after {limits.timeout_s:g}s wall clock"
    elif (problem := _setup_error(rc, stderr)) is not None:
        status, reason = "error", problem
    else:
        status, reason = _classify_exit(rc, stderr)
    return SandboxResult(status, rc, stdout, stderr, duration, reason)


# --------------------------------------------------------------------------- tests


def _names(code: str) -> tuple[set[str], set[str]]:
    """(names ``code`` reads, names it binds anywhere): a coarse free-variable analysis that is
    enough to know which names the tests expect from the program."""
    loaded, bound = set(), set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loaded, bound


def _top_level_names(code: str) -> set[str]:
    """Names a (trusted) prompt defines; empty if it is not Python."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).partition(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _test_payload(case: CodeTests, token: str) -> tuple[dict, int]:
    """What the test runner needs (the tests, the names to take from the program, the token)
    and the number of tests that must pass. Raises SyntaxError for tests that do not parse."""
    if isinstance(case.tests, str):
        prelude, steps = (case.tests, [f"check({case.entry_point})"]) if case.entry_point else ("", [case.tests])
    else:
        prelude, steps = "", [t for t in case.tests if t.strip()]
    if not steps:
        raise ValueError("no tests to run: a program with no tests cannot pass")
    loaded, bound = set(), set()
    for code in (case.setup, prelude, *steps):
        got = _names(code)
        loaded |= got[0]
        bound |= got[1]
    free = loaded - bound
    trusted = _top_level_names(case.prompt) - {case.entry_point}
    builtin = set(dir(builtins))
    modules = sorted((free - trusted - builtin) & sys.stdlib_module_names)
    names = sorted(free - trusted - builtin - set(modules) | ({case.entry_point} - {None}))
    payload = {
        "token": token,
        "entry_point": case.entry_point,
        "prompt": case.prompt,
        "setup": case.setup,
        "prelude": prelude,
        "steps": steps,
        "names": names,
        "builtin_names": sorted((free & builtin) - trusted - {case.entry_point}),
        "modules": modules,
    }
    return payload, len(steps)


def _records(report: bytes) -> list[dict]:
    rows = []
    for line in report.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _test_verdict(records: list[dict], token: str, expected: int, stderr: str) -> tuple[Status, str]:
    """``passed`` only with the runner's token after ``expected`` passed tests; else why not."""
    ok = {r["step"] for r in records if r.get("ok") is True and isinstance(r.get("step"), int)}
    done = [r for r in records if "done" in r]
    if done and done[-1]["done"] == token and done[-1].get("passed") == expected and ok == set(range(expected)):
        return "passed", ""
    if done:
        return "failed", "the test report does not carry this run's token"
    ended = [r["program_ended"] for r in records if "program_ended" in r]
    for r in records:
        step = r.get("step")
        where = f"test {step + 1} of {expected}" if isinstance(step, int) else "setting up the tests"
        if "error" in r:
            code = f" (`{r['code']}`)" if r.get("code") else ""
            return "failed", f"{where} failed{code}: {r['error']}"
        if "ended" in r:
            how = f" ({ended[0]})" if ended else ""
            when = f"during {where}" if isinstance(step, int) else "before its tests ran"
            last = _last_line(stderr)
            return "failed", (f"the program ended{how} {when}: {r['ended']}; {len(ok)} of {expected} tests "
                              "passed" + (f"; its last error output: {last}" if last else ""))
    return "failed", f"the test runner did not report (it was killed or stopped); {len(ok)} of {expected} tests passed"


def run_tests(
    program: str,
    tests: str | Sequence[str],
    entry_point: str | None = None,
    setup: str = "",
    timeout: float = 10.0,
    limits: Limits | None = None,
    prompt: str = "",
) -> SandboxResult:
    """Run ``program`` against its tests in the sandbox; ``passed`` means every test ran and passed.

    The one function behind code pass@k, GRPO code rewards and distillation filters. See
    :class:`CodeTests` for the arguments and the module docstring for what "passed" guarantees.
    ``error`` means the tests themselves do not parse (nothing of the program was judged).
    """
    case = CodeTests(program, tests, entry_point, setup, prompt)
    lim = dataclasses.replace(limits or Limits(), timeout_s=timeout)
    token = secrets.token_hex(16)
    try:
        payload, expected = _test_payload(case, token)
    except SyntaxError as e:
        return SandboxResult("error", None, "", "", 0.0, f"the tests do not parse: {e}")
    rc, stdout, stderr, duration, report = _run("tests", program, lim, json.dumps(payload).encode())
    if rc is None:
        status, reason = "timeout", f"killed after {lim.timeout_s:g}s wall clock"
    elif (problem := _setup_error(rc, stderr)) is not None:
        status, reason = "error", problem
    else:
        status, reason = _test_verdict(_records(report), token, expected, stderr)
    return SandboxResult(status, rc, stdout, stderr, duration, reason)


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
    """Build the sandbox once with a trivial test; raise ``SandboxUnavailable`` if the
    namespaces, the new root, the privilege drop or the test runner do not work here."""
    probe = run_tests("def f():\n    return 1\n", ["assert f() == 1"], timeout=30)
    if probe.status != "passed":
        raise SandboxUnavailable(
            f"the code sandbox does not work on this machine ({probe.status}: {probe.reason}); "
            f"no model-written code was run.\n{probe.stderr[-1000:]}"
        )


def run_many(cases: Iterable[CodeTests], limits: Limits = Limits(), max_workers: int = 2) -> list[SandboxResult]:
    """Run many programs against their tests, at most ``max_workers`` at a time, in input order.

    Threads only wait on child processes, so the concurrency limit is the number of sandboxed
    programs alive at once; keep it near the number of cores.
    """
    check_sandbox()  # fail once, clearly, before starting anything
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return list(pool.map(
            lambda c: run_tests(c.program, c.tests, c.entry_point, c.setup, limits.timeout_s, limits, c.prompt),
            cases))
