"""Completion: what may be written at the cursor, from the text before it and the checked program.

The text being typed rarely parses (`c.` is a syntax error), so where the cursor is comes from the
tokens of its declaration (`context_at`), and what fits there from the program: the last check of
the buffer, or a check of the buffer with a placeholder name at the cursor when the declaration
around it did not parse.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .dsl import ast as A
from .dsl.catalogue import LM_OPTIONS, OptionSpec
from .dsl.types import ANY, Type, show
from .lsp_text import SourceText, Token, tokens

ITEM_KEYWORDS = ("import", "lm", "default", "signature", "record", "module", "tool", "pipeline", "compile", "test")
_ITEM_START = re.compile(rf"^(?:{'|'.join(ITEM_KEYWORDS)})\b", re.M)
PLACEHOLDER = "__pipec_completion__"
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_EXPR_AFTER = {"=", "+", "[", ",", "in", ":", "{", "("}


@dataclass(frozen=True, slots=True)
class Context:
    """Where the cursor is: `what` (keyword field kind signature option option_value lm_option
    lm_option_value type direction setting setting_value function_arg call_arg expr statement
    test_call test_arg test_output lm pipeline default names none) and what that needs (`args`)."""

    what: str
    args: tuple = ()


@dataclass(frozen=True, slots=True)
class Item:
    """One completion: its label, what it is, a detail and a doc; `insert` when the text inserted
    differs from the label; `data` for details looked up only when the item is picked (an
    optimizer's doc, which imports that optimizer)."""

    label: str
    kind: str
    detail: str = ""
    doc: str = ""
    insert: str = ""
    data: tuple | None = None


# ------------------------------------------------------------------ where the cursor is
def context_at(text: str, offset: int) -> Context:
    """What fits at `offset` of `text`, read from the tokens of the declaration around it.

    >>> def at(t): return context_at(t.replace("|", ""), t.index("|"))
    >>> at("sig|"), at("module m = |"), at("module m = Predict(|")
    (Context(what='keyword', args=()), Context(what='kind', args=()), Context(what='signature', args=()))
    >>> at("module m = Predict(S, lm: local, |)")
    Context(what='option', args=(('Predict',), ('lm',)))
    >>> at("module m = one_of(Predict, Majority(n: 3))(S, |")
    Context(what='option', args=(('Predict', 'Majority'), ()))
    >>> at("pipeline p(q: str) -> (a) {\\n    r = m(q: q)\\n    return a = r.|")
    Context(what='field', args=(('r',), 'p'))
    >>> at("compile p {\\n    optimizer = knn(|")
    Context(what='function_arg', args=('optimizer', 'knn', 'p'))
    >>> at("signature S {\\n    in q: |"), at('lm a = "x" # note |')
    (Context(what='type', args=()), Context(what='none', args=()))
    """
    start = 0
    for m in _ITEM_START.finditer(text, 0, offset):
        start = m.start()
    toks = list(tokens(text, start, offset))
    if toks and toks[-1].kind == "comment":        # a comment runs to the end of its line: the cursor is in it
        return Context("none")
    toks = [t for t in toks if t.kind != "comment"]
    if toks and toks[-1].kind in ("str", "long") and (not toks[-1].closed or toks[-1].end == offset):
        return Context("none")
    prefix = toks.pop() if toks and toks[-1].kind == "name" and toks[-1].end == offset else None
    line_start = text.rfind("\n", 0, offset) + 1
    at_line_start = not text[line_start:prefix.start if prefix else offset].strip()
    stack = _brackets(toks)
    head = toks[0].text if toks and toks[0].kind == "name" else ""
    if head not in ITEM_KEYWORDS or (not stack and at_line_start and (prefix is None or prefix.start == line_start)
                                     and _complete_item(head, toks)):
        return Context("keyword") if at_line_start else Context("none")
    chain = _chain(toks)
    if chain:
        return Context("field", (chain, _pipeline_name(toks)))
    last = toks[-1].text if toks else ""
    return _BY_ITEM[head](toks, stack, last, at_line_start)


def _complete_item(head: str, toks: list[Token]) -> bool:
    """Whether a declaration without open brackets is finished, so the next line starts a new one.

    >>> [_complete_item(t.split()[0], list(tokens(t))) for t in ("module m = P(S)", "module m =", 'lm a = "x"')]
    [True, False, True]
    """
    last = toks[-1] if toks else None
    if last is None:
        return False
    if head in ("signature", "record", "pipeline", "compile", "test"):
        return last.text == "}"
    if head == "module":
        return last.text == ")"
    if head == "tool":
        return last.text == ")" and any(t.text == "=" for t in toks)
    if head in ("lm", "import"):
        return last.kind in ("str", "long") or last.text == ")"
    return len(toks) >= 4               # default lm = NAME


def _brackets(toks: list[Token]) -> list[int]:
    """The indexes in `toks` of the brackets still open, innermost last."""
    stack: list[int] = []
    for i, t in enumerate(toks):
        if t.text in _OPENERS:
            stack.append(i)
        elif t.text in (")", "]", "}") and stack and _OPENERS[toks[stack[-1]].text] == t.text:
            stack.pop()
    return stack


def _chain(toks: list[Token]) -> tuple[str, ...]:
    """`a.b.` before the cursor: ("a", "b"); else ()."""
    names: list[str] = []
    i = len(toks) - 1
    while i >= 1 and toks[i].text == "." and toks[i - 1].kind == "name":
        names.append(toks[i - 1].text)
        i -= 2
    return tuple(reversed(names))


def _pipeline_name(toks: list[Token]) -> str:
    return toks[1].text if len(toks) > 1 and toks[0].text == "pipeline" and toks[1].kind == "name" else ""


def _before(toks: list[Token], index: int) -> str:
    return toks[index - 1].text if index >= 1 else ""


def _option_name(toks: list[Token], colon: int) -> str:
    return toks[colon - 1].text if colon >= 1 and toks[colon - 1].kind == "name" else ""


def _lm(toks, stack, last, at_line_start) -> Context:
    if stack and toks[stack[-1]].text == "(":
        if last in ("(", ","):
            return Context("lm_option", (_given(toks, stack[-1]),))
        if last == ":":
            return Context("lm_option_value", (_option_name(toks, len(toks) - 1),))
    return Context("none")


def _default(toks, stack, last, at_line_start) -> Context:
    if len(toks) == 1:
        return Context("default")
    return Context("lm") if last == "=" else Context("none")


def _given(toks: list[Token], opener: int) -> tuple[str, ...]:
    """Option names already written in the bracket opened at `opener` (at its own depth)."""
    names, depth = [], 0
    for i in range(opener + 1, len(toks)):
        t = toks[i].text
        if t in _OPENERS:
            depth += 1
        elif t in (")", "]", "}"):
            depth -= 1
        elif t == ":" and depth == 0 and toks[i - 1].kind == "name":
            names.append(toks[i - 1].text)
    return tuple(names)


def _fields_decl(toks, stack, last, at_line_start) -> Context:
    if last == ":" or (last == "[" and _before(toks, len(toks) - 1) == "list"):
        return Context("type")
    if toks[0].text == "signature" and len(stack) == 1 and last not in ("(", ",", "[", ":"):
        return Context("direction")
    return Context("none")


def _tool(toks, stack, last, at_line_start) -> Context:
    if last in (":", "->") or (last == "[" and _before(toks, len(toks) - 1) == "list"):
        return Context("type")
    if last == "=" and not stack:
        return Context("loader")
    return Context("none")


def _module(toks, stack, last, at_line_start) -> Context:
    if not stack:
        return Context("kind") if last == "=" else Context("none")
    inner = stack[-1]
    opener, callee = toks[inner].text, _before(toks, inner)
    main, kinds, signature = _module_parts(toks)
    if opener == "(" and callee == "one_of":
        return Context("kind") if last in ("(", ",") else Context("none")
    if opener == "(" and inner != main:          # an alternative's own options: `Majority(n: 5)`
        if last in ("(", ","):
            return Context("option", ((callee,), _given(toks, inner)))
        if last == ":":
            return Context("option_value", ((callee,), _option_name(toks, len(toks) - 1), signature))
        return Context("none")
    if opener == "(":
        if last == "(":
            return Context("signature")
        if last == ",":
            return Context("option", (kinds, _given(toks, inner)))
        if last == ":":
            return Context("option_value", (kinds, _option_name(toks, len(toks) - 1), signature))
        return Context("none")
    if opener == "[" and last in ("[", ",") and _before(toks, inner) == ":":
        return Context("option_value", (kinds, _option_name(toks, inner - 1), signature))
    if opener == "{" and last in ("{", ","):
        return Context("demo_field", (signature, kinds))
    return Context("none")


def _module_parts(toks: list[Token]) -> tuple[int, tuple[str, ...], str]:
    """A module declaration's main bracket (index in `toks`, -1 if not written yet), its kinds and
    its signature: `module m = Kind(Sig, ...)` or `module m = one_of(A, B(...))(Sig, ...)`."""
    if len(toks) < 5 or toks[2].text != "=":
        return -1, (), ""
    if toks[3].text != "one_of":
        kinds = (toks[3].text,)
        main = 4 if toks[4].text == "(" else -1
    else:
        kinds, depth, i = [], 0, 4
        while i < len(toks):
            t = toks[i].text
            if t in _OPENERS:
                depth += 1
            elif t in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1 and toks[i].kind == "name" and toks[i - 1].text in ("(", ","):
                kinds.append(t)
            i += 1
        kinds = tuple(kinds)
        main = i + 1 if i + 1 < len(toks) and toks[i + 1].text == "(" else -1
    signature = toks[main + 1].text if main >= 0 and main + 1 < len(toks) and toks[main + 1].kind == "name" else ""
    return main, kinds, signature


def _pipeline(toks, stack, last, at_line_start) -> Context:
    name = _pipeline_name(toks)
    body = next((i for i in stack if toks[i].text == "{"), None)
    if body is None:          # the header: inputs and outputs
        if last == ":" or (last == "[" and _before(toks, len(toks) - 1) == "list"):
            return Context("type")
        return Context("none")
    inner = stack[-1]
    if toks[inner].text == "(" and toks[inner - 1].kind == "name" and last in ("(", ","):
        return Context("call_arg", (toks[inner - 1].text, name))
    if last in ("max", "map", "ordered", "return") or (toks and toks[-1].kind == "number"):
        return Context("none")
    if inner == body and at_line_start and last not in _EXPR_AFTER - {"{"}:
        return Context("statement", (name,))
    if last in _EXPR_AFTER:
        return Context("expr", (name,))
    return Context("none")


def _compile(toks, stack, last, at_line_start) -> Context:
    if len(toks) == 1:
        return Context("pipeline")
    name = toks[1].text if toks[1].kind == "name" else ""
    if not stack:
        return Context("none")
    inner = stack[-1]
    setting = _setting_of(toks)
    if inner == stack[0]:                 # the block itself
        if last == "=":
            return Context("setting_value", (setting, name))
        if last == "{" or at_line_start:
            return Context("setting", (_settings_given(toks),))
        return Context("none")
    if toks[inner].text == "(" and toks[inner - 1].kind == "name":
        if last in ("(", ","):
            return Context("function_arg", (setting, toks[inner - 1].text, name))
        if last == ":" and _option_name(toks, len(toks) - 1) == "lm":
            return Context("lm")
    return Context("none")


def _setting_of(toks: list[Token]) -> str:
    """The setting whose value the cursor is in: the name before the last `=` at the block's depth."""
    depth = 0
    setting = ""
    for i, t in enumerate(toks):
        if t.text in _OPENERS:
            depth += 1
        elif t.text in (")", "]", "}"):
            depth -= 1
        elif t.text == "=" and depth == 1 and i >= 1:
            setting = toks[i - 1].text
    return setting


def _settings_given(toks: list[Token]) -> tuple[str, ...]:
    given, depth = [], 0
    for i, t in enumerate(toks):
        if t.text in _OPENERS:
            depth += 1
        elif t.text in (")", "]", "}"):
            depth -= 1
        elif t.text == "=" and depth == 1:
            given.append(toks[i - 1].text)
    return tuple(given)


def _test(toks, stack, last, at_line_start) -> Context:
    if not stack:
        return Context("none")
    inner = stack[-1]
    # The pipeline of the case being written: the last name called at the block's depth.
    depth, pipeline, arrow = 0, "", False
    for i, t in enumerate(toks):
        if t.text in _OPENERS:
            depth += 1
            if t.text == "(" and depth == 2 and toks[i - 1].kind == "name":
                pipeline, arrow = toks[i - 1].text, False
        elif t.text in (")", "]", "}"):
            depth -= 1
        elif t.text == "->" and depth == 1:
            arrow = True
    if inner != stack[0]:
        if toks[inner].text == "(" and last in ("(", ","):
            return Context("test_arg", (pipeline,))
        return Context("none")
    if arrow and last in ("->", ","):
        return Context("test_output", (pipeline,))
    if last == "{" or (at_line_start and last not in ("->", ",", "==", "!=", "contains", "in")):
        return Context("test_call")
    return Context("none")


def _nothing(toks, stack, last, at_line_start) -> Context:
    return Context("none")


_BY_ITEM: dict[str, Callable[..., Context]] = {
    "import": _nothing, "lm": _lm, "default": _default, "signature": _fields_decl, "record": _fields_decl,
    "module": _module, "tool": _tool, "pipeline": _pipeline, "compile": _compile, "test": _test,
}


# ------------------------------------------------------------------ what fits there
def complete(analysis, offset: int, reanalyze: Callable[[str], object] | None = None) -> list[Item]:
    """The completions at `offset` of the buffer `analysis` checked (an `lsp_analysis.Analysis`);
    `reanalyze(text)` checks another text of the same buffer (the placeholder one), when needed.

    >>> import tempfile, os
    >>> from pipec.lsp_analysis import analyze
    >>> text = 'signature S { in q: str out a: str }\\nmodule m = ChainOfThought(S)\\n' \\
    ...        'pipeline p(q: str) -> (a) { r = m(q: q) return a = r. }'
    >>> a = analyze(os.path.join(tempfile.mkdtemp(), "a.pipe"), text)
    >>> [i.label for i in complete(a, text.index("r. }") + 2, lambda t: analyze(a.path, t))]
    ['reasoning', 'a']
    """
    context = context_at(analysis.text, offset)
    make = _CANDIDATES.get(context.what)
    if make is None:
        return []
    return make(_Request(analysis, offset, reanalyze), *context.args)


class _Request:
    """One completion request: the analysis, the cursor, and the values in scope there (found once)."""

    def __init__(self, analysis, offset: int, reanalyze):
        self.analysis, self.offset, self.reanalyze = analysis, offset, reanalyze
        self._scope = None

    @property
    def program(self):
        return self.analysis.program

    @property
    def catalogue(self):
        return self.analysis.catalogue

    def scope(self) -> dict[str, tuple[Type, tuple]]:
        """The pipeline values visible at the cursor: from the last check if the pipeline around it
        parsed, else from a check of the text with a placeholder name at the cursor."""
        if self._scope is None:
            self._scope = self._scope_in(self.analysis)
            if self._scope is None and self.reanalyze is not None:
                text = self.analysis.text
                patched = self.reanalyze(text[:self.offset] + PLACEHOLDER + text[self.offset:])
                self._scope = self._scope_in(patched)
            if self._scope is None:
                self._scope = {}
        return self._scope

    def _scope_in(self, analysis) -> dict | None:
        line, char = SourceText(analysis.text).position(self.offset)
        pipeline, values = analysis.index.scope_at(analysis.path, line, char)
        return values if pipeline is not None else None


def _fields_of(t: Type) -> list[Item]:
    if t.kind == "list" and t.arg is not None:
        t = t.arg
    if t.kind != "record":
        return []
    return [Item(n, "field", show(ft), d) for n, ft, d in t.fields]


def _field(req: _Request, chain: tuple[str, ...], pipeline: str) -> list[Item]:
    values = req.scope()
    t = values.get(chain[0], (None,))[0]
    if t is None or t.kind == "any":
        t = _guess(req, chain[0], pipeline)
    for name in chain[1:]:
        item = t.arg if t.kind == "list" and t.arg is not None else t
        ft = item.field(name) if item.kind == "record" else None
        if ft is None:
            return []
        t = Type("list", arg=ft) if t.kind == "list" else ft
    return _fields_of(t)


def _guess(req: _Request, name: str, pipeline: str) -> Type:
    """The type of value `name` read from the text when no check could type it: `name = m(...)` or
    `name = map x in ... { m(...) }` in the pipeline around the cursor."""
    text = req.analysis.text[:req.offset]
    start = text.rfind("\npipeline ") + 1
    m = None
    for m in re.finditer(rf"^\s*{re.escape(name)}\s*=\s*(map\b[^{{]*\{{\s*)?([A-Za-z_]\w*)\s*\(", text[start:], re.M):
        pass
    if m is None:
        return ANY
    callee = m.group(2)
    if callee in req.program.modules or callee in req.program.tools:
        t = req.analysis.index.call_type(callee)
        return Type("list", arg=t) if m.group(1) else t
    return ANY


def _keywords(req: _Request) -> list[Item]:
    return [Item(k, "keyword") for k in ITEM_KEYWORDS]


def _kinds(req: _Request) -> list[Item]:
    items = [Item(name, "kind", "module kind", spec.doc) for name, spec in sorted(req.catalogue.kinds.items())]
    return items + [Item("one_of", "keyword", "alternatives the compile chooses from", insert="one_of(")]


def _declared(req: _Request, table: str, kind: str) -> list[Item]:
    items = []
    for name in getattr(req.program, table):
        decl = req.analysis.index.decl(name)
        items.append(Item(name, kind, _detail(decl)))
    return items


def _detail(decl) -> str:
    if isinstance(decl, A.Signature):
        return "signature: " + ", ".join(f.name for f in decl.inputs) + " -> " + ", ".join(f.name for f in decl.outputs)
    if isinstance(decl, A.ModuleDecl):
        return f"module: {decl.kind if not decl.alternatives else 'one_of'}({decl.signature})"
    if isinstance(decl, A.LMDecl):
        return f"lm: {decl.model}"
    if isinstance(decl, A.ToolDecl):
        return f"tool: {decl.target}"
    if isinstance(decl, A.Pipeline):
        return "pipeline"
    if isinstance(decl, A.Record):
        return "record"
    return ""


def _signatures(req: _Request) -> list[Item]:
    return _declared(req, "signatures", "signature")


def _option_items(specs: dict[str, OptionSpec], given: tuple[str, ...], kind: str = "option") -> list[Item]:
    return [Item(name, kind, spec.type, spec.doc, insert=f"{name}: ")
            for name, spec in specs.items() if name not in given]


def _kind_options(req: _Request, kinds: tuple[str, ...]) -> dict[str, OptionSpec]:
    """The options every one of `kinds` takes (a one_of module's common options apply to all)."""
    specs = [req.catalogue.kinds[k].options for k in kinds if k in req.catalogue.kinds]
    if not specs:
        return {}
    return {n: s for n, s in specs[0].items() if all(n in other for other in specs[1:])}


def _option(req: _Request, kinds: tuple[str, ...], given: tuple[str, ...]) -> list[Item]:
    return _option_items(_kind_options(req, kinds), given)


def _option_value(req: _Request, kinds: tuple[str, ...], option: str, signature: str) -> list[Item]:
    spec = next((req.catalogue.kinds[k].options[option] for k in kinds
                 if k in req.catalogue.kinds and option in req.catalogue.kinds[k].options), None)
    if spec is None:
        return []
    if spec.type in ("lm", "lms"):
        return _declared(req, "lms", "lm")
    if spec.type in ("tool", "tools"):
        return _declared(req, "tools", "tool")
    if spec.type in ("module", "modules"):
        return _declared(req, "modules", "module")
    if spec.type == "pins":
        return [Item("instruction", "value"), Item("demos", "value")]
    if spec.type == "name":
        sig = req.program.signatures.get(signature)
        return [Item(n, "field", show(t), d) for n, t, d in sig.outputs] if sig else []
    return _values(spec)


def _values(spec: OptionSpec) -> list[Item]:
    if spec.type == "bool":
        return [Item("true", "value"), Item("false", "value")]
    return [Item(f'"{c}"' if isinstance(c, str) else str(c), "value") for c in spec.choices]


def _demo_field(req: _Request, signature: str, kinds: tuple[str, ...]) -> list[Item]:
    sig = req.program.signatures.get(signature)
    items = [Item(n, "field", show(t), d, insert=f"{n}: ") for n, t, d in (sig.inputs + sig.outputs)] if sig else []
    for k in kinds:
        spec = req.catalogue.kinds.get(k)
        for n, t, d in (spec.demo_fields or ()) if spec else ():
            items.append(Item(n, "field", show(t), d, insert=f"{n}: "))
    return items


def _lm_option(req: _Request, given: tuple[str, ...]) -> list[Item]:
    return _option_items(LM_OPTIONS, given)


def _lm_option_value(req: _Request, option: str) -> list[Item]:
    spec = LM_OPTIONS.get(option)
    return _values(spec) if spec else []


def _types(req: _Request) -> list[Item]:
    from .lsp_hover import TYPE_DOCS
    items = [Item(t, "type", "built-in type", doc) for t, doc in TYPE_DOCS.items()]
    return items + [Item(r, "record", "record") for r in req.program.records]


def _settings(req: _Request, given: tuple[str, ...]) -> list[Item]:
    specs = req.catalogue.compile_settings
    return [Item(n, "setting", s.type, s.doc, insert=f"{n} = ") for n, s in specs.items() if n not in given]


def _setting_value(req: _Request, setting: str, pipeline: str) -> list[Item]:
    spec = req.catalogue.compile_settings.get(setting)
    if spec is None:
        return []
    if spec.type == "optimizer":
        from pipec.optimizers import names        # file names only: no optimizer is imported here
        return [Item(n, "optimizer", "optimizer", data=("optimizer", n)) for n in names()]
    if spec.type == "metric":
        items = [Item(n, "metric", "metric", s.doc) for n, s in sorted(req.catalogue.metrics.items())]
        return items + [Item("python", "metric", 'python("package.module:function")')]
    if spec.type == "lm":
        return _declared(req, "lms", "lm")
    if spec.type == "budget":
        return [Item("usd", "function", "a dollar budget: usd(2.50)", insert="usd(")]
    return _values(spec)


def _function_arg(req: _Request, setting: str, callee: str, pipeline: str) -> list[Item]:
    table = req.catalogue.optimizers if setting == "optimizer" else req.catalogue.metrics if setting == "metric" else {}
    if callee not in table:
        return []
    spec = table[callee]              # an optimizer's spec imports that optimizer alone
    items = _option_items(spec.options, ())
    if spec.field_args:
        info = req.program.pipelines.get(pipeline)
        outputs = info.outputs if info else {}
        items = [Item(n, "field", show(t), "a pipeline output to score") for n, t in outputs.items()] + items
    return items


def _call_arg(req: _Request, callee: str, pipeline: str) -> list[Item]:
    prog = req.program
    params: list[tuple[str, Type, str]] = []
    if callee in prog.modules:
        sig = prog.signatures.get(prog.modules[callee].signature)
        params = list(sig.inputs) if sig else []
    elif callee in prog.tools:
        params = [(n, t, "") for n, t, _ in prog.tool_params.get(callee, [])]
    return [Item(n, "field", show(t), d, insert=f"{n}: ") for n, t, d in params] + _expr(req, pipeline)


def _expr(req: _Request, pipeline: str) -> list[Item]:
    values = [Item(n, "variable", show(t)) for n, (t, _) in req.scope().items() if n != PLACEHOLDER]
    return values + _declared(req, "modules", "module") + _declared(req, "tools", "tool") + \
        [Item("map", "keyword", "map q in xs max N { ... }")]


def _statement(req: _Request, pipeline: str) -> list[Item]:
    return [Item("return", "keyword", "return output = value, ...")]


def _pipelines(req: _Request, *args) -> list[Item]:
    return _declared(req, "pipelines", "pipeline")


def _test_arg(req: _Request, pipeline: str) -> list[Item]:
    info = req.program.pipelines.get(pipeline)
    return [Item(n, "field", show(t), insert=f"{n}: ") for n, t in (info.params if info else {}).items()]


def _test_output(req: _Request, pipeline: str) -> list[Item]:
    info = req.program.pipelines.get(pipeline)
    return [Item(n, "field", show(t)) for n, t in (info.outputs if info else {}).items()]


def _names(req: _Request, *args) -> list[Item]:
    items = []
    for table, kind in (("signatures", "signature"), ("modules", "module"), ("lms", "lm"), ("tools", "tool"),
                        ("pipelines", "pipeline")):
        items += _declared(req, table, kind)
    return items + [Item(r, "record", "record") for r in req.program.records]


_CANDIDATES: dict[str, Callable[..., list[Item]]] = {
    "keyword": _keywords, "field": _field, "kind": _kinds, "signature": _signatures, "option": _option,
    "option_value": _option_value, "demo_field": _demo_field, "lm_option": _lm_option,
    "lm_option_value": _lm_option_value, "type": _types,
    "direction": lambda req: [Item("in", "keyword", "an input field"), Item("out", "keyword", "an output field")],
    "loader": lambda req: [Item("python", "keyword", 'python("package.module:function")', insert='python("')],
    "default": lambda req: [Item("lm", "keyword")], "lm": lambda req: _declared(req, "lms", "lm"),
    "setting": _settings, "setting_value": _setting_value, "function_arg": _function_arg, "call_arg": _call_arg,
    "expr": _expr, "statement": _statement, "pipeline": _pipelines, "test_call": _pipelines, "test_arg": _test_arg,
    "test_output": _test_output, "names": _names,
}
