"""ReAct: interleaved reasoning and acting over declared tools (Yao et al., 2022, "ReAct: Synergizing
Reasoning and Acting in Language Models", arXiv:2210.03629), in the shape of DSPy's `dspy.ReAct`.

Each step is one call of the `module.react` predictor. Its reply has a `thought`, an `action` (one of
the tools named in `tools`, or `finish`) and an `action_input` (the tool's arguments: an object keyed
by parameter name, or a plain string for a tool that takes one parameter). The tool runs and its
result, or its error text (a failing tool is an observation, not a crash), is appended to the
trajectory that the next step reads:

    Thought 1: I need the year Eiffel was born.
    Action 1: search
    Action input 1: Gustave Eiffel born
    Observation 1: ["Gustave Eiffel was born in Dijon, France, in 1832."]

`finish`, or reaching `max_steps`, ends the loop; then the `module.extract` predictor reads the inputs
and the trajectory and produces the signature's outputs (as DSPy does). A step whose reply cannot be
used even after the retry also ends the loop (as in DSPy): the extract answers from what was gathered.
The call result exposes the trajectory as `.trajectory`.

Tools: each tool in `tools` must be fillable from the model's `action_input`:
- a tool with a declared signature (`tool search(query: str) -> list[str] = python(...)`) is filled
  from an object by parameter name (values coerced to the declared types), or from a plain string
  when it has exactly one parameter; the reply schema constrains `action_input` to those shapes;
- a tool without one (`tool search = python(...)`) is accepted only if its Python function takes
  exactly one parameter without a default (checked statically by reading its source, as `pipec check`
  does for every tool, without importing it); the string goes to that parameter, and an object may name the function's parameters.
Arguments that do not fit (a missing parameter, an unknown name, a value of the wrong type) become an
error observation too, so the model can correct itself at the next step.

.pipe:
    tool search(query: str) -> list[str] = python("examples.corpus:search")
    tool calculate(expression: str) -> float = python("examples.tools:calculate")
    module agent = ReAct(Answer, tools: [search, calculate], max_steps: 5)
    ... r = agent(question: q) ... r.answer, r.trajectory
"""
from __future__ import annotations

from typing import Any

from ..dsl import ast as A
from ..dsl.catalogue import OptionSpec
from ..dsl.types import STR, Type
from ..schema import type_schema
from .base import COMMON_OPTIONS, ModuleFailure, ModuleKind, Predictor
from .tool_use import (
    Param,
    call_args,
    call_keys,
    fill_args,
    observe,
    python_params,
    shown_input,
    tool_params,
    tool_signature,
    undeclared_problem,
)

FINISH = "finish"
DEFAULT_MAX_STEPS = 5
STEP_FIELDS = ("thought", "action", "action_input")

# ---------------------------------------------------------------------------- static checks
def validate_react(decl: A.ModuleDecl, prog) -> list[tuple[str, str]]:
    """`tools` is given, names each tool once, avoids `finish`, and every tool can be filled from the
    model's action input; signature inputs do not shadow the step's reply fields."""
    out: list[tuple[str, str]] = []
    opts = {o.name: o.value for o in decl.options}
    if "tools" not in opts:
        out.append((f"ReAct module {decl.name} needs a `tools` option naming the tools it may call",
                    "for example `tools: [search]`, naming `tool` declarations"))
    refs = opts.get("tools")
    names = [r.name for r in refs if isinstance(r, A.Ref)] if isinstance(refs, list) else []
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        out.append((f"ReAct module {decl.name} names tool {', '.join(dupes)} more than once", "name each tool once"))
    if FINISH in names:
        out.append((f"ReAct module {decl.name}: a tool named '{FINISH}' clashes with the action that ends the loop",
                    f"rename the tool declaration '{FINISH}'"))
    for name in dict.fromkeys(names):
        tool = prog.tools.get(name)
        if tool is None or tool.params is not None:
            continue                            # unknown names are reported by the option check
        fn_sig = tool_signature(tool, decl)
        problem = undeclared_problem(fn_sig)
        if problem:
            shown = ", ".join(f"{n}: T" for n, _, req in python_params(fn_sig) or [] if req) or "x: T"
            out.append((f"ReAct tool {name} has no declared parameters and {problem}, so the model's action "
                        "input cannot be matched to them",
                        f"declare them with their types: `tool {name}({shown}) -> T = python(\"{tool.target}\")`"))
    sig = prog.signatures.get(decl.signature)
    if sig is not None:
        clash = [n for n, _, _ in sig.inputs if n in STEP_FIELDS]
        if clash:
            out.append((f"ReAct module {decl.name}: signature {decl.signature} has an input named "
                        f"{', '.join(map(repr, clash))}, which ReAct's steps reply with",
                        "rename the input (thought, action and action_input are the step's fields)"))
    return out


# ---------------------------------------------------------------------------- the kind
class StepPredictor(Predictor):
    """The step predictor: its reply schema constrains `action_input` to the tools' argument shapes."""

    def rebuild(self) -> None:
        Predictor.rebuild(self)
        extra = getattr(self, "action_input_schema", None)
        if extra is not None:
            self._schema = {**self._schema, "properties": {**self._schema["properties"], "action_input": extra}}


class ReAct(ModuleKind):
    """Thought, action, observation, repeated; then the outputs from the trajectory.

    .pipe: `module agent = ReAct(Answer, tools: [search, calculate], max_steps: 5)`
    """

    kind = "ReAct"
    doc = "an agent loop: thought, tool call and observation per step over declared tools, then the outputs"
    options = {**COMMON_OPTIONS,
               "tools": OptionSpec("tools", "the tools the agent may call, like [search, calculate]", minimum=1),
               "max_steps": OptionSpec("int", f"most thought/action/observation steps (default {DEFAULT_MAX_STEPS})",
                                       minimum=1)}
    extra_outputs = (("trajectory", STR, "the thoughts, actions and observations of every step"),)
    validate_decl = staticmethod(validate_react)

    def __init__(self, spec):
        super().__init__(spec)
        self.tools: list[str] = list(spec.options.get("tools") or [])
        self.max_steps: int = int(spec.options.get("max_steps", DEFAULT_MAX_STEPS))
        env = spec.env
        self.params: dict[str, list[Param]] = {t: tool_params(env, t) for t in self.tools} if env else {}
        self.keys: dict[str, dict[str, str]] = {t: call_keys(env, t) for t in self.tools} if env else {}
        docs = [env.tool_doc(t) if env else t for t in self.tools]
        ins = ", ".join(f"`{n}`" for n, _, _ in spec.inputs)
        outs = ", ".join(f"`{n}`" for n, _, _ in spec.outputs)
        tool_lines = "\n".join(f"- {d}" for d in docs)
        task = self.instruction().strip()
        step_instruction = (
            (task + "\n\n" if task else "")
            + f"You are an agent. You are given {ins or 'the inputs'} and your trajectory so far. Use the tools to "
            f"collect the information needed to produce {outs}. In each step, write your next thought (reason about "
            "the situation and plan ahead), then choose the next action and its input. After each tool call its "
            "result is appended to your trajectory as an observation.\n\n"
            f"Actions:\n{tool_lines}\n- {FINISH}: the task is complete; the trajectory holds everything needed "
            f"to produce {outs}.")
        actions = tuple(self.tools) + (FINISH,)
        step_inputs = list(spec.inputs) + [("trajectory", STR, "the thoughts, actions and observations so far")]
        step_outputs = [
            ("thought", STR, "your reasoning about the next step"),
            ("action", Type("enum", values=actions), "the tool to call, or finish"),
            ("action_input", Type("any", optional=True),
             "the tool's arguments: an object keyed by parameter name, or a plain string for a tool with one "
             "parameter; empty for finish"),
        ]
        self.react = StepPredictor(f"{spec.name}.react", step_instruction, step_inputs, step_outputs, spec.lm,
                                   self.sampling())
        self.react.action_input_schema = self._input_schema()
        self.react.rebuild()
        extract_instruction = ((task + "\n\n" if task else "")
                               + "The trajectory shows the thoughts, tool calls and observations gathered so far; "
                               "produce the outputs from it.")
        self.extract = self.predictor("extract", extract_instruction, step_inputs, list(spec.outputs))

    def _input_schema(self) -> dict:
        """`action_input`: a string (for one-parameter tools and finish) or one tool's argument object."""
        shapes: list[dict] = [{"type": "string"}]
        for tool in self.tools:
            params = self.params.get(tool, [])
            shape = {"type": "object",
                     "properties": {n: (type_schema(t) if t.kind != "any" else {}) for n, t, _ in params},
                     "required": [n for n, _, req in params if req],
                     "additionalProperties": False}
            if shape not in shapes:
                shapes.append(shape)
        return {"anyOf": shapes}

    def predictors(self):
        return [self.react, self.extract]

    def max_calls(self) -> int:
        return 2 * self.max_steps + 2

    async def forward(self, values, ctx):
        steps: list[str] = []
        for i in range(1, self.max_steps + 1):
            try:
                step = await self.react({**values, "trajectory": render_trajectory(steps)}, ctx)
            except ModuleFailure:
                break               # as in DSPy: a step that cannot be read ends the loop; the trace keeps it
            action, arg = step["action"], step.get("action_input")
            lines = [f"Thought {i}: {step['thought']}", f"Action {i}: {action}"]
            if action == FINISH:
                if shown_input(arg).strip():
                    lines.append(f"Action input {i}: {shown_input(arg)}")
                steps.append("\n".join(lines))
                break
            lines.append(f"Action input {i}: {shown_input(arg)}")
            lines.append(f"Observation {i}: {await self._act(action, arg, ctx)}")
            steps.append("\n".join(lines))
        trajectory = render_trajectory(steps)
        out = await self.extract({**values, "trajectory": trajectory}, ctx)
        return {**out, "trajectory": trajectory}

    async def _act(self, tool: str, arg: Any, ctx) -> str:
        """Run one tool call; whatever goes wrong is the observation."""
        try:
            args = call_args(fill_args(tool, self.params.get(tool, []), arg), self.keys.get(tool, {}))
        except ValueError as err:
            return f"error: {err}"
        try:
            return observe(await self.spec.env.call_tool(tool, args, ctx))
        except ModuleFailure as err:
            return f"error: {err}"


def render_trajectory(steps: list[str]) -> str:
    return "\n\n".join(steps) if steps else "(no steps yet)"
