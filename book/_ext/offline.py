"""Sphinx extension: the book's pages load every script from their own `_static/offline/`, never from a CDN.

Vendored at build time, each from a pinned package whose checksum is checked:

- plotly.js: the `plotly.min.js` that the installed plotly Python package ships (the figures were made with it);
- MathJax 3 (the book's math and plotly's LaTeX), require.js and the Jupyter widget manager
  (`@jupyter-widgets/html-manager`, which renders the widget state saved in the notebooks): npm packages,
  fetched once with `npm pack` into `_build/vendor/npm/` and unpacked into `_build/vendor/static/offline/`.

Papermill's injected-parameters cell is removed from the pages (`source-read` tags it `remove-cell`).
The notebooks' plotly outputs name plotly.js and MathJax on a CDN in their own HTML; `html-page-context` rewrites
those addresses to the vendored files, so re-executing a chapter needs no change here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import matplotlib
import numpy as np
import plotly
from matplotlib.figure import Figure
from sphinx.application import Sphinx
from sphinx.util import logging

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "_build" / "vendor"
STATIC = CACHE / "static"  # added to html_static_path: its offline/ lands in _build/html/_static/offline/
# npm package -> (sha512 integrity of its tarball, {member prefix in the tarball: destination under offline/})
NPM = {
    "mathjax@3.2.2": (
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        {"package/es5/": "mathjax/"},
    ),
    "requirejs@2.3.7": (
        "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
        {"package/require.js": "require.js"},
    ),
    "@jupyter-widgets/html-manager@1.0.6": (
        "sha512-+Mn+Ra8wyIHrYaUpfmf9A3dsLkt/NuwzPQN8sthdxBD35VV5cOJbpmgMhNR27n/rmP3mKyEe0PWCJrtZrXTXDQ==",
        {"package/dist/": "html-manager/"},
    ),
}
# not needed by a page: source maps, MathJax's speech engine, CHTML output (fonts) and the combined files the book
# does not load, the widget manager's non-AMD builds
SKIP = re.compile(r"\.map$|^package/es5/(sre/|output/chtml|(?!(tex-mml-svg|tex-svg)\.js$)[^/]+\.js$)"
                  r"|^package/dist/(embed|libembed-amd)\.js$")
PLOTLY_CDN = r"https://cdn\.plot\.ly/plotly-[0-9.]+(?:\.min)?(?:\.js)?"
# plotly's HTML outputs load plotly.js from its CDN, as a classic script (with `crossorigin`, which a file:// page
# may not use) or as an ES module (which a file:// page may not import): both become a classic local script.
PLOTLY_TAG = re.compile(rf'<script type="module">import "{PLOTLY_CDN}"</script>|<script[^>]*src="{PLOTLY_CDN}"[^>]*>')
# ... and MathJax, a second copy beside the page's own, which breaks both
MATHJAX_TAG = re.compile(r'<script[^>]*src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[0-9.]+/es5/tex-svg'
                         r'(?:\.min)?\.js"[^>]*>\s*</script>')
PLOTLY_MIME = "application/vnd.plotly.v1+json"
MARKERS = {"circle": "o", "diamond": "D", "square": "s", "triangle-up": "^", "star": "*"}
log = logging.getLogger(__name__)
matplotlib.use("Agg")


def integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def npm_tarball(spec: str, expected: str) -> Path:
    """The package's tarball from the npm cache dir, packing it with npm if missing; checksum checked."""
    cache = CACHE / "npm"
    cache.mkdir(parents=True, exist_ok=True)
    name = spec.rsplit("@", 1)[0].lstrip("@").replace("/", "-") + "-" + spec.rsplit("@", 1)[1] + ".tgz"
    tgz = cache / name
    if not tgz.exists():
        out = subprocess.run(["npm", "pack", "--json", "--pack-destination", str(cache), spec], check=True,
                             capture_output=True, text=True, cwd=cache).stdout
        tgz = cache / json.loads(out)[0]["filename"]
    if (got := integrity(tgz)) != expected:
        tgz.unlink()
        raise RuntimeError(f"{spec}: checksum {got} != pinned {expected}")
    return tgz


def vendor() -> Path:
    """Fill STATIC/offline/ (once; delete _build/vendor to redo it) and return STATIC."""
    dest = STATIC / "offline"
    stamp = dest / ".complete"
    if stamp.exists():
        return STATIC
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for spec, (expected, members) in NPM.items():
        with tarfile.open(npm_tarball(spec, expected)) as tar:
            for m in tar.getmembers():
                prefix = next((p for p in members if m.name.startswith(p)), None)
                if prefix is None or not m.isfile() or SKIP.search(m.name):
                    continue
                target = dest / (members[prefix] + m.name[len(prefix):])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(m).read())
    patch_widget_manager(dest / "html-manager" / "embed-amd.js")
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", dest / "plotly.min.js")
    stamp.touch()
    log.info(f"offline: vendored {', '.join(NPM)} and plotly.min.js into {dest}")
    return STATIC


def patch_widget_manager(js: Path) -> None:
    """Two fixes to html-manager 1.0.6 for a page opened from disk with MathJax 3:
    it typesets with MathJax 2's `MathJax.Hub.Queue` (undefined in MathJax 3: an exception per widget), and it
    loads its icon font (woff2) by URL, which Chromium refuses to a file:// page; the woff2 is inlined instead."""
    text = js.read_text()
    mj2 = 'void 0!==window.MathJax&&MathJax.Hub.Queue(["Typeset",MathJax.Hub,e])'
    assert mj2 in text, "html-manager changed: review the MathJax patch"
    text = text.replace(mj2, "void 0!==window.MathJax&&window.MathJax.typesetPromise&&MathJax.typesetPromise([e])")
    for font in js.parent.glob("*.woff2"):
        uri = "data:font/woff2;base64," + base64.b64encode(font.read_bytes()).decode()
        text, n = re.subn(rf'[A-Za-z_$]\.p\+"{font.name}"', f'"{uri}"', text)
        assert n, f"html-manager changed: {font.name} is not referenced"
    js.write_text(text)


OFFLINE = {"on": True}  # False when npm is missing: the book still builds, loading these from their CDNs


def on_config_inited(app: Sphinx, config) -> None:
    try:
        static = vendor()
    except (FileNotFoundError, subprocess.CalledProcessError) as e:  # no npm (or no registry): degrade, say so
        OFFLINE["on"] = False
        log.warning(f"offline: could not vendor the book's JavaScript ({e}); the pages will load MathJax, "
                    "plotly.js and the widget manager from CDNs. Install npm (`make sysdeps`) for an offline book.")
        return
    config.html_static_path.append(str(static))
    config.mathjax_path = "offline/mathjax/tex-mml-svg.js"  # SVG output: no web fonts (refused to file:// pages)


def on_page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    if not OFFLINE["on"]:
        return
    scripts, seen = [], set()
    for js in context.get("script_files", []):  # sphinx-thebe's inline `const THEBE_JS_URL` comes twice: a SyntaxError
        key = (js.filename or "", repr(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            scripts.append(js)
    context["script_files"][:] = scripts
    plotly_js = context["pathto"]("_static/offline/plotly.min.js", 1)
    has_mathjax = any("mathjax" in (js.filename or "") for js in scripts)
    tex_svg = "" if has_mathjax else f'<script src="{context["pathto"]("_static/offline/mathjax/tex-svg.js", 1)}">'
    tex_svg += "</script>" if tex_svg else ""
    tag = f'<script charset="utf-8" src="{plotly_js}">'
    body = PLOTLY_TAG.sub(lambda m: tag + "</script>" if "import" in m[0] else tag, context.get("body", ""))
    context["body"] = MATHJAX_TAG.sub(tex_svg, body)


def _array(v) -> np.ndarray:
    """A plotly JSON array: a list (None = gap) or a typed array {"dtype", "bdata", "shape"}."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(d) for d in str(v.get("shape", len(a))).split(",")])
    return np.array([np.nan if x is None else x for x in v], dtype=float)


def _colour(c: str | None):
    m = re.match(r"rgba?\(([^)]*)\)", c or "")
    if not m:
        return c
    parts = [float(x) for x in m[1].split(",")]
    return (*[x / 255 for x in parts[:3]], *(parts[3:] or [1.0]))


def static_figure(fig: dict) -> bytes | None:
    """A PNG of a plotly figure's JSON, drawn with matplotlib: scatter lines and markers, or the first visible
    heatmap. Shown on the page only where plotly.js could not draw the figure; None for other trace types."""
    traces = [t for t in fig.get("data", []) if t.get("visible", True) is True]
    if not traces or any(t.get("type", "scatter") not in ("scatter", "heatmap") for t in traces):
        return None
    layout = fig.get("layout", {})
    f = Figure(figsize=(9, layout.get("height", 500) / 100), dpi=80)
    ax = f.add_subplot()
    for t in traces:
        if t.get("type") == "heatmap":
            im = ax.imshow(_array(t["z"]), cmap="Blues", vmin=t.get("zmin"), vmax=t.get("zmax"), aspect="auto")
            f.colorbar(im, ax=ax)
            ax.set_xticks(range(len(t.get("x", []))), t.get("x", []), rotation=90, fontsize=6)
            ax.set_yticks(range(len(t.get("y", []))), t.get("y", []), fontsize=6)
            break
        x, y = _array(t["x"]), _array(t["y"])
        if "lines" in t.get("mode", "lines"):
            line = t.get("line", {})
            ax.plot(x, y, color=_colour(line.get("color")), lw=0.6 * line.get("width", 1.5))
        if "markers" in t.get("mode", ""):
            ax.scatter(x, y, marker=MARKERS.get(t.get("marker", {}).get("symbol"), "o"), label=t.get("name"), zorder=3)
    axis = layout.get("xaxis", {})
    if "tickvals" in axis:
        ax.set_xticks(axis["tickvals"], axis.get("ticktext", axis["tickvals"]), rotation=60, fontsize=7)
    title = layout.get("title", "")
    ax.set_title(title.get("text", "") if isinstance(title, dict) else title, fontsize=9)
    if any(t.get("name") and "markers" in t.get("mode", "") for t in traces):
        ax.legend(fontsize=7)
    f.tight_layout()
    buf = io.BytesIO()
    f.savefig(buf, format="png")
    return buf.getvalue()


def on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """Drop papermill's injected `# Parameters` cell from the page (papermill writes it anew at each run), and give
    every plotly figure a static PNG that the page shows only when plotly.js did not load."""
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    nb = json.loads(source[0])
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            cell["metadata"]["tags"] = [*tags, "remove-cell"]
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if PLOTLY_MIME in data and "text/html" in data and (png := static_figure(data[PLOTLY_MIME])):
                src = "data:image/png;base64," + base64.b64encode(png).decode()
                data["text/html"] = "".join(data["text/html"]) + (
                    f'<img class="plotly-fallback" alt="the figure, static" src="{src}">'
                    "<script>if (window.Plotly) document.currentScript.previousElementSibling.remove();</script>")
    source[0] = json.dumps(nb)


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", on_config_inited)
    app.connect("source-read", on_source_read)
    app.connect("html-page-context", on_page_context, priority=900)  # after the handlers that add scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}  # bump when the pages change
