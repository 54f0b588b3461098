"""The sandbox's child: the program that runs model-written code, inside the boundary.

`pipec.sandbox` reads this file's text once and runs it as `python -I -S -B -c SOURCE`, inside
bubblewrap (or the weaker mode's limited process), as an unprivileged user, in the run's scratch
directory. So it is never imported as part of pipec: it may use only the standard library, and it
must stay compatible with any Python >= 3.8 (the interpreter may be the system one). Imported, it
only defines names; it does its work when run as `__main__`.

The exchange with the parent:

- stdin: one JSON document, `{"code", "inputs", "capture", "max_output", "max_value", "memory_mb",
  "audit", "limits"}`, read whole, then closed;
- descriptor 1, kept aside as the private result channel (descriptor 1 itself then points at
  stderr, so stray writes cannot corrupt the result): first the byte b"\\x01" (the parent's
  `_READY`: the program starts now, and its timeout with it), then the result as one JSON document,
  `{"ok", "stdout", "value", "has_value", "variables"}` or `{"ok": false, "error_type", "error", ...}`;
- stderr: whatever else is written, read by the parent with a cap.

In order, it sets the resource limits it is given (so the parent runs no Python between fork and
exec), compiles the program, installs the audit hook (a tripwire: the OS is the boundary), runs
the program with its inputs as variables, and sends back its answer: the variable `result`, or
else the value of its last line when that line is an expression.
"""
import ast
import builtins
import io
import json
import math
import os
import sys
import traceback
from types import MappingProxyType

READY = b"\x01"                     # pipec.sandbox._READY: the program starts now
RESERVE_BYTES = 2 * 1024 * 1024     # freed to report a MemoryError
_reserve = []                       # holds the reserve while the program runs


# ============================================================================ the audit hook
# The hook and its helpers look up no global or builtin name when they run: everything they use is
# bound as a default value when they are defined. A program can reach this module's globals
# (sys.modules["__main__"]), replace builtins or os.path.realpath, or walk a refusal's traceback to
# the hook's frame, and none of that changes what the hook does: a frame's locals are its own
# copies, and every table below is immutable.
_TMP = os.path.realpath(os.getcwd())        # the working directory: the run's scratch space
_STDLIB_ROOTS = tuple(os.path.realpath(_p) for _p in sys.path if _p and os.path.isdir(_p))
_READ_ROOTS = (_TMP, *_STDLIB_ROOTS, "/dev/null", "/dev/urandom", "/usr/share/zoneinfo", "/etc/localtime")
_REFUSED = MappingProxyType({
    "subprocess.Popen": "starting programs", "os.system": "starting programs",
    "os.exec": "starting programs", "os.posix_spawn": "starting programs",
    "os.spawn": "starting programs", "os.fork": "creating processes", "os.forkpty": "creating processes",
    "pty.spawn": "starting programs", "os.kill": "sending signals", "os.killpg": "sending signals",
    "signal.pthread_kill": "sending signals", "os.symlink": "creating links", "os.link": "creating links",
    "code.__new__": "building code objects", "gc.get_referrers": "inspecting the garbage collector",
    "gc.get_referents": "inspecting the garbage collector", "gc.get_objects": "inspecting the garbage collector",
    "sys._current_frames": "inspecting other threads", "webbrowser.open": "opening a browser",
    "os.startfile": "starting programs", "sys.settrace": "tracing", "sys.setprofile": "profiling",
    "sys._settraceallthreads": "tracing", "sys._setprofileallthreads": "profiling",
})
_REFUSED_MODULES = MappingProxyType({
    "_posixsubprocess": "starting programs", "_ctypes": "ctypes", "ctypes": "ctypes",
    "_xxsubinterpreters": "sub-interpreters", "_xxinterpchannels": "sub-interpreters",
    "_interpreters": "sub-interpreters", "_interpchannels": "sub-interpreters",
    "_interpqueues": "sub-interpreters", "_testcapi": "test internals", "_testinternalcapi": "test internals",
    "_testmultiphase": "test internals", "_testsinglephase": "test internals", "_testbuffer": "test internals",
})
_PATH_EVENTS = MappingProxyType({
    "os.remove": "deleting", "os.rename": "renaming", "os.replace": "renaming",
    "os.rmdir": "deleting", "os.mkdir": "creating", "os.chmod": "changing", "os.chown": "changing",
    "os.truncate": "truncating", "os.utime": "changing", "shutil.rmtree": "deleting",
    "shutil.move": "moving", "shutil.copyfile": "copying to", "shutil.copytree": "copying to",
    "os.chflags": "changing", "os.lchown": "changing", "os.setxattr": "changing", "os.removexattr": "changing"})
_TWO_PATHS = frozenset(("os.rename", "os.replace", "shutil.move", "shutil.copyfile", "shutil.copytree"))
_FUNCTION_PARTS = frozenset(("__code__", "__defaults__", "__kwdefaults__"))   # what would rewrite a function


def _inside(path, roots):
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return True
    return False


def _resolve(path, _fspath=os.fspath, _getcwd=os.getcwd, _lstat=os.lstat, _readlink=os.readlink,
             _isinstance=isinstance, _bytes=bytes, _OSError=OSError):
    """`path` absolute, with its symbolic links followed (like os.path.realpath, which a program
    can replace, or whose helpers it can)."""
    path = _fspath(path)
    if _isinstance(path, _bytes):
        path = path.decode("utf-8", "surrogateescape")
    if not path.startswith("/"):
        path = _getcwd() + "/" + path
    todo = path.split("/")[::-1]
    done = []
    hops = 0
    while todo:
        part = todo.pop()
        if part == "" or part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = "/" + "/".join([*done, part])
        try:
            mode = _lstat(here).st_mode
        except _OSError:
            mode = 0
        if (mode & 0o170000) == 0o120000 and hops < 40:
            hops += 1
            target = _readlink(here)
            if target.startswith("/"):
                done = []
            todo.extend(target.split("/")[::-1])
            continue
        done.append(part)
    return "/" + "/".join(done)


def _hook(event, args, _tmp=(_TMP,), _read=_READ_ROOTS, _std=_STDLIB_ROOTS, _refused=_REFUSED,
          _modules=_REFUSED_MODULES, _paths=_PATH_EVENTS, _two=_TWO_PATHS, _parts=_FUNCTION_PARTS,
          _writing=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, _resolve=_resolve,
          _inside=_inside, _fspath=os.fspath, _getframe=sys._getframe, _str=str, _int=int, _tuple=tuple,
          _isinstance=isinstance, _TypeError=TypeError, _Refused=PermissionError):
    """The audit hook: raise PermissionError("sandbox: ... is not allowed") for what a computation
    has no use for (programs, signals, sockets, ctypes, native code outside the standard library,
    code objects, tracing) and for file access outside the working directory (writes) and the
    standard library (reads)."""
    what = None
    if event == "open":
        path, mode, flags = (_tuple(args) + (None, None, 0))[:3]
        if path is None or _isinstance(path, _int):
            return
        m = _str(mode or "")
        writing = "w" in m or "a" in m or "x" in m or "+" in m or ((flags or 0) & _writing) != 0
        real = _resolve(path)
        if writing and not _inside(real, _tmp):
            what = f"writing {path} (only the working directory is writable)"
        elif not writing and not _inside(real, _read):
            what = f"reading {path}"
    elif event.startswith("socket."):
        what = f"network access ({event})"
    elif event.startswith("ctypes."):
        what = "ctypes"
    elif event in _refused:
        what = f"{_refused[event]} ({event})"
    elif event == "object.__setattr__":
        if args[1] in _parts:
            what = f"changing a function's {args[1]}"
    elif event == "import":
        name, filename = _str(args[0]), args[1]
        base = name.partition(".")[0]
        if base in _modules or name in _modules:
            what = f"importing {name} ({_modules[base] if base in _modules else _modules[name]})"
        elif filename and not _inside(_resolve(filename), _std):
            what = f"loading native code from {filename}"
    elif event == "marshal.loads":
        if "importlib" not in _getframe(1).f_code.co_filename:
            what = "marshal.loads (building code objects)"
    elif event == "os.listdir" or event == "os.scandir":
        path = args[0] if args and args[0] is not None else "."
        if not _isinstance(path, _int) and not _inside(_resolve(path), _read):
            what = f"listing {path}"
    elif event == "os.chdir":
        if not _isinstance(args[0], _int) and not _inside(_resolve(args[0]), _tmp):
            what = "leaving the working directory"
    elif event in _paths:
        for arg in (args[:2] if event in _two else args[:1]):
            try:
                real = _resolve(arg)
            except _TypeError:          # not a path (a descriptor, a mode)
                continue
            if not _inside(real, _tmp):
                what = f"{_paths[event]} {arg} (only the working directory is writable)"
    if what is not None:
        raise _Refused(f"sandbox: {what} is not allowed")


# ============================================================================ talking to the parent
def _sender(fd):
    """send(doc): write `doc` as JSON on the result descriptor `fd`."""
    pid = os.getpid()

    def send(doc):
        if os.getpid() != pid:      # a forked copy (only possible with the audit hook off) stays silent
            os._exit(0)
        data = json.dumps(doc, ensure_ascii=False, allow_nan=True).encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    return send


class _Out(io.TextIOBase):
    """print() goes here; past `limit` bytes the run stops with an error."""

    def __init__(self, limit, send):
        self.parts, self.size = [], 0
        self.limit, self.send = limit, send

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        self.size += len(s.encode("utf-8", "replace"))
        if self.size > self.limit:
            room = max(0, self.limit - (self.size - len(s)))
            self.parts.append(s[:room])
            self.send({"ok": False, "error_type": "output", "stdout": "".join(self.parts),
                       "error": f"output limit exceeded: the program printed more than {self.limit} bytes"})
            os._exit(0)
        self.parts.append(s)
        return len(s)

    def text(self):
        return "".join(self.parts)


def _set_limits(limits):
    """The resource limits, before the program runs; processes count in this run's namespace only."""
    if not limits:
        return
    import resource
    for name, value in limits:
        hard = resource.getrlimit(getattr(resource, name))[1]
        new = value + 1 if name == "RLIMIT_CPU" else value     # SIGXCPU first, then SIGKILL
        new = new if hard == resource.RLIM_INFINITY else min(new, hard)
        resource.setrlimit(getattr(resource, name), (min(value, new), new))


# ============================================================================ running the program
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
            return f"<an integer of {v.bit_length()} bits>"
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
    except Exception:  # noqa: BLE001,S110 -- a value whose type checks fail: shown by repr below
        pass
    if hasattr(v, "tolist"):
        try:
            return _plain(v.tolist(), depth + 1)
        except Exception:  # noqa: BLE001,S110 -- as above
            pass
    return repr(v)[:2000]


def _where(tb, lines):
    """The ' (line N: text)' of the program's innermost frame in `tb`, or ""."""
    line = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == "<program>":
            line = frame.lineno
    if line is None or not (1 <= line <= len(lines)):
        return ""
    return f" (line {line}: {lines[line - 1].strip()[:200]})"


def _run(payload, result_fd, send):
    """Run the program of `payload`; the result document."""
    code = payload["code"]
    lines = code.splitlines()
    out = _Out(int(payload["max_output"]), send)
    max_value = int(payload["max_value"])
    ns = {"__name__": "__main__", "__builtins__": builtins, "math": math}
    inputs = payload.get("inputs") or {}
    import keyword
    for k, v in inputs.items():
        if k.isidentifier() and not keyword.iskeyword(k) and k not in ("inputs", "result"):
            ns[k] = v
    ns["inputs"] = inputs
    try:
        tree = ast.parse(code, "<program>", "exec")
    except SyntaxError as err:
        where = f" (line {err.lineno}: {(err.text or '').strip()[:200]})" if err.lineno else ""
        return {"ok": False, "error_type": "syntax", "error": f"SyntaxError: {err.msg}{where}"}
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, "<program>", "exec")
    tail = compile(last, "<program>", "eval") if last is not None else None
    if payload.get("audit", True):
        sys.addaudithook(_hook)
    sys.stdout = out
    os.write(result_fd, READY)          # the parent's clock for `timeout` starts here
    doc = {"ok": True}
    tail_value = None
    try:
        exec(body, ns)  # noqa: S102 -- running it is the point: the boundary is the OS around this process
        if tail is not None:
            tail_value = eval(tail, ns)
    except SystemExit as err:
        if err.code not in (None, 0):
            doc = {"ok": False, "error_type": "exception",
                   "error": f"SystemExit: the program exited with status {err.code}"}
    except MemoryError:
        _reserve.clear()
        ns.clear()
        doc = {"ok": False, "error_type": "memory",
               "error": f"MemoryError: the program ran out of memory (limit {payload['memory_mb']} MB)"}
    except RecursionError as err:
        doc = {"ok": False, "error_type": "exception",
               "error": f"RecursionError: {err}{_where(err.__traceback__, lines)}"}
    except BaseException as err:  # noqa: BLE001 -- whatever the program raised is its result
        msg = str(err)
        detail = ": " + msg[:500] if msg else ""
        doc = {"ok": False, "error_type": "exception",
               "error": f"{type(err).__name__}{detail}{_where(err.__traceback__, lines)}"}
    sys.stdout = sys.__stdout__
    doc["stdout"] = out.text()
    if doc["ok"]:
        if "result" in ns:
            doc["value"], doc["has_value"] = ns["result"], True
        elif tail_value is not None:
            doc["value"], doc["has_value"] = tail_value, True
        doc["variables"] = {n: ns[n] for n in payload.get("capture") or () if n in ns and n not in ("inputs",)}
        try:
            doc["value"] = _plain(doc.get("value"))
            doc["variables"] = {k: _plain(v) for k, v in doc["variables"].items()}
            size = len(json.dumps(doc.get("value"), allow_nan=True))
        except Exception as err:  # noqa: BLE001 -- an unreadable result is reported to the program
            return {"ok": False, "error_type": "exception", "stdout": doc["stdout"],
                    "error": f"the result could not be read: {type(err).__name__}: {err}"}
        if size > max_value:
            return {"ok": False, "error_type": "output", "stdout": doc["stdout"],
                    "error": f"the result is too large ({size} bytes; at most {max_value})"}
    return doc


def main():
    result_fd = os.dup(1)
    os.dup2(2, 1)                   # stray writes to descriptor 1 cannot corrupt the result
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdin.close()
    _reserve.append(bytearray(RESERVE_BYTES))
    _set_limits(payload.get("limits"))
    send = _sender(result_fd)
    try:
        doc = _run(payload, result_fd, send)
    except MemoryError:
        _reserve.clear()
        doc = {"ok": False, "error_type": "memory", "error": "MemoryError: the program ran out of memory"}
    send(doc)
    os._exit(0)


if __name__ == "__main__":
    main()
