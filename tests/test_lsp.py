"""`pipec lsp` end to end: a real LSP client (pytest-lsp) drives the server over stdio, as an editor does.

One server process serves the whole module (starting one costs about a second); each test writes
its own files under its own tmp_path and closes what it opens.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as T
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

import pipec.optimizers

# The client checks every answer against what it declared it supports (a VS Code client's
# capabilities); an answer the specification forbids fails the test instead of warning.
pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.filterwarnings("error::pytest_lsp.LspSpecificationWarning")]

SHARED = """\
lm local = "local/smollm2" (temperature: 0)

signature Classify {
    "Classify the intent of the user's utterance."
    in  utterance: str "what the user said"
    out intent: enum(book_restaurant, get_weather, play_music) "the user's intent"
}
"""

MAIN = """\
import "shared.pipe"

module classify = ChainOfThought(Classify, lm: local, temperature: 0)

pipeline intent(utterance: str) -> (intent) {
    c = classify(utterance: utterance)
    return intent = c.intent
}

compile intent {
    trainset = "train.jsonl"
    metric = exact_match(intent)
    optimizer = knn_fewshot(k: 3)
}

test "books" {
    intent(utterance: "Book a table") -> intent == "book_restaurant"
}
"""


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "pipec", "lsp"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(T.InitializeParams(capabilities=client_capabilities("visual-studio-code")))
    yield
    await lsp_client.shutdown_session()


# ---------------------------------------------------------------------- helpers
def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def program(tmp_path) -> tuple[Path, Path]:
    """main.pipe importing shared.pipe, both on disk, with the data file its compile block names."""
    write(tmp_path, "train.jsonl", "")
    return write(tmp_path, "main.pipe", MAIN), write(tmp_path, "shared.pipe", SHARED)


async def published(client: LanguageClient, uri: str) -> list[T.Diagnostic]:
    """The next diagnostics the server publishes for `uri` (the caller removed the last ones)."""
    for _ in range(600):
        if uri in client.diagnostics:
            return list(client.diagnostics[uri])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no diagnostics published for {uri}")


async def open_doc(client: LanguageClient, path: Path, text: str | None = None) -> list[T.Diagnostic]:
    """Open `path` in the client (with `text`, or its text on disk) and wait for its diagnostics."""
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
        uri=uri, language_id="pipe", version=1, text=path.read_text() if text is None else text)))
    return await published(client, uri)


async def change_doc(client: LanguageClient, path: Path, text: str, version: int) -> list[T.Diagnostic]:
    """Replace the buffer's whole text (unsaved) and wait for its diagnostics."""
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[T.TextDocumentContentChangeWholeDocument(text=text)]))
    return await published(client, uri)


def close_doc(client: LanguageClient, *paths: Path) -> None:
    for path in paths:
        client.text_document_did_close(T.DidCloseTextDocumentParams(
            text_document=T.TextDocumentIdentifier(uri=path.as_uri())))


def at(text: str, needle: str, nth: int = 0, offset: int = 0) -> T.Position:
    """The position of the `nth` occurrence of `needle` in `text` (plus `offset` characters)."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    start += offset
    line = text.count("\n", 0, start)
    return T.Position(line=line, character=start - (text.rfind("\n", 0, start) + 1))


def where(text: str, needle: str, length: int, offset: int = 0) -> tuple[int, int, int]:
    """(line, start character, end character) of a name `length` long at `needle` (plus `offset`)."""
    p = at(text, needle, offset=offset)
    return p.line, p.character, p.character + length


def doc(path: Path) -> T.TextDocumentIdentifier:
    return T.TextDocumentIdentifier(uri=path.as_uri())


def labels(result) -> list[str]:
    items = result.items if isinstance(result, T.CompletionList) else result
    return [i.label for i in items]


def spans(locations) -> list[tuple[str, int, int, int]]:
    return sorted((Path(loc.uri[len("file://"):]).name, loc.range.start.line, loc.range.start.character,
                   loc.range.end.character) for loc in locations)


# ---------------------------------------------------------------------- diagnostics
async def test_every_diagnostic_arrives_at_once_with_hints_ranges_and_severity(client, tmp_path):
    text = textwrap.dedent("""\
        signature S {
            in  q: str
            out a: strr
        }
        module m = Predict(S)
        pipeline p(q: str, unused: int) -> (a) {
            r = mm(q: q)
            return a = r.a
        }
        """)
    path = write(tmp_path, "broken.pipe", text)
    diags = await open_doc(client, path)
    by_message = {d.message.split("\n")[0]: d for d in diags}
    assert set(by_message) == {"unknown type 'strr'", "unknown module or tool 'mm'",
                               "pipeline input 'unused' is never used"}, by_message
    strr = by_message["unknown type 'strr'"]
    assert strr.severity == T.DiagnosticSeverity.Error and strr.source == "pipec" and strr.code == "unknown-name"
    assert strr.message == "unknown type 'strr'\nhint: did you mean 'str'?"
    assert (strr.range.start, strr.range.end) == (at(text, "strr"), at(text, "strr", offset=4))
    mm = by_message["unknown module or tool 'mm'"]
    assert (mm.range.start, mm.range.end) == (at(text, "mm("), at(text, "mm(", offset=2))
    assert "hint: did you mean 'm'?" in mm.message
    assert by_message["pipeline input 'unused' is never used"].severity == T.DiagnosticSeverity.Warning
    close_doc(client, path)


async def test_ranges_count_utf16_units_past_wide_characters(client, tmp_path):
    # An emoji is one character in Python and two UTF-16 units, which is what the client counts.
    text = 'signature S { in q: str "😀 x" out a: strr }\n'
    path = write(tmp_path, "wide.pipe", text)
    [d] = await open_doc(client, path)
    units = len(text[:text.index("strr")].encode("utf-16-le")) // 2
    assert units == text.index("strr") + 1
    assert (d.range.start.line, d.range.start.character, d.range.end.character) == (0, units, units + 4)
    close_doc(client, path)


async def test_unsaved_text_is_checked_not_the_file_on_disk(client, program):
    main, shared = program
    assert await open_doc(client, main) == []
    broken = MAIN.replace("c = classify(utterance: utterance)", "c = clasify(utterance: utterance)")
    [d] = await change_doc(client, main, broken, 2)
    assert d.message.startswith("unknown module or tool 'clasify'") and "did you mean 'classify'?" in d.message
    assert main.read_text() == MAIN
    assert await change_doc(client, main, MAIN, 3) == []
    close_doc(client, main)


async def test_an_unsaved_imported_buffer_is_read_and_its_errors_shown_at_the_import(client, program):
    main, shared = program
    assert await open_doc(client, main) == []
    client.diagnostics.pop(main.as_uri(), None)
    assert await open_doc(client, shared) == []
    assert await published(client, main.as_uri()) == []     # an importer is checked again when a file opens
    client.diagnostics.pop(main.as_uri(), None)
    broken = SHARED.replace("in  utterance: str", "in  utterance: strg")
    [own] = await change_doc(client, shared, broken, 2)
    assert own.message.startswith("unknown type 'strg'")
    [d] = await published(client, main.as_uri())          # the importer is checked again, with the unsaved text
    assert d.message.startswith("1 error in imported file shared.pipe: unknown type 'strg'")
    assert (d.range.start.line, d.range.start.character) == (0, 0)
    [related] = d.related_information
    assert related.location.uri == shared.as_uri() and related.message.startswith("unknown type 'strg'")
    assert related.location.range.start == at(broken, "strg")
    close_doc(client, main, shared)


async def test_imports_are_resolved_relative_to_the_document(client, tmp_path):
    write(tmp_path, "lib/shared.pipe", SHARED)
    main = write(tmp_path, "app/main.pipe", MAIN.replace('import "shared.pipe"', 'import "../lib/shared.pipe"')
                 .replace('"train.jsonl"', '"../train.jsonl"'))
    write(tmp_path, "train.jsonl", "")
    assert await open_doc(client, main) == []
    missing = write(tmp_path, "app/other.pipe", 'import "shared.pipe"\n')
    [d] = await open_doc(client, missing)
    assert d.message.startswith("cannot read import 'shared.pipe'")
    close_doc(client, main, missing)


# ---------------------------------------------------------------------- hover
async def hover(client, path: Path, position: T.Position) -> str:
    result = await client.text_document_hover_async(T.HoverParams(text_document=doc(path), position=position))
    assert result is not None
    return result.contents.value


async def test_hover_shows_signatures_modules_kinds_lms_fields_and_types(client, program):
    main, shared = program
    await open_doc(client, main)
    sig = await hover(client, main, at(MAIN, "Classify"))
    assert "**signature Classify**" in sig and "Classify the intent of the user's utterance." in sig
    assert "- in `utterance: str` — what the user said" in sig
    assert "- out `intent: enum(book_restaurant, get_weather, play_music)`" in sig
    module = await hover(client, main, at(MAIN, "classify ="))
    assert "**module classify** = `ChainOfThought(Classify, lm: local, temperature: 0)`" in module
    assert "at most **2** LM calls per call" in module and 'LM: local = "local/smollm2"' in module
    assert "out reasoning, intent" in module
    kind = await hover(client, main, at(MAIN, "ChainOfThought"))
    assert "**ChainOfThought** (module kind)" in kind and "- `rationale`: str" in kind and "`reasoning: str`" in kind
    lm = await hover(client, main, at(MAIN, "lm: local", offset=4))
    assert lm.startswith('**lm local** = "local/smollm2"') and "temperature: 0" in lm
    field = await hover(client, main, at(MAIN, "c.intent", offset=2))
    assert field.startswith("`intent: enum(book_restaurant, get_weather, play_music)` — output of signature Classify")
    pipeline = await hover(client, main, at(MAIN, "pipeline intent", offset=9))
    assert "at most **2** LM calls per input" in pipeline
    str_type = await hover(client, shared, at(SHARED, "str "))
    assert str_type.startswith("**str** (built-in type)")
    optimizer = await hover(client, main, at(MAIN, "knn_fewshot"))
    assert "**knn_fewshot** (optimizer)" in optimizer and "- `k`: int, at least 1" in optimizer
    close_doc(client, main)


async def test_hover_on_a_module_of_a_broken_program_says_why_there_is_no_bound(client, program):
    main, _ = program
    text = MAIN.replace("utterance: utterance)", "utterance: utterance, extra: 1)")
    assert await open_doc(client, main, text)
    module = await hover(client, main, at(text, "classify ="))
    assert "LM call bound: unknown (the program has errors" in module
    close_doc(client, main)


# ---------------------------------------------------------------------- definition and references
async def definition(client, path: Path, position: T.Position):
    return await client.text_document_definition_async(T.DefinitionParams(text_document=doc(path), position=position))


async def test_go_to_definition_across_an_import(client, program):
    main, shared = program
    await open_doc(client, main)
    [loc] = await definition(client, main, at(MAIN, "Classify"))
    assert loc.uri == shared.as_uri() and loc.range.start == at(SHARED, "Classify")
    [loc] = await definition(client, main, at(MAIN, "c.intent", offset=3))
    assert loc.uri == shared.as_uri() and loc.range.start == at(SHARED, "out intent", offset=4)
    [loc] = await definition(client, main, at(MAIN, "classify(utterance: utterance)", offset=22))
    assert loc.uri == main.as_uri() and loc.range.start == at(MAIN, "utterance: str")
    [loc] = await definition(client, main, at(MAIN, '"shared.pipe"', offset=2))
    assert loc.uri == shared.as_uri()
    assert await definition(client, main, at(MAIN, "ChainOfThought")) is None       # built in: no file to go to
    close_doc(client, main)


async def references(client, path: Path, position: T.Position, declaration: bool = True):
    return await client.text_document_references_async(T.ReferenceParams(
        text_document=doc(path), position=position, context=T.ReferenceContext(include_declaration=declaration)))


async def test_references_across_files(client, program):
    main, shared = program
    await open_doc(client, main)
    assert spans(await references(client, main, at(MAIN, "Classify"))) == [
        ("main.pipe", *where(MAIN, "Classify", 8)), ("shared.pipe", *where(SHARED, "Classify", 8))]
    assert len(await references(client, main, at(MAIN, "Classify"), declaration=False)) == 1
    # The signature's output: its declaration and `c.intent`, not the pipeline output of the same name.
    assert spans(await references(client, main, at(MAIN, "c.intent", offset=2))) == [
        ("main.pipe", *where(MAIN, "c.intent", 6, offset=2)),
        ("shared.pipe", *where(SHARED, "out intent", 6, offset=4))]
    # The pipeline's output: declared, returned, scored by the metric, asserted by the test.
    assert len(await references(client, main, at(MAIN, "-> (intent)", offset=4))) == 4
    # From the imported file, the uses in the open file that imports it are found too.
    await open_doc(client, shared)
    assert len(await references(client, shared, at(SHARED, "local"))) == 2
    close_doc(client, main, shared)


# ---------------------------------------------------------------------- completion
async def complete(client, path: Path, position: T.Position):
    return await client.text_document_completion_async(T.CompletionParams(text_document=doc(path), position=position))


async def test_completion_after_a_dot_lists_the_outputs_of_the_call(client, program):
    main, _ = program
    text = MAIN.replace("return intent = c.intent", "return intent = c.")
    await open_doc(client, main, text)
    result = await complete(client, main, at(text, "c.\n", offset=2))
    assert labels(result) == ["reasoning", "intent"]
    close_doc(client, main)


async def test_completion_in_a_module_lists_its_kinds_options(client, program):
    main, _ = program
    text = MAIN.replace("ChainOfThought(Classify, lm: local, temperature: 0)", "ChainOfThought(Classify, lm: local, )")
    await open_doc(client, main, text)
    names = labels(await complete(client, main, at(text, "local, )", offset=7)))
    assert {"rationale", "temperature", "demos", "pin"} <= set(names) and "lm" not in names
    value = labels(await complete(client, main, at(text, "lm: local", offset=4)))
    assert value == ["local"]
    kinds = labels(await complete(client, main, at(text, "= ChainOfThought", offset=2)))
    assert {"Predict", "ChainOfThought", "Majority", "one_of"} <= set(kinds)
    close_doc(client, main)


async def test_completion_in_a_compile_block(client, program):
    main, _ = program
    text = MAIN.replace("    optimizer = knn_fewshot(k: 3)\n", "    optimizer = knn_fewshot()\n    \n")
    await open_doc(client, main, text)
    options = await complete(client, main, at(text, "knn_fewshot()", offset=12))
    assert labels(options) == ["k", "pool"] and options.items[0].insert_text == "k: "
    settings = labels(await complete(client, main, at(text, "    \n}", offset=4)))
    assert {"valset", "seed", "budget", "max_calls_per_row"} <= set(settings) and "trainset" not in settings
    optimizers = await complete(client, main, at(text, "= knn_fewshot", offset=2))
    assert labels(optimizers) == list(pipec.optimizers.names())
    resolved = await client.completion_item_resolve_async(optimizers.items[labels(optimizers).index("knn_fewshot")])
    assert "nearest labeled rows" in resolved.documentation.value
    outputs = labels(await complete(client, main, at(text, "exact_match(", offset=12)))
    assert outputs == ["intent"]
    close_doc(client, main)


async def test_completion_of_names_in_scope_and_types(client, program):
    main, shared = program
    text = MAIN.replace("c = classify(utterance: utterance)", "c = classify(utterance: )")
    await open_doc(client, main, text)
    names = labels(await complete(client, main, at(text, "utterance: )", offset=11)))
    assert {"utterance", "c", "classify"} <= set(names)
    args = labels(await complete(client, main, at(text, "classify(", offset=9)))
    assert args[0] == "utterance"
    await open_doc(client, shared)
    types = labels(await complete(client, shared, at(SHARED, "str \"what", offset=0)))
    assert {"str", "int", "float", "bool", "list", "enum"} <= set(types)
    close_doc(client, main, shared)


# ---------------------------------------------------------------------- rename
async def rename(client, path: Path, position: T.Position, new: str) -> T.WorkspaceEdit:
    return await client.text_document_rename_async(T.RenameParams(text_document=doc(path), position=position,
                                                                  new_name=new))


def applied(text: str, edits: list[T.TextEdit]) -> str:
    """`text` with the edits made (ASCII text: a character is one UTF-16 unit)."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]

    def offset(p: T.Position) -> int:
        return starts[p.line] + p.character if p.line < len(starts) else len(text)
    for e in sorted(edits, key=lambda e: offset(e.range.start), reverse=True):
        text = text[:offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


async def test_rename_edits_every_file_and_the_result_checks_clean(client, program):
    main, shared = program
    await open_doc(client, main)
    prepared = await client.text_document_prepare_rename_async(T.PrepareRenameParams(
        text_document=doc(main), position=at(MAIN, "Classify", offset=3)))
    assert prepared.placeholder == "Classify" and prepared.range.start == at(MAIN, "Classify")
    edit = await rename(client, main, at(MAIN, "Classify"), "Intent")
    assert {uri: len(edits) for uri, edits in edit.changes.items()} == {main.as_uri(): 1, shared.as_uri(): 1}
    edit2 = await rename(client, main, at(MAIN, "c.intent", offset=3), "label")
    assert {uri: len(edits) for uri, edits in edit2.changes.items()} == {main.as_uri(): 1, shared.as_uri(): 1}
    new_main = applied(applied(MAIN, edit.changes[main.as_uri()]), edit2.changes[main.as_uri()])
    new_shared = applied(applied(SHARED, edit.changes[shared.as_uri()]), edit2.changes[shared.as_uri()])
    assert "ChainOfThought(Intent," in new_main and "c.label" in new_main and "return intent = " in new_main
    assert "signature Intent {" in new_shared and "out label: enum(" in new_shared
    # The renamed program, as unsaved buffers, checks without a diagnostic (half renamed, it does not).
    client.diagnostics.pop(main.as_uri(), None)
    await open_doc(client, shared)
    await published(client, main.as_uri())
    client.diagnostics.pop(main.as_uri(), None)
    assert await change_doc(client, shared, new_shared, 2) == []
    assert [d.message.split("\n")[0] for d in await published(client, main.as_uri())] == [
        "unknown signature 'Classify'"]
    assert await change_doc(client, main, new_main, 2) == []
    close_doc(client, main, shared)


async def test_rename_refuses_keywords_builtins_and_taken_names(client, program):
    main, _ = program
    await open_doc(client, main)
    with pytest.raises(JsonRpcException, match="'pipeline' is a keyword"):
        await client.text_document_prepare_rename_async(T.PrepareRenameParams(
            text_document=doc(main), position=at(MAIN, "pipeline")))
    with pytest.raises(JsonRpcException, match="'ChainOfThought' is a built-in module kind"):
        await rename(client, main, at(MAIN, "ChainOfThought"), "Mine")
    with pytest.raises(JsonRpcException, match="'str' is a built-in type"):
        await rename(client, main, at(MAIN, "str)"), "text")
    with pytest.raises(JsonRpcException, match="'local' is already declared"):
        await rename(client, main, at(MAIN, "classify ="), "local")
    with pytest.raises(JsonRpcException, match="'return' is a keyword"):
        await rename(client, main, at(MAIN, "c = "), "return")
    close_doc(client, main)


# ---------------------------------------------------------------------- outline
async def test_document_symbols_are_hierarchical(client, program):
    main, shared = program
    await open_doc(client, main)
    symbols = await client.text_document_document_symbol_async(T.DocumentSymbolParams(text_document=doc(main)))
    tree = [(s.name, s.kind, [(c.name, c.kind) for c in s.children or []]) for s in symbols]
    assert tree == [
        ('import "shared.pipe"', T.SymbolKind.File, []),
        ("classify", T.SymbolKind.Module, []),
        ("intent", T.SymbolKind.Function, [("utterance", T.SymbolKind.Variable), ("intent", T.SymbolKind.Property),
                                           ("c", T.SymbolKind.Variable), ("return", T.SymbolKind.Key)]),
        ("compile intent", T.SymbolKind.Namespace, [("trainset", T.SymbolKind.Property),
                                                    ("metric", T.SymbolKind.Property),
                                                    ("optimizer", T.SymbolKind.Property)]),
        ('test "books"', T.SymbolKind.Event, [('intent(utterance: "Book a table")', T.SymbolKind.Method)]),
    ]
    await open_doc(client, shared)
    [_, signature] = await client.text_document_document_symbol_async(T.DocumentSymbolParams(text_document=doc(shared)))
    assert [(c.name, c.detail) for c in signature.children] == [
        ("utterance", "in str"), ("intent", "out enum(book_restaurant, get_weather, play_music)")]
    assert signature.selection_range.start == at(SHARED, "Classify")
    close_doc(client, main, shared)


# ---------------------------------------------------------------------- formatting
async def test_formatting_gives_pipec_fmt_layout_as_edits_of_the_changed_lines(client, tmp_path):
    from pipec.dsl.format import format_source
    messy = 'lm local = "local/smollm2"\n\nsignature S{in q:str out a : list[ str ]}\n# kept\nmodule m=Predict(S)\n'
    path = write(tmp_path, "messy.pipe", "")
    await open_doc(client, path, messy)
    edits = await client.text_document_formatting_async(T.DocumentFormattingParams(
        text_document=doc(path), options=T.FormattingOptions(tab_size=4, insert_spaces=True)))
    assert [e.range.start.line for e in edits] == [2, 4]       # the lm line, the blank and the comment stay
    formatted = applied(messy, edits)
    assert formatted == format_source(messy) and formatted != messy
    await change_doc(client, path, formatted, 2)
    assert list(await client.text_document_formatting_async(T.DocumentFormattingParams(
        text_document=doc(path), options=T.FormattingOptions(tab_size=4, insert_spaces=True)))) == []
    await change_doc(client, path, "signature S {", 3)
    with pytest.raises(JsonRpcException, match="cannot format: the file does not parse \\(1 syntax error"):
        await client.text_document_formatting_async(T.DocumentFormattingParams(
            text_document=doc(path), options=T.FormattingOptions(tab_size=4, insert_spaces=True)))
    close_doc(client, path)


# ---------------------------------------------------------------------- without the extra
async def test_without_the_lsp_extra_the_command_says_how_to_get_it():
    probe = ("import sys; sys.modules['pygls'] = None; sys.argv = ['pipec', 'lsp']\n"
             "from pipec.cli import main; sys.exit(main())")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", probe], capture_output=True, text=True,
                                  timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "pipec lsp needs the lsp extra: pip install 'pipec[lsp]'"


async def test_pipec_and_its_help_do_not_import_the_language_server():
    probe = ("import sys, json; sys.argv = ['pipec', '--help']\nfrom pipec.cli import main\ntry:\n    main()\n"
             "except SystemExit:\n    pass\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('pygls', 'lsprotocol') or m.startswith('pipec.lsp'))))")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", probe], capture_output=True, text=True,
                                  timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


async def test_an_lm_named_in_a_fallback_is_a_reference_to_it(client, tmp_path):
    text = """\
    lm local = "local/smollm2" (temperature: 0)
    lm other = "local/smollm2"
    lm robust = fallback(local, other)
    signature S { "Echo." in q: str out a: str }
    module m = Predict(S, lm: robust)
    pipeline p(q: str) -> (a) { return a = m(q: q).a }
    """
    path = write(tmp_path, "fb.pipe", text)
    source = textwrap.dedent(text)
    await open_doc(client, path)
    edit = await rename(client, path, at(source, "local ="), "primary")
    renamed = applied(source, edit.changes[path.as_uri()])
    assert "lm primary = " in renamed and "fallback(primary, other)" in renamed
    found = await client.text_document_definition_async(T.DefinitionParams(
        text_document=doc(path), position=at(source, "other)")))
    assert [loc.range.start.line for loc in (found if isinstance(found, list) else [found])] == [1]
    close_doc(client, path)
