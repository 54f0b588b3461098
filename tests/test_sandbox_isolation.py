"""Model-written code is contained by the operating system, not by the audit hook (issue 12, part 2).

A program switched the audit hook off in four ways (replacing `sys.modules['__main__']._refuse`,
replacing `builtins.isinstance`, replacing `os.path.realpath`, and reaching the hook's globals
through the traceback of its own PermissionError), then ran `id`, read /etc/passwd, called ctypes,
wrote 320 MB to /tmp and /dev/shm, left a `setsid` child running, and read the invoking user's home,
the parent's environment and a loopback socket. Here each of those ways, and no hook at all, is
followed by every one of those payloads, as root and as an unprivileged user (nobody, driving a copy
of pipec/sandbox.py and pipec/sandbox_child.py with the system Python, as a user without root
would), and each must be refused or contained. The host is checked from outside after every run: no
process of the run is left, nothing was written outside its scratch space, no connection arrived.

Rerun: `.venv/bin/python -m pytest tests/test_sandbox_isolation.py -v`
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
from pipec import sandbox
from pipec.sandbox import MAX_SCRATCH_BYTES, SandboxResult, run_python, sandbox_status

ROOT = os.geteuid() == 0
SYSTEM_PYTHON = "/usr/bin/python3"
SETPRIV = shutil.which("setpriv")
MB = 1024 * 1024
STATUS = sandbox_status()
needs_bwrap = pytest.mark.skipif(
    not STATUS.ok or STATUS.mode != "bwrap",
    reason=f"no bubblewrap isolation here ({(STATUS.error or STATUS.mode).split('. ')[0]}); .ci/run installs it")

# Ways a program switched the hook off. Each defines undo(), run before the result is sent back
# (a replaced isinstance would also break the sandbox's own reading of the result).
BYPASSES = {
    "no-hook": "def undo():\n    pass\n",
    "replace-refuse": """
        import sys
        sys.modules["__main__"]._refuse = lambda what: None
        def undo():
            pass
    """,
    "replace-isinstance": """
        import builtins
        _isinstance = builtins.isinstance
        builtins.isinstance = lambda obj, cls: True if cls is int else _isinstance(obj, cls)
        def undo():
            builtins.isinstance = _isinstance
    """,
    "replace-realpath": """
        import os
        _realpath = os.path.realpath
        os.path.realpath = lambda path, *a, **k: os.getcwd() + "/harmless"
        def undo():
            os.path.realpath = _realpath
    """,
    "traceback-globals": """
        def _reach():
            try:
                open("/proc/self/status")
            except PermissionError as err:
                tb = err.__traceback__
                while tb is not None:
                    frame = tb.tb_frame
                    if "_refuse" in frame.f_globals:
                        frame.f_globals["_refuse"] = lambda what: None
                    if "_hook" in frame.f_globals and frame.f_code.co_name == "_hook":
                        frame.f_locals.update({"_tmp": ("/",), "_read": ("/",)})
                    tb = tb.tb_next
        _reach()
        def undo():
            pass
    """,
}

# Every payload the issue reports, each recorded as ["ok", value] or ["err", "Type: message"].
PAYLOADS = r'''
seen = {}


def attempt(name, fn):
    try:
        seen[name] = ["ok", fn()]
    except BaseException as err:
        seen[name] = ["err", "%s: %s" % (type(err).__name__, err)]


def hook_probe():
    with open("/proc/self/status") as fh:       # the OS allows it; the hook does not
        return fh.read(20)


def run_id():
    import subprocess
    return subprocess.run(["id"], capture_output=True, text=True, timeout=20).stdout


def read(path):
    with open(path, "rb") as fh:
        return fh.read(4000).decode("utf-8", "replace")


def call_ctypes():
    import ctypes
    libc = ctypes.CDLL(None)
    return [libc.getuid(), libc.unshare(0x10000000)]       # CLONE_NEWUSER: a namespace of its own


def fill_disk():
    import os
    places = [("/tmp", "/tmp"), ("/dev/shm", "/dev/shm"), ("cwd", os.getcwd())]
    written = {name: 0 for name, _ in places}
    chunk = b"x" * (1024 * 1024)
    total = failures = n = 0
    while total < 320 * 1024 * 1024 and failures < 30:
        name, where = places[n % 3]
        n += 1
        try:
            fd = os.open("%s/%s-%d" % (where, inputs["marker"], n), os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError:
            failures += 1
            continue
        try:
            for _ in range(4):                   # 4 MB files: under the per-file cap, as the issue's were
                done = os.write(fd, chunk)
                written[name] += done
                total += done
        except OSError:
            failures += 1
        finally:
            os.close(fd)
    return written


def write_elsewhere():
    import os
    made = []
    for where in ("/", "/usr", "/etc", "/var/tmp", "/root", inputs["home"]):
        try:
            with open(os.path.join(where, "pipec-%s" % inputs["marker"]), "w") as fh:
                fh.write("escaped")
            made.append(where)
        except OSError:
            pass
    return made


def leave_a_daemon():
    import os
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.closerange(0, 4096)
                os.execv("/usr/bin/sleep", ["pipec-daemon-" + inputs["marker"], "300"])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return "started"


def environments():
    import os
    found = {"os.environ": dict(os.environ)}
    pids = ["self", str(os.getppid()), "1"] + [p for p in os.listdir("/proc") if p.isdigit()]
    for pid in pids:
        try:
            found[pid] = read("/proc/%s/environ" % pid)
        except OSError as err:
            found[pid] = "err " + type(err).__name__
    return found


def processes():
    import os
    seen_here = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                seen_here.append(read("/proc/%s/cmdline" % pid).replace("\0", " ")[:120])
            except OSError:
                pass
    return seen_here


def tcp():
    import socket
    s = socket.create_connection(("127.0.0.1", inputs["port"]), timeout=5)
    s.sendall(b"escaped")
    return "connected"


def unix():
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(inputs["unix"])
    s.sendall(b"escaped")
    return "connected"


def home():
    import os
    return [os.listdir(inputs["home"]), read(os.path.join(inputs["home"], "secret.txt"))]


attempt("hook_probe", hook_probe)
attempt("id", run_id)
attempt("passwd", lambda: read("/etc/passwd"))
attempt("shadow", lambda: read("/etc/shadow"))
attempt("ctypes", call_ctypes)
attempt("fill", fill_disk)
attempt("elsewhere", write_elsewhere)
attempt("daemon", leave_a_daemon)
attempt("environ", environments)
attempt("processes", processes)
attempt("tcp", tcp)
attempt("unix", unix)
attempt("home", home)
undo()
result = seen
'''


def attack_code(bypass: str) -> str:
    return textwrap.dedent(BYPASSES[bypass]).strip() + "\n" + PAYLOADS


# ------------------------------------------------------------------ the host, watched from outside
class Host:
    """What the attack aims at, and how the test sees from outside whether it got there."""

    def __init__(self, home: Path, secret: str):
        self.marker = "pipec-attack-" + uuid.uuid4().hex[:12]
        self.secret = secret
        self.home = home
        (home / "secret.txt").write_text(secret)
        self.home_before = sorted(os.listdir(home))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(5)
        self.tcp.setblocking(False)
        self.sock_dir = tempfile.mkdtemp(prefix="pipec-sock-")
        os.chmod(self.sock_dir, 0o755)
        self.unix_path = os.path.join(self.sock_dir, "s")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.unix.listen(5)
        self.unix.setblocking(False)

    def inputs(self) -> dict:
        return {"marker": self.marker, "port": self.tcp.getsockname()[1], "unix": self.unix_path,
                "home": str(self.home)}

    def files_left(self) -> list[str]:
        found = []
        for where in ("/tmp", "/dev/shm", "/var/tmp", "/", "/usr", "/etc", "/root", str(self.home)):
            found += glob.glob(os.path.join(where, f"*{self.marker}*"))
        return found

    def processes_left(self) -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        if self.marker.encode() in fh.read():
                            found.append(int(pid))
                except OSError:
                    pass
        return found

    def connections(self) -> int:
        count = 0
        for listener in (self.tcp, self.unix):
            try:
                while True:
                    conn, _ = listener.accept()
                    conn.close()
                    count += 1
            except (BlockingIOError, OSError):
                pass
        return count

    def clean(self) -> None:
        """What an escape left (only on code that lets it escape): removed, so one failure stays one."""
        for pid in self.processes_left():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for path in self.files_left():
            try:
                os.remove(path)
            except OSError:
                pass
        self.tcp.close()
        self.unix.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)


def run_as_nobody(code: str, inputs: dict, audit: bool, env: dict, timeout: float = 60) -> SandboxResult:
    """`run_python` as an unprivileged user: a copy of pipec/sandbox.py and of the child program it
    runs, sandbox_child.py, beside it (both import only the standard library) driven by the system
    Python as uid 65534, with `env` as that user's environment."""
    work = tempfile.mkdtemp(prefix="pipec-driver-")
    try:
        os.chmod(work, 0o755)
        shutil.copy(sandbox.__file__, os.path.join(work, "sandbox_copy.py"))
        shutil.copy(os.path.join(os.path.dirname(sandbox.__file__), "sandbox_child.py"), work)
        driver = os.path.join(work, "driver.py")
        Path(driver).write_text(textwrap.dedent("""
            import json, sys
            sys.path.insert(0, sys.argv[1])
            import sandbox_copy
            job = json.load(sys.stdin)
            r = sandbox_copy.run_python(job["code"], job["inputs"], timeout=job["timeout"], audit=job["audit"])
            print(json.dumps(r.to_dict()))
        """))
        for path in (driver, os.path.join(work, "sandbox_copy.py"), os.path.join(work, "sandbox_child.py")):
            os.chmod(path, 0o644)
        job = json.dumps({"code": code, "inputs": inputs, "timeout": timeout, "audit": audit})
        out = subprocess.run([SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", "--", SYSTEM_PYTHON,
                              driver, work], input=job, capture_output=True, text=True, cwd=work, env=env,
                             timeout=timeout + 120, check=False)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout.strip().splitlines()[-1])
        doc["isolation"] = tuple(doc["isolation"])
        return SandboxResult(**doc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def can_drive_nobody() -> str:
    """"" when the unprivileged runs can be made here, else why not."""
    if not ROOT:
        return ""                                   # this process is already unprivileged
    if not SETPRIV:
        return "setpriv (util-linux) is not installed"
    try:
        version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 10))"],
                                 capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except OSError:
        version = ""
    return "" if version == "True" else f"{SYSTEM_PYTHON} (3.10 or newer) is needed to drive the sandbox as nobody"


@pytest.fixture
def secret(monkeypatch) -> str:
    value = "sk-fake-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", value)
    monkeypatch.setenv("PIPEC_TEST_SECRET", value)
    return value


def make_home(user: str) -> Path:
    """The invoking user's home: root's own, or one owned by nobody for the unprivileged runs."""
    if user == "root":
        return Path(tempfile.mkdtemp(prefix="pipec-home-", dir=os.path.expanduser("~")))
    home = Path(tempfile.mkdtemp(prefix="pipec-home-"))
    if ROOT:
        os.chown(home, 65534, 65534)
    os.chmod(home, 0o700)
    return home


def run_attack(user: str, code: str, host: Host, audit: bool, secret: str) -> SandboxResult:
    if user == "root" or not ROOT:
        return run_python(code, host.inputs(), timeout=60, audit=audit)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(host.home), "LANG": "C.UTF-8", "OPENAI_API_KEY": secret,
           "PIPEC_TEST_SECRET": secret}
    return run_as_nobody(code, host.inputs(), audit, env)


USERS = [pytest.param("root", marks=pytest.mark.skipif(not ROOT, reason="needs root")),
         pytest.param("unprivileged", marks=pytest.mark.skipif(bool(can_drive_nobody()),
                                                                 reason=can_drive_nobody() or "-"))]


def escapes(r: SandboxResult, host: Host, user: str, bypass: str) -> list[str]:
    """Every way the run got out, looked at from outside first, then from what it saw inside."""
    found = []
    if host.processes_left():
        found.append("daemon: a process of the run outlived it")
    if host.files_left():
        found.append(f"fill/elsewhere: the run wrote outside its scratch space: {host.files_left()[:3]}")
    if sorted(os.listdir(host.home)) != host.home_before:
        found.append("home: the run wrote to the user's home")
    if host.connections():
        found.append("tcp/unix: the run reached a socket on the host")
    if host.secret in json.dumps(r.to_dict()):
        found.append("environ: the run read the parent's environment")
    if not r.ok:
        return found + [f"the attack did not finish: {r.error}"]
    seen = r.value

    def check(name: str, fine) -> None:
        if seen[name][0] == "ok" and not fine(seen[name][1]):
            found.append(f"{name}: {json.dumps(seen[name][1])[:300]}")
    if bypass != "no-hook" and not (seen["hook_probe"][0] == "err" and "sandbox:" in seen["hook_probe"][1]):
        found.append(f"hook_probe: {bypass} switched the audit hook off")
    check("id", lambda out: "uid=65534" in out and "root" not in out)
    for name in ("passwd", "shadow", "tcp", "unix", "home"):
        check(name, lambda _: False)
    check("ctypes", lambda v: v == [65534, -1])
    check("elsewhere", lambda made: made == [])
    check("fill", lambda w: w["/dev/shm"] == 0 and sum(w.values()) <= MAX_SCRATCH_BYTES)
    check("processes", lambda seen_here: len(seen_here) <= 8
          and not any("pytest" in c or "driver" in c for c in seen_here))
    if "bwrap" not in r.isolation or "pidns" not in r.isolation or (user == "root" and "nobody" not in r.isolation):
        found.append(f"isolation: {r.isolation}")
    if "seccomp" in STATUS.isolation and "seccomp" not in r.isolation:     # the copy run as nobody loads it too
        found.append(f"seccomp: no filter for this run: {r.isolation}")
    return found


@needs_bwrap
@pytest.mark.parametrize("bypass", list(BYPASSES))
@pytest.mark.parametrize("user", USERS)
def test_every_attack_is_refused_or_contained(user, bypass, secret):
    home = make_home(user)
    host = Host(home, secret)
    try:
        r = run_attack(user, attack_code(bypass), host, audit=bypass != "no-hook", secret=secret)
        found = escapes(r, host, user, bypass)
        assert not found, f"{len(found)} escapes as {user} after {bypass}:\n" + "\n".join(found)
    finally:
        host.clean()
        shutil.rmtree(home, ignore_errors=True)


@needs_bwrap
@pytest.mark.parametrize("user", USERS)
def test_a_timeout_ends_every_process_of_the_run(user, secret):
    """A program that leaves a double-forked, setsid daemon and then never ends: at the timeout
    the whole pid namespace goes, before run_python returns."""
    home = make_home(user)
    host = Host(home, secret)
    helpers = PAYLOADS.split('attempt("hook_probe"')[0]
    code = BYPASSES["no-hook"] + helpers + "leave_a_daemon()\nwhile True:\n    pass\n"
    try:
        if user == "root" or not ROOT:
            r = run_python(code, host.inputs(), timeout=2, audit=False)
        else:
            env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
            r = run_as_nobody(code, host.inputs(), False, env, timeout=2)
        assert r.timed_out, r.error
        assert host.processes_left() == []
    finally:
        host.clean()
        shutil.rmtree(home, ignore_errors=True)


@needs_bwrap
def test_a_fork_bomb_is_bounded_per_run_and_leaves_nothing():
    r = run_python("import os\nwhile True:\n    os.fork()", timeout=10, audit=False)
    assert not r.ok and ("Resource temporarily unavailable" in r.error or r.timed_out), r.error
    again = run_python("result = 1")
    assert again.ok, again.error


# ------------------------------------------------------------------ refusing, and the weaker mode
def test_without_bubblewrap_nothing_runs_and_the_message_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("PIPEC_SANDBOX", raising=False)
    monkeypatch.setenv("PIPEC_BWRAP", str(tmp_path / "no-such-bwrap"))
    marker = tmp_path / "ran"
    r = run_python(f"open({str(marker)!r}, 'w').write('x')\nresult = 1")
    assert not r.ok and r.error_type == "setup" and r.value is None
    for words in ("apt install bubblewrap", "dnf install bubblewrap", "user namespaces", "PIPEC_SANDBOX=process",
                  "no-such-bwrap"):
        assert words in r.error, r.error
    assert not marker.exists()
    assert not sandbox_status().ok


@pytest.fixture
def shared_dir():
    """A directory the user nobody can reach (a fake bwrap there can be run by nobody, as root's is)."""
    where = tempfile.mkdtemp(prefix="pipec-fake-bwrap-")
    os.chmod(where, 0o755)
    yield Path(where)
    shutil.rmtree(where, ignore_errors=True)


def fake_bwrap(where: Path, body: str) -> str:
    path = where / "bwrap"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.mark.skipif(not shutil.which("bwrap"), reason="needs the real bwrap's --help to imitate it")
def test_where_namespaces_cannot_be_made_nothing_runs(monkeypatch, shared_dir):
    """As in Docker's default seccomp profile: bwrap is there, but cannot make its namespaces."""
    real = shutil.which("bwrap")
    monkeypatch.setenv("PIPEC_BWRAP", fake_bwrap(shared_dir, f"""
case "$1" in --help|--version) exec {real} "$1";; esac
echo "bwrap: No permissions to create new namespace, likely because the kernel does not allow non-privileged user namespaces." >&2
exit 1
"""))
    r = run_python("result = 1")
    assert not r.ok and r.error_type == "setup"
    assert "No permissions to create new namespace" in r.error and "apt install bubblewrap" in r.error, r.error


@pytest.mark.skipif(not ROOT or not shutil.which("bwrap"), reason="needs root and the real bwrap")
def test_root_refuses_rather_than_start_bubblewrap_itself(monkeypatch, shared_dir):
    """Where nobody cannot make user namespaces, root could still start bwrap, but its sandbox would be
    root on the host, which the kernel exempts from the process limit: refused instead."""
    real = shutil.which("bwrap")
    monkeypatch.setenv("PIPEC_BWRAP", fake_bwrap(shared_dir, f"""
case "$1" in --help|--version) exec {real} "$1";; esac
if [ "$(id -u)" != 0 ]; then
    echo "bwrap: No permissions to create new namespace" >&2
    exit 1
fi
exec {real} "$@"
"""))
    r = run_python("result = 1")
    assert not r.ok and r.error_type == "setup", r
    assert "runs as root" in r.error and "nobody" in r.error and "No permissions" in r.error, r.error


def test_a_bubblewrap_without_the_needed_options_is_refused(monkeypatch, shared_dir):
    monkeypatch.setenv("PIPEC_BWRAP", fake_bwrap(shared_dir, """
case "$1" in --version) echo "bubblewrap 0.6.1";; *) echo "usage: bwrap [OPTIONS...] --unshare-user --tmpfs";; esac
"""))
    r = run_python("result = 1")
    assert not r.ok and r.error_type == "setup"
    assert "0.8.0 or newer" in r.error and "--size" in r.error and "0.6.1" in r.error, r.error


def test_the_weaker_mode_is_opt_in_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPEC_BWRAP", str(tmp_path / "no-such-bwrap"))     # even with bubblewrap gone
    monkeypatch.setenv("PIPEC_SANDBOX", "process")
    r = run_python("result = 6 * 7")
    assert r.ok and r.value == 42, r.error
    assert sandbox.WEAKER_MODE in r.isolation and "bwrap" not in r.isolation and "audit" in r.isolation
    status = sandbox_status()
    assert status.ok and status.mode == "process" and sandbox.WEAKER_MODE in status.isolation
    monkeypatch.setenv("PIPEC_SANDBOX", "none")
    r = run_python("result = 1")
    assert not r.ok and r.error_type == "setup" and "'none' is not a sandbox mode" in r.error


@needs_bwrap
def test_the_default_mode_names_its_layers():
    r = run_python("result = 1")
    assert r.ok
    for layer in ("bwrap", "userns", "no-nested-userns", "mountns", "ro-root", "tmpfs-cap", "pidns", "netns",
                  "ipcns", "utsns", "rlimits", "audit"):
        assert layer in r.isolation, r.isolation
    assert sandbox.WEAKER_MODE not in r.isolation
