"""The compiled program as `.pipe` source: `pipec compile --emit pipe`, `pipec export ARTIFACT --pipe`.

A compiled program is the source it was compiled from plus what the compile chose: each predictor's
instruction and demos (fixed, or a pool picked per input), and the alternative of each `one_of`
module. Written back into the source, that is a readable program:

- the original declarations, with each tuned module rewritten: `instruction: "..."`, `demos: [...]`
  (one demo per line), `nearest: k` for per-input demos (the demos are then the pool), and
  `parts: {critique: {...}}` for a kind's inner predictors (`module.part`);
- a `one_of` module as the alternative the compile chose, its own options over the common ones;
- a header comment with the compile's score, optimizer, seed and fingerprint;
- imported files inlined (the output is one self-contained file), and the compile block's
  `trainset`/`valset` paths re-rooted to where the file is written.

It round-trips: the file checks clean, runs with exactly the messages the artifact sends (so the
same outputs), and compiling it again with the same compile block starts from what it writes (its
demos and instructions are the uncompiled program's). Everything comes out through `pipec fmt`.

Every value is written as a .pipe literal by `literal`, never pasted: an artifact from elsewhere
cannot smuggle syntax into the file.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from .dsl import ast as A

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
_WORDS = {"true", "false"}         # names the grammar reads as something else: written as strings


def program_as_pipe(program, dest: str | Path | None = None, fingerprint: str | None = None) -> str:
    """The compiled `program` (from `compile` or `load_compiled`) as one `.pipe` file's text; `dest`
    is where it will be written (its folder re-roots the compile block's data paths), `fingerprint`
    the saved artifact's (default: the program's own artifact's).

    >>> import pipec                                                   # doctest: +SKIP
    >>> print(program_as_pipe(pipec.load_compiled("examples/support.compiled.json")))    # doctest: +SKIP
    """
    from .dsl.format import format_source
    from .dsl.parser import parse
    if program.artifact is None:
        raise ValueError("only a compiled program can be written as its compiled .pipe; compile it first")
    if program.members:
        raise ValueError("an ensemble compile runs several parameter sets per input, which one .pipe file cannot "
                         "write; keep the artifact (.compiled.json)")
    main = str(program.path)
    sources = program.loaded.sources
    order = [p for p in sources if p != main] + [main]
    dest_dir = Path(dest).resolve().parent if dest is not None else Path(main).resolve().parent
    chunks = [header(program, fingerprint or program.artifact.fingerprint)]
    for path in order:
        text = sources[path]
        tree, _ = parse(text, path)
        edits = []
        for item in tree.items:
            if isinstance(item, A.Import):
                edits.append((item.span, ""))
            elif isinstance(item, A.ModuleDecl) and item.name in program.modules:
                edits.append((item.span, module_text(program, program.checked.modules[item.name])))
            elif isinstance(item, A.CompileBlock):
                edits += _rerooted(item, Path(path).resolve().parent, dest_dir)
        body = _apply(text, edits).strip("\n")
        if path != main:
            body = f"# ---- from {os.path.relpath(path, Path(main).parent)}\n{body}"
        chunks.append(body)
    return format_source("\n\n".join(chunks) + "\n", str(dest or main))


def write_pipe(program, path: str | Path, fingerprint: str | None = None) -> Path:
    """Write `program_as_pipe` to `path` atomically (a crash leaves the earlier file); the path."""
    from .output_file import write_output
    return write_output(path, program_as_pipe(program, Path(path), fingerprint), replace=True)


def header(program, fingerprint: str) -> str:
    """The comment at the top: where the program came from and how well its compile did."""
    from .version import __version__
    rep = program.artifact.report
    lines = [f"Compiled by pipec {__version__} from {Path(program.path).name}: pipeline {rep.pipeline}, "
             f"optimizer {rep.optimizer}, seed {rep.seed}",
             f"valset score {rep.compiled_score:.3f} (uncompiled {rep.baseline_score:.3f}) on {rep.valset} rows, "
             f"metric {rep.metric}",
             f"artifact fingerprint {fingerprint or '(none)'}",
             "Compiling this file again starts from the instructions and demos written here."]
    return "\n".join("# " + " ".join(line.split()) for line in lines)      # no newline from a report gets out


def module_text(program, decl: A.ModuleDecl) -> str:
    """A module declaration with its compiled parameters written in: for the predictor named after
    the module, `instruction:`, `demos:` and `nearest:`; for each inner one (`module.part`), the same
    under `parts: {part: {...}}`. The module's own instruction is what its kind builds every part's
    default instruction from, so when it changes, every part's instruction is written too."""
    label = program.strategies().get(decl.name) if decl.alternatives else None
    variant = dict(decl.variants())[label] if label else decl
    prefix = f"{decl.name}.{label}" if label else decl.name
    running = program.modules[decl.name].alternatives[label] if label else program.modules[decl.name]
    params = {n: st for n, st in program.params().items() if n == prefix or n.startswith(prefix + ".")}
    pristine = program.pristine_params()
    predictors = program.predictors(every=True)
    written = {o.name for o in variant.options}
    # Without a predictor named after the module, its written instruction stays as it is.
    dropped = ("demos", "nearest", "parts") + (("instruction",) if prefix in params else ())
    options = [f"{o.name}: {literal(o.value)}" for o in variant.options if o.name not in dropped]
    demo_parts = {f"{prefix}.{p}" if p else prefix for p in getattr(running, "demo_parts", ())}
    top: list[str] = []
    parts: list[str] = []
    every_instruction = False
    for name in sorted(params, key=lambda n: (n != prefix, n)):          # the module's own predictor first
        st, before = params[name], pristine.get(name)
        changed = before is None or st.instruction != before.instruction
        own = []
        if changed or every_instruction or (name == prefix and "instruction" in written):
            own.append(f"instruction: {literal(st.instruction)}")
        demos = st.knn.pool if st.knn is not None else list(st.demos)
        p = predictors[name]
        enums = {n for n, t, _ in p.inputs + p.outputs if t.kind == "enum"}
        # Demos written on the module go to every part in `demo_parts`: a part without its own says so.
        if demos or (name != prefix and name in demo_parts and any(o.startswith("demos:") for o in top)):
            own.append(f"demos: {demo_list(demos, enums)}")
            if st.knn is not None:
                own.append(f"nearest: {st.knn.k}")
        if name == prefix:
            top = own
            every_instruction = changed
        elif own:
            part = name[len(prefix) + 1:]
            if not _NAME.match(part):
                raise ValueError(f"predictor {name}: its part name '{part}' cannot be written in a .pipe file")
            parts.append(f"{part}: {{{', '.join(own)}}},")
    options += top
    if parts:
        options.append("parts: {\n" + "\n".join(parts) + "\n}")
    # A trailing comma lays the declaration out one option per line when it carries demos or parts.
    spread = "," if any(o.startswith(("demos:", "parts:")) for o in options) else ""
    return f"module {decl.name} = {variant.kind}({', '.join([decl.signature, *options])}{spread})"


def demo_list(demos: list[dict[str, Any]], enums: set[str] = frozenset()) -> str:
    """Demos as a .pipe list, one per line (the trailing comma keeps them so under `pipec fmt`); the
    values of `enums` fields as bare names where they are names, as the examples write them.

    >>> print(demo_list([{"text": "hi", "label": "greet"}], {"label"}))
    [
    {text: "hi", label: greet},
    ]
    """
    if not demos:
        return "[]"
    def bare(d):
        return {k: A.Ref(v) if k in enums and isinstance(v, str) and _NAME.match(v) and v not in _WORDS else v
                for k, v in d.items()}
    return "[\n" + "".join(f"{literal(bare(d))},\n" for d in demos) + "]"


def literal(value: Any) -> str:
    """A Python value (or an option value as parsed: names, records) as a .pipe literal that reads
    back as the same value.

    >>> literal({"text": 'say "hi"\\n', "n": 3, "ok": True, "tags": ["a", 1.5]})
    '{text: "say \\\\"hi\\\\"\\\\n", n: 3, ok: true, tags: ["a", 1.5]}'
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} cannot be written in a .pipe file")
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF
                                                  else c) for c in value) + '"'
    if isinstance(value, A.Ref):
        return value.name
    if isinstance(value, A.RecordLit):             # an option value as the file wrote it
        return "{" + ", ".join(f"{o.name}: {literal(o.value)}" for o in value.fields) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        bad = [k for k in value if not _NAME.match(str(k))]
        if bad:
            raise ValueError(f"field name {bad[0]!r} cannot be written in a .pipe file")
        return "{" + ", ".join(f"{k}: {literal(v)}" for k, v in value.items() if v is not None) + "}"
    raise ValueError(f"a value of type {type(value).__name__} cannot be written in a .pipe file")


def _rerooted(block: A.CompileBlock, src_dir: Path, dest_dir: Path) -> list[tuple[A.Span, str]]:
    """The compile block's relative data paths, rewritten for a file in `dest_dir`."""
    if src_dir == dest_dir:
        return []
    out = []
    for setting in block.settings:
        v = setting.value
        if setting.name in ("trainset", "valset") and isinstance(v, A.Literal) and isinstance(v.value, str) \
                and not os.path.isabs(v.value):
            out.append((v.span, literal(os.path.relpath(src_dir / v.value, dest_dir))))
    return out


def _apply(text: str, edits: list[tuple[A.Span, str]]) -> str:
    """`text` with each span replaced (spans do not overlap)."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def offset(line: int, col: int) -> int:
        return starts[line - 1] + col - 1
    for span, new in sorted(edits, key=lambda e: (e[0].line, e[0].col), reverse=True):
        text = text[:offset(span.line, span.col)] + new + text[offset(span.end_line, span.end_col):]
    return text
