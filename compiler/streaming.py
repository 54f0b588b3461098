"""Streamed runs: `async for partial in prog.stream(**inputs)` yields the pipeline's outputs as they
arrive, then the `Prediction` a normal `acall` returns.

What streams. The nodes whose outputs are the pipeline's outputs (`return label = c.label`) stream
when their module makes one LM call that carries its outputs field for field (`ModuleKind.streamed`):
Predict, ChainOfThought (its reply's `reasoning` and answer fields; only those the pipeline returns
are shown), and a one_of module running one of them. Kinds whose outputs come from several calls
(Majority's samples, Refine's rounds, ReAct's steps, ...) make their calls as usual and their outputs
appear when the module finishes, as do outputs computed from several nodes or from a node inside a
map. Nodes the outputs do not read directly run as in a normal call. An ensemble (a compiled program
with several parameter sets) votes over whole runs, so it yields only its final Prediction.

What a partial holds (a `Partial`: the outputs known so far, by name, typed as the final ones):
- a field appears once its value is complete, except that a `str` field (and a `list[str]`'s last
  item) may appear early and grow: each later partial's text extends the earlier one's;
- numbers, booleans, enums, records and lists of anything but text appear only once complete: never
  half a number or a prefix of an enum value;
- every partial extends the one before (nothing shown is taken back). When an attempt fails after
  part of its reply was shown (a dropped connection retried, a reply that did not parse asked
  again), partials resume only once the new reply passes what was shown; the final Prediction is
  always what a normal call returns.
Replies are read as pipec's reply parser reads them: a JSON object (read tolerantly while incomplete,
with jiter's partial mode), or `field: value` lines for LMs asked for text.

The run is a normal run in every other way: the same cache (a cached reply yields only the final
Prediction, at once; a streamed reply is cached when complete, so the next call hits it), the same
retries, parse retry, budget, fallbacks (which fall over only while no text has arrived) and trace.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Callable

from .dsl.types import Type
from .executor import Plan, compile_expr
from .graph import expr_deps
from .prediction import Prediction
from .reply_parser import _FIELD, _HEADER, ReplyError, _field_lines, _norm, coerce

_END = object()


class Partial:
    """The outputs of a streamed run known so far: by attribute or key, like a Prediction's.

    >>> p = Partial({"answer": "The capi"})
    >>> p.answer, "label" in p, p.get("label"), p.outputs()
    ('The capi', False, None, {'answer': 'The capi'})
    """

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]):
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no output '{name}' yet; so far: {', '.join(self._values) or 'none'}") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        """The output `name` if it has arrived, else `default`."""
        return self._values.get(name, default)

    def outputs(self) -> dict[str, Any]:
        """The outputs known so far, by name."""
        return dict(self._values)

    def __eq__(self, other) -> bool:
        return isinstance(other, Partial) and other._values == self._values

    def __repr__(self) -> str:
        return "Partial(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


async def stream_run(program, values: dict[str, Any], runtime, nodes: bool = True) -> AsyncIterator[Partial | Prediction]:
    """Run prepared `values` through `program` as `Program.stream` does: `Partial`s, then the Prediction.
    Without `nodes`, partials come only as LM replies stream, not when a node finishes (`pipec serve`
    reports finished nodes with events of their own).

    >>> import asyncio, pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
    >>> _ = path.write_text('signature S { in q: str out a: str } module m = Predict(S) '
    ...                     'pipeline p(q: str) -> (a) { return a = m(q: q).a }')
    >>> prog = pipec.load(path, lm=pipec.ScriptedLM([{"a": "hello"}], chunk=4), cache=False)
    >>> async def items():
    ...     return [item async for item in stream_run(prog, {"q": "hi"}, prog.runtime())]
    >>> asyncio.run(items())
    [Partial(a='h'), Partial(a='hello'), Prediction(a='hello')]
    """
    plan = program.plan
    if not isinstance(plan, Plan):          # an ensemble votes over whole runs: nothing to show early
        yield await plan.run_async(values, runtime)
        return
    queue: asyncio.Queue = asyncio.Queue()
    watch = Watch(program, values, queue.put_nowait, nodes)
    task = asyncio.ensure_future(plan.run_async(values, runtime, watch))
    # Scheduled after the task's last step, so every partial it emitted is in the queue before this.
    task.add_done_callback(lambda _: queue.put_nowait(_END))
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            yield item
        yield task.result()
    finally:
        if not task.done():                 # the caller stopped reading: stop the run
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class Watch:
    """Follows one streamed row (`RowContext.watch`): the text of the LM calls that carry the
    pipeline's outputs as it grows, and each top-level node as it finishes; calls `emit` with a
    `Partial` whenever what is known of the outputs grows."""

    def __init__(self, program, values: dict[str, Any], emit: Callable[[Partial], None], nodes: bool = True):
        graph = program.graph
        self.emit = emit
        self.nodes = nodes          # whether a node finishing is news of its own (else only streamed text is)
        self.env: dict[str, Any] = dict(values)
        self.top = {n.id for n in graph.nodes}
        self.done: set[str] = set()
        self.order = [name for name, _, _ in graph.outputs]
        self.pending = [(name, compile_expr(expr), expr_deps(expr)) for name, _, expr in graph.outputs]
        self.final: dict[str, Any] = {}
        self.live: dict[str, Any] = {}
        self.shown: dict[str, Any] = {}
        # node id -> (predictor name, its reply fields, [(output name, reply field)])
        self.sources: dict[str, tuple[str, list[tuple[str, Type]], list[tuple[str, str]]]] = {}
        by_id = {n.id: n for n in graph.nodes}
        for name, _, expr in graph.outputs:
            if not (expr[0] == "attr" and expr[1][0] == "node"):
                continue
            node = by_id.get(expr[1][1])
            if node is None or node.op != "module" or node.target not in program.modules:
                continue
            predictor = program.modules[node.target].streamed()
            if predictor is None or expr[2] not in {n for n, _, _ in predictor.outputs}:
                continue
            fields = [(n, t) for n, t, _ in predictor.outputs]
            self.sources.setdefault(node.id, (predictor.name, fields, []))[2].append((name, expr[2]))
        self._settle()

    def listen(self, node_id: str, predictor: str) -> Callable[[str], None] | None:
        """The function to hand the growing text of an LM call to, or None when the call carries no
        output the pipeline returns (it then runs unstreamed)."""
        source = self.sources.get(node_id)
        if source is None or source[0] != predictor or node_id in self.done:
            return None
        _, fields, wanted = source
        reader = ReplyReader(fields)

        def text(so_far: str) -> None:
            found = reader.read(so_far)
            grew = False
            for out, field in wanted:
                if field in found and self.live.get(out, _END) != found[field]:
                    self.live[out] = found[field]
                    grew = True
            if grew:            # news only when the reply's text shows more of an output
                self._changed()
        return text

    def node_done(self, node_id: str, value: Any) -> None:
        """A top-level node finished with `value`: the outputs it completes are final."""
        if node_id not in self.top:
            return                           # a node of a map's body: the map node reports the whole
        self.env[node_id] = value
        self.done.add(node_id)
        self._settle()
        if self.nodes:
            self._changed()

    def _settle(self) -> None:
        """Compute every output whose nodes have all finished."""
        left = []
        for name, value, deps in self.pending:
            if deps <= self.done:
                try:
                    self.final[name] = value(self.env)
                except Exception:  # noqa: BLE001 - the final Prediction reports what went wrong
                    pass
            else:
                left.append((name, value, deps))
        self.pending = left

    def _changed(self) -> None:
        state = {}
        for name in self.order:
            if name in self.final:
                state[name] = self.final[name]
            elif name in self.live:
                state[name] = self.live[name]
        # Every output known: the final Prediction, with these values, is what comes next.
        if len(state) == len(self.order) and not self.pending:
            return
        if state != self.shown and extends(state, self.shown):
            self.shown = state
            self.emit(Partial(dict(state)))


def extends(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether partial outputs `new` keep everything `old` showed: the same values, text grown.

    >>> extends({"a": "hello", "n": 3}, {"a": "hel"}), extends({"a": "help"}, {"a": "hello"})
    (True, False)
    >>> extends({"l": ["x", "yz", "w"]}, {"l": ["x", "y"]}), extends({"l": ["x"]}, {"l": ["x", "y"]})
    (True, False)
    """
    for name, before in old.items():
        if name not in new:
            return False
        now = new[name]
        if now == before:
            continue
        if isinstance(now, str) and isinstance(before, str):
            if not now.startswith(before):
                return False
        elif _texts(now) and _texts(before) and before:
            if len(now) < len(before) or now[:len(before) - 1] != before[:-1] or \
                    not now[len(before) - 1].startswith(before[-1]):
                return False
        elif not (_texts(now) and before == []):
            return False
    return True


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def partial_fields(text: str, fields: list[tuple[str, Type]]) -> dict[str, Any]:
    """The fields an incomplete reply already gives, typed: complete values, and the text of a `str`
    field (or the items of a `list[str]`) still being written. Never a half number or enum.

    >>> from pipec.dsl.types import Type
    >>> fields = [("answer", Type("str")), ("n", Type("int")), ("tone", Type("enum", values=("calm", "angry")))]
    >>> partial_fields('{"n": 12', fields), partial_fields('{"n": 12, "answer": "Par', fields)
    ({}, {'answer': 'Par', 'n': 12})
    >>> partial_fields('{"tone": "cal', fields), partial_fields('answer: Paris\\nn: 4', fields)
    ({}, {'answer': 'Paris'})
    """
    return ReplyReader(fields).read(text)


class ReplyReader:
    """Reads one reply as it grows: `read(text)` with the text so far gives `partial_fields(text)`.
    Each call's text extends the one before (a shorter one, such as "" when an attempt starts over,
    starts the reading over), and the scan for the object's members resumes where the last call's
    ended, so reading a reply at every delta costs time linear in its length.

    >>> from pipec.dsl.types import Type
    >>> reader = ReplyReader([("a", Type("str")), ("n", Type("int"))])
    >>> reader.read('{"a": "x'), reader.read('{"a": "xyz", "n": 4'), reader.read('{"a": "xyz", "n": 4}')
    ({'a': 'x'}, {'a': 'xyz'}, {'a': 'xyz', 'n': 4})
    """

    def __init__(self, fields: list[tuple[str, Type]]):
        self.fields = fields
        self.names = [n for n, _ in fields]
        self.restart()

    def restart(self) -> None:
        self.start: int | None = None   # where the JSON object begins, once known
        self.lines = False              # the reply is `field: value` lines instead
        self.pos = 0                    # how far the object has been scanned
        self.depth = self.members = self.closed = 0     # closed: where the object ended (0: open)
        self.in_str = self.esc = False
        self.seen = 0
        self.line_pos = 0               # `field: value` lines: where the next unread line begins
        self.found: dict[str, list[str]] = {}
        self.current: str | None = None

    def read(self, text: str) -> dict[str, Any]:
        """The fields `text` (the reply so far) gives."""
        if len(text) < self.seen:
            self.restart()
        self.seen = len(text)
        if self.start is None and not self.lines:
            brace = text.find("{")
            head = text if brace < 0 else text[:brace]
            if not head.lstrip().startswith("```") and _field_lines(head, self.names):
                self.lines = True
            elif brace >= 0:
                self.start = self.pos = brace
            else:
                return {}
        if self.lines:
            return self._read_lines(text)
        self._scan(text)
        return _partial_json(text[self.start:self.closed or len(text)], self.members, bool(self.closed),
                             self.fields)

    def _read_lines(self, text: str) -> dict[str, Any]:
        """`field: value` lines as the reply parser reads them (`reply_parser._field_lines`), each
        line read once: a field is whole once the next one begins, the last one's text may grow, and
        an unfinished last line counts only if it names a field (it may yet become a field's name)."""
        wanted = {_norm(n): n for n in self.names}
        cut = text.rfind("\n") + 1
        if cut > self.line_pos:
            for line in text[self.line_pos:cut].splitlines():
                m = _HEADER.match(line) or _FIELD.match(line)
                if m and _norm(m.group(1)) in wanted:
                    self.current = wanted[_norm(m.group(1))]
                    self.found[self.current] = [m.group(2)] if m.group(2) else []
                elif self.current is not None:
                    self.found[self.current].append(line)
            self.line_pos = cut
        values = {k: "\n".join(v).strip() for k, v in self.found.items()}
        last = self.current
        m = _HEADER.match(text[cut:]) or _FIELD.match(text[cut:])
        if m and _norm(m.group(1)) in wanted:
            last = wanted[_norm(m.group(1))]
            values[last] = m.group(2).strip()
        out: dict[str, Any] = {}
        for name, t in self.fields:
            if name not in values:
                continue
            if name == last:
                growing = _growing(values[name], t) if t.kind == "str" else None
                if growing is not None:
                    out[name] = growing
            else:
                with contextlib.suppress(ReplyError):
                    out[name] = coerce(values[name], t)
        return out

    def _scan(self, text: str) -> None:
        """Count the object's complete members (its top-level commas) up to the end of `text`, and
        note where it closes."""
        depth, members, in_str, esc = self.depth, self.members, self.in_str, self.esc
        i = self.pos
        end = len(text)
        while i < end and not self.closed:
            c = text[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
                else:
                    # Skip the rest of a string's plain text at C speed: the next quote or backslash.
                    q, b = text.find('"', i), text.find("\\", i)
                    nxt = min(x for x in (q, b, end) if x >= 0)
                    if nxt > i + 1:
                        i = nxt
                        continue
            elif c == '"':
                in_str = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    self.closed = i + 1
                    members += 1
            elif c == "," and depth == 1:
                members += 1
            i += 1
        self.depth, self.members, self.in_str, self.esc, self.pos = depth, members, in_str, esc, i


def _partial_json(blob: str, members: int, closed: bool, fields: list[tuple[str, Type]]) -> dict[str, Any]:
    """The fields of the (possibly incomplete) object `blob` whose first `members` members are complete."""
    import jiter
    try:
        obj = jiter.from_json(blob.encode("utf-8", "surrogatepass"), partial_mode="trailing-strings")
    except ValueError:
        return {}           # not JSON (yet): the final parse reads it, tolerantly
    if not isinstance(obj, dict):
        return {}
    keys = list(obj)
    complete = set(keys if closed else keys[:members])
    trailing = keys[members] if not closed and len(keys) > members else None
    by_norm = {_norm(k): k for k in keys}
    out: dict[str, Any] = {}
    for name, t in fields:
        key = by_norm.get(_norm(name))
        if key is None:
            continue
        if key in complete:
            with contextlib.suppress(ReplyError):
                out[name] = coerce(obj[key], t)
        elif key == trailing:
            growing = _growing(obj[key], t)
            if growing is not None:
                out[name] = growing
    return out


def _growing(value: Any, t: Type) -> Any:
    """A value still being written, as far as it can be shown: text, or a list of texts; else None."""
    if t.kind == "str" and isinstance(value, str):
        return coerce(value, t) or None         # nothing to show until its text begins
    if t.kind == "list" and t.arg is not None and t.arg.kind == "str" and _texts(value) and value:
        return [coerce(x, t.arg) for x in value]
    return None


__all__ = ["Partial", "ReplyReader", "Watch", "extends", "partial_fields", "stream_run"]
