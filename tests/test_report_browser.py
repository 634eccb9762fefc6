"""The HTML report opened in a real browser (headless Chromium).

How: Chromium is driven over the Chrome DevTools Protocol through `--remote-debugging-pipe`
(the transport Puppeteer and Playwright use): Chromium reads commands from file
descriptor 3 and writes replies and events to descriptor 4, each a JSON message ended by a
NUL byte. That needs no websocket client, no free TCP port and no extra Python package,
and unlike `--dump-dom` or `--screenshot` it sees everything the page does:

- console errors: `Runtime.consoleAPICalled` (error/assert), `Runtime.exceptionThrown`
  and `Log.entryAdded` at level error (failed loads, blocked content, CSP violations);
- requests: `Network.requestWillBeSent`; the page must fetch nothing but itself (DNS is
  also mapped to nowhere, so a stray request fails instead of leaving the machine);
- images: after the load event, `img.decode()` is awaited for every image and each must
  have `naturalWidth > 0` (a broken data URI decodes to 0);
- layout: at a laptop size (1366x900) and a phone width (390 px) the page must not scroll
  sideways;
- the screenshot (`Page.captureScreenshot`) must not be blank.

Chromium absent: the test skips, except under CI=true, where it fails (`make test`
installs it first).
"""
import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from leukolearn.report.html import write_report

from test_report import make_run, write_inside_png

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 60.0  # per reply; the machine may be busy


def find_browser():
    for name in (os.environ.get("CHROMIUM"),) + BROWSERS:
        if name and shutil.which(name):
            return shutil.which(name)
    reason = f"no headless browser found (looked for {', '.join(BROWSERS)}; set CHROMIUM)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the browser test: `make test` installs chromium")
    pytest.skip(f"{reason}; `apt-get install chromium` to run it")


class Browser:
    """Headless Chromium driven over CDP on a pipe; one page, events kept in order."""

    def __init__(self, executable, profile):
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Chromium's ends moved to fds >= 10 (close-on-exec), so that dup2 onto 3 and 4 in
        # the child cannot overwrite one with the other.
        child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def wire():  # in the child, before exec: commands on fd 3, replies on fd 4
            # (dup2 makes them inheritable; every other descriptor of ours is close-on-exec)
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--disable-default-apps", "--no-first-run",
             "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            close_fds=False, preexec_fn=wire,
        )
        os.close(child_in)
        os.close(child_out)
        self._w, self._r = to_chrome_w, from_chrome_r
        self._buf = b""
        self._next_id = 0
        self.events = []
        self.session = None

    def send(self, method, params=None, *, session=True):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def wait_for(self, method):
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            reply = self._read()
            if reply.get("method") == method:
                return reply

    def _read(self):
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"no reply from the browser in {TIMEOUT_S:.0f} s")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"the browser closed the pipe; its stderr:\n{err}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg = json.loads(raw)
        if "method" in msg:
            self.events.append(msg)
        return msg

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._w, self._r):
            os.close(fd)
        self.proc.stderr.close()


def open_page(browser, url):
    """Open `url` in a fresh tab with console, log and network events on; wait for load."""
    target = browser.send("Target.createTarget", {"url": "about:blank"}, session=False)
    browser.session = browser.send("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True},
                                   session=False)["sessionId"]
    for domain in ("Runtime", "Log", "Page", "Network"):
        browser.send(f"{domain}.enable")
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1366, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    browser.send("Page.navigate", {"url": url})
    browser.wait_for("Page.loadEventFired")


CHECK_IMAGES = """(async () => {
  const imgs = Array.from(document.images);
  await Promise.allSettled(imgs.map(i => i.decode()));
  return {
    images: imgs.map(i => ({id: i.closest('figure') ? i.closest('figure').id : '',
                            complete: i.complete, naturalWidth: i.naturalWidth,
                            naturalHeight: i.naturalHeight, shownWidth: i.clientWidth})),
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    title: document.title,
    toc: Array.from(document.querySelectorAll('nav.toc a')).map(a => a.getAttribute('href')),
    brokenAnchors: Array.from(document.querySelectorAll('nav.toc a'))
      .filter(a => !document.querySelector(a.getAttribute('href'))).length,
  };
})()"""


def evaluate(browser, expression):
    result = browser.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                               "returnByValue": True})
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    return result["result"]["value"]


def console_errors(events):
    errors = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif e["method"] == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            errors.append(details.get("exception", {}).get("description")
                          or details.get("text", "exception"))
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"{p['entry']['source']}: {p['entry']['text']}")
    return errors


def requested_urls(events):
    return [e["params"]["request"]["url"] for e in events
            if e["method"] == "Network.requestWillBeSent"]


@pytest.fixture(scope="module")
def chromium():
    return find_browser()  # first: skip (or fail under CI) before building the report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("browser") / "run")
    write_inside_png(run / "figures" / "fig4b_explain_fold00_epsilon.png")
    return write_report(run, n_boot=40)


@pytest.mark.slow
def test_report_renders_in_chromium(chromium, report, tmp_path):
    with tempfile.TemporaryDirectory(prefix="leukolearn-chromium-") as profile:
        browser = Browser(chromium, profile)
        try:
            open_page(browser, report.resolve().as_uri())
            page = evaluate(browser, CHECK_IMAGES)
            shot = base64.b64decode(browser.send("Page.captureScreenshot",
                                                 {"format": "png"})["data"])
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
            narrow = evaluate(browser, CHECK_IMAGES)
            events = list(browser.events)
        finally:
            browser.close()
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(shot)
    if os.environ.get("LEUKOLEARN_REPORT_SCREENSHOT"):  # to look at it: set a path
        shutil.copyfile(screenshot, os.environ["LEUKOLEARN_REPORT_SCREENSHOT"])

    assert console_errors(events) == []
    others = [u for u in requested_urls(events) if not u.startswith(("file://", "data:"))]
    assert others == [], f"the page fetched {others}"
    assert page["title"].startswith("all-idb2")
    assert page["brokenAnchors"] == 0 and len(page["toc"]) == 8  # with External validation
    # 3 paper figures, the learning curve, the reliability diagram and the found LRP grid
    assert len(page["images"]) == 6
    for img in page["images"] + narrow["images"]:
        assert img["complete"] and img["naturalWidth"] > 0 and img["naturalHeight"] > 0, img
    assert page["overflow"] <= 0 and narrow["overflow"] <= 0  # no sideways scrolling
    assert all(0 < img["shownWidth"] <= 390 for img in narrow["images"])  # images shrink

    image = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=float)
    assert image.shape == (900, 1366)
    assert image.std() > 20 and (image < 128).mean() > 0.005  # text and figures, not blank
