"""Start-up stays light: heavy libraries load on first use, never at `import pipec` or `pipec --help`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ["litellm", "optuna", "llama_cpp", "diskcache", "openai", "httpx", "numpy", "starlette", "uvicorn",
         "opentelemetry"]


def loaded_after(code: str) -> set[str]:
    probe = f"""
import sys, json
{code}
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_pipec_loads_no_heavy_library():
    assert not loaded_after("import pipec") & set(HEAVY + ["pydantic", "lark"])


def test_cli_help_loads_no_heavy_library():
    mods = loaded_after("import sys; sys.argv = ['pipec', '--help']\nfrom pipec.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass")
    assert not mods & set(HEAVY + ["pydantic", "lark"])


def test_loading_a_local_pipeline_does_not_import_litellm_or_llama():
    mods = loaded_after("import pipec\npipec.load('examples/intent.pipe', cache=False)")
    assert not mods & {"litellm", "optuna", "llama_cpp", "openai", "httpx"}


def test_cli_help_loads_only_the_command_line():
    """`pipec --help` builds the parser and nothing else of pipec: no report page, no trust store."""
    probe = f"""
import sys, json
sys.argv = ['pipec', '--help']
from pipec.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith('pipec'))))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & {"pipec.html_report", "pipec.trust", "pipec.program", "pipec.dsl.parser"}, loaded
