"""`pipec report`: the self-contained HTML report of a compile and an eval run.

The first part checks the page's content from Python (graph, chart, prompt diffs, the embedded eval
rows, the CLI). The second opens the page in headless Chromium over the DevTools protocol
(`tests/browser/cdp.py`, no websocket library needed): no console error, no request but the file,
the graph and the chart drawn, filtering to failures shows exactly the failing rows, a 10,000-row
run opens and filters in a few seconds; it saves a screenshot to bench/results/report.png. Those
tests are skipped when no Chromium is installed (`apt-get install chromium`; CI installs it).

Every LM is a `pipec.ScriptedLM`: the toy "model" reverses a word only when its prompt carries demos,
so compiling visibly helps; a few words are answered wrong, and one gets an unparseable reply.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser.cdp import Browser, find_chromium, save_png
from conftest import REPO, first_user_value, read_jsonl

import pipec
from pipec import cli
from pipec.cli import cmd_report
from pipec.html_report import ReportError, build_report, default_output, line_diff, read_eval_rows, write_report

pytestmark = pytest.mark.usefixtures("isolated_env", "no_embedded_model")

TOY = """
    signature Flip { "Reverse the word." in q: str "a word" out a: str "the word backwards" }
    signature Size { "Count the letters." in a: str out n: int }
    module flip = Predict(Flip)
    module size = ChainOfThought(Size)
    pipeline toy(q: str) -> (a, n) {
        r = flip(q: q)
        s = size(a: r.a)
        return a = r.a, n = s.n
    }
"""
WORDS = ["apple", "river", "stone", "cloud", "tiger", "maple", "ocean", "piano", "lemon", "sugar",
         "house", "green", "violet", "pepper", "candle", "rocket"]
TEST_WORDS = ["garden", "silver", "wrongly", "planet", "xylophone", "window", "misfit", "forest"]
WRONG = {"wrongly", "misfit"}          # answered wrong even with demos
UNPARSEABLE = "I would rather not count that."


def has_demos(request) -> bool:
    return any(m["role"] == "assistant" for m in request.messages[1:-1])


def toy_rule(request):
    if request.messages[0]["content"].startswith("Count"):
        a = first_user_value(request, "a")
        if a.startswith("enohpolyx"):                       # 'xylophone' reversed: the reply cannot be read
            return UNPARSEABLE
        return {"reasoning": f"{a} has {len(a)} letters", "n": len(a)}
    q = first_user_value(request, "q")
    if not has_demos(request):
        return {"a": "?"}
    return {"a": "nope" if q in WRONG else q[::-1]}


def rows_for(words):
    return [{"q": w, "a": w[::-1]} for w in words]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def lm(monkeypatch):
    """Every LM of every program (CLI included) is the scripted toy model."""
    lm = pipec.ScriptedLM(rule=toy_rule)
    monkeypatch.setattr("pipec.program.backend_for", lambda model, options=None: lm)
    return lm


@pytest.fixture
def compiled(tmp_path, write_pipe, lm):
    """A compiled artifact (random_search: several trials) and its test data beside it."""
    path = write_pipe(TOY, "toy.pipe")
    prog = pipec.load(path, cache=False)
    rows = rows_for(WORDS)
    prog = prog.compile(rows[:10], rows[10:], "exact_match(a)", "random_search", seed=0,
                        options={"candidates": 4, "max_demos": 2, "max_labeled": 2})
    artifact = prog.save(tmp_path / "toy.compiled.json")
    data = write_jsonl(tmp_path / "test.jsonl", rows_for(TEST_WORDS))
    return artifact, data


@pytest.fixture
def eval_rows(compiled, tmp_path, capsys):
    """The JSONL that `pipec eval --output` writes, made by the real command."""
    artifact, data = compiled
    out = tmp_path / "rows.jsonl"
    assert cli.main(["eval", str(artifact), "--data", str(data), "--output", str(out), "--no-cache"]) == 0
    capsys.readouterr()
    return out


def report_parser():
    return cli._parser()


def run_report(*argv) -> int:
    """`pipec report ...` through the CLI's parser and command function, a usage error as exit 2."""
    args = report_parser().parse_args(["report", *map(str, argv)])
    try:
        return cmd_report(args)
    except cli.UsageError as err:
        print(f"usage error: {err}", file=sys.stderr)
        return cli.EXIT_USAGE


def embedded_rows(page: str) -> list[dict]:
    m = re.search(r'<script type="application/json" id="pipec-eval-data">(.*?)</script>', page, re.S)
    assert m, "no embedded eval data"
    return json.loads(m.group(1))["rows"]


# ============================================================================ the page, from Python
def test_report_of_a_compile_and_its_eval_run(compiled, eval_rows, tmp_path, capsys):
    artifact, _ = compiled
    out = tmp_path / "out" / "report.html"
    assert run_report(artifact, "--eval", eval_rows, "-o", out) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}, 8 eval rows"
    page = out.read_text(encoding="utf-8")
    art = json.loads(artifact.read_text())
    report = art["report"]

    # Self-contained: nothing is loaded from anywhere.
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=", page)
    assert not re.search(r"<link[^>]*stylesheet", page)
    assert not re.search(r"""(href|src)=["']?(https?:)?//""", page)
    assert "@import" not in page and "url(http" not in page
    assert "default-src 'none'" in page                       # and the page's CSP forbids it anyway

    # The graph: every node with its module kind and LM, every input and output.
    svg = re.search(r'<svg id="graph-svg".*?</svg>', page, re.S).group(0)
    assert 'data-node="r"' in svg and 'data-node="s"' in svg
    assert "r · flip" in svg and "Predict · local/smollm2" in svg       # the file's LM id (the default one)
    assert "s · size" in svg and "ChainOfThought · local/smollm2" in svg
    for key in ("in:q", "out:a", "out:n"):
        assert f'data-node="{key}"' in svg
    assert svg.count('class="edge"') >= 4

    # The chart: one point per trial, a best-so-far line, baseline and compiled scores.
    chart = re.search(r'<svg id="chart-svg".*?</svg>', page, re.S).group(0)
    assert chart.count("<circle") == len(report["trials"]) >= 3
    assert 'class="best"' in chart
    assert f"baseline {report['baseline_score']:.3f}" in chart
    assert f"compiled {report['compiled_score']:.3f}" in chart

    # Per module: the demos the compile chose, added to the prompt (a + line per demo turn).
    demos = art["predictors"]["flip"]["demos"]
    assert demos, "the compile should have chosen demos for flip"
    block = re.search(r'<div class="module" data-module="flip">.*?</details>', page, re.S).group(0)
    for d in demos:
        assert f"<td>{d['q']}</td>" in block
        assert f'<div class="dl add">q: {d["q"]}</div>' in block
    assert "Reverse the word." in block

    # The numbers.
    for text in (f"{report['lm_requests']:,}", f"{report['tokens']:,}", "seed", "pipec (compile)", "python"):
        assert text in page

    # The eval rows, every one, as `pipec eval` wrote them.
    rows = embedded_rows(page)
    assert [r["where"] for r in rows] == [r["where"] for r in read_jsonl(eval_rows)]
    failing = {r["inputs"]["q"] for r in rows if not r["passed"]}
    assert failing == WRONG | {"xylophone"}
    bad = next(r for r in rows if r["inputs"]["q"] == "xylophone")
    assert bad["outputs"] is None and bad["raw"] == UNPARSEABLE and "did not parse" in bad["error"]


def test_eval_run_alone_and_default_output(eval_rows, capsys):
    assert run_report(eval_rows) == 0
    out = eval_rows.with_name("rows.report.html")
    assert capsys.readouterr().out.strip() == f"wrote {out}, 8 eval rows"
    page = out.read_text(encoding="utf-8")
    assert "graph-svg" not in page and "chart-svg" not in page          # rows only: nothing to draw
    assert len(embedded_rows(page)) == 8
    assert "8 rows · 5 passed · 3 failed (1 without outputs)" in page


def test_the_page_shows_each_rows_feedback(eval_rows, tmp_path, capsys):
    written = read_jsonl(eval_rows)
    wrongly = next(r for r in written if r["inputs"]["q"] == "wrongly")
    assert wrongly["feedback"] == "expected ylgnorw, got nope"          # `pipec eval --output` wrote it
    out = tmp_path / "fb.html"
    assert run_report(eval_rows, "-o", out) == 0
    page = out.read_text(encoding="utf-8")
    rows = embedded_rows(page)
    assert [r["feedback"] for r in rows] == [r["feedback"] for r in written]
    assert next(r for r in rows if r["inputs"]["q"] == "xylophone")["feedback"] is None     # its error says why
    assert '<div class="vt fb" id="ev-scroll">' in page and "<div>got</div><div>feedback</div>" in page
    assert 'placeholder="Search inputs, expected, got, feedback, replies"' in page

    # Rows an older pipec wrote have no feedback: no empty column for them.
    old = write_jsonl(tmp_path / "old.jsonl", [{k: v for k, v in r.items() if k != "feedback"} for r in written])
    assert run_report(old, "-o", tmp_path / "old.html") == 0
    page = (tmp_path / "old.html").read_text(encoding="utf-8")
    assert all(r["feedback"] is None for r in embedded_rows(page))
    assert '<div class="vt" id="ev-scroll">' in page and "<div>feedback</div>" not in page


def test_data_runs_the_evaluation_now(compiled, tmp_path, lm, capsys):
    artifact, data = compiled
    before = len(lm.requests)
    out = tmp_path / "now.html"
    assert run_report(artifact, "--data", data, "-o", out, "--no-cache") == 0
    assert len(lm.requests) > before                                    # it ran the program on the rows
    page = out.read_text(encoding="utf-8")
    rows = embedded_rows(page)
    assert [r["inputs"]["q"] for r in rows] == TEST_WORDS
    assert {r["inputs"]["q"] for r in rows if not r["passed"]} == WRONG | {"xylophone"}
    assert "wall time" in page and "LM calls" in page


def test_a_pipe_file_reports_its_uncompiled_prompts(write_pipe, tmp_path, lm, capsys):
    path = write_pipe(TOY, "plain.pipe")
    out = tmp_path / "plain.html"
    assert run_report(path, "-o", out) == 0
    page = out.read_text(encoding="utf-8")
    assert "not compiled" in page and "graph-svg" in page and "chart-svg" not in page
    assert "pipec-eval-data" not in page and "<script>" not in page


def test_changed_instruction_shows_in_the_diff(compiled, lm):
    artifact, _ = compiled
    prog = pipec.load(artifact, cache=False)
    prog.apply({"flip": {"instruction": "Write the word from its last letter to its first.", "demos": []}})
    page = build_report(prog)
    block = re.search(r'<div class="module" data-module="flip">.*?</details>', page, re.S).group(0)
    assert "Instruction (compiled)" in block and "Instruction (uncompiled)" in block
    assert '<div class="dl del">Reverse the word.</div>' in block
    assert '<div class="dl add">Write the word from its last letter to its first.</div>' in block


def test_map_bodies_are_drawn_inside_their_map(write_pipe):
    path = write_pipe("""
        signature Plan { "Split the question." in question: str out questions: list[str] }
        signature Solve { "Solve one step." in question: str in earlier: list[str] out answer: str }
        module plan = Predict(Plan)
        module solve = Predict(Solve)
        tool shout(text: str) -> str = python("builtins:str")
        pipeline p(question: str) -> (answer, steps) {
            pl = plan(question: question)
            solved = map q in pl.questions ordered max 3 { solve(question: q, earlier: earlier.answer) }
            loud = shout(text: question)
            return answer = loud, steps = solved.answer
        }
    """)
    prog = pipec.load(path, lm=pipec.ScriptedLM([]), cache=False)
    svg = re.search(r'<svg id="graph-svg".*?</svg>', build_report(prog), re.S).group(0)
    box = re.search(r'<g class="node node-map" data-node="(map#\d+)">.*?<rect x="([\d.]+)" y="([\d.-]+)" '
                    r'width="([\d.]+)" height="([\d.]+)"', svg, re.S)
    assert box and "map q in pl.questions · ordered · max 3" in svg
    mx, my, mw, mh = map(float, box.groups()[1:])
    inner = re.search(r'<g class="node node-module" data-node="(solve#\d+)">.*?<rect x="([\d.]+)" y="([\d.-]+)" '
                      r'width="([\d.]+)" height="([\d.]+)"', svg, re.S)
    ix, iy, iw, ih = map(float, inner.groups()[1:])
    assert mx < ix and ix + iw < mx + mw and my < iy and iy + ih < my + mh      # the body sits inside
    assert 'class="node node-tool"' in svg and "shout" in svg


def test_line_diff_keeps_context_and_folds_long_runs():
    before = "\n".join(f"line {i}" for i in range(20))
    after = before.replace("line 10", "line ten")
    diff = line_diff(before, after)
    assert ("-", "line 10") in diff and ("+", "line ten") in diff
    assert diff[0] == ("…", "7 unchanged lines") and diff[-1] == ("…", "6 unchanged lines")
    assert line_diff("same", "same") == [(" ", "same")]


def test_embedded_data_cannot_break_out_of_its_script(tmp_path):
    rows = [{"where": "x:1", "inputs": {"q": "</script><script>alert(1)</script>"}, "expected": {"a": "b"},
             "outputs": {"a": "\u2028<!--"}, "score": 0.0, "passed": False, "error": None, "raw": "</SCRIPT>"}]
    page = build_report(None, rows=rows)
    assert page.count("</script>") == 2                  # the data's and the page script's own
    assert embedded_rows(page)[0]["inputs"]["q"] == rows[0]["inputs"]["q"]
    assert "<script>alert" not in page
    odd = build_report(None, rows=[{**rows[0], "inputs": {"x": float("nan")}, "score": float("inf")}])
    assert embedded_rows(odd)[0]["inputs"] == {"x": "nan"} and embedded_rows(odd)[0]["score"] == 0.0


def test_bad_eval_rows_are_named_by_line(tmp_path, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"inputs": {}, "score": 1}\n{"oops": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ReportError) as exc:
        read_eval_rows(p)
    assert f"{p}:2: not an eval row" in str(exc.value) and f"{p}:3: invalid JSON" in str(exc.value)
    assert run_report(p) == 1
    assert f"pipec report: error: {p}:2" in capsys.readouterr().err


def test_usage_errors(compiled, eval_rows, tmp_path, capsys):
    artifact, data = compiled
    assert run_report(tmp_path / "missing.json") == 2
    assert run_report(artifact, "--eval", eval_rows, "--data", data) == 2
    assert run_report(eval_rows, "--eval", eval_rows) == 2
    assert run_report(artifact, "--eval", eval_rows, "-o", eval_rows) == 2
    assert run_report(artifact, "--eval", tmp_path / "nope.jsonl") == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "not both" in err and "must not overwrite" in err
    assert default_output("a/x.compiled.json") == Path("a/x.report.html")


def test_write_report_for_compile_and_eval_flags(compiled, lm, tmp_path):
    """What `pipec compile --report` and `pipec eval --report` call: wall time and stats are shown."""
    from pipec.dataset import load_examples
    from pipec.evaluate import evaluate
    from pipec.metrics import Metric
    artifact, data = compiled
    prog = pipec.load(artifact, cache=False)
    metric = Metric.parse(prog.artifact.report.metric)
    result = evaluate(prog, load_examples(data, prog, metric.fields), metric)
    out = write_report(tmp_path / "r.html", prog, rows=result, data=str(data), eval_stats=prog.stats,
                       eval_seconds=1.25, compile_seconds=150.0)
    page = out.read_text(encoding="utf-8")
    assert "1.2 s" in page and "2 min 30 s" in page
    assert f"{prog.stats.calls:,}" in page
    assert len(embedded_rows(page)) == len(TEST_WORDS)


def test_compile_report_shows_the_compile_run_and_knn_pools(write_pipe, lm, tmp_path):
    """What `pipec compile --report` calls, here on a knn_fewshot compile (demos chosen per input)."""
    prog = pipec.load(write_pipe(TOY, "knn.pipe"), cache=False)
    rows = rows_for(WORDS)
    prog = prog.compile(rows[:10], rows[10:], "exact_match(a)", "knn_fewshot", options={"k": 2})
    page = write_report(tmp_path / "knn.html", prog, compile_seconds=prog.compile_result.seconds,
                        compile_stats=prog.compile_result.stats).read_text(encoding="utf-8")
    assert "calls made / cached" in page and f"{prog.compile_result.stats.calls:,} / 0" in page
    assert "the 2 nearest of a pool of 10" in page
    for r in rows[:10]:
        assert f"<td>{r['q']}</td>" in page


def test_importing_the_report_module_stays_light():
    code = ("import sys, json\nimport pipec.html_report\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert not set(json.loads(out.stdout.strip().splitlines()[-1])) & {"pydantic", "lark", "litellm", "optuna"}


def test_the_stylesheet_and_the_script_are_the_packaged_files_inline():
    """report.css and report.js are package data (pyproject.toml), read from the installed package."""
    from importlib.resources import files
    assets = files("pipec") / "report_assets"
    css, js = (assets / "report.css").read_text(encoding="utf-8"), (assets / "report.js").read_text(encoding="utf-8")
    assert css.startswith(":root {") and "pipec-eval-data" in js
    page = build_report(None, rows=[{"inputs": {"q": "x"}, "score": 1.0}])
    assert f"<style>\n{css}</style>" in page and f"<script>\n{js}</script>" in page
    assert "<script>" not in build_report(None)                   # no rows, no script


def test_cli_main_runs_the_report_command(compiled, eval_rows, tmp_path, capsys):
    artifact, _ = compiled
    out = tmp_path / "via-cli.html"
    assert cli.main(["report", str(artifact), "--eval", str(eval_rows), "-o", str(out)]) == 0
    assert len(embedded_rows(out.read_text(encoding="utf-8"))) == 8


# ============================================================================ the page, in a browser
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(apt-get install chromium); CI installs it")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium")
    with Browser.launch(CHROMIUM) as b:
        yield b


def open_report(browser, path: Path):
    page = browser.new_page(width=1280, height=900)
    started = time.perf_counter()
    page.goto(path.resolve().as_uri())
    page.wait_until("document.documentElement.dataset.ready === '1' || !document.getElementById('pipec-eval-data')")
    return page, time.perf_counter() - started


def check_clean(page, path: Path) -> None:
    assert page.console_errors() == []
    url = path.resolve().as_uri()
    assert [u for u in page.requests() if u != url and not u.startswith("data:")] == []


def dom_rows(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#ev-canvas .r')].map(e => e.dataset.row)")


@needs_chromium
def test_browser_report_renders_and_filters(browser, compiled, eval_rows, tmp_path):
    artifact, _ = compiled
    out = tmp_path / "report.html"
    assert run_report(artifact, "--eval", eval_rows, "-o", out) == 0
    page, _ = open_report(browser, out)
    check_clean(page, out)

    # The graph and the chart are drawn, with real size on the page.
    for sel, part in (("#graph-svg", "g.node"), ("#chart-svg", "circle")):
        size = page.evaluate(f"(() => {{ const r = document.querySelector('{sel}').getBoundingClientRect(); "
                             f"return [r.width, r.height, document.querySelectorAll('{sel} {part}').length]; }})()")
        assert size[0] > 100 and size[1] > 50 and size[2] >= 3, (sel, size)
    node = page.evaluate("document.querySelector('#graph-svg g[data-node=\"r\"]').getBBox().width")
    assert node > 50

    rows = read_jsonl(eval_rows)
    failing = [str(i) for i, r in enumerate(rows) if not r["passed"]]
    assert sorted(dom_rows(page), key=int) == [str(i) for i in range(len(rows))]       # all 8 fit in view
    page.click("#ev-failures")
    page.wait_until("document.getElementById('ev-count').textContent.includes(' of ')")
    assert sorted(dom_rows(page), key=int) == failing                                   # exactly the failures
    assert page.evaluate("document.getElementById('ev-count').textContent") == f"{len(failing)} of {len(rows)} rows"
    assert page.evaluate("[...document.querySelectorAll('#ev-canvas .r .badge')].map(b => b.textContent)") \
        .count("pass") == 0

    # A failing row's details show the raw reply; a text search narrows further.
    bad = next(i for i, r in enumerate(rows) if r["inputs"]["q"] == "xylophone")
    page.click(f'#ev-canvas .r[data-row="{bad}"]')
    page.wait_until("document.getElementById('ev-detail').classList.contains('open')")
    assert UNPARSEABLE in page.evaluate("document.getElementById('ev-detail').textContent")
    page.type_text("#ev-search", "wrongly")
    page.wait_until("document.getElementById('ev-count').textContent.startsWith('1 of')")
    assert dom_rows(page) == [str(next(i for i, r in enumerate(rows) if r["inputs"]["q"] == "wrongly"))]
    page.evaluate("document.getElementById('ev-search').value = ''; "
                  "document.getElementById('ev-search').dispatchEvent(new Event('input'))")
    page.wait_until(f"document.getElementById('ev-count').textContent === '{len(failing)} of {len(rows)} rows'")

    page.evaluate("window.scrollTo(0, 0)")
    png = page.screenshot(full_page=True)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    save_png(png, tmp_path / "report.png", REPO / "bench" / "results" / "report.png")
    check_clean(page, out)


@needs_chromium
def test_browser_report_shows_feedback_per_row(browser, eval_rows, tmp_path):
    out = tmp_path / "fb.html"
    assert run_report(eval_rows, "-o", out) == 0
    page, _ = open_report(browser, out)
    check_clean(page, out)
    rows = read_jsonl(eval_rows)
    wrongly = next(i for i, r in enumerate(rows) if r["inputs"]["q"] == "wrongly")
    # In the table: a feedback column, drawn beside what the row got.
    cell = page.evaluate(f"document.querySelector('#ev-canvas .r[data-row=\"{wrongly}\"] .fb').textContent")
    assert cell == "expected ylgnorw, got nope"
    # In the row's details, in full.
    page.click(f'#ev-canvas .r[data-row="{wrongly}"]')
    page.wait_until("document.getElementById('ev-detail').classList.contains('open')")
    labels = page.evaluate("[...document.querySelectorAll('#ev-detail .label')].map(e => e.textContent)")
    assert "Feedback" in labels
    assert page.evaluate("document.querySelector('#ev-detail .feedback pre').textContent") == rows[wrongly]["feedback"]
    # And the search finds rows by their feedback.
    page.type_text("#ev-search", "got nope")
    page.wait_until("document.getElementById('ev-count').textContent.startsWith('2 of')")
    assert sorted(map(int, dom_rows(page))) == [i for i, r in enumerate(rows) if "got nope" in (r["feedback"] or "")]
    check_clean(page, out)


@needs_chromium
def test_browser_ten_thousand_rows_open_and_filter_fast(browser, tmp_path):
    rows = []
    for i in range(10_000):
        passed = i % 7 != 3
        err = None if passed or i % 3 else "m (Predict): reply did not parse, even after a retry"
        rows.append({"where": f"/data/big.jsonl:{i + 1}",
                     "inputs": {"utterance": f"please play song {i} by artist {i % 97}", "meta": {"id": i}},
                     "expected": {"intent": "play_music"},
                     "outputs": None if err else {"intent": "play_music" if passed else "get_weather"},
                     "score": 1.0 if passed else 0.0, "passed": passed, "error": err,
                     "raw": "" if passed else "the weather? </script> maybe"})
    data = write_jsonl(tmp_path / "big.jsonl", rows)
    out = tmp_path / "big.html"
    assert run_report(data, "-o", out) == 0
    page, load_seconds = open_report(browser, out)
    # Bounds with room for a busy machine; a viewer that drew every row would take far longer.
    assert load_seconds < 10, f"10,000 rows took {load_seconds:.2f}s to open"
    check_clean(page, out)
    assert page.evaluate("window.pipecReport.rows.length") == 10_000
    assert len(dom_rows(page)) < 100                                   # only the rows in view are in the DOM

    started = time.perf_counter()
    page.click("#ev-failures")
    page.wait_until("document.getElementById('ev-count').textContent.includes(' of ')")
    filter_seconds = time.perf_counter() - started
    assert filter_seconds < 4, f"filtering 10,000 rows took {filter_seconds:.2f}s"
    failing = [i for i, r in enumerate(rows) if not r["passed"]]
    assert page.evaluate("window.pipecReport.shown()") == failing
    assert page.evaluate("document.getElementById('ev-count').textContent") == f"{len(failing):,} of 10,000 rows"
    shown = dom_rows(page)
    assert 0 < len(shown) < 100 and all(not rows[int(i)]["passed"] for i in shown)

    # Scrolled to the bottom, the last failing rows are drawn.
    page.evaluate("const b = document.getElementById('ev-scroll'); b.scrollTop = b.scrollHeight")
    page.wait_until(f"[...document.querySelectorAll('#ev-canvas .r')].some(e => e.dataset.row === '{failing[-1]}')")

    started = time.perf_counter()
    page.type_text("#ev-search", "song 9999 ")
    page.wait_until("document.getElementById('ev-count').textContent.startsWith('1 of')")   # row 9999 fails
    assert time.perf_counter() - started < 6
    assert page.evaluate("window.pipecReport.shown()") == [9999]
    check_clean(page, out)
