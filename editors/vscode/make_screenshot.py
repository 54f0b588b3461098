"""Render editors/vscode/screenshot.png, the picture in the extension's README.

    .venv/bin/python editors/vscode/make_screenshot.py [--out PNG] [--html HTML] [--example FILE]

The page has two panels, drawn like a dark VS Code editor:

1. an example (examples/support.pipe) highlighted by the extension's real TextMate grammar:
   test/tokenize.js runs vscode-textmate and vscode-oniguruma (what VS Code runs) with
   syntaxes/pipe.tmLanguage.json, and colours each token by test/dark-theme.json (Dark+'s colours);
2. a broken copy of it (a misspelt type, option and field) with the diagnostics of
   `pipec check --format json` underlined where they point, and listed like VS Code's Problems panel.

The page is rendered by headless Chromium through tests/browser/cdp.py. Needs node (run
`npm ci` in editors/vscode first) and Chromium (`apt-get install chromium`).
tests/test_grammar.py renders the same page and checks its colours and underlines.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TOKENIZER = HERE / "test" / "tokenize.js"
THEME = HERE / "test" / "dark-theme.json"
EXAMPLE = REPO / "examples" / "support.pipe"
SCREENSHOT = HERE / "screenshot.png"

# How the second panel's copy is broken: (what is there, what it becomes). Each must occur once.
BREAKS = (
    ("in  message: str ", "in  message: strng "),
    ("= Predict(RouteMessage)", "= Predict(RouteMessage, temprature: 0)"),
    ("return team = r.team", "return team = r.teem"),
)

BACKGROUND = "#1E1E1E"
FOREGROUND = "#D4D4D4"
SEVERITY_COLORS = {"error": "#F14C4C", "warning": "#CCA700", "info": "#3794FF"}


def tokenize(paths: list[Path], theme: Path | None = THEME) -> list[list[list[dict]]]:
    """Tokenize files with the extension's grammar: per file, per line, the tokens.

    Each token is {"start", "end", "text", "scopes"} (code-point columns), plus "color" and
    "fontStyle" from `theme` when one is given.

    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "x.pipe"
    ...     _ = path.write_text('lm local = "local/smollm2"  # the embedded model\\n')
    ...     first_line = tokenize([path], theme=None)[0][0]
    >>> [(t["text"], leaf_scope(t["scopes"])) for t in first_line][:3]
    [('lm', 'storage.type.lm.pipe'), (' ', None), ('local', 'variable.other.lm.pipe')]
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the grammar runs on vscode-textmate under node "
                           "(apt-get install nodejs npm, then npm ci in editors/vscode)")
    if not (HERE / "node_modules" / "vscode-textmate").is_dir():
        raise RuntimeError(f"run `npm ci` in {HERE} first: vscode-textmate is not installed")
    cmd = [node, str(TOKENIZER)]
    if theme is not None:
        cmd += ["--theme", str(theme)]
    cmd += [str(p) for p in paths]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=HERE, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"tokenize.js failed ({proc.returncode}): {proc.stderr.strip()}")
    return [entry["lines"] for entry in json.loads(proc.stdout)]


def leaf_scope(scopes: list[str]) -> str | None:
    """The innermost scope that says what a token is: not the root, not a `meta.` region.

    >>> leaf_scope(["source.pipe", "meta.declaration.lm.pipe", "storage.type.lm.pipe"])
    'storage.type.lm.pipe'
    >>> leaf_scope(["source.pipe", "meta.block.signature.pipe"]) is None
    True
    """
    for scope in reversed(scopes):
        if scope != "source.pipe" and not scope.startswith("meta."):
            return scope
    return None


def break_example(source: str) -> str:
    """The example's declarations up to its compile block, with the mistakes of BREAKS made.

    >>> text = break_example(EXAMPLE.read_text(encoding="utf-8"))
    >>> "temprature: 0" in text, "r.teem" in text, "\\ncompile " in text
    (True, True, False)
    """
    head = source.split("\ncompile ", 1)[0].rstrip() + "\n"
    for old, new in BREAKS:
        if head.count(old) != 1:
            raise ValueError(f"the example no longer has {old!r} exactly once: update BREAKS")
        head = head.replace(old, new)
    return head


def check_json(path: Path) -> list[dict]:
    """The diagnostics of `pipec check --format json PATH` (file, line, col, end_line, end_col:
    1-based, end exclusive; severity, code, message, hint).

    >>> [d["code"] for d in check_json(EXAMPLE) if d["severity"] == "error"]
    []
    """
    proc = subprocess.run([sys.executable, "-m", "pipec", "check", "--format", "json", str(path)],
                          capture_output=True, text=True, check=False, timeout=120, cwd=REPO)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"pipec check failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def underlines(diagnostics: list[dict], lines: list[str]) -> dict[int, list[tuple[int, int, int]]]:
    """Per line index, the (start, end, diagnostic index) column ranges to underline.

    A diagnostic spanning lines underlines the rest of its first line, the lines between, and its
    last line up to its end; an empty range underlines one character, as VS Code does.

    >>> underlines([{"line": 2, "col": 3, "end_line": 2, "end_col": 6}], ["x", "a = bcd"])
    {1: [(2, 5, 0)]}
    >>> underlines([{"line": 1, "col": 2, "end_line": 2, "end_col": 2}], ["abc", "def"])
    {0: [(1, 3, 0)], 1: [(0, 1, 0)]}
    """
    out: dict[int, list[tuple[int, int, int]]] = {}
    for i, d in enumerate(diagnostics):
        first, last = d["line"] - 1, d.get("end_line", d["line"]) - 1
        for n in range(first, min(last, len(lines) - 1) + 1):
            start = d["col"] - 1 if n == first else 0
            end = d.get("end_col", d["col"] + 1) - 1 if n == last else len(lines[n])
            if end <= start:
                end = start + 1
            out.setdefault(n, []).append((start, end, i))
    return out


def render_line(text: str, tokens: list[dict], marks: list[tuple[int, int, int]] = (),
                severities: list[str] = ()) -> str:
    """One line as HTML: a span per run of characters with the same token and underline.

    Each token span carries its colour, its innermost scope (data-scope) and, when underlined, the
    class `squiggle` and the index of its diagnostic (data-diag).

    >>> render_line("in x", [{"start": 0, "end": 2, "scopes": ["source.pipe", "keyword.other.pipe"],
    ...                        "color": "#569CD6", "fontStyle": ""}])
    '<span class="tok" data-scope="keyword.other.pipe" style="color:#569CD6">in</span> x'
    """
    owner: list[dict | None] = [None] * len(text)
    for tok in tokens:
        for c in range(tok["start"], min(tok["end"], len(text))):
            owner[c] = tok
    diag: list[int | None] = [None] * len(text)
    for start, end, index in marks:
        for c in range(start, min(end, max(len(text), start + 1))):
            if c < len(text):
                diag[c] = index
    parts: list[str] = []
    c = 0
    while c < len(text):
        tok, mark = owner[c], diag[c]
        e = c + 1
        while e < len(text) and owner[e] is tok and diag[e] == mark:
            e += 1
        chunk = html.escape(text[c:e])
        if tok is None and mark is None:
            parts.append(chunk)
        else:
            attrs, style, classes = [], [], ["tok"]
            if tok is not None:
                scope = leaf_scope(tok["scopes"])
                if scope:
                    attrs.append(f'data-scope="{html.escape(scope)}"')
                if tok.get("color"):
                    style.append(f"color:{tok['color']}")
                if "italic" in tok.get("fontStyle", ""):
                    style.append("font-style:italic")
                if "bold" in tok.get("fontStyle", ""):
                    style.append("font-weight:bold")
            if mark is not None:
                classes.append("squiggle")
                sev = severities[mark] if mark < len(severities) else "error"
                classes.append(sev)
                attrs.append(f'data-diag="{mark}"')
            attr = (" " + " ".join(attrs)) if attrs else ""
            sty = f' style="{";".join(style)}"' if style else ""
            parts.append(f'<span class="{" ".join(classes)}"{attr}{sty}>{chunk}</span>')
        c = e
    if not text and marks:
        index = marks[0][2]
        parts.append(f'<span class="tok squiggle error" data-diag="{index}"> </span>')
    return "".join(parts)


def render_editor(panel_id: str, title: str, text: str, lines_tokens: list[list[dict]],
                  diagnostics: list[dict] = ()) -> str:
    """An editor panel: a tab with the file name, numbered highlighted lines, and (with
    diagnostics) the underlines and a Problems list.

    >>> out = render_editor("p", "x.pipe", "lm", [[{"start": 0, "end": 2, "scopes": ["s"], "color": "#569CD6"}]])
    >>> '<section class="editor" id="p">' in out and '>lm</span>' in out
    True
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    marks = underlines(list(diagnostics), lines)
    severities = [d.get("severity", "error") for d in diagnostics]
    rows = []
    for n, line in enumerate(lines):
        toks = lines_tokens[n] if n < len(lines_tokens) else []
        body = render_line(line, toks, marks.get(n, []), severities)
        rows.append(f'<div class="line"><span class="ln">{n + 1}</span><span class="src">{body}</span></div>')
    problems = ""
    if diagnostics:
        items = []
        for i, d in enumerate(diagnostics):
            sev = d.get("severity", "error")
            hint = f' <span class="hint">{html.escape(d["hint"])}</span>' if d.get("hint") else ""
            items.append(
                f'<div class="problem {html.escape(sev)}" data-diag="{i}"><span class="icon">'
                f'{"&#x2715;" if sev == "error" else "&#x26A0;"}</span> <span class="message">'
                f'{html.escape(d["message"])}</span>{hint} <span class="code">pipec({html.escape(d.get("code", ""))})'
                f'</span> <span class="pos">[Ln {d["line"]}, Col {d["col"]}]</span></div>')
        count = len(diagnostics)
        problems = (f'<div class="problems"><div class="head">PROBLEMS <span class="badge">{count}</span>'
                    f'</div>{"".join(items)}</div>')
    return (f'<section class="editor" id="{html.escape(panel_id)}"><div class="tabs"><span class="tab">'
            f'{html.escape(title)}</span></div><div class="code">{"".join(rows)}</div>{problems}</section>')


STYLE = f"""
body {{ margin: 0; padding: 16px; background: #181818; color: {FOREGROUND};
       font-family: "DejaVu Sans", "Liberation Sans", sans-serif; width: 1248px; }}
h1 {{ font-size: 15px; font-weight: normal; margin: 4px 0 10px; color: #CCCCCC; }}
.editor {{ background: {BACKGROUND}; border: 1px solid #2B2B2B; margin-bottom: 16px; overflow: hidden; }}
.tabs {{ background: #252526; height: 32px; }}
.tab {{ display: inline-block; padding: 0 16px; line-height: 32px; font-size: 13px; background: {BACKGROUND};
        color: #FFFFFF; border-top: 1px solid #0078D4; }}
.code {{ padding: 8px 0; font-family: "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 13px;
         line-height: 19px; }}
.line {{ white-space: pre; overflow: hidden; }}
.ln {{ display: inline-block; width: 44px; padding-right: 18px; text-align: right; color: #6E7681; }}
.squiggle.error {{ text-decoration: underline wavy {SEVERITY_COLORS["error"]}; text-decoration-skip-ink: none;
                  text-underline-offset: 3px; }}
.squiggle.warning {{ text-decoration: underline wavy {SEVERITY_COLORS["warning"]}; text-underline-offset: 3px; }}
.problems {{ border-top: 1px solid #2B2B2B; padding: 6px 12px 10px; font-size: 13px; }}
.problems .head {{ font-size: 11px; letter-spacing: 0.5px; color: #E7E7E7; padding: 4px 0 8px;
                   border-bottom: 1px solid #0078D4; display: inline-block; margin-bottom: 6px; }}
.badge {{ background: #616161; color: #FFFFFF; border-radius: 9px; padding: 0 6px; margin-left: 4px; }}
.problem {{ line-height: 22px; }}
.problem .icon {{ display: inline-block; width: 16px; }}
.problem.error .icon {{ color: {SEVERITY_COLORS["error"]}; }}
.problem.warning .icon {{ color: {SEVERITY_COLORS["warning"]}; }}
.problem .hint, .problem .code, .problem .pos {{ color: #9D9D9D; }}
"""


def build_page(example: Path = EXAMPLE, workdir: Path | None = None) -> str:
    """The whole page: the example highlighted, then its broken copy with pipec check's diagnostics.

    The broken copy is written to `workdir` (a new temporary directory by default) and checked there.

    >>> page = build_page()
    >>> page.count('<section class="editor"'), "unknown option &#x27;temprature&#x27;" in page
    (2, True)
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="pipec-screenshot-") as tmp:
            return build_page(example, Path(tmp))
    source = example.read_text(encoding="utf-8")
    broken = workdir / example.name
    broken.write_text(break_example(source), encoding="utf-8")
    diagnostics = check_json(broken)
    if not diagnostics:
        raise RuntimeError(f"pipec check found nothing wrong in {broken}: update BREAKS")
    good_tokens, bad_tokens = tokenize([example, broken])
    first = render_editor("highlighted", example.name, source, good_tokens)
    second = render_editor("diagnostics", f"{example.name} (broken copy)", broken.read_text(encoding="utf-8"),
                           bad_tokens, diagnostics)
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>pipec for VS Code</title>"
            f"<style>{STYLE}</style></head><body>"
            "<h1>.pipe files in VS Code: highlighting from the pipec grammar, diagnostics from pipec</h1>"
            f"{first}{second}</body></html>")


def render_png(page_html: str, html_path: Path | None = None) -> bytes:
    """Render the page in headless Chromium (tests/browser/cdp.py) and return the PNG of it all.

    >>> render_png("<p>hi</p>")[:4] == b"\\x89PNG"  # doctest: +SKIP
    True
    """
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from browser.cdp import Browser, find_chromium
    finally:
        sys.path.remove(str(REPO / "tests"))
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("headless Chromium is not installed (apt-get install chromium)")
    cleanup = html_path is None
    if html_path is None:
        fd, name = tempfile.mkstemp(suffix=".html", prefix="pipec-screenshot-")
        os.close(fd)
        html_path = Path(name)
    html_path.write_text(page_html, encoding="utf-8")
    try:
        with Browser.launch(chromium) as browser:
            page = browser.new_page(width=1280, height=800)
            page.goto(html_path.resolve().as_uri())
            page.wait_until("document.fonts.status === 'loaded'")
            return page.screenshot(full_page=True)
    finally:
        if cleanup:
            html_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Write the screenshot (and, with --html, the page); returns the exit status.

    >>> main(["--out", "/tmp/screenshot.png"])  # doctest: +SKIP
    wrote /tmp/screenshot.png (... bytes)
    0
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=SCREENSHOT, help=f"the PNG to write (default {SCREENSHOT})")
    ap.add_argument("--html", type=Path, help="also keep the page here")
    ap.add_argument("--example", type=Path, default=EXAMPLE, help="the .pipe file to show")
    args = ap.parse_args(argv)
    page = build_page(args.example)
    png = render_png(page, args.html)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"wrote {args.out} ({len(png)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
