"""Tolerant parsing of LM replies into typed fields.

Small models rarely reply with clean JSON. This module accepts code fences, prose around the object,
single quotes, trailing commas, unquoted keys, Python literals, unclosed braces, `field: value` lines,
keys in another case, and enum values that are near misses. What still does not fit raises
`ReplyError` with a message meant to be shown to the model on its one retry.
"""
from __future__ import annotations

import difflib
import json
import re
from typing import Any

from .dsl.types import Type, show


class ReplyError(ValueError):
    """The reply could not be read as the expected fields; the message says why, for the model."""


_NORM = re.compile(r"[\s_\-*`]+")


def _norm(key: str) -> str:
    return _NORM.sub("", key).lower()


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def _balanced_object(text: str) -> str | None:
    """The first {...} in text, honoring strings; closes it if the reply was cut off."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_str, esc, quote = 0, False, False, ""
    stack = []
    for i in range(start, len(text)):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == quote:
                in_str = False
            continue
        if c in "\"'":
            in_str, quote = True, c
        elif c in "{[":
            stack.append("}" if c == "{" else "]")
        elif c in "}]":
            if stack:
                stack.pop()
            if not stack:
                return text[start:i + 1]
    tail = text[start:]
    if in_str:
        tail += quote
    return tail + "".join(reversed(stack))


def _repair(blob: str) -> str:
    s = blob
    s = re.sub(r",\s*([}\]])", r"\1", s)                                   # trailing commas
    s = re.sub(r"(?<=[{,\s])([A-Za-z_][A-Za-z0-9_ ]*)\s*:(?!//)", lambda m: f'"{m.group(1).strip()}":', s) \
        if re.search(r"[{,]\s*[A-Za-z_][A-Za-z0-9_ ]*\s*:", s) else s     # unquoted keys
    if "'" in s and s.count('"') < 2:
        s = s.replace("'", '"')                                             # single-quoted JSON
    s = re.sub(r"\bTrue\b", "true", s)
    s = re.sub(r"\bFalse\b", "false", s)
    s = re.sub(r"\bNone\b", "null", s)
    return s


def extract_object(text: str) -> dict | None:
    """Find and repair a JSON object in a reply.

    >>> extract_object("Sure! ```json\\n{'intent': 'play_music',}\\n```")
    {'intent': 'play_music'}
    """
    candidates = []
    for m in _FENCE.finditer(text):
        candidates.append(m.group(1))
    candidates.append(text)
    for cand in candidates:
        cand = cand.strip()
        try:
            value = json.loads(cand)
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        blob = _balanced_object(cand)
        if blob is None:
            continue
        for attempt in (blob, _repair(blob)):
            try:
                value = json.loads(attempt)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _field_lines(text: str, names: list[str]) -> dict[str, str]:
    """`Field: value` lines (also `**Field**:` and `[[ ## field ## ]]` styles), values running to the next field."""
    wanted = {_norm(n): n for n in names}
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^\s*(?:\[\[\s*##\s*)?[*#`]*\s*([A-Za-z][\w \-]{0,40}?)\s*[*`]*\s*(?:##\s*\]\])?\s*[:=]\s?(.*)$", line)
        if m and _norm(m.group(1)) in wanted:
            current = wanted[_norm(m.group(1))]
            found[current] = [m.group(2)]
        elif current is not None:
            found[current].append(line)
    return {k: "\n".join(v).strip() for k, v in found.items()}


def parse_reply(text: str, fields: list[tuple[str, Type]]) -> dict[str, Any]:
    """Read a reply as the expected output fields, coerced to their types.

    >>> from pipec.dsl.types import Type
    >>> parse_reply('{"Intent": "Book Restaurant"}', [("intent", Type("enum", values=("book_restaurant", "play_music")))])
    {'intent': 'book_restaurant'}
    """
    # Fast path: a clean JSON object with exactly the expected keys (what grammars and schemas yield).
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if type(obj) is dict and all(n in obj for n, _ in fields):
        try:
            return {n: coerce(obj[n], t) for n, t in fields}
        except ReplyError:
            pass     # the slow path below names every problem at once
    names = [n for n, _ in fields]
    obj = extract_object(text)
    raw: dict[str, Any] = {}
    if obj is not None:
        by_norm = {_norm(k): v for k, v in obj.items()}
        for n in names:
            if _norm(n) in by_norm:
                raw[n] = by_norm[_norm(n)]
        missing = [n for n in names if n not in raw]
        wanted = {_norm(n) for n in names}
        unclaimed = [k for k in obj if _norm(k) not in wanted]
        # A lone field answered under another key ({"action": "play_music"}) is still the answer.
        if len(missing) == 1 and len(unclaimed) == 1:
            raw[missing[0]] = obj[unclaimed[0]]
    if obj is None or len(raw) < len(names):
        for k, v in _field_lines(text, names).items():
            raw.setdefault(k, v)
    if obj is None and not raw and len(names) == 1 and text.strip():
        raw[names[0]] = text.strip()
    out: dict[str, Any] = {}
    problems = []
    for name, t in fields:
        if name not in raw or raw[name] is None or (isinstance(raw[name], str) and not raw[name].strip()
                                                     and t.kind != "str"):
            if t.optional:
                out[name] = None
                continue
            problems.append(f"missing field '{name}'")
            continue
        try:
            out[name] = coerce(raw[name], t)
        except ReplyError as err:
            problems.append(f"field '{name}': {err}")
    if problems:
        raise ReplyError("; ".join(problems))
    return out


_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def coerce(value: Any, t: Type) -> Any:
    """Convert a parsed value to a .pipe type, accepting the usual near misses.

    >>> coerce("1,234.5 dollars", Type("float")), coerce("Yes", Type("bool")), coerce("a, b", Type("list", arg=Type("str")))
    (1234.5, True, ['a', 'b'])
    """
    k = t.kind
    if value is None:
        if t.optional:
            return None
        raise ReplyError(f"expected {show(t)}, got null")
    if k == "any":
        return value
    if k == "str":
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return "\n".join(value)
        return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    if k in ("int", "float"):
        if isinstance(value, bool):
            raise ReplyError(f"expected {k}, got a boolean")
        if isinstance(value, (int, float)):
            num = value
        else:
            m = _NUMBER.search(str(value))
            if not m:
                raise ReplyError(f"expected a number, got {str(value)[:40]!r}")
            num = float(m.group(0).replace(",", ""))
        if k == "int":
            if float(num) != int(float(num)):
                raise ReplyError(f"expected a whole number, got {num}")
            return int(float(num))
        return float(num)
    if k == "bool":
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower().rstrip(".")
        if s in ("true", "yes", "y", "1", "correct", "right"):
            return True
        if s in ("false", "no", "n", "0", "incorrect", "wrong"):
            return False
        raise ReplyError(f"expected true or false, got {str(value)[:40]!r}")
    if k == "enum":
        return _enum(value, t.values)
    if k == "list":
        items = value
        if isinstance(value, str):
            s = value.strip()
            try:
                parsed = json.loads(s)
                items = parsed if isinstance(parsed, list) else [parsed]
            except ValueError:
                lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", ln) for ln in s.splitlines() if ln.strip()]
                items = lines if len(lines) > 1 else [x.strip() for x in s.split(",") if x.strip()]
        elif not isinstance(value, list):
            items = [value]
        return [coerce(x, t.arg) for x in items] if t.arg is not None else list(items)
    if k == "record":
        if isinstance(value, str):
            obj = extract_object(value)
            if obj is None:
                raise ReplyError(f"expected an object for {t.name}")
            value = obj
        if not isinstance(value, dict):
            raise ReplyError(f"expected an object for {t.name}, got {type(value).__name__}")
        by_norm = {_norm(kk): vv for kk, vv in value.items()}
        out = {}
        for fname, ftype, _ in t.fields:
            v = by_norm.get(_norm(fname))
            if v is None and not ftype.optional:
                raise ReplyError(f"{t.name} is missing '{fname}'")
            out[fname] = coerce(v, ftype) if v is not None else None
        return out
    return value


def _spaced(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.lower()).strip()


def _enum(value: Any, allowed: tuple[str, ...]) -> str:
    s = str(value).strip().strip("\"'.`")
    if s in allowed:
        return s
    norm = {_norm(a): a for a in allowed}
    if _norm(s) in norm:
        return norm[_norm(s)]
    # The reply names exactly one allowed value somewhere ("Intent: book_restaurant because ...").
    spaced = _spaced(s)
    hits = [a for a in allowed if re.search(r"\b" + re.escape(_spaced(a)) + r"\b", spaced)]
    if len(hits) == 1:
        return hits[0]
    close = difflib.get_close_matches(_norm(s), list(norm), n=1, cutoff=0.75)
    if close:
        return norm[close[0]]
    raise ReplyError(f"{s[:40]!r} is not one of: " + ", ".join(allowed))


def normalize_value(v: Any) -> Any:
    """Comparison form for test assertions: strings trimmed and lowercased, numbers as floats."""
    if isinstance(v, str):
        return v.strip().lower()
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [normalize_value(x) for x in v]
    return v
