"""`pipec export --prompts`: every predictor's prompt as pipec builds it, for use outside pipec.

A predictor's prompt is a system message, demo turns (fixed, or chosen per input from a `knn` pool)
and a user message with the inputs. The export takes all of it from the prompt builder the runtime
uses (`Predictor.prefix_for` and `Predictor.messages`): the user message is built with a marker in
place of each input and cut at the markers into a template, and every template is checked against
the builder on probe inputs before anything is written, so an export never drifts from what pipec
sends. Three formats:

* `text`: for reading (what `pipec inspect` shows, with the demos and the knn pool);
* `json`: the same as data (`format: "pipec-prompts"`; templates as parts: text and `{"slot": name}`);
* `python`: a module that needs only the standard library: `render(name, **inputs)` returns the
  exact messages pipec sends, `request(...)` adds the reply schema and sampling parameters, and
  `nearest(...)` picks per-input demos with pipec's own TF-IDF code (`pipec.knn`, copied in).

Exporting runs nothing of the program: an artifact is read and verified as `pipec run` reads it,
and no tool, metric or LM is touched, so an artifact from elsewhere needs no approval. Every value
taken from the artifact is written into the Python module with `repr()` (and the module's data is
parsed back and compared before it is returned), so no text in an artifact can become code.
"""
from __future__ import annotations

import ast
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any

from . import knn as _knn_module
from .knn import KnnPool
from .output_file import write_output  # noqa: F401  (pipec export writes with it)
from .prompt import render_value, retry_message

FORMAT = "pipec-prompts"
FORMAT_VERSION = 1
FORMATS = ("text", "json", "python")

# How each structured-output mode hands the reply schema to the LM (see pipec.lm).
SCHEMA_SENT = {
    "grammar": "as a llama.cpp grammar built from it (LlamaGrammar.from_json_schema)",
    "json_schema": 'as response_format {"type": "json_schema", "json_schema": {"name": "reply", "schema": '
                   '<schema>, "strict": false}}',
    "json_object": 'as response_format {"type": "json_object"}',
    "text": "not sent: the backend takes no schema; the system message's last line asks for the JSON object",
}
VALUE_RULE = ("an input's value is written as pipec writes it: text as it is, null as (none), booleans as "
              "true/false, numbers as digits, lists and records as JSON")
_MARK = "\x00pipec-slot-{}\x00"
_MARKS = re.compile("\x00pipec-slot-([0-9]+)\x00")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.@]*")


class ExportError(Exception):
    """A program whose prompts cannot be exported as templates (a prompt shape the export does not know)."""


def export_prompts(program, format: str = "text", *, source: str | None = None) -> str:
    """Every predictor's prompt as `format` text: "text" (to read), "json" or "python" (a
    standard-library module whose `render(name, **inputs)` returns the messages pipec sends).

    `program` is a loaded `pipec.Program` (compiled or not) or the path of an artifact or .pipe
    file, read as `pipec run` reads it; nothing of it runs, so an artifact needs no approval.

    >>> import pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "echo.pipe"
    >>> _ = path.write_text('signature S { "Echo the text." in q: str out a: str } module m = Predict(S) '
    ...                     'pipeline echo(q: str) -> (a) { return a = m(q: q).a }')
    >>> module = {}
    >>> exec(pipec.export_prompts(path, format="python"), module)
    >>> module["render"]("m", q="hi")[-1]
    {'role': 'user', 'content': 'q: hi'}
    >>> print(pipec.export_prompts(path).splitlines()[0])
    # pipec prompt export: pipeline echo (from .../echo.pipe)
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format '{format}' (use {', '.join(FORMATS)})")
    if not hasattr(program, "predictors"):
        from .program import load
        path = Path(program)
        source = source if source is not None else str(path)
        program = load(path, cache=False)
        try:
            return export_prompts(program, format, source=source)
        finally:
            program.close()
    spec = prompt_spec(program, source=source)
    if format == "json":
        return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"
    if format == "python":
        return _python(spec)
    return _readable(spec)


def is_export(head: str) -> bool:
    """Whether text (a file's first bytes) is an earlier output of this export, in any format.

    >>> is_export('{\\n  "format": "pipec-prompts",'), is_export("# notes")
    (True, False)
    """
    return head.startswith(("# pipec prompt export", '"""pipec prompt export')) or \
        head.lstrip().startswith('{\n  "format": "' + FORMAT + '"')


# ---------------------------------------------------------------------------------- the data
def prompt_spec(program, source: str | None = None) -> dict[str, Any]:
    """The export as data (what `format="json"` writes): per predictor, its system message, demo
    turns, user message template, knn pool, reply schema and sampling parameters."""
    from .version import __version__
    art = getattr(program, "artifact", None)
    out: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "pipec_version": __version__,
        "pipeline": program.name, "source": source,
        "artifact_fingerprint": art.fingerprint if art is not None else None,
        "ensemble_members": max(1, len(program.members)),
        "value_rule": VALUE_RULE,
        "predictors": {},
        "code": {},
    }
    sets = [program] + [program.bound(params=m) for m in program.members[1:]]
    for number, member in enumerate(sets, 1):
        for module in member.modules.values():
            carried = module.code()         # ToolMaker's tool: run in the sandbox, never sent to an LM
            for p in module.predictors():
                name = p.name if number == 1 else f"{p.name}@{number}"
                if p.name in carried:
                    out["code"][name] = carried[p.name]
                else:
                    out["predictors"][name] = _predictor(program, module, p)
    return out


def _predictor(program, module, p) -> dict[str, Any]:
    from .dsl.types import show
    backend = program.backend(p.lm)
    mode = backend.structured
    head = p.prefix_for([])
    if len(head) != 1 or head[0]["role"] != "system":
        raise ExportError(f"predictor {p.name}: its prompt does not start with one system message")
    names = [n for n, _, _ in p.inputs]
    spec = {
        "module": module.name,
        "kind": module.describe(),
        "lm": backend.model,
        "structured": mode,
        "params": dict(p.params),
        "inputs": [{"name": n, "type": show(t), "description": d, "optional": t.optional} for n, t, d in p.inputs],
        "outputs": [n for n, _, _ in p.outputs],
        "pinned": sorted(p.pinned),
        "system": head[0]["content"],
        "demos": [_turns(p, d) for d in p.demos],
        "user": _template(lambda values: p.messages(values)[-1]["content"], names, p.name),
        "knn": None,
        "schema": p.schema,
        "schema_sent": mode != "text",
        "retry": _template(lambda values: retry_message(values["error"], p.outputs), ["error"], p.name),
    }
    if p.knn is not None:
        spec["knn"] = {"k": p.knn.k, "fields": list(p.knn.fields), "pool": list(p.knn.demos),
                       "demos": [_turns(p, d) for d in p.knn.demos]}
    note = _note(module, p)
    if note:
        spec["note"] = note
    _check(p, spec)
    return spec


def _turns(p, demo: dict[str, Any]) -> list[dict[str, str]]:
    """The messages one demo adds after the system message, as the predictor builds them."""
    return [dict(m) for m in p.prefix_for([demo])[1:]]


def _template(build, names: list[str], who: str) -> list[Any]:
    """`build(values)` cut into parts: text, and `{"slot": name}` where the value of `name` goes."""
    text = build({n: _MARK.format(i) for i, n in enumerate(names)})
    parts: list[Any] = []
    for i, piece in enumerate(_MARKS.split(text)):
        if i % 2:
            parts.append({"slot": names[int(piece)]})
        elif piece:
            parts.append(piece)
    if any("\x00pipec-slot" in part for part in parts if isinstance(part, str)):
        raise ExportError(f"predictor {who}: a value is written into its prompt in a way a template cannot show")
    return parts


def _note(module, p) -> str:
    from .modules.persona import Persona
    running = getattr(module, "running", module)
    if isinstance(running, Persona) and p is running.answer:
        return (f"at run time the identity that {running.persona.name} wrote for the input, then a blank line, "
                "head this system message")
    return ""


def _probes(p) -> list[dict[str, Any]]:
    first = {n: f"probe of {n}: ünï {{x}}\nline two" for n, _, _ in p.inputs}
    kinds = [None, 3, 2.5, True, ["a", {"b": 1}], "plain"]
    second = {n: kinds[i % len(kinds)] for i, (n, _, _) in enumerate(p.inputs)}
    return [first, second]


def _check(p, spec: dict[str, Any]) -> None:
    """The exported templates give exactly the predictor's messages on probe inputs (with the code the
    Python export ships: `_messages`, `render_value`, `KnnPool`), or the export stops here."""
    knn = spec["knn"]
    if spec["system"] != p.prefix_for([])[0]["content"] or \
            [{"role": "system", "content": spec["system"]}] + [m for t in spec["demos"] for m in t] != \
            p.prefix_for(p.demos):
        raise ExportError(f"predictor {p.name}: its demos do not add up to its prompt")
    pool = KnnPool(knn["pool"], knn["fields"], knn["k"]) if knn is not None else None
    for values in _probes(p):
        if _messages(spec, values, pool) != p.messages(values):
            raise ExportError(f"predictor {p.name}: its prompt is not a template over its inputs")
    error = "probe error: ünï {x}"
    if _fill(spec["retry"], {"error": error}) != retry_message(error, p.outputs):
        raise ExportError(f"predictor {p.name}: its retry message is not a template")


# ------------------------------------- shipped in the Python export as they are (standard library only)
def _fill(parts, values):
    """A template's text with each slot's value written in as pipec writes values (`render_value`)."""
    return "".join(part if isinstance(part, str) else render_value(values.get(part["slot"])) for part in parts)


def _messages(spec, values, pool):
    """A predictor's messages for these values: the system message, the demos (the fixed ones, or the
    pool's nearest to the values), then the user message."""
    messages = [{"role": "system", "content": spec["system"]}]
    turns = spec["demos"] if pool is None else [spec["knn"]["demos"][i] for i in pool.nearest(values)]
    for turn in turns:
        messages += [dict(m) for m in turn]
    messages.append({"role": "user", "content": _fill(spec["user"], values)})
    return messages


_API = '''
def names() -> list[str]:
    """The predictors, by name: `module`, or `module.part` for kinds with several."""
    return list(PREDICTORS)


def render(name: str, /, **inputs: Any) -> list[dict[str, str]]:
    """The chat messages pipec sends for predictor `name` on these inputs (the predictor's inputs,
    as it receives them); demos from a knn pool are the ones pipec picks for them."""
    spec, values = _spec_and_values(name, inputs)
    return _messages(spec, values, _pool(name))


def request(name: str, /, **inputs: Any) -> dict[str, Any]:
    """What pipec sends the LM: `messages`, the reply's JSON `schema` (None where pipec sends none and
    the system message asks for the JSON object) and the sampling `params`."""
    spec, values = _spec_and_values(name, inputs)
    return {"messages": _messages(spec, values, _pool(name)),
            "schema": spec["schema"] if spec["schema_sent"] else None, "params": dict(spec["params"])}


def nearest(name: str, /, **inputs: Any) -> list[int]:
    """Which entries of PREDICTORS[name]["knn"]["pool"] are the demos for these inputs, in prompt
    order (the most similar last); [] for a predictor with fixed demos."""
    spec, values = _spec_and_values(name, inputs)
    pool = _pool(name)
    return pool.nearest(values) if pool is not None else []


def retry_messages(name: str, messages: list[dict[str, str]], reply: str, error: str) -> list[dict[str, str]]:
    """The one retry pipec makes after a reply that does not parse: the messages, the reply, and a
    user message showing the error."""
    return [*messages, {"role": "assistant", "content": reply},
            {"role": "user", "content": _fill(PREDICTORS[name]["retry"], {"error": error})}]


_POOLS: dict[str, Any] = {}


def _pool(name: str):
    knn = PREDICTORS[name]["knn"]
    if knn is None:
        return None
    if name not in _POOLS:
        _POOLS[name] = KnnPool(knn["pool"], knn["fields"], knn["k"])
    return _POOLS[name]


def _spec_and_values(name: str, inputs: dict[str, Any]):
    if name not in PREDICTORS:
        raise KeyError(f"no predictor {name!r}; predictors: {', '.join(PREDICTORS)}")
    spec = PREDICTORS[name]
    known = {i["name"]: i for i in spec["inputs"]}
    unknown = [k for k in inputs if k not in known]
    missing = [n for n, i in known.items() if n not in inputs and not i["optional"]]
    if unknown or missing:
        raise TypeError(f"predictor {name!r} takes the inputs {', '.join(known)}"
                        + (f"; not {', '.join(unknown)}" if unknown else "")
                        + (f"; missing {', '.join(missing)}" if missing else ""))
    return spec, {n: inputs.get(n) for n in known}
'''


# -------------------------------------------------------------------------------- python
def _python(spec: dict[str, Any]) -> str:
    predictors = spec["predictors"]
    listed = "\n".join(f"    {n} ({', '.join(i['name'] for i in p['inputs'])})" for n, p in predictors.items()
                       if _NAME.fullmatch(n) and all(_NAME.fullmatch(i["name"]) for i in p["inputs"]))
    pipeline = f" `{spec['pipeline']}`" if _NAME.fullmatch(str(spec["pipeline"])) else ""
    knn_imports, knn_body = _module_code(_knn_module)
    imports = list(dict.fromkeys(["import json", *knn_imports, "from typing import Any"]))
    data = {k: v for k, v in spec.items() if k != "predictors"}
    lines = [
        f'"""pipec prompt export: the prompts of pipeline{pipeline} exactly as pipec {spec["pipec_version"]} '
        "builds them.",
        "",
        "Written by `pipec export --prompts --format python`; needs only the Python standard library.",
        "",
        "    render(name, **inputs)    the chat messages pipec sends for predictor `name`",
        "    request(name, **inputs)   the same with the reply's JSON schema and the sampling parameters",
        "    nearest(name, **inputs)   which demos of the predictor's knn pool go with these inputs",
        "    retry_messages(name, messages, reply, error)   the retry pipec sends after an unparsable reply",
        "    PREDICTORS                each predictor's system message, demos, user template and schema",
        "    CODE                      code the modules carry (ToolMaker's tool): pipec runs it in its sandbox",
        "",
        "Predictors (inputs):",
        listed or "    (see PREDICTORS)",
        "",
        "Inputs are the predictor's inputs as it receives them; " + VALUE_RULE + ".",
        '"""',
        "from __future__ import annotations",
        "",
        *imports,
        "",
        *(f"{key.upper()} = {_literal(value)}" for key, value in data.items()),
        "",
        f"PREDICTORS = {_literal(predictors)}",
        "",
        "",
        _API.strip("\n"),
        "",
        "",
        "# ---- pipec's own code, copied: how values are written (pipec/prompt.py), how a template is filled",
        "# ---- and a prompt assembled (pipec/prompt_export.py), and nearest-demo selection (pipec/knn.py)",
        inspect.getsource(render_value).strip("\n"),
        "",
        "",
        inspect.getsource(_fill).strip("\n"),
        "",
        "",
        inspect.getsource(_messages).strip("\n"),
        "",
        "",
        knn_body,
        "",
    ]
    text = "\n".join(lines)
    _verify(text, predictors)
    return text


def _module_code(module) -> tuple[list[str], str]:
    """A pipec module's imports and its code without its docstring, to ship in an export; it must
    import nothing but the standard library."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    imports, body = [], []
    for node in ast.parse(source).body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        code = "\n".join(lines[start - 1: node.end_lineno])
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue                               # the module's docstring
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise ExportError(f"{module.__name__} imports pipec code; it cannot ship in an export")
            imports.append(code)
            continue
        body.append(code)
    return imports, "\n\n\n".join(body)


def _verify(text: str, predictors: dict[str, Any]) -> None:
    """The module is only imports, assignments and definitions, and its PREDICTORS parse back to the data."""
    tree = ast.parse(text)
    for node in tree.body[1:]:
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.FunctionDef,
                                 ast.ClassDef)):
            raise ExportError(f"the Python export has a statement it should not have (line {node.lineno})")
    value = next(n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") ==
                 "PREDICTORS")
    if "float(" not in ast.unparse(value) and ast.literal_eval(value) != predictors:
        raise ExportError("the Python export's data does not read back as the prompts")


def _literal(value: Any, indent: int = 0, col: int | None = None) -> str:
    """A Python literal for JSON-like data, every scalar written with repr(); long values over lines
    (`indent`: the indentation of the line the value starts on; `col`: the column it starts at).

    >>> print(_literal({"a": [1, None], "b": "x\\ny"}))
    {
        'a': [1, None],
        'b': ('x\\n'
              'y'),
    }
    """
    col = indent if col is None else col
    flat = _inline(value)
    if flat is not None and len(flat) + col <= 100:
        return flat
    pad = " " * (indent + 4)
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            key = _literal(k)
            items.append(f"{pad}{key}: {_literal(v, indent + 4, indent + 4 + len(key) + 2)},")
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, (list, tuple)):
        items = [f"{pad}{_literal(v, indent + 4)}," for v in value]
        return "[\n" + "\n".join(items) + "\n" + " " * indent + "]"
    if isinstance(value, str):
        pieces = value.splitlines(keepends=True)
        if len(pieces) > 1:
            return "(" + ("\n" + " " * (col + 1)).join(repr(p) for p in pieces) + ")"
        return repr(value)
    return _scalar(value)


def _inline(value: Any) -> str | None:
    """`value` on one line, or None when a string in it spans lines."""
    if isinstance(value, dict):
        items = [(_inline(k), _inline(v)) for k, v in value.items()]
        return None if any(a is None or b is None for a, b in items) else \
            "{" + ", ".join(f"{a}: {b}" for a, b in items) + "}"
    if isinstance(value, (list, tuple)):
        items = [_inline(v) for v in value]
        return None if any(i is None for i in items) else "[" + ", ".join(items) + "]"
    if isinstance(value, str):
        return None if len(value.splitlines()) > 1 else repr(value)
    return _scalar(value)


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f'float("{value}")'
    raise ExportError(f"a value of type {type(value).__name__} cannot be exported")


# ---------------------------------------------------------------------------------- text
def _readable(spec: dict[str, Any]) -> str:
    out = [f"# pipec prompt export: pipeline {spec['pipeline']}"
           + (f" (from {_shown(spec['source'])})" if spec.get("source") else ""),
           f"# pipec {spec['pipec_version']}. {{name}} marks where an input goes; {VALUE_RULE}.",
           "# Control characters other than newline and tab are shown escaped (\\x1b); the json and python",
           "# formats hold the exact text."]
    if spec["ensemble_members"] > 1:
        out.append(f"# An ensemble of {spec['ensemble_members']} parameter sets: pipec runs each (member k's "
                   "predictors are NAME@k) and takes a majority vote per output.")
    for name, p in spec["predictors"].items():
        params = ", ".join(f"{k}={v}" for k, v in p["params"].items())
        out += ["", f"== {_shown(name)} ({p['kind']} module {_shown(p['module'])}) ==",
                f"lm: {_shown(p['lm'])}  structured output: {p['structured']}"
                + (f"  params: {params}" if params else "")
                + (f"  pinned: {', '.join(p['pinned'])}" if p["pinned"] else ""),
                "inputs: " + ", ".join(f"{i['name']} ({i['type']})" for i in p["inputs"])]
        if p.get("note"):
            out.append(f"note: {p['note']}")
        out += ["--- system", _shown(p["system"])]
        for i, turn in enumerate(p["demos"], 1):
            for m in turn:
                out += [f"--- {m['role']} (demo {i})", _shown(m["content"])]
        knn = p["knn"]
        if knn is not None:
            out.append(f"--- demos: the {knn['k']} of the {len(knn['demos'])} in the pool below most similar to the "
                       f"input's {', '.join(knn['fields'])} (TF-IDF over words and character trigrams, the most "
                       "similar last), a user and an assistant message each")
        out += ["--- user", _shown(_display(p["user"]))]
        how = SCHEMA_SENT.get(p["structured"] if p["schema_sent"] else "text")
        out += [f"--- reply schema: {'sent ' if p['schema_sent'] else ''}{how}" if how else "--- reply schema",
                json.dumps(p["schema"], ensure_ascii=False)]
        out += ["--- retry (once, after a reply that does not parse: the reply as an assistant message, then)",
                _shown(_display(p["retry"]))]
        if knn is not None:
            out.append(f"--- knn pool: {len(knn['demos'])} demos")
            for i, turn in enumerate(knn["demos"]):
                for m in turn:
                    out += [f"--- {m['role']} (pool demo {i})", _shown(m["content"])]
    for name, source in spec.get("code", {}).items():
        out += ["", f"== {_shown(name)} (Python code the module carries and runs in pipec's sandbox; never sent "
                    "to an LM) ==", _shown(source)]
    return "\n".join(out) + "\n"


def _display(parts: list[Any]) -> str:
    return "".join(p if isinstance(p, str) else "{" + p["slot"] + "}" for p in parts)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _shown(text: Any) -> str:
    """Text for a terminal: control characters (escape sequences included) escaped, so an artifact
    cannot drive the reader's terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
