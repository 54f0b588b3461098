"""The `pipec` command line. Heavy modules load inside the commands, so `pipec --help` stays instant."""
from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

EPILOG = """\
exit status:
  0  success (check: no errors; run: every row answered; test: every case passed)
  1  the .pipe file has errors, a test failed, a run had failed or skipped rows, a metric returned
     something other than a score, or an LM refused its API key
  2  usage error: bad arguments (compile flags and --metric get the compile block's checks), missing
     files, unknown pipeline or input, a test filter that matches no test, or an artifact whose code
     and LM endpoints you have not approved (see --allow, --trust and `pipec trust`)

environment:
  PIPEC_CACHE_DIR   LM cache directory (default: $XDG_CACHE_HOME/pipec or ~/.cache/pipec)
  PIPEC_TRUST_DIR   where artifacts compiled here or approved with `pipec trust` are recorded
                    (default: $XDG_DATA_HOME/pipec/trusted or ~/.local/share/pipec/trusted)
  NO_COLOR          disable colored diagnostics

examples:
  pipec check examples/intent.pipe
  pipec run examples/intent.pipe --input utterance="Table for two at 8 tonight"
  pipec run examples/intent.pipe --inputs rows.jsonl --output out.jsonl --concurrency 4
  pipec graph examples/multihop.pipe --format mermaid
  pipec inspect examples/intent.pipe
  pipec test examples/intent.pipe
  pipec compile examples/intent.pipe --optimizer random_search --budget 2000 --seed 7
  pipec compile examples/intent.pipe --optimizer mipro --budget-usd 2.50 --lm openai/gpt-4o-mini
  pipec eval examples/intent.compiled.json --data examples/data/intent_test.jsonl
"""


class UsageError(Exception):
    """Bad arguments: printed as `pipec COMMAND: error: ...` (or, with `shown`, exactly as given: the
    checker's diagnostics for a flag), exit 2."""

    def __init__(self, message: str, shown: str | None = None):
        super().__init__(message)
        self.shown = shown


def _color(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pipec", description="Compile and run declarative prompt pipelines (.pipe files).",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp, pipeline=True):
        sp.add_argument("file", help="a .pipe file")
        if pipeline:
            sp.add_argument("--pipeline", "-p", help="which pipeline to use when the file declares several")

    def otel_opts(sp, what):
        sp.add_argument("--otel", action="store_true",
                        help=f"export OpenTelemetry spans of {what} (model, tokens, cost, latency, cache hits, "
                             "fallbacks; no inputs, outputs or messages): to the OTLP/HTTP endpoint in "
                             "$OTEL_EXPORTER_OTLP_ENDPOINT when it is set, else printed to stderr by the console "
                             "exporter. Needs the otel extra: pip install 'pipec[otel]'")
        sp.add_argument("--otel-content", action="store_true",
                        help="--otel with inputs, outputs, messages and replies in the spans (secrets still masked)")

    def lm_opts(sp, many=False):
        if many:
            sp.add_argument("--lm", action="append", help="run every module on this LM id instead (e.g. "
                            "openai/gpt-4o-mini, local/smollm2); repeat it to score each program on each LM")
        else:
            sp.add_argument("--lm", help="run every module on this LM id instead (e.g. openai/gpt-4o-mini, local/smollm2)")
        sp.add_argument("--no-cache", action="store_true", help="do not read or write the LM cache")
        sp.add_argument("--cache-dir", help="LM cache directory (default: $PIPEC_CACHE_DIR or ~/.cache/pipec)")

    c = sub.add_parser("check", help="parse and check .pipe files; print every diagnostic",
                       description="Parse and check .pipe files. Exit 0 when clean (warnings allowed), "
                                   "1 on errors, 2 on usage errors.")
    c.add_argument("files", nargs="+", metavar="file", help=".pipe files")
    c.add_argument("--werror", action="store_true", help="treat warnings as errors")
    c.add_argument("--format", choices=("text", "json"), default="text", help="diagnostic format")

    r = sub.add_parser("run", help="run a pipeline on one input or a JSONL batch",
                       description="Run a pipeline on one input (--input name=value ...) or on every row of a JSONL "
                                   "file (--inputs). Batch results are appended to --output as they finish; rerunning "
                                   "the same command resumes, skipping rows already answered.")
    common(r)
    r.add_argument("--input", "-i", action="append", default=[], metavar="NAME=VALUE",
                   help="an input value (repeatable); lists and records as JSON")
    r.add_argument("--inputs", metavar="ROWS.jsonl", help="JSONL file of input rows")
    r.add_argument("--output", "-o", metavar="OUT.jsonl", help="where batch results go (default: ROWS.out.jsonl)")
    r.add_argument("--concurrency", "-c", type=int, default=4, help="rows in flight at once (default 4)")
    r.add_argument("--retry-failed", action="store_true", help="when resuming, run failed rows again")
    r.add_argument("--trace", action="store_true",
                   help="show every LM call (messages, reply, timing): on stderr for one input, in the JSON with "
                        "--json, in each output row of a batch")
    r.add_argument("--json", action="store_true", help="print the single-input result as JSON")
    r.add_argument("--stream", action="store_true",
                   help="print one input's outputs as they arrive: redrawn in place on a terminal, else the growing "
                        "text, or with --json one JSON object per line per change")
    r.add_argument("--shard", metavar="K/N", help="run only shard K of N of the input rows (lines K, K+N, ...); "
                                                  "combine the parts with `pipec merge`")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress line (default: when stderr is a terminal)")
    otel_opts(r, "the run (pipeline, node, module, LM call; a batch: one pipeline span per row)")
    lm_opts(r)
    add_trust_options(r)

    g = sub.add_parser("graph", help="print the pipeline graph (mermaid, dot, text)")
    common(g)
    g.add_argument("--format", "-f", choices=("mermaid", "dot", "text"), default="text")

    i = sub.add_parser("inspect", help="show the exact messages each module will send")
    common(i)
    i.add_argument("--input", "-i", action="append", default=[], metavar="NAME=VALUE",
                   help="fill in an input instead of showing a {placeholder}")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--lm", help="show the prompts as they would go to this LM id")

    cp = sub.add_parser("compile", help="tune demos and instructions against a metric; write the artifact",
                        description="Compile a pipeline: search each module's demos and instructions against the "
                                    "metric, using the file's compile block; flags override its settings. "
                                    "Compiling unchanged inputs again is a cache hit (no LM call).",
                        formatter_class=RegistryHelpFormatter)
    common(cp)
    # The optimizers' names and options are read from their classes when this help is shown, never
    # when the parser is built: `pipec --help` loads no optimizer.
    cp.add_argument("--optimizer", help=FromRegistry(_optimizer_help))
    cp.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help=FromRegistry(_option_help))
    # Values are checked by the compile block's own checks (with the file's settings), not by argparse.
    cp.add_argument("--trials", help=FromRegistry(_trials_help))
    cp.add_argument("--budget", help="most LM calls the whole compile may make")
    cp.add_argument("--budget-usd", metavar="DOLLARS",
                    help="most dollars its LM calls may cost (prices from litellm, or the lm's input_price and "
                         "output_price; local models are free); with --budget, whichever is reached first")
    cp.add_argument("--seed", help="seed for every random choice (default 0)")
    cp.add_argument("--max-calls-per-row", metavar="N",
                    help="most LM calls one input may make, as `pipec inspect` bounds them: one_of alternatives "
                         "that would exceed it are not considered")
    cp.add_argument("--trainset", help="JSONL or CSV training rows")
    cp.add_argument("--valset", help="JSONL or CSV validation rows (default: a seeded split of the trainset)")
    cp.add_argument("--metric", help='e.g. "exact_match(intent)"')
    cp.add_argument("--teacher", help="LM (declared name or id) that runs the program while bootstrapping")
    cp.add_argument("--proposer", help="LM (declared name or id) that proposes instructions")
    cp.add_argument("--concurrency", "-c", help="parallel evaluations (default 4)")
    cp.add_argument("--storage", help="optuna storage URL (sqlite:///x.db, postgresql://...) to resume or share a search")
    cp.add_argument("--study", help="optuna study name (with --storage)")
    role = cp.add_mutually_exclusive_group()
    role.add_argument("--worker", action="store_true",
                      help="join the shared study (--storage, --study) and run its trials with this machine's LM; "
                           "start as many workers as you like, anywhere")
    role.add_argument("--finalize", action="store_true",
                      help="once the study's trials are done, score the best configuration and write the artifact")
    cp.add_argument("--output", "-o", help="artifact path (default: FILE with .compiled.json)")
    cp.add_argument("--report", metavar="REPORT.html", help="also write a self-contained HTML report of the compile")
    cp.add_argument("--emit", choices=("pipe",), action="append", default=[],
                    help="also write the compiled program as readable .pipe source beside the artifact "
                         "(X.compiled.pipe: instructions and demos written in, the chosen strategies)")
    cp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="show a progress line (default: when stderr is a terminal)")
    otel_opts(cp, "the compile (one span per trial, with the runs it scored: pipeline, node, module, LM "
                  "call; the baseline, the final eval, bootstrapping and proposals too)")
    lm_opts(cp)

    ev = sub.add_parser("eval", help="score pipelines or compiled artifacts on labeled data (several: one table)",
                        description="Run a .pipe file or a compiled artifact on labeled rows and report the score, "
                                    "failures per field and a table of misses. Several files and --lm flags score "
                                    "every program on every LM in one table; --baseline compares them row by row "
                                    "and exits 1 when one scores more than --max-drop below it.")
    ev.add_argument("files", nargs="+", metavar="FILE_OR_ARTIFACT", help=".pipe files or compiled artifacts")
    ev.add_argument("--pipeline", "-p", help="which pipeline to use when a file declares several")
    ev.add_argument("--baseline", metavar="FILE", help="one of the files: every other program is compared with it "
                                                       "row by row, on each LM")
    ev.add_argument("--max-drop", type=float, default=0.0, metavar="SCORE",
                    help="with --baseline: exit 1 when a program scores more than this below it (default 0)")
    ev.add_argument("--format", choices=("text", "markdown"), default="text",
                    help="the table as text, or Markdown for a pull-request comment")
    ev.add_argument("--data", required=True, help="JSONL or CSV rows with inputs and expected outputs")
    ev.add_argument("--metric", help="default: the compile block's (or the artifact's) metric")
    ev.add_argument("--concurrency", "-c", type=int, default=4)
    ev.add_argument("--show", type=int, default=20, help="misses to list (default 20; 0 for none)")
    ev.add_argument("--output", "-o", help="write every row's result as JSONL here")
    ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    ev.add_argument("--report", metavar="REPORT.html", help="also write a self-contained HTML report with every row")
    otel_opts(ev, "the eval (one span per row, each with its run; several files or LMs: one eval span per "
                  "program and LM)")
    lm_opts(ev, many=True)
    add_trust_options(ev)

    mg = sub.add_parser("merge", help="merge sharded batch outputs, checking every row appears once",
                        description="Merge the outputs of `pipec run --shard K/N` into one JSONL file in input "
                                    "order. Fails (exit 1, nothing written) if a row is missing, answered twice, "
                                    "or answered for different content than the input has now.")
    mg.add_argument("parts", nargs="+", help="shard output files")
    mg.add_argument("--inputs", required=True, help="the input JSONL file the shards ran over")
    mg.add_argument("--output", "-o", required=True, help="merged output file")

    rp = sub.add_parser(
        "report", help="write a self-contained HTML report of a compile and/or an eval run",
        description="Write one self-contained HTML file (no network: styles, script and data inline) showing the "
                    "pipeline graph, the score over the compile's trials, each module's prompt before and after "
                    "compiling, and an eval table filterable to failures. ARTIFACT_OR_RUN is a compiled artifact, a "
                    ".pipe file, or the JSONL that `pipec eval --output` writes.")
    rp.add_argument("file", metavar="ARTIFACT_OR_RUN",
                   help="a compiled artifact (.compiled.json), a .pipe file, or eval rows (.jsonl from pipec eval --output)")
    rp.add_argument("--output", "-o", metavar="REPORT.html", help="where to write (default: beside the input, .report.html)")
    rp.add_argument("--eval", dest="eval_rows", metavar="ROWS.jsonl", help="eval rows written by `pipec eval --output`")
    rp.add_argument("--data", help="labeled rows (JSONL or CSV): run the evaluation now and include it")
    rp.add_argument("--metric", help="metric for --data (default: the artifact's or the compile block's)")
    rp.add_argument("--concurrency", "-c", type=int, default=4, help="rows in flight with --data (default 4)")
    rp.add_argument("--pipeline", "-p", help="which pipeline, when a .pipe file declares several")
    rp.add_argument("--title", help="the page title (default: the pipeline's name)")
    rp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress line while evaluating (default: when stderr is a terminal)")
    rp.add_argument("--lm", help="with --data: run every module on this LM id instead")
    rp.add_argument("--no-cache", action="store_true", help="with --data: do not read or write the LM cache")
    rp.add_argument("--cache-dir", help="LM cache directory (default: $PIPEC_CACHE_DIR or ~/.cache/pipec)")
    add_trust_options(rp)                           # report --data runs the program

    tr = sub.add_parser("trust", help="approve a compiled artifact from elsewhere to run its code and LM endpoints",
                        description="Show the Python code and LM endpoints a compiled artifact would use, and "
                                    "approve that exact file for good: `pipec run` and `pipec eval` then run it without "
                                    "--allow or --trust. Editing the file undoes the approval. Artifacts compiled on "
                                    "this machine are approved when they are written.")
    tr.add_argument("files", nargs="+", metavar="ARTIFACT", help="compiled artifacts")
    tr.add_argument("--revoke", action="store_true", help="withdraw the approval instead")
    tr.add_argument("--show", action="store_true", help="only show what each file would run, and whether it is trusted")

    fm = sub.add_parser("fmt", help="write .pipe files in the canonical layout (--check for CI)",
                        description="Format .pipe files in place (only those whose layout changes). Exit 0; "
                                    "with --check, 1 when a file would change; 1 when a file does not parse.")
    fm.add_argument("files", nargs="*", metavar="file", help=".pipe files; '-' or none: stdin to stdout")
    fm.add_argument("--check", action="store_true", help="write nothing; exit 1 and print a diff if a file would change")
    fm.add_argument("--diff", action="store_true", help="write nothing; print what would change as a diff")

    ex = sub.add_parser("export", help="export a compiled program for use outside pipec (--prompts: its prompts)",
                        description="Export what a compiled artifact holds, for use outside pipec. The artifact is "
                                    "read and verified as `pipec run` reads it, but nothing of it runs (no tool, "
                                    "metric or LM call), so an artifact from elsewhere needs no approval.")
    ex.add_argument("file", metavar="ARTIFACT", help="a compiled artifact (or a .pipe file: its uncompiled prompts)")
    export_modes = [("--prompts", "every predictor's system and user message templates with {placeholders} for "
                                  "the inputs, its demos as pipec sends them (per-input demos: their pool), its "
                                  "reply schema"),
                    ("--pipe", "the compiled program as readable .pipe source: its instructions, demos and chosen "
                               "strategies written into the original declarations")]
    mode = ex.add_mutually_exclusive_group()
    for flag, text in export_modes:
        mode.add_argument(flag, action="store_true", help=text)
    ex.add_argument("--format", "-f", choices=("text", "json", "python"), default="text",
                    help="--prompts as text to read (default), json, or a standard-library Python module whose "
                         "render(name, **inputs) returns the exact messages pipec sends")
    ex.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout (never over an existing file)")
    ex.add_argument("--force", action="store_true", help="let --output replace an earlier export")
    ex.set_defaults(export_modes=export_modes, no_cache=True)

    sub.add_parser("lsp", help="run the language server on stdin and stdout (for editors)",
                   description="A language server for .pipe files (diagnostics as you type, hover, go to "
                               "definition, references, completion, rename, outline, formatting). Needs the lsp "
                               "extra: pip install 'pipec[lsp]'.")

    sv = sub.add_parser("serve", help="serve a pipeline over HTTP (POST /run, /batch; GET /schema, /health)",
                        description="Serve a .pipe file or compiled artifact over HTTP until SIGTERM or SIGINT, "
                                    "which let requests in flight finish. POST /run takes the inputs as a JSON "
                                    "object (?stream=1: server-sent events as nodes finish), POST /batch a list of "
                                    "them. Needs the serve extra: pip install 'pipec[serve]'.")
    common(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    sv.add_argument("--max-concurrent", type=int, default=16, metavar="N",
                    help="runs in flight at once (a batch counts once); beyond that 429 (default 16)")
    sv.add_argument("--batch-concurrency", type=int, default=4, metavar="N", help="rows of one batch in flight (default 4)")
    sv.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES",
                    help="largest request body; larger ones get 413 (default 1048576)")
    sv.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                    help="how long requests in flight may take to finish after SIGTERM (default 30)")
    sv.add_argument("--log-inputs", action="store_true", help="put each request's inputs (redacted) in its access log line")
    lm_opts(sv)
    add_trust_options(sv)

    t = sub.add_parser("test", help="run the file's test blocks")
    t.add_argument("file", help="a .pipe file")
    t.add_argument("-k", dest="name", help="only tests whose name contains this text (an error when none does)")
    lm_opts(t)
    return p


class FromRegistry(str):
    """Help text made when the help is shown, from a registry (see `RegistryHelpFormatter`)."""

    def __new__(cls, make):
        text = super().__new__(cls, "(from the registry)")
        text.make = make
        return text


class RegistryHelpFormatter(argparse.HelpFormatter):
    def _expand_help(self, action):
        if isinstance(action.help, FromRegistry):
            action.help = action.help.make().replace("%", "%%")
        return super()._expand_help(action)


def _optimizer_help() -> str:
    from pipec.optimizers import optimizers
    from .settings import CompileConfig
    return ", ".join(sorted(optimizers())) + f" (default {CompileConfig().optimizer})"


def _option_help() -> str:
    from pipec.optimizers import optimizers
    return "an optimizer option; " + "; ".join(f"{name}: {', '.join(sorted(cls.options))}"
                                             for name, cls in sorted(optimizers().items()))


def _trials_help() -> str:
    from pipec.optimizers import optimizers
    sets = [f"{cls.trials_option} ({name})" for name, cls in sorted(optimizers().items()) if cls.trials_option in cls.options]
    return "sets the optimizer's " + " or ".join(sets)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; everything it prints (tracebacks and log lines too) has secrets masked."""
    from .secrets import redacted_output
    with redacted_output():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from .version import __version__
        print(f"pipec {__version__}")
        return EXIT_OK
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return {"check": cmd_check, "run": cmd_run, "graph": cmd_graph, "inspect": cmd_inspect,
                "test": cmd_test, "compile": cmd_compile, "eval": cmd_eval, "merge": cmd_merge, "report": cmd_report,
                "trust": cmd_trust, "fmt": cmd_fmt, "export": cmd_export, "lsp": cmd_lsp,
                "serve": cmd_serve}[args.command](args)
    except UsageError as err:
        print(err.shown if err.shown is not None else f"pipec {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`pipec inspect | head`): not an error; silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as err:
        from .dsl.files import SourceError     # a main file refused: a FIFO, /proc, over 1 MiB, binary
        if not isinstance(err, (SourceError, FileNotFoundError)):
            raise
        print(f"pipec {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        from .trust import ApprovalRequired    # imported only when something failed: --help stays light
        if not isinstance(err, ApprovalRequired):
            raise
        print(f"pipec {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


# ---------------------------------------------------------------------- helpers
def _load(args, **kw):
    from .dsl.diagnostics import PipeError
    from .program import load
    path = args.file
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    cache = True
    if getattr(args, "no_cache", False):
        cache = False
    elif getattr(args, "cache_dir", None):
        cache = args.cache_dir
    from .artifact import ArtifactError
    try:
        prog = load(path, getattr(args, "pipeline", None), lm=getattr(args, "lm", None), cache=cache,
                    trust=getattr(args, "trust", False), allow=getattr(args, "allow", None) or (), **kw)
    except PipeError as err:
        print(err.render(_color(sys.stderr)), file=sys.stderr)
        raise SystemExit(EXIT_FAIL)
    except ArtifactError as err:
        print(f"pipec {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_FAIL)
    except ValueError as err:
        raise UsageError(str(err)) from None
    for w in prog.warnings:
        print(w.render(prog.loaded.sources.get(w.span.file), _color(sys.stderr)), file=sys.stderr)
    return prog


def _pairs(items: list[str], prog=None) -> dict[str, object]:
    """`--input NAME=VALUE` values by name: lists and records as JSON; text inputs of `prog` as the
    text given, even when it looks like JSON (`--input q='[draft] hi'`, `--input q='[1, 2]'`)."""
    text_inputs = {n for n, t, _ in prog.inputs if t.kind in ("str", "enum")} if prog is not None else set()
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--input expects NAME=VALUE, got '{item}'")
        text = value.strip()
        if text[:1] in "[{" and name not in text_inputs:
            try:
                out[name] = json.loads(text)
                continue
            except ValueError:
                pass
        out[name] = value
    return out


# ---------------------------------------------------------------------- commands
def cmd_fmt(args) -> int:
    from .fmt_command import run_fmt
    return run_fmt(args.files, check=args.check, diff=args.diff)


def cmd_check(args) -> int:
    from .registry import catalogue
    from .dsl.diagnostics import render_all
    from .dsl.loader import load
    from .program import is_artifact
    from .tools import describe_tools, tool_diagnostics
    from pathlib import Path
    all_diags, sources, missing = [], {}, False
    artifacts_ok = artifacts_bad = 0
    for path in args.files:
        if is_artifact(Path(path)):
            if _check_artifact(path, args.format):
                artifacts_ok += 1
            else:
                artifacts_bad += 1
            continue
        try:
            loaded = load(path, catalogue())
        except (OSError, UnicodeDecodeError) as err:
            print(f"pipec check: error: cannot read {path}: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
            missing = True
            continue
        diags = list(loaded.diagnostics) + tool_diagnostics(loaded.program, describe_tools(loaded.program, Path(path)))
        all_diags += diags
        sources.update(loaded.sources)
    errors = [d for d in all_diags if d.severity == "error" or args.werror]
    if args.format == "json":
        print(json.dumps([{"file": d.span.file, "line": d.span.line, "col": d.span.col, "end_line": d.span.end_line,
                           "end_col": d.span.end_col, "severity": d.severity, "code": d.code, "message": d.message,
                           "hint": d.hint} for d in all_diags], indent=2))
    elif all_diags:
        print(render_all(all_diags, sources, _color(sys.stderr)), file=sys.stderr)
    elif not missing and len(args.files) > artifacts_ok + artifacts_bad:
        print(f"{', '.join(f for f in args.files if not is_artifact(Path(f)))}: ok")
    if missing:
        return EXIT_USAGE
    return EXIT_FAIL if errors or artifacts_bad else EXIT_OK


def _check_artifact(path: str, fmt: str) -> bool:
    """`pipec check` of a compiled artifact: its format, fingerprints and embedded sources, and what
    running it would need approved. Imports and runs nothing of it."""
    from .artifact import ArtifactError
    from .program import load_compiled
    try:
        prog = load_compiled(path, cache=False)
    except ArtifactError as err:
        if fmt == "json":
            print(json.dumps([{"file": path, "line": 0, "col": 0, "severity": "error", "code": "bad-artifact",
                               "message": str(err)}], indent=2))
        else:
            print(f"pipec check: error: {err}", file=sys.stderr)
        return False
    if fmt != "json":
        needs = prog.trust.missing(prog.requirements())
        if prog.trust.trusted:
            state = "compiled on this machine or approved with `pipec trust`"
        elif needs:
            state = "not compiled on this machine; running it needs your approval of:\n" + \
                "\n".join(f"  {r.describe()}" for r in needs)
        else:
            state = "not compiled on this machine; it names no Python code or LM endpoint of its own"
        print(f"{path}: ok (artifact of pipeline {prog.name}, written by pipec {prog.artifact.pipec_version}; {state})")
    prog.close()
    return True


def cmd_run(args) -> int:
    if args.inputs and args.input:
        raise UsageError("give either --input values or an --inputs file, not both")
    if args.shard and not args.inputs:
        raise UsageError("--shard splits a batch: use it with --inputs")
    if args.stream and args.inputs:
        raise UsageError("--stream shows one input's outputs as they arrive: use it with --input values, not an "
                         "--inputs batch (whose rows are written to --output as they finish)")
    if args.shard:
        k, slash, n = args.shard.partition("/")
        if not (slash and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            raise UsageError(f"--shard expects K/N with 1 <= K <= N, like 3/8; got '{args.shard}'")
        args.shard = (int(k), int(n))
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    _otel_wanted(args)
    prog = _load(args)
    try:
        prog.approve_running()           # before anything is read or written
        if args.inputs:
            return _run_batch(prog, args)
        return _run_single(prog, args)
    finally:
        prog.close()


def _run_single(prog, args) -> int:
    values = _pairs(args.input, prog)
    try:
        if args.stream:
            from .stream_output import run_streamed
            mode = "json" if args.json else "tty" if sys.stdout.isatty() else "text"
            pred = run_streamed(prog, values, sys.stdout, mode, trace=args.trace)
        else:
            pred = prog(**values)
    except ValueError as err:
        names = ", ".join(f"{n}" for n, _, _ in prog.inputs)
        raise UsageError(f"{err} (inputs of {prog.name}: {names}; pass them as --input name=value)") from None
    _otel_export(args, pred, pipeline=prog.name, inputs=values)
    if args.stream:             # the outputs are printed already
        if args.trace and not args.json:
            print(render_trace(pred.trace), file=sys.stderr)
    elif args.json:
        print(json.dumps(pred.to_dict(trace=args.trace), ensure_ascii=False, indent=2, default=str))
    else:
        if args.trace:          # stderr: stdout keeps the `name: value` lines a script reads
            print(render_trace(pred.trace), file=sys.stderr)
        if pred.ok:
            for name, value in pred.outputs().items():
                print(f"{name}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}")
    if not pred.ok:
        print(f"pipec run: failed: {pred.error}", file=sys.stderr)
        if pred.raw:
            print(f"last reply: {pred.raw[:500]}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _run_batch(prog, args) -> int:
    from pathlib import Path
    from .batch import BatchRefused, run_jsonl
    src = Path(args.inputs)
    if not src.is_file():
        raise UsageError(f"no such file: {src}")
    default = src.with_suffix(f".{args.shard[0]}-of-{args.shard[1]}.out.jsonl" if args.shard else ".out.jsonl")
    out = Path(args.output) if args.output else default
    if out.resolve() == src.resolve():
        raise UsageError("--output must differ from --inputs")
    on_row, provider = None, None
    if _otel_wanted(args):               # one root span per row, exported as the row is written
        from .otel import export, provider_from_env
        provider = provider_from_env()

        def on_row(line, inputs, pred):
            export(pred, provider, content=bool(args.otel_content), pipeline=prog.name, inputs=inputs)
    try:
        summary = run_jsonl(prog, src, out, args.concurrency, progress=args.progress, retry_failed=args.retry_failed,
                            with_trace=args.trace, on_skip=lambda msg: print(f"skipped: {msg}", file=sys.stderr),
                            shard=args.shard, on_row=on_row)
    except BatchRefused as err:          # an output that is not this run's, a busy output, no rows
        print(f"pipec run: error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rows are in {out}; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if provider is not None:
            provider.shutdown()          # flushes the spans of the rows that ran
    resumed = f", {summary.resumed} already done" if summary.resumed else ""
    if args.progress is not False:          # --no-progress: no progress line, not even the closing one
        print(summary.line, file=sys.stderr)
    print(f"wrote {summary.ran} rows to {out}{resumed}; {summary.failed} failed, {len(summary.skipped)} skipped",
          file=sys.stderr)
    _explain_refused_keys(prog, "run", "then run the same command with --retry-failed")
    return EXIT_FAIL if summary.failed or summary.skipped else EXIT_OK


def _otel_wanted(args) -> bool:
    """Whether --otel (or --otel-content, which implies it) was given; a usage error, before anything
    runs, when the OpenTelemetry SDK is not installed."""
    if not (getattr(args, "otel", False) or getattr(args, "otel_content", False)):
        return False
    import importlib.util
    try:
        found = importlib.util.find_spec("opentelemetry.sdk") is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise UsageError("--otel needs the OpenTelemetry SDK: pip install 'pipec[otel]'")
    return True


def _otel_export(args, obj, **kw) -> None:
    """Export `obj`'s spans when --otel asks (`pipec.otel`), flushed before the command goes on."""
    if not _otel_wanted(args):
        return
    from .otel import export, provider_from_env
    provider = provider_from_env()
    try:
        export(obj, provider, content=bool(args.otel_content), **kw)
    finally:
        provider.shutdown()


def _explain_refused_keys(prog, command: str, then: str) -> bool:
    """Say once, after a run, that an LM refused its key: after the first refusal every row on it
    failed at once, without a request (see `AuthLMError`). True when one did."""
    from .context import auth_failures
    refused = auth_failures(prog._backends.values())
    for err in refused:
        print(f"pipec {command}: error: {err}; {then}", file=sys.stderr)
    return bool(refused)


def render_trace(trace) -> str:
    """Every LM call of one run, as a person reads it: which node and LM, time, tokens, cache, the
    messages sent and the raw reply (or the error).

    >>> from pipec.context import CallRecord
    >>> print(render_trace([CallRecord("r", "m", "m", "scripted/lm", [{"role": "user", "content": "q: hi"}],
    ...                                raw='{"n": 2}', latency_ms=1.5, prompt_tokens=3, completion_tokens=2)]))
    trace: 1 LM call
    [1] node r (m), predictor m, scripted/lm: 1.5 ms, 3+2 tokens
    --- user
    q: hi
    --- reply
    {"n": 2}
    """
    calls = [r for r in trace if r.model[:5] != "tool:" and r.model != "map"]
    hits = sum(r.cache_hit for r in calls)
    head = f"trace: {len(calls)} LM call{'s' * (len(calls) != 1)}" + (f" ({hits} from the cache)" if hits else "")
    out = [head]
    for i, r in enumerate(trace, 1):
        facts = [f"{r.latency_ms:.1f} ms"]
        if r.prompt_tokens or r.completion_tokens:
            facts.append(f"{r.prompt_tokens}+{r.completion_tokens} tokens")
        if r.cost:
            facts.append(f"${r.cost:.6f}")
        if r.cache_hit:
            facts.append("cache hit")
        if r.attempt > 1:
            facts.append(f"attempt {r.attempt}")
        who = f"node {r.node} ({r.module})" + (f", predictor {r.predictor}" if r.predictor else "")
        lm = f"lm {r.lm} ({r.model})" if r.lm else r.model      # through a fallback: the lm that answered
        out.append(f"[{i}] {who}, {lm}: " + ", ".join(facts))
        for m in r.messages or []:
            out.append(f"--- {m.get('role', '?')}")
            out.append(str(m.get("content", "")))
        for failed in r.fell_back:
            name, _, error = failed.partition(": ")
            out += [f"--- lm {name} failed", error]
        if r.error:
            out.append("--- error")
            out.append(r.error)
        if r.raw or not r.error:
            out.append("--- reply")
            out.append(r.raw)
    return "\n".join(out)


def cmd_graph(args) -> int:
    from .render import render
    prog = _load(args)
    labels = {}
    for n in prog.graph.walk():
        if n.op == "map":
            labels[n.id] = f"map {n.var}{' ordered' if n.ordered else ''}, at most {n.bound} items"
        elif n.op == "module":
            labels[n.id] = f"{prog.modules[n.target].describe()} {n.target} · {prog.lm_of(n.target)}"
        else:
            labels[n.id] = f"tool {n.target}"
    print(render(prog.graph, args.format, labels))
    return EXIT_OK


def cmd_inspect(args) -> int:
    from .dsl.diagnostics import did_you_mean
    from .inspection import inspect_program, render_inspection
    prog = _load(args)
    values = _pairs(args.input, prog) if args.input else None
    known = [n for n, _, _ in prog.inputs]
    for name in values or {}:
        if name not in known:          # as `run` says it: a typo would otherwise show a {placeholder}
            hint = did_you_mean(name, [n for n in known if n not in values])
            raise UsageError(f"'{name}' is not an input of {prog.name}" + (f" ({hint})" if hint else "")
                             + f"; its inputs: {', '.join(known) or 'none'}")
    report = inspect_program(prog, values)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render_inspection(report))
    return EXIT_OK


def cmd_test(args) -> int:
    from pathlib import Path
    from .testrun import run_tests
    from .program import load
    from .dsl.diagnostics import PipeError
    if not os.path.isfile(args.file):
        raise UsageError(f"no such file: {args.file}")
    cache = False if args.no_cache else (args.cache_dir or True)
    programs = {}

    def program_for(name):
        if name not in programs:
            programs[name] = load(args.file, name, lm=args.lm, cache=cache)
        return programs[name]

    try:
        from .registry import catalogue
        from .dsl.loader import load as load_source
        loaded = load_source(Path(args.file), catalogue())
        if loaded.errors:
            raise PipeError(loaded.errors, loaded.sources)
        tests = loaded.program.tests
        if not tests:
            print(f"{args.file}: no test blocks", file=sys.stderr)
            return EXIT_OK
        if args.name is not None and not any(args.name in t.name for t in tests):
            # A filter that selects nothing would pass vacuously: a typo in CI would test nothing.
            names = ", ".join(json.dumps(t.name, ensure_ascii=False) for t in tests)
            raise UsageError(f"-k {json.dumps(args.name, ensure_ascii=False)} matches no test in {args.file}; "
                             f"its tests: {names}")
        results = run_tests(program_for, tests, args.name)
    except PipeError as err:
        print(err.render(_color(sys.stderr)), file=sys.stderr)
        return EXIT_FAIL
    passed = sum(r.passed for r in results)
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        print(f"{mark} {r.test} ({r.span})" + (f": {r.detail}" if r.detail else ""))
    print(f"{passed} passed, {len(results) - passed} failed")
    return EXIT_OK if passed == len(results) else EXIT_FAIL


def cmd_report(args) -> int:
    """`pipec report`: the HTML page of an artifact or .pipe file (with eval rows given by --eval, or
    made now by --data), or of an eval run's rows alone."""
    from pathlib import Path
    from .html_report import ReportError, default_output, read_eval_rows, write_report
    src = Path(args.file)
    if not src.is_file():
        raise UsageError(f"no such file: {src}")
    if args.eval_rows and args.data:
        raise UsageError("give either --eval (rows already scored) or --data (evaluate now), not both")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    out = Path(args.output) if args.output else default_output(src)
    if out.resolve() in {src.resolve(), *(Path(x).resolve() for x in (args.eval_rows, args.data) if x)}:
        raise UsageError("--output must not overwrite an input")
    guard_output(out, "report")          # nor a file that is not an earlier report
    kw: dict = {"title": args.title, "source": str(src)}
    is_run = src.suffix.lower() in (".jsonl", ".ndjson")           # an eval run's rows, not a program
    if is_run:
        if args.eval_rows or args.data:
            raise UsageError(f"{src} is an eval run already; --eval and --data go with an artifact or a .pipe file")
        if args.lm or args.metric:
            raise UsageError("--lm and --metric go with --data")
    elif args.eval_rows and not os.path.isfile(args.eval_rows):
        raise UsageError(f"no such file: {args.eval_rows}")
    elif args.data and not os.path.isfile(args.data):
        raise UsageError(f"no such file: {args.data}")
    program = None
    try:
        if is_run:
            kw.update(rows=read_eval_rows(src), data=str(src), source=None)
        else:
            program = _load(args)
            if args.eval_rows:
                kw.update(rows=read_eval_rows(args.eval_rows), data=str(args.eval_rows))
            elif args.data:
                kw.update(_report_eval(program, args))
        write_report(out, program, **kw)
    except ReportError as err:
        print(f"pipec report: error: {err}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as err:
        print(f"pipec report: error: cannot write {out}: {err.strerror or err}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        if program is not None:
            program.close()
    rows = kw.get("rows")
    print(f"wrote {out}" + (f", {len(getattr(rows, 'rows', rows)):,} eval rows" if rows is not None else ""))
    return EXIT_OK


def _report_eval(prog, args) -> dict:
    """`report --data`: evaluate now; the report's keyword arguments (a bad dataset or metric is a
    ReportError: exit 1, no page)."""
    import time
    from .dataset import DatasetError, load_examples
    from .evaluate import evaluate
    from .html_report import ReportError
    from .metrics import MetricError
    from .progress import Progress
    prog.approve_running()               # evaluating runs the program: an untrusted artifact needs approval
    try:
        metric = eval_metric(prog, args.metric)
        examples = load_examples(args.data, prog, metric.fields)
    except (DatasetError, MetricError) as err:
        raise ReportError(str(err)) from None
    bar = Progress(len(examples), prog.stats, enabled=args.progress)
    started = time.perf_counter()
    try:
        result = evaluate(prog, examples, metric, args.concurrency, progress=bar)
    except MetricError as err:           # the metric returned something other than a score: no report of it
        bar.finish()
        raise ReportError(str(err)) from None
    seconds = time.perf_counter() - started
    bar.finish()
    return {"rows": result, "data": str(args.data), "eval_stats": prog.stats, "eval_seconds": seconds}


def cmd_merge(args) -> int:
    from pathlib import Path
    from .batch import BatchRefused, merge_outputs
    for f in [args.inputs, *args.parts]:
        if not os.path.isfile(f):
            raise UsageError(f"no such file: {f}")
    try:
        result = merge_outputs(Path(args.inputs), [Path(p) for p in args.parts], Path(args.output))
    except BatchRefused as err:          # the output is an input or not batch output; parts of different runs
        print(f"pipec merge: error: {err}", file=sys.stderr)
        return err.status
    def show(lines):
        return ", ".join(map(str, lines[:20])) + (" ..." if len(lines) > 20 else "")
    if result.missing:
        print(f"pipec merge: {len(result.missing)} rows missing (input lines {show(result.missing)})", file=sys.stderr)
    if result.duplicated:
        print(f"pipec merge: {len(result.duplicated)} rows answered more than once (lines {show(result.duplicated)})",
              file=sys.stderr)
    if result.stale:
        print(f"pipec merge: {len(result.stale)} rows answered for different input content (lines {show(result.stale)})",
              file=sys.stderr)
    if not result.ok:
        print("pipec merge: nothing written; rerun the shards that own these lines", file=sys.stderr)
        return EXIT_FAIL
    print(f"merged {result.rows} rows from {len(args.parts)} parts into {args.output} ({result.failed} failed rows)")
    return EXIT_OK


def _literal(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def compile_flags(args):
    """The compile settings given as command-line flags (None: not given), and where each was
    written, so that the compile block's checks (`settings.check_settings`, run before any data is
    read) point at the flag. The file's compile block fills in the rest (`CompileConfig.for_program`)."""
    from .settings import Origin
    origin = Origin("command line")
    given: dict = {"options": {}}
    for flag in ("optimizer", "budget", "budget_usd", "seed", "trainset", "valset", "teacher", "proposer",
                 "concurrency", "storage", "study", "max_calls_per_row"):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag in ("trainset", "valset"):
            value = os.path.abspath(value)     # flags are relative to where the command runs
        elif flag in ("optimizer", "budget", "budget_usd", "seed", "teacher", "proposer", "concurrency",
                      "max_calls_per_row"):
            origin.add(flag, f"--{flag.replace('_', '-')} ", str(value))
            if flag in ("budget", "budget_usd", "seed", "concurrency", "max_calls_per_row"):
                value = _literal(value)
        given[flag] = value
    for mode in ("worker", "finalize"):
        if getattr(args, mode, False):
            origin.add("mode", "", f"--{mode}")
            given["mode"] = mode
    if getattr(args, "metric", None):
        given["metric"] = args.metric
        origin.add("metric", "--metric ", args.metric)
    for item in getattr(args, "option", []):
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise UsageError(f"--option expects NAME=VALUE, got '{item}'")
        name = name.strip()
        given["options"][name] = _literal(value)
        origin.add(f"option:{name}", "--option ", item)
    return given, origin


def trials_flag(config, args) -> None:
    """`--trials N` sets the option its optimizer declares for it (`Optimizer.trials_option`)."""
    if getattr(args, "trials", None) is None:
        return
    from pipec.optimizers import get_optimizer
    try:
        key = get_optimizer(config.optimizer).trials_option
    except ValueError:                  # an unknown optimizer: the compile block's checks say so
        key = "trials"
    config.options[key] = _literal(args.trials)
    config.origin.add(f"option:{key}", "", f"--trials {args.trials}")


def cmd_compile(args) -> int:
    from pathlib import Path
    from .dataset import DatasetError
    from .lm.base import LMError
    from .metrics import MetricError
    from .optimize import KEPT_BASELINE, compile_program
    from .settings import CompileConfig, SettingsError
    for flag in ("trainset", "valset"):
        path = getattr(args, flag)
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"--{flag}: no such file: {path}")
    _otel_wanted(args)
    prog = _load(args)
    given, origin = compile_flags(args)
    try:
        config = CompileConfig.for_program(prog, origin=origin, **given)
    except MetricError as err:
        print(f"pipec compile: error: {err}", file=sys.stderr)
        return EXIT_FAIL
    config.progress = args.progress     # None: a progress line when stderr is a terminal
    if _otel_wanted(args):              # the trial spans carry the runs: kept as they happen
        config.keep_runs = "content" if args.otel_content else True
    trials_flag(config, args)
    if config.trainset is None:
        raise UsageError(f"no trainset: add a compile block for {prog.name} or pass --trainset")
    if not config.metric:
        raise UsageError(f"no metric: add a compile block for {prog.name} or pass --metric, e.g. "
                         f"--metric 'exact_match({prog.output_names[0]})'")
    base = prog.path.resolve().parent
    if not args.worker:                 # before any LM call: the artifact and report paths must be writable as such
        reads = [base / str(p) for p in (config.trainset, config.valset) if isinstance(p, str)]
        guard_output(args.output or prog.path.with_suffix(".compiled.json"), "artifact", prog, reads)
        if args.report:
            guard_output(args.report, "report", prog, reads)
        if "pipe" in args.emit:
            guard_output(_emitted_pipe(args, prog), "compiled .pipe", prog, reads)
    try:
        compiled = compile_program(prog, config)
    except SettingsError as err:
        print(err.render(_color(sys.stderr)), file=sys.stderr)
        return EXIT_USAGE
    except (DatasetError, MetricError, ValueError, LMError) as err:
        print(f"pipec compile: error: {err}", file=sys.stderr)
        return EXIT_FAIL
    done = compiled.compile_result
    _otel_export(args, compiled)
    if args.worker:
        st = done.stats
        print(f"worker done: ran {done.worker_trials} trials of study '{config.study}' "
              f"({st.calls} LM calls, {st.cache_hits} cache hits, {done.seconds:.1f}s); "
              f"when every worker is done: pipec compile {args.file} --storage ... --study {config.study} --finalize")
        prog.close()
        return EXIT_OK
    out = Path(args.output) if args.output else prog.path.with_suffix(".compiled.json")
    compiled.save(out)
    how = "cache hit: nothing changed since the last compile, no LM call" if done.cache_hit else \
        f"{done.stats.calls} LM calls made ({done.stats.cache_hits} cache hits)"
    if config.budget_usd is not None and not done.cache_hit:
        from .budget import money
        how += f", {money(done.spent, config.budget_usd)} spent of {money(config.budget_usd)}"
    report = compiled.report
    print(report.summary())
    for t in report.trials:
        print(f"    trial {t.number:>3}  {t.score:.3f}{'' if t.full else ' (minibatch)'}  {t.note}")
    kept = next((t.note for t in reversed(report.trials) if t.note.startswith(KEPT_BASELINE)), None)
    if kept:
        print(f"  {kept}")
    for role in ("task", "teacher", "proposer", "requests"):
        if role in report.lms:
            print(f"  {'LM requests' if role == 'requests' else role + ' LM'}: {report.lms[role]}")
    print(f"  {how}, {done.seconds:.1f}s\nwrote {out}")
    if "pipe" in args.emit:
        from .artifact import read_artifact
        from .emit_pipe import write_pipe
        print(f"wrote {write_pipe(compiled, _emitted_pipe(args, prog), read_artifact(out).fingerprint)}")
    if args.report:
        from .html_report import write_report
        write_report(args.report, compiled, source=str(out), compile_seconds=done.seconds, compile_stats=done.stats,
                     compile_spent=None if done.cache_hit else done.spent)
        print(f"wrote {args.report}")
    prog.close()
    return EXIT_OK


def cmd_eval(args) -> int:
    lms = args.lm or [None]
    _otel_wanted(args)
    if len(args.files) > 1 or len(lms) > 1 or args.baseline or args.format != "text":
        return cmd_eval_matrix(args, lms)
    args.file, args.lm = args.files[0], lms[0]
    from .dataset import DatasetError, load_examples
    from .evaluate import evaluate
    from .metrics import MetricError
    from .progress import Progress
    from .secrets import redact
    if not os.path.isfile(args.data):
        raise UsageError(f"no such file: {args.data}")
    prog = _load(args)
    prog.approve_running()
    if args.output:
        guard_output(args.output, "eval rows", prog, [args.data])
    if args.report:
        guard_output(args.report, "report", prog, [args.data, args.output])
    try:
        metric = eval_metric(prog, args.metric)
        examples = load_examples(args.data, prog, metric.fields)
    except (DatasetError, MetricError) as err:
        print(f"pipec eval: error: {err}", file=sys.stderr)
        return EXIT_FAIL
    bar = Progress(len(examples), prog.stats, enabled=args.progress)
    import time
    started = time.perf_counter()
    try:
        result = evaluate(prog, examples, metric, args.concurrency, progress=bar)
    except MetricError as err:          # the metric is broken (a wrong return type): no score means anything
        bar.finish()
        print(f"pipec eval: error: {err}; the eval stopped there", file=sys.stderr)
        prog.close()
        return EXIT_FAIL
    seconds = time.perf_counter() - started
    line = bar.finish()
    _otel_export(args, result, pipeline=prog.name)
    if args.report:
        from .html_report import write_report
        write_report(args.report, prog, rows=result, data=args.data, source=args.file, eval_stats=prog.stats,
                     eval_seconds=seconds)
    if args.output:
        from .jsonl import dump_line
        tmp = f"{args.output}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:          # in full or not at all
            for r in result.rows:
                fh.write(dump_line(r.to_dict()))
        os.replace(tmp, args.output)
    passed = sum(r.passed for r in result.rows)
    print(f"{prog.name} on {args.data}: {metric.text} = {result.score:.3f} ({passed}/{len(result.rows)} passed, "
          f"{result.failures} failed to produce outputs)")
    for f, n in sorted(result.field_misses().items()):
        print(f"  {f}: {n} wrong")
    misses = [r for r in result.rows if not r.passed]
    if misses and args.show:
        print(f"\nmisses (first {min(args.show, len(misses))} of {len(misses)}):")
        for r in misses[: args.show]:
            inputs = ", ".join(f"{k}={_short(v)}" for k, v in r.inputs.items())
            got = f"error: {r.error}" if r.error else ", ".join(f"{k}={_short(r.outputs.get(k))}" for k in r.expected)
            want = ", ".join(f"{k}={_short(v)}" for k, v in r.expected.items())
            print(f"  {r.where}: {inputs}\n      expected {want}\n      got      {got}")
            if r.feedback:
                # One line, masked before it is cut (a key cut in half would escape the stream's
                # masking); the full text is in --output and --report.
                print(f"      feedback {_short(redact(' '.join(r.feedback.split())), 160)}")
    if args.progress is not False:          # --no-progress: no progress line, not even the closing one
        print(line, file=sys.stderr)
    refused = _explain_refused_keys(prog, "eval", "then run the eval again")
    prog.close()
    return EXIT_FAIL if refused else EXIT_OK


def cmd_eval_matrix(args, lms: list[str | None]) -> int:
    """`pipec eval A B --lm x --lm y --data rows [--baseline A]`: see `pipec.eval_matrix`."""
    import time
    from .dataset import DatasetError, load_examples
    from .eval_matrix import Cell, compare_all, regressions, render
    from .evaluate import evaluate
    from .metrics import MetricError
    from .progress import Progress
    if not os.path.isfile(args.data):
        raise UsageError(f"no such file: {args.data}")
    if args.report:
        raise UsageError("--report writes one program on one LM; give one file and at most one --lm")
    if args.baseline and args.baseline not in args.files:
        raise UsageError(f"--baseline {args.baseline} is not one of the files: {', '.join(args.files)}")
    if len(set(args.files)) < len(args.files) or len(set(lms)) < len(lms):
        raise UsageError("a file or an --lm is given twice")
    programs = []
    for file in args.files:
        for lm in lms:
            prog = _load(argparse.Namespace(**{**vars(args), "file": file, "lm": lm}))
            prog.approve_running()
            programs.append((file, lm, prog))
    if args.output:
        guard_output(args.output, "eval rows", programs[0][2], [args.data])
    cells, rows_out = [], []
    try:
        metric = eval_metric(programs[0][2], args.metric)
        for file, lm, prog in programs:
            examples = load_examples(args.data, prog, metric.fields)
            bar = Progress(len(examples), prog.stats, enabled=args.progress)
            started = time.perf_counter()
            result = evaluate(prog, examples, metric, args.concurrency, progress=bar)
            bar.finish()
            st = prog.stats
            cells.append(Cell(file, lm or "as declared", result, time.perf_counter() - started, st.calls,
                              st.cache_hits, st.prompt_tokens + st.completion_tokens, st.cost, prog.name))
            rows_out += [{"program": file, "lm": lm or "as declared", **r.to_dict()} for r in result.rows]
    except (DatasetError, MetricError) as err:
        print(f"pipec eval: error: {err}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        for _, _, prog in programs:
            prog.close()
    if cells:
        _otel_export(args, cells)
    if args.output:
        from .jsonl import dump_line
        tmp = f"{args.output}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:          # in full or not at all
            for row in rows_out:
                fh.write(dump_line(row))
        os.replace(tmp, args.output)
    against = compare_all(cells, args.baseline)
    print(render(cells, against, data=args.data, metric=metric.text, fmt=args.format, show=args.show), end="")
    failed = regressions(cells, against, args.max_drop)
    for line in failed:
        print(f"pipec eval: regression: {line}", file=sys.stderr)
    return EXIT_FAIL if failed else EXIT_OK


def eval_metric(prog, text: str | None):
    """The metric an eval scores with: the one given, else the artifact's, else the compile block's.
    A python(...) metric taken from an artifact runs only with the user's approval, like its tools."""
    from .settings import CompileConfig, Origin, SettingsError, check_settings
    from .metrics import Metric
    from .trust import Requirement
    base = prog.path.resolve().parent
    if text:
        # The compile block's checks, as for `compile --metric`: a typo is a usage error with a hint.
        origin = Origin("command line")
        origin.add("metric", "--metric ", text)
        try:
            return check_settings(prog, CompileConfig(trainset=(), metric=text, origin=origin), base)
        except SettingsError as err:
            raise UsageError(str(err), shown=err.render(_color(sys.stderr))) from None
    if prog.artifact is not None:
        metric = Metric.parse(prog.artifact.report.metric, near=base)
        if metric.target is not None:
            prog.approve_running([Requirement("metric", metric.text, metric.target)])
        return metric
    metric = CompileConfig.for_program(prog).metric
    if not metric:
        raise UsageError(f"no metric: pass --metric or add a compile block for {prog.name}")
    return metric


def _emitted_pipe(args, prog):
    """Where `--emit pipe` writes: beside the artifact, X.compiled.json -> X.compiled.pipe."""
    from pathlib import Path
    out = Path(args.output) if args.output else prog.path.with_suffix(".compiled.json")
    return out.with_name((out.name[:-5] if out.name.endswith(".json") else out.name) + ".pipe")


def guard_output(path: str | os.PathLike, kind: str, prog=None, reads=()) -> None:
    """Refuse (a usage error, nothing touched) to write a `kind` file ("artifact", "eval rows" or
    "report") over one of the program's sources, a file the command reads, or a file that holds
    something other than an earlier output of the same kind; overwriting an earlier output is fine."""
    from pathlib import Path
    from .batch import OutputRefused, check_output_path
    out = Path(path)
    try:
        check_output_path(out, program=prog, others=[Path(r) for r in reads if r])
    except OutputRefused as err:
        raise UsageError(str(err).replace("--output", f"the {kind} path")) from None
    if not os.path.lexists(out):
        return
    if not out.is_file():
        raise UsageError(f"{out} is not a regular file; the {kind} was not written there")
    if not _holds(out, kind):
        raise UsageError(f"{out} holds something other than a pipec {kind}; it was not changed. "
                         f"Choose another path (or remove the file).")


def _holds(path, kind: str) -> bool:
    """Whether `path` holds an earlier pipec output of this kind (read from its first bytes only)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if not head.strip():
        return True                                        # an empty file holds nothing to lose
    text = head.decode("utf-8", "replace")
    if kind == "artifact":
        return '"format": "pipec-compiled"' in text
    if kind == "report":
        return text.startswith("<!DOCTYPE html>") and "pipec report</title>" in text
    if kind == "compiled .pipe":
        return text.startswith("# Compiled by pipec ")
    if kind == "prompt export":
        from .prompt_export import is_export
        return is_export(text)
    first = text.lstrip().split("\n", 1)[0]
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and {"where", "passed", "score"} <= set(row)


def add_trust_options(sp) -> None:
    """--allow and --trust, for the commands that run a program (run, eval, report --data)."""
    sp.add_argument("--allow", action="append", default=[], metavar="NAME",
                    help="approve one thing an artifact from elsewhere may use: a Python target (pkg.mod:fn), a module "
                         "or package (pkg.mod), an LM endpoint (URL), or code it carries (code:M.tool, run in the "
                         "sandbox); repeatable")
    sp.add_argument("--trust", action="store_true",
                    help="approve everything the artifact uses, for this run (see also `pipec trust`)")


def cmd_export(args) -> int:
    """`pipec export ARTIFACT --prompts` or `--pipe`: the artifact is read and verified as `pipec run`
    reads it, but nothing of it runs, so it needs no approval. Output to stdout, or to a new file (-o;
    --force replaces an earlier export, never another file)."""
    chosen = [flag for flag, _ in args.export_modes if getattr(args, flag[2:].replace("-", "_"), False)]
    if not chosen:
        raise UsageError("say what to export: " + "; or ".join(f"{flag} ({text})" for flag, text in args.export_modes))
    from .prompt_export import ExportError, export_prompts, write_output
    from .secrets import redact
    kind = "compiled .pipe" if chosen == ["--pipe"] else "prompt export"
    prog = _load(args)
    try:
        if args.output:
            if os.path.lexists(args.output) and not args.force:
                raise UsageError(f"{args.output} exists; it was not changed (--force replaces an earlier export)")
            guard_output(args.output, kind, prog, [args.file])
        if kind == "compiled .pipe":
            from .emit_pipe import program_as_pipe
            try:
                text = program_as_pipe(prog, args.output)
            except ValueError as err:
                raise ExportError(str(err)) from None
        else:
            text = export_prompts(prog, args.format, source=args.file)
    except ExportError as err:
        print(f"pipec export: error: {err}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        prog.close()
    if not args.output:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        write_output(args.output, redact(text), replace=args.force)     # as stdout would show it: keys masked
    except FileExistsError:
        raise UsageError(f"{args.output} exists; it was not changed (--force replaces an earlier export)") from None
    except OSError as err:
        print(f"pipec export: error: cannot write {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_FAIL
    print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_trust(args) -> int:
    from .artifact import ArtifactError
    from .program import load_compiled
    from . import trust
    status = EXIT_OK
    for path in args.files:
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {path}")
        try:
            prog = load_compiled(path, cache=False)
        except ArtifactError as err:
            print(f"pipec trust: error: {err}", file=sys.stderr)
            status = EXIT_FAIL
            continue
        canonical = prog.artifact.dumps()
        reqs = prog.requirements()
        if prog.artifact.report.metric.startswith("python("):
            from .metrics import Metric
            metric = Metric.parse(prog.artifact.report.metric, near=prog.path.resolve().parent)
            reqs.append(trust.Requirement("metric", metric.text, metric.target))
        what = "\n".join(f"  {r.describe()}" for r in reqs) or "  (no Python code and no LM endpoint of its own)"
        if args.show:
            state = "trusted" if trust.is_trusted(canonical) else "not trusted"
            print(f"{path}: {state}; running it would use:\n{what}")
        elif args.revoke:
            done = trust.revoke(canonical)
            print(f"{path}: approval withdrawn" if done else f"{path}: was not trusted")
        elif trust.record(canonical, path, "approved"):
            print(f"{path}: approved (until the file changes); it may now use:\n{what}")
        else:
            print(f"pipec trust: error: cannot write the trust store {trust.store_dir()} (it must be yours and "
                  "writable by you alone)", file=sys.stderr)
            status = EXIT_FAIL
    return status


def _missing_extra(command: str, extra: str, modules: tuple[str, ...]) -> bool:
    """Whether an optional extra's packages are missing; if so, say how to get them (not a traceback)."""
    import importlib.util
    if all(importlib.util.find_spec(m) is not None for m in modules):
        return False
    print(f"pipec {command} needs the {extra} extra: pip install 'pipec[{extra}]'", file=sys.stderr)
    return True


def cmd_lsp(args) -> int:
    if _missing_extra("lsp", "lsp", ("lsprotocol", "pygls")):
        return EXIT_USAGE
    from .lsp_server import serve
    serve()
    return EXIT_OK


def cmd_serve(args) -> int:
    if _missing_extra("serve", "serve", ("starlette", "uvicorn")):
        return EXIT_USAGE
    for flag, value in (("--max-concurrent", args.max_concurrent), ("--batch-concurrency", args.batch_concurrency),
                        ("--max-body", args.max_body)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1")
    if not 0 <= args.port <= 65535 or args.shutdown_timeout < 0:
        raise UsageError("--port must be 0 to 65535 and --shutdown-timeout at least 0")
    prog = _load(args)
    try:
        prog.approve_running()          # refused at startup, with `pipec run`'s message
        from .serve import listen, serve
        try:
            sock = listen(args.host, args.port)
        except OSError as err:
            print(f"pipec serve: error: cannot listen on {args.host}:{args.port}: {err.strerror or err}", file=sys.stderr)
            return EXIT_FAIL
        serve(prog, sock=sock, shutdown_timeout=args.shutdown_timeout, max_concurrent=args.max_concurrent,
              max_body=args.max_body, batch_concurrency=args.batch_concurrency, log_inputs=args.log_inputs)
    finally:
        prog.close()
    return EXIT_OK


def _short(v, n: int = 60) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return text if len(text) <= n else text[: n - 1] + "…"


if __name__ == "__main__":
    sys.exit(main())
