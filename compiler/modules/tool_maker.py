"""ToolMaker: a strong LM writes a reusable Python tool from examples; the module's LM calls it.

LLMs As Tool Makers (Cai, Wang, Ma, Chen and Zhou, 2023, "Large Language Models as Tool Makers"; see
also CRAFT, Yuan et al. 2023): a tool maker (the `make` part, on the LM named by `maker`, a strong
one) writes a Python function that solves the task in general, with one call of it per worked
example; the calls are run in `pipec.sandbox` (bubblewrap, exactly as ProgramOfThought runs code)
and the tool is kept only when every call gives the example's outputs. A tool that fails goes back
to the maker with what went wrong, at most `max_attempts` attempts in all. At run time a tool user
(the `use` part, on the module's own, cheaper LM) turns an input into one call of the tool, and the
call's return value, run in the sandbox, is the outputs.

Made at compile time. `pipec compile` makes the tool once, before the uncompiled program is scored
(`ModuleKind.prepare`, `pipec.prepare`): the maker is shown the written demos and the compile's
training rows that label the module's fields (its inputs taken straight from pipeline inputs, its
outputs returned as pipeline outputs), in a seeded order, minus a held-out third of those rows (at
most `MAX_HELD_OUT`; at most `MAX_SHOWN` shown). A tool must first give every shown example its
outputs through the maker's own calls, then every held-out row its outputs as a run would get them:
the `use` part writes the call, the sandbox runs it. The held-out rows never reach the maker's
prompt: a tool that fails them goes back with how many failed and how (a wrong value, TypeError),
never which (each attempt costs the compile its maker call and one use call per held-out row, each
with its parse retry). The valset is not used: it stays an honest score of the compiled program.
With fewer than two training rows nothing is held out, and the tool is checked on the examples it was
made from.
The compile fails when no tool passes after `max_attempts` (saying why), unless `on_failure:
"answer"`: then the tool's source is a comment (`NO_TOOL` and why) and the compiled module answers
directly. The tool is pinned for the whole compile (every candidate, the teacher and the compiled
program use it, no optimizer proposes an instruction for it), and so are the maker's parts; the
maker's verified calls become the `use` part's demos (the uncompiled ones: an optimizer may tune
them), unless it has demos already.

The tool's source is the `M.tool` part's instruction: it is tuned state like any instruction, so
`program.params()` holds it and the artifact carries it; a program loaded with a tool never asks
the maker, and its bound is the use call's: 2. No LM is ever sent `M.tool`'s prompt: `pipec
inspect` and the report show it as code (`code()`). Code in an artifact was written by whoever made
the file: running an artifact not compiled on this machine needs approval of it (`--allow
code:M.tool`, `--trust` or `pipec trust`; see `pipec.trust`), and it always runs in the sandbox. A
tool may also be written by hand as `parts: {tool: {instruction: "def ..."}}`.

Made at run time, uncompiled. A program run from its .pipe file makes the tool from the written demos
(`demos: [...]`, records of the signature's fields, on the part `M.tool`) at the first call that
finds none, and keeps it on the module instance; rows of a batch that find none at the same time wait
for that one making (a lock shared by asyncio tasks and threads), so the maker is asked once. When no
tool passes the examples, the call fails, or with `on_failure: "answer"` the `answer` part answers from
the inputs directly (as Predict would); no tool is kept, so a later call tries again. A tool that
fails on an input fails that call: its error says why.

Worst case per call without a tool: `max_attempts` maker calls, then one use call or one answer call,
each with its parse retry: 2 * (max_attempts + 1); with one, 2. When the sandbox cannot run anything
here (no bubblewrap, error type "setup") the call fails at once with the sandbox's message, like
ProgramOfThought.

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

from ..aio import SharedLock
from ..context import CallRecord
from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type
from ..prompt import describe_type, render_value, user_message
from ..reply_parser import ReplyError
from ..sandbox import SandboxResult, run_python
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor, decl_option, settle
from .program_of_thought import MAX_MEMORY_MB, MAX_TIMEOUT, _strict, clean_code

RESERVED = ("examples", "feedback", "tool_api", "tool", "calls", "call")
# The tool's source when the compile found no tool and `on_failure: "answer"` answers instead: a comment,
# so the artifact says why, and a run never asks the maker again.
NO_TOOL = "# no tool: "
MAX_SHOWN = 12          # training examples a compile shows the maker (its prompt stays short)
MAX_HELD_OUT = 20       # held-out rows a compile checks each tool on
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
        # Rows that find no tool at once wait for one making of it instead of each asking the maker.
        self._making = SharedLock()
        self._tries = 0                 # makings finished on this instance (a waiter knows one ended)
        self._last_why = ""
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
        """Without a tool: `max_attempts` maker calls, then a use call or an answer call (never both),
        each with its retry. With one (compiled, or written): the use call alone, or the answer call
        when the compile found none (`NO_TOOL`)."""
        return 2 if self.tool.instruction.strip() else 2 * (self.max_attempts + 1)

    def max_calls_prepared(self) -> int:
        """A compile makes the tool before anything is scored (or, with `on_failure: "answer"`, finds
        none and answers directly), so its programs make the use call or the answer call alone."""
        return 2

    def code(self) -> dict[str, str]:
        source = self.tool.instruction.strip()
        return {self.tool.name: source} if source and not source.startswith(NO_TOOL) else {}

    async def prepare(self, examples, ctx) -> None:
        """Make the tool at compile time: from the written demos and the first two thirds of the
        training rows (at most `MAX_SHOWN` shown), verified on those and then on the last third (at
        most `MAX_HELD_OUT`), which the maker never sees; a tool written by hand is kept as it is."""
        source = self.tool.instruction.strip()
        if not source:
            held = min(MAX_HELD_OUT, (len(examples) + 2) // 3) if len(examples) >= 2 else 0
            shown, held_out = examples[:len(examples) - held][:MAX_SHOWN], examples[len(examples) - held:]
            source, why = await self._make_tool(ctx, self._examples() + shown, held_out)
        if not source:
            if self.on_failure != "answer":
                raise ModuleFailure(f"ToolMaker module {self.name} could not make its tool at compile time: {why} "
                                    '(a stronger maker, more max_attempts, or on_failure: "answer" would help)')
            self.tool.set_params(instruction=NO_TOOL + " ".join(why.split()), knn=self.tool.knn)
        # A run of the compiled program never asks the maker, and asks the answer part only without a tool:
        # nothing an optimizer tunes on them could change what it does.
        for p in (self.make,) if not source or source.startswith(NO_TOOL) else (self.make, self.answer):
            p.pinned = p.pinned | {"instruction", "demos"}

    async def forward(self, values, ctx):
        source = self.tool.instruction.strip()
        if not source:
            source, why = await self._tool_once(ctx)
            if not source:
                if self.on_failure == "answer":
                    return {**await self.answer(values, ctx), "tool": "", "call": ""}
                raise ModuleFailure(why)
        if source.startswith(NO_TOOL):
            if self.on_failure == "answer":
                return {**await self.answer(values, ctx), "tool": "", "call": ""}
            raise ModuleFailure(source[len(NO_TOOL):])
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

    async def _tool_once(self, ctx) -> tuple[str, str]:
        """The tool, made by this call unless another row is making it (then that one's result)."""
        seen = self._tries
        async with self._making.held(ctx.row.inline):
            source = self.tool.instruction.strip()
            if source or self._tries != seen:
                return source, self._last_why           # made, or tried and failed, while this row waited
            why = "the tool could not be made"
            try:
                source, why = await self._make_tool(ctx)
            except ModuleFailure as err:
                why = str(err)
                raise
            finally:
                self._tries += 1
                self._last_why = why
            return source, why

    async def _make_tool(self, ctx, examples: list[dict[str, Any]] | None = None,
                         held_out: list[dict[str, Any]] = ()) -> tuple[str, str]:
        """(a tool that passed every example, and every held-out row, "") or ("", why none did). The
        maker is shown `examples` (default: the written demos), never `held_out`."""
        examples = self._examples() if examples is None else examples
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
            if not why and held_out:
                why, feedback = await self._verify_held_out(source, calls, examples, held_out, ctx)
                if why:
                    continue
            if not why:
                self.tool.set_params(instruction=source, knn=self.tool.knn)
                if not self.use.demos and "demos" not in self.use.pinned:
                    self.use.set_params(demos=self._use_demos(source, calls, examples))
                return source, ""
            if why.startswith("setup:"):
                raise ModuleFailure(why[len("setup:"):].strip(), raw=source)
            feedback = f"The last tool was:\n{source[:3000]}\nIt was wrong: {why}"
        return "", f"no tool passed the examples after {self.max_attempts} attempt(s): {why}"

    def _use_demos(self, source: str, calls: list, examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The maker's verified calls as the use part's demos: how an input becomes a call."""
        api = tool_api(source)
        return [{**{n: d.get(n) for n, _, _ in self.spec.inputs}, "tool_api": api, "call": _expression(c)}
                for d, c in zip(examples, calls)]

    async def _verify_held_out(self, source: str, calls: list, examples: list[dict[str, Any]],
                               held_out: list[dict[str, Any]], ctx) -> tuple[str, str]:
        """("", "") when the tool, called as a run calls it (the use part writes the call, the sandbox
        runs it), gives every held-out row its outputs; else (why, feedback for the maker). The
        feedback names how many rows failed and how, never a row's content: the maker must not see them."""
        demos = self.use.demos if self.use.demos or "demos" in self.use.pinned else \
            self._use_demos(source, calls, examples)
        prefix = self.use.prefix_for(demos)
        api = tool_api(source)

        async def one(row: dict[str, Any]) -> str:
            values = {**{n: row.get(n) for n, _, _ in self.spec.inputs}, "tool_api": api}
            messages = prefix + [{"role": "user", "content": user_message(self.use.inputs, values)}]
            reply = await self.use(values, ctx, messages=messages)
            try:
                call = _expression(str(reply.get("call") or ""))
            except ValueError:
                return "a call that was not one Python expression"
            run = await self._run(f"{source}\n\nresult = {call}", ctx)
            if run.error_type == "setup":
                return "setup: " + run.error
            if not run.ok:
                return _failure_kind(run)
            want = {n: row.get(n) for n, _, _ in self.spec.outputs}
            return "" if self._fit(run.value) == want else "a wrong value"

        results = await ctx.gather(*(settle(one(row)) for row in held_out))
        results = [f"a call the LM could not write ({r})" if isinstance(r, Exception) else r for r in results]
        setup = next((r for r in results if r.startswith("setup:")), None)
        if setup:
            raise ModuleFailure(setup[len("setup:"):].strip(), raw=source)
        failed = [r for r in results if r]
        if not failed:
            return "", ""
        kinds = ", ".join(dict.fromkeys(r.split(" (")[0] for r in failed))
        why = f"the tool was right on the examples but wrong on {len(failed)} of {len(held_out)} held-out rows ({kinds})"
        feedback = (f"The last tool was:\n{source[:3000]}\nIt gave every example above its outputs, but on "
                    f"{len(failed)} of {len(held_out)} other instances of the task, which you are not shown, it gave "
                    f"{kinds}. Make it solve every instance of the task, not only the examples.")
        return why, feedback

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


def _failure_kind(run: SandboxResult) -> str:
    """How a run failed, without its message (which may quote the input): "TypeError", "a timeout"."""
    if run.error_type == "exception":
        name = run.error.split(":", 1)[0].strip()
        if name.replace(".", "").replace("_", "").isalnum():
            return name
        return "an exception"
    return {"timeout": "a timeout", "memory": "too much memory", "syntax": "a syntax error",
            "output": "too much output"}.get(run.error_type, "a crash")


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
