"""A real headless Chromium for end-to-end tests, driven over the DevTools protocol.

Debian's ``chromium`` package is the browser. It is driven over
``--remote-debugging-pipe``, that is, the protocol's JSON messages, each ended by a NUL byte, on the
browser's file descriptors 3 (in) and 4 (out). This needs no WebDriver, no websocket client and no package
beyond the standard library. Every run gets a fresh profile, and no network feature of its own: no sync,
no component updates, no background requests. Only the pages a test opens send requests.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--disable-default-apps", "--disable-dev-shm-usage",
         "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe")


def find_chromium() -> str | None:
    """``LISTENER_TEST_CHROMIUM``, else the first of CANDIDATES on the PATH."""
    configured = os.environ.get("LISTENER_TEST_CHROMIUM")
    if configured:
        return shutil.which(configured) or (configured if Path(configured).is_file() else None)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium process; ``new_page()`` opens a tab to drive."""

    def __init__(self, executable: str, profile_dir: Path, width: int = 1400, height: int = 900) -> None:
        self.profile_dir = profile_dir
        self.log_path = profile_dir.parent / f"{profile_dir.name}.log"
        profile_dir.mkdir(parents=True, exist_ok=True)
        args = [executable, *FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
                "about:blank"]
        # The shell moves our two pipes to the descriptors 3 and 4 that the pipe protocol uses.
        script = 'exec "$@" 3<&0 4>&1 0</dev/null 1>&2'
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(["/bin/sh", "-c", script, "sh", *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._next_id = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()
        self.version = self.send("Browser.getVersion", timeout=30)["product"]

    # --- the protocol ---

    def _read(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        buffer = bytearray()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            while (end := buffer.find(b"\0")) >= 0:
                message = json.loads(bytes(buffer[:end]))
                del buffer[:end + 1]
                with self._changed:
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 10) -> dict[str, Any]:
        with self._lock:
            self._next_id += 1
            message_id = self._next_id
            message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
            if session:
                message["sessionId"] = session
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(json.dumps(message).encode() + b"\0")
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError) as error:
                raise BrowserError(f"the browser has gone away: {error}\n{self.log()}") from None
        deadline = time.monotonic() + timeout
        with self._changed:
            while message_id not in self._answers:
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    raise BrowserError(f"no answer to {method} within {timeout}s (ended={self._ended})\n{self.log()}")
                self._changed.wait(remaining)
            answer = self._answers.pop(message_id)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')} {answer['error'].get('data', '')}")
        return answer.get("result", {})

    def wait_event(self, method: str, session: str | None, after: int, timeout: float = 10) -> dict[str, Any]:
        """The first ``method`` event of ``session`` among the events from index ``after`` on."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[after:]:
                    if event["method"] == method and event.get("sessionId") == session:
                        return event
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    raise BrowserError(f"no {method} within {timeout}s")
                self._changed.wait(remaining)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    # --- tabs ---

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session)

    def close(self) -> None:
        with contextlib.suppress(BrowserError):
            self.send("Browser.close", timeout=5)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                stream.close()
        self._log.close()


class Page:
    """One tab: navigate, run script, type, click like a person, and take screenshots."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")

    def send(self, method: str, timeout: float = 10, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, params, self.session, timeout)

    def mark(self) -> int:
        """A position in the event stream, for ``events(since=...)``."""
        with self.browser._changed:
            return len(self.browser.events)

    def events(self, method: str, since: int = 0) -> list[dict[str, Any]]:
        with self.browser._changed:
            return [e["params"] for e in self.browser.events[since:]
                    if e["method"] == method and e.get("sessionId") == self.session]

    def goto(self, url: str, timeout: float = 15) -> None:
        since = self.mark()
        answer = self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise BrowserError(f"cannot open {url}: {answer['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, since, timeout)

    def evaluate(self, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise BrowserError(f"{expression!r} threw: {details.get('exception', {}).get('description') or details}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10, interval: float = 0.05) -> Any:
        """Poll ``expression`` until it is truthy; a page in the middle of loading counts as not yet."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = self.evaluate(expression)
                if last:
                    return last
            except BrowserError as error:
                last = error
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression} not true within {timeout}s; last: {last!r}")
            time.sleep(interval)

    def _centre(self, selector: str) -> tuple[float, float]:
        box = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()")
        return box[0], box[1]

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element: move, press, release."""
        x, y = self._centre(selector)
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        self.click(selector)
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        """The whole page, not only the window, as a PNG."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", timeout=30, format="png", clip=clip,
                         captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def problems(self, since: int = 0) -> list[str]:
        """Script errors, console errors and browser log errors (a blocked script or style among them)."""
        found = [f"exception: {e['exceptionDetails'].get('exception', {}).get('description') or e['exceptionDetails']}"
                 for e in self.events("Runtime.exceptionThrown", since)]
        found += [f"console.{e['type']}: {[a.get('value', a.get('description')) for a in e['args']]}"
                  for e in self.events("Runtime.consoleAPICalled", since) if e["type"] in ("error", "assert")]
        found += [f"log {e['entry']['source']}: {e['entry']['text']}"
                  for e in self.events("Log.entryAdded", since) if e["entry"]["level"] == "error"]
        return found

    def requested_urls(self, since: int = 0) -> list[str]:
        return [e["request"]["url"] for e in self.events("Network.requestWillBeSent", since)]
