"""The VS Code extension (editors/vscode): its TextMate grammar, checked token by token, and its client.

The grammar (editors/vscode/syntaxes/pipe.tmLanguage.json) runs on the engine VS Code runs:
vscode-textmate with the vscode-oniguruma regex library, under node (editors/vscode/test/tokenize.js).
What each token *should* be comes from elsewhere: lark parses every example with pipec's own
grammar (dsl/grammar.lark), keeping every token, and the token's terminal and the parse-tree rule
around it say what it is (a keyword, a string, a type in a field, an option's name, a module kind...).
So the tests do not trust the TextMate regexes. Over every examples/*.pipe and
editors/vscode/test/fixtures/constructs.pipe (the constructs the examples lack):

- every non-blank character has a scope that says what it is (not just the root or a `meta.` region);
- every keyword gets keyword.* / storage.type.* / storage.modifier.*; true/false constant.language;
- every string character is inside string.*; every comment inside comment.*;
- every type in a type position gets a type scope; every name gets the scope of its role;
- numbers, operators and punctuation get theirs.

`test_the_checks_catch_a_broken_grammar` breaks one rule at a time and sees the matching check fail.

Needs node and npm (CI installs them): the session runs `npm ci` in editors/vscode when its
node_modules is missing or stale. The screenshot page (editors/vscode/make_screenshot.py) is
rendered in headless Chromium (tests/browser/cdp.py; skipped without Chromium, like the report's
browser tests).
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pipec.dsl.parser as dsl_parser
import pytest
from browser.cdp import Browser, find_chromium
from conftest import REPO

VSCODE = REPO / "editors" / "vscode"
TOKENIZER = VSCODE / "test" / "tokenize.js"
GRAMMAR = VSCODE / "syntaxes" / "pipe.tmLanguage.json"
FIXTURE = VSCODE / "test" / "fixtures" / "constructs.pipe"
FILES = sorted((REPO / "examples").glob("*.pipe")) + [FIXTURE]
FILE_IDS = [p.name for p in FILES]

KEYWORD_SCOPES = ("keyword.", "storage.type.", "storage.modifier.")
TYPE_SCOPES = ("storage.type.", "support.type.", "entity.name.type.")

# What the scope of a token must start with, by the role the parse gives it.
ROLE_SCOPES = {
    "keyword": KEYWORD_SCOPES,
    "constant": ("constant.language.",),
    "number": ("constant.numeric.",),
    "operator": ("keyword.operator.",),
    "accessor": ("punctuation.accessor.",),
    "punctuation": ("punctuation.",),
    # names
    "lm-name": ("variable.other.lm.",),
    "type-decl": ("entity.name.type.",),
    "function-decl": ("entity.name.function.",),
    "kind": ("support.class.", "entity.name.class."),
    "type-ref": ("entity.name.type.",),
    "loader": ("support.function.",),
    "field": ("variable.other.field.",),
    "parameter": ("variable.parameter.",),
    "type": TYPE_SCOPES,
    "enum-member": ("constant.other.enum-member.",),
    "reference": ("variable.other.", "variable.language."),
    "assigned": ("variable.other.",),
    "call": ("entity.name.function.",),
    "property": ("variable.other.property.",),
}
# Symbols of the grammar: operators and punctuation (a new one must be classified here).
SYMBOLS = {"=": "operator", "->": "operator", "+": "operator", "==": "operator", "!=": "operator",
           "?": "operator", ".": "accessor", "(": "punctuation", ")": "punctuation", "[": "punctuation",
           "]": "punctuation", "{": "punctuation", "}": "punctuation", ",": "punctuation", ":": "punctuation"}
# The role of each NAME, by the rule it stands in (in order, when a rule has several).
NAME_ROLES = {
    "lm_decl": ["lm-name"], "default_decl": ["lm-name"],
    "signature": ["type-decl"], "record": ["type-decl"],
    "kind_alt": ["kind"],
    "tool_decl": ["function-decl", "loader"],
    "pipeline": ["function-decl"], "compile_block": ["function-decl"],
    "sig_field": ["field"], "record_field": ["field"],
    "param": ["parameter"], "out_param": ["parameter"],
    "generic_type": ["type"], "named_type": ["type"], "enum_value": ["enum-member"],
    "option": ["parameter"], "ref": ["reference"],
    "assign": ["assigned"], "ret_item": ["assigned"], "setting": ["assigned"],
    "map_expr": ["parameter"], "call": ["call"], "named_arg": ["parameter"],
    "var": ["reference"], "attr": ["property"],
}


# ============================================================================ node and the tokenizer
def _pins() -> dict[str, str]:
    manifest = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    return {**manifest["dependencies"], **manifest["devDependencies"]}


def _installed_version(package: str) -> str | None:
    try:
        return json.loads((VSCODE / "node_modules" / package / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with editors/vscode/node_modules installed (`npm ci`) at the pinned versions."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the grammar tests run VS Code's TextMate engine under node "
                    "(apt-get install nodejs npm; CI installs them)", pytrace=False)
    stale = [p for p, v in _pins().items() if _installed_version(p) != v]
    if stale:
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"npm is not installed, and editors/vscode needs `npm ci` for {', '.join(stale)} "
                        "(apt-get install npm)", pytrace=False)
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=VSCODE,
                              capture_output=True, text=True, check=False, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"npm ci in {VSCODE} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}", pytrace=False)
        still = [p for p, v in _pins().items() if _installed_version(p) != v]
        assert still == [], f"after npm ci these are still not at their pinned versions: {still}"
    return node


def tokenize(node: str, paths: list[Path], grammar: Path = GRAMMAR) -> dict[Path, list[list[dict]]]:
    proc = subprocess.run([node, str(TOKENIZER), "--grammar", str(grammar), *map(str, paths)],
                          capture_output=True, text=True, check=False, timeout=300, cwd=VSCODE)
    assert proc.returncode == 0, proc.stderr
    return {Path(entry["path"]): entry["lines"] for entry in json.loads(proc.stdout)}


@pytest.fixture(scope="session")
def highlighted(node) -> dict[Path, list[list[dict]]]:
    return tokenize(node, FILES)


# ============================================================================ what lark says each token is
@dataclass(frozen=True)
class Tok:
    type: str
    value: str
    start: int
    end: int
    role: str          # a key of ROLE_SCOPES, or "string" / "comment"
    rule: str          # the parse-tree rule it stands in
    in_type: bool      # inside a `type`


@functools.lru_cache(maxsize=1)
def _lark():
    """pipec's grammar (dsl/grammar.lark), keeping every token; comments go to the list returned with it."""
    from lark import Lark
    text = Path(dsl_parser.__file__).with_name("grammar.lark").read_text(encoding="utf-8")
    comments: list = []
    lark = Lark(text, parser="lalr", lexer="contextual", keep_all_tokens=True, propagate_positions=True,
                maybe_placeholders=True, lexer_callbacks={"COMMENT": comments.append})
    return lark, comments


def terminal_roles(lark) -> dict[str, str]:
    """The role of every terminal but NAME (whose role depends on where it stands) and WS."""
    from lark.lexer import PatternStr
    roles = {"STRING": "string", "LONG_STRING": "string", "NUMBER": "number", "COMMENT": "comment"}
    for term in lark.terminals:
        if term.name in roles or term.name in ("NAME", "WS"):
            continue
        assert isinstance(term.pattern, PatternStr), f"new terminal {term.name}: give it a role in this test"
        value = term.pattern.value
        if value in ("true", "false"):
            roles[term.name] = "constant"
        elif re.fullmatch(r"[a-z_]+", value):
            roles[term.name] = "keyword"
        else:
            assert value in SYMBOLS, f"new symbol {value!r} ({term.name}): classify it in SYMBOLS"
            roles[term.name] = SYMBOLS[value]
    return roles


@functools.lru_cache(maxsize=64)
def lark_tokens(text: str) -> tuple[tuple[Tok, ...], frozenset[str]]:
    """Every token of `text` as lark's lexer and parser see it, with its role; and the rules used."""
    from lark import Token, Tree
    lark, comments = _lark()
    roles = terminal_roles(lark)
    comments.clear()
    tree = lark.parse(text)
    out: list[Tok] = []
    rules: set[str] = set()
    stack = [(tree, False)]
    while stack:
        node, in_type = stack.pop()
        rules.add(node.data)
        in_type = in_type or node.data == "type"
        names = [c for c in node.children if isinstance(c, Token) and c.type == "NAME"]
        if node.data == "module_decl":      # module m = Kind(Sig, ...) | one_of(...)(Sig, ...)
            name_roles = ["function-decl", "kind", "type-ref"] if len(names) == 3 else ["function-decl", "type-ref"]
        elif node.data == "fallback":       # lm robust = fallback(gpt, local): every name an lm
            name_roles = ["lm-name"] * len(names)
        else:
            name_roles = NAME_ROLES.get(node.data, [])
        assert len(names) <= len(name_roles), f"{node.data}: unexpected names {names}"
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, in_type))
            elif isinstance(child, Token):
                role = name_roles[names.index(child)] if child.type == "NAME" else roles[child.type]
                out.append(Tok(child.type, str(child), child.start_pos, child.end_pos, role, node.data, in_type))
    for c in comments:
        out.append(Tok("COMMENT", str(c), c.start_pos, c.end_pos, "comment", "", False))
    return tuple(sorted(out, key=lambda t: t.start)), frozenset(rules)


# ============================================================================ the checks
def char_scopes(text: str, lines: list[list[dict]]) -> list[list[str]]:
    """The TextMate scope stack of every character of `text`."""
    scopes: list[list[str]] = [[] for _ in text]
    offset = 0
    for line_text, tokens in zip(text.split("\n"), lines):
        for tok in tokens:
            for c in range(tok["start"], tok["end"]):
                scopes[offset + c] = tok["scopes"]
        offset += len(line_text) + 1
    return scopes


def leaf(stack: list[str]) -> str | None:
    for scope in reversed(stack):
        if scope != "source.pipe" and not scope.startswith("meta."):
            return scope
    return None


def where(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"{line}:{pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"


def check(kind: str, text: str, lines: list[list[dict]]) -> tuple[list[str], int]:
    """Problems found by one check, and how many tokens (or characters) it looked at."""
    scopes = char_scopes(text, lines)
    toks, _ = lark_tokens(text)
    problems: list[str] = []
    seen = 0

    def expect(tok: Tok, prefixes: tuple[str, ...], anywhere: bool = False) -> None:
        nonlocal seen
        seen += 1
        for pos in range(tok.start, tok.end):
            if text[pos].isspace():
                continue
            stack = scopes[pos]
            ok = any(s.startswith(prefixes) for s in stack) if anywhere else (leaf(stack) or "").startswith(prefixes)
            if not ok:
                problems.append(f"{where(text, pos)} {tok.value!r} ({tok.type} as {tok.role} in {tok.rule}): "
                                f"wants {' or '.join(prefixes)}, has {leaf(stack) or stack}")
                return

    if kind == "coverage":
        for pos, ch in enumerate(text):
            if not ch.isspace():
                seen += 1
                if leaf(scopes[pos]) is None:
                    problems.append(f"{where(text, pos)} {ch!r} has only {scopes[pos]}")
    for tok in toks:
        if kind == "keywords" and tok.role in ("keyword", "constant"):
            expect(tok, ROLE_SCOPES[tok.role])
        elif kind == "strings" and tok.role == "string":
            expect(tok, ("string.",), anywhere=True)
        elif kind == "comments" and tok.role == "comment":
            expect(tok, ("comment.",), anywhere=True)
        elif kind == "types" and tok.in_type and (tok.role == "type" or tok.type == "ENUM"):
            expect(tok, TYPE_SCOPES)
        elif kind == "names" and tok.type == "NAME":
            expect(tok, ROLE_SCOPES[tok.role])
        elif kind == "literals" and tok.role in ("number", "operator", "accessor", "punctuation"):
            expect(tok, ROLE_SCOPES[tok.role])
    return problems, seen


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ============================================================================ the grammar, on every file
@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_every_character_is_highlighted(highlighted, path):
    problems, seen = check("coverage", _text(path), highlighted[path])
    assert seen > 0 and problems == []


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_keywords_get_keyword_scopes(highlighted, path):
    problems, seen = check("keywords", _text(path), highlighted[path])
    assert seen > 0 and problems == []


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_strings_get_string_scopes(highlighted, path):
    problems, seen = check("strings", _text(path), highlighted[path])
    assert seen > 0 and problems == []


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_comments_get_comment_scopes(highlighted, path):
    problems, seen = check("comments", _text(path), highlighted[path])
    assert seen > 0 and problems == []


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_types_in_type_positions_get_type_scopes(highlighted, path):
    problems, seen = check("types", _text(path), highlighted[path])
    assert seen > 0 and problems == []


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_names_get_the_scope_of_their_role(highlighted, path):
    problems, seen = check("names", _text(path), highlighted[path])
    assert seen > 0 and problems == []


@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_numbers_operators_and_punctuation(highlighted, path):
    problems, seen = check("literals", _text(path), highlighted[path])
    assert seen > 0 and problems == []


def test_the_files_use_every_terminal_and_rule_of_the_language():
    """So the checks above see every construct: a new keyword or rule needs a line in the fixture."""
    lark, _ = _lark()
    terminals = {t.name for t in lark.terminals} - {"WS"}
    rules = {str(r.alias) if r.alias else str(r.origin.name) for r in lark.rules
             if not str(r.origin.name).startswith("_") and (r.alias or not r.options.expand1)}
    used_terminals: set[str] = set()
    used_rules: set[str] = set()
    for path in FILES:
        toks, seen_rules = lark_tokens(_text(path))
        used_terminals |= {t.type for t in toks}
        used_rules |= seen_rules
        _, diags = dsl_parser.parse(_text(path), str(path))
        assert diags == [], f"{path.name} does not parse: {diags}"
    assert terminals - used_terminals == set()
    assert rules - used_rules == set()


# A rule broken in the grammar -> the check that must notice, on the fixture and one example.
def _rule(patterns: list, predicate) -> dict:
    (found,) = [p for p in patterns if predicate(p)]
    return found


def _rename_comments(g):               # comments named like plain markup: they lose comment.*
    g["repository"]["comments"]["name"] = "markup.other.pipe"


def _signature_as_tag(g):              # `signature` scoped as a tag, not a keyword
    g["repository"]["signature"]["beginCaptures"]["1"]["name"] = "entity.name.tag.pipe"


def _strings_as_markup(g):             # double-quoted strings named as markup quotes
    _rule(g["repository"]["strings"]["patterns"], lambda p: p.get("name") == "string.quoted.double.pipe")[
        "name"] = "markup.quote.pipe"


def _primitives_as_variables(g):       # str/int/float/bool as plain variables
    _rule(g["repository"]["type"]["patterns"], lambda p: p.get("name") == "support.type.primitive.pipe")[
        "name"] = "variable.other.pipe"


def _commas_unscoped(g):               # commas keep only their meta region
    del g["repository"]["comma"]["name"]


def _kinds_as_variables(g):            # module kinds (Predict, ...) as variables
    rule = _rule(g["repository"]["module"]["patterns"],
                 lambda p: p.get("name") == "meta.module-arguments.pipe" and "1" in p.get("beginCaptures", {}))
    rule["beginCaptures"]["1"]["name"] = "variable.other.pipe"


def _no_numbers_in_values(g):          # `temperature: 0` loses constant.numeric
    patterns = g["repository"]["value"]["patterns"]
    patterns.remove(_rule(patterns, lambda p: p.get("include") == "#numbers"))


MUTATIONS = {
    "comments": ("comments", _rename_comments),
    "keywords": ("keywords", _signature_as_tag),
    "strings": ("strings", _strings_as_markup),
    "types": ("types", _primitives_as_variables),
    "coverage": ("coverage", _commas_unscoped),
    "names": ("names", _kinds_as_variables),
    "literals": ("literals", _no_numbers_in_values),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_the_checks_catch_a_broken_grammar(node, highlighted, tmp_path, name):
    kind, mutate = MUTATIONS[name]
    grammar = json.loads(GRAMMAR.read_text(encoding="utf-8"))
    broken = copy.deepcopy(grammar)
    mutate(broken)
    assert broken != grammar
    path = tmp_path / "broken.tmLanguage.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    files = [FIXTURE, REPO / "examples" / "intent.pipe"]
    tokens = tokenize(node, files, grammar=path)
    for f in files:
        assert check(kind, _text(f), highlighted[f])[0] == [], "the intact grammar passes"
    found = [p for f in files for p in check(kind, _text(f), tokens[f])[0]]
    assert found, f"breaking the grammar ({name}) went unnoticed by the {kind} check"


# ============================================================================ the extension's files
def test_the_manifest_matches_the_project():
    manifest = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    license_ = re.search(r'^license = \{ text = "([^"]+)" \}', pyproject, re.MULTILINE).group(1)
    assert manifest["name"] == "pipec" and manifest["publisher"] == "pipec"
    assert manifest["version"] == version
    assert manifest["license"] == license_
    assert "Apache License" in (VSCODE / "LICENSE").read_text(encoding="utf-8")
    assert manifest["main"] == "./extension.js" and (VSCODE / "extension.js").is_file()
    assert manifest["activationEvents"] == ["onLanguage:pipe"]
    (language,) = manifest["contributes"]["languages"]
    assert language["id"] == "pipe" and language["extensions"] == [".pipe"]
    assert (VSCODE / language["configuration"]).is_file()
    (grammar,) = manifest["contributes"]["grammars"]
    assert grammar["language"] == "pipe" and grammar["scopeName"] == "source.pipe"
    assert json.loads((VSCODE / grammar["path"]).read_text(encoding="utf-8"))["scopeName"] == "source.pipe"
    setting = manifest["contributes"]["configuration"]["properties"]["pipec.path"]
    assert setting["type"] == "string" and setting["default"] == "pipec"
    # Exact pins, and the lock file holds the same versions.
    lock = json.loads((VSCODE / "package-lock.json").read_text(encoding="utf-8"))
    assert set(manifest["dependencies"]) == {"vscode-languageclient"}
    assert set(manifest["devDependencies"]) == {"@vscode/vsce", "vscode-textmate", "vscode-oniguruma"}
    for package, version in _pins().items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{package} is not pinned exactly: {version}"
        assert lock["packages"][f"node_modules/{package}"]["version"] == version
    ignored = (VSCODE / ".vscodeignore").read_text(encoding="utf-8").split()
    assert "test/**" in ignored and "make_screenshot.py" in ignored
    assert "node_modules/" in (VSCODE / ".gitignore").read_text(encoding="utf-8").split()


def test_language_configuration():
    config = json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
    pairs = {p["open"]: p["close"] for p in config["autoClosingPairs"]}
    assert pairs == {"{": "}", "[": "]", "(": ")", '"': '"', '"""': '"""'}
    increase = re.compile(config["indentationRules"]["increaseIndentPattern"])
    decrease = re.compile(config["indentationRules"]["decreaseIndentPattern"])
    for line in ("signature S {", "pipeline p(q: str) -> (a) {   # the body", "    demos: [", 'test "a { b" {'):
        assert increase.search(line), line
    for line in ('lm x = "a {"', "x = f(a)  # {", "}", "signature S { in q: str out a: str }"):
        assert not increase.search(line), line
    for line in ("}", "    ]", "  )(Task, lm: local)"):
        assert decrease.search(line), line
    assert not decrease.search("    return a = b.c")


def test_the_client_starts_pipec_lsp(node):
    """extension.js against stand-ins for VS Code and the client (editors/vscode/test/extension.test.js)."""
    proc = subprocess.run([node, str(VSCODE / "test" / "extension.test.js")], capture_output=True, text=True, check=False,
                          timeout=120, cwd=VSCODE)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"^# pass [1-9]\d*$", proc.stdout, re.MULTILINE) and re.search(r"^# fail 0$", proc.stdout, re.MULTILINE)


# ============================================================================ the screenshot page, in a browser
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(apt-get install chromium); CI installs it")


def _make_screenshot():
    spec = importlib.util.spec_from_file_location("pipec_make_screenshot", VSCODE / "make_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium")
    with Browser.launch(CHROMIUM) as b:
        yield b


def test_screenshot_script_docstrings(node):
    import doctest
    module = _make_screenshot()
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 5 and result.failed == 0


def test_the_committed_screenshot_is_a_picture():
    png = (VSCODE / "screenshot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 1000 and height >= 800, (width, height)
    assert "screenshot.png" in (VSCODE / "README.md").read_text(encoding="utf-8")


@needs_chromium
def test_browser_screenshot_page_shows_highlighting_and_diagnostics(browser, node, tmp_path):
    shot = _make_screenshot()
    page_html = shot.build_page(workdir=tmp_path)
    path = tmp_path / "page.html"
    path.write_text(page_html, encoding="utf-8")
    page = browser.new_page(width=1280, height=900)
    page.goto(path.resolve().as_uri())

    # The highlighted example: each kind of token drawn, in one colour per kind, the kinds apart.
    kinds = {
        "keyword": '[data-scope^="storage.type"], [data-scope^="keyword.other"]',
        "string": '[data-scope^="string"]',
        "comment": '[data-scope^="comment"]',
        "type": '[data-scope^="support.type"], [data-scope^="entity.name.type"]',
    }
    colours = page.evaluate(f"Object.fromEntries(Object.entries({json.dumps(kinds)}).map(([k, sel]) => [k, "
                            "[...document.querySelector('#highlighted').querySelectorAll(sel)]"
                            ".map(e => getComputedStyle(e).color)]))")
    distinct = {}
    for kind, found in colours.items():
        assert found, f"no {kind} token on the page"
        assert len(set(found)) == 1, (kind, set(found))
        distinct[kind] = found[0]
    default = page.evaluate("getComputedStyle(document.querySelector('#highlighted .code')).color")
    assert len(set(distinct.values()) | {default}) == len(distinct) + 1, distinct
    texts = page.evaluate("[...document.querySelectorAll('#highlighted [data-scope^=\"storage.type\"]')]"
                          ".map(e => e.textContent)")
    assert {"lm", "signature", "module", "pipeline"} <= set(texts)

    # The broken copy: each diagnostic of `pipec check` underlined where it points, and listed.
    broken = (tmp_path / shot.EXAMPLE.name).read_text(encoding="utf-8").split("\n")
    diagnostics = shot.check_json(tmp_path / shot.EXAMPLE.name)
    assert len(diagnostics) == 3
    for i, d in enumerate(diagnostics):
        underlined = page.evaluate(f"[...document.querySelectorAll('#diagnostics .code .squiggle[data-diag=\"{i}\"]')]"
                                   ".map(e => e.textContent).join('')")
        assert underlined == broken[d["line"] - 1][d["col"] - 1:d["end_col"] - 1], d
        style = page.evaluate(f"(() => {{ const s = getComputedStyle(document.querySelector("
                              f"'#diagnostics .squiggle[data-diag=\"{i}\"]')); "
                              "return [s.textDecorationLine, s.textDecorationStyle]; })()")
        assert style == ["underline", "wavy"]
        listed = page.evaluate(f"document.querySelector('#diagnostics .problem[data-diag=\"{i}\"] .message').textContent")
        assert listed == d["message"]
    assert page.evaluate("document.querySelectorAll('#highlighted .squiggle').length") == 0
    assert page.console_errors() == []
    assert [u for u in page.requests() if u != path.resolve().as_uri()] == []
    png = page.screenshot(full_page=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
