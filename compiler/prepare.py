"""Prepare: the compile-time work of module kinds, done once before the uncompiled program is scored
and before any optimizer runs (ToolMaker makes its tool here; see `ModuleKind.prepare`).

Each module that needs preparing is given the compile's training rows that give every field of its
signature (`module_examples`), as records of those fields, shuffled by the compile's seed: the
valset is never among them, so the uncompiled program and every candidate are scored on rows no
kind prepared on. What a kind leaves on its predictors (instruction, demos, pins) becomes the
program's starting point (`Program.prepared`): every candidate an optimizer builds, the teacher, and
the compiled program start from it, pinned parts cannot be tuned away (`keep_pinned`), and the
artifact carries it. The LM calls go through the compile's budget, LM cache and counters. Every
process of a shared study (`--worker`, `--finalize`) prepares for itself, from the same rows and seed:
with a deterministic LM the same prompts, so a shared LM cache answers all but the first.
"""
from __future__ import annotations

import random
from typing import Any

from .aio import run_coroutine
from .context import RowContext
from .lm.base import LMError
from .modules.base import ModuleFailure
from .reply_parser import ReplyError, coerce


def module_examples(program, name: str, rows) -> list[dict[str, Any]]:
    """The rows (`Example`s or dicts of values) that give every field of module `name`'s signature,
    as records of those fields: the module must be called in the pipeline (outside maps) with each
    input it is given taken straight from a pipeline input, and each of its outputs returned as a
    pipeline output, which the row labels. A module fed by another module's outputs gets none: rows
    label only the pipeline's own inputs and outputs.

    >>> import pathlib, tempfile, pipec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.pipe"
    >>> _ = path.write_text('signature S { in q: str out a: int } module m = Predict(S) '
    ...                     'pipeline p(text: str) -> (n) { r = m(q: text) return n = r.a }')
    >>> module_examples(pipec.load(path, cache=False), "m", [{"text": "one", "n": 1}, {"text": "two"}])
    [{'q': 'one', 'a': 1}]
    """
    module = program.modules[name]
    ins, outs = module.spec.inputs, module.spec.outputs
    for node in program.graph.nodes:
        if node.op != "module" or node.target != name:
            continue
        args = dict(node.args)
        if any(expr[0] != "input" for expr in args.values()):
            continue
        returned = {expr[2]: out for out, _, expr in program.graph.outputs
                    if expr[0] == "attr" and expr[1] == ("node", node.id)}
        if any(n not in returned for n, _, _ in outs):
            continue
        found = []
        for row in rows:
            values = row if isinstance(row, dict) else row.values
            try:
                record = {n: coerce(values.get(args[n][1]), t) if n in args else None for n, t, _ in ins}
                if any(values.get(returned[n]) is None for n, _, _ in outs):
                    continue
                record.update({n: coerce(values[returned[n]], t) for n, t, _ in outs})
            except ReplyError:
                continue                # a label of another type than the module's output: not an example
            found.append(record)
        return found
    return []


def prepare_program(program, budget, stats, rows, seed: int, progress=None):
    """`program` with every module that needs preparing prepared on `rows` (the trainset) through the
    compile's `budget`, LM cache and counters (`stats`), as a new program (`Program.prepared`); the
    program itself when no module needs it. A module that cannot be prepared raises ValueError naming
    it and why: a compile never emits a program that would do at run time what it failed to do here."""
    names = [name for name, m in program.modules.items() if m.needs_preparing()]
    if not names:
        return program
    if progress is not None:
        progress.update("preparing " + ", ".join(names))
    work = program.bound({})                    # instances of its own: `program` is not changed
    runtime = work.runtime(budget, stats)
    for name in names:
        examples = module_examples(work, name, rows)
        random.Random(f"{seed}:prepare:{name}").shuffle(examples)
        ctx = RowContext(runtime, False).node(f"prepare:{name}", name)       # its trace is not kept
        try:
            run_coroutine(work.modules[name].prepare(examples, ctx))
        except (ModuleFailure, LMError) as err:
            said = str(err)
            raise ValueError(said if f" {name} " in said else f"module {name} could not be prepared for the "
                             f"compile: {said}") from None
    return program.prepared({p.name: p for name in names for p in work.modules[name].every_predictor()})


__all__ = ["prepare_program", "module_examples"]
