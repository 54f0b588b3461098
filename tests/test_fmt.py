"""`pipec fmt`: one canonical layout, comments kept where they were, idempotent, the same AST."""
from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipec.dsl import parse
from pipec.dsl.ast import Span
from pipec.dsl.format import FormatError, check_formatted, format_source

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.pipe"))

MESSY = '''# header comment, kept at the top
#   second line of it


import   "shared.pipe"
lm local="local/smollm2"(temperature:0,max_tokens:32)   # the embedded model
lm  big_model = "openai/gpt-4o-mini" ( api_key_env : "OPENAI_API_KEY" )
lm robust=fallback( big_model,local )(temperature:0)
default   lm=local
record Hit{ "A search hit." title:str url :str? "where it is"}
signature Classify{"Label the text."
in text:str "the text"     out label:enum(pos,neg)"the label"
  # a comment among fields

   out   confidence : float}
module classify=Predict(Classify,lm:local,demos:[{text:"fine",label:pos},{text:"awful",label:neg}])
module  c2 = ChainOfThought( Classify )   # second
module choose = one_of(Predict, ChainOfThought(rationale: "why"), Majority(n: 3, field: label),)(Classify, lm: local)
tool search (q:str)->list[ Hit ]=python( "examples.corpus:search" )
pipeline senti(text:str "input",
   hint: str?,) -> (label, score: float) {
  c=classify(text:text)   # first call
  # before the second
  longer_name = c2(text: text + (hint + "x"))


  hits=map h in [text,hint] ordered max 3 { search(h) }
  x = (text + hint).upper
  return label=c.label,score=c.confidence
  # before the closing brace
}
compile senti{trainset="a.jsonl" valset = "b.jsonl"
 metric=exact_match(label)  optimizer=auto(instructions:0) budget=[600,usd(2.50)]}
test "it labels"{senti(text:"good") -> label == "pos",label!="neg"
senti(text: "bad")->label in ["pos","neg"]}
# the end
'''

EXPECTED = '''# header comment, kept at the top
#   second line of it

import "shared.pipe"
lm local     = "local/smollm2" (temperature: 0, max_tokens: 32)  # the embedded model
lm big_model = "openai/gpt-4o-mini" (api_key_env: "OPENAI_API_KEY")
lm robust    = fallback(big_model, local) (temperature: 0)
default lm = local
record Hit {
    "A search hit."
    title: str
    url: str? "where it is"
}
signature Classify {
    "Label the text."
    in  text: str "the text"
    out label: enum(pos, neg) "the label"
    # a comment among fields

    out confidence: float
}
module classify = Predict(Classify, lm: local, demos: [{text: "fine", label: pos}, {text: "awful", label: neg}])
module c2       = ChainOfThought(Classify)  # second
module choose = one_of(
    Predict,
    ChainOfThought(rationale: "why"),
    Majority(n: 3, field: label),
)(Classify, lm: local)
tool search(q: str) -> list[Hit] = python("examples.corpus:search")
pipeline senti(
    text: str "input",
    hint: str?,
) -> (label, score: float) {
    c = classify(text: text)  # first call
    # before the second
    longer_name = c2(text: text + (hint + "x"))

    hits = map h in [text, hint] ordered max 3 { search(h) }
    x    = (text + hint).upper
    return label = c.label, score = c.confidence
    # before the closing brace
}
compile senti {
    trainset  = "a.jsonl"
    valset    = "b.jsonl"
    metric    = exact_match(label)
    optimizer = auto(instructions: 0)
    budget    = [600, usd(2.50)]
}
test "it labels" {
    senti(text: "good") -> label == "pos", label != "neg"
    senti(text: "bad") -> label in ["pos", "neg"]
}
# the end
'''


def shape(node):
    """An AST without its source positions: what two layouts of one program must share."""
    if isinstance(node, Span):
        return None
    if dataclasses.is_dataclass(node):
        return (type(node).__name__, tuple((f.name, shape(getattr(node, f.name))) for f in dataclasses.fields(node)
                                           if f.name not in ("source", "span") and not f.name.endswith("_span")))
    if isinstance(node, (list, tuple)):
        return tuple(shape(x) for x in node)
    if isinstance(node, dict):
        return tuple(sorted((k, shape(v)) for k, v in node.items()))
    if isinstance(node, (set, frozenset)):
        return tuple(sorted(node))
    return node


def same_program(a: str, b: str) -> None:
    fa, da = parse(a, "x.pipe")
    fb, db = parse(b, "x.pipe")
    assert da == [] and db == []
    assert shape(fa) == shape(fb)


def comments(text: str) -> list[str]:
    """The comments of a source, in order (by the parser's own lexer, so '#' inside strings is not one)."""
    from pipec.dsl.format import _parse
    return [c.value.rstrip() for c in _parse(text, "x.pipe")[1]]


def test_the_canonical_layout_of_a_messy_file():
    out = format_source(MESSY)
    assert out == EXPECTED
    assert format_source(out) == out
    same_program(MESSY, out)
    assert comments(out) == comments(MESSY)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_in_the_canonical_layout(path):
    text = path.read_text(encoding="utf-8")
    assert check_formatted(text, str(path)), f"run: pipec fmt {path.relative_to(path.parent.parent)}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_example_squashed_onto_few_lines_comes_back_the_same(path):
    """Every example with its layout thrown away (comments dropped, every run of spaces and newlines
    made one space) formats to a file with the same AST that formats to itself."""
    text = path.read_text(encoding="utf-8")
    squashed = re.sub(r"\s+", " ", "\n".join(re.sub(r"#.*$", "", line) if not _in_string(line) else line
                                             for line in text.splitlines()))
    if any(_in_string(line) for line in text.splitlines()):
        squashed = text                  # a '#' inside a string on some line: keep the text as written
    out = format_source(squashed)
    assert format_source(out) == out
    same_program(text, out)


def _in_string(line: str) -> bool:
    return "#" in line and '"' in line.split("#", 1)[0]


def test_a_fallback_lm_on_one_line_or_one_lm_per_line():
    src = 'lm a = "x/y"\nlm robust = fallback(a,  # the first\n b ,)(max_tokens:8)\nlm b="local/smollm2"\n'
    out = format_source(src)
    assert out == ('lm a      = "x/y"\nlm robust = fallback(\n    a,  # the first\n    b,\n) (max_tokens: 8)\n'
                   'lm b = "local/smollm2"\n')
    assert format_source(out) == out
    same_program(src, out)
    assert format_source("lm r = fallback( a ,b )") == "lm r = fallback(a, b)\n"


def test_crlf_tabs_and_a_byte_order_mark():
    src = "\ufeffsignature S {\r\n\t\"Do it.\"\r\n\tin q: str\r\n\tout a: str\r\n}\r\n"
    assert format_source(src) == '\ufeffsignature S {\n    "Do it."\n    in  q: str\n    out a: str\n}\n'


def test_strings_numbers_and_names_are_written_as_they_were():
    src = 'lm a = "x\\"#y" (temperature: 0.50, max_tokens: 1e3)\nsignature S { """\nLong\n  text""" in q: str out a: str }\n'
    out = format_source(src)
    assert '"x\\"#y"' in out and "0.50" in out and "1e3" in out and '"""\nLong\n  text"""' in out
    assert format_source(out) == out
    assert comments(out) == []


def test_a_file_that_does_not_parse_is_an_error_with_every_diagnostic():
    with pytest.raises(FormatError) as err:
        format_source("signature S { in q str }\nmodule m = Predict(S\npipeline p() -> (a) { }\n", "bad.pipe")
    assert len(err.value.diagnostics) == 2
    assert "bad.pipe:1:" in str(err.value) and "bad.pipe:2:" in str(err.value)


# ---------------------------------------------------------------------------- random programs
def with_comments(draw, text: str) -> str:
    """`text` with comments put after some lines and on lines of their own between others."""
    out = []
    for i, line in enumerate(text.split("\n")):
        where = draw(st.integers(0, 3))
        if where == 1 and line.strip():
            out.append(f"# own line {i}")
        out.append(line + (f"  # after {i}" if where == 2 and line.strip() and '"""' not in line else ""))
        if where == 3:
            out.append("")
    return "\n".join(out)


@st.composite
def commented_program(draw):
    from test_reliability_fuzz import program_text
    return with_comments(draw, draw(program_text()))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(commented_program())
def test_random_valid_programs_format_idempotently_to_the_same_ast_and_comments(source):
    _, diags = parse(source, "x.pipe")
    if diags:
        return                          # the fuzzer's programs are well-formed but not always parseable
    out = format_source(source)
    assert format_source(out) == out
    same_program(source, out)
    assert comments(out) == comments(source)


# ---------------------------------------------------------------------------- the command line
def pipec(*args, input=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipec", "fmt", *args], input=input, capture_output=True,
                          text=True, cwd=cwd, timeout=60)


def test_cli_formats_files_in_place_and_only_those_that_change(tmp_path):
    messy, clean = tmp_path / "messy.pipe", tmp_path / "clean.pipe"
    messy.write_text(MESSY)
    clean.write_text(EXPECTED)
    os.chmod(messy, 0o640)
    before = clean.stat().st_mtime_ns
    r = pipec(str(messy), str(clean))
    assert r.returncode == 0, r.stderr
    assert messy.read_text() == EXPECTED and stat.S_IMODE(messy.stat().st_mode) == 0o640
    assert clean.stat().st_mtime_ns == before
    assert r.stderr == f"reformatted {messy}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.pipe", "messy.pipe"]    # no temp file left


def test_cli_check_exits_1_with_a_diff_and_writes_nothing(tmp_path):
    messy = tmp_path / "messy.pipe"
    messy.write_text(MESSY)
    r = pipec("--check", str(messy))
    assert r.returncode == 1
    assert r.stdout.startswith(f"--- {messy} (as written)\n+++ {messy} (formatted)\n")
    assert "+lm local     = \"local/smollm2\" (temperature: 0, max_tokens: 32)  # the embedded model" in r.stdout
    assert "1 file would be reformatted" in r.stderr
    assert messy.read_text() == MESSY
    messy.write_text(EXPECTED)
    assert pipec("--check", str(messy)).returncode == 0


def test_cli_diff_writes_nothing_and_exits_0(tmp_path):
    messy = tmp_path / "messy.pipe"
    messy.write_text(MESSY)
    r = pipec("--diff", str(messy))
    assert r.returncode == 0 and "+default lm = local" in r.stdout and messy.read_text() == MESSY


def test_cli_reads_stdin_and_writes_stdout():
    r = pipec("-", input=MESSY)
    assert r.returncode == 0 and r.stdout == EXPECTED
    assert pipec(input="default  lm=x").stdout == "default lm = x\n"


def test_cli_leaves_a_broken_file_alone_and_formats_the_rest(tmp_path):
    broken, messy = tmp_path / "broken.pipe", tmp_path / "messy.pipe"
    broken.write_text("module m = Predict(S\n")
    messy.write_text(MESSY)
    r = pipec(str(broken), str(messy))
    assert r.returncode == 1
    assert f"{broken}:1:" in r.stderr and "does not parse; left as it is" in r.stderr
    assert broken.read_text() == "module m = Predict(S\n" and messy.read_text() == EXPECTED
    assert pipec(str(tmp_path / "missing.pipe")).returncode == 2
