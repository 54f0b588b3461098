"""Special files: a .pipe file (or its imports) naming /proc, /dev, a FIFO or a huge file.

A `.pipe` file may come from someone else, and `import` takes any path. Before this was fixed,
`import "/proc/self/environ"` made `pipec check` print the whole environment (API keys included)
inside the syntax-error excerpt, `import "/dev/zero"` read until MemoryError, and a FIFO hung the
command. Each test runs the real `pipec` command (a subprocess, as a CI job would) and asserts what a
user sees: the exit status, the message, and that no environment value reaches the output.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipec.registry import catalogue
from pipec.dsl import load
from pipec.dsl.files import MAX_SOURCE_BYTES, SourceError, open_regular, read_regular, read_source

from fault_server import pipec_cli, pipec_command, record_figure

pytestmark = pytest.mark.usefixtures("isolated_env")

# Values a CI job would have in its environment: one provider key, one key under a name nothing
# treats as secret, and a harmless marker that shows whether the environment was printed at all.
KEY = "sk-ci-7Hq2Vx9LmN4pR8sT1wYz3bC6dF0gJ5kQ"
ODD_KEY = "acme-live-7f3c9e2b1d5a8f60c4e2b9d1"
MARKER = "pipec-environment-marker-3141592653"
ENV = {"OPENAI_API_KEY": KEY, "ACME_GATEWAY_LOGIN": ODD_KEY, "PIPEC_TEST_MARKER": MARKER}

SIGNATURE = "signature S { in q: str out a: str }\n"


def pieces(secret: str, n: int = 12) -> list[str]:
    return [secret[i:i + n] for i in range(len(secret) - n + 1)]


def assert_nothing_leaked(*texts: str) -> None:
    joined = "\n".join(texts)
    assert MARKER not in joined, "the environment was printed"
    for secret in (KEY, ODD_KEY):
        assert not any(p in joined for p in pieces(secret)), "a key (or a piece of one) was printed"


def check(pipe: Path, *extra, timeout: float = 60, limit_memory: bool = False) -> subprocess.CompletedProcess:
    """`pipec check` as a subprocess with the fake keys in its environment (and at most 1 GiB of
    address space when asked: a reader without a bound then fails fast instead of eating the machine)."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    env = {**os.environ, "NO_COLOR": "1", **ENV}
    return subprocess.run([*pipec_command(), "check", str(pipe), *map(str, extra)], env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=cap if limit_memory else None)


# ---------------------------------------------------------------------------- imports
def test_importing_proc_self_environ_prints_no_environment_value(tmp_path):
    pipe = tmp_path / "env.pipe"
    pipe.write_text('import "/proc/self/environ"\n' + SIGNATURE)
    run = check(pipe)
    assert run.returncode == 1, run.stderr
    assert "cannot read import '/proc/self/environ': not a regular file" in run.stderr
    assert "Traceback" not in run.stderr
    assert_nothing_leaked(run.stdout, run.stderr)


def test_a_symlink_to_proc_is_refused_too(tmp_path):
    (tmp_path / "innocent.pipe").symlink_to("/proc/self/environ")
    pipe = tmp_path / "main.pipe"
    pipe.write_text('import "innocent.pipe"\n' + SIGNATURE)
    run = check(pipe)
    assert run.returncode == 1 and "cannot read import 'innocent.pipe': not a regular file" in run.stderr
    assert_nothing_leaked(run.stdout, run.stderr)


def test_importing_dev_zero_returns_at_once_with_bounded_memory(tmp_path):
    pipe = tmp_path / "zero.pipe"
    pipe.write_text('import "/dev/zero"\n' + SIGNATURE)
    started = time.monotonic()
    run = check(pipe, timeout=60, limit_memory=True)
    seconds = time.monotonic() - started
    assert run.returncode == 1, run.stderr[-2000:]
    assert "cannot read import '/dev/zero': not a regular file (/dev holds devices)" in run.stderr
    assert "MemoryError" not in run.stderr and "Traceback" not in run.stderr
    record_figure("special_files.dev_zero_import", seconds=round(seconds, 2), exit_status=run.returncode)


def test_importing_a_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.pipe")
    main = tmp_path / "main.pipe"
    main.write_text('import "pipe.pipe"\n' + SIGNATURE)
    run = check(main, timeout=30)            # before the fix: blocked forever waiting for a writer
    assert run.returncode == 1 and "cannot read import 'pipe.pipe': not a regular file (a FIFO)" in run.stderr


def test_importing_a_huge_file_is_refused(tmp_path):
    (tmp_path / "huge.pipe").write_bytes(b"# padding\n" * (MAX_SOURCE_BYTES // 10 + 1))
    main = tmp_path / "main.pipe"
    main.write_text('import "huge.pipe"\n' + SIGNATURE)
    loaded = load(main, catalogue())
    assert [d.message for d in loaded.errors] == [
        "cannot read import 'huge.pipe': larger than the 1 MiB limit (1,048,580 bytes)"]


def test_an_imported_env_file_does_not_show_its_key(tmp_path):
    # The key is not in pipec's environment here: the .env file is where it lives.
    (tmp_path / ".env").write_text("# local settings\nANTHROPIC_API_KEY=ant-local-5e4d3c2b1a09f8e7d6c5\n")
    # A bare key whose variable only the program names: masked by value from check time on.
    (tmp_path / "keys.txt").write_text(f"{ODD_KEY}\n")
    main = tmp_path / "main.pipe"
    main.write_text('import ".env"\nimport "keys.txt"\n' + SIGNATURE
                    + 'lm gw = "openai/m" (api_base: "http://127.0.0.1:9/v1", api_key_env: "ACME_GATEWAY_LOGIN")\n')
    run = check(main)
    assert run.returncode == 1
    assert ".env:2:1: error:" in run.stderr and "ANTHROPIC_API_KEY=***" in run.stderr
    assert "keys.txt:1:" in run.stderr
    assert not any(p in run.stderr for p in pieces("ant-local-5e4d3c2b1a09f8e7d6c5", 8))
    assert_nothing_leaked(run.stdout, run.stderr)


# ---------------------------------------------------------------------------- the main file
@pytest.mark.parametrize("command", ["check", "run", "graph", "inspect", "test"])
def test_a_5_mb_main_file_is_refused_with_a_clear_error(tmp_path, command):
    big = tmp_path / "big.pipe"
    big.write_bytes((SIGNATURE + "# filler filler filler filler filler filler filler\n" * 100_000)[:5_000_000].encode())
    run = pipec_cli(command, big, timeout=60)
    assert run.returncode == 2, (run.stdout[-500:], run.stderr[-2000:])
    assert "larger than the 1 MiB limit (5,000,000 bytes)" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("command", ["check", "run", "test"])
def test_proc_environ_as_the_main_file_is_refused(command):
    run = subprocess.run([*pipec_command(), command, "/proc/self/environ"], env={**os.environ, **ENV},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "not a regular file (/proc is a kernel pseudo-filesystem)" in run.stderr
    assert "Traceback" not in run.stderr
    assert_nothing_leaked(run.stdout, run.stderr)


def test_a_fifo_as_the_main_file_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "main.pipe")
    run = check(tmp_path / "main.pipe", timeout=10)
    assert run.returncode == 2 and "cannot read" in run.stderr and "not a regular file (a FIFO)" in run.stderr


def test_a_binary_main_file_is_refused(tmp_path):
    pipe = tmp_path / "bin.pipe"
    pipe.write_bytes(SIGNATURE.encode() + b"\x00\x01\x02" + ODD_KEY.encode())
    run = check(pipe)
    assert run.returncode == 2 and "a binary file, not text (NUL byte at offset 37)" in run.stderr
    assert_nothing_leaked(run.stdout, run.stderr)


# ---------------------------------------------------------------------------- what a diagnostic quotes
def test_a_diagnostic_quotes_a_window_of_a_long_line_with_the_caret_aligned(tmp_path):
    line = "signature S { in q: str out a: str }" + " " * 4000 + "module m = Predict(Sx)" + " " * 5000 + "# end"
    pipe = tmp_path / "long.pipe"
    pipe.write_text(line + "\n" + "# second line with a secret-looking marker " + MARKER + "\n")
    run = check(pipe)
    assert run.returncode == 1
    quoted = [x for x in run.stderr.splitlines() if x.startswith(" 1 | ")]
    caret = next(x for x in run.stderr.splitlines() if x.lstrip(" |").startswith("^"))
    assert len(quoted) == 1 and len(quoted[0]) < 120, quoted
    assert quoted[0].startswith(" 1 | …") and quoted[0].endswith("…")
    at = caret.index("^")
    assert quoted[0][at:at + 2] == "Sx" and caret[at:].rstrip() == "^~"
    assert MARKER not in run.stderr                    # never another line of the file


def test_control_characters_in_a_quoted_line_are_not_printed(tmp_path):
    pipe = tmp_path / "ctl.pipe"
    pipe.write_text('signature S { in q: str out a: str }\nmodule m = Predict(Sx) # \x1b[2J\u202e\x07 tail\n')
    run = check(pipe)
    assert run.returncode == 1 and " 2 | module m = Predict(Sx)" in run.stderr
    assert not any(c in run.stderr for c in "\x1b\u202e\x07")


# ---------------------------------------------------------------------------- the reader itself
def test_the_reader_refuses_every_kind_of_special_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dev").symlink_to("/dev/null")
    reasons = {}
    for path in (tmp_path / "fifo", tmp_path, tmp_path / "dev", "/dev/zero", "/proc/self/environ", "/sys/kernel/uevent_seqnum"):
        with pytest.raises(SourceError) as err:
            read_source(path)
        reasons[str(path).replace(str(tmp_path), "T")] = err.value.strerror
    assert reasons == {
        "T/fifo": "not a regular file (a FIFO)",
        "T": "not a regular file (a directory)",
        "T/dev": "not a regular file (/dev holds devices)",
        "/dev/zero": "not a regular file (/dev holds devices)",
        "/proc/self/environ": "not a regular file (/proc is a kernel pseudo-filesystem)",
        "/sys/kernel/uevent_seqnum": "not a regular file (/sys is a kernel pseudo-filesystem)",
    }


def test_the_reader_never_reads_past_its_limit(tmp_path, monkeypatch):
    """A file whose size says small but that keeps giving (as /proc files do) is cut at limit + 1 bytes."""
    path = tmp_path / "grows.pipe"
    path.write_bytes(b"x" * 100)
    real_fstat = os.fstat

    class Liar:
        def __init__(self, st):
            self.st_mode, self.st_dev, self.st_size = st.st_mode, st.st_dev, 0

    monkeypatch.setattr(os, "fstat", lambda fd: Liar(real_fstat(fd)))
    with pytest.raises(SourceError, match="larger than the 10 B limit"):
        read_regular(path, 10)
    with open_regular(path) as fh:
        assert fh.read(5) == b"xxxxx"


def test_a_source_error_is_an_oserror_with_the_reason_as_strerror(tmp_path):
    err = SourceError(27, "larger than the 1 MiB limit", "x.pipe")
    assert isinstance(err, OSError) and isinstance(err, ValueError)
    assert (str(err), err.strerror) == ("cannot read x.pipe: larger than the 1 MiB limit", "larger than the 1 MiB limit")
