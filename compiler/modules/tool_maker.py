"""ToolMaker: a strong LM writes a reusable Python tool from examples; the module's LM calls it.

LLMs As Tool Makers (Cai, Wang, Ma, Chen and Zhou, 2023, "Large Language Models as Tool Makers"; see
also CRAFT, Yuan et al. 2023): a tool maker (the `make` part, on the LM named by `maker`, a strong
one) writes a Python function that solves the task in general, with one call of it per worked
example; the calls are run in `pipec.sandbox` (bubblewrap, exactly as ProgramOfThought runs code)
and the tool is kept only when every call gives the example's outputs. A tool that fails goes back
to the maker with what went wrong, at most `max_attempts` attempts in all. At run time a tool user
(the `use` part, on the module's own, cheaper LM) turns an input into one call of the tool, and the
call's return value, run in the sandbox, is the outputs.

The examples are the module's written demos (`demos: [...]`, records of the signature's fields),
which sit on the part `M.tool`. The made tool's source is that part's instruction: it is tuned
state like any instruction, so `program.params()` holds it and an artifact saved from a program
that made its tool carries it (`pipec inspect` shows it); a program loaded with a tool there never
asks the maker again. No LM is ever sent `M.tool`'s prompt. The part's instruction is pinned
against optimizers (a proposed English instruction is no tool); a tool may also be written by hand
as `parts: {tool: {instruction: "def ..."}}`. The maker's verified calls become the `use` part's
demos, unless it has demos already.

The tool is made at the first call that finds none, and kept on the module instance. When no tool
passes the examples, the call fails, or with `on_failure: "answer"` the `answer` part answers from
the inputs directly (as Predict would); no tool is kept, so a later call tries again. A tool that
fails on an input fails that call: its error says why.

Worst case per call: `max_attempts` maker calls, then one use call or one answer call, each with its
parse retry: 2 * (max_attempts + 1). When the sandbox cannot run anything here (no bubblewrap, error
type "setup") the call fails at once with the sandbox's message, like ProgramOfThought.

A call's result exposes the tool's source as `.tool` and the call run as `.call` (both "" when the
answer part answered).

.pipe:
    module convert = ToolMaker(Convert, maker: strong, max_attempts: 3, demos: [{...}, {...}])
"""
from __future__ import annotations

import ast
import asyncio
import json
from typing import Any

from ..context import CallRecord
from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type
from ..prompt import describe_type, render_value
from ..reply_parser import ReplyError
from ..sandbox import SandboxResult, run_python
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, decl_option
from .program_of_thought import MAX_MEMORY_MB, MAX_TIMEOUT, _strict, clean_code

RESERVED = ("examples", "feedback", "tool_api", "tool", "calls", "call")
_LIST_STR = Type("list", arg=STR)


def _validate(decl, program) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    timeout = decl_option(decl, "timeout")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > MAX_TIMEOUT:
        problems.append((f"option 'timeout' of ToolMaker module {decl.name} must be at most {MAX_TIMEOUT} seconds",
                         "the tool runs once per call"))
    memory = decl_option(decl, "memory_mb")
    if isinstance(memory, int) and not isinstance(memory, bool) and memory > MAX_MEMORY_MB:
        problems.append((f"option 'memory_mb' of ToolMaker module {decl.name} must be at most {MAX_MEMORY_MB}",
                         "the limit is per run of the tool, in megabytes"))
    sig = program.signatures.get(decl.signature)
    if sig is not None:
        for name, _, _ in list(sig.inputs) + list(sig.outputs):
            if name in RESERVED:
                problems.append((f"ToolMaker uses a field named '{name}' for making and calling its tool, which "
                                 f"signature {decl.signature} already has", f"rename the signature's field '{name}'"))
    return problems


def tool_api(source: str) -> str:
    """The public functions of a tool's source: their `def` lines and docstrings (what the user sees).

    >>> print(tool_api('def add(a: int, b: int) -> int:\\n    "Sum."\\n    return a + b\\ndef _h(): pass'))
    def add(a: int, b: int) -> int:
        \"\"\"Sum.\"\"\"
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            ret = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            line = f"def {node.name}({ast.unparse(node.args)}){ret}:"
            doc = ast.get_docstring(node)
            out.append(line + (f'\n    """{doc}"""' if doc else ""))
    return "\n".join(out) or source


def _expression(call: str) -> str:
    """The call as one Python expression (fences removed), or raise ValueError."""
    call = clean_code(call).strip()
    if call.startswith("result ="):
        call = call[len("result ="):].strip()
    try:
        ast.parse(call, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not one Python expression: {call[:200]!r} ({err.msg})") from None
    return call


class ToolMaker(ModuleKind):
    """A strong LM makes a Python tool from the demos (verified in the sandbox); the module's LM calls it.

    .pipe: `module convert = ToolMaker(Convert, maker: strong, max_attempts: 3, demos: [...])`
    """

    kind = "ToolMaker"
    doc = "LATM: a strong LM writes a Python tool verified on the demos; the module's LM calls it in a sandbox"
    options = {
        **COMMON_OPTIONS,
        "maker": OptionSpec("lm", "the (strong) LM that writes the tool (default: the module's LM)"),
        "max_attempts": OptionSpec("int", "how many tools the maker may write until one passes the demos (default 3)",
                                   minimum=1),
        "timeout": OptionSpec("number", "seconds one run of the tool may take (default 5)", minimum=0.1),
        "memory_mb": OptionSpec("int", "memory one run of the tool may use, in MB (default 256)", minimum=64),
        "on_failure": OptionSpec("str", "when no tool passes the demos: fail (the default) or answer (the LM "
                                 "answers directly)", choices=("fail", "answer")),
    }
    extra_outputs = (("tool", STR, "the source of the tool that computed the outputs (\"\" when the LM answered)"),
                     ("call", STR, "the call of the tool that was run (\"\" when the LM answered)"))
    validate_decl = staticmethod(_validate)
    demo_parts = ("tool",)

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.max_attempts = int(opts.get("max_attempts", 3))
        self.timeout = float(opts.get("timeout", 5))
        self.memory_mb = int(opts.get("memory_mb", 256))
        self.on_failure = opts.get("on_failure") or "fail"
        maker_lm = getattr(opts.get("maker"), "name", opts.get("maker")) or spec.lm
        task = self.instruction().strip()
        lead = task + "\n\n" if task else ""
        self.tool = self.predictor("tool", "", spec.inputs, spec.outputs)      # holds the tool; never sent
        self.make = Predictor(
            f"{spec.name}.make",
            lead + "Write a reusable Python tool for this task: one or more functions that solve every instance of "
            "it, not only the examples. Use only the standard library; the tool cannot read files, use the network "
            f"or start programs, and one call must finish within {self.timeout:g} seconds. Then write one Python "
            "call of the tool per example, in the examples' order, whose value is that example's outputs "
            + self._shape() + ". When feedback on an earlier tool is given, fix what it says.",
            [("examples", STR, "the worked examples: inputs and the expected outputs"),
             ("feedback", STR, "what was wrong with the last tool written, or (none)")],
            [("tool", STR, "the Python source of the tool's functions, with a docstring each"),
             ("calls", _LIST_STR, "one Python expression calling the tool per example, e.g. solve(3, 14)")],
            maker_lm, self.sampling_on(maker_lm))
        self.use = self.predictor(
            "use",
            lead + "A Python tool solves this task. Write one Python expression that calls it with the arguments "
            "this input gives, e.g. solve(3, 14). Write only the call.",
            list(spec.inputs) + [("tool_api", STR, "the tool's functions")],
            [("call", STR, "one Python expression calling the tool")])
        self.answer = self.predictor("answer", self.instruction(), spec.inputs, spec.outputs)

    def install_written(self) -> None:
        super().install_written()
        self.tool.pinned = self.tool.pinned | {"instruction"}

    def _shape(self) -> str:
        outs = self.spec.outputs
        if len(outs) == 1:
            n, t, d = outs[0]
            return f"({n}: {d + ', ' if d else ''}{describe_type(t)})"
        return "(a dict with the keys " + "; ".join(f'"{n}": {describe_type(t)}' for n, t, _ in outs) + ")"

    # ------------------------------------------------------------------ the kind's contract
    def predictors(self):
        return [self.tool, self.make, self.use] + ([self.answer] if self.on_failure == "answer" else [])

    def max_calls(self) -> int:
        """`max_attempts` maker calls, then a use call or an answer call (never both), each with its retry."""
        return 2 * (self.max_attempts + 1)

    async def forward(self, values, ctx):
        source = self.tool.instruction.strip()
        if not source:
            source, why = await self._make_tool(ctx)
            if not source:
                if self.on_failure == "answer":
                    return {**await self.answer(values, ctx), "tool": "", "call": ""}
                raise ModuleFailure(why)
        reply = await self.use({**values, "tool_api": tool_api(source)}, ctx)
        try:
            call = _expression(str(reply.get("call") or ""))
        except ValueError as err:
            raise ModuleFailure(f"the tool's call could not be run: {err}", raw=str(reply.get("call"))) from None
        run = await self._run(f"{source}\n\nresult = {call}", ctx)
        if run.error_type == "setup" or not run.ok:
            raise ModuleFailure(f"the tool failed on this input: {run.error}", raw=call)
        fitted = self._fit(run.value)
        if fitted is None:
            raise ModuleFailure(f"the tool returned {_brief(run.value)}, not the outputs {self._shape()}", raw=call)
        return {**fitted, "tool": source, "call": call}

    # ------------------------------------------------------------------ making the tool
    def _examples(self) -> list[dict[str, Any]]:
        p = self.tool
        return list(p.knn.demos) if p.knn is not None else list(p.demos)

    async def _make_tool(self, ctx) -> tuple[str, str]:
        """(a tool that passed every example, "") or ("", why none did)."""
        examples = self._examples()
        if not examples:
            return "", (f"ToolMaker module {self.name} has no examples to make its tool from: write demos: [...] "
                        "on it (records of the signature's fields)")
        shown = "\n\n".join(f"Example {i}:\n" + "\n".join(f"{n}: {render_value(d.get(n))}" for n, _, _ in
                                                       self.spec.inputs + self.spec.outputs)
                            for i, d in enumerate(examples, 1))
        feedback, why = "(none)", ""
        for _ in range(self.max_attempts):
            try:
                reply = await self.make({"examples": shown, "feedback": feedback}, ctx)
            except ModuleFailure as err:
                why = f"the maker's reply could not be read: {err}"
                feedback = why
                continue
            source = clean_code(str(reply.get("tool") or ""))
            calls = reply.get("calls") or []
            why = await self._verify(source, calls, examples, ctx)
            if not why:
                self.tool.set_params(instruction=source, knn=self.tool.knn)
                if not self.use.demos and "demos" not in self.use.pinned:
                    api = tool_api(source)
                    self.use.set_params(demos=[{**{n: d.get(n) for n, _, _ in self.spec.inputs}, "tool_api": api,
                                                "call": _expression(c)} for d, c in zip(examples, calls)])
                return source, ""
            if why.startswith("setup:"):
                raise ModuleFailure(why[len("setup:"):].strip(), raw=source)
            feedback = f"The last tool was:\n{source[:3000]}\nIt was wrong: {why}"
        return "", f"no tool passed the examples after {self.max_attempts} attempt(s): {why}"

    async def _verify(self, source: str, calls: list, examples: list[dict[str, Any]], ctx) -> str:
        """"" when every example's call gives its outputs; else what went wrong."""
        if not source.strip():
            return "the reply contained no tool"
        if len(calls) != len(examples):
            return f"{len(calls)} calls for {len(examples)} examples: write exactly one call per example"
        try:
            exprs = [_expression(str(c)) for c in calls]
        except ValueError as err:
            return f"a call is {err}"
        run = await self._run(source + "\n\nresult = [" + ",\n    ".join(exprs) + "]", ctx)
        if run.error_type == "setup":
            return "setup: " + run.error
        if not run.ok:
            return run.error
        if not isinstance(run.value, list) or len(run.value) != len(examples):
            return "the calls did not give one value each"
        for i, (value, example, expr) in enumerate(zip(run.value, examples, exprs), 1):
            got = self._fit(value)
            want = {n: example.get(n) for n, _, _ in self.spec.outputs}
            if got != want:
                return f"example {i}: {expr} gave {_brief(value)}, expected {_brief(want if len(want) > 1 else next(iter(want.values())))}"
        return ""

    # ------------------------------------------------------------------ running
    async def _run(self, code: str, ctx) -> SandboxResult:
        if ctx.row.inline:
            run = run_python(code, {}, self.timeout, self.memory_mb)
        else:
            run = await asyncio.to_thread(run_python, code, {}, self.timeout, self.memory_mb)
        rec = CallRecord(ctx.node_id, self.spec.name, f"{self.spec.name}.sandbox", "tool:python-sandbox",
                         [{"role": "tool", "content": code}])
        rec.raw = json.dumps({"ok": run.ok, "value": run.value, "stdout": run.stdout[-2000:], "error": run.error,
                              "error_type": run.error_type, "duration_s": round(run.duration, 3)},
                             default=str, ensure_ascii=False)
        rec.error = run.error or None
        rec.latency_ms = run.duration * 1000.0
        ctx.row.trace.append(rec)
        return run

    def _fit(self, value: Any) -> dict[str, Any] | None:
        outs = self.spec.outputs
        try:
            if isinstance(value, dict) and all(n in value for n, _, _ in outs):
                return {n: _strict(value[n], t) for n, t, _ in outs}
            if len(outs) == 1:
                n, t, _ = outs[0]
                return {n: _strict(value, t)}
        except ReplyError:
            return None
        return None


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
