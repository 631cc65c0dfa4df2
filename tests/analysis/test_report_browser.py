"""The HTML report in a real headless browser (Debian's chromium, over the DevTools protocol).

It must load with no console error, no JavaScript exception, no dialog, no network
request and no Content-Security-Policy violation, draw its figures (SVG elements with a
size and content), answer a click, and show hostile names as text: script put in any
string of a run never runs, and the page's CSP stops script that slips into the page.
A screenshot of each page is saved under ``artifacts/browser/`` (ignored by git;
``GENEPOOL_TEST_ARTIFACTS`` moves it) as a test artefact.

Without chromium the tests skip, saying how to get it; under ``CI=true`` they fail
(``scripts/test`` installs chromium when it is missing and it runs as root).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import genepool as gp
from genepool.analysis import write_report
from tests.analysis import _payloads
from tests.analysis._runs import HOSTILE_HP, HOSTILE_RUN, small_run, synthetic_result

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("GENEPOOL_TEST_ARTIFACTS", ROOT / "artifacts")) / "browser"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--window-size=1100,900",
]
START_TIMEOUT = 60.0  # seconds for chromium to open its DevTools port


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found is None and os.access("/usr/bin/chromium", os.X_OK):
        found = "/usr/bin/chromium"
    return found


def _require(what: str, ok: bool) -> None:
    if ok:
        return
    if CI:
        pytest.fail(f"{what} is missing, and CI must run the browser test")
    pytest.skip(f"{what} is missing: apt-get install chromium (scripts/test does it as root)")


class DevTools:
    """A minimal DevTools protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The next event ``method`` (also one already received)."""
        for e in self.events:
            if e["method"] == method:
                self.events.remove(e)
                return e
        while True:
            msg: dict[str, Any] = json.loads(self.ws.recv())
            if msg.get("method") == method:
                return msg
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[str]:
    """A headless chromium; yields its DevTools HTTP address."""
    binary = _chromium()
    _require("chromium (/usr/bin/chromium)", binary is not None)
    try:
        import websocket  # noqa: F401
    except ImportError:
        _require("the websocket-client package (pip install -e '.[dev]')", False)
    assert binary is not None
    profile = tempfile.mkdtemp(prefix="genepool-chromium-")
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                pytest.fail(f"chromium exited with code {proc.returncode} before it started")
            if time.monotonic() > deadline:
                pytest.fail(f"chromium opened no DevTools port in {START_TIMEOUT:.0f} s")
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _open_page(address: str) -> DevTools:
    request = urllib.request.Request(f"{address}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        target = json.loads(response.read())
    return DevTools(target["webSocketDebuggerUrl"])


_FIGURES_JS = """
(() => {
  const plots = Array.from(document.querySelectorAll('svg.plot'));
  return plots.map(svg => {
    const box = svg.getBoundingClientRect();
    const marks = svg.querySelectorAll('path, line, circle');
    let drawn = 0;
    for (const m of marks) {
      const b = m.getBBox();
      if (b.width > 0 || b.height > 0) drawn++;
    }
    return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height,
            marks: marks.length, drawn: drawn};
  });
})()
"""


#: Run before the page's own code (DevTools scripts are not subject to its CSP): records
#: every CSP violation in ``window.__violations``.
_WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sample);
});
"""

#: Every text node outside scripts and styles (SVG tooltips included), as a list.
_TEXTS_JS = """
(() => {
  const walk = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
  const out = [];
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const tag = n.parentNode.nodeName.toLowerCase();
    if (tag !== 'script' && tag !== 'style') out.push(n.nodeValue);
  }
  return out;
})()
"""


def _is_problem(event: dict[str, Any]) -> bool:
    """An error, an exception, a dialog, or a request that leaves the file."""
    method, params = event["method"], event.get("params", {})
    if method in ("Runtime.exceptionThrown", "Page.javascriptDialogOpening"):
        return True
    if method == "Runtime.consoleAPICalled":
        return bool(params.get("type") in ("error", "assert"))
    if method == "Log.entryAdded":
        return bool(params.get("entry", {}).get("level") == "error")
    if method == "Network.requestWillBeSent":
        url = params.get("request", {}).get("url", "")
        return not url.startswith(("file:", "data:", "about:"))
    return False


def _load(address: str, report: Path, shot: str) -> tuple[DevTools, list[dict[str, Any]]]:
    """Open ``report``; return the page and the problems seen while it loaded."""
    page = _open_page(address)
    for domain in ("Page", "Runtime", "Log", "Network"):
        page.call(f"{domain}.enable")
    page.call("Page.addScriptToEvaluateOnNewDocument", source=_WATCH)
    page.call("Page.navigate", url=report.resolve().as_uri())
    page.wait_for("Page.loadEventFired")
    assert page.evaluate("document.readyState") == "complete"
    # a full-page screenshot, kept as the test's artefact
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    page.call(
        "Emulation.setDeviceMetricsOverride",
        width=1100,
        height=min(max(height, 900), 12000),
        deviceScaleFactor=1,
        mobile=False,
    )
    png = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    assert png.startswith(b"\x89PNG")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / shot).write_bytes(png)
    page.evaluate("0")  # let the events of the load arrive before they are judged
    problems = [e for e in page.events if _is_problem(e)]
    return page, problems


def _check_figures(page: DevTools, minimum: int) -> list[dict[str, Any]]:
    figures: list[dict[str, Any]] = page.evaluate(_FIGURES_JS)
    assert len(figures) >= minimum
    for fig in figures:
        assert fig["width"] > 100, fig
        assert fig["height"] > 100, fig
        assert fig["drawn"] >= 1, fig
    return figures


def _check_picking(page: DevTools, member: int) -> None:
    """The page's own script runs: a click on a member's row picks it everywhere, a
    second click lets it go, and the checkbox hides the exploits whose line died out."""
    row = f"document.querySelector('tr[data-m=\"{member}\"]')"
    picking = "document.body.classList.contains('picking')"
    page.evaluate(f"{row}.click()")
    assert page.evaluate(picking) is True
    assert page.evaluate(f"document.querySelectorAll('.on[data-m=\"{member}\"]').length") >= 3
    assert page.evaluate("document.getElementById('picked').textContent") == (
        f"member {member} picked"
    )
    page.evaluate(f"{row}.click()")
    assert page.evaluate(picking) is False
    hidden = "document.body.classList.contains('hide-dead')"
    assert page.evaluate(hidden) is False
    page.evaluate("document.getElementById('show-dead').click()")
    assert page.evaluate(hidden) is True
    page.evaluate("document.getElementById('show-dead').click()")
    assert page.evaluate(hidden) is False


def test_the_report_loads_and_draws_in_chromium(browser: str, tmp_path: Path) -> None:
    result = small_run(population=8, steps=60)
    report = write_report(result, tmp_path / "report.html")
    page, problems = _load(browser, report, "report.png")
    try:
        assert problems == []
        assert page.evaluate("window.__violations") == []
        figures = _check_figures(page, minimum=6)
        by_label = {f["label"]: f for f in figures}
        scores = by_label["score of every member over steps"]
        assert scores["drawn"] >= len(result.members)
        tree = by_label["lineage: members as lines through steps, exploits as jumps"]
        assert tree["drawn"] >= len(result.members)
        # a click on a member's row picks it everywhere
        member = result.best.id
        page.evaluate(f"document.querySelector('tr[data-m=\"{member}\"]').click()")
        assert page.evaluate("document.body.classList.contains('picking')") is True
        picked = page.evaluate(f"document.querySelectorAll('.on[data-m=\"{member}\"]').length")
        assert picked >= 3
        page.evaluate(f"document.querySelector('tr[data-m=\"{member}\"]').click()")
        assert page.evaluate("document.body.classList.contains('picking')") is False
        # the toggle hides and shows the exploits whose line died out
        hidden = "document.body.classList.contains('hide-dead')"
        assert page.evaluate(hidden) is False
        page.evaluate("document.getElementById('show-dead').click()")
        assert page.evaluate(hidden) is True
        assert page.evaluate(
            "getComputedStyle(document.querySelector('g.dead-jumps')).display"
        ) == ("none")
        page.evaluate("document.getElementById('show-dead').click()")
        assert page.evaluate(hidden) is False
        assert page.evaluate("document.getElementById('schedule-data') !== null") is True
        schedule = json.loads(page.evaluate("document.getElementById('schedule-data').text"))
        assert gp.analysis.Schedule.from_dict(schedule) == result.schedule()
    finally:
        page.close()
    assert (ARTIFACTS / "report.png").stat().st_size > 20_000


def test_hostile_names_stay_text_in_chromium(browser: str, tmp_path: Path) -> None:
    report = write_report(synthetic_result(HOSTILE_RUN), tmp_path / "hostile.html")
    page, problems = _load(browser, report, "hostile.png")
    try:
        assert problems == []
        assert page.evaluate("window.__violations") == []
        _check_figures(page, minimum=4)
        assert page.evaluate("document.title") == f"genepool report: {HOSTILE_RUN}"
        assert page.evaluate("document.scripts.length") == 2
        assert page.evaluate("document.querySelectorAll('img, b, i, iframe').length") == 0
        text = page.evaluate("document.body.innerText")
        assert HOSTILE_HP in text
        assert "\u0394\u2603" in text
        assert page.evaluate("typeof window.alert") == "function"  # nothing replaced it
    finally:
        page.close()


_UNSAFE_JS = """
(() => ({
  pwned: typeof window.__pwned,
  scripts: document.scripts.length,
  injected: document.querySelectorAll('img, iframe, object, embed, #pwn, [style]').length,
  handlers: Array.from(document.querySelectorAll('*')).filter(
    el => Array.from(el.attributes).some(a => a.name.startsWith('on'))).length,
  jsLinks: Array.from(document.querySelectorAll('[href], [src], [action]')).filter(
    el => /^\\s*javascript:/i.test(el.getAttribute('href') || el.getAttribute('src') || '')
  ).length,
}))()
"""


_LATER = "new Promise(resolve => setTimeout(resolve, 200))"


def test_script_in_any_string_of_a_run_never_runs(browser: str, tmp_path: Path) -> None:
    """A run whose name, metric, hyperparameters, scores, events and failures are script:
    none of it runs, all of it shows as text, and the page's own script still works."""
    result = _payloads.pwned_result()
    report = write_report(result, tmp_path / "pwned.html")
    page, problems = _load(browser, report, "pwned.png")
    try:
        assert page.evaluate("window.__violations") == []
        assert problems == []
        assert page.evaluate(_UNSAFE_JS) == {
            "pwned": "undefined",
            "scripts": 2,
            "injected": 0,
            "handlers": 0,
            "jsLinks": 0,
        }
        _check_figures(page, minimum=3)
        texts = page.evaluate(_TEXTS_JS)
        for shown in _payloads.SHOWN:
            assert any(shown in t for t in texts), shown
        assert page.evaluate("document.title") == f"genepool report: {_payloads.RUN}"
        schedule = json.loads(page.evaluate("document.getElementById('schedule-data').text"))
        assert schedule["run"] == _payloads.RUN
        assert schedule["metric"] == _payloads.METRIC
        _check_picking(page, result.best.id)
        assert page.evaluate("window.__violations") == []
        assert page.evaluate("typeof window.__pwned") == "undefined"
    finally:
        page.close()


def test_the_csp_stops_script_that_slips_into_the_page(browser: str, tmp_path: Path) -> None:
    """Were a string ever written unescaped, the page's CSP would still refuse to run it
    (and the violation listener above is not vacuous): the report with markup spliced in."""
    result = _payloads.pwned_result()
    text = write_report(result, tmp_path / "r.html").read_text("utf-8")
    slipped = (
        '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
        '<p id="styled" style="color: rgb(255, 0, 0)">styled</p>'
        '<a id="pwn" href="javascript:window.__pwned=1">link</a>'
    )
    at = text.index("<header>")
    report = tmp_path / "slipped.html"
    report.write_text(text[:at] + slipped + text[at:], encoding="utf-8")
    page, _ = _load(browser, report, "slipped.png")
    try:
        page.evaluate("document.getElementById('pwn').click()")
        # a javascript: URL runs in a later task: give it time
        page.call("Runtime.evaluate", expression=_LATER, awaitPromise=True)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        violations = " ".join(page.evaluate("window.__violations"))
        for directive in ("script-src-elem", "script-src-attr", "style-src-attr"):
            assert directive in violations, violations
        color = page.evaluate("getComputedStyle(document.getElementById('styled')).color")
        assert color != "rgb(255, 0, 0)"
        _check_picking(page, result.best.id)
    finally:
        page.close()


def test_the_harness_sees_errors_and_requests(browser: str, tmp_path: Path) -> None:
    """The checks above are not vacuous: a page that throws, logs an error and fetches
    from the network is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><body><p>bad</p>"
        '<img src="http://127.0.0.1:9/x.png">'
        "<script>console.error('logged')</script>"
        "<script>throw new Error('boom')</script></body></html>",
        encoding="utf-8",
    )
    page, problems = _load(browser, bad, "bad.png")
    page.close()
    kinds = {e["method"] for e in problems}
    assert "Runtime.exceptionThrown" in kinds
    assert "Runtime.consoleAPICalled" in kinds
    assert "Network.requestWillBeSent" in kinds
