"""A headless Firefox driven over WebDriver BiDi, for the web page's tests.

Firefox speaks the W3C WebDriver BiDi protocol itself (a WebSocket opened
with ``--remote-debugging-port``), so no driver program is needed; Debian
ships Firefox (``firefox-esr``) but no geckodriver.  Only what the tests use
is here: open a page, run a script (awaiting its promise), click, read text,
take a screenshot.  The connection is websocket-client's (Selenium's own
dependency).

The profile turns on Firefox's fake capture devices (the microphone is a
tone it makes itself), grants media permissions without asking and lets the
page play audio without a gesture.
"""

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

PREFS = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
}


def find_firefox():
    """The Firefox executable on PATH (``firefox-esr`` or ``firefox``), or None."""
    return shutil.which("firefox-esr") or shutil.which("firefox")


class BidiError(RuntimeError):
    """A BiDi command failed, or a page script threw."""


class Firefox:
    """A headless Firefox with a fresh profile; ``quit()`` ends it."""

    def __init__(self, executable, width=800, height=700, start_timeout=30.0):
        import websocket
        self._profile = tempfile.TemporaryDirectory(prefix="stagevox-firefox-")
        prefs = "".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in PREFS.items())
        Path(self._profile.name, "user.js").write_text(prefs)
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-remote", "--remote-debugging-port=0",
             f"--width={width}", f"--height={height}", "--profile", self._profile.name,
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = self._listening_url(start_timeout)
        self._ws = websocket.create_connection(url + "/session", timeout=60,
                                                suppress_origin=True)
        self._next_id = 0
        self._command("session.new", {"capabilities": {}})
        tree = self._command("browsingContext.getTree", {})
        self.context = tree["contexts"][0]["context"]

    def _listening_url(self, timeout):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"WebDriver BiDi listening on (ws://\S+)", line)
            if m:
                return m.group(1)
        self.proc.kill()
        raise BidiError(f"Firefox did not open its BiDi socket: {''.join(seen)!r}")

    def _command(self, method, params):
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") != self._next_id:
                continue                     # an event: none is subscribed, skip
            if msg.get("type") == "error":
                raise BidiError(f"{method}: {msg.get('error')}: {msg.get('message')}")
            return msg["result"]

    def get(self, url):
        """Open ``url`` and wait until it has loaded."""
        self._command("browsingContext.navigate",
                      {"context": self.context, "url": url, "wait": "complete"})

    def run(self, expression):
        """The value of the JavaScript ``expression`` (a promise is awaited):
        a string, number, boolean or None.  Raises BidiError if it throws."""
        result = self._command("script.evaluate", {
            "expression": expression, "target": {"context": self.context},
            "awaitPromise": True, "userActivation": True})
        if result["type"] == "exception":
            raise BidiError(result["exceptionDetails"]["text"])
        value = result["result"]
        return value.get("value") if value["type"] != "undefined" else None

    def click(self, element_id):
        """Click the element with this id (as a user would: with activation)."""
        self.run(f"document.getElementById({json.dumps(element_id)}).click()")

    def text(self, element_id):
        """The rendered text of the element with this id."""
        return self.run(f"document.getElementById({json.dumps(element_id)}).innerText")

    def save_screenshot(self, path):
        """Write a PNG of the page's viewport to ``path``."""
        result = self._command("browsingContext.captureScreenshot", {"context": self.context})
        Path(path).write_bytes(base64.b64decode(result["data"]))

    def quit(self):
        """Close the browser and remove its profile."""
        try:
            self._command("browser.close", {})
        except Exception:
            pass                             # already gone: nothing to close
        try:
            self._ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self._profile.cleanup()
