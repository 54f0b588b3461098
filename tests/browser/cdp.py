"""A tiny Chrome DevTools Protocol client for tests: headless Chromium driven over a pipe.

Chromium's `--remote-debugging-pipe` reads protocol messages on fd 3 and writes them on fd 4, each a
JSON object ended by a NUL byte. That needs no websocket library and opens no port, so the test
depends on nothing but the browser (Debian's `chromium` package) and the standard library.

    with Browser.launch() as browser:
        page = browser.new_page(width=1280, height=900)
        page.goto("file:///tmp/report.html")
        page.evaluate("document.title")
        png = page.screenshot(full_page=True)

Every event is kept (`page.events`), so a test can assert on console errors, exceptions and the
network requests the page made.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--no-default-browser-check", "--disable-dev-shm-usage", "--force-color-profile=srgb",
         "--remote-debugging-pipe"]


class CDPError(Exception):
    pass


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary, or None. $PIPEC_CHROMIUM overrides the search."""
    env = os.environ.get("PIPEC_CHROMIUM")
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process and its protocol pipe."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int, profile: str):
        self.proc = proc
        self._out = to_browser
        self._in = from_browser
        self.profile = profile
        self._next = 0
        self._lock = threading.Lock()
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._listeners: dict[str, list] = {}      # sessionId ('' for the browser) -> event lists
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    @classmethod
    def launch(cls, executable: str | None = None, extra_flags: list[str] | None = None,
               stderr=subprocess.DEVNULL) -> "Browser":
        executable = executable or find_chromium()
        if executable is None:
            raise CDPError("no chromium binary found (apt-get install chromium)")
        profile = tempfile.mkdtemp(prefix="pipec-chromium-")
        # Our write end -> the browser's fd 3; the browser's fd 4 -> our read end.
        b_read, p_write = os.pipe()
        p_read, b_write = os.pipe()

        def child_fds():
            os.dup2(b_read, 3)
            os.dup2(b_write, 4)

        cmd = [executable, *FLAGS, f"--user-data-dir={profile}", *(extra_flags or []), "about:blank"]
        # close_fds runs after preexec_fn in the child: keep 3 and 4 (now our pipe ends) open.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                preexec_fn=child_fds, close_fds=True, pass_fds=(3, 4))
        os.close(b_read)
        os.close(b_write)
        return cls(proc, p_write, p_read, profile)

    # ------------------------------------------------------------------ protocol
    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    with self._cond:
                        for sink in self._listeners.get(msg.get("sessionId", ""), []):
                            sink.append(msg)
                        self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        with self._lock:
            self._next += 1
            mid = self._next
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        with self._lock:
            os.write(self._out, data)
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError(f"{method}: no reply" + (" (browser exited)" if self._closed else f" in {timeout}s"))
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}".strip())
        return reply.get("result", {})

    def wait_for(self, events: list, predicate, timeout: float = 30) -> dict:
        """The first event in `events` (a page's event list) matching `predicate`, waiting for it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for ev in events[seen:]:
                    if predicate(ev):
                        return ev
                seen = len(events)
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CDPError("timed out waiting for an event")
                self._cond.wait(left)

    def new_page(self, width: int = 1280, height: int = 900) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        events: list[dict] = []
        with self._cond:
            self._listeners[session] = [events]
        page = Page(self, session, events)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=5)
                except CDPError:
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            for fd in (self._out, self._in):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """One tab, attached with a flat session: commands, its events, and a few conveniences."""

    def __init__(self, browser: Browser, session: str, events: list[dict]):
        self.browser = browser
        self.session = session
        self.events = events

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def goto(self, url: str, timeout: float = 60) -> None:
        mark = len(self.events)
        self.send("Page.navigate", {"url": url})
        self.browser.wait_for(self.events, lambda ev: ev.get("method") == "Page.loadEventFired"
                              and self.events.index(ev) >= mark, timeout)

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise); raises on a JS exception."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                        timeout)
        if "exceptionDetails" in res:
            det = res["exceptionDetails"]
            raise CDPError(f"JS exception: {det.get('exception', {}).get('description') or det.get('text')}")
        return res.get("result", {}).get("value")

    def wait_until(self, expression: str, timeout: float = 30, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"timed out waiting for: {expression}")
            time.sleep(interval)

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element (scrolled into view first)."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null; "
            "e.scrollIntoView({block: 'center', behavior: 'instant'}); const r = e.getBoundingClientRect(); "
            "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        if box is None:
            raise CDPError(f"no element matches {selector}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def type_text(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", {"text": text})

    def screenshot(self, full_page: bool = True) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            m = self.send("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m["contentSize"]
            params.update({"captureBeyondViewport": True,
                           "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        return base64.b64decode(self.send("Page.captureScreenshot", params, timeout=60)["data"])

    # ------------------------------------------------------------------ what happened
    def console_errors(self) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                        for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
        return out

    def requests(self) -> list[str]:
        """URLs of every request the page made (navigations included)."""
        return [ev["params"]["request"]["url"] for ev in self.events
                if ev.get("method") == "Network.requestWillBeSent"]


def save_png(data: bytes, *paths: str | Path) -> None:
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
