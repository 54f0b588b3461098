"""What a module kind is: options checked statically, inner predictors, and a `forward` over them.

A kind is one file in this folder defining one `ModuleKind` subclass; the registry finds it by
scanning the folder, so adding a kind touches nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, ClassVar

from ..budget import BudgetExhausted
from ..cache import prefix_digest
from ..dsl.catalogue import OptionSpec
from ..dsl.types import Type
from ..lm.base import LMError, LMRequest, declared_sampling
from ..prompt import prompt_prefix, render_value, retry_message, user_message
from ..reply_parser import ReplyError, coerce, parse_reply
from ..schema import object_schema

Fields = list[tuple[str, Type, str]]

COMMON_OPTIONS: dict[str, OptionSpec] = {
    "lm": OptionSpec("lm", "which declared LM this module calls"),
    "temperature": OptionSpec("number", "sampling temperature for this module", minimum=0),
    "max_tokens": OptionSpec("int", "upper bound on reply tokens", minimum=1),
    "instruction": OptionSpec("str", "replaces the signature's instruction for this module"),
    "demos": OptionSpec("demos", "worked examples, a record of the signature's fields each: "
                                 "[{utterance: \"...\", intent: book_restaurant}, ...]"),
    "pin": OptionSpec("pins", "what no optimizer may change: [instruction, demos], or one of them"),
    "nearest": OptionSpec("int", "with demos: per input, only the k written demos most like it (as knn_fewshot)",
                          minimum=1),
    "parts": OptionSpec("parts", "an inner predictor's own instruction, demos and nearest, by part: "
                                 "{critique: {instruction: \"...\", demos: [...]}}"),
}
# The sampling options a module may set for its own calls, over its LM's declared ones.
MODULE_SAMPLING = ("temperature", "max_tokens")


def _install_demos(p: Predictor, demos: list[dict[str, Any]], nearest: int | None) -> None:
    """Written demos on a predictor: fixed, or with `nearest: k` a pool it picks k of per input."""
    if nearest:
        from ..knn import KnnPool
        p.set_params(demos=[], knn=KnnPool(demos, [n for n, _, _ in p.inputs], nearest))
    else:
        p.set_params(demos=demos)


def _part_demo(p: Predictor, demo: dict[str, Any], i: int) -> dict[str, Any]:
    """A demo written for an inner predictor (`parts:`), whose fields the checker cannot see."""
    types = {n: t for n, t, _ in p.inputs + p.outputs}
    unknown = [k for k in demo if k not in types]
    if unknown:
        raise ValueError(f"demo {i} of {p.name} has no field '{unknown[0]}' (its fields: {', '.join(types)})")
    try:
        return {k: coerce(v, types[k]) for k, v in demo.items()}
    except ReplyError as err:
        raise ValueError(f"demo {i} of {p.name}: {err}") from None


class ModuleFailure(Exception):
    """A module could not produce its outputs for this input (bad reply after a retry, LM error)."""

    def __init__(self, message: str, raw: str = ""):
        super().__init__(message)
        self.raw = raw


@dataclass(slots=True)
class Predictor:
    """One prompt shape sent to one LM: the unit whose instruction and demos optimizers tune.

    The system message is built once; a call formats the user message, asks the LM, parses the
    reply, and on a parse error asks once more with the error shown.
    """

    name: str
    instruction: str
    inputs: Fields
    outputs: Fields
    lm: str
    params: dict[str, Any]
    demos: list[dict[str, Any]] = field(default_factory=list)
    structured: bool = True
    knn: Any = None                 # a KnnPool: demos chosen per input instead of fixed demos
    pinned: frozenset[str] = frozenset()    # "instruction", "demos": what the .pipe file pins (no optimizer changes it)
    # The most items a list output may have, by field: the reply schema says so, so a grammar-constrained
    # LM stops there instead of extending a list until max_tokens cuts the reply (AMA's k questions).
    max_items: dict[str, int] = field(default_factory=dict)
    _prefix: list[dict[str, str]] = field(default_factory=list, repr=False)
    _fields: list[tuple[str, Type]] = field(default_factory=list, repr=False)
    _schema: dict | None = field(default=None, repr=False)
    _prefix_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute the cached prompt prefix after instruction or demos change."""
        self._prefix = self.prefix_for(self.demos)
        self._fields = [(n, t) for n, t, _ in self.outputs]
        self._schema = object_schema(self._fields)
        for name, most in self.max_items.items():
            self._schema["properties"][name]["maxItems"] = most
        self._prefix_key = prefix_digest(self._prefix, self._schema)

    def prefix_for(self, demos: list[dict[str, Any]], instruction: str | None = None) -> list[dict[str, str]]:
        """The prompt prefix (system message, then a user and an assistant turn per demo) for these demos,
        under this predictor's instruction or another (what the report shows for each candidate)."""
        return prompt_prefix(self.instruction if instruction is None else instruction, self.inputs, self.outputs,
                             demos)

    def set_params(self, instruction: str | None = None, demos: list[dict[str, Any]] | None = None,
                   knn: Any = None) -> None:
        """Install tuned parameters (what optimizers choose and artifacts store)."""
        if instruction is not None:
            self.instruction = instruction
        if demos is not None:
            self.demos = list(demos)
        self.knn = knn
        self.rebuild()

    @property
    def schema(self) -> dict:
        return self._schema

    def messages(self, values: dict[str, Any]) -> list[dict[str, str]]:
        prefix = self._prefix if self.knn is None else self.prefix_for(self.knn.select(values))
        return prefix + [{"role": "user", "content": user_message(self.inputs, values)}]

    def request(self, messages: list[dict[str, str]], ctx, sample: int = 0, params: dict | None = None) -> LMRequest:
        backend = ctx.row.runtime.lms[self.lm]
        schema = self._schema if backend.structured != "text" else None
        request = LMRequest(messages, schema, {**self.params, **params} if params else self.params, sample)
        prefix = self._prefix
        # Only when the messages really start with this predictor's fixed prefix (not per-input KNN demos).
        if self.knn is None and len(messages) > len(prefix) and messages[0] is prefix[0]:
            request.prefix_key, request.prefix_len = self._prefix_key, len(prefix)
        return request

    async def __call__(self, values: dict[str, Any], ctx, sample: int = 0, params: dict | None = None,
                       messages: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """Ask for the outputs. `sample` numbers independent draws of the same prompt (self-consistency),
        `params` overrides sampling (a temperature), `messages` replaces the built prompt entirely."""
        messages = messages if messages is not None else self.messages(values)
        reply, rec = await ctx.complete(self.name, self.lm, self.request(messages, ctx, sample, params))
        rec.inputs = values
        try:
            rec.parsed = parse_reply(reply.text, self._fields, reply.truncated)
            return rec.parsed
        except ReplyError as err:
            rec.error = str(err)
            first = str(err)
            ctx.forget(rec)
        retry = messages + [{"role": "assistant", "content": reply.text},
                            {"role": "user", "content": retry_message(first, self.outputs)}]
        reply, rec = await ctx.complete(self.name, self.lm, self.request(retry, ctx, sample, params), attempt=2)
        rec.inputs = values
        try:
            rec.parsed = parse_reply(reply.text, self._fields, reply.truncated)
            return rec.parsed
        except ReplyError as err:
            rec.error = str(err)
            ctx.forget(rec)
            raise ModuleFailure(f"reply did not parse, even after a retry: {err}", raw=reply.text) from None


def fresh_name(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, `name_3`, ... if a signature field already uses it (inner fields a kind adds).

    >>> fresh_name("steps", {"steps"})
    'steps_2'
    """
    out, i = name, 2
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    return out


async def settle(call: Awaitable[Any]) -> Any:
    """Await one sub-call that may fail without failing the module (a sample, an agent, a candidate):
    its result, or the `ModuleFailure` or `LMError` it raised, returned. A spent budget is raised, not
    returned: a compile out of budget must see it, not an answer made from fewer calls."""
    try:
        return await call
    except BudgetExhausted:
        raise
    except (ModuleFailure, LMError) as err:
        return err


def decl_option(decl, name: str, default: Any = None) -> Any:
    """The value of option `name` as written in a module declaration (for `validate_decl`), or `default`."""
    for o in decl.options:
        if o.name == name:
            return o.value
    return default


def field_option_problems(decl, program, kind: str) -> list[tuple[str, str]]:
    """`validate_decl` for a kind whose `field` option names the output it votes on (Majority, AMA):
    it must be an output of the signature.

    >>> from types import SimpleNamespace as NS
    >>> decl = NS(name="m", signature="S", options=[NS(name="field", value=NS(name="anser"))])
    >>> program = NS(signatures={"S": NS(outputs=[("answer", None, "")])})
    >>> field_option_problems(decl, program, "Majority")[0]
    ("option 'field' of Majority module m names 'anser', which is not an output of S", "did you mean 'answer'?")
    """
    from ..dsl.diagnostics import did_you_mean
    outputs = [n for n, _, _ in program.signatures[decl.signature].outputs]
    name = getattr(decl_option(decl, "field"), "name", None)
    if isinstance(name, str) and name not in outputs:
        hint = did_you_mean(name, outputs) or f"outputs of {decl.signature}: {', '.join(outputs)}"
        return [(f"option 'field' of {kind} module {decl.name} names '{name}', which is not an output of "
                 f"{decl.signature}", hint)]
    return []


def show_answer(answer: dict[str, Any], fields: Fields) -> str:
    """One answer as prompt text, `field: value` per line (another agent's or candidate's answer).

    >>> from pipec.dsl.types import STR
    >>> print(show_answer({"answer": "4", "unit": None}, [("answer", STR, ""), ("unit", STR, "")]))
    answer: 4
    unit: (none)
    """
    return "\n".join(f"{n}: {render_value(answer.get(n))}" for n, _, _ in fields)


class KindEnv:
    """What a kind may reach beyond its own prompt: declared tools and other modules.

    Built by the Program for one set of module instances (an ensemble member has its own).
    """

    def __init__(self, program, modules: dict[str, "ModuleKind"]):
        self._program = program
        self._modules = modules

    def module(self, name: str) -> "ModuleKind":
        return self._modules[name]

    async def call_module(self, name: str, values: dict[str, Any], ctx) -> dict[str, Any]:
        """Run another declared module (a debate's agent, a rank-and-fuse candidate) from inside this one."""
        return await self._modules[name].forward(values, ctx.row.node(ctx.node_id, name))

    async def call_tool(self, name: str, args: dict[str, Any], ctx) -> Any:
        """Run a declared tool; traced like a tool node. Raises ModuleFailure when the tool fails."""
        return await self._program.call_tool(name, args, ctx)

    def tool_doc(self, name: str) -> str:
        """`name(params) -> type: first line of its docstring`, for prompts that list tools."""
        return self._program.tool_doc(name)

    def tool_params(self, name: str) -> list[tuple[str, Type, bool]] | None:
        """A tool's declared parameters as (name, type, required), or None when it declares none."""
        return self._program.checked.tool_params.get(name)

    def tool_signature(self, name: str):
        """The `inspect.Signature` of a tool's Python function, read from its source without importing
        it (None when that cannot be known statically)."""
        return self._program.tool_signature(name)

    def lm_sampling(self, name: str) -> dict[str, Any]:
        """The sampling options (temperature, max_tokens, ...) declared on lm `name`, for kinds that
        put inner predictors on other LMs than their own."""
        return declared_sampling(self._program.checked.lms.get(name))


@dataclass(slots=True)
class ModuleSpec:
    """What a kind is built from: the module's name, its signature, its options, its LM name, and
    the environment for reaching tools and other modules."""

    name: str
    instruction: str
    inputs: Fields
    outputs: Fields
    options: dict[str, Any]
    lm: str
    sampling: dict[str, Any]
    env: KindEnv | None = None


class ModuleKind:
    """Base class of module kinds (Predict, ChainOfThought, ...)."""

    kind: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    options: ClassVar[dict[str, OptionSpec]] = COMMON_OPTIONS
    extra_outputs: ClassVar[tuple[tuple[str, Type, str], ...]] = ()
    # Static checks beyond option types: validate_decl(module_decl, checked_program) -> [(message, hint)]
    validate_decl: ClassVar[Any] = None
    # Where a module's written demos (`demos: [...]`) go: the parts ("" is the module's own predictor)
    # that answer the signature from its inputs alone, each with `demo_extras` before the signature's
    # outputs (ChainOfThought's reasoning), which a written demo gives too. A kind that names no part
    # takes no written demos: the checker says so (its parts get demos by compiling).
    demo_parts: ClassVar[tuple[str, ...]] = ()
    demo_extras: ClassVar[tuple[tuple[str, Type, str], ...]] = ()

    def __init__(self, spec: ModuleSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def predictors(self) -> list[Predictor]:
        """The predictors optimizers may tune (their instruction and demos)."""
        raise NotImplementedError

    def every_predictor(self) -> list[Predictor]:
        """Every predictor the module may run: its `predictors()`, and for a `one_of` module those of
        each alternative, not only the one it runs (`pipec.modules.one_of`)."""
        return self.predictors()

    def describe(self) -> str:
        """The module's kind as `pipec inspect`, `pipec graph` and reports name it."""
        return type(self).kind

    def install_written(self) -> None:
        """Install what the .pipe file writes beyond the instruction: its demos on `demo_parts`, and its
        pins on every predictor of the module (a pin covers the module's parts too). Called once the
        kind has built its predictors (`Program` does), so an uncompiled program runs with them.

        >>> from pipec.dsl.types import STR
        >>> from pipec.modules import kinds
        >>> m = kinds()["Predict"](ModuleSpec("m", "Echo.", [("q", STR, "")], [("a", STR, "")],
        ...                        {"demos": [{"q": "hi", "a": "hi"}], "pin": ["demos"]}, "lm", {}))
        >>> m.install_written(); m.predict.demos, sorted(m.predict.pinned)
        ([{'q': 'hi', 'a': 'hi'}], ['demos'])
        """
        opts = self.spec.options
        pin = opts.get("pin")
        pinned = frozenset([pin] if isinstance(pin, str) else pin or ())
        written = opts.get("demos")
        parts = {p.name: p for p in self.predictors()}
        if written is not None:
            for part in self.demo_parts:
                p = parts[f"{self.spec.name}.{part}" if part else self.spec.name]
                types = {n: t for n, t, _ in p.inputs + p.outputs}
                # As the checker passed them; coerced as a parsed reply would be (3 for a float is 3.0).
                _install_demos(p, [{k: coerce(v, types[k]) for k, v in d.items() if k in types} for d in written],
                               opts.get("nearest"))
        for part, own in (opts.get("parts") or {}).items():
            p = parts.get(f"{self.spec.name}.{part}")
            if p is None:
                names = sorted(n[len(self.spec.name) + 1:] for n in parts if n != self.spec.name)
                raise ValueError(f"{type(self).kind} module {self.spec.name} has no part '{part}' "
                                 f"(its parts: {', '.join(names) or 'none: write its options on the module'})")
            if own.get("instruction") is not None:
                p.set_params(instruction=own["instruction"], knn=p.knn)
            if own.get("demos") is not None:
                _install_demos(p, [_part_demo(p, d, i) for i, d in enumerate(own["demos"], 1)], own.get("nearest"))
        for p in parts.values():
            p.pinned = pinned

    def streamed(self) -> Predictor | None:
        """The predictor whose one reply carries this module's outputs, field for field, when the module
        makes that one call (a parse retry aside): a streamed run (`Program.stream`) shows those fields
        as the reply arrives. None (the default) for kinds whose outputs come from several calls
        (samples, votes, rounds, tools): their outputs arrive when the module finishes.

        >>> from pipec.dsl.types import STR
        >>> from pipec.modules import kinds
        >>> spec = ModuleSpec("m", "Echo.", [("q", STR, "")], [("a", STR, "")], {}, "lm", {})
        >>> kinds()["ChainOfThought"](spec).streamed().name, kinds()["Majority"](spec).streamed()
        ('m', None)
        """
        return None

    def max_calls(self) -> int:
        """Worst-case LM calls for one call of this module, counting the parse retry."""
        return 2 * len(self.predictors())

    def max_calls_prepared(self) -> int:
        """`max_calls` once a compile has prepared the module (`prepare`): what the compiled program,
        and the uncompiled one a compile falls back to, can cost. The same for kinds with nothing to
        prepare; ToolMaker's is its use call alone, its tool made.

        >>> from pipec.dsl.types import STR
        >>> from pipec.modules import kinds
        >>> kinds()["Predict"](ModuleSpec("m", "Echo.", [("q", STR, "")], [("a", STR, "")], {}, "lm", {})).max_calls_prepared()
        2
        """
        return self.max_calls()

    async def prepare(self, examples: list[dict[str, Any]], ctx) -> None:
        """Work the kind does once per compile, before the uncompiled program is scored and before any
        optimizer runs (`pipec.prepare`): ToolMaker makes its tool here. `examples` are the compile's
        training rows that give every field of the module's signature, as records of those fields, in
        a seeded order; the valset is never among them. What this leaves on the module's predictors
        (instruction, demos, pins) is where every candidate of the compile starts and what the
        artifact carries (unless an optimizer tunes a part left unpinned). LM calls go through `ctx`
        (the compile's budget and cache). Raises `ModuleFailure` when the module cannot be prepared.
        Most kinds have nothing to do.

        >>> from pipec.dsl.types import STR
        >>> from pipec.modules import kinds
        >>> m = kinds()["Predict"](ModuleSpec("m", "Echo.", [("q", STR, "")], [("a", STR, "")], {}, "lm", {}))
        >>> m.needs_preparing()
        False
        """
        return None

    def needs_preparing(self) -> bool:
        """Whether the kind does compile-time work (`prepare`): the compile skips the others."""
        return type(self).prepare is not ModuleKind.prepare

    def code(self) -> dict[str, str]:
        """Code the module carries in its parameters and runs (in the sandbox), by predictor name:
        ToolMaker's tool. `pipec inspect` and the report show it as code, and running it from an
        artifact compiled elsewhere needs the user's approval (`pipec.trust`). Most kinds carry none.

        >>> from pipec.dsl.types import STR
        >>> from pipec.modules import kinds
        >>> kinds()["Predict"](ModuleSpec("m", "Echo.", [("q", STR, "")], [("a", STR, "")], {}, "lm", {})).code()
        {}
        """
        return {}

    async def forward(self, values: dict[str, Any], ctx) -> dict[str, Any]:
        raise NotImplementedError

    def sampling(self) -> dict[str, Any]:
        """Sampling for this module's predictors: its LM's declared sampling, then its own options."""
        return self._overridden(dict(self.spec.sampling))

    def _overridden(self, params: dict[str, Any]) -> dict[str, Any]:
        params.update({k: self.spec.options[k] for k in MODULE_SAMPLING if k in self.spec.options})
        return params

    def instruction(self) -> str:
        return self.spec.options.get("instruction") or self.spec.instruction

    def sampling_on(self, lm: str) -> dict[str, Any]:
        """Sampling for an inner predictor on `lm` (a debate agent's, a candidate's): the module's own on
        its `lm`; on another, that LM's declared sampling with this module's temperature and max_tokens."""
        if lm == self.spec.lm:
            return self.sampling()
        return self._overridden(self.spec.env.lm_sampling(lm) if self.spec.env is not None else {})

    def predictor(self, part: str, instruction: str, inputs: Fields, outputs: Fields,
                  params: dict[str, Any] | None = None, max_items: dict[str, int] | None = None) -> Predictor:
        """A named inner predictor (`module.part`) on this module's LM and sampling settings; `max_items`
        caps list outputs in the reply schema (`Predictor.max_items`)."""
        return Predictor(f"{self.spec.name}.{part}" if part else self.spec.name, instruction, inputs, outputs,
                         self.spec.lm, {**self.sampling(), **(params or {})}, max_items=dict(max_items or {}))
