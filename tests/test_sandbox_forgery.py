"""Programs that try to be reported as passing without passing their tests: each must come out
``failed``, with a reason. Every program here has a wrong ``add`` (it subtracts), so an honest
report is always "failed"; the same attacks with a right ``add`` pass where the attack is harmless.
"""

from __future__ import annotations

import os
import uuid

import pytest

from mixlab.eval.sandbox import _test_verdict, run_tests

WRONG = "def add(a, b):\n    return a - b\n"
TESTS = ["assert add(2, 3) == 5", "assert add(10, 5) == 15"]


def _failed(program: str, tests=TESTS, **kw) -> str:
    res = run_tests(program, tests, timeout=5, **kw)
    assert res.status == "failed", (res.status, res.reason, res.stdout, res.stderr)
    assert res.reason
    return res.reason


@pytest.mark.parametrize(
    ("name", "program", "reason"),
    [
        ("sys.exit", "import sys\n" + WRONG + "sys.exit(0)\n",
         "the program ended (exit code 0) before its tests ran"),
        ("raise SystemExit", WRONG + "raise SystemExit(0)\n",
         "the program ended (exit code 0) before its tests ran"),
        ("os._exit", "import os\n" + WRONG + "os._exit(0)\n",
         "the program ended (exit code 0) before its tests ran"),
        ("os._exit inside the function", "import os\ndef add(a, b):\n    os._exit(0)\n",
         "the program ended (exit code 0) during test 1 of 2"),
        ("SystemExit inside the function", "def add(a, b):\n    raise SystemExit(0)\n",
         "test 1 of 2 failed (`assert add(2, 3) == 5`): ProgramError: builtins.SystemExit: 0"),
        ("atexit", "import atexit, os\natexit.register(os._exit, 0)\n" + WRONG,
         "test 1 of 2 failed (`assert add(2, 3) == 5`): AssertionError"),
        ("signal itself", "import os, signal\n" + WRONG + "os.kill(os.getpid(), signal.SIGKILL)\n",
         "the program ended (signal 9) before its tests ran"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "",
)
def test_ending_early_is_failed(name, program, reason):
    assert _failed(program).startswith(reason)


def test_monkeypatching_assert_builtins_and_excepthook_is_failed():
    patches = (
        "import builtins, sys\n"
        "class Never(Exception):\n"
        "    pass\n"
        "builtins.AssertionError = Never\n"
        "builtins.print = lambda *a, **k: None\n"
        "sys.excepthook = lambda *a: None\n"
        "sys.settrace(lambda *a: None)\n"
    )
    assert _failed(patches + WRONG) == "test 1 of 2 failed (`assert add(2, 3) == 5`): AssertionError"
    # patching what the program's own half of the protocol needs only breaks the program
    worse = patches + "builtins.isinstance = lambda *a: True\nbuiltins.__import__ = lambda *a, **k: None\nbuiltins.exec = lambda *a, **k: None\n"
    assert _failed(worse + WRONG).startswith("the program ended (exit code 1) before its tests ran")


def test_shadowing_the_tests_builtins_modules_and_prompt_helpers_is_failed():
    """Names the tests take from Python or from the task's prompt are the runner's own."""
    program = (
        "def sorted(x):\n    return [1, 2, 3]\n"
        "class math:\n    isclose = staticmethod(lambda *a, **k: True)\n"
        "def poly(xs, x):\n    return 0\n"
        "def sort3(xs):\n    return [9]\n"
        "def find_zero(xs):\n    return 123.0\n"
    )
    tests = ["assert sorted(sort3([3, 1, 2])) == [1, 2, 3]", "assert math.isclose(find_zero([1, 1]), -1.0)"]
    assert _failed(program, tests) == "test 1 of 2 failed (`assert sorted(sort3([3, 1, 2])) == [1, 2, 3]`): AssertionError"
    # HumanEval/32 style: the test checks the root with the prompt's poly, which the completion redefined
    prompt = "def poly(xs, x):\n    return sum(c * x ** i for i, c in enumerate(xs))\n\ndef find_zero(xs):\n    \"\"\"A root.\"\"\"\n"
    check = "def check(candidate):\n    assert abs(poly([1, 1], candidate([1, 1]))) < 1e-6\n"
    assert _failed(prompt + program, check, entry_point="find_zero", prompt=prompt).startswith("test 1 of 1 failed")
    right = prompt + "    return -1.0\n"
    assert run_tests(right, check, entry_point="find_zero", prompt=prompt).status == "passed"


def test_objects_that_claim_equality_are_failed():
    program = (
        "class Anything:\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "    def __bool__(self):\n        return True\n"
        "    __hash__ = object.__hash__\n"
        "class Int(int):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return Anything()\n"
        "def add_int(a, b):\n    return Int(0)\n"
    )
    assert _failed(program) == "test 1 of 2 failed (`assert add(2, 3) == 5`): AssertionError"
    assert _failed(program, ["assert 5 == add(2, 3)"]).endswith("AssertionError")
    assert _failed(program, ["assert add_int(2, 3) == 5"]).endswith("AssertionError")  # arrives as int(0)


def test_forging_the_test_protocol_is_failed():
    """The program answers the runner's requests itself, with objects of its own classes."""
    program = (
        "import os, pickle, stat, struct\n"
        "class Anything:\n"
        "    def __eq__(self, other):\n        return True\n"
        "def end(fd):\n"
        "    return int(open(f'/proc/self/fdinfo/{fd}').read().split('flags:')[1].split()[0], 8) & 3\n"
        "def fifo(fd):\n"
        "    try:\n        return stat.S_ISFIFO(os.fstat(fd).st_mode)\n"
        "    except OSError:\n        return False\n"
        "pipes = [fd for fd in range(3, 64) if fifo(fd)]\n"
        "rd = [fd for fd in pipes if end(fd) == 0][0]\n"
        "wr = [fd for fd in pipes if end(fd) == 1][0]\n"
        "while True:\n"
        "    size = struct.unpack('>I', os.read(rd, 4))[0]\n"
        "    os.read(rd, size)\n"
        "    answer = pickle.dumps(('ok', {'add': ('value', Anything())}))\n"
        "    os.write(wr, struct.pack('>I', len(answer)) + answer)\n"
    )
    reason = _failed(program)
    assert reason.startswith("the program ended")
    assert "broke the test protocol (UnpicklingError: the program sent an object of type __main__.Anything)" in reason


def test_printing_a_fake_report_is_failed():
    fake = '{"done": "0123456789abcdef0123456789abcdef", "passed": 2}\\n{"step": 0, "ok": true}\\n{"step": 1, "ok": true}\\n'
    program = (
        "import os, sys\n"
        f"fake = '{fake}'\n"
        "print(fake); print(fake, file=sys.stderr)\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        os.write(fd, fake.encode())\n"
        "    except OSError:\n"
        "        pass\n"
        + WRONG
    )
    # the writes into its own pipes garble the answers the runner reads: failed either way
    assert _failed(program).startswith("the program ended")
    quiet = program.replace("range(3, 256)", "range(0)")
    assert _failed(quiet) == "test 1 of 2 failed (`assert add(2, 3) == 5`): AssertionError"


def test_the_tests_and_token_are_out_of_the_programs_reach():
    marker = f"marker-{uuid.uuid4().hex}"
    tests = [f"assert add(2, 3) == 5, '{marker}'", f"assert add(10, 5) == 15  # {marker}"]
    program = (
        "import gc, glob, os, re, sys\n"
        "def look():\n"
        "    seen = []\n"
        "    for path in glob.glob('/proc/*/fd/*') + glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/environ') "
        "+ glob.glob('/proc/*/mem') + glob.glob('/work/*') + glob.glob('/dev/fd/*'):\n"
        "        try:\n"
        "            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)\n"
        "            try:\n"
        "                seen.append(os.read(fd, 1 << 20))\n"
        "            finally:\n"
        "                os.close(fd)\n"
        "        except OSError as e:\n"
        "            seen.append(repr(e).encode())\n"
        "    for fd in range(256):\n"
        "        try:\n"
        "            seen.append(os.pread(fd, 1 << 20, 0))\n"
        "        except OSError:\n"
        "            pass\n"
        "    seen += [repr(o).encode() for o in gc.get_objects() if isinstance(o, (str, bytes, dict))]\n"
        "    frame = sys._getframe()\n"
        "    while frame is not None:\n"
        "        seen.append(repr(frame.f_locals).encode())\n"
        "        frame = frame.f_back\n"
        "    found = [s for s in seen if re.search(rb'marker-[0-9a-f]{32}', s)]\n"
        "    print('FOUND' if found else 'NOTHING', len(seen))\n"
        "look()\n"
        "def add(a, b):\n"
        "    look()\n"
        "    return a - b\n"
    )
    res = run_tests(program, tests, timeout=10)
    assert res.status == "failed" and res.reason.startswith("test 1 of 2 failed")
    assert "FOUND" not in res.stdout and res.stdout.count("NOTHING") == 2, res.stdout
    assert marker not in res.stdout  # (stderr has it: the runner's traceback of the failed assert)


def test_killing_and_tracing_everything_does_not_stop_the_runner():
    """The program signals and ptraces every process it can see. As root the runner (another uid,
    not dumpable) survives and judges: a wrong program fails and a right one still passes. Without
    root (one uid in a user namespace) the runner can be killed: then nothing passes (fail closed)."""
    attack = (
        "import ctypes, os, signal\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "me = os.getpid()\n"
        "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != me]:\n"
        "    traced = libc.ptrace(16, pid, 0, 0)\n"  # PTRACE_ATTACH
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        print('killed', pid)\n"
        "    except OSError as e:\n"
        "        print('refused', pid, traced, e.errno)\n"
        "try:\n"
        "    os.kill(-1, signal.SIGKILL)\n"
        "except OSError:\n"
        "    pass\n"
    )
    right = run_tests(attack + "def add(a, b):\n    return a + b\n", TESTS, timeout=5)
    if os.geteuid() != 0:  # one uid in the user namespace: the runner can be killed, and then nothing passes
        assert right.status == "failed" and right.reason.startswith("the test runner did not report")
        return
    assert _failed(attack + WRONG) == "test 1 of 2 failed (`assert add(2, 3) == 5`): AssertionError"
    assert right.status == "passed", right.reason
    assert "killed" not in right.stdout and right.stdout.count("refused") == 2  # the launcher and the runner


def test_the_verdict_needs_the_token_and_every_test():
    token = "t" * 32
    every = [{"step": 0, "ok": True}, {"step": 1, "ok": True}, {"done": token, "passed": 2}]
    assert _test_verdict(every, token, 2, "") == ("passed", "")
    assert _test_verdict(every, "x" * 32, 2, "")[0] == "failed"  # someone else's token
    assert _test_verdict(every[1:], token, 2, "")[0] == "failed"  # a test missing
    assert _test_verdict(every, token, 3, "")[0] == "failed"  # fewer tests than expected ran
    assert _test_verdict(every[:2], token, 2, "") == (
        "failed", "the test runner did not report (it was killed or stopped); 2 of 2 tests passed")
