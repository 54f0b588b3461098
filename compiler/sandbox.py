"""A sandbox for model-written Python: a separate, limited, offline process per run.

`run_python(code, inputs, timeout, memory_mb)` runs `code` in a fresh interpreter and returns a
`SandboxResult`: whether it worked, the value it computed, what it printed, and, when it did not
work, a short error meant to be shown to a model so that it can fix its program.

What the program sees: its inputs as variables (and as the dict `inputs`), a private temporary
directory as its working directory, the standard library, and nothing else. Its answer is the
variable `result`, or else the value of its last line when that line is an expression (as in a
notebook); what it prints is returned too.

Layers (defense in depth; each one stops something on its own):

* A separate process (never a thread) in its own session and process group, so that the parent's
  wall-clock timeout kills everything it started (`killpg`), and a crash cannot touch the parent.
* Resource limits set before the interpreter starts: address space and data (`memory_mb`), CPU
  seconds (just above `timeout`), file size, open files, processes, no core dumps.
* When the parent runs as root (as CI and this project's machines do): a new network namespace
  (`unshare(CLONE_NEWNET)`: no interface but a loopback that is down), then the privileges are
  dropped to nobody (65534) with no supplementary groups, so the file system refuses writes
  outside the temporary directory (made beforehand and given to nobody), `/etc/shadow` and the
  parent's `/proc/*/environ` are unreadable, and the process limit applies. As another user, a new
  user+network namespace is tried instead.
* An audit hook (`sys.addaudithook`) installed in the child before the program runs refuses
  sockets, process creation (`subprocess`, `os.system`, `os.fork`, `os.exec*`, `os.posix_spawn`,
  the `_posixsubprocess` module), signals to other processes, `ctypes`, native extensions outside
  the standard library, sub-interpreters, crafting code objects, writing, renaming or deleting
  outside the temporary directory, and reading outside it and the standard library.
  The hook guards against a program that tries the obvious things; it is not a boundary against
  one crafted to corrupt the interpreter's memory: that is what the process layers are for.
* A minimal environment (never the parent's: no API keys), `python -I -S -B` (no site-packages,
  no `PYTHON*` variables, no bytecode written), inputs as JSON on stdin, the result as JSON on a
  private descriptor, stdout and stderr read with caps (a program that prints too much is
  stopped), and the temporary directory removed afterwards.

>>> run_python("result = math.sqrt(x) + 1", {"x": 16}).value    # doctest: +SKIP
5.0
"""
from __future__ import annotations

import json
import os
import resource
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
from typing import Any, Sequence

NOBODY = 65534
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

MAX_PROTOCOL_BYTES = 4 * 1024 * 1024     # the result document (value, printed text, variables)
MAX_STDERR_BYTES = 64 * 1024
MAX_FILE_BYTES = 8 * 1024 * 1024        # largest file the program may write in its directory
MAX_OPEN_FILES = 64
MAX_PROCESSES = 64                      # processes (and threads) of the sandbox user, when root
STARTUP_LIMIT = 15.0                    # seconds the interpreter may take to start (not part of timeout)
_READY = b"\x01"                        # the child's first byte: the program starts now
_NETNS_MARK = b"\x00pipec-sandbox: no network namespace\n"


@dataclass(slots=True)
class SandboxResult:
    """What one run gave.

    `ok` is True when the program ran to its end (or called `sys.exit(0)`). `value` is its answer
    (`result`, or its last expression) when `has_value`; `stdout` is what it printed (capped);
    `variables` holds the names asked for with `capture=` that the program defined. When not ok,
    `error` says what went wrong in one or two lines and `error_type` classifies it: "exception",
    "syntax", "timeout", "memory", "output", "crash", "setup" (the sandbox itself could not start).
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
# The child: this source runs as `python -I -S -B -c RUNNER`, already limited and unprivileged.
# It must stay compatible with any Python >= 3.8 (the interpreter may be the system one).
RUNNER = r'''
import sys, os, json, ast, builtins, traceback, io, math
_proto = os.dup(1)
os.dup2(2, 1)                      # stray writes to descriptor 1 cannot corrupt the result
_payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
sys.stdin.close()
_reserve = bytearray(2 * 1024 * 1024)     # freed to report a MemoryError
_tmp = os.path.realpath(os.getcwd())
_max_output = int(_payload["max_output"])
_max_value = int(_payload["max_value"])


_pid = os.getpid()


def _send(doc):
    if os.getpid() != _pid:        # a forked copy (only possible with the audit hook off) stays silent
        os._exit(0)
    data = json.dumps(doc, ensure_ascii=False, allow_nan=True).encode("utf-8", "replace")
    view = memoryview(data)
    while view:
        n = os.write(_proto, view)
        view = view[n:]


class _Out(io.TextIOBase):
    """print() goes here; past the cap the run stops with an error."""

    def __init__(self):
        self.parts, self.size = [], 0

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        self.size += len(s.encode("utf-8", "replace"))
        if self.size > _max_output:
            room = max(0, _max_output - (self.size - len(s)))
            self.parts.append(s[:room])
            _send({"ok": False, "error_type": "output", "stdout": "".join(self.parts),
                   "error": "output limit exceeded: the program printed more than %d bytes" % _max_output})
            os._exit(0)
        self.parts.append(s)
        return len(s)

    def text(self):
        return "".join(self.parts)


def _plain(v, depth=0):
    """A JSON-ready copy of a value: numbers, text, lists and dicts as they are; others converted."""
    if depth > 50:
        raise ValueError("nested too deeply")
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        try:
            return int(v) if abs(v) < 10 ** 300 else float(v)
        except (OverflowError, ValueError):
            return "<an integer of %d bits>" % v.bit_length()
    if isinstance(v, float):
        return v
    if isinstance(v, complex):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, range)):
        return [_plain(x, depth + 1) for x in v]
    if isinstance(v, (set, frozenset)):
        items = [_plain(x, depth + 1) for x in v]
        try:
            return sorted(items)
        except TypeError:
            return items
    try:
        import numbers
        if isinstance(v, numbers.Integral):
            return int(v)
        if isinstance(v, numbers.Real):
            return float(v)
    except Exception:
        pass
    if hasattr(v, "tolist"):
        try:
            return _plain(v.tolist(), depth + 1)
        except Exception:
            pass
    return repr(v)[:2000]


def _where(tb, lines):
    line = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == "<program>":
            line = frame.lineno
    if line is None or not (1 <= line <= len(lines)):
        return ""
    return " (line %d: %s)" % (line, lines[line - 1].strip()[:200])


def _inside(path, roots):
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


_STDLIB_ROOTS = [os.path.realpath(_p) for _p in sys.path if _p and os.path.isdir(_p)]
_READ_ROOTS = [_tmp] + _STDLIB_ROOTS + ["/dev/null", "/dev/urandom", "/usr/share/zoneinfo", "/etc/localtime"]
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_REFUSED = {
    "subprocess.Popen": "starting programs", "os.system": "starting programs",
    "os.exec": "starting programs", "os.posix_spawn": "starting programs",
    "os.spawn": "starting programs", "os.fork": "creating processes", "os.forkpty": "creating processes",
    "pty.spawn": "starting programs", "os.kill": "sending signals", "os.killpg": "sending signals",
    "signal.pthread_kill": "sending signals", "os.symlink": "creating links", "os.link": "creating links",
    "code.__new__": "building code objects", "gc.get_referrers": "inspecting the garbage collector",
    "gc.get_referents": "inspecting the garbage collector", "gc.get_objects": "inspecting the garbage collector",
    "sys._current_frames": "inspecting other threads", "webbrowser.open": "opening a browser",
    "os.startfile": "starting programs",
}
_REFUSED_MODULES = {
    "_posixsubprocess": "starting programs", "_ctypes": "ctypes", "ctypes": "ctypes",
    "_xxsubinterpreters": "sub-interpreters", "_xxinterpchannels": "sub-interpreters",
    "_interpreters": "sub-interpreters", "_interpchannels": "sub-interpreters",
    "_interpqueues": "sub-interpreters", "_testcapi": "test internals", "_testinternalcapi": "test internals",
    "_testmultiphase": "test internals", "_testsinglephase": "test internals", "_testbuffer": "test internals",
}
_PATH_EVENTS = {"os.remove": "deleting", "os.rename": "renaming", "os.replace": "renaming",
                "os.rmdir": "deleting", "os.mkdir": "creating", "os.chmod": "changing", "os.chown": "changing",
                "os.truncate": "truncating", "os.utime": "changing", "shutil.rmtree": "deleting",
                "shutil.move": "moving", "shutil.copyfile": "copying to", "shutil.copytree": "copying to",
                "os.chflags": "changing", "os.lchown": "changing",
                "os.setxattr": "changing", "os.removexattr": "changing"}


def _refuse(what):
    raise PermissionError("sandbox: %s is not allowed" % what)


def _real(path):
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return os.path.realpath(os.path.join(os.getcwd(), str(path)))


def _hook(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, 0))[:3]
        if isinstance(path, int) or path is None:
            return
        writing = bool(mode and any(c in str(mode) for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        real = _real(path)
        if writing and not _inside(real, [_tmp]):
            _refuse("writing %s (only the working directory is writable)" % path)
        if not writing and not _inside(real, _READ_ROOTS):
            _refuse("reading %s" % path)
        return
    if event.startswith("socket."):
        _refuse("network access (%s)" % event)
    if event.startswith("ctypes."):
        _refuse("ctypes")
    what = _REFUSED.get(event)
    if what:
        _refuse("%s (%s)" % (what, event))
    if event == "import":
        name, filename = args[0], args[1]
        base = str(name).partition(".")[0]
        if base in _REFUSED_MODULES or name in _REFUSED_MODULES:
            _refuse("importing %s (%s)" % (name, _REFUSED_MODULES.get(base) or _REFUSED_MODULES[name]))
        if filename and not _inside(_real(filename), _STDLIB_ROOTS):
            _refuse("loading native code from %s" % filename)
        return
    if event == "marshal.loads":
        caller = sys._getframe(1).f_code.co_filename
        if "importlib" not in caller:
            _refuse("marshal.loads (building code objects)")
        return
    if event in ("os.listdir", "os.scandir"):
        path = args[0] if args and args[0] is not None else "."
        if not isinstance(path, int) and not _inside(_real(path), _READ_ROOTS):
            _refuse("listing %s" % path)
        return
    if event == "os.chdir":
        if not isinstance(args[0], int) and not _inside(_real(args[0]), [_tmp]):
            _refuse("leaving the working directory")
        return
    verb = _PATH_EVENTS.get(event)
    if verb:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        if event in ("os.rename", "os.replace", "shutil.move", "shutil.copyfile", "shutil.copytree"):
            paths = paths[:2]
        else:
            paths = paths[:1]
        for p in paths:
            if not _inside(_real(p), [_tmp]):
                _refuse("%s %s (only the working directory is writable)" % (verb, p))


def _main():
    code = _payload["code"]
    lines = code.splitlines()
    out = _Out()
    ns = {"__name__": "__main__", "__builtins__": builtins, "math": math}
    inputs = _payload.get("inputs") or {}
    import keyword
    for k, v in inputs.items():
        if k.isidentifier() and not keyword.iskeyword(k) and k not in ("inputs", "result"):
            ns[k] = v
    ns["inputs"] = inputs
    try:
        tree = ast.parse(code, "<program>", "exec")
    except SyntaxError as err:
        where = " (line %s: %s)" % (err.lineno, (err.text or "").strip()[:200]) if err.lineno else ""
        return {"ok": False, "error_type": "syntax", "error": "SyntaxError: %s%s" % (err.msg, where)}
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, "<program>", "exec")
    tail = compile(last, "<program>", "eval") if last is not None else None
    if _payload.get("audit", True):
        sys.addaudithook(_hook)
    sys.stdout = out
    os.write(_proto, b"\x01")          # the parent's clock for `timeout` starts here
    doc = {"ok": True}
    tail_value = None
    try:
        exec(body, ns)
        if tail is not None:
            tail_value = eval(tail, ns)
    except SystemExit as err:
        if err.code not in (None, 0):
            doc = {"ok": False, "error_type": "exception", "error": "SystemExit: the program exited with status %s" % (err.code,)}
    except MemoryError:
        global _reserve
        _reserve = None
        ns.clear()
        doc = {"ok": False, "error_type": "memory",
               "error": "MemoryError: the program ran out of memory (limit %s MB)" % _payload["memory_mb"]}
    except RecursionError as err:
        doc = {"ok": False, "error_type": "exception",
               "error": "RecursionError: %s%s" % (err, _where(err.__traceback__, lines))}
    except BaseException as err:
        msg = str(err)
        doc = {"ok": False, "error_type": "exception",
               "error": "%s%s%s" % (type(err).__name__, ": " + msg[:500] if msg else "", _where(err.__traceback__, lines))}
    sys.stdout = sys.__stdout__
    doc["stdout"] = out.text()
    if doc["ok"]:
        if "result" in ns:
            doc["value"], doc["has_value"] = ns["result"], True
        elif tail_value is not None:
            doc["value"], doc["has_value"] = tail_value, True
        doc["variables"] = {n: ns[n] for n in _payload.get("capture") or () if n in ns and n not in ("inputs",)}
        try:
            doc["value"] = _plain(doc.get("value"))
            doc["variables"] = {k: _plain(v) for k, v in doc["variables"].items()}
            size = len(json.dumps(doc.get("value"), allow_nan=True))
        except Exception as err:
            return {"ok": False, "error_type": "exception", "stdout": doc["stdout"],
                    "error": "the result could not be read: %s: %s" % (type(err).__name__, err)}
        if size > _max_value:
            return {"ok": False, "error_type": "output", "stdout": doc["stdout"],
                    "error": "the result is too large (%d bytes; at most %d)" % (size, _max_value)}
    return doc


try:
    _doc = _main()
except MemoryError:
    _reserve = None
    _doc = {"ok": False, "error_type": "memory", "error": "MemoryError: the program ran out of memory"}
_send(_doc)
os._exit(0)
'''


# --------------------------------------------------------------------------------------------
# The parent.

def _is_root() -> bool:
    return os.geteuid() == 0


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


def _child_setup(memory_bytes: int, cpu_seconds: int, as_root: bool, unshare) -> None:
    """Runs in the child between fork and exec (keep it to system calls: no imports, no I/O)."""
    flags = CLONE_NEWNET if as_root else CLONE_NEWUSER | CLONE_NEWNET
    try:
        if unshare is None or unshare(flags) != 0:
            os.write(2, _NETNS_MARK)
    except Exception:
        os.write(2, _NETNS_MARK)
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_DATA, memory_bytes),
                         (resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_FSIZE, MAX_FILE_BYTES),
                         (resource.RLIMIT_NOFILE, MAX_OPEN_FILES), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NPROC, MAX_PROCESSES)):
        hard = resource.getrlimit(limit)[1]
        new_hard = value + 1 if limit == resource.RLIMIT_CPU else value    # SIGXCPU first, then SIGKILL
        if hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, hard)
        resource.setrlimit(limit, (min(value, new_hard), new_hard))
    if as_root:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        if os.geteuid() == 0 or os.getegid() == 0:
            raise OSError("could not drop privileges")
    os.umask(0o077)


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
    """The Python the sandbox runs: this one, or (as root) the first that nobody can run."""
    as_root = _is_root()
    with _probe_lock:
        if as_root in _interpreter_choice:
            return _interpreter_choice[as_root]
        choice = None
        if not as_root:
            choice = sys.executable
        else:
            for cand in _candidates():
                probe = _run(cand, "import math, json\nresult = math.floor(2.5)", {}, 10.0, 256, (), 4096)
                if probe.ok and probe.value == 2:
                    choice = cand
                    break
        _interpreter_choice[as_root] = choice
        return choice


def run_python(code: str, inputs: dict[str, Any] | None = None, timeout: float = 5.0, memory_mb: int = 256,
               *, capture: Sequence[str] = (), max_output: int = 64 * 1024, python: str | None = None,
               audit: bool = True) -> SandboxResult:
    """Run `code` in a fresh limited process and return what it computed or why it failed.

    `inputs` become variables of the program (JSON values); `timeout` is wall-clock seconds for the
    program (the interpreter's start-up is not counted); `memory_mb` bounds its address space;
    `capture` names variables to return besides `result`; `max_output` caps what it may print.
    Never raises for anything the program does. `audit=False` leaves out the audit hook: only for
    tests that show the process layers hold on their own; never for model-written code.
    """
    exe = python or interpreter()
    if exe is None:
        return SandboxResult(False, error="sandbox: no Python interpreter can be run by the unprivileged user "
                             "nobody (install one readable by all users, e.g. /usr/bin/python3)", error_type="setup")
    return _run(exe, code, dict(inputs or {}), float(timeout), int(memory_mb), tuple(capture), int(max_output),
                audit)


def _run(exe: str, code: str, inputs: dict, timeout: float, memory_mb: int, capture: tuple,
         max_output: int, audit: bool = True) -> SandboxResult:
    as_root = _is_root()
    start = time.monotonic()
    try:
        payload = json.dumps({"code": code, "inputs": inputs, "capture": list(capture), "max_output": max_output,
                              "max_value": MAX_PROTOCOL_BYTES // 2, "memory_mb": memory_mb,
                              "audit": bool(audit)},
                             ensure_ascii=False, default=str).encode("utf-8")
    except (TypeError, ValueError) as err:
        return SandboxResult(False, error=f"sandbox: inputs are not JSON: {err}", error_type="setup")
    try:
        unshare = _unshare_fn()
    except (OSError, AttributeError, ImportError):
        unshare = None
    tmp = None
    proc = None
    try:
        try:
            tmp = _make_tmp(as_root)
        except OSError as err:
            return SandboxResult(False, error=f"sandbox could not make its directory: {err}", error_type="setup")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        cpu = max(1, int(timeout + 0.999)) + 1
        memory_bytes = memory_mb * 1024 * 1024

        def setup() -> None:
            _child_setup(memory_bytes, cpu, as_root, unshare)

        try:
            proc = subprocess.Popen([exe, "-I", "-S", "-B", "-c", RUNNER], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp, env=env,
                                    start_new_session=True, preexec_fn=setup, close_fds=True)
        except (OSError, subprocess.SubprocessError) as err:
            return SandboxResult(False, error=f"sandbox could not start: {type(err).__name__}: {err}",
                                 error_type="setup", duration=time.monotonic() - start)
        out, err_bytes, status, deadline = _communicate(proc, payload, timeout)
        _wait_then_kill_group(proc, deadline if status == "done" else 0.0)
        returncode = proc.wait()
        _wait_group_gone(proc.pid)
    finally:
        if proc is not None:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    duration = time.monotonic() - start
    netns = _NETNS_MARK not in err_bytes
    stderr = err_bytes.replace(_NETNS_MARK, b"").decode("utf-8", "replace")
    layers = ("process-group", "rlimits") + (("nobody",) if as_root else ()) + (("netns",) if netns else ()) \
        + (("audit",) if audit else ())
    base = dict(returncode=returncode, duration=duration, stderr=stderr[-4000:], isolation=layers)
    if status == "timeout":
        return SandboxResult(False, error=f"timed out: the program ran longer than {timeout:g} s and was stopped",
                             error_type="timeout", timed_out=True, **base)
    if status == "no start":
        return SandboxResult(False, error=f"sandbox: the interpreter did not start within {STARTUP_LIMIT:g} s",
                             error_type="setup", **base)
    if status == "flood":
        return SandboxResult(False, error="output limit exceeded: the program wrote more than "
                             f"{MAX_PROTOCOL_BYTES} bytes and was stopped", error_type="output",
                             output_exceeded=True, **base)
    try:
        doc = json.loads(out.decode("utf-8", "replace")) if out.strip() else None
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


def _communicate(proc: subprocess.Popen, payload: bytes, timeout: float) -> tuple[bytes, bytes, str, float]:
    """Feed stdin and read stdout/stderr with caps until both close or time runs out.

    The program's `timeout` is counted from the child's ready byte (sent just before the program
    starts), so a slow interpreter start on a busy machine does not eat into it; the start itself
    may take up to STARTUP_LIMIT. Returns (stdout without the ready byte, stderr, status, deadline)
    with status "done", "timeout", "no start" or "flood". Unlike `Popen.communicate`, never holds
    more than the caps in memory, however much the child writes.
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
                        return bytes(out[:MAX_PROTOCOL_BYTES]), bytes(err), "flood", deadline
                elif len(err) < MAX_STDERR_BYTES:
                    err += data[:MAX_STDERR_BYTES - len(err)]
    finally:
        sel.close()
    return bytes(out), bytes(err), status, deadline


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
