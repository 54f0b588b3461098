"""The sandbox that runs model-written Python: it computes, and every escape is refused or stopped.

Each escape is tried with the audit hook on (what ProgramOfThought uses) and with the hook off, to
show that the OS layers (bubblewrap's namespaces, read-only root and size-limited scratch tmpfs,
resource limits, nobody) hold on their own. After each, the parent must be unharmed: it can still
run a normal program. tests/test_sandbox_isolation.py tries the issue's attacks as root and as an
unprivileged user. On a machine without bubblewrap, the tests of what a program computes run in the
weaker mode (PIPEC_SANDBOX=process) and the tests of the OS layers are skipped.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
from pipec import sandbox
from pipec.sandbox import SCRATCH, SandboxResult, run_python, sandbox_status

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the privilege drop to nobody only happens as root")
STATUS = sandbox_status()
BWRAP = STATUS.ok and STATUS.mode == "bwrap"
needs_bwrap = pytest.mark.skipif(not BWRAP, reason=f"no bubblewrap isolation here ({(STATUS.error or STATUS.mode).split('. ')[0]}); "
                                                   ".ci/run installs it")


@pytest.fixture(autouse=True)
def sandbox_mode(monkeypatch):
    """Without bubblewrap, what a program computes is still tested, in the weaker mode."""
    if not BWRAP:
        monkeypatch.setenv("PIPEC_SANDBOX", "process")


def healthy() -> None:
    """The parent can still run an ordinary program, quickly."""
    start = time.monotonic()
    r = run_python("result = sum(range(10))")
    assert r.ok and r.value == 45, r.error
    assert time.monotonic() - start < 5


def nobody_processes() -> int:
    """Processes of the sandbox user, zombies included (they count against its process limit)."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == 65534:
                    count += 1
            except OSError:
                pass
    return count


def drained(baseline: int = 0, seconds: float = 15.0) -> bool:
    """Wait until the killed processes of a stopped fork bomb are gone (init reaps them in its own time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if nobody_processes() <= baseline:
            return True
        time.sleep(0.1)
    return False


def refused(r: SandboxResult, *words: str) -> None:
    assert not r.ok
    assert r.error, "a refusal must say why"
    for w in words:
        assert w in r.error, r.error


# ------------------------------------------------------------------ the happy path
def test_computes_a_value_from_inputs():
    r = run_python("result = price * count + 1", {"price": 3, "count": 14})
    assert r.ok and r.has_value and r.value == 43
    assert r.error == "" and r.duration < 5


def test_uses_math_imported_or_not():
    r = run_python("import math\nresult = math.sqrt(16) + math.factorial(4)")
    assert r.ok and r.value == 28.0
    assert run_python("result = math.floor(math.pi * 100)").value == 314     # math is already there


def test_returns_structured_json_and_printed_text():
    code = "from fractions import Fraction\nprint('working')\nresult = {'a': [1, 2.5], 'b': {'c': (3, 4)}, 'f': Fraction(1, 4), 's': {2, 1}}"
    r = run_python(code)
    assert r.ok and r.value == {"a": [1, 2.5], "b": {"c": [3, 4]}, "f": 0.25, "s": [1, 2]}
    assert r.stdout == "working\n"


def test_last_expression_is_the_value_and_captured_variables_come_back():
    r = run_python("answer = 6 * 7\nanswer + 0.5", capture=["answer", "missing"])
    assert r.ok and r.value == 42.5 and r.variables == {"answer": 42}


def test_exceptions_and_syntax_errors_name_the_line():
    r = run_python("x = 1\ny = x / 0\n")
    refused(r, "ZeroDivisionError", "line 2", "y = x / 0")
    assert r.error_type == "exception"
    r = run_python("def f(:\n  pass")
    refused(r, "SyntaxError", "line 1")
    assert r.error_type == "syntax"


@needs_bwrap
def test_the_working_directory_is_a_private_scratch_space():
    name = f"notes-{uuid.uuid4().hex}.txt"
    r = run_python(f"import os, tempfile\nopen({name!r}, 'w').write('hi')\n"
                   f"result = [os.getcwd(), tempfile.gettempdir(), open({name!r}).read()]")
    assert r.ok, r.error
    assert r.value == [SCRATCH, SCRATCH, "hi"]
    assert not os.path.exists(os.path.join(SCRATCH, name))           # the host's /tmp got nothing
    r = run_python(f"import os\nresult = os.path.exists({name!r})")
    assert r.ok and r.value is False                                    # nor does the next run see it


# ------------------------------------------------------------------ escapes
def outside_targets() -> list[str]:
    mark = uuid.uuid4().hex
    return [f"/usr/pipec-escape-{mark}", f"/pipec-escape-{mark}", f"/dev/shm/pipec-escape-{mark}",
            f"/var/tmp/pipec-escape-{mark}"]


def test_writing_outside_the_working_directory_is_refused():
    targets = outside_targets()
    for target in targets:
        r = run_python(f"open({target!r}, 'w').write('x')")
        refused(r, "not allowed", "writable")
    r = run_python(f"import os\nos.rename('.', {targets[0]!r})")
    refused(r, "not allowed")
    assert not any(os.path.exists(t) for t in targets)
    healthy()


@needs_bwrap
def test_writing_outside_is_refused_by_the_file_system_too(tmp_path):
    targets = outside_targets()
    for target in targets:                            # /var is not there at all: no such directory
        r = run_python(f"open({target!r}, 'w').write('x')", audit=False)
        refused(r, "No such file or directory" if target.startswith("/var/") else "Read-only file system")
    host = tmp_path / "escaped.txt"                   # a host directory: not even there inside
    r = run_python(f"open({str(host)!r}, 'w').write('x')", audit=False)
    refused(r, "No such file or directory")
    assert not host.exists() and not any(os.path.exists(t) for t in targets)
    healthy()


@needs_bwrap
def test_all_a_run_may_write_is_bounded_and_dev_shm_is_no_way_around(tmp_path):
    code = ("import os\nwritten, why = 0, ''\nchunk = b'x' * 1048576\n"
            "for i in range(200):\n"
            "    try:\n"
            "        with open('f%d' % i, 'wb') as fh:\n"
            "            for _ in range(4):\n"
            "                written += fh.write(chunk)\n"
            "    except OSError as err:\n"
            "        why = str(err)\n"
            "        break\n"
            "try:\n"
            "    open('/dev/shm/more', 'wb').write(chunk)\n"
            "except OSError as err:\n"
            "    shm = str(err)\n"
            "result = [written, why, shm]")
    r = run_python(code, timeout=60, audit=False)
    assert r.ok, r.error
    written, why, shm = r.value
    assert sandbox.MAX_SCRATCH_BYTES - 8 * 1048576 <= written <= sandbox.MAX_SCRATCH_BYTES
    assert "No space left on device" in why and "Read-only file system" in shm
    healthy()


# The denied calls' numbers from the kernel's unistd tables: the test's own, so that it checks the
# numbers libseccomp put in the filter instead of trusting them.
SYSCALL_NUMBERS = {
    "x86_64": {"shmget": 29, "msgget": 68, "memfd_create": 319, "memfd_secret": 447, "mq_open": 240,
               "io_uring_setup": 425, "bpf": 321, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
               "request_key": 249, "perf_event_open": 298, "ptrace": 101, "process_vm_readv": 310,
               "process_vm_writev": 311},
    "aarch64": {"shmget": 194, "msgget": 186, "memfd_create": 279, "memfd_secret": 447, "mq_open": 180,
                "io_uring_setup": 425, "bpf": 280, "userfaultfd": 282, "keyctl": 219, "add_key": 217,
                "request_key": 218, "perf_event_open": 241, "ptrace": 117, "process_vm_readv": 270,
                "process_vm_writev": 271},
}
MACHINE = os.uname().machine
needs_seccomp = pytest.mark.skipif("seccomp" not in STATUS.isolation,
                                   reason="no seccomp filter here (libseccomp could not be loaded)")
# i386 getpid (20) through `int 0x80` from this 64-bit process: mov eax, 20; int 0x80; ret
INT80_GETPID = ("import ctypes, mmap, os\n"
                "page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
                "page.write(bytes.fromhex('b814000000cd80c3'))\n"
                "call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))\n"
                "result = [call(), os.getpid()]\n")


def int80_works_here() -> bool:
    """This kernel runs 32-bit calls from a 64-bit process (unfiltered, outside the sandbox)."""
    out = subprocess.run([sys.executable, "-c", INT80_GETPID + "print(result[0] == result[1])"],
                         capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip() == "True"


@needs_bwrap
@needs_seccomp
@pytest.mark.skipif(MACHINE not in SYSCALL_NUMBERS, reason=f"no syscall table in this test for {MACHINE}")
def test_kernel_memory_past_the_limits_and_risky_interfaces_are_refused():
    """Shared memory, message queues and memfds would hold memory outside the address-space limit and
    the scratch tmpfs until the run ends; x32 calls would get around the filter's numbers."""
    numbers = SYSCALL_NUMBERS[MACHINE]
    assert set(numbers) == set(sandbox._DENIED_SYSCALLS)
    code = ("import os, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
            "for name, nr in numbers.items():\n"
            "    ctypes.set_errno(0)\n"
            "    out[name] = [libc.syscall(nr, 0, 1 << 20, 0o1600, 0, 0), ctypes.get_errno()]\n"
            "out['x32 getpid'] = [libc.syscall(0x40000000 | 39), ctypes.get_errno()] if os.uname().machine == "
            "'x86_64' else [-1, 1]\n"
            "out['getpid'] = [os.getpid(), 0]\n"
            "result = out")
    r = run_python(code, {"numbers": numbers}, audit=False)
    assert r.ok, r.error
    assert r.value.pop("getpid")[0] > 0                               # everything else still works
    assert r.value == {name: [-1, 1] for name in r.value}, r.value    # -1, EPERM
    assert "seccomp" in r.isolation
    healthy()


@needs_bwrap
@needs_seccomp
@pytest.mark.skipif(MACHINE != "x86_64", reason="int 0x80 is an x86 instruction")
def test_32_bit_calls_from_a_64_bit_program_are_refused():
    """The i386 ABI has its own numbers (its getpid, 20, is x86_64's writev): the filter refuses it whole."""
    if not int80_works_here():
        pytest.skip("this kernel runs no 32-bit calls (no IA32 emulation): nothing to refuse")
    r = run_python(INT80_GETPID, audit=False)
    assert r.ok, r.error
    assert r.value[0] == -1 and r.value[1] > 0, r.value               # -EPERM in eax; 64-bit getpid works
    healthy()


@needs_bwrap
def test_without_libseccomp_runs_go_on_without_the_filter_and_do_not_claim_it(monkeypatch):
    """Where libseccomp cannot be loaded (neither found nor loadable by its soname), runs still work,
    with no filter at all (a memfd can be made), and neither they nor the status name "seccomp"."""
    import ctypes.util
    find = ctypes.util.find_library
    with monkeypatch.context() as patch:
        patch.setattr(ctypes.util, "find_library", lambda name: None if name == "seccomp" else find(name))
        patch.setattr(sandbox, "_LIBSECCOMP_SONAME", "libpipec-no-such-library.so.0")
        sandbox._seccomp_program.cache_clear()
        try:
            assert sandbox._libseccomp() is None
            assert "seccomp" not in sandbox_status().isolation
            r = run_python("import os\nresult = [os.getpid() > 0, os.memfd_create('m') >= 0]", audit=False)
            assert r.ok and r.value == [True, True], r.error
            assert "seccomp" not in r.isolation and "bwrap" in r.isolation and "pidns" in r.isolation, r.isolation
        finally:
            sandbox._seccomp_program.cache_clear()
    assert ("seccomp" in sandbox_status().isolation) == ("seccomp" in STATUS.isolation)    # back, once loadable
    healthy()


def test_the_parent_environment_and_api_keys_are_not_visible(monkeypatch):
    secret = "sk-fake-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("PIPEC_TEST_SECRET", secret)
    r = run_python("import os\nprint(os.environ.get('OPENAI_API_KEY'))\nresult = dict(os.environ)")
    assert r.ok, r.error
    assert "OPENAI_API_KEY" not in r.value and "PIPEC_TEST_SECRET" not in r.value
    assert secret not in json.dumps(r.to_dict())
    # nor through /proc
    r = run_python(f"result = open('/proc/{os.getpid()}/environ', 'rb').read().decode()")
    refused(r, "not allowed")
    assert secret not in json.dumps(r.to_dict())


@needs_bwrap
def test_the_parent_environment_is_not_in_the_sandbox_proc(monkeypatch):
    secret = "sk-fake-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    code = ("import os\nseen = []\n"
            f"for pid in ['{os.getpid()}', str(os.getppid()), '1'] + [p for p in os.listdir('/proc') if p.isdigit()]:\n"
            "    try:\n"
            "        seen.append(open('/proc/%s/environ' % pid, 'rb').read().decode('utf-8', 'replace'))\n"
            "    except OSError as err:\n"
            "        seen.append(str(err))\n"
            "result = seen")
    r = run_python(code, audit=False)
    assert r.ok, r.error
    assert secret not in json.dumps(r.to_dict())


@pytest.mark.parametrize("audit", [True, False])
def test_no_network_connection_reaches_a_local_listener(audit):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    try:
        r = run_python(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                       "s.sendall(b'hello')\nresult = 'connected'", audit=audit)
        if not audit and "netns" not in r.isolation:
            pytest.skip("no network namespace can be made here")
        assert not r.ok and r.value is None
        if audit:
            assert "network access" in r.error, r.error
        else:                                           # a loopback of its own, with nothing listening
            assert "Connection refused" in r.error or "unreachable" in r.error, r.error
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    healthy()


def test_starting_programs_is_refused():
    r = run_python("import subprocess\nresult = subprocess.run(['id'], capture_output=True).stdout")
    refused(r, "not allowed", "starting programs")
    r = run_python("import os\nresult = os.system('id > escaped.txt')")
    refused(r, "not allowed", "os.system")
    r = run_python("import os\nos.execv('/bin/sh', ['sh', '-c', 'id'])")
    refused(r, "not allowed")
    r = run_python("import ctypes\nctypes.CDLL(None).system(b'id')")
    refused(r, "not allowed", "ctypes")
    healthy()


def test_a_fork_bomb_is_stopped_at_once():
    start = time.monotonic()
    r = run_python("import os\nwhile True:\n    os.fork()", timeout=3)
    refused(r, "not allowed", "os.fork")
    assert time.monotonic() - start < 3
    healthy()


@needs_root
def test_a_fork_bomb_is_bounded_by_the_process_limit_without_the_hook():
    baseline = nobody_processes()
    start = time.monotonic()
    r = run_python("import os\nwhile True:\n    os.fork()", timeout=3, audit=False)
    assert not r.ok and ("Resource temporarily unavailable" in r.error or r.timed_out), r.error
    assert time.monotonic() - start < 8
    # Reaped first: until init reaps them, the killed processes count against the sandbox user's
    # process limit, so a run started at once could be refused a process of its own.
    assert drained(baseline), "killed fork-bomb processes are still around"
    healthy()


def processes_named(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


@needs_bwrap
def test_a_timeout_kills_what_the_program_started():
    marker = "pipec-child-" + uuid.uuid4().hex
    r = run_python(f"import os, time\nif os.fork() == 0:\n    os.execv('/usr/bin/sleep', [{marker!r}, '60'])\n"
                   "time.sleep(60)", timeout=1, audit=False)
    try:
        assert r.timed_out, r.error
        assert processes_named(marker) == [], "the child survived the timeout"
    finally:
        for pid in processes_named(marker):
            os.kill(pid, 9)
    healthy()


def test_memory_exhaustion_is_stopped():
    r = run_python("x = bytearray(10**10)", memory_mb=128)
    refused(r, "MemoryError", "128 MB")
    assert r.memory_exceeded and r.error_type == "memory"
    start = time.monotonic()
    r = run_python("x = []\nwhile True:\n    x.append(bytearray(10**6))", memory_mb=128, timeout=10)
    refused(r, "MemoryError")
    assert r.memory_exceeded and time.monotonic() - start < 10
    healthy()


def test_an_infinite_loop_is_stopped_at_the_time_limit():
    start = time.monotonic()
    r = run_python("while True:\n    pass", timeout=1)
    elapsed = time.monotonic() - start
    refused(r, "timed out", "1 s")
    assert r.timed_out and r.error_type == "timeout"
    assert 1 <= elapsed < 4
    healthy()


def test_huge_output_is_capped():
    start = time.monotonic()
    r = run_python("while True:\n    print('x' * 1000)", timeout=5, max_output=10_000)
    refused(r, "output limit exceeded")
    assert r.output_exceeded and len(r.stdout) <= 10_000
    assert time.monotonic() - start < 5
    r = run_python("result = 'y' * (5 * 1024 * 1024)", memory_mb=256)
    refused(r, "too large")
    # writing straight to the descriptors does not flood the parent either
    r = run_python("import os\nfor _ in range(2000):\n    os.write(1, b'z' * 100_000)\nresult = 1", timeout=5)
    assert r.ok and r.value == 1 and len(r.stderr) <= 64 * 1024
    healthy()


def test_reading_secrets_is_refused():
    r = run_python("result = open('/etc/shadow').read()")
    refused(r, "not allowed", "/etc/shadow")
    assert r.value is None


@needs_bwrap
def test_etc_is_not_there_and_the_program_is_nobody():
    r = run_python("result = open('/etc/shadow').read()", audit=False)
    refused(r, "No such file or directory")
    r = run_python("import os\nresult = [os.getuid(), os.getgid(), os.getgroups(), sorted(os.listdir('/etc'))]",
                   audit=False)
    assert r.value[:3] == [65534, 65534, []]
    assert set(r.value[3]) <= {"ld.so.cache", "localtime"}


@pytest.mark.parametrize("code, words", [
    ("import sys\nsys.settrace(lambda *a: None)", "tracing"),
    ("import sys\nsys.setprofile(lambda *a: None)", "profiling"),
    ("def f():\n    pass\nf.__code__ = (lambda: 1).__code__", "__code__"),
    ("def f(x=1):\n    pass\nf.__defaults__ = (2,)", "__defaults__"),
])
def test_the_hook_refuses_what_could_rewrite_it(code, words):
    """Tracing could rewrite the running hook's variables; changing a function's code or defaults could
    rewrite the hook's helpers."""
    refused(run_python(code), "not allowed", words)


def test_the_parent_stays_healthy_over_many_runs():
    fds_before = len(os.listdir("/proc/self/fd"))
    # Other tests' idle cache threads may exit meanwhile, so compare identities, not counts.
    threads_before = set(threading.enumerate())
    results: list[SandboxResult] = []

    def one(i: int) -> None:
        results.append(run_python("result = n * n", {"n": i}))
    workers = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(r.value for r in results) == [i * i for i in range(6)]
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert set(threading.enumerate()) <= threads_before


# ---------------------------------------------------------------------- the child program
CHILD = os.path.join(os.path.dirname(sandbox.__file__), "sandbox_child.py")


def test_the_child_is_a_standalone_program_for_any_python_3_8():
    """sandbox_child.py runs as `python -c SOURCE` without pipec: the standard library only, Python 3.8
    syntax, and small enough for one command-line argument (Linux caps one at 128 KiB)."""
    import ast
    source = sandbox._child_source()
    assert source == open(CHILD, encoding="utf-8").read()
    assert len(source.encode("utf-8")) < 128 * 1024
    tree = ast.parse(source, feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module}
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert imported and imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names


def test_importing_the_child_runs_nothing():
    """Only `python -c` runs it: imported, it reads no stdin and touches no descriptor."""
    out = subprocess.run([sys.executable, "-c", "import pipec.sandbox_child; print('imported')"],
                         input="not a payload", capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout == "imported\n", out.stderr
