"""Prompt building: a signature, an instruction and demos become chat messages.

The system message depends only on the module's parameters, so it is built once per predictor; a
call only formats the user message.
"""
from __future__ import annotations

import json
from typing import Any

from .dsl.types import Type


def describe_type(t: Type) -> str:
    """How a type is explained to the model.

    >>> describe_type(Type("enum", values=("yes", "no")))
    'one of: yes, no'
    """
    k = t.kind
    text = {
        "str": "text", "int": "an integer", "float": "a number", "bool": "true or false", "any": "a value",
    }.get(k)
    if k == "enum":
        text = "one of: " + ", ".join(t.values)
    elif k == "list":
        text = f"a list of {describe_type(t.arg) if t.arg else 'values'}"
    elif k == "record":
        text = "an object with keys " + ", ".join(n for n, _, _ in t.fields)
    return text + (" (may be null)" if t.optional else "")


def render_value(v: Any) -> str:
    """How an input value appears in a prompt: text as is, everything else as JSON."""
    if isinstance(v, str):
        return v
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(v, ensure_ascii=False)


def system_message(instruction: str, inputs: list[tuple[str, Type, str]], outputs: list[tuple[str, Type, str]]) -> str:
    """The system message: the instruction, the fields, and the reply format."""
    lines = [instruction.strip() or "Produce the outputs from the inputs."]
    if inputs:
        lines.append("")
        lines.append("Inputs:")
        lines += [f"- {n}: {d or describe_type(t)}" for n, t, d in inputs]
    lines.append("")
    lines.append("Outputs:")
    for n, t, d in outputs:
        kind = describe_type(t)
        lines.append(f"- {n}: {d} ({kind})" if d else f"- {n}: {kind}")
    keys = ", ".join(f'"{n}"' for n, _, _ in outputs)
    lines.append("")
    lines.append(f"Reply with one JSON object with the key{'s' * (len(outputs) > 1)} {keys} and nothing else.")
    return "\n".join(lines)


def user_message(inputs: list[tuple[str, Type, str]], values: dict[str, Any]) -> str:
    return "\n".join(f"{n}: {render_value(values.get(n))}" for n, _, _ in inputs)


def assistant_message(outputs: list[tuple[str, Type, str]], values: dict[str, Any]) -> str:
    return json.dumps({n: values.get(n) for n, _, _ in outputs}, ensure_ascii=False)


def prompt_prefix(instruction: str, inputs: list[tuple[str, Type, str]], outputs: list[tuple[str, Type, str]],
                  demos: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The fixed head of a predictor's prompt: the system message, then a user and an assistant
    message per demo. A call appends its own user message to it.

    >>> from pipec.dsl.types import STR
    >>> [m["role"] for m in prompt_prefix("Echo.", [("q", STR, "")], [("a", STR, "")], [{"q": "hi", "a": "hi"}])]
    ['system', 'user', 'assistant']
    """
    prefix = [{"role": "system", "content": system_message(instruction, inputs, outputs)}]
    for demo in demos:
        prefix.append({"role": "user", "content": user_message(inputs, demo)})
        prefix.append({"role": "assistant", "content": assistant_message(outputs, demo)})
    return prefix


def retry_message(error: str, outputs: list[tuple[str, Type, str]]) -> str:
    keys = ", ".join(f'"{n}"' for n, _, _ in outputs)
    return (f"Your reply could not be used: {error}. "
            f"Reply again with only a JSON object with the keys {keys}.")
