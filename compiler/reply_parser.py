"""Tolerant parsing of LM replies into typed fields.

Small models rarely reply with clean JSON. This module accepts code fences, prose around the object,
single quotes, trailing commas, unquoted keys, Python literals, unclosed braces, `field: value` lines,
keys in another case, and enum values that are near misses. What still does not fit raises
`ReplyError` with a message meant to be shown to the model on its one retry.
"""
from __future__ import annotations

import ast
import difflib
import json
import math
import re
from typing import Any

from .dsl.types import Type, show


class ReplyError(ValueError):
    """The reply could not be read as the expected fields; the message says why, for the model."""


_NORM = re.compile(r"[\s_\-*`]+")


def _norm(key: str) -> str:
    return _NORM.sub("", key).lower()


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def _balanced_object(text: str, start: int) -> str:
    """The {...} starting at `start`, honoring strings; closed if the reply was cut off."""
    in_str, esc, quote = False, False, ""
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


_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _repair(blob: str) -> str:
    """Rewrite near-JSON as JSON, never touching the inside of strings: single-quoted strings,
    bare keys, Python literals, trailing commas."""
    out: list[str] = []
    i, n = 0, len(blob)
    while i < n:
        c = blob[i]
        if c in "\"'":
            j, chars = i + 1, []
            while j < n and blob[j] != c:
                if blob[j] == "\\" and j + 1 < n:
                    nxt = blob[j + 1]
                    chars.append(nxt if nxt in "'\"" else "\\" + nxt)
                    j += 2
                    continue
                chars.append(blob[j])
                j += 1
            body = "".join(chars)
            out.append(json.dumps(body.replace("\\n", "\n").replace("\\t", "\t"), ensure_ascii=False))
            i = j + 1
            continue
        if c.isalpha() or c == "_":
            j = i
            while j < n and (blob[j].isalnum() or blob[j] in "_- "):
                j += 1
            word = blob[i:j].rstrip()
            k = i + len(word)
            rest = blob[k:].lstrip()
            prev = "".join(out).rstrip()[-1:]
            if rest.startswith(":") and prev in ("{", ","):
                out.append(json.dumps(word))                      # a bare key
            elif word in _LITERALS:
                out.append(_LITERALS[word])
            else:
                out.append(word)
            i = k
            continue
        if c == ",":
            rest = blob[i + 1:].lstrip()
            if rest[:1] in ("}", "]"):                             # a trailing comma
                i += 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def extract_object(text: str) -> dict | None:
    """Find and repair a JSON object in a reply.

    >>> extract_object("Sure! ```json\\n{'intent': 'play_music',}\\n```")
    {'intent': 'play_music'}
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for cand in candidates:
        cand = cand.strip()
        try:
            value = json.loads(cand)
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        start = cand.find("{")
        while start >= 0:
            blob = _balanced_object(cand, start)
            for attempt in (blob, _repair(blob)):
                try:
                    value = json.loads(attempt)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    return value
            try:                                                   # a Python dict literal
                value = ast.literal_eval(blob)
                if isinstance(value, dict):
                    return value
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
            start = cand.find("{", start + 1)
    return None


_HEADER = re.compile(r"^\s*\[\[\s*##\s*([A-Za-z][\w \-]{0,40}?)\s*##\s*\]\]\s*(.*)$")
_FIELD = re.compile(r"^\s*[*#`]*\s*([A-Za-z][\w \-]{0,40}?)\s*[*`]*\s*[:=]\s*(?:[*`]+\s*)?(.*)$")


def _field_lines(text: str, names: list[str]) -> dict[str, str]:
    """`Field: value` lines (also `**Field**:` and DSPy's `[[ ## field ## ]]` headers), values running
    to the next field."""
    wanted = {_norm(n): n for n in names}
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = _HEADER.match(line) or _FIELD.match(line)
        if m and _norm(m.group(1)) in wanted:
            current = wanted[_norm(m.group(1))]
            found[current] = [m.group(2)] if m.group(2) else []
        elif current is not None:
            found[current].append(line)
    return {k: "\n".join(v).strip() for k, v in found.items()}


def parse_reply(text: str, fields: list[tuple[str, Type]], truncated: bool = False) -> dict[str, Any]:
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
    if type(obj) is dict and all(n in obj and (t.kind == "str" or obj[n] not in ("", None)) for n, t in fields):
        try:
            return {n: coerce(obj[n], t) for n, t in fields}
        except ReplyError:
            pass     # the slow path below names every problem at once
    names = [n for n, _ in fields]
    obj = extract_object(text)
    if truncated and obj:
        # The reply stopped at the token limit inside the object: its last value may be cut short.
        # A cut number or flag is a wrong answer (12 of 12345), so it does not count; cut text
        # (a long rationale) is still the model's text and is kept.
        obj = dict(obj)
        last = next(reversed(obj))
        kinds = {_norm(n): t.kind for n, t in fields}
        if not (isinstance(obj[last], str) and kinds.get(_norm(last)) == "str"):
            obj.pop(last)
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
        required = {n for n, t in fields if not t.optional}
        if len(missing) == 1 and len(unclaimed) == 1 and missing[0] in required:
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


def scrub(text: str) -> str:
    """`text` with every lone UTF-16 surrogate replaced by U+FFFD (a surrogate pair held as two code
    points is joined into its character). A reply cut inside an emoji pair (`"\\ud83d"`) is otherwise
    text that cannot be encoded, written or cached.

    >>> scrub("ok"), scrub("cut \\ud83d"), scrub("\\ud83d\\ude00")
    ('ok', 'cut \ufffd', '😀')
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def scrub_data(value: Any) -> Any:
    """`scrub` applied to every string of a JSON-like value (keys included)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_data(k): scrub_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_data(v) for v in value]
    return value


_LONE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any) -> str | None:
    """A description of the first lone surrogate in any string of `value`, or None.

    >>> lone_surrogate("fine"), lone_surrogate(["a", "b\\ud800"])
    (None, 'a lone surrogate \\\\ud800 at character 2 of item 2')
    """
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
            return None
        except UnicodeEncodeError as err:
            return f"a lone surrogate \\u{ord(value[err.start]):04x} at character {err.start + 1}"
    items = value.items() if isinstance(value, dict) else enumerate(value, 1) if isinstance(value, list) else ()
    for k, v in items:
        found = lone_surrogate(k) if isinstance(k, str) else None
        if found:
            return f"{found} of key {k.encode('utf-8', 'backslashreplace').decode()!r}"
        found = lone_surrogate(v)
        if found:
            where = f"item {k}" if isinstance(value, list) else f"field {k.encode('utf-8', 'backslashreplace').decode()!r}"
            return f"{found} of {where}"
    return None


def input_problem(value: Any, t: Type) -> str | None:
    """Why a value read from data (a batch row, a dataset) cannot be input `t`, beyond what `coerce`
    checks, or None. Replies are read tolerantly; data is not: a `str` input takes text (or a plain
    number or boolean), not a list, an object, NaN or an infinity, and no input takes text that is
    not valid Unicode (a lone surrogate cannot be sent, cached or written).

    >>> input_problem(["a"], Type("str")), input_problem(float("nan"), Type("str")), input_problem("ok", Type("str"))
    ('expected text, got a list', 'expected text, got nan', None)
    """
    if value is None:
        return None
    if t.kind == "str":
        if isinstance(value, (list, dict)):
            return f"expected text, got {'a list' if isinstance(value, list) else 'an object'}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected text, got {value}"
    elif t.kind == "list" and t.arg is not None and isinstance(value, list):
        for i, item in enumerate(value, 1):
            problem = input_problem(item, t.arg)
            if problem:
                return f"item {i}: {problem}"
    found = lone_surrogate(value)
    if found:
        return f"text with {found} is not valid Unicode (half of a cut emoji pair?)"
    return None


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
        return scrub_data(value)
    if k == "str":
        if isinstance(value, str):
            return scrub(value.strip())
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return scrub("\n".join(value))
        return scrub(json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value))
    if k in ("int", "float"):
        if isinstance(value, bool):
            raise ReplyError(f"expected {k}, got a boolean")
        if isinstance(value, (int, float)):
            num = value
        elif isinstance(value, (list, dict)):
            raise ReplyError(f"expected a number, got a {'list' if isinstance(value, list) else 'object'}")
        else:
            m = _NUMBER.search(str(value))
            if not m:
                raise ReplyError(f"expected a number, got {str(value)[:40]!r}")
            num = float(m.group(0).replace(",", ""))
        try:
            finite = math.isfinite(float(num))
        except OverflowError:
            finite = False
        if not finite:
            raise ReplyError(f"expected a finite number, got {str(value)[:40]!r}")
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
    if len(hits) == 1 and not re.search(r"\b(not|no|never|isn t|isnt|n t)\s+" + re.escape(_spaced(hits[0])) + r"\b",
                                        spaced.replace("'", " ")):
        return hits[0]
    scored = sorted(((difflib.SequenceMatcher(None, _norm(s), k).ratio(), k) for k in norm), reverse=True)
    if scored and scored[0][0] >= 0.75 and (len(scored) == 1 or scored[0][0] - scored[1][0] > 0.05):
        return norm[scored[0][1]]
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
