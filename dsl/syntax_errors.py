"""The table of common syntax mistakes, matched against parser states for friendly messages.

Each key is `message|hint`, optionally followed by `|at-previous` to put the caret on the token before
the one the parser stopped at (where the faulty statement starts); each value lists malformed
snippets that fail in the same parser state as the mistake. `match_mistake` picks the entry whose
state matches the real error. Lark's own `UnexpectedInput.match_examples` is not used: since lark
1.2 it compares whole parser stacks, so an example only matched a mistake made at the same nesting
depth (and it crashed on some states). Here only the LALR state at the top of the stack is compared,
which is what decides the error.
"""
from __future__ import annotations

from typing import Callable

from lark.exceptions import UnexpectedCharacters, UnexpectedInput

KNOWN_MISTAKES: dict[str, list[str]] = {
    "a map needs a bound: `map q in xs max 8 { ... }`|the bound caps the items it runs, so the worst-case LM calls are known": [
        "pipeline p(x: list[str]) -> (a) { y = map q in x { m(q: q) } return a = y }",
        "pipeline p(x: list[str]) -> (a) { y = map q in x ordered { m(q: q) } return a = y }",
        "pipeline p(x: str) -> (a) { y = map q in x.y { m(q: q) } return a = y }",
        "pipeline p(x: str) -> (a) { y = map q in x.y ordered { m(q: q) } return a = y }",
        "pipeline p(x: str) -> (a) { y = map q in m(a: x).y { m(q: q) } return a = y }",
        "pipeline p(x: str) -> (a) { y = map q in x + x { m(q: q) } return a = y }",
    ],
    "missing '=' in lm declaration|write `lm name = \"provider/model\"`": [
        'lm local "local/smollm2"',
        'lm local: "local/smollm2"',
        'lm local local/smollm2',
    ],
    "an lm is a model id in quotes, or a fallback over other lms|write `lm name = \"provider/model\"` or `lm name = fallback(gpt, local)`": [
        "lm a = gpt",
        "lm a = [gpt, local]",
        "lm a = 3",
    ],
    "a fallback names the lms it tries in parentheses, unquoted|write `lm name = fallback(gpt, local)`: the first that answers wins": [
        "lm a = fallback gpt, local",
        "lm a = fallback[gpt, local]",
        'lm a = fallback("gpt", "local")',
        "lm a = fallback()",
        'lm a = fallback(gpt, "local")',
    ],
    "the default LM is set with `default lm = name`|for example `default lm = local`": [
        "default = local",
        "default local",
        "default lm local",
        "default lm = \"local\"",
    ],
    "missing '=' in module declaration|write `module name = Kind(Signature, option: value)`": [
        "module m Predict(S)",
        "module m: Predict(S)",
    ],
    "a module needs a kind and a signature|write `module name = Predict(Signature)`": [
        "module m = Predict()",
        "module m = Predict",
        "module m = Predict(lm: local)",
        "module m = Predict(\"S\")",
    ],
    "a one_of module lists its kinds, then takes the signature in parentheses of its own|write `module name = one_of(Predict, ChainOfThought)(Signature)`": [
        "module m = one_of(Predict, ChainOfThought)",
        "module m = one_of(Predict, ChainOfThought) Task",
    ],
    "one_of takes the kinds it chooses between in parentheses|write `one_of(Predict, ChainOfThought, Majority(n: 5))(Signature)`": [
        "module m = one_of Predict, ChainOfThought (S)",
        "module m = one_of[Predict, ChainOfThought](S)",
        "module m = one_of",
    ],
    "one_of names module kinds, each with its own options in parentheses|write `one_of(Predict, Majority(n: 5))(Signature)`": [
        "module m = one_of()(S)",
        "module m = one_of(Predict, \"CoT\")(S)",
    ],
    "options are written `name: value`|for example `temperature: 0.7`": [
        "module m = Predict(S, lm = local)",
        "module m = Predict(S, lm local)",
        'lm a = "x" (temperature = 0)',
        'lm a = "x" (temperature 0)',
    ],
    "a record's fields are written `name: value`, names unquoted|for example `{question: \"2+2?\", answer: \"4\"}`": [
        'module m = Predict(S, demos: [{"q": "x"}])',
        'module m = Predict(S, demos: [{q: "x", "a": "y"}])',
        'module m = Predict(S, demos: [{1: "x"}])',
    ],
    "option values are literals or names|write a string, a number, true/false, a list, or the name of a declaration": [
        'lm a = "x" (temperature: )',
        "module m = Predict(S, lm: )",
        "module m = Predict(S, lm: a.b)",
    ],
    "missing ':' between the field name and its type|write `in question: str`": [
        "signature S { in q str }",
        "signature S { out a str }",
        "record R { a str }",
        "signature S { in q }",
        "signature S { in q = str }",
        "record R { a = str }",
    ],
    "a field needs a type after ':'|for example `in question: str` or `out labels: list[str]`": [
        "signature S { in q: }",
        "signature S { in q: \"desc\" }",
        "pipeline p(x:) -> (a) { }",
        "record R { a: }",
        "tool t(q: ) -> str = python(\"a:b\")",
        "pipeline p(x: str) -> (a: ) { }",
    ],
    "a pipeline input needs a type|write `pipeline name(question: str) -> (answer) { ... }`": [
        "pipeline p(x) -> (a) { }",
        "pipeline p(x, y: str) -> (a) { }",
        "pipeline p(y: str, x) -> (a) { }",
        "tool t(q) -> str = python(\"a:b\")",
    ],
    "enum values go in parentheses|write `enum(a, b, c)`": [
        "signature S { out a: enum[x, y] }",
        "signature S { out a: enum }",
        "signature S { out a: enum x }",
    ],
    "an enum needs at least one value|write `enum(a, b, c)`": [
        "signature S { out a: enum() }",
    ],
    "a list type is written `list[T]`|for example `list[str]`": [
        "signature S { out a: list(str) }",
        "signature S { out a: list[] }",
        "signature S { out a: list[str, int] }",
    ],
    "fields start with `in` or `out`|write `in question: str` or `out answer: str`": [
        "signature S { q: str }",
        "signature S { input q: str }",
        "signature S { in q: str output a: str }",
    ],
    "pipeline outputs go in parentheses|write `pipeline name(inputs) -> (output1, output2) { ... }`": [
        "pipeline p(x: str) -> a { }",
        "pipeline p(x: str) -> a: str { }",
    ],
    "missing '->' before the pipeline outputs|write `pipeline name(inputs) -> (outputs) { ... }`": [
        "pipeline p(x: str) (a) { }",
        "pipeline p(x: str) { }",
        "pipeline p(x: str) : (a) { }",
        "pipeline p(x: str) => (a) { }",
    ],
    "a pipeline declares its inputs in parentheses|write `pipeline name(question: str) -> (answer) { ... }`": [
        "pipeline p -> (a) { }",
        "pipeline p { }",
        "pipeline p = (x: str) -> (a) { }",
    ],
    "arguments are written `name: value`|for example `classify(utterance: u)` or `bootstrap_fewshot(max_demos: 4)`": [
        "pipeline p(x: str) -> (a) { y = m(x = x) }",
        "compile p { optimizer = bootstrap_fewshot(max_demos = 4) }",
        "test \"t\" { p(x = \"a\") -> a == \"b\" }",
    ],
    "a return names each output: `return name = value`|for example `return answer = a.answer`|at-previous": [
        "pipeline p(x: str) -> (a) { return y.a }",
        "pipeline p(x: str) -> (a) { return y }",
        "pipeline p(x: str) -> (a) { return }",
        "pipeline p(x: str) -> (a) { return \"s\" }",
        "pipeline p(x: str) -> (a) { return m(x: x) }",
        "pipeline p(x: str) -> (a) { return a: x }",
        "pipeline p(x: str) -> (a) { return a = x, y.b }",
    ],
    "missing '=' in assignment|write `name = expression`, e.g. `c = classify(utterance: u)`": [
        "pipeline p(x: str) -> (a) { y m(x: x) }",
        "pipeline p(x: str) -> (a) { y: m(x: x) }",
        "pipeline p(x: str) -> (a) { y := m(x: x) }",
    ],
    "a statement must be `name = expression` or `return ...`|pipeline bodies hold assignments like `c = classify(utterance: u)`|at-previous": [
        "pipeline p(x: str) -> (a) { m(x: x) }",
        "pipeline p(x: str) -> (a) { y.a }",
        "pipeline p(x: str) -> (a) { \"s\" }",
        "pipeline p(x: str) -> (a) { y = m(x: x) m(x: x) }",
    ],
    "missing ',' between arguments|separate arguments with commas": [
        "pipeline p(x: str) -> (a) { y = m(a: x b: x) }",
        "module m = Predict(S lm: x)",
        "pipeline p(x: str y: int) -> (a) { }",
        "pipeline p(x: str) -> (a b) { }",
        'lm a = "x" (temperature: 0 max_tokens: 3)',
    ],
    "expected a value after '='|assignments and settings use a single '='; `==` only compares values in test blocks": [
        "compile p { trainset == \"x\" }",
        "pipeline p(x: str) -> (a) { y == m(x: x) }",
        "pipeline p(x: str) -> (a) { y = }",
        "compile p { trainset = }",
    ],
    "statements are not separated by ','|put each statement on its own line": [
        "pipeline p(x: str) -> (a) { y = m(x: x), return a = y.a }",
        "pipeline p(x: str) -> (a) { y = x, z = x }",
    ],
    "missing ',' between list items|write `[a, b, c]`": [
        "pipeline p(x: str) -> (a) { y = [x x] }",
        "module m = Predict(S, stop: [\"a\" \"b\"])",
    ],
    "compile settings are written `name = value`|for example `trainset = \"train.jsonl\"`": [
        "compile p { trainset: \"x\" }",
        "compile p { trainset \"x\" }",
        "compile p { metric: exact_match(a) }",
    ],
    "a compile block names the pipeline it compiles|write `compile pipeline_name { ... }`": [
        "compile { }",
        "compile \"p\" { }",
    ],
    "a test has a name in double quotes|write `test \"books a table\" { ... }`": [
        "test t { }",
        "test { }",
    ],
    "a test case is `pipeline(args) -> field == value`|for example `intent(utterance: \"hi\") -> intent == \"greet\"`": [
        "test \"t\" { p(x: \"a\") }",
        "test \"t\" { p(x: \"a\") -> }",
        "test \"t\" { p(x: \"a\") -> a }",
        "test \"t\" { p(x: \"a\") -> a = \"b\" }",
        "test \"t\" { p(x: \"a\") a == \"b\" }",
        "test \"t\" { a == \"b\" }",
    ],
    "a signature's instruction comes first, before its fields|move the string to the line after `signature Name {`": [
        "signature S { in q: str \"d\" \"instruction\" }",
    ],
    "tools are declared `tool name = python(\"package.module:function\")`|the target is a string": [
        "tool t = python(pkg.mod:fn)",
        "tool t python(\"a:b\")",
        "tool t = python(pkg.mod)",
        "tool t = \"a:b\"",
    ],
    "a tool's signature is `(param: type, ...) -> type`|for example `tool search(query: str) -> list[str] = python(\"m:f\")`": [
        "tool t(q: str) = python(\"a:b\")",
        "tool t(q: str) -> = python(\"a:b\")",
    ],
    "an import names a file in double quotes|write `import \"shared.pipe\"`": [
        "import shared",
        "import shared.pipe",
    ],
}

# Item keywords that can start a top-level declaration, for "did you mean 'signature'?" on typos.
ITEM_KEYWORDS = ("import", "lm", "default", "signature", "record", "module", "tool", "pipeline", "compile", "test")

_WORDS = {
    "NAME": "a name", "STRING": "a string", "LONG_STRING": "a string", "NUMBER": "a number",
    "$END": "end of file", "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "COLON": "':'", "COMMA": "','", "EQUAL": "'='", "DOT": "'.'",
    "PLUS": "'+'", "QMARK": "'?'", "OPTIONAL": "'?'",
}

MistakeIndex = list[tuple[str, object, str, str]]


def error_state(err: UnexpectedInput):
    """The LALR state an error happened in, comparable across parses (None when lark gives none).

    Lark hands out its whole parser state, whose equality also compares stack depth; only the state on
    top of the stack says what the parser expected.
    """
    state = getattr(err, "state", None)
    if state is None:
        return None
    kind = "chars" if isinstance(err, UnexpectedCharacters) else "token"
    return kind, getattr(state, "position", state)


def index_mistakes(parse_fn: Callable[[str], object]) -> MistakeIndex:
    r"""Parse every example of the table once and record where it fails: (label, state, token type, text).

    Examples that parse without an error are skipped (the tests check that there are none).

    >>> from lark import Lark
    >>> index = index_mistakes(Lark('start: "lm" NAME "=" NAME\nNAME: /[a-z]+/\n%ignore " "', parser="lalr").parse)
    >>> [(ttype, text) for label, _, ttype, text in index if label.startswith("missing '=' in lm")][-1]
    ('NAME', 'local')
    """
    index = []
    for label, examples in KNOWN_MISTAKES.items():
        for example in examples:
            try:
                parse_fn(example)
            except UnexpectedInput as err:
                token = getattr(err, "token", None)
                index.append((label, error_state(err), getattr(token, "type", ""), str(token or "")))
    return index


def match_mistake(err: UnexpectedInput, index: MistakeIndex) -> str | None:
    """The label of the table entry that fails like `err`: same token text, then same token type, then same state.

    >>> from lark import Lark
    >>> lark = Lark('start: "a" "b"', parser="lalr")
    >>> try:
    ...     lark.parse("a a")
    ... except UnexpectedInput as e:
    ...     error = e
    >>> match_mistake(error, [("doubled a|write ab", error_state(error), "A", "a")])
    'doubled a|write ab'
    """
    state = error_state(err)
    if state is None:
        return None
    token = getattr(err, "token", None)
    ttype, text = getattr(token, "type", ""), str(token or "")
    ranked = []
    for order, (label, ex_state, ex_type, ex_text) in enumerate(index):
        if ex_state != state:
            continue
        rank = 0 if (ex_type, ex_text) == (ttype, text) else 1 if ex_type == ttype else 2
        ranked.append((rank, order, label))
    return min(ranked)[2] if ranked else None


def describe_token(token) -> str:
    """How a token reads in a message: `'}'`, `name 'foo'`, `end of file`."""
    if token is None or token.type == "$END":
        return "end of file"
    if token.type == "NAME":
        return f"name '{_shorten(str(token))}'"
    if token.type in ("STRING", "LONG_STRING"):
        return "string"
    if token.type == "NUMBER":
        return f"number {token}"
    return f"'{_shorten(str(token))}'"


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
