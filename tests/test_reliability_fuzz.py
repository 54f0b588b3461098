"""Malformed .pipe input: thousands of generated files through the front end, never a traceback.

Three hypothesis strategies, all derandomized (the same inputs on every run, no example database):

* mutations of the example files (`examples/*.pipe`): token deletion, duplication, swaps and
  replacement by other tokens of the language, character drops, stray insertions (including odd
  characters: NUL, BOM, form feed, wide characters), truncation, and splices of two files;
* random token streams drawn from the language's own tokens (keywords, punctuation, names, every
  kind of literal, comments, newlines), joined with random spacing;
* syntactically well-formed programs with random declarations, names, types, options and
  references (these get past the parser into the checker's semantic passes).

Every input goes through `pipec.dsl.parse` + `check` (with `pipec.registry.catalogue()`) and the
diagnostics are rendered; a file that checks clean is also built into a `Program` (lowering, module
kinds, tool signature checks) on a scripted LM. Each input must end in diagnostics or success, with
no exception, and take less than a second of CPU time. A few inputs also go through `pipec.dsl.load`
with imports on disk, and through the `pipec check` command line.
"""
from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import pipec
from pipec.registry import catalogue
from pipec.dsl import PipeError, check, load, parse, render_all
from pipec.dsl.loader import Loaded
from pipec.dsl.syntax_errors import ITEM_KEYWORDS
from pipec.program import Program

from fault_server import pipec_cli, record_figure

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.pipe"))
SEEDS = [p.read_text(encoding="utf-8") for p in EXAMPLES]
LIMIT_S = 1.0          # CPU seconds per input

_TOKEN = re.compile(r'"""[\s\S]*?"""|"(?:[^"\\\n]|\\.)*"|#[^\n]*|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\w+|->|==|!=|\S')

KEYWORDS = [*ITEM_KEYWORDS, "in", "out", "enum", "list", "map", "ordered", "max", "return", "true", "false", "contains", "python",
            "one_of"]
PUNCT = ["{", "}", "(", ")", "[", "]", ":", "=", ",", ".", "+", "->", "==", "!=", "?", "-"]
NAMES = sorted({m for s in SEEDS for m in re.findall(r"\b[A-Za-z_]\w*\b", s)} | {"str", "int", "float", "bool", "x", "_"})
LITERALS = ['"text"', '""', '"esc \\n \\t \\" \\\\ \\u00e9"', '"bad \\u12"', '"bad \\q"', '"unterminated',
            '"""long\n  text"""', '"""unterminated long', "0", "-1", "3.5", "1e999", "-0", "99999999999999999999999",
            '"local/smollm2"', '"openai/gpt-4o-mini"', '"sk-abcdefghijklmnop1234"', '"../x.pipe"', '"other.pipe"',
            '"examples.tools:calculate"', '"no.such:thing"', '"é漢字"', '"\\u0000"']
ODD = ["\x00", "\ufeff", "\x0c", "\t", "\r", "\r\n", "\u2028", "漢", "é", "\U0001f600", "\\", "'", "`", "@", "$", ";",
       "#", "\n", " " * 40]
ALL_TOKENS = KEYWORDS + PUNCT + NAMES + LITERALS + ODD


def front_end(source: str, path: str = "m.pipe") -> list:
    """Parse, check and render; for a clean file, also build the runnable Program. Returns diagnostics."""
    file, syntax = parse(source, path)
    program, semantic = check([file], catalogue())
    diags = syntax + semantic
    render_all(diags, {path: source})
    render_all(diags, {path: source}, True)          # the colored rendering too
    if not any(d.severity == "error" for d in diags):
        loaded = Loaded(program, diags, {path: source})
        try:
            Program(loaded, ROOT / path, None, lm=pipec.ScriptedLM([]), cache=False)
        except PipeError:
            pass                                      # tool diagnostics: still diagnostics
        except ValueError as err:                     # no pipeline / several pipelines: a usage error
            assert "pipeline" in str(err), err
    return diags


class Tally:
    def __init__(self, name: str):
        self.name, self.n, self.clean, self.max_cpu, self.max_wall, self.total = name, 0, 0, 0.0, 0.0, 0.0

    def run(self, source: str) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            diags = front_end(source)
        except Exception as err:   # the failure message is the point
            raise AssertionError(f"{type(err).__name__}: {err} on input:\n{source!r}") from err
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        assert cpu < LIMIT_S, f"{cpu:.2f}s CPU on input:\n{source!r}"
        self.n += 1
        self.clean += not any(d.severity == "error" for d in diags)
        self.max_cpu, self.max_wall, self.total = max(self.max_cpu, cpu), max(self.max_wall, wall), self.total + wall

    def report(self, minimum: int) -> None:
        record_figure(f"fuzz.{self.name}", inputs=self.n, checked_clean=self.clean, max_cpu_s=round(self.max_cpu, 4),
                      max_wall_s=round(self.max_wall, 4), mean_ms=round(1000 * self.total / max(1, self.n), 2))
        assert self.n >= minimum, f"only {self.n} inputs were tried"


FUZZ = dict(deadline=None, database=None, derandomize=True, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def warm_parser():
    front_end(SEEDS[0])      # build the parser tables outside the timing


# ------------------------------------------------------------------ mutations of the examples
def _spans(source: str) -> list[tuple[int, int]]:
    return [m.span() for m in _TOKEN.finditer(source)] or [(0, 0)]


def mutate(source: str, ops: list[tuple[int, float, float, str]], other: str) -> str:
    for op, a, b, tok in ops:
        spans = _spans(source)
        i, j = spans[int(a * len(spans)) % len(spans)], spans[int(b * len(spans)) % len(spans)]
        if op == 0:                                   # delete a token
            source = source[:i[0]] + source[i[1]:]
        elif op == 1:                                 # duplicate a token
            source = source[:i[0]] + source[i[0]:i[1]] + " " + source[i[0]:]
        elif op == 2 and i != j:                      # swap two tokens
            (p, q), (r, s) = sorted([i, j])
            source = source[:p] + source[r:s] + source[q:r] + source[p:q] + source[s:]
        elif op == 3:                                 # replace a token by another of the language
            source = source[:i[0]] + tok + source[i[1]:]
        elif op == 4:                                 # insert a token between two
            source = source[:i[1]] + " " + tok + source[i[1]:]
        elif op == 5 and source:                      # drop one character
            k = int(a * len(source))
            source = source[:k] + source[k + 1:]
        elif op == 6:                                 # truncate
            source = source[: int(a * len(source))]
        elif op == 7:                                 # splice a piece of another file in
            k, lo = int(a * len(source)), int(b * len(other))
            source = source[:k] + other[lo: lo + 200] + source[k:]
        else:                                         # insert an odd character anywhere
            k = int(a * (len(source) + 1))
            source = source[:k] + tok[:1] + source[k:]
    return source


mutation = st.builds(
    mutate,
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 8), st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True),
                       st.sampled_from(ALL_TOKENS)), min_size=1, max_size=6),
    st.sampled_from(SEEDS),
)


def test_mutated_examples_end_in_diagnostics_never_a_traceback():
    tally = Tally("mutations")

    @settings(max_examples=2000, **FUZZ)
    @given(mutation)
    def run(source):
        tally.run(source)

    run()
    tally.report(2000)


# ------------------------------------------------------------------ random token streams
SEPARATORS = [" ", "", "\n", "  ", "\t", " "]


def _stream(codes: list[int]) -> str:
    """One integer per token picks the token and the spacing after it (cheap to generate and shrink)."""
    return "".join(ALL_TOKENS[c // len(SEPARATORS)] + SEPARATORS[c % len(SEPARATORS)] for c in codes)


token_stream = st.lists(st.integers(0, len(ALL_TOKENS) * len(SEPARATORS) - 1), max_size=80).map(_stream)


def test_random_token_streams_end_in_diagnostics_never_a_traceback():
    tally = Tally("token_streams")

    @settings(max_examples=2000, **FUZZ)
    @given(token_stream)
    def run(source):
        tally.run(source)

    run()
    tally.report(2000)


def test_hundreds_of_broken_declarations_in_one_file_cost_linear_parsing(monkeypatch):
    """Recovery at scale: a file of 150 mutated examples (hundreds of declarations, dozens broken) ends
    in diagnostics, and lark reads each character a bounded number of times however many are broken
    (recovery used to parse the rest of the file again after each broken declaration)."""
    from pipec.dsl.parser import _lark

    lark = _lark()
    real, read = lark.parse, [0]

    def counting(text, *args, **kwargs):
        read[0] += len(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(lark, "parse", counting)
    rng = random.Random(13)
    for _ in range(5):
        parts = []
        for _ in range(150):
            ops = [(rng.randrange(9), rng.random(), rng.random(), rng.choice(ALL_TOKENS))]
            parts.append(mutate(rng.choice(SEEDS), ops, rng.choice(SEEDS)) if rng.random() < 0.4 else rng.choice(SEEDS))
        source = "\n".join(parts)
        read[0] = 0
        start = time.thread_time()
        diags = front_end(source)
        assert sum(d.code == "syntax" for d in diags) >= 10
        assert read[0] < 6 * len(source), (read[0], len(source))
        assert time.thread_time() - start < 60 * LIMIT_S
    record_figure("fuzz.many_broken_declarations", files=5, characters_read_per_character=round(read[0] / len(source), 2))


# ------------------------------------------------------------------ well-formed programs, random meaning
KINDS = list(catalogue().kinds) + ["Predikt", "Tool"]
LM_OPTS = ["temperature", "max_tokens", "top_p", "seed", "stop", "api_base", "api_key_env", "timeout", "num_retries",
           "backoff", "structured", "cache", "rpm", "n_ctx", "api_key", "temprature"]
MOD_OPTS = sorted({o for k in catalogue().kinds.values() for o in k.options} | {"colour"})
SETTINGS = ["trainset", "valset", "metric", "optimizer", "seed", "budget", "teacher", "proposer", "concurrency", "nope"]

ident = st.sampled_from(["a", "b", "c", "q", "x", "y", "text", "answer", "S", "T", "R", "m", "n", "p", "lm1", "Point",
                         "earlier", "str", "int", "in", "map"])
direction = st.sampled_from(["in", "out"])
base_type = st.sampled_from(["str", "int", "float", "bool", "R", "Point", "S", "Nope"])


@st.composite
def type_text(draw, depth=0):
    kind = draw(st.integers(0, 3 if depth < 2 else 1))
    if kind <= 1:
        t = draw(base_type)
    elif kind == 2:
        t = f"list[{draw(type_text(depth + 1))}]"
    else:
        t = "enum(" + ", ".join(draw(st.lists(st.sampled_from(["a", "b", '"c d"', "a", "x1"]), min_size=1, max_size=4))) + ")"
    return t + draw(st.sampled_from(["", "", "?"]))


value = st.one_of(st.sampled_from(['"s"', "0", "1", "-2", "0.5", "true", "false", "lm1", "m", "[a, b]", "[]", '"text"',
                                   "[m, n]", '"local/smollm2"']), st.integers(-5, 5).map(str))


@st.composite
def expr(draw, depth=0):
    choice = draw(st.integers(0, 7 if depth < 2 else 2))
    if choice == 0:
        return draw(ident)
    if choice == 1:
        return draw(st.sampled_from(['"lit"', "3", "true", "[]"]))
    if choice == 2:
        return f"{draw(ident)}.{draw(ident)}"
    if choice == 3:
        return f"{draw(expr(depth + 1))} + {draw(expr(depth + 1))}"
    if choice == 4:
        return "[" + ", ".join(draw(st.lists(expr(depth + 1), max_size=3))) + "]"
    if choice == 5:
        order = draw(st.sampled_from(["", " ordered"]))
        return f"map {draw(ident)} in {draw(expr(depth + 1))}{order} max {draw(st.integers(0, 9))} {{ {draw(expr(depth + 1))} }}"
    args = draw(st.lists(st.tuples(ident, expr(depth + 1)), max_size=3))
    if args and draw(st.booleans()):
        return f"{draw(ident)}({args[0][1]})"
    return f"{draw(ident)}(" + ", ".join(f"{k}: {v}" for k, v in args) + ")"


@st.composite
def program_text(draw):
    out = []
    for _ in range(draw(st.integers(1, 9))):
        what = draw(st.integers(0, 9))
        name = draw(ident)
        if what == 0:
            opts = ", ".join(f"{o}: {v}" for o, v in draw(st.lists(st.tuples(st.sampled_from(LM_OPTS), value), max_size=3)))
            model = draw(st.sampled_from(LITERALS[-10:-4] + ['"local/smollm2"']))
            if draw(st.integers(0, 3)) == 0:       # a fallback over lms, declared or not, itself among them maybe
                model = f"fallback({', '.join(draw(st.lists(ident, min_size=1, max_size=3)))})"
            out.append(f"lm {name} = {model} ({opts})")
        elif what == 1:
            fields = " ".join(f"{draw(direction)} {draw(ident)}: {draw(type_text())}"
                              for _ in range(draw(st.integers(0, 4))))
            out.append(f'signature {name} {{ "Do it." {fields} }}')
        elif what == 2:
            fields = " ".join(f"{draw(ident)}: {draw(type_text())}" for _ in range(draw(st.integers(0, 3))))
            out.append(f"record {name} {{ {fields} }}")
        elif what == 3:
            opts = "".join(f", {o}: {v}" for o, v in draw(st.lists(st.tuples(st.sampled_from(MOD_OPTS), value), max_size=3)))
            kind = draw(st.sampled_from(KINDS))
            if draw(st.integers(0, 3)) == 0:       # a one_of module: alternatives, some with options of their own
                alts = [draw(st.sampled_from(KINDS)) + "".join(f"({o}: {v})" for o, v in draw(
                        st.lists(st.tuples(st.sampled_from(MOD_OPTS), value), max_size=1)))
                        for _ in range(draw(st.integers(1, 3)))]
                kind = f"one_of({', '.join(alts)})"
            out.append(f"module {name} = {kind}({draw(ident)}{opts})")
        elif what == 4:
            target = draw(st.sampled_from(['"examples.tools:calculate"', '"examples.corpus:search"', '"no.such:thing"',
                                           '"os:getcwd"', '"json"']))
            out.append(f"tool {name}(q: {draw(type_text())}) -> {draw(type_text())} = python({target})")
        elif what == 5:
            params = ", ".join(f"{draw(ident)}: {draw(type_text())}" for _ in range(draw(st.integers(0, 3))))
            outs = ", ".join(draw(st.lists(ident, min_size=1, max_size=3)))
            body = "\n".join(f"    {draw(ident)} = {draw(expr())}" for _ in range(draw(st.integers(0, 4))))
            rets = ", ".join(f"{draw(ident)} = {draw(expr())}" for _ in range(draw(st.integers(1, 3))))
            out.append(f"pipeline {name}({params}) -> ({outs}) {{\n{body}\n    return {rets}\n}}")
        elif what == 6:
            sets = "\n".join(f"    {draw(st.sampled_from(SETTINGS))} = {draw(st.one_of(expr(), value))}"
                             for _ in range(draw(st.integers(0, 4))))
            out.append(f"compile {name} {{\n{sets}\n}}")
        elif what == 7:
            cmp = draw(st.sampled_from(["==", "!=", "contains", "in"]))
            out.append(f'test "t" {{ {draw(expr())} -> {draw(ident)} {cmp} {draw(expr())} }}')
        elif what == 8:
            out.append(f"default lm = {name}")
        else:
            out.append("import " + draw(st.sampled_from(LITERALS)))
    return "\n".join(out) + "\n"


def test_wellformed_random_programs_end_in_diagnostics_or_success():
    tally = Tally("random_programs")

    @settings(max_examples=1000, **FUZZ)
    @given(program_text())
    def run(source):
        tally.run(source)

    run()
    tally.report(1000)


# ------------------------------------------------------------------ through the loader and the CLI
def test_loader_with_imports_on_disk_never_raises(tmp_path):
    """`pipec.dsl.load` follows imports: mutate a file that imports another, and the imported one too."""
    rng = random.Random(6)
    lib = ('signature S { "Echo." in q: str out a: str }\nmodule m = Predict(S)\n'
           'lm l = "local/smollm2" (temperature: 0)\n')
    main = 'import "lib.pipe"\nimport "sub/other.pipe"\npipeline p(q: str) -> (a) {\n    r = m(q: q)\n    return a = r.a\n}\n'
    (tmp_path / "sub").mkdir()
    n = 0
    for i in range(300):
        (tmp_path / "lib.pipe").write_text(mutate(lib, [(rng.randrange(9), rng.random(), rng.random(),
                                                         rng.choice(ALL_TOKENS))], main), encoding="utf-8")
        (tmp_path / "sub" / "other.pipe").write_text(rng.choice(['import "../main.pipe"', 'import "../lib.pipe"',
                                                                  "", 'import "../sub"', 'import "\\u0000"']))
        if i % 7 == 0:
            (tmp_path / "lib.pipe").write_bytes(b"signature S { \xff\xfe }")      # not UTF-8
        src = mutate(main, [(rng.randrange(9), rng.random(), rng.random(), rng.choice(ALL_TOKENS))], lib)
        (tmp_path / "main.pipe").write_text(src, encoding="utf-8")
        start = time.thread_time()
        try:
            loaded = load(tmp_path / "main.pipe", catalogue())
            render_all(loaded.diagnostics, loaded.sources)
        except Exception as err:
            raise AssertionError(f"{type(err).__name__}: {err} on:\n{src!r}") from err
        assert time.thread_time() - start < LIMIT_S
        n += 1
    record_figure("fuzz.loader_with_imports", inputs=n)


CLI_CASES = {
    "nul bytes": b"signature S {\x00 in q: str }\n",
    "not utf-8": b"signature S { \"caf\xe9\" in q: str out a: str }\n",
    "bom + crlf": b"\xef\xbb\xbfsignature S {\r\n in q: str out a: str }\r\n",
    "empty": b"",
    "only a comment": b"# nothing",
    "deep brackets": b"pipeline p(x: str) -> (a) { y = " + b"[" * 5000 + b"]" * 5000 + b"\n return a = y }",
    "huge line": b'signature S { "' + b"x" * 200_000 + b'" in q: str out a: str }',
    "unclosed long string": b'signature S { """never closed\n in q: str }',
    "binary": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_check_on_malformed_files_exits_cleanly(tmp_path, case):
    path = tmp_path / "bad.pipe"
    path.write_bytes(CLI_CASES[case])
    start = time.perf_counter()
    run = pipec_cli("check", path, timeout=60)
    assert run.returncode in (0, 1, 2), run
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.stderr[-2000:]
    if run.returncode:
        assert str(path) in run.stderr, run.stderr[-500:]
    assert time.perf_counter() - start < 30
