"""A sandbox for model-written Python: a separate, limited, offline process per run, behind an OS boundary.

`run_python(code, inputs, timeout, memory_mb)` runs `code` in a fresh interpreter and returns a
`SandboxResult`: whether it worked, the value it computed, what it printed, and, when it did not
work, a short error meant to be shown to a model so that it can fix its program.

What the program sees: its inputs as variables (and as the dict `inputs`), a private, size-limited
scratch directory as its working directory (`/tmp`), the standard library, and nothing else. Its
answer is the variable `result`, or else the value of its last line when that line is an expression
(as in a notebook); what it prints is returned too.

The boundary is the operating system, through bubblewrap (`bwrap`, Debian's and Fedora's
`bubblewrap` package, 0.8.0 or newer). Each run is, in effect:

    bwrap --unshare-user --uid 65534 --gid 65534 --disable-userns
          --unshare-pid --unshare-net --unshare-ipc --unshare-uts --unshare-cgroup-try --hostname sandbox
          --die-with-parent --new-session --cap-drop ALL
          --ro-bind /usr /usr  --symlink usr/lib /lib ...  (the /bin /sbin /lib* links, or read-only binds)
          --ro-bind PREFIX PREFIX           (the interpreter's installation, when it is not under /usr)
          --ro-bind /etc/ld.so.cache ... --ro-bind /etc/localtime ...   (nothing else of /etc)
          --tmpfs SITE --remount-ro SITE    (each site-packages/dist-packages: hidden)
          --proc /proc --dev /dev --remount-ro /dev
          --size 64MiB --tmpfs /tmp --remount-ro / --chdir /tmp
          --clearenv --setenv PATH /usr/bin:/bin --setenv HOME /tmp --setenv TMPDIR /tmp ...
          --seccomp FD --info-fd N -- PYTHON -I -S -B -c CHILD

(CHILD: the text of `sandbox_child.py`, which reads the code and its inputs from stdin, runs it and
sends the result back), so the program runs as uid 65534 in its own user, mount, pid, network (a
loopback of its own), IPC and UTS namespaces, sees a read-only root holding only /usr, the
interpreter and two files of /etc (no /home, no /root, no host /proc, /sys or /run), cannot make
user namespaces of its own (which could mount an unbounded tmpfs), and can write only to one tmpfs
of MAX_SCRATCH_BYTES (there is no writable /dev/shm or second /tmp: total bytes written are bounded,
and nothing reaches the host's disk). A seccomp filter refuses the kernel objects that would hold
memory outside those bounds (System V shared memory and message queues, memfd, POSIX message queues)
and interfaces a computation has no use for (io_uring, bpf, userfaultfd, keyrings, perf, ptrace),
and every call through another ABI than the machine's own (x32, 32-bit `int 0x80`). libseccomp
builds it, once per process (loaded with ctypes: Debian's `libseccomp2`, Fedora's `libseccomp`);
where libseccomp cannot be loaded, runs go without the filter and `isolation` does not name
"seccomp". When the run ends, its pid namespace ends with it: every process it started is killed,
double-forked and `setsid` ones included, before `run_python` returns.

Around that boundary (defense in depth):

* As root, the parent drops to nobody (65534, no groups) before starting bwrap, so the host sees
  only nobody's processes. This needs the kernel to let
  unprivileged users make user namespaces and a Python nobody can run; without them, root refuses
  rather than start bwrap itself: the sandbox's processes would then be root on the host, which
  the kernel exempts from process limits, so a fork bomb would be bounded only by the timeout.
* Resource limits, set by the child's first lines inside the namespaces, before the program runs
  (so the parent runs no Python between fork and exec, which is unsafe in a threaded process):
  address space and data (`memory_mb`), CPU seconds (just above `timeout`), file size, open files,
  no core dumps, and at most MAX_PROCESSES processes and threads (counted in the run's own user
  namespace: per run). No capability is left to raise them.
* A separate session and process group, killed (with the pid namespace) on timeout.
* An audit hook (`sys.addaudithook`) installed in the child before the program runs refuses
  sockets, process creation, signals, `ctypes`, native extensions outside the standard library,
  sub-interpreters, crafting code objects, changing functions' code or defaults, tracing, and file
  access outside the working directory and the standard library. It is built so that the program
  cannot switch it off by replacing names (it looks up no global or builtin when it runs and holds
  no mutable state), but a Python hook is a tripwire, not a boundary: the tests show the OS layers
  containing each attack with the hook off.
* A minimal environment (never the parent's: no API keys), `python -I -S -B`, inputs as JSON on
  stdin, the result as JSON on a private descriptor, stdout and stderr read with caps.

Choosing how to isolate (only the user's environment can; a .pipe file or artifact cannot):

* Default: bubblewrap. Where it is missing, too old, or cannot make namespaces (e.g. Docker's
  default seccomp profile, or unprivileged user namespaces disabled), every run is refused with
  error_type "setup" and a message naming what to install; nothing runs with less isolation.
* `PIPEC_BWRAP=/path/to/bwrap`: use that bubblewrap binary.
* `PIPEC_SANDBOX=process`: the documented weaker mode, for machines where namespaces cannot be
  had: a limited process (rlimits, process group, nobody and a network namespace when root, a
  user+network namespace when possible otherwise) and the audit hook, with no file-system or pid
  isolation. Every result then says "weaker-mode:PIPEC_SANDBOX=process" in `isolation`.

`SandboxResult.isolation` names the layers that held for the run (e.g. "bwrap", "userns", "pidns",
"netns", "nobody", "tmpfs-cap", "rlimits", "audit").

>>> run_python("result = math.sqrt(x) + 1", {"x": 16}).value    # doctest: +SKIP
5.0
"""
from __future__ import annotations

import dataclasses
import errno
import glob
import json
import os
import resource
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple, Sequence

NOBODY = 65534
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

MAX_PROTOCOL_BYTES = 4 * 1024 * 1024     # the result document (value, printed text, variables)
MAX_STDERR_BYTES = 64 * 1024
MAX_FILE_BYTES = 8 * 1024 * 1024        # largest file the program may write
MAX_SCRATCH_BYTES = 64 * 1024 * 1024    # all it may write, in total (the one writable tmpfs)
MAX_OPEN_FILES = 64
MAX_PROCESSES = 64                      # processes and threads of one run
STARTUP_LIMIT = 15.0                    # seconds the interpreter may take to start (not part of timeout)
TEARDOWN_LIMIT = 10.0                   # seconds a killed pid namespace may take to empty
SCRATCH = "/tmp"                        # the working directory, HOME and TMPDIR inside the sandbox
MODE_ENV = "PIPEC_SANDBOX"              # "process": the weaker mode (read from the environment only)
BWRAP_ENV = "PIPEC_BWRAP"               # which bubblewrap binary to use
WEAKER_MODE = "weaker-mode:PIPEC_SANDBOX=process"
BWRAP_FLAGS = ("--size", "--disable-userns", "--die-with-parent", "--info-fd", "--cap-drop", "--clearenv",
               "--unshare-cgroup-try", "--remount-ro")
INSTALL_HINT = ("Install bubblewrap 0.8.0 or newer (Debian/Ubuntu: `apt install bubblewrap`; Fedora/RHEL: "
                "`dnf install bubblewrap`) and allow unprivileged user namespaces (the sysctls "
                "kernel.unprivileged_userns_clone=1 on older Debian, kernel.apparmor_restrict_unprivileged_userns=0 "
                "on Ubuntu 23.10+; in a container, a seccomp profile that permits them), or set PIPEC_BWRAP to a "
                "bwrap binary. To run model-written code anyway with only process limits and a Python audit hook "
                "(no file-system or pid isolation), set PIPEC_SANDBOX=process in your environment.")
_READY = b"\x01"                        # the child's first byte: the program starts now
_NETNS_MARK = b"\x00pipec-sandbox: no network namespace\n"
_OUTER_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}    # bwrap's own environment (it clears it inside)
_INNER_ENV = (("PATH", "/usr/bin:/bin"), ("HOME", SCRATCH), ("TMPDIR", SCRATCH), ("LANG", "C.UTF-8"),
              ("LC_ALL", "C.UTF-8"))


@dataclass(slots=True)
class SandboxResult:
    """What one run gave.

    `ok` is True when the program ran to its end (or called `sys.exit(0)`). `value` is its answer
    (`result`, or its last expression) when `has_value`; `stdout` is what it printed (capped);
    `variables` holds the names asked for with `capture=` that the program defined. When not ok,
    `error` says what went wrong in one or two lines and `error_type` classifies it: "exception",
    "syntax", "timeout", "memory", "output", "crash", "setup" (the sandbox itself could not start,
    or no isolation is available: not the program's fault, so not something it can fix).
    `isolation` names the layers that held.
    """

    ok: bool
    value: Any = None
    has_value: bool = False
    stdout: str = ""
    error: str = ""
    error_type: str = ""
    timed_out: bool = False
    memory_exceeded: bool = False
    output_exceeded: bool = False
    variables: dict[str, Any] = field(default_factory=dict)
    returncode: int | None = None
    duration: float = 0.0
    stderr: str = ""
    isolation: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


# --------------------------------------------------------------------------------------------
# The child: sandbox_child.py beside this file, run as `python -I -S -B -c SOURCE`, already limited
# and unprivileged (standard library only, any Python >= 3.8).

@lru_cache(maxsize=1)
def _child_source() -> str:
    """The child's source, read once. Found beside this file rather than as package data, so that a
    copy of the two files runs as they are (the isolation tests drive one as an unprivileged user)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py"), encoding="utf-8") as fh:
        return fh.read()


# --------------------------------------------------------------------------------------------
# The parent: choosing the mode.

class SandboxStatus(NamedTuple):
    """Whether model-written code can run here: `ok`, the `mode` ("bwrap" or "process"), the
    `isolation` layers a run gets, and when not ok, the `error` saying what to install."""

    ok: bool
    mode: str
    isolation: tuple[str, ...]
    error: str


def sandbox_status() -> SandboxStatus:
    """How `run_python` would isolate a program here, without running one (bubblewrap is probed
    once per process and binary).

    >>> status = sandbox_status()
    >>> status.ok == (status.error == "") and status.mode in ("bwrap", "process", "unknown")
    True
    """
    mode = _mode()
    if mode == "process":
        return SandboxStatus(True, mode, _process_layers(_is_root(), False, True), "")   # netns: only a run knows
    if mode != "bwrap":
        return SandboxStatus(False, "unknown", (), _bad_mode(mode))
    plan, problem = _plan()
    if plan is None:
        return SandboxStatus(False, mode, (), problem)
    seccomp = ("seccomp",) if _seccomp_program() is not None else ()
    return SandboxStatus(True, mode, plan.layers(cgroupns=False) + seccomp + ("rlimits", "process-group", "audit"), "")


def run_python(code: str, inputs: dict[str, Any] | None = None, timeout: float = 5.0, memory_mb: int = 256,
               *, capture: Sequence[str] = (), max_output: int = 64 * 1024, python: str | None = None,
               audit: bool = True) -> SandboxResult:
    """Run `code` in a fresh, isolated, limited process and return what it computed or why it failed.

    `inputs` become variables of the program (JSON values); `timeout` is wall-clock seconds for the
    program (the interpreter's start-up is not counted); `memory_mb` bounds its address space;
    `capture` names variables to return besides `result`; `max_output` caps what it may print;
    `python` picks another interpreter (its installation is made visible read-only).
    Never raises for anything the program does. Without the isolation the mode needs (see the
    module docstring), runs nothing and returns error_type "setup" with what to install.
    `audit=False` leaves out the audit hook: only for tests that show the OS layers hold on their
    own; never for model-written code.

    >>> r = run_python("result = n * 2", {"n": 21})
    >>> r.value == 42 or r.error_type == "setup"          # "setup": no isolation here, nothing ran
    True
    """
    args = (code, dict(inputs or {}), float(timeout), int(memory_mb), tuple(capture), int(max_output), bool(audit))
    mode = _mode()
    if mode == "process":
        exe = python or interpreter()
        if exe is None:
            return _refusal("sandbox: no Python interpreter can be run by the unprivileged user nobody (install "
                            "one readable by all users, e.g. /usr/bin/python3)")
        return _run_process(exe, *args)
    if mode != "bwrap":
        return _refusal(_bad_mode(mode))
    plan, problem = _plan()
    if plan is None:
        return _refusal(problem)
    if python:
        real = os.path.realpath(python)
        plan = dataclasses.replace(plan, python=real, prefix=os.path.dirname(os.path.dirname(real)))
    return _run_bwrap(plan, *args)


def _mode() -> str:
    """The user's choice, from the environment only: no .pipe file or artifact can set it."""
    return os.environ.get(MODE_ENV, "").strip().lower() or "bwrap"


def _bad_mode(mode: str) -> str:
    return (f"sandbox: {MODE_ENV}={mode!r} is not a sandbox mode: leave it unset (bubblewrap isolation) or set it "
            "to 'process' (the weaker mode)")


def _refusal(message: str, start: float | None = None) -> SandboxResult:
    duration = time.monotonic() - start if start is not None else 0.0
    return SandboxResult(False, error=message, error_type="setup", duration=duration)


def _is_root() -> bool:
    return os.geteuid() == 0


# --------------------------------------------------------------------------------------------
# The bubblewrap configuration: which binary, interpreter and user, probed once.

@dataclass(frozen=True)
class _Plan:
    bwrap: str
    python: str       # the interpreter, at the same path inside the sandbox
    prefix: str       # its installation, made visible read-only
    drop: bool        # root becomes nobody before starting bwrap
    userns: bool      # bwrap makes a user namespace (False: a setuid bwrap makes the others without one)

    def layers(self, cgroupns: bool) -> tuple[str, ...]:
        return (("bwrap",) + (("userns", "no-nested-userns") if self.userns else ())
                + (("nobody",) if self.drop else ()) + ("mountns", "ro-root", "tmpfs-cap", "pidns", "netns",
                                                         "ipcns", "utsns") + (("cgroupns",) if cgroupns else ())
                + ("cap-drop", "clearenv", "die-with-parent"))


_plan_lock = threading.Lock()
_plans: dict[tuple[str, int], _Plan] = {}
_PROBE = "import os\nresult = [os.getuid(), os.getgid()]"


def _plan() -> tuple[_Plan | None, str]:
    """The configuration that works here, probed once per binary and user, or why none does.

    Failures are not remembered: a probe that failed because the machine was busy is retried."""
    bwrap, problem = _bwrap_path()
    if bwrap is None:
        return None, problem
    key = (bwrap, os.geteuid())
    with _plan_lock:
        if key in _plans:
            return _plans[key], ""
        problem = _bwrap_problem(bwrap)
        if problem:
            return None, problem
        plans, none = _candidate_plans(bwrap)
        reasons = [none] if none else []
        for plan in plans:
            why = _probe(plan)
            if not why:
                _plans[key] = plan
                return plan, ""
            if why not in reasons:
                reasons.append(why)
    as_root = (" pipec runs as root, so it runs the sandbox as the user nobody, which needs unprivileged user "
               "namespaces (root never starts bubblewrap itself: the sandbox's processes would be root on the "
               "host, outside any process limit).") if _is_root() else ""
    return None, (f"sandbox: bubblewrap ({bwrap}) could not isolate a program here ({'; '.join(reasons)}), so "
                  f"model-written code is not run.{as_root} {INSTALL_HINT}")


def _bwrap_path() -> tuple[str | None, str]:
    chosen = os.environ.get(BWRAP_ENV, "").strip()
    if chosen:
        if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
            return os.path.abspath(chosen), ""
        return None, (f"sandbox: {BWRAP_ENV}={chosen} is not an executable file, so model-written code is not run. "
                      f"{INSTALL_HINT}")
    found = shutil.which("bwrap") or shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
    if found:
        return found, ""
    return None, ("sandbox: bubblewrap (bwrap) is not installed, so model-written code is not run. " + INSTALL_HINT)


def _bwrap_problem(bwrap: str) -> str:
    """"" when `bwrap` has every option the sandbox relies on, else what is wrong."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=STARTUP_LIMIT,
                             env=_OUTER_ENV, cwd="/", check=False)
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=STARTUP_LIMIT,
                                 env=_OUTER_ENV, cwd="/", check=False).stdout.strip() or "unknown version"
    except (OSError, subprocess.SubprocessError) as err:
        return f"sandbox: {bwrap} could not be run ({type(err).__name__}: {err}). {INSTALL_HINT}"
    missing = [flag for flag in BWRAP_FLAGS if flag not in out.stdout + out.stderr]
    if missing:
        return (f"sandbox: {bwrap} ({version}) lacks {', '.join(missing)}, which the sandbox needs (bubblewrap "
                f"0.8.0 or newer), so model-written code is not run. {INSTALL_HINT}")
    return ""


def _candidate_plans(bwrap: str) -> tuple[list[_Plan], str]:
    """Configurations to try, best first, and why there are none when there are none. As another
    user: a user namespace, then a setuid bwrap without one. As root: nobody starts bwrap, with each
    interpreter nobody can run (see the module docstring for why root never starts it itself)."""
    python, prefix = _own_interpreter()
    if not _is_root():
        return [_Plan(bwrap, python, prefix, drop=False, userns=True),
                _Plan(bwrap, python, prefix, drop=False, userns=False)], ""
    if not _usable_by_others(bwrap):
        return [], f"{bwrap} cannot be run by the user nobody"
    plans = [_Plan(bwrap, exe, pre, drop=True, userns=True) for exe, pre in _interpreters()
             if _usable_by_others(exe) and _traversable_by_others(pre)]
    return plans, "" if plans else ("no Python interpreter can be run by the user nobody (install one readable "
                                    "by all users, e.g. Debian's python3)")


def _own_interpreter() -> tuple[str, str]:
    """This interpreter (the base one, when in a virtual environment) and its installation prefix."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(exe), os.path.realpath(sys.base_prefix)


def _interpreters() -> list[tuple[str, str]]:
    found = [_own_interpreter()]
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")):
        if cand and os.path.exists(cand):
            real = os.path.realpath(cand)
            if real not in (exe for exe, _ in found):
                found.append((real, os.path.dirname(os.path.dirname(real))))
    return found


def _probe(plan: _Plan) -> str:
    """"" when `plan` runs a program as the expected user, else why not (bwrap's words when it has some)."""
    r = _run_bwrap(plan, _PROBE, {}, 10.0, 256, (), 4096, False)
    expected = NOBODY if plan.userns else os.getuid()
    if r.ok and isinstance(r.value, list) and r.value[:1] == [expected]:
        return ""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else r.error or "no result")[:300]


def _traversable_by_others(path: str) -> bool:
    path = os.path.realpath(path)
    while True:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _usable_by_others(exe: str) -> bool:
    real = os.path.realpath(exe)
    try:
        return bool(os.stat(real).st_mode & stat.S_IXOTH) and _traversable_by_others(os.path.dirname(real)) \
            and _traversable_by_others(os.path.dirname(os.path.abspath(exe)))
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# The bubblewrap command line.

def _bwrap_argv(plan: _Plan, info_fd: int, seccomp_fd: int | None) -> list[str]:
    env = [arg for name, value in _INNER_ENV for arg in ("--setenv", name, value)]
    seccomp = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
    return [plan.bwrap, *_namespace_args(plan), *_filesystem_args(plan.python, plan.prefix), "--clearenv", *env,
            *seccomp, "--info-fd", str(info_fd), "--", plan.python, "-I", "-S", "-B", "-c", _child_source()]


def _namespace_args(plan: _Plan) -> list[str]:
    # Without a user namespace of our own (setuid bwrap), bwrap checks that the program cannot make one.
    user = (["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns"] if plan.userns
            else ["--assert-userns-disabled"])
    return user + ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                   "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]


@lru_cache(maxsize=16)
def _filesystem_args(python: str, prefix: str) -> tuple[str, ...]:
    """A read-only root with /usr, the interpreter and two files of /etc; one size-limited tmpfs."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):     # merged-/usr links, or real directories
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _interpreter_dirs(python, prefix):
        args += ["--ro-bind", path, path]
    for path in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path in _site_dirs(prefix):     # -S keeps them off sys.path; hiding them keeps their native code out
        args += ["--tmpfs", path, "--remount-ro", path]
    # /dev is bwrap's own small tmpfs: read-only, so its shm/ is no second, unbounded scratch space.
    args += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
             "--size", str(MAX_SCRATCH_BYTES), "--tmpfs", SCRATCH, "--remount-ro", "/", "--chdir", SCRATCH]
    return tuple(args)


def _visible(path: str) -> bool:
    return path == "/usr" or path.startswith("/usr/")


def _interpreter_dirs(python: str, prefix: str) -> list[str]:
    dirs = [] if _visible(prefix) or prefix == "/" else [prefix]
    here = os.path.dirname(python)
    if not _visible(here) and not any(here == d or here.startswith(d + "/") for d in dirs):
        dirs.append(here)
    return dirs


def _site_dirs(prefix: str) -> list[str]:
    found: list[str] = []
    for root in dict.fromkeys((prefix, "/usr", "/usr/local")):
        for pattern in ("lib*/python3*/site-packages", "lib*/python3*/dist-packages"):
            for path in sorted(glob.glob(os.path.join(root, pattern))):
                real = os.path.realpath(path)
                inside = _visible(real) or real == prefix or real.startswith(prefix.rstrip("/") + "/")
                if inside and os.path.isdir(real) and real not in found:
                    found.append(real)
    return found


# --------------------------------------------------------------------------------------------
# A seccomp filter (classic BPF, which bwrap installs before the program starts) refusing, with
# EPERM: memory a program could fill past its address-space limit and its scratch tmpfs (System V
# shared memory and message queues, memfd, POSIX message queues: all would live until the run
# ends), and kernel interfaces a computation has no use for that are common attack surface
# (io_uring, bpf, userfaultfd, keyrings, perf events, ptrace, cross-process memory access).
#
# libseccomp (the maintained C library systemd, runc and Flatpak build their filters with; Debian's
# libseccomp2, Fedora's libseccomp) builds it, through ctypes and its stable C API: it knows every
# architecture's system call numbers, and its filter matches only this machine's native ABI.
# Calls through any other ABI (32-bit `int 0x80` or compat calls from a 64-bit process, and on
# x86_64 the x32 numbers, which share the native architecture tag) take the "bad architecture"
# action, set here to EPERM as well. Built once per process; without libseccomp, None.

_DENIED_SYSCALLS = ("shmget", "msgget", "memfd_create", "memfd_secret", "mq_open", "io_uring_setup", "bpf",
                    "userfaultfd", "keyctl", "add_key", "request_key", "perf_event_open", "ptrace",
                    "process_vm_readv", "process_vm_writev")
_LIBSECCOMP_SONAME = "libseccomp.so.2"            # its soname since 2.0, for when find_library finds nothing
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_EPERM = 0x00050000 | errno.EPERM        # SCMP_ACT_ERRNO(EPERM)
_SCMP_FLTATR_ACT_BADARCH = 2                      # enum scmp_filter_attr


def _libseccomp():
    """libseccomp's shared library with the few functions used here declared, or None where it
    cannot be loaded. (seccomp_rule_add_array is seccomp_rule_add without the C variadic arguments,
    which ctypes cannot call portably.)"""
    import ctypes
    import ctypes.util
    ctx, u32, c_int = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or _LIBSECCOMP_SONAME)
        for name, restype, argtypes in (
                ("seccomp_init", ctx, [u32]),
                ("seccomp_release", None, [ctx]),
                ("seccomp_attr_set", c_int, [ctx, c_int, u32]),
                ("seccomp_syscall_resolve_name", c_int, [ctypes.c_char_p]),
                ("seccomp_rule_add_array", c_int, [ctx, u32, c_int, ctypes.c_uint, ctypes.c_void_p]),
                ("seccomp_export_bpf", c_int, [ctx, c_int])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    except (OSError, AttributeError):
        return None
    return lib


@lru_cache(maxsize=1)
def _seccomp_program() -> bytes | None:
    """The filter, as the bytes bwrap reads, built by libseccomp once per process; None where
    libseccomp cannot be loaded or fails (runs then go without it, and do not claim it)."""
    lib = _libseccomp()
    if lib is None:
        return None
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        return None
    try:
        if lib.seccomp_attr_set(ctx, _SCMP_FLTATR_ACT_BADARCH, _SCMP_ACT_EPERM) < 0:
            return None
        for name in _DENIED_SYSCALLS:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:                        # not a system call of this architecture (or unknown to libseccomp)
                continue
            if lib.seccomp_rule_add_array(ctx, _SCMP_ACT_EPERM, nr, 0, None) < 0:
                return None
        with tempfile.TemporaryFile() as fh:
            if lib.seccomp_export_bpf(ctx, fh.fileno()) < 0:
                return None
            program = os.pread(fh.fileno(), 1 << 20, 0)
    except OSError:
        return None
    finally:
        lib.seccomp_release(ctx)
    return program if program and len(program) % 8 == 0 else None     # whole sock_filter instructions


def _seccomp_fd() -> int | None:
    """A descriptor bwrap reads the filter from (a pipe, already filled and closed for writing)."""
    program = _seccomp_program()
    if program is None:
        return None
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, program)          # a few hundred bytes: far below a pipe's buffer
    finally:
        os.close(write_end)
    return read_end


# --------------------------------------------------------------------------------------------
# One run under bubblewrap.

def _run_bwrap(plan: _Plan, code: str, inputs: dict, timeout: float, memory_mb: int, capture: tuple,
               max_output: int, audit: bool) -> SandboxResult:
    start = time.monotonic()
    try:
        payload = _payload(code, inputs, capture, max_output, memory_mb, audit, _limits(memory_mb, timeout))
    except (TypeError, ValueError) as err:
        return _refusal(f"sandbox: inputs are not JSON: {err}")
    nobody = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if plan.drop else {}
    info_read, info_write = os.pipe()
    seccomp = _seccomp_fd()
    proc = init = None
    try:
        passed = (info_write,) + ((seccomp,) if seccomp is not None else ())
        try:                            # no Python runs between fork and exec: safe with threads
            proc = subprocess.Popen(_bwrap_argv(plan, info_write, seccomp), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", env=_OUTER_ENV,
                                    start_new_session=True, umask=0o077, pass_fds=passed, **nobody)
        except (OSError, subprocess.SubprocessError) as err:
            return _refusal(f"sandbox could not start bubblewrap: {type(err).__name__}: {err}", start)
        os.close(info_write)
        info_write = -1
        info = _read_info(info_read, STARTUP_LIMIT)
        init = _open_init(info, proc.pid)
        exchange = _communicate(proc, payload, timeout)
        _wait_then_kill_group(proc, exchange.deadline if exchange.status == "done" else 0.0)
        returncode = proc.wait()
        ended = _end_namespace(init)
    finally:
        for fd in (info_read, info_write, init, seccomp):
            if fd is not None and fd >= 0:
                os.close(fd)
        _close_streams(proc)
    err = exchange.err + (b"" if ended else b"\nsandbox: the run's processes were still ending after the run\n")
    layers = (plan.layers("cgroup-namespace" in info) + (("seccomp",) if seccomp is not None else ())
              + ("rlimits", "process-group") + (("audit",) if audit else ()))
    if not exchange.started and b"bwrap:" in err and exchange.status == "done":
        return _refusal(f"sandbox: bubblewrap could not start the program: {_last_line(err, b'bwrap:')}", start)
    return _outcome(exchange._replace(err=err), returncode, memory_mb, timeout, start, layers)


def _read_info(fd: int, seconds: float) -> dict:
    """bwrap's --info-fd document ({"child-pid": N, ...}), or {} when it ended without one."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = bytearray()
    deadline = time.monotonic() + seconds
    while len(data) < 65536:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        doc = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _open_init(info: dict, bwrap_pid: int) -> int | None:
    """A pidfd for the sandbox's pid 1 (bwrap's init, whose end empties the pid namespace), or None
    when it is already gone. Checked against its parent, so a reused process id is never taken."""
    pid = info.get("child-pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
    if _parent_of(pid) != bwrap_pid:
        os.close(fd)
        return None
    return fd


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _end_namespace(init: int | None) -> bool:
    """Kill the sandbox's pid 1 and wait until it has exited: the kernel kills every other process of
    its pid namespace first (daemons, `setsid` children), so when this returns True none is left."""
    if init is None:
        return True
    try:
        signal.pidfd_send_signal(init, signal.SIGKILL)
    except OSError:
        pass                                    # already exited
    poller = select.poll()
    poller.register(init, select.POLLIN)
    return bool(poller.poll(TEARDOWN_LIMIT * 1000))


def _last_line(data: bytes, marker: bytes = b"") -> str:
    lines = [line for line in data.splitlines() if line.strip() and marker in line]
    return lines[-1].decode("utf-8", "replace")[:300] if lines else ""


# --------------------------------------------------------------------------------------------
# What both modes share: the payload, the limits, talking to the child, reading its result.

def _payload(code: str, inputs: dict, capture: tuple, max_output: int, memory_mb: int, audit: bool,
             limits: tuple[tuple[str, int], ...] | None) -> bytes:
    """The child's stdin. `limits` are set by the child itself before the program runs (bwrap mode)."""
    return json.dumps({"code": code, "inputs": inputs, "capture": list(capture), "max_output": max_output,
                       "max_value": MAX_PROTOCOL_BYTES // 2, "memory_mb": memory_mb, "audit": bool(audit),
                       "limits": limits}, ensure_ascii=False, default=str).encode("utf-8")


def _limits(memory_mb: int, timeout: float) -> tuple[tuple[str, int], ...]:
    memory = memory_mb * 1024 * 1024
    cpu = max(1, int(timeout + 0.999)) + 1
    return (("RLIMIT_AS", memory), ("RLIMIT_DATA", memory), ("RLIMIT_CPU", cpu), ("RLIMIT_FSIZE", MAX_FILE_BYTES),
            ("RLIMIT_NOFILE", MAX_OPEN_FILES), ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", MAX_PROCESSES))


def _apply_limits(limits: tuple[tuple[str, int], ...]) -> None:
    """The weaker mode's limits, set between fork and exec (the same rules as the child's own)."""
    for name, value in limits:
        limit = getattr(resource, name)
        hard = resource.getrlimit(limit)[1]
        new_hard = value + 1 if name == "RLIMIT_CPU" else value    # SIGXCPU first, then SIGKILL
        if hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, hard)
        resource.setrlimit(limit, (min(value, new_hard), new_hard))


def _close_streams(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


class _Exchange(NamedTuple):
    out: bytes          # stdout without the ready byte
    err: bytes
    status: str         # "done", "timeout", "no start" or "flood"
    deadline: float
    started: bool       # the ready byte came: the program itself ran


def _outcome(ex: _Exchange, returncode: int | None, memory_mb: int, timeout: float, start: float,
             layers: tuple[str, ...]) -> SandboxResult:
    """The result of a finished run, from what the child sent and how it ended."""
    stderr = ex.err.replace(_NETNS_MARK, b"").decode("utf-8", "replace")
    base = dict(returncode=returncode, duration=time.monotonic() - start, stderr=stderr[-4000:], isolation=layers)
    if ex.status == "timeout":
        return SandboxResult(False, error=f"timed out: the program ran longer than {timeout:g} s and was stopped",
                             error_type="timeout", timed_out=True, **base)
    if ex.status == "no start":
        return SandboxResult(False, error=f"sandbox: the interpreter did not start within {STARTUP_LIMIT:g} s",
                             error_type="setup", **base)
    if ex.status == "flood":
        return SandboxResult(False, error="output limit exceeded: the program wrote more than "
                             f"{MAX_PROTOCOL_BYTES} bytes and was stopped", error_type="output",
                             output_exceeded=True, **base)
    try:
        doc = json.loads(ex.out.decode("utf-8", "replace")) if ex.out.strip() else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return _no_document(returncode, stderr, memory_mb, base)
    ok = bool(doc.get("ok"))
    kind = str(doc.get("error_type") or ("" if ok else "exception"))
    return SandboxResult(ok, value=doc.get("value"), has_value=bool(doc.get("has_value")),
                         stdout=str(doc.get("stdout") or ""), error=str(doc.get("error") or ""), error_type=kind,
                         memory_exceeded=kind == "memory", output_exceeded=kind == "output",
                         variables=dict(doc.get("variables") or {}), **base)


def _no_document(returncode: int | None, stderr: str, memory_mb: int, base: dict) -> SandboxResult:
    """The child ended without writing its result: say why, from its exit status and stderr."""
    tail = stderr.strip().splitlines()[-1][:300] if stderr.strip() else ""
    if "MemoryError" in stderr:
        return SandboxResult(False, error=f"MemoryError: the program ran out of memory (limit {memory_mb} MB)",
                             error_type="memory", memory_exceeded=True, **base)
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        why = {"SIGXCPU": "it used up its CPU time limit", "SIGKILL": "it was killed (out of memory or time)",
               "SIGSEGV": "it crashed", "SIGXFSZ": "it wrote a file larger than allowed",
               "SIGABRT": "it aborted"}.get(name, "it was stopped")
        return SandboxResult(False, error=f"the program was stopped by {name}: {why}", error_type="crash",
                             timed_out=name == "SIGXCPU", **base)
    return SandboxResult(False, error=f"the program ended without a result (exit status {returncode})"
                         + (f": {tail}" if tail else ""), error_type="crash", **base)


def _communicate(proc: subprocess.Popen, payload: bytes, timeout: float) -> _Exchange:
    """Feed stdin and read stdout/stderr with caps until both close or time runs out.

    The program's `timeout` is counted from the child's ready byte (sent just before the program
    starts), so a slow interpreter start on a busy machine does not eat into it; the start itself
    may take up to STARTUP_LIMIT. Unlike `Popen.communicate`, never holds more than the caps in
    memory, however much the child writes.
    """
    sel = selectors.DefaultSelector()
    out = bytearray()
    err = bytearray()
    started = False
    deadline = time.monotonic() + STARTUP_LIMIT + timeout
    status = "done"
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    view = memoryview(payload)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = "timeout" if started else "no start"
                break
            for key, _ in sel.select(remaining):
                if key.fileobj is proc.stdin:
                    try:
                        n = os.write(stdin_fd, view[:65536])
                        view = view[n:]
                    except BlockingIOError:
                        continue
                    except OSError:             # the child is gone: what it says comes on stdout/stderr
                        view = view[:0]
                    if not view:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                if key.fileobj is proc.stdout:
                    if not started and data[:1] == _READY:
                        started = True
                        data = data[1:]
                        deadline = time.monotonic() + timeout
                    out += data
                    if len(out) > MAX_PROTOCOL_BYTES:
                        return _Exchange(bytes(out[:MAX_PROTOCOL_BYTES]), bytes(err), "flood", deadline, started)
                elif len(err) < MAX_STDERR_BYTES:
                    err += data[:MAX_STDERR_BYTES - len(err)]
    finally:
        sel.close()
    return _Exchange(bytes(out), bytes(err), status, deadline, started)


def _wait_then_kill_group(proc: subprocess.Popen, deadline: float) -> None:
    """Let the child finish (without reaping it, so its process group id stays its own), then kill
    whatever is left in its process group."""
    while time.monotonic() < deadline:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is not None:
            break
        time.sleep(0.005)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------------------------
# The weaker mode (PIPEC_SANDBOX=process): a limited process, no file-system or pid isolation.

_libc_unshare = None


def _unshare_fn():
    global _libc_unshare
    if _libc_unshare is None:
        import ctypes
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.unshare
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int
        _libc_unshare = fn
    return _libc_unshare


def _process_layers(as_root: bool, netns: bool, audit: bool) -> tuple[str, ...]:
    return (("process-group", "rlimits") + (("nobody",) if as_root else ()) + (("netns",) if netns else ())
            + (("audit",) if audit else ()) + (WEAKER_MODE,))


def _process_child_setup(limits: tuple, as_root: bool, unshare) -> None:
    """Runs in the child between fork and exec (keep it to system calls: no imports, no I/O)."""
    flags = CLONE_NEWNET if as_root else CLONE_NEWUSER | CLONE_NEWNET
    try:
        if unshare is None or unshare(flags) != 0:
            os.write(2, _NETNS_MARK)
    except Exception:
        os.write(2, _NETNS_MARK)
    _apply_limits(limits)
    if as_root:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        if os.geteuid() == 0 or os.getegid() == 0:
            raise OSError("could not drop privileges")
    os.umask(0o077)


def _make_tmp(as_root: bool) -> str:
    bases = [tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]
    for base in bases:
        if as_root and not _traversable_by_others(base):
            continue
        try:
            tmp = tempfile.mkdtemp(prefix="pipec-sandbox-", dir=base)
        except OSError:
            continue
        if as_root:
            os.chown(tmp, NOBODY, NOBODY)
        return os.path.realpath(tmp)
    raise OSError("no temporary directory the sandbox user can reach")


_probe_lock = threading.Lock()
_interpreter_choice: dict[bool, str | None] = {}


def _candidates() -> list[str]:
    seen: list[str] = []
    for c in (sys.executable, getattr(sys, "_base_executable", None), os.path.realpath(sys.executable),
              shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if c and os.path.exists(c) and c not in seen and (not _is_root() or _usable_by_others(c)):
            seen.append(c)
    return seen


def interpreter() -> str | None:
    """The Python the weaker mode runs: this one, or (as root) the first that nobody can run.

    >>> interpreter() is None or os.path.exists(interpreter())
    True
    """
    as_root = _is_root()
    with _probe_lock:
        if as_root in _interpreter_choice:
            return _interpreter_choice[as_root]
        choice = None
        if not as_root:
            choice = sys.executable
        else:
            for cand in _candidates():
                probe = _run_process(cand, "import math, json\nresult = math.floor(2.5)", {}, 10.0, 256, (), 4096)
                if probe.ok and probe.value == 2:
                    choice = cand
                    break
        _interpreter_choice[as_root] = choice
        return choice


def _run_process(exe: str, code: str, inputs: dict, timeout: float, memory_mb: int, capture: tuple,
                 max_output: int, audit: bool = True) -> SandboxResult:
    as_root = _is_root()
    start = time.monotonic()
    try:
        payload = _payload(code, inputs, capture, max_output, memory_mb, audit, None)
    except (TypeError, ValueError) as err:
        return _refusal(f"sandbox: inputs are not JSON: {err}")
    try:
        unshare = _unshare_fn()
    except (OSError, AttributeError, ImportError):
        unshare = None
    limits = _limits(memory_mb, timeout)
    tmp = proc = None
    try:
        try:
            tmp = _make_tmp(as_root)
        except OSError as err:
            return _refusal(f"sandbox could not make its directory: {err}", start)
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        try:
            proc = subprocess.Popen([exe, "-I", "-S", "-B", "-c", _child_source()], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp, env=env,
                                    start_new_session=True, close_fds=True,
                                    preexec_fn=lambda: _process_child_setup(limits, as_root, unshare))
        except (OSError, subprocess.SubprocessError) as err:
            return _refusal(f"sandbox could not start: {type(err).__name__}: {err}", start)
        exchange = _communicate(proc, payload, timeout)
        _wait_then_kill_group(proc, exchange.deadline if exchange.status == "done" else 0.0)
        returncode = proc.wait()
        _wait_group_gone(proc.pid)
    finally:
        _close_streams(proc)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    layers = _process_layers(as_root, _NETNS_MARK not in exchange.err, audit)
    return _outcome(exchange, returncode, memory_mb, timeout, start, layers)


def _wait_group_gone(pgid: int, seconds: float = 1.0) -> None:
    """After the leader is reaped: wait (briefly) until no process of the group is left, so the next
    run does not find the sandbox user's process limit still used up by a stopped fork bomb.
    Only signal 0 is sent here, so a reused id is never harmed."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)
