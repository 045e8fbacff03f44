"""The HTML book in a real browser: every chapter page opened from disk in headless Chromium with no network.

Run by `make browser` (part of `make test`, after `make html`); needs Debian's `chromium` (.ci/run installs it)
and talks to it over the DevTools protocol. Each page must: log no console error or exception (a script or
stylesheet fetched from a CDN fails offline and logs one), render every plotly figure to an SVG and every saved
widget, load every image, and lay out each claims table with one cell per column. One screenshot per chapter
goes to _build/screenshots/.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("CIRCUITBOOK_BROWSER") == "required"  # `make browser`: skipping is a failure
pytestmark = pytest.mark.browser


class Browser:
    """Headless Chromium over the DevTools protocol (websocket-client), the network unreachable."""

    def __init__(self, tmp: Path):
        import websocket

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             f"--user-data-dir={tmp}", "--remote-debugging-port=0", "--window-size=1280,1000",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = tmp / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and len(port_file.read_text().split()) == 2:
                break
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = json.loads(direct.open(f"http://127.0.0.1:{port}/json/list").read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if any(e.get("method") == method for e in self.events):
                return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(r["exceptionDetails"])
        return r["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and (HTML / "index.html").exists()):
        if REQUIRED:
            pytest.fail(f"needs chromium ({CHROMIUM}) and the built book ({HTML}): `make html`")
        pytest.skip("needs chromium and _build/html (make browser)")
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


PAGE_STATE = """(() => {
  const figs = [...document.querySelectorAll('.plotly-graph-div')];
  const tables = [...document.querySelectorAll('table')]
    .map(t => [...t.rows].map(r => [...r.cells].map(c => c.innerText)));
  return {
    plotly: figs.length, plotly_svg: figs.filter(f => f.querySelector('svg.main-svg')).length,
    fallbacks: document.querySelectorAll('img.plotly-fallback').length,
    images: document.images.length,
    broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    widget_views: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
    widgets_rendered: [...document.querySelectorAll('.widget-subarea')].filter(d => d.offsetHeight > 20).length,
    widget_y: [...document.querySelectorAll('.widget-subarea')].map(d => d.getBoundingClientRect().top + scrollY),
    tables, mathjax_errors: document.querySelectorAll('mjx-merror').length,
    external: [...document.querySelectorAll('script[src], link[rel=stylesheet][href], img[src]')]
      .map(e => e.src || e.href).filter(u => /^https?:/.test(u)),
    height: document.documentElement.scrollHeight,
  };
})()"""


def expected_outputs(nb: Path) -> tuple[int, int]:
    """(plotly figures, widget views) among the notebook's outputs (cells removed from the page excluded)."""
    plotly = widgets = 0
    for cell in json.loads(nb.read_text())["cells"]:
        if {"remove-cell", "remove-output", "injected-parameters"} & set(cell.get("metadata", {}).get("tags", [])):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            plotly += "application/vnd.plotly.v1+json" in data
            widgets += "application/vnd.jupyter.widget-view+json" in data
    return plotly, widgets


@pytest.mark.parametrize("nb", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_page_offline(browser, nb):
    page = HTML / "notebooks" / f"{nb.stem}.html"
    assert page.exists(), f"{page} was not built"
    browser.events.clear()
    browser.call("Page.navigate", url=page.as_uri())
    browser.wait_event("Page.loadEventFired")
    # plotly draws, MathJax typesets and the widget manager renders after the load event: wait until stable
    state, last = None, None
    for _ in range(60):
        time.sleep(0.5)
        state = browser.js(PAGE_STATE)
        if state == last and state["plotly_svg"] == state["plotly"]:
            break
        last = state
    SHOTS.mkdir(parents=True, exist_ok=True)
    # the whole page (up to 16000 px) at half scale: a taller viewport, then a plain capture
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=min(state["height"], 16000),
                 deviceScaleFactor=0.5, mobile=False)
    time.sleep(1)
    shot = browser.call("Page.captureScreenshot", format="png")
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)
    (SHOTS / f"{nb.stem}.png").write_bytes(base64.b64decode(shot["data"]))

    bad = [f"console: {e}" for e in browser.errors()]  # every problem of the page, then one assert
    bad += [f"loads from the network: {u}" for u in state["external"]]
    plotly, widgets = expected_outputs(nb)
    if not state["plotly"] == state["plotly_svg"] == plotly:
        bad.append(f"plotly: {plotly} figures in the notebook, {state['plotly']} on the page, "
                   f"{state['plotly_svg']} rendered an SVG")
    if state["fallbacks"]:
        bad.append(f"{state['fallbacks']} static fallbacks shown beside the plotly figures")
    bad += [f"image did not load: <img src={u!r}>" for u in state["broken"]]
    if state["images"] == 0:
        bad.append("no image on the page")
    if not state["widget_views"] == state["widgets_rendered"] == widgets:
        bad.append(f"widgets: {widgets} in the notebook, {state['widget_views']} on the page, "
                   f"{state['widgets_rendered']} rendered from their saved state")
    if state["mathjax_errors"]:
        bad.append(f"{state['mathjax_errors']} MathJax errors")

    claims = [t for t in state["tables"] if t and [c.strip() for c in t[0][:2]] == ["id", "claim"]]
    results = json.loads((ROOT / "data" / "results" / f"{nb.stem}.json").read_text())["claims"]
    if len(claims) != 1:
        bad.append(f"{len(claims)} claims tables (a markdown table renders as one)")
    else:
        header, rows = claims[0][0], claims[0][1:]
        col = {name.strip(): i for i, name in enumerate(header)}
        by_id = {r[0].strip(): r for r in rows}
        if not {"paper", "target", "measured", "holds"} <= set(col) or len(rows) != len(results):
            bad.append(f"claims table: columns {list(col)}, {len(rows)} rows for {len(results)} claims")
        bad += [f"claims row {r[0]!r}: {len(r)} cells for {len(header)} columns" for r in rows if len(r) != len(header)]
        for c in results:  # an escaped `|` shows as itself, inside its own cell
            for field in ("claim", "paper", "target"):
                text = str(c.get(field) or "").replace("`", "")
                if "|" in text and c["id"] in by_id and text not in by_id[c["id"]][col.get(field, 0)]:
                    bad.append(f"claims row {c['id']!r}: {field} {text!r} split ({by_id[c['id']]})")
    assert bad == [], f"{nb.stem}:\n" + "\n".join(bad)


@pytest.mark.parametrize("nb", [nb for nb in CHAPTERS if expected_outputs(nb)[0]], ids=lambda p: p.stem)
def test_plotly_figures_fall_back_to_a_static_png(browser, nb):
    """With plotly.js blocked, each plotly figure shows the PNG drawn at build time (book/_ext/offline.py)."""
    browser.call("Network.enable")
    browser.call("Network.setBlockedURLs", urls=["*plotly.min.js*"])
    try:
        browser.call("Page.navigate", url=(HTML / "notebooks" / f"{nb.stem}.html").as_uri())
        browser.events.clear()
        browser.wait_event("Page.loadEventFired")
        time.sleep(1)
        shown = browser.js("[...document.querySelectorAll('img.plotly-fallback')]"
                           ".filter(i => i.complete && i.naturalWidth > 0 && i.offsetHeight > 0).length")
    finally:
        browser.call("Network.setBlockedURLs", urls=[])
        browser.call("Network.disable")
    assert shown == expected_outputs(nb)[0]
