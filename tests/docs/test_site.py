"""The documentation site builds offline with `mkdocs build --strict` and renders in headless Chromium.

Built once per test session into a temporary folder (a few seconds), served on the loopback
interface (Material's search loads its index with ``fetch``, which ``file://`` pages may not
do), and loaded in Chromium with a probe script injected into a copy of each page: errors
(scripts, ``console.error``, rejected promises, resources that fail to load) are collected,
and the page's state is written into the DOM once the page has loaded.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.helpers import ROOT
from tests.helpers.chromium import CHROMIUM_FLAGS, find_chromium, probe

# Smoke runs of what ships beside the package: in the slow run (`python -m pytest -m slow`, .ci/run).
pytestmark = pytest.mark.slow

PUBLIC = {  # the public classes of SPEC.md, and the framework-free API
    "lightning_energy.EnergyMonitor",
    "lightning_energy.EnergyBudget",
    "lightning_energy.PowerCap",
    "hf_energy.EnergyCallback",
    "hf_energy.EnergyBudgetCallback",
    "hf_energy.PowerCapCallback",
    "lightning_energy.EnergyToTarget",
    "hf_energy.EnergyToTargetCallback",
    "energy_core.TargetRule",
    "energy_core.EnergyLoop",
}


def build(site: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    done = build(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_every_page_is_built_and_in_the_nav(site) -> None:
    pages = sorted(p.relative_to(ROOT / "docs") for p in (ROOT / "docs").rglob("*.md"))
    for page in pages:
        built = (
            site / page.with_suffix("") / "index.html" if page.name != "index.md" else site / page.parent / "index.html"
        )
        assert built.is_file(), f"{page} was not built"
    nav = (ROOT / "mkdocs.yml").read_text()
    assert [p for p in pages if str(p) not in nav] == [], "every page has its place in mkdocs.yml's nav"


def test_the_site_needs_nothing_from_the_network(site) -> None:
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        external = re.findall(r'<(?:script|link|img|iframe)\b[^>]*?(?:src|href)="(https?://[^"]+)"', html)
        assert external == [], f"{page.relative_to(site)} loads {external}"
    assert (site / "search" / "search_index.json").is_file()


def test_a_broken_link_or_reference_fails_the_build(tmp_path) -> None:
    """`--strict` is what .ci/run relies on: one dangling link, anchor or API name fails it."""
    pytest.importorskip("mkdocs")
    docs = tmp_path / "docs"
    (docs / "reference").mkdir(parents=True)
    (docs / "index.md").write_text("# Home\n\n[gone](nowhere.md), [no anchor](reference/api.md#nope)\n")
    (docs / "reference" / "api.md").write_text("# API\n\n::: energy_core.NoSuchClass\n")
    config = (ROOT / "mkdocs.yml").read_text()
    config = re.sub(r"^nav:.*", "", config, flags=re.S).replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("paths: [.]", f"paths: [{ROOT}]").replace("base_path: [.]", f"base_path: [{ROOT}]")
    config = config.replace("[docs_ext/", f"[{ROOT}/docs_ext/")  # the API page's griffe extension
    (tmp_path / "mkdocs.yml").write_text(config)
    done = build(tmp_path / "site", tmp_path / "mkdocs.yml")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "nowhere.md" in output and "energy_core.NoSuchClass" in output, output[-3000:]


PROBE_HEAD = """<script>
window.__errors = [];
window.addEventListener("error",
  e => window.__errors.push(String(e.message || (e.target && (e.target.src || e.target.href)))), true);
window.addEventListener("unhandledrejection", e => window.__errors.push("unhandled rejection: " + String(e.reason)));
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); __consoleError(...args); };
</script>"""
# Once loaded: wait for Material's search worker to index the site, type a query into the
# search box as a user would, then report what the page shows. Under Chromium's virtual time
# a worker gets no time of its own, so each wait is a synchronous request to the test
# server's /__wait (100 ms of real time each); at most 10 s in all.
PROBE_BODY = """<pre id="probe"></pre><script>
const __wait = () => { const r = new XMLHttpRequest(); r.open("GET", "/__wait", false); r.send(); };
window.addEventListener("load", () => {
  const input = document.querySelector("input.md-search__input");
  const meta = () => (document.querySelector(".md-search-result__meta") || {textContent: ""}).textContent.trim();
  let ticks = 0;
  const report = () => {
    const text = sel => [...document.querySelectorAll(sel)].map(e => e.textContent.trim());
    document.getElementById("probe").textContent = JSON.stringify({
      errors: window.__errors,
      title: document.title,
      search_box: !!input,
      search_ready_after_ms: ticks * 100,
      search_results: text(".md-search-result__item").length,
      search_meta: meta(),
      nav: text(".md-nav--primary .md-nav__link"),
      headings: [...document.querySelectorAll(".doc-heading")].map(e => e.id),
      code_blocks: document.querySelectorAll(".highlight pre").length,
      tables: document.querySelectorAll(".md-content table").length,
      width: document.documentElement.scrollWidth,
      // each class's parameter rows, by heading: what a reader of the API page sees it take
      parameters: Object.fromEntries([...document.querySelectorAll(".doc-class")].map(c => [
        (c.querySelector(".doc-heading") || {id: ""}).id,
        [...(c.querySelector(".doc-contents table") || document.createElement("table"))
          .querySelectorAll("tbody tr")].map(r => [...r.children].map(td => td.innerText.trim()))])),
      // code blocks that scroll sideways, hiding the end of a line behind a scrollbar
      overflowing: [...document.querySelectorAll(".md-content pre > code")]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.trim().slice(0, 60)),
      article: (document.querySelector("article.md-content__inner") || {innerText: ""}).innerText,
    });
  };
  const search = (left) => {
    if (left > 0) { __wait(); setTimeout(() => search(left - 1), 0); return; }
    report();
  };
  const ready = () => {
    if (input && meta().startsWith("Initializing") && ticks++ < 100) { __wait(); setTimeout(ready, 0); return; }
    if (!input) { report(); return; }
    input.focus();
    input.value = "EnergyBudgetCallback";
    input.dispatchEvent(new Event("input"));
    input.dispatchEvent(new KeyboardEvent("keyup", {key: "k"}));
    search(5);
  };
  ready();
});
</script>"""


@pytest.fixture(scope="module")
def served(site):
    """The site on http://127.0.0.1:PORT/ for the module's tests, with the probe in every page."""
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        page.write_text(html.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "</body>", 1))
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the site; ``/__wait`` answers after 100 ms of real time (see PROBE_BODY)."""

    def do_GET(self) -> None:
        if self.path.startswith("/__wait"):
            time.sleep(0.1)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_home_page_renders_with_nav_and_working_search(served) -> None:
    chromium = find_chromium()
    seen = probe(chromium, served + "/")
    assert seen["errors"] == []
    assert seen["title"].startswith("energy-callbacks") and seen["search_box"]
    for entry in ("Lightning", "Hugging Face Trainer", "Loops without a Trainer", "API", "Metrics", "Run record"):
        assert entry in seen["nav"], seen["nav"]
    # Material's search worker fetched the index and answered the query typed into the box.
    assert seen["search_results"] >= 1 and "matching" in seen["search_meta"], seen
    assert seen["width"] <= 1366


def test_api_page_lists_the_public_classes(served, tmp_path) -> None:
    chromium = find_chromium()
    seen = probe(chromium, served + "/reference/api/")
    assert seen["errors"] == []
    assert PUBLIC <= set(seen["headings"]), seen["headings"]
    assert "hf_energy.attach" in seen["headings"] and seen["code_blocks"] >= 6
    shot = tmp_path / "api.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp()}", "--window-size=1366,1600",
         "--virtual-time-budget=5000", f"--screenshot={shot}", served + "/reference/api/"],
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    low, high = Image.open(shot).convert("L").getextrema()
    assert high - low > 100  # text was drawn, not a blank page


@pytest.mark.parametrize(
    "path, needle",
    [("/reference/metrics/", "energy/step_j"), ("/getting-started/loops/", "EnergyLoop"),
     ("/reliability/", "Threat model")],
)  # fmt: skip
def test_content_pages_render_without_errors(served, path, needle) -> None:
    chromium = find_chromium()
    seen = probe(chromium, served + path, width=800)
    assert seen["errors"] == [] and seen["search_box"]
    assert seen["tables"] + seen["code_blocks"] >= 1 and needle in seen["article"]


@pytest.mark.parametrize("path", ["/", "/getting-started/lightning/", "/getting-started/huggingface/"])
def test_getting_started_code_fits_at_1280_px(served, path) -> None:
    """A newcomer reads a first page's commands whole: no code block hides a line's end behind a scrollbar."""
    seen = probe(find_chromium(), served + path, width=1280)
    assert seen["code_blocks"] >= 1 and seen["overflowing"] == [], seen["overflowing"]


def test_the_api_page_shows_each_measurement_argument(served) -> None:
    """``**measure: Unpack[MeasureArgs]`` is shown as its arguments, each with its type, meaning and
    default (from MeasureOptions), not as one row of names."""
    seen = probe(find_chromium(), served + "/reference/api/", width=1280)
    for cls in ("lightning_energy.EnergyMonitor", "hf_energy.EnergyCallback", "lightning_energy.EnergyBudget"):
        rows = {row[0]: row[1:] for row in seen["parameters"][cls]}
        assert "**measure" not in rows, cls
        meaning = "Power usage effectiveness of the data centre (in [1, 10]), applied to CO2e and cost."
        assert rows["pue"] == ["float", meaning, "1.0"]
        kind, meaning, default = rows["country"]
        assert "alpha-3" in meaning and default == "None" and "str" in kind
    assert not [code for code in seen["overflowing"] if code.startswith("from ")]  # the page's imports fit
