"""What runs inside the code sandbox's namespaces: its init process, the program and the test runner.

``unshare`` runs this file as a script (``python -I -B sandbox_inside.py --launch ...``); the parent
side, its API and the threat model are in :mod:`mixlab.eval.sandbox`. This file must import nothing
outside the standard library and keep its imports few: it starts once per program.

Three processes, all inside new PID, mount and network namespaces:

- the **launcher** (PID 1 of the namespace, root there) builds a private root file system (only
  ``/usr``, the interpreter and a few ``/dev`` nodes, all read-only, plus a size-capped tmpfs
  scratch at ``/work``), forks the other two and reaps; when it exits the kernel kills every process
  left in the namespace;
- the **program**: the untrusted code, as ``nobody`` with no capabilities and resource limits. In
  test mode, once its module code has run it serves requests (call this, get that attribute) from
  the test runner over two pipes, so its functions are called from another process;
- the **test runner** (test mode only): runs the trusted test code, as another uid when we are root
  and non-dumpable in any case, so the program can neither read nor trace it. It never executes the
  program's code: the program's functions and objects are proxies, and values cross the pipe only as
  data decoded into built-in types (a restricted unpickler), so no program-defined ``__eq__``,
  ``__bool__`` or ``__hash__`` ever runs on the runner's side. It alone reads the tests and the
  run's token (from a file descriptor the program closed before its code started) and alone writes
  the report (one JSON line per test, then the token after the last one).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

SETUP_FAILED = 125  # exit code of the launcher when it could not build the sandbox
SETUP_MARK = "mixlab-sandbox-setup-error:"
MAX_FRAME = 64 << 20  # the largest message the test runner accepts from the program

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_MNT_DETACH = 2
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_SYS_MOUNT_SETATTR = 442  # same number on x86_64 and arm64 (new syscalls share one table)
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_SET_NO_NEW_PRIVS = 4, 24, 28, 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SECBITS_LOCKED_NOROOT = 0x01 | 0x02 | 0x04 | 0x08 | 0x10 | 0x20 | 0x40 | 0x80
_DEVICES = ("null", "zero", "random", "urandom", "full")
_NEW_ROOT = "/tmp"  # mount point of the new root inside our private mount namespace
SCRATCH = "/work"  # the program's working directory and $HOME, seen from inside


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


def _mount(libc, src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {dst}")


def _setattr(libc, path: str, attr_set: int, attr_clr: int, flags: int) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    ret = libc.syscall(
        _SYS_MOUNT_SETATTR, _AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)
    )
    _check(ret, f"mount_setattr({path})")


def _bind_into(libc, root: str, path: str) -> None:
    """Make host ``path`` visible at the same place under ``root`` (symlinks stay symlinks)."""
    target = root + path
    if os.path.islink(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.symlink(os.readlink(path), target)
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(libc, path, target, None, _MS_BIND | _MS_REC)


def _build_root(libc, disk_mb: int, owner: int) -> None:
    """Replace the file system by a minimal read-only one: the project, the data, /tmp, /home and
    /etc are simply not there. ``/work`` is a tmpfs of ``disk_mb`` MiB: filling it fills memory the
    size cap bounds, never the host's disk, and it vanishes with the namespace."""
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    root = _NEW_ROOT
    _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    python_home = os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))
    for path in ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/ld.so.cache", sys.base_prefix, python_home):
        if os.path.lexists(path) and not os.path.lexists(root + path):
            _bind_into(libc, root, path)
    os.makedirs(root + "/dev")
    for dev in _DEVICES:
        if os.path.exists("/dev/" + dev):
            _bind_into(libc, root, "/dev/" + dev)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc")
    os.makedirs(root + SCRATCH)
    _mount(libc, "tmpfs", root + SCRATCH, "tmpfs", _MS_NOSUID | _MS_NODEV,
           f"size={disk_mb}m,nr_inodes=4096,mode=0755")
    if owner >= 0:
        os.chown(root + SCRATCH, owner, owner)
    _mount(libc, "proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(0, f"pivot_root: unknown syscall number on {os.uname().machine}")
    os.chdir(root)
    _check(libc.syscall(number, b".", b"."), "pivot_root")  # old root stacked on top: detach it
    _check(libc.umount2(b".", _MNT_DETACH), "detach the old root")
    os.chdir("/")
    _setattr(libc, "/", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, _AT_RECURSIVE)
    _setattr(libc, SCRATCH, 0, _MOUNT_ATTR_RDONLY, 0)


def _drop_privileges(libc, uid: int) -> None:
    """No capabilities now or after any exec; as real root, also become ``uid``."""
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


def _confine(libc, uid: int, limits: str, dumpable: bool = True) -> None:
    os.chdir(SCRATCH)  # while still root: the path may not be searchable by the new uid
    _drop_privileges(libc, uid)
    # Non-dumpable: no one without CAP_SYS_PTRACE may trace it or open its /proc/<pid>/mem, fd or
    # environ. The launcher is; the test runner stays so; the program gets its own /proc back.
    _check(libc.prctl(_PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "set dumpable")
    _set_limits(limits)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a full disk or closed pipe is the program's problem
            pass
    os._exit(code & 0xFF)


def _exit_code(e: SystemExit) -> int:
    if not isinstance(e.code, int | None):
        print(e.code, file=sys.stderr)
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def _run_module(source: str):
    """Execute the program as ``__main__``; return its module, or exit the way Python would."""
    import types

    sys.argv = ["program.py"]
    module = types.ModuleType("__main__")
    module.__file__ = "program.py"
    sys.modules["__main__"] = module
    try:
        exec(compile(source, "program.py", "exec"), module.__dict__)
    except SystemExit as e:
        _flush_and_exit(_exit_code(e))
    except BaseException:  # noqa: BLE001 - report whatever the program raised, as Python would
        import traceback  # only now: it costs ~10 ms per program to import

        traceback.print_exc()
        _flush_and_exit(1)
    return module


# --------------------------------------------------------------------------- the program's server
# Runs in the program's process, after the program's own code: it is as untrusted as the program
# (which may have replaced any of it). It exists to make honest code work; nothing it sends is
# believed beyond what the test runner's decoder lets through.

_VALUE_TYPES = (bool, int, float, complex, str, bytes, bytearray, type(None), range, slice)
_CONTAINERS = (list, tuple, set, frozenset, dict)


def _stdlib_value_types() -> tuple[type, ...]:
    """Standard-library value types whose pickles the test runner accepts (and whose methods are
    the standard library's, not the program's)."""
    import collections
    import datetime
    import decimal
    import fractions

    return (collections.deque, collections.OrderedDict, collections.Counter, decimal.Decimal,
            fractions.Fraction, datetime.date, datetime.datetime, datetime.time, datetime.timedelta,
            datetime.timezone)


def _plain(x, stdlib: tuple[type, ...], depth: int = 0):
    """``x`` with subclasses of built-in containers and numbers (namedtuples, defaultdicts, int
    enums) turned into the built-in type, so honest answers arrive as values, not handles."""
    t = type(x)
    if t in _VALUE_TYPES or t in stdlib or depth > 200:
        return x
    if t in _CONTAINERS or (isinstance(x, _CONTAINERS) and t not in stdlib):
        base = next(b for b in _CONTAINERS if isinstance(x, b))
        if base is dict:
            return {_plain(k, stdlib, depth + 1): _plain(v, stdlib, depth + 1) for k, v in x.items()}
        return base(_plain(v, stdlib, depth + 1) for v in x)
    for base in (bool, int, float, complex, str, bytes):
        if isinstance(x, base):
            return base(x)
    return x


def _serve(source: str, req_r: int, resp_w: int) -> None:
    """Run the program's module code, then answer the test runner's requests until it is done."""
    module = _run_module(source)
    import io
    import pickle
    import struct

    stdlib = _stdlib_value_types()
    picklable = (*_VALUE_TYPES, *_CONTAINERS, *stdlib)
    classes = (complex, range, slice, bytearray, set, frozenset, *stdlib)  # what pickles name
    handles: dict[int, object] = {}

    class Out(pickle.Pickler):
        def persistent_id(self, obj):
            if type(obj) in picklable or any(obj is t for t in classes):
                return None
            handles[id(obj)] = obj
            return ("h", id(obj), type(obj).__qualname__)

    class In(pickle.Unpickler):
        def persistent_load(self, pid):
            return handles[pid[1]]

    def names(wanted):
        out = {}
        for n in wanted:
            if n in module.__dict__:
                v = module.__dict__[n]
                out[n] = ("module", v.__name__) if isinstance(v, type(sys)) else ("value", _plain(v, stdlib))
        return out

    def setup(code):
        exec(compile(code, "test_setup", "exec"), module.__dict__)

    ops = {
        "setup": setup,
        "names": names,
        "call": lambda f, args, kwargs: f(*args, **kwargs),
        "getattr": getattr,
        "setattr": setattr,
        "iter": iter,
        "next": next,
        "len": len,
        "getitem": lambda obj, key: obj[key],
        "repr": repr,
    }

    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = os.read(req_r, n - len(data))
            if not chunk:
                _flush_and_exit(0)  # the test runner is gone
            data += chunk
        return data

    def send(reply) -> None:
        buf = io.BytesIO()
        Out(buf, protocol=5).dump(reply)
        data = buf.getvalue()
        data = struct.pack(">I", len(data)) + data
        while data:
            data = data[os.write(resp_w, data):]

    while True:
        (size,) = struct.unpack(">I", read(4))
        op, *args = In(io.BytesIO(read(size))).load()
        if op == "exit":
            send(("ok", None))
            _flush_and_exit(0)
        try:
            result = ops[op](*args)
            reply = ("ok", _plain(result, stdlib))
        except BaseException as e:  # noqa: BLE001 - the test decides what an exception means
            reply = ("raise", type(e).__module__, type(e).__qualname__, str(e)[:2000])
        try:
            send(reply)
        except Exception as e:  # noqa: BLE001 - e.g. a value pickle cannot encode
            send(("raise", "builtins", "TypeError", f"the program's answer cannot be sent to the tests: {e}"))


# --------------------------------------------------------------------------- the test runner
# Trusted: it runs the dataset's test code and never the program's.


class ProgramEnded(BaseException):
    """The program exited, was killed or broke the protocol while its tests were running. A
    BaseException, so a test's ``except Exception`` cannot swallow it (and the runner also checks
    that the connection is intact after every test)."""


class ProgramError(Exception):
    """The program raised an exception of its own type (only built-in exception types are
    re-raised as themselves: the runner never builds an object of a program-defined class)."""


def _runner_classes():
    import builtins
    import io
    import pickle
    import struct

    safe = {("builtins", n) for n in ("complex", "range", "slice", "bytearray", "set", "frozenset")}
    safe |= {("collections", n) for n in ("deque", "OrderedDict", "Counter")}
    safe |= {("decimal", "Decimal"), ("fractions", "Fraction")}
    safe |= {("datetime", n) for n in ("date", "datetime", "time", "timedelta", "timezone")}

    class Remote:
        """An object that lives in the program's process. Calls, attributes, iteration, ``len``
        and indexing are asked of the program; comparisons, hashing and truth are Python's
        defaults for a plain object (identity), never the program's."""

        __slots__ = ("_id", "_what")

        def __init__(self, ident: int, what: str):
            object.__setattr__(self, "_id", ident)
            object.__setattr__(self, "_what", what)

        def __call__(self, *args, **kwargs):
            return conn.request("call", self, args, kwargs)

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return conn.request("getattr", self, name)

        def __setattr__(self, name, value):
            conn.request("setattr", self, name, value)

        def __iter__(self):
            return conn.request("iter", self)

        def __next__(self):
            return conn.request("next", self)

        def __len__(self):
            n = conn.request("len", self)
            if type(n) is not int:
                raise TypeError("the program's __len__ did not return an int")
            return n

        def __getitem__(self, key):
            return conn.request("getitem", self, key)

        def __repr__(self):
            return f"<{self._what} object of the program>"

    class Out(pickle.Pickler):
        def persistent_id(self, obj):
            return ("h", obj._id) if type(obj) is Remote else None

    class In(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in safe:
                raise pickle.UnpicklingError(f"the program sent an object of type {module}.{name}")
            return super().find_class(module, name)

        def persistent_load(self, pid):
            if type(pid) is not tuple or len(pid) != 3 or type(pid[1]) is not int or type(pid[2]) is not str:
                raise pickle.UnpicklingError("malformed object reference")
            return Remote(pid[1], pid[2][:100])

    class Conn:
        def __init__(self, req_w: int, resp_r: int):
            self.req_w, self.resp_r, self.broken = req_w, resp_r, ""

        def _read(self, n: int) -> bytes:
            data = b""
            while len(data) < n:
                chunk = os.read(self.resp_r, n - len(data))
                if not chunk:
                    raise ProgramEnded("the program ended")
                data += chunk
            return data

        def request(self, op, *args):
            if self.broken:
                raise ProgramEnded(self.broken)
            try:
                buf = io.BytesIO()
                Out(buf, protocol=5).dump((op, *args))
            except Exception as e:  # noqa: BLE001 - e.g. a lambda the tests pass as an argument
                raise TypeError(f"cannot send this value to the program: {e}") from None
            data = struct.pack(">I", len(buf.getvalue())) + buf.getvalue()
            try:
                while data:
                    data = data[os.write(self.req_w, data):]
                (size,) = struct.unpack(">I", self._read(4))
                if size > MAX_FRAME:
                    raise ProgramEnded(f"the program sent a {size}-byte answer")
                reply = In(io.BytesIO(self._read(size))).load()
            except ProgramEnded as e:
                self.broken = str(e)
                raise
            except BrokenPipeError:
                self.broken = "the program ended"
                raise ProgramEnded(self.broken) from None
            except Exception as e:  # noqa: BLE001 - anything undecodable is a broken protocol
                self.broken = f"the program broke the test protocol ({type(e).__name__}: {e})"
                raise ProgramEnded(self.broken) from None
            return self._result(reply)

        def _result(self, reply):
            if type(reply) is tuple and len(reply) == 2 and reply[0] == "ok":
                return reply[1]
            if type(reply) is tuple and len(reply) == 4 and reply[0] == "raise" and all(type(x) is str for x in reply[1:]):
                _, module, name, message = reply
                cls = getattr(builtins, name, None) if module == "builtins" else None
                if isinstance(cls, type) and issubclass(cls, Exception):
                    try:
                        exc = cls(message)
                    except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError needs 5 arguments
                        exc = ProgramError(f"{name}: {message}")
                    raise exc
                raise ProgramError(f"{module}.{name}: {message}")
            self.broken = "the program broke the test protocol (malformed answer)"
            raise ProgramEnded(self.broken)

    conn: Conn | None = None

    def connect(req_w: int, resp_r: int) -> Conn:
        nonlocal conn
        conn = Conn(req_w, resp_r)
        return conn

    return connect


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return text[:500]


def _run_tests(tests_fd: int, report_fd: int, req_w: int, resp_r: int) -> int:
    """Run the tests against the program's proxies and report each one; 0 if all passed."""
    import builtins
    import importlib
    import json
    import traceback
    import types

    payload = json.loads(_read_all(tests_fd))

    def report(**record) -> None:
        os.write(report_fd, (json.dumps(record) + "\n").encode())

    conn = _runner_classes()(req_w, resp_r)
    module = types.ModuleType("__main__")
    sys.modules["__main__"] = module
    ns = module.__dict__
    ns["__builtins__"] = builtins

    def run(code: str, where: str) -> None:
        exec(compile(code, where, "exec"), ns)
        if conn.broken:  # a bare ``except:`` in the test swallowed ProgramEnded
            raise ProgramEnded(conn.broken)

    def fail(step: int | None, e: BaseException) -> int:
        """Report the failure of test ``step`` (None: before the first test)."""
        if isinstance(e, ProgramEnded):
            report(step=step, ended=str(e))
        else:
            traceback.print_exc(file=sys.stderr)
            code = payload["steps"][step].strip().splitlines()[0][:200] if step is not None else ""
            report(step=step, error=_describe(e), code=code)
        return 1

    entry = payload["entry_point"]
    try:
        conn.request("setup", payload["setup"])  # also waits for the program's module code to finish
        got = conn.request("names", payload["names"] + payload["builtin_names"])
        if type(got) is not dict or not all(type(k) is str and type(v) is tuple and len(v) == 2 for k, v in got.items()):
            raise ProgramEnded("the program broke the test protocol (bad names)")
        own = [n for n in payload["names"] if n in got and n != entry]
        # A program function named like a built-in (MBPP's ``sum``) replaces it only when it is
        # the tests' only use of the program; otherwise the tests' ``len``/``sorted`` stay Python's.
        use = own + [n for n in (entry,) if n and n in got] or [n for n in payload["builtin_names"] if n in got]
        for name in use:
            kind, value = got[name]
            if kind == "module" and type(value) is str and value.partition(".")[0] in sys.stdlib_module_names:
                value = importlib.import_module(value)  # the runner's own copy, not the program's
            ns[name] = value
        for name in payload["modules"]:
            try:
                ns.setdefault(name, importlib.import_module(name))
            except ImportError:
                pass
        if payload["prompt"]:  # trusted helpers (HumanEval's ``poly``): the program cannot redefine them
            saved = ns.get(entry)
            try:
                exec(compile(payload["prompt"], "prompt", "exec"), ns)
            except Exception:  # noqa: BLE001 - a prompt that is not runnable code is simply not used
                pass
            if entry:
                ns[entry] = saved
        if entry and ns.get(entry) is None:
            report(step=None, error=f"the program does not define {entry}")
            return 1
        run(payload["setup"], "test_setup")
        run(payload["prelude"], "tests")
    except BaseException as e:  # noqa: BLE001
        return fail(None, e)
    for i, step in enumerate(payload["steps"]):
        try:
            run(step, f"test {i + 1}")
        except BaseException as e:  # noqa: BLE001
            return fail(i, e)
        report(step=i, ok=True)
    report(done=payload["token"], passed=len(payload["steps"]))
    try:
        conn.request("exit")
    except BaseException:  # noqa: BLE001 - the verdict is written; the program's exit does not matter
        pass
    return 0


# --------------------------------------------------------------------------- the launcher


def _wait_for(pid: int) -> int:
    """Reap children (as init we must reap orphans too) until ``pid`` ends; its exit code."""
    while True:
        done, status = os.wait()
        if done == pid:
            return os.waitstatus_to_exitcode(status) if status & 0x7F == 0 else 128 + (status & 0x7F)


def _describe_status(status: int) -> str:
    if os.WIFEXITED(status):
        return f"exit code {os.WEXITSTATUS(status)}"
    return f"signal {os.WTERMSIG(status)}"


def launch(mode: str, uid: int, runner_uid: int, limits: str, disk_mb: int,
           program_fd: int, tests_fd: int, report_fd: int) -> int:
    """PID 1 of the sandbox: build the file system, start the program (and the test runner), reap."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _check(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0), "set non-dumpable")
        source = _read_all(program_fd).decode("utf-8")
        _build_root(libc, disk_mb, uid)
        with open(f"{SCRATCH}/program.py", "w", encoding="utf-8") as f:
            f.write(source)
        if uid >= 0:
            os.chown(f"{SCRATCH}/program.py", uid, uid)
    except (OSError, UnicodeDecodeError) as e:
        print(f"{SETUP_MARK} {e}", file=sys.stderr)
        return SETUP_FAILED
    if mode == "program":
        os.close(tests_fd)
        os.close(report_fd)
        pid = os.fork()
        if pid == 0:
            _child(lambda: _confine(libc, uid, limits), lambda: _run_module(source))
        return _wait_for(pid)

    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    program = os.fork()
    if program == 0:
        for fd in (tests_fd, report_fd, req_w, resp_r):
            os.close(fd)
        _child(lambda: _confine(libc, uid, limits), lambda: _serve(source, req_r, resp_w))
    runner = os.fork()
    if runner == 0:
        for fd in (req_r, resp_w):
            os.close(fd)
        _child(lambda: _confine(libc, runner_uid, limits, dumpable=False),
               lambda: _flush_and_exit(_run_tests(tests_fd, report_fd, req_w, resp_r)))
    for fd in (tests_fd, req_r, req_w, resp_r, resp_w):
        os.close(fd)
    while True:
        done, status = os.wait()
        if done == program:
            program = 0
            os.write(report_fd, f'{{"program_ended": "{_describe_status(status)}"}}\n'.encode())
        elif done == runner:
            if program:
                os.kill(program, 9)
            return os.waitstatus_to_exitcode(status) if status & 0x7F == 0 else 128 + (status & 0x7F)


def _child(setup, body) -> None:
    """In a fresh fork: confine, then run; never returns."""
    try:
        setup()
    except OSError as e:
        print(f"{SETUP_MARK} {e}", file=sys.stderr, flush=True)
        os._exit(SETUP_FAILED)
    body()
    _flush_and_exit(0)


if __name__ == "__main__" and len(sys.argv) == 10 and sys.argv[1] == "--launch":
    mode, *numbers = sys.argv[2:]
    uid, runner_uid = int(numbers[0]), int(numbers[1])
    sys.exit(launch(mode, uid, runner_uid, numbers[2], int(numbers[3]), *(int(x) for x in numbers[4:])))
