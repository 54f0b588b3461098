"""`pipec lsp`: the language server, on pygls, over stdin and stdout.

This module is the protocol layer only: it keeps one `lsp_analysis.Analysis` per open buffer and
version, and turns what `lsp_index`, `lsp_hover`, `lsp_complete`, `lsp_outline`, `lsp_rename` and
`lsp_format` find into LSP messages. Positions inside pipec are characters (code points); the
client's units (UTF-16 unless it negotiated another encoding) are converted here, at the boundary.

It imports pygls, so only `pipec lsp` imports it (`pip install 'pipec[lsp]'`). Run it from an editor
as `pipec lsp`, for example in Neovim:
`vim.lsp.start({name = "pipec", cmd = {"pipec", "lsp"}})` for buffers of filetype `pipe`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from lsprotocol import types as T
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from .dsl.ast import Span
from .dsl.redaction import redact
from .lsp_analysis import Analysis, analyze
from .lsp_complete import complete
from .lsp_format import format_edits
from .lsp_hover import function_doc, hover_text
from .lsp_index import RENAMABLE, Occurrence
from .lsp_outline import Outline, outline
from .lsp_rename import RenameRefused, check_new_name, edits, renamable
from .lsp_text import Range, normalize
from .version import __version__

_SEVERITY = {"error": T.DiagnosticSeverity.Error, "warning": T.DiagnosticSeverity.Warning}
_SYMBOL = {"signature": T.SymbolKind.Interface, "record": T.SymbolKind.Struct, "module": T.SymbolKind.Module,
           "lm": T.SymbolKind.Constant, "tool": T.SymbolKind.Function, "pipeline": T.SymbolKind.Function,
           "field": T.SymbolKind.Field, "input": T.SymbolKind.Variable, "output": T.SymbolKind.Property,
           "step": T.SymbolKind.Variable, "return": T.SymbolKind.Key, "compile": T.SymbolKind.Namespace,
           "setting": T.SymbolKind.Property, "test": T.SymbolKind.Event, "case": T.SymbolKind.Method,
           "import": T.SymbolKind.File}
_COMPLETION = {"keyword": T.CompletionItemKind.Keyword, "field": T.CompletionItemKind.Field,
               "kind": T.CompletionItemKind.Class, "signature": T.CompletionItemKind.Interface,
               "module": T.CompletionItemKind.Module, "lm": T.CompletionItemKind.Constant,
               "tool": T.CompletionItemKind.Function, "pipeline": T.CompletionItemKind.Function,
               "record": T.CompletionItemKind.Struct, "variable": T.CompletionItemKind.Variable,
               "option": T.CompletionItemKind.Property, "setting": T.CompletionItemKind.Property,
               "optimizer": T.CompletionItemKind.Class, "metric": T.CompletionItemKind.Function,
               "type": T.CompletionItemKind.TypeParameter, "value": T.CompletionItemKind.Value,
               "function": T.CompletionItemKind.Function}
_REFUSED = T.LSPErrorCodes.RequestFailed


class PipeServer(LanguageServer):
    """The server's state: the analysis of each open buffer, for the version it was made of."""

    def __init__(self):
        super().__init__("pipec", __version__)
        self._analyses: dict[str, tuple[int | None, str, Analysis]] = {}

    # ------------------------------------------------------------ buffers
    def path_of(self, uri: str) -> str:
        """The file a buffer stands for (an unsaved, untitled one: a name in the working directory,
        so its imports are read from there)."""
        path = to_fs_path(uri) if uri.startswith("file:") else None
        return os.path.abspath(path) if path else os.path.join(os.getcwd(), "untitled.pipe")

    def uri_of(self, path: str) -> str:
        """The URI of a file of a program: an open buffer's own URI when it is open, so the client
        matches locations to its buffers."""
        for doc in list(self.workspace.text_documents.values()):
            if doc.uri.startswith("file:") and os.path.normpath(self.path_of(doc.uri)) == os.path.normpath(path):
                return doc.uri
        return from_fs_path(path) or Path(path).as_uri()

    def overlay(self, target: Path) -> str | None:
        """An import's text from its open buffer, when it is open: what the user sees, saved or not."""
        for doc in list(self.workspace.text_documents.values()):
            if doc.uri.startswith("file:") and Path(self.path_of(doc.uri)).resolve() == target:
                return doc.source
        return None

    def analysis(self, uri: str) -> Analysis:
        """The analysis of the buffer's current text, made once per version."""
        doc = self.workspace.get_text_document(uri)
        cached = self._analyses.get(uri)
        if cached is not None and cached[0] == doc.version and cached[1] == doc.source:
            return cached[2]
        result = analyze(self.path_of(uri), doc.source, self.overlay)
        self._analyses[uri] = (doc.version, doc.source, result)
        return result

    def check_text(self, uri: str, text: str) -> Analysis:
        """An analysis of other text for the same buffer (completion's placeholder text), not kept."""
        return analyze(self.path_of(uri), text, self.overlay)

    def open_analyses(self) -> list[Analysis]:
        return [self.analysis(uri) for uri in list(self.workspace.text_documents)]

    def forget(self, uri: str) -> None:
        self._analyses.pop(uri, None)

    # ------------------------------------------------------------ positions
    def to_server(self, analysis: Analysis, position: T.Position) -> tuple[int, int]:
        """A client position in the buffer as (line, character) in code points."""
        lines = analysis.source(analysis.path).lines
        if position.line >= len(lines):
            return len(lines) - 1, len(lines[-1])
        units, count = 0, self.workspace.position_codec.client_num_units
        for i, c in enumerate(lines[position.line]):
            if units >= position.character:
                return position.line, i
            units += count(c)
        return position.line, len(lines[position.line])

    def to_client(self, lines: list[str], r: Range) -> T.Range:
        count = self.workspace.position_codec.client_num_units

        def pos(line: int, char: int) -> T.Position:
            text = lines[line] if line < len(lines) else ""
            return T.Position(line=line, character=count(text[:char]))
        return T.Range(start=pos(r[0], r[1]), end=pos(r[2], r[3]))

    def range_of(self, analysis: Analysis, span: Span) -> T.Range:
        text = analysis.source(span.file)
        return self.to_client(text.lines, text.range(span))

    def location(self, analysis: Analysis, span: Span) -> T.Location:
        return T.Location(uri=self.uri_of(span.file), range=self.range_of(analysis, span))

    def occurrence_at(self, uri: str, position: T.Position) -> tuple[Analysis, Occurrence | None, str]:
        """The analysis, the indexed name at the position (if any) and the word there."""
        a = self.analysis(uri)
        line, char = self.to_server(a, position)
        occ = a.index.at(a.path, line, char)
        text = a.source(a.path).lines[line]
        start = end = char
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
            start -= 1
        while end < len(text) and (text[end].isalnum() or text[end] == "_"):
            end += 1
        return a, occ, text[start:end]

    def references(self, analysis: Analysis, key: tuple) -> list[tuple[Analysis, Occurrence]]:
        """Every occurrence of a symbol in the programs of the open buffers (for a symbol of the files,
        those whose program holds its declaration), each once."""
        home = key[1] if key[0] in RENAMABLE else None        # the file that declares it
        found: dict[tuple, tuple[Analysis, Occurrence]] = {}
        for a in [analysis] + [x for x in self.open_analyses() if x is not analysis]:
            if home is not None and home not in a.files:
                continue
            for occ in a.index.references(key):
                found.setdefault((occ.span, occ.key), (a, occ))
        return list(found.values())

    # ------------------------------------------------------------ diagnostics
    def publish(self, uri: str) -> None:
        """Check the buffer and send its diagnostics, all at once."""
        a = self.analysis(uri)
        doc = self.workspace.get_text_document(uri)
        out = []
        for d, related in a.document_diagnostics():
            message = redact(d.message) + (f"\nhint: {redact(d.hint)}" if d.hint else "")
            info = [T.DiagnosticRelatedInformation(
                location=self.location(a, r.span),
                message=redact(r.message) + (f" (hint: {redact(r.hint)})" if r.hint else "")) for r in related]
            out.append(T.Diagnostic(range=self.range_of(a, d.span), message=message, severity=_SEVERITY.get(d.severity),
                                    code=d.code or None, source="pipec", related_information=info or None))
        self.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=uri, diagnostics=out,
                                                                          version=doc.version))

    def publish_dependents(self, uri: str) -> None:
        """Check again the other open buffers that import this one: their programs read its text."""
        path = os.path.normpath(self.path_of(uri))
        for other in list(self.workspace.text_documents):
            if other != uri:
                cached = self._analyses.get(other)
                if cached is not None and path in {os.path.normpath(f) for f in cached[2].files}:
                    self.forget(other)
                    self.publish(other)


def did_open(ls: PipeServer, params: T.DidOpenTextDocumentParams) -> None:
    """textDocument/didOpen: check the buffer and publish its diagnostics (and its importers', which
    now read it from the buffer)."""
    ls.publish(params.text_document.uri)
    ls.publish_dependents(params.text_document.uri)


def did_change(ls: PipeServer, params: T.DidChangeTextDocumentParams) -> None:
    """textDocument/didChange: check the new text as it is typed, unsaved, and publish every diagnostic."""
    ls.publish(params.text_document.uri)
    ls.publish_dependents(params.text_document.uri)


def did_close(ls: PipeServer, params: T.DidCloseTextDocumentParams) -> None:
    """textDocument/didClose: clear the buffer's diagnostics; its importers read the file on disk again."""
    ls.forget(params.text_document.uri)
    ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))
    ls.publish_dependents(params.text_document.uri)      # importers now read the file on disk


def hover(ls: PipeServer, params: T.HoverParams) -> T.Hover | None:
    """textDocument/hover: Markdown about the name under the cursor, e.g. on `classify` in
    `c = classify(...)` its kind, options, LM and LM call bound (see `lsp_hover`)."""
    a, occ, _ = ls.occurrence_at(params.text_document.uri, params.position)
    text = hover_text(a, occ.key) if occ is not None else None
    if not text:
        return None
    return T.Hover(contents=T.MarkupContent(kind=T.MarkupKind.Markdown, value=text), range=ls.range_of(a, occ.span))


def definition(ls: PipeServer, params: T.DefinitionParams) -> list[T.Location] | None:
    """textDocument/definition: where the name under the cursor is declared, in this file or an
    imported one (an import's path goes to the file); nothing for built-in names."""
    a, occ, _ = ls.occurrence_at(params.text_document.uri, params.position)
    if occ is None:
        return None
    if occ.key[0] == "import":
        return [T.Location(uri=ls.uri_of(occ.key[1]), range=T.Range(start=T.Position(line=0, character=0),
                                                                     end=T.Position(line=0, character=0)))]
    target = a.index.definition(occ.key)
    return [ls.location(a, target.span)] if target is not None else None


def references(ls: PipeServer, params: T.ReferenceParams) -> list[T.Location] | None:
    """textDocument/references: every use of the symbol under the cursor in the open files' programs."""
    a, occ, _ = ls.occurrence_at(params.text_document.uri, params.position)
    if occ is None:
        return None
    found = ls.references(a, occ.key)
    keep = [(x, o) for x, o in found if params.context.include_declaration or not o.definition]
    return [ls.location(x, o.span) for x, o in keep]


def prepare_rename(ls: PipeServer, params: T.PrepareRenameParams) -> T.PrepareRenamePlaceholder:
    """textDocument/prepareRename: the name that would be renamed, or an error saying why it cannot
    be (a keyword, a built-in kind, type, option or setting)."""
    a, occ, word = ls.occurrence_at(params.text_document.uri, params.position)
    try:
        occ = renamable(occ, word)
    except RenameRefused as err:
        raise JsonRpcException(str(err), code=_REFUSED) from None
    return T.PrepareRenamePlaceholder(range=ls.range_of(a, occ.span), placeholder=word)


def rename(ls: PipeServer, params: T.RenameParams) -> T.WorkspaceEdit:
    """textDocument/rename: edits of every occurrence, in every file of the open programs that has one."""
    a, occ, word = ls.occurrence_at(params.text_document.uri, params.position)
    try:
        occ = renamable(occ, word)
        check_new_name(a.index, occ.key, params.new_name)
    except RenameRefused as err:
        raise JsonRpcException(str(err), code=_REFUSED) from None
    found = ls.references(a, occ.key)
    owner = {o.span.file: x for x, o in found}
    changes = {ls.uri_of(file): [T.TextEdit(range=ls.range_of(owner[file], span), new_text=params.new_name)
                                 for span in spans]
               for file, spans in edits([o for _, o in found]).items()}
    return T.WorkspaceEdit(changes=changes)


def document_symbols(ls: PipeServer, params: T.DocumentSymbolParams) -> list[T.DocumentSymbol]:
    """textDocument/documentSymbol: the buffer's outline, nested (see `lsp_outline`)."""
    a = ls.analysis(params.text_document.uri)
    main = next((f for f in a.program.files if f.path == a.path), None)
    return [_symbol(ls, a, o) for o in outline(main)] if main is not None else []


def _symbol(ls: PipeServer, a: Analysis, o: Outline) -> T.DocumentSymbol:
    whole, name = ls.range_of(a, o.span), ls.range_of(a, o.selection)
    if not (_before(whole.start, name.start) and _before(name.end, whole.end)):
        name = whole                # the protocol wants the name inside the whole
    return T.DocumentSymbol(name=o.name, kind=_SYMBOL.get(o.kind, T.SymbolKind.Variable), range=whole,
                            selection_range=name, detail=o.detail or None,
                            children=[_symbol(ls, a, c) for c in o.children] or None)


def _before(a: T.Position, b: T.Position) -> bool:
    return (a.line, a.character) <= (b.line, b.character)


def completion(ls: PipeServer, params: T.CompletionParams) -> T.CompletionList:
    """textDocument/completion: what fits at the cursor, e.g. after `c.` the outputs of the module call
    bound to `c` (see `lsp_complete`)."""
    uri = params.text_document.uri
    a = ls.analysis(uri)
    line, char = ls.to_server(a, params.position)
    offset = a.source(a.path).offset(line, char)
    items = complete(a, offset, lambda text: ls.check_text(uri, text))
    return T.CompletionList(is_incomplete=False, items=[
        T.CompletionItem(label=i.label, kind=_COMPLETION.get(i.kind), detail=i.detail or None,
                         documentation=T.MarkupContent(kind=T.MarkupKind.Markdown, value=i.doc) if i.doc else None,
                         insert_text=i.insert or None, data=list(i.data) if i.data else None)
        for i in items])


def completion_resolve(ls: PipeServer, item: T.CompletionItem) -> T.CompletionItem:
    """completionItem/resolve: an optimizer's doc and options, for the item picked."""
    # An optimizer's doc imports its module: done for the one item picked, never for the list.
    if isinstance(item.data, list) and len(item.data) == 2 and item.data[0] == "optimizer":
        from .registry import catalogue
        doc = function_doc(catalogue(), "optimizers", item.data[1])
        if doc:
            item.documentation = T.MarkupContent(kind=T.MarkupKind.Markdown, value=doc)
    return item


def formatting(ls: PipeServer, params: T.DocumentFormattingParams) -> list[T.TextEdit]:
    """textDocument/formatting: `pipec fmt`'s layout as edits of the changed lines; an error when the
    buffer does not parse."""
    from .dsl.format import FormatError
    uri = params.text_document.uri
    text = normalize(ls.workspace.get_text_document(uri).source)
    try:
        edits = format_edits(text, ls.path_of(uri))
    except FormatError as err:
        raise JsonRpcException(f"cannot format: the file does not parse ({_count(len(err.diagnostics))}; "
                               "the diagnostics show where)", code=_REFUSED) from None
    lines = text.split("\n")
    return [T.TextEdit(range=ls.to_client(lines, r), new_text=new) for r, new in edits]


def _count(errors: int) -> str:
    return f"{errors} syntax error{'s' * (errors != 1)}"


def build() -> PipeServer:
    """A server with every feature registered (nothing runs until it is started).

    >>> sorted(build().protocol.fm.features)[:4]
    ['completionItem/resolve', 'textDocument/completion', 'textDocument/definition', 'textDocument/didChange']
    """
    server = PipeServer()
    features = [
        (T.TEXT_DOCUMENT_DID_OPEN, did_open, None), (T.TEXT_DOCUMENT_DID_CHANGE, did_change, None),
        (T.TEXT_DOCUMENT_DID_CLOSE, did_close, None), (T.TEXT_DOCUMENT_HOVER, hover, None),
        (T.TEXT_DOCUMENT_DEFINITION, definition, None), (T.TEXT_DOCUMENT_REFERENCES, references, None),
        (T.TEXT_DOCUMENT_PREPARE_RENAME, prepare_rename, None),
        (T.TEXT_DOCUMENT_RENAME, rename, None),        # pygls offers prepareRename to clients that support it
        (T.TEXT_DOCUMENT_DOCUMENT_SYMBOL, document_symbols, None),
        (T.TEXT_DOCUMENT_COMPLETION, completion,
         T.CompletionOptions(trigger_characters=[".", "(", ",", ":", "=", "[", "{"], resolve_provider=True)),
        (T.COMPLETION_ITEM_RESOLVE, completion_resolve, None),
        (T.TEXT_DOCUMENT_FORMATTING, formatting, None),
    ]
    for method, handler, options in features:
        server.feature(method, options)(handler)
    return server


def serve() -> None:
    """Serve the protocol on this process's stdin and stdout until the client exits.

    Not runnable as an example (it takes over stdin and stdout): `pipec lsp` calls it.
    """
    stdin, stdout = sys.stdin.buffer, sys.__stdout__.buffer
    # stdout carries the protocol: a stray print from anywhere would corrupt it, so it goes to stderr.
    sys.stdout = sys.stderr
    build().start_io(stdin, stdout)
