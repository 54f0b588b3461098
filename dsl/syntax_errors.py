"""The table of common syntax mistakes, matched against parser states for friendly messages.

Each key is `message|hint`; each value lists malformed snippets that fail in the same parser state as
the mistake. `UnexpectedInput.match_examples` picks the entry whose state matches the real error.
"""
from __future__ import annotations

KNOWN_MISTAKES: dict[str, list[str]] = {
    "missing '=' in module declaration|write `module name = Kind(Signature, option: value)`": [
        "module m Predict(S)",
    ],
    "a module needs a kind and a signature|write `module name = Predict(Signature)`": [
        "module m = Predict()",
        "module m = Predict",
    ],
    "options are written `name: value`|for example `temperature: 0.7`": [
        "module m = Predict(S, lm = local)",
        "module m = Predict(S, lm local)",
        'lm a = "x" (temperature = 0)',
    ],
    "missing ':' between the field name and its type|write `in question: str`": [
        "signature S { in q str }",
        "signature S { out a str }",
        "record R { a str }",
    ],
    "a field needs a type after ':'|for example `in question: str` or `out labels: list[str]`": [
        "signature S { in q: }",
        "signature S { in q: \"desc\" }",
        "pipeline p(x:) -> (a) { }",
    ],
    "fields start with `in` or `out`|write `in question: str` or `out answer: str`": [
        "signature S { q: str }",
        "signature S { input q: str }",
    ],
    "pipeline outputs go in parentheses|write `pipeline name(inputs) -> (output1, output2) { ... }`": [
        "pipeline p(x: str) -> a { }",
        "pipeline p(x: str) -> a: str { }",
    ],
    "missing '->' before the pipeline outputs|write `pipeline name(inputs) -> (outputs) { ... }`": [
        "pipeline p(x: str) (a) { }",
        "pipeline p(x: str) { }",
    ],
    "call arguments are written `name: value`|for example `classify(utterance: utterance)`": [
        "pipeline p(x: str) -> (a) { y = m(x = x) }",
        "test \"t\" { p(x = \"a\") -> a == \"b\" }",
    ],
    "a return names each output: `return name = value`|for example `return answer = a.answer`": [
        "pipeline p(x: str) -> (a) { return y.a }",
        "pipeline p(x: str) -> (a) { return y }",
        "pipeline p(x: str) -> (a) { return }",
    ],
    "a statement must be `name = expression` or `return ...`|pipeline bodies hold assignments like `c = classify(utterance: u)`": [
        "pipeline p(x: str) -> (a) { m(x: x) }",
        "pipeline p(x: str) -> (a) { y.a }",
    ],
    "missing ',' between arguments|separate arguments with commas": [
        "pipeline p(x: str) -> (a) { y = m(a: x b: x) }",
        "module m = Predict(S lm: x)",
        "pipeline p(x: str y: int) -> (a) { }",
    ],
    "unclosed '{'|every `{` needs a matching `}`": [
        "signature S { in q: str",
        "pipeline p(x: str) -> (a) { y = m(a: x)",
        "record R { a: str",
    ],
    "unclosed '('|every `(` needs a matching `)`": [
        "pipeline p(x: str) -> (a) { y = m(a: x }",
        "module m = Predict(S",
    ],
    "a declaration starts here|top-level items are import, lm, default, signature, record, module, tool, pipeline, compile and test": [
        "def p(x): pass",
        "x = 1",
        "function p() {}",
        "\"stray string\"",
    ],
    "a test case is `pipeline(args) -> field == value`|for example `intent(utterance: \"hi\") -> intent == \"greet\"`": [
        "test \"t\" { p(x: \"a\") }",
        "test \"t\" { p(x: \"a\") -> }",
        "test \"t\" { p(x: \"a\") -> a }",
    ],
    "a signature's instruction comes first, before its fields|move the string to the line after `signature Name {`": [
        "signature S { in q: str \"d\" \"instruction\" }",
    ],
    "tools are declared `tool name = python(\"package.module:function\")`|the target is a string": [
        "tool t = python(pkg.mod:fn)",
        "tool t python(\"a:b\")",
    ],
}

_WORDS = {
    "NAME": "a name", "STRING": "a string", "LONG_STRING": "a string", "NUMBER": "a number",
    "$END": "end of file", "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "COLON": "':'", "COMMA": "','", "EQUAL": "'='", "DOT": "'.'",
    "PLUS": "'+'", "QMARK": "'?'", "OPTIONAL": "'?'",
}


def describe_token(token) -> str:
    """How a token reads in a message: `'}'`, `name 'foo'`, `end of file`."""
    if token is None or token.type == "$END":
        return "end of file"
    if token.type == "NAME":
        return f"name '{token}'"
    if token.type in ("STRING", "LONG_STRING"):
        return "string"
    if token.type == "NUMBER":
        return f"number {token}"
    return f"'{token}'"


def describe_expected(names, lark) -> str:
    """A readable, sorted list of what the parser would have accepted."""
    words = set()
    for name in names or ():
        if name in _WORDS:
            words.add(_WORDS[name])
            continue
        try:
            pattern = lark.get_terminal(name).pattern
            words.add(f"'{pattern.value}'" if pattern.type == "str" else name.lower())
        except KeyError:
            words.add(name.lower())
    ordered = sorted(words)
    if len(ordered) > 8:
        ordered = ordered[:8] + ["..."]
    return ", ".join(ordered)
