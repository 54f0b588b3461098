"""`pipec run --stream`: a streamed run's outputs printed as they arrive (`Program.stream`).

Three ways, by where stdout goes:
- `--json`: one JSON object per line per change, `{"partial": true, "outputs": {...}}` with the
  outputs known so far, then the run's result as `pipec run --json` gives it, on one line, with
  `"partial": false`;
- a terminal: the `name: value` lines redrawn in place as they grow, ending as `pipec run` prints them;
- anything else (a pipe, a file): the growing text, appended as it arrives: each output's
  `name: value` line as it starts, a text output's further text as it comes. An output that changes
  otherwise (rare: a reply retried after part of it was shown) is printed again, whole, at the end.
"""
from __future__ import annotations

import json
import shutil
from typing import Any, TextIO

from .aio import run_coroutine
from .prediction import Prediction


def shown(value: Any) -> str:
    """An output value as `pipec run` prints it: text as it is, anything else as JSON.

    >>> shown("Paris"), shown(["a", 1]), shown(True)
    ('Paris', '["a", 1]', 'true')
    """
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def run_streamed(program, values: dict[str, Any], out: TextIO, mode: str, trace: bool = False) -> Prediction:
    """Run one input through `program` streaming, print it to `out` in `mode` ("json", "tty" or
    "text", see the module's docstring) as it arrives, and return the final Prediction. Bad inputs
    raise ValueError before anything runs.

    >>> import io, pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
    >>> _ = path.write_text('signature S { in q: str out a: str out n: int } module m = Predict(S) '
    ...                     'pipeline p(q: str) -> (a, n) { r = m(q: q) return a = r.a, n = r.n }')
    >>> prog = pipec.load(path, lm=pipec.ScriptedLM([{"a": "hello", "n": 3}], chunk=4), cache=False)
    >>> out = io.StringIO(); run_streamed(prog, {"q": "hi"}, out, "text").n
    3
    >>> out.getvalue()
    'a: hello\\nn: 3\\n'
    """
    items = program.stream(**values)
    printer = {"json": JsonLines, "tty": Redrawn, "text": Appended}[mode](out)

    async def go() -> Prediction:
        try:
            async for item in items:
                if isinstance(item, Prediction):
                    printer.final(item, trace)
                    return item
                printer.partial(item.outputs())
        finally:
            # A reader that went away (`| head`) or ^C: stop the run and the LM now, on this loop,
            # rather than leave them to the garbage collector after the loop is gone.
            await items.aclose()
        raise AssertionError("a stream ends with its Prediction")
    return run_coroutine(go())


class JsonLines:
    """One JSON object per line per change."""

    def __init__(self, out: TextIO):
        self.out = out

    def _line(self, data: dict) -> None:
        self.out.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        self.out.flush()

    def partial(self, outputs: dict[str, Any]) -> None:
        self._line({"partial": True, "outputs": outputs})

    def final(self, pred: Prediction, trace: bool) -> None:
        self._line({"partial": False, **pred.to_dict(trace=trace)})


class Redrawn:
    """The `name: value` lines, redrawn in place on a terminal."""

    def __init__(self, out: TextIO):
        self.out = out
        self.rows = 0           # terminal rows the last drawing took

    def _draw(self, outputs: dict[str, Any], end: str = "") -> None:
        text = "\n".join(f"{name}: {shown(value)}" for name, value in outputs.items())
        if self.rows:
            # Back to the start of the last drawing, then clear from there to the end of the screen.
            self.out.write("\r" + (f"\x1b[{self.rows - 1}A" if self.rows > 1 else "") + "\x1b[J")
        width = max(1, shutil.get_terminal_size().columns)
        self.rows = sum(max(1, -(-len(line) // width)) for line in text.split("\n")) if text else 0
        self.out.write(text + end)
        self.out.flush()

    def partial(self, outputs: dict[str, Any]) -> None:
        self._draw(outputs)

    def final(self, pred: Prediction, trace: bool) -> None:
        if pred.ok:
            self._draw(pred.outputs(), "\n")
        else:
            self._draw({})          # the failure goes to stderr, as without --stream


class Appended:
    """The growing text, appended as it arrives (for pipes and files, which cannot be redrawn)."""

    def __init__(self, out: TextIO):
        self.out = out
        self.printed: dict[str, str] = {}
        self.open: str | None = None        # the output whose line is still being written

    def _close(self) -> None:
        if self.open is not None:
            self.out.write("\n")
            self.open = None

    def partial(self, outputs: dict[str, Any]) -> None:
        for name, value in outputs.items():
            text = shown(value)
            before = self.printed.get(name)
            if name == self.open and text.startswith(before):
                self.out.write(text[len(before):])
                self.printed[name] = text
            elif before is None:
                self._close()
                self.out.write(f"{name}: {text}")
                self.printed[name] = text
                if isinstance(value, str):
                    self.open = name           # it may grow
                else:
                    self.out.write("\n")
        self.out.flush()

    def final(self, pred: Prediction, trace: bool) -> None:
        self._close()
        if pred.ok:
            for name, value in pred.outputs().items():
                if self.printed.get(name) != shown(value):
                    self.out.write(f"{name}: {shown(value)}\n")
        self.out.flush()
