"""Secrets: an API key in the environment never reaches anything pipec writes or prints.

An end-to-end session against the loopback server (batch run with traces, compile, eval with per-row
output, inspect, a single run as JSON with its trace) with the key in the environment, while the
server injects faults, including 401 errors whose message echoes the credential it was sent. Every
file written under the session's folder (outputs, artifact, LM cache, compile cache, stderr
captures) and all captured output and log records are scanned for the key, and for any 12-character
piece of it (a truncated echo would leak a prefix that whole-value redaction misses).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

import pipec
from pipec import cli

from fault_server import FaultPlan, FaultServer, field_value, pipec_cli, record_figure

pytestmark = pytest.mark.usefixtures("isolated_env")

KEY = "sk-e2e-7Hq2Vx9LmN4pR8sT1wYz3bC6dF0gJ5kQ"

PIPE = """
lm remote = "openai/secret-model" (api_base: "{base}", api_key_env: "{var}", num_retries: 1, timeout: 2)

signature Parity {{ "Even or odd?" in text: str out parity: enum(even, odd) }}
module m = Predict(Parity)

pipeline parity(text: str) -> (parity) {{
    r = m(text: text)
    return parity = r.parity
}}

compile parity {{
    trainset = "train.jsonl"
    valset = "val.jsonl"
    metric = exact_match(parity)
    optimizer = bootstrap_fewshot(max_demos: 2)
    seed = 1
}}
"""


def parity_of(text: str) -> str:
    return "even" if int(text.split()[-1]) % 2 == 0 else "odd"


def answer(body):
    return {"parity": parity_of(field_value(body, "text"))}


def pieces(secret: str, n: int = 12) -> list[str]:
    return [secret[i:i + n] for i in range(0, len(secret) - n + 1)]


def leaks(secret: str, texts: dict[str, str], roots: list[Path]) -> list[str]:
    """Where any 12-character piece of the secret appears: named texts, and every file under roots."""
    needles = pieces(secret)
    found = [name for name, text in texts.items() if any(p in text for p in needles)]
    for root in roots:
        root = Path(root)
        for f in [root] if root.is_file() else root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                if any(p.encode() in data for p in needles):
                    found.append(str(f))
    return found


def make_project(folder: Path, server: FaultServer, var: str) -> Path:
    pipe = folder / "parity.pipe"
    pipe.write_text(PIPE.format(base=server.base, var=var))
    for name, rng in (("train", range(1, 13)), ("val", range(50, 58))):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"item {i}", "parity": parity_of(f"item {i}")})
                                                      + "\n" for i in rng))
    (folder / "rows.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(40)))
    return pipe


def run_cli(capfd, *args) -> tuple[int, str]:
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        rc = exit_.code
    out, err = capfd.readouterr()
    return rc, out + err


def test_end_to_end_session_never_writes_or_prints_the_key(tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv("PIPEC_E2E_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    plan = FaultPlan(rate=0.25, kinds=("401_echo",) * 4 + ("500", "429", "wrong_format", "reset", "html"), seed=5,
                     retry_after="0")
    texts: dict[str, str] = {}
    cache = tmp_path / "cache"
    with FaultServer(answer, plan) as server, caplog.at_level(logging.DEBUG):
        pipe = make_project(tmp_path, server, "PIPEC_E2E_API_KEY")
        # The batch through the real command line, as a subprocess.
        run = pipec_cli("run", pipe, "--inputs", tmp_path / "rows.jsonl", "--output", tmp_path / "out.jsonl",
                        "--trace", "--cache-dir", cache, "--concurrency", 8, env={"PIPEC_E2E_API_KEY": KEY},
                        cwd=tmp_path)
        texts["run (subprocess)"] = run.stdout + run.stderr
        assert "Traceback" not in run.stderr
        # The rest in-process, output captured at the file descriptors.
        for args in (["compile", pipe, "--cache-dir", cache],
                     ["eval", tmp_path / "parity.compiled.json", "--data", tmp_path / "val.jsonl", "--output",
                      tmp_path / "eval.jsonl", "--cache-dir", cache],
                     ["run", pipe, "-i", "text=row 7", "--json", "--trace", "--no-cache"],
                     ["run", tmp_path / "parity.compiled.json", "-i", "text=row 8", "--json", "--trace", "--cache-dir", cache],
                     ["inspect", tmp_path / "parity.compiled.json", "--json"]):
            rc, text = run_cli(capfd, *args)           # (with DEBUG logging on, litellm logs its own tracebacks)
            texts[" ".join(map(str, args[:2]))] = text
            assert rc in (0, 1), text[-2000:]
        sent = [r.headers.get("authorization", "") for r in server.records()]
        echoed = sum(r.fault == "401_echo" for r in server.records())
    texts["log records"] = "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records)
    assert sent and all(h == f"Bearer {KEY}" for h in sent)            # the key did reach the server...
    assert echoed > 0                                                   # ...and the server echoed it back
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().split("\n") if x.strip()]
    assert len(out) == 40 and any(not r["ok"] and "***" in r["error"] for r in out)
    assert (tmp_path / "parity.compiled.json").exists() and (tmp_path / "eval.jsonl").exists()
    roots = [tmp_path, Path(os.environ["PIPEC_CACHE_DIR"])]          # and the default cache directory
    found = leaks(KEY, texts, roots)
    files = [f for root in roots for f in root.rglob("*") if f.is_file()]
    assert found == [], found
    record_figure("secrets.end_to_end", requests=len(sent), key_echoed_by_server=echoed, files_scanned=len(files),
                  bytes_scanned=sum(f.stat().st_size for f in files), outputs_scanned=len(texts), leaks=0)


def test_key_from_openai_api_key_without_api_key_env_is_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FaultServer(answer, FaultPlan(rate=1.0, kinds=("401_echo",))) as server:
        pipe = tmp_path / "p.pipe"
        pipe.write_text(PIPE.format(base=server.base, var="X").replace(', api_key_env: "X"', ""))
        pred = pipec.load(pipe, cache=tmp_path / "cache")(text="row 1")
        assert server.records()[0].headers.get("authorization") == f"Bearer {KEY}"
    assert not pred.ok and "***" in pred.error
    assert leaks(KEY, {"error": pred.error, "trace": repr([r.to_dict() for r in pred.trace])}, [tmp_path]) == []


def test_key_in_an_unusually_named_variable_is_redacted(tmp_path, monkeypatch):
    secret = "acme-live-7f3c9e2b1d5a8f60c4e2"
    monkeypatch.setenv("ACME_LLM_CREDENTIAL", secret)
    with FaultServer(answer, FaultPlan(rate=1.0, kinds=("401_echo",))) as server:
        pipe = make_project(tmp_path, server, "ACME_LLM_CREDENTIAL")
        from pipec.batch import run_jsonl
        run_jsonl(pipec.load(pipe, cache=tmp_path / "cache"), tmp_path / "rows.jsonl", tmp_path / "out.jsonl",
                  with_trace=True)
        assert server.records()[0].headers.get("authorization") == f"Bearer {secret}"
    out = tmp_path / "out.jsonl"
    assert out.stat().st_size > 0
    assert leaks(secret, {}, [out]) == []


def test_a_key_written_in_the_file_is_not_echoed_by_the_diagnostic(tmp_path):
    pipe = tmp_path / "k.pipe"
    pipe.write_text(f'lm x = "openai/m" (api_key: "{KEY}")\n'
                    'signature S { in q: str out a: str }\nmodule m = Predict(S, lm: x)\n'
                    'pipeline p(q: str) -> (a) {\n    r = m(q: q)\n    return a = r.a\n}\n')
    run = pipec_cli("check", pipe)
    assert run.returncode == 1 and "API keys do not belong in .pipe files" in run.stderr
    assert leaks(KEY, {"stderr": run.stderr, "stdout": run.stdout}, []) == []
