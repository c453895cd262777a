"""The sandbox against hostile programs: each is contained, reported as failed with its reason,
and the next, ordinary program still passes. Three configurations: everything this machine offers
(the default), the kernel layers alone (the Python guard off: what a program that gets past the
guard meets), and the guard alone (what macOS or an old kernel gets)."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import pytest

from lmlab.errors import LmlabError
from lmlab.eval.sandbox import capabilities, run_program

linux = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")


def _layers_for(mode: str) -> dict:
    return {"default": {}, "kernel": {"guard": False}, "guard": {"kernel_layers": False}}[mode]


MODES = ["default", "kernel", "guard"]


def _skip_unless(mode: str, *needed: str):
    """Kernel mode needs the named layers (prefix match), or the test shows nothing."""
    if mode == "kernel":
        have = capabilities()
        for layer in needed:
            if not any(h.startswith(layer) for h in have):
                pytest.skip(f"this machine's sandbox has no {layer} layer ({have})")


def test_an_ordinary_program_passes_in_an_empty_working_directory():
    result = run_program("import os, math\nprint(sorted(os.listdir('.')), math.factorial(5))")
    assert result.status == "passed" and result.reason == ""
    assert result.stdout.strip() == "['program.py'] 120"


def test_an_exception_fails_with_its_last_traceback_line_as_reason():
    result = run_program("def f():\n    raise ValueError('bad value')\nf()")
    assert result.status == "failed" and not result.passed
    assert result.reason == "ValueError: bad value"
    assert 'program.py", line 2' in result.stderr


def test_a_bare_traceback_header_left_last_by_a_child_does_not_hide_the_error():
    # Forked children share stderr; one killed mid-traceback leaves only its header at the end.
    program = ("import sys\nsys.stderr.write('Traceback (most recent call last):\\n  File \"p.py\", line 3\\n'\n"
               "                 'BlockingIOError: [Errno 11] no more processes\\n'\n"
               "                 'Traceback (most recent call last):\\n  File \"p.py\", line 3\\n')\n"
               "sys.exit(1)")
    result = run_program(program)
    assert result.status == "failed"
    assert result.reason == "BlockingIOError: [Errno 11] no more processes"


def test_exit_codes_and_syntax_errors_are_failures():
    assert run_program("import sys; sys.exit(3)").reason == "exit code 3"
    assert run_program("import sys; sys.exit(0)").passed
    assert run_program("def f(:\n  pass").reason.startswith("SyntaxError")


def test_bad_limits_are_refused():
    with pytest.raises(LmlabError):
        run_program("pass", timeout=0)


@pytest.mark.parametrize("mode", ["default", "guard"])
def test_an_infinite_loop_times_out(mode):
    t0 = time.monotonic()
    result = run_program("while True:\n    pass", timeout=1.0, **_layers_for(mode))
    assert result.status == "timeout" and result.reason == "timed out after 1 s"
    assert time.monotonic() - t0 < 6


@linux
@pytest.mark.parametrize("mode", ["default", "kernel"])
def test_a_fork_bomb_is_contained_and_leaves_no_process_behind(mode):
    _skip_unless(mode, "pidns")
    marker = uuid.uuid4().hex
    bomb = "import os\nwhile True:\n    os.fork()"
    result = run_program(bomb, timeout=3.0, max_processes=16, env={"LMLAB_TEST_MARK": marker},
                         **_layers_for(mode))
    # The process limit makes fork fail (BlockingIOError) in whichever process hits it; the bomb
    # ends when the original process does, or at the timeout if it keeps winning the race.
    assert result.status in ("failed", "timeout"), result
    if result.status == "failed":
        assert result.reason.startswith("BlockingIOError")
    time.sleep(0.2)
    survivors = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    survivors.append(pid)
        except OSError:
            continue
    assert survivors == []


@pytest.mark.parametrize("mode", MODES)
def test_a_ten_gigabyte_allocation_fails_with_memory_error(mode):
    result = run_program("block = bytearray(10 * 1024 ** 3)\nprint('allocated')", memory_mb=512,
                         **_layers_for(mode))
    if os.uname().sysname != "Linux" and mode != "default":
        pytest.skip("RLIMIT_AS is Linux only")
    assert result.status == "failed" and result.reason == "MemoryError"
    assert "allocated" not in result.stdout


@pytest.mark.parametrize("mode", MODES)
def test_writing_outside_the_working_directory_is_refused(mode, tmp_path):
    _skip_unless(mode, "landlock")
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)  # even a world-writable folder: only the working directory is allowed
    result = run_program(f"open({str(target)!r}, 'w').write('out')", **_layers_for(mode))
    assert result.status == "failed" and result.reason.startswith("PermissionError")
    assert not target.exists()
    assert run_program("open('inside.txt', 'w').write('in'); print(open('inside.txt').read())").stdout == "in\n"


@pytest.mark.parametrize("mode", MODES)
def test_opening_a_socket_is_refused(mode):
    _skip_unless(mode, "netns")
    with socket.socket() as server:  # a listener in the evaluator's own network namespace
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')"
        result = run_program(program, **_layers_for(mode))
        with pytest.raises(socket.timeout):
            server.accept()
    assert result.status == "failed"
    assert result.reason.startswith(("PermissionError", "OSError: [Errno 101]", "ConnectionRefusedError"))


@linux
@pytest.mark.parametrize("mode", MODES)
def test_the_evaluators_environment_is_invisible(mode, monkeypatch):
    _skip_unless(mode, "landlock")
    secret = uuid.uuid4().hex
    monkeypatch.setenv("LMLAB_TEST_SECRET", secret)
    program = (f"import os\nprint(dict(os.environ))\n"
               f"print(open('/proc/{os.getpid()}/environ', 'rb').read())")
    result = run_program(program, **_layers_for(mode))
    assert "LMLAB_TEST_SECRET" not in result.stdout  # the scrubbed environment
    assert secret not in result.stdout + result.stderr
    assert result.status == "failed" and result.reason.startswith("PermissionError")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", ["the evaluator's pid", "getppid()"])
def test_signalling_the_evaluator_is_refused(mode, target):
    _skip_unless(mode, "pidns")
    received = []
    old = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))  # SIGUSR1: observable, harmless
    try:
        pid = str(os.getpid()) if target == "the evaluator's pid" else "os.getppid()"
        result = run_program(f"import os, signal\nos.kill({pid}, signal.SIGUSR1)\nprint('sent')",
                             **_layers_for(mode))
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert received == []
    if mode == "kernel" and not any(layer.startswith("landlock-abi") and int(layer[12:]) >= 6
                                    for layer in result.layers):
        return  # in a pid namespace getppid() is its init, which ignores the signal: harmless
    # The guard refuses (PermissionError); in a pid namespace the evaluator's pid names nothing
    # (ProcessLookupError) and getppid() is the sandbox's init, outside the Landlock domain (EPERM).
    assert result.status == "failed", result
    assert result.reason.startswith(("PermissionError", "ProcessLookupError")), result.reason


def test_killing_the_evaluator_outright_is_contained():
    """The real thing, SIGKILL: if the sandbox failed, this test process would die."""
    result = run_program(f"import os\nos.kill({os.getpid()}, 9)\nos.kill(os.getppid(), 9)")
    assert result.status == "failed"


@linux
def test_the_working_directory_is_a_size_limited_tmpfs():
    if "tmpfs" not in capabilities():
        pytest.skip(f"no mount namespace here ({capabilities()})")
    filler = "for i in range(8):\n    open(f'f{i}', 'wb').write(bytes(5 * 1024 * 1024))"
    result = run_program(filler, disk_mb=16, file_size_mb=8)
    assert result.reason == "OSError: [Errno 28] No space left on device"


def test_a_flood_of_output_is_capped_by_the_file_size_limit():
    result = run_program("while True:\n    print('x' * 1000)", timeout=5, file_size_mb=1)
    assert not result.passed and result.status != "timeout"
    assert len(result.stdout) <= 4000


@linux
def test_running_other_programs_is_refused_by_the_guard():
    result = run_program("import subprocess\nsubprocess.run(['/bin/true'])")
    assert result.reason == "PermissionError: sandbox: running other programs is blocked"


def test_the_harness_carries_on_after_hostile_programs_run_in_parallel(tmp_path):
    """Every hostile program at once, two at a time as the evaluator runs them, then ordinary ones."""
    from concurrent.futures import ThreadPoolExecutor

    hostile = {
        "loop": "while True:\n    pass",
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "10 GB": "x = bytearray(10 * 1024 ** 3)",
        "write outside": f"open({str(tmp_path / 'x')!r}, 'w').write('x')",
        "socket": "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)",
        "environment": f"print(open('/proc/{os.getpid()}/environ').read())",
        "kill the evaluator": f"import os\nos.kill({os.getpid()}, 9)",
    }
    ordinary = ["print(6 * 7)"] * 3
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda src: run_program(src, timeout=2.0), list(hostile.values()) + ordinary))
    for name, result in zip(hostile, results):
        assert not result.passed and result.reason, (name, result)
    assert [r.stdout for r in results[len(hostile):]] == ["42\n"] * 3
