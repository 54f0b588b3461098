"""ProgramOfThought: the LM writes a Python program, a sandbox runs it, the result is the answer.

Program of Thoughts prompting (Chen, Ma, Wang and Cohen, 2022, "Program of Thoughts Prompting:
Disentangling Computation from Reasoning for Numerical Reasoning Tasks") lets the model express
its reasoning as program statements and leaves the computation to a Python interpreter. Failed
runs are repaired by self-debugging (Chen, Lin, Schärli and Zhou, 2023, "Teaching Large Language
Models to Self-Debug"): the program and what went wrong (the exception with its line, a timeout,
running out of memory, a refused escape, a missing result or one of the wrong shape, a reply with no
readable program) go back to the model, which explains the
mistake and writes a corrected program, at most `max_fixes` times.

The program runs in `pipec.sandbox` (a separate, resource-limited, offline process behind an OS
boundary, bubblewrap: see there). Its inputs are already Python variables; it leaves its answer in
`result` (a last line that is a bare expression, variables named like the outputs, or printed text
are accepted too).

How the outputs are read from the program's result (`extract`):

* "auto" (the default): when the result already fits the outputs (a number for a numeric output,
  a dict with every output field for several), it is taken as is; otherwise one more predictor
  call (`<module>.answer`) reads the inputs, the program and its result and gives the outputs.
* "program": the result must fit; a result of the wrong shape is an error fed back for a fix.
* "lm": the answer predictor always gives the outputs (as DSPy's ProgramOfThought does).

Why "auto": asking every program to print a JSON object with exact keys and types is brittle for
a 135M model (and needs code for text and enum outputs that a program has no business computing),
while always adding an LM call to copy the result costs every input one more call on big models
and lets a small model miscopy or "re-reason" the exact number the program computed, which undoes
the point of PoT. Taking a fitting result directly keeps computed numbers exact and calls free;
the answer predictor is the fallback for everything else, so no input fails for its shape alone.

When the program still fails after its fixes, the call fails (a recorded failure, like any
module's), or with `on_failure: "answer"` the answer predictor answers, shown the last program and
its error: a fallback for small models that often write invalid Python.

When the sandbox cannot run anything here (no bubblewrap, or no user namespaces: error_type
"setup"), the call fails at once with the sandbox's message, which names what to install. That is
no fault of the program, so it is neither sent back for a fix nor answered around. Only the user's
environment can choose the weaker sandbox (PIPEC_SANDBOX=process); no module option can.

A call's result exposes the final program as `.code`.

.pipe:
    module solve = ProgramOfThought(WordProblem, max_fixes: 2, timeout: 5, memory_mb: 256)
    ...
    s = solve(question: question)        # s.answer, s.code
"""
from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from ..context import CallRecord
from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type
from ..prompt import describe_type
from ..reply_parser import ReplyError, coerce
from ..sandbox import SandboxResult, run_python
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, decl_option

CODE_DOC = "the last Python program written (the one whose result gave the outputs, unless every attempt failed)"
MAX_TIMEOUT = 300
MAX_MEMORY_MB = 16384
# Names of the inner predictors' own fields: a signature using them would mix them up in demos.
RESERVED_INPUTS = ("failed_code", "execution_error", "diagnosis", "program_output")
RESERVED_OUTPUTS = ("failed_code", "execution_error", "program_output")
_NUMBER_ONLY = re.compile(r"^\s*[-+]?(\d[\d,]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")
_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_+-]*[ \t]*\n(.*?)\n?```\s*$", re.S)


def _validate(decl, program) -> list[tuple[str, str]]:
    """Static checks beyond option types: sane upper bounds, and no clash with inner field names."""
    problems: list[tuple[str, str]] = []
    timeout = decl_option(decl, "timeout")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > MAX_TIMEOUT:
        problems.append((f"option 'timeout' of ProgramOfThought module {decl.name} must be at most {MAX_TIMEOUT} seconds",
                         "the program runs once per attempt; a long computation belongs in a tool"))
    memory = decl_option(decl, "memory_mb")
    if isinstance(memory, int) and not isinstance(memory, bool) and memory > MAX_MEMORY_MB:
        problems.append((f"option 'memory_mb' of ProgramOfThought module {decl.name} must be at most {MAX_MEMORY_MB}",
                         "the limit is per run of the program, in megabytes"))
    sig = program.signatures.get(decl.signature)
    if sig is not None:
        for name, _, _ in sig.inputs:
            if name in RESERVED_INPUTS:
                problems.append((f"ProgramOfThought uses an input named '{name}' for fixing programs, which signature "
                                 f"{decl.signature} already has", f"rename the signature's field '{name}'"))
        for name, _, _ in sig.outputs:
            if name in RESERVED_OUTPUTS:
                problems.append((f"ProgramOfThought uses a field named '{name}' for fixing programs, which signature "
                                 f"{decl.signature} already has as an output", f"rename the signature's field '{name}'"))
    return problems


def clean_code(text: str) -> str:
    """The program inside a reply: code fences removed; a one-line program whose newlines came
    back escaped (`\\n`) is unescaped when only that makes it valid Python."""
    code = (text or "").strip("\n")
    m = _FENCE.match(code)
    if m:
        code = m.group(1)
    elif code.lstrip().startswith("```"):
        code = re.sub(r"^\s*```[a-zA-Z0-9_+-]*[ \t]*\n?", "", code).rstrip().removesuffix("```")
    if "\n" not in code and "\\n" in code:
        try:
            compile(code, "<program>", "exec")
        except SyntaxError:
            unescaped = code.replace("\\n", "\n").replace("\\t", "\t")
            try:
                compile(unescaped, "<program>", "exec")
                code = unescaped
            except SyntaxError:
                pass
    return code.strip("\n")


def _strict(value: Any, t: Type) -> Any:
    """`value` as type `t` when it plainly is one (raise ReplyError otherwise): stricter than the
    reply parser, since a program's text like "x = 3, y = 4" must not become the number 3."""
    if value is None:
        if t.optional:
            return None
        raise ReplyError("null")
    k = t.kind
    if k in ("int", "float"):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or
                                           (isinstance(value, str) and _NUMBER_ONLY.match(value))):
            raise ReplyError("not a number")
        if isinstance(value, float) and value != value:
            raise ReplyError("NaN")
        return coerce(value, t)
    if k == "bool":
        if not isinstance(value, bool):
            raise ReplyError("not a boolean")
        return value
    if k == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ReplyError("not text")
        return coerce(value, t)
    if k == "enum":
        if not isinstance(value, str):
            raise ReplyError("not a label")
        return coerce(value, t)
    if k == "list":
        if not isinstance(value, list):
            raise ReplyError("not a list")
        return [_strict(x, t.arg) for x in value] if t.arg is not None else list(value)
    if k == "record":
        if not isinstance(value, dict):
            raise ReplyError("not an object")
        return coerce(value, t)
    return coerce(value, t)


class ProgramOfThought(ModuleKind):
    """Write a program, run it in a sandbox, fix it from its errors, read the outputs from its result.

    .pipe: `module solve = ProgramOfThought(WordProblem, max_fixes: 2, timeout: 5, memory_mb: 256)`
    """

    kind = "ProgramOfThought"
    doc = "the LM writes Python that computes the outputs; a sandbox runs it; errors are fed back for fixes"
    options = {
        **COMMON_OPTIONS,
        "max_fixes": OptionSpec("int", "how many times a failing program is sent back to be fixed (default 2)",
                                minimum=0),
        "timeout": OptionSpec("number", "seconds one run of the program may take (default 5)", minimum=0.1),
        "memory_mb": OptionSpec("int", "memory one run of the program may use, in MB (default 256)", minimum=64),
        "extract": OptionSpec("str", "how outputs are read from the result: auto (take a fitting result, else "
                              "ask the LM), program (the result must fit), lm (always ask the LM); default auto",
                              choices=("auto", "program", "lm")),
        "on_failure": OptionSpec("str", "when the program still fails after its fixes: fail (the call fails; the "
                                 "default) or answer (the LM answers, shown the program and its error)",
                                 choices=("fail", "answer")),
    }
    extra_outputs = (("code", STR, CODE_DOC),)
    validate_decl = staticmethod(_validate)

    def __init__(self, spec):
        super().__init__(spec)
        opts = spec.options
        self.max_fixes = int(opts.get("max_fixes", 2))
        self.timeout = float(opts.get("timeout", 5))
        self.memory_mb = int(opts.get("memory_mb", 256))
        self.extract = opts.get("extract") or "auto"
        self.on_failure = opts.get("on_failure") or "fail"
        task = self.instruction().strip()
        rules = self._rules()
        code_field = ("code", STR, "a complete Python program that stores the answer in the variable `result`")
        # The example shows small models how a multi-line program sits in a JSON string.
        self.generate = self.predictor(
            "generate",
            (task + "\n\n" if task else "") + "Write a Python program that computes the answer. " + rules
            + '\n\nExample of the reply format: {"code": "price = 5\\ncount = 4\\nresult = price * count"}',
            spec.inputs, [code_field])
        self.fix = self.predictor(
            "fix",
            (task + "\n\n" if task else "") + "A Python program written to compute the answer failed when it ran. "
            "Say what went wrong, then write a corrected complete program. " + rules,
            list(spec.inputs) + [("failed_code", STR, "the program that failed"),
                                 ("execution_error", STR, "what happened when it ran")],
            [("diagnosis", STR, "what went wrong and how to fix it, in one sentence"),
             ("code", STR, "the corrected complete program, which stores the answer in `result`")])
        self.answer = self.predictor(
            "answer",
            (task + "\n\n" if task else "") + "A Python program was written and run to compute the answer; what it "
            "computed (or the error it ended with) is shown below. Give the outputs. When the program ran, trust its "
            "computed values over your own arithmetic.",
            list(spec.inputs) + [("code", STR, "the program that was run"),
                                 ("program_output", STR, "what the program computed")],
            spec.outputs)

    # ------------------------------------------------------------------ prompts
    def _rules(self) -> str:
        names = [n for n, _, _ in self.spec.inputs]
        given = ("The inputs are already defined as Python variables: " + ", ".join(names) + ". ") if names else ""
        outs = self.spec.outputs
        if len(outs) == 1:
            n, t, d = outs[0]
            shape = f"Store the answer ({n}: {d + ', ' if d else ''}{describe_type(t)}) in a variable named `result`."
        else:
            keys = "; ".join(f'"{n}": {d + ", " if d else ""}{describe_type(t)}' for n, t, d in outs)
            shape = f"Store the answer in a variable named `result` as a dict with the keys {keys}."
        return (given + shape + " Use only the standard library (math is already imported); the program cannot "
                f"read files, use the network or start other programs, and must finish within {self.timeout:g} seconds.")

    # ------------------------------------------------------------------ the kind's contract
    def predictors(self):
        preds = [self.generate]
        if self.max_fixes > 0:
            preds.append(self.fix)
        if self._answers():
            preds.append(self.answer)
        return preds

    def _answers(self) -> bool:
        """Whether the answer predictor can be called at all."""
        return self.extract != "program" or self.on_failure == "answer"

    def max_calls(self) -> int:
        """generate, then up to `max_fixes` fixes, then at most one answer call (reading a result
        that does not fit, or answering after the last fix failed, never both); each predictor call
        may retry once on an unparseable reply."""
        return 2 * (1 + self.max_fixes + self._answers())

    async def forward(self, values, ctx):
        code, error = await self._write(self.generate, values, ctx)
        attempt = 0
        outputs, shown = None, ""
        while True:
            if not error:
                run = await self._execute(code, values, ctx)
                if run.error_type == "setup":       # no sandbox to run it in: not the program's fault
                    self._note(ctx, code, run, run.error)
                    raise ModuleFailure(run.error, raw=code)
                outputs, shown, error = self._read(run)
                self._note(ctx, code, run, error)
                if not error:
                    break
            if attempt >= self.max_fixes:
                fixes = f"{self.max_fixes} fix{'es' * (self.max_fixes != 1)}"
                if self.on_failure != "answer":
                    raise ModuleFailure(f"the program still failed after {fixes}: {error}", raw=code)
                outputs, shown = None, f"the program failed (after {fixes}): {error}"
                break
            attempt += 1
            fixed, problem = await self._write(self.fix, {**values, "failed_code": code, "execution_error": error}, ctx)
            if problem:          # no readable program in the reply: the next fix sees the same program again
                error = f"{error}\n(The last reply with a fix could not be read: {problem})"
            else:
                code, error = fixed, ""
        if outputs is None:
            outputs = await self.answer({**values, "code": code, "program_output": shown}, ctx)
        return {**outputs, "code": code}

    @staticmethod
    async def _write(predictor, values: dict[str, Any], ctx) -> tuple[str, str]:
        """Ask for a program: (code, "") or ("", why there is none). A reply that does not parse even
        after its retry is one more failure for self-debugging to handle, not the end of the call."""
        try:
            reply = await predictor(values, ctx)
        except ModuleFailure as err:
            return "", f"the reply could not be read as a program: {err}"
        code = clean_code(str(reply.get("code") or ""))
        return (code, "") if code.strip() else ("", "the reply contained no program")

    # ------------------------------------------------------------------ running and reading
    async def _execute(self, code: str, values: dict[str, Any], ctx) -> SandboxResult:
        inputs = json.loads(json.dumps(values, default=str))
        capture = [n for n, _, _ in self.spec.outputs]
        if ctx.row.inline:
            return run_python(code, inputs, self.timeout, self.memory_mb, capture=capture)
        return await asyncio.to_thread(run_python, code, inputs, self.timeout, self.memory_mb, capture=capture)

    def _read(self, run: SandboxResult) -> tuple[dict[str, Any] | None, str, str]:
        """(outputs taken directly or None, the result as shown to the answer predictor, error)."""
        if not run.ok:
            error = run.error
            if run.stdout.strip():
                error += "\nIt printed before failing:\n" + run.stdout.strip()[-600:]
            return None, "", error
        found, value = self._value(run)
        if not found:
            return None, "", ("the program ran but left no result: store the answer in a variable named `result`"
                              + (f"; it printed: {run.stdout.strip()[:300]}" if run.stdout.strip() else ""))
        shown = self._show(value, run)
        if self.extract == "lm":
            return None, shown, ""
        fitted = self._fit(value)
        if fitted is not None:
            return fitted, shown, ""
        if self.extract == "program":
            return None, shown, f"the result has the wrong shape: {self._expected()}; got {_brief(value)}"
        return None, shown, ""

    def _value(self, run: SandboxResult) -> tuple[bool, Any]:
        """The program's answer: `result` (or its last expression), else variables named like the
        outputs, else what it printed (its last line as JSON or a number when it reads as one)."""
        if run.has_value:
            return True, run.value
        names = [n for n, _, _ in self.spec.outputs]
        if len(names) == 1 and names[0] in run.variables:
            return True, run.variables[names[0]]
        if len(names) > 1 and all(n in run.variables for n in names):
            return True, {n: run.variables[n] for n in names}
        text = run.stdout.strip()
        if not text:
            return False, None
        last = text.splitlines()[-1].strip()
        for candidate in (text, last):
            try:
                return True, json.loads(candidate)
            except ValueError:
                pass
        return True, text

    def _fit(self, value: Any) -> dict[str, Any] | None:
        outs = self.spec.outputs
        if isinstance(value, dict):
            by_norm = {str(k).strip().lower(): v for k, v in value.items()}
            if all(n.lower() in by_norm for n, _, _ in outs):
                try:
                    return {n: _strict(by_norm[n.lower()], t) for n, t, _ in outs}
                except ReplyError:
                    return None
        if len(outs) == 1:
            n, t, _ = outs[0]
            try:
                return {n: _strict(value, t)}
            except ReplyError:
                return None
        return None

    def _expected(self) -> str:
        outs = self.spec.outputs
        if len(outs) == 1:
            return f"`result` must be {describe_type(outs[0][1])}"
        return "`result` must be a dict with the keys " + ", ".join(
            f'"{n}" ({describe_type(t)})' for n, t, _ in outs)

    @staticmethod
    def _show(value: Any, run: SandboxResult) -> str:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        shown = f"result = {text[:2000]}"
        printed = run.stdout.strip()
        if printed and printed != text:
            shown += "\nprinted:\n" + printed[-1000:]
        return shown

    def _note(self, ctx, code: str, run: SandboxResult, error: str) -> None:
        """Trace the run like a tool call (not counted as an LM call)."""
        rec = CallRecord(ctx.node_id, self.spec.name, f"{self.spec.name}.sandbox", "tool:python-sandbox",
                         [{"role": "tool", "content": code}])
        rec.raw = json.dumps({"ok": run.ok, "value": run.value, "stdout": run.stdout[-2000:],
                              "error": run.error, "error_type": run.error_type,
                              "duration_s": round(run.duration, 3)}, default=str, ensure_ascii=False)
        rec.error = error or None
        rec.latency_ms = run.duration * 1000.0
        ctx.row.trace.append(rec)


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
