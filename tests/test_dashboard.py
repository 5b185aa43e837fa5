"""The published asv dashboard renders offline in headless Chromium.

``.ci/dashboard`` runs the quick asv suite, publishes it, vendors the page's JavaScript
from npm and then runs this file with ``ARRAYCNN_DASHBOARD_REQUIRED=1``, where a missing
dashboard or browser is a failure. Elsewhere these tests skip, saying why.

Environment: ``ARRAYCNN_DASHBOARD_DIR`` (default ``.asv/html``), ``ARRAYCNN_CHROMIUM``
(default: ``chromium`` on PATH), ``ARRAYCNN_DASHBOARD_SCREENSHOT`` (default
``.asv/dashboard.png``), ``ARRAYCNN_DASHBOARD_MIN_COMMITS`` (default 0: the commits a graph
must show; ``.ci/dashboard`` sets it to the commits with results, at most 10).

What the page drew is read from flot itself: a probe page served beside the dashboard loads
a graph page in a frame and reports the plotted series (their x and y values, as flot holds
them after its plugins ran), so the tests see the points, not only the canvas.

The page is served over HTTP from a local server (the dashboard loads its JSON with XHR,
which browsers refuse for ``file://`` pages), with every network access other than that
server left to fail: a CDN reference that slipped through shows up as the error page.
"""

from __future__ import annotations

import functools
import html
import html.parser
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = Path(os.environ.get("ARRAYCNN_DASHBOARD_DIR", ROOT / ".asv" / "html"))
if not DASHBOARD_DIR.is_absolute():
    DASHBOARD_DIR = ROOT / DASHBOARD_DIR
SCREENSHOT = Path(os.environ.get("ARRAYCNN_DASHBOARD_SCREENSHOT", ROOT / ".asv" / "dashboard.png"))
REQUIRED = os.environ.get("ARRAYCNN_DASHBOARD_REQUIRED", "0") == "1"
#: A parametrized benchmark whose graph page is opened (its flot plot must be drawn).
GRAPH_BENCHMARK = "bench_conv.ConvForward.time_forward"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
#: Virtual milliseconds the page's scripts get before the DOM is dumped / the shot taken.
VIRTUAL_TIME_MS = 20000
#: Commits the graph of GRAPH_BENCHMARK must show (0: as many as were benchmarked, if two).
MIN_COMMITS = int(os.environ.get("ARRAYCNN_DASHBOARD_MIN_COMMITS", "0"))
#: The probe page: the graph page in a frame; after the page's scripts ran, the series flot
#: plotted, as JSON in <pre id="out"> (NaN becomes null).
PROBE = """<!doctype html><html><body><pre id="out">waiting</pre>
<iframe id="frame" width="1400" height="900" src="index.html#FRAGMENT"></iframe>
<script>
setTimeout(function () {
  var w = document.getElementById("frame").contentWindow, out = {series: []};
  var plot = w.$ && w.$("#main-graph").data("plot");
  if (!plot) { out.error = "no plot"; } else {
    plot.getData().forEach(function (s) {
      var pts = s.datapoints.points, size = s.datapoints.pointsize, xs = [], ys = [];
      for (var i = 0; i < pts.length; i += size) { xs.push(pts[i]); ys.push(pts[i + 1]); }
      out.series.push({label: s.label, bars: !!(s.bars && s.bars.show), x: xs, y: ys});
    });
  }
  document.getElementById("out").textContent = JSON.stringify(out);
}, 12000);
</script></body></html>
"""


def unavailable(reason: str) -> None:
    """Skip locally; fail where the dashboard is required (CI)."""
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def dashboard_dir() -> Path:
    if not (DASHBOARD_DIR / "index.html").is_file():
        unavailable(
            f"no published dashboard at {DASHBOARD_DIR} (run .ci/dashboard, or set "
            "ARRAYCNN_DASHBOARD_DIR)"
        )
    return DASHBOARD_DIR


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("ARRAYCNN_CHROMIUM") or shutil.which("chromium")
    path = path or shutil.which("chromium-browser")
    if not path:
        unavailable("chromium is not installed (apt-get install chromium; .ci/dashboard does it)")
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url(dashboard_dir: Path) -> Iterator[str]:
    """URL of the dashboard served by a local HTTP server on a free port."""
    handler = functools.partial(_QuietHandler, directory=str(dashboard_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def run_chromium(chromium: str, url: str, tmp_path: Path, *extra: str) -> str:
    """Load ``url`` headless, let its scripts run, return stdout (the DOM with --dump-dom)."""
    profile = tmp_path / "chromium-profile"
    argv = [
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
        *extra,
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-2000:]}"
    return done.stdout


class _Assets(html.parser.HTMLParser):
    """Collects script sources and stylesheet links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.urls.append(a["src"] or "")
        if tag == "link" and "stylesheet" in (a.get("rel") or "") and a.get("href"):
            self.urls.append(a["href"] or "")


def test_page_loads_only_local_scripts_and_styles(dashboard_dir: Path) -> None:
    parser = _Assets()
    parser.feed((dashboard_dir / "index.html").read_text(encoding="utf-8"))
    assert len(parser.urls) >= 10  # jquery, 4 flot files, orderbars, stupidtable, md5, bootstrap
    external = [u for u in parser.urls if u.startswith(("http:", "https:", "//"))]
    assert external == [], f"CDN references left in index.html: {external}"
    missing = [u for u in parser.urls if not (dashboard_dir / u).is_file()]
    assert missing == [], f"local assets missing: {missing}"


def test_index_lists_the_benchmarks(chromium: str, base_url: str, tmp_path: Path) -> None:
    dom = run_chromium(chromium, base_url + "index.html", tmp_path, "--dump-dom")
    assert "Can not determine continental origin of swallow" not in dom, (
        "the dashboard fell back to its error page: an external script failed to load"
    )
    assert 'class="btn benchmark-container"' in dom, "the benchmark grid was not built"
    for name in ("bench_conv.ConvForward.time_forward", "bench_dispatch.Dispatch.track_regret"):
        assert f'href="#{name}"' in dom, f"{name} is missing from the benchmark grid"
    assert "flot-base" in dom, "no flot canvas: the summary plots were not drawn"


def test_graph_page_draws_its_plot(chromium: str, base_url: str, tmp_path: Path) -> None:
    url = f"{base_url}index.html#{GRAPH_BENCHMARK}"
    dom = run_chromium(chromium, url, tmp_path, "--dump-dom")
    assert "Can not determine continental origin of swallow" not in dom
    assert 'id="main-graph"' in dom, "the graph page did not open"
    assert dom.count("flot-base") >= 1, "the benchmark's graph has no flot canvas"
    assert "flot-tick-label" in dom or "tickLabel" in dom, "the graph has no axis labels"
    for value in ("numpy", "torch", "im2col"):  # parameter selectors of the graph page
        assert value in dom, f"parameter value {value!r} is not offered on the graph page"


def test_graph_page_screenshot(
    chromium: str, base_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        import matplotlib.image as plt_image
    except ImportError:
        unavailable("matplotlib is needed to read the screenshot")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    url = f"{base_url}index.html#{GRAPH_BENCHMARK}"
    run_chromium(chromium, url, tmp_path, f"--screenshot={SCREENSHOT}", "--window-size=1400,900")
    with capsys.disabled():
        print(f"\ndashboard screenshot: {SCREENSHOT}")
    assert SCREENSHOT.is_file(), "chromium wrote no screenshot"
    pixels = plt_image.imread(SCREENSHOT)[..., :3]
    assert pixels.shape[:2] == (900, 1400)
    colours = {tuple(p) for p in (pixels[::7, ::7].reshape(-1, 3) * 255).astype(int).tolist()}
    assert len(colours) > 30, "the screenshot is nearly uniform: nothing was drawn"


def plotted_series(
    chromium: str, base_url: str, dashboard_dir: Path, tmp_path: Path, fragment: str
):
    """The series flot plotted on the graph page ``index.html#<fragment>``."""
    probe = dashboard_dir / "arraycnn-probe.html"
    probe.write_text(PROBE.replace("FRAGMENT", fragment), encoding="utf-8")
    try:
        dom = run_chromium(chromium, base_url + probe.name, tmp_path, "--dump-dom")
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found is not None, "the probe page did not run"
    report = json.loads(html.unescape(found.group(1)))
    assert "error" not in report, f"graph page #{fragment}: {report.get('error')}"
    return report["series"]


def benchmarked_commits(dashboard_dir: Path) -> int:
    """Commits with a result of GRAPH_BENCHMARK in the published graphs."""
    revisions = set()
    for path in (dashboard_dir / "graphs").rglob(f"{GRAPH_BENCHMARK}.json"):
        if "summary" in path.parts:
            continue
        for revision, values in json.loads(path.read_text(encoding="utf-8")):
            if values is not None:
                revisions.add(revision)
    return len(revisions)


def test_graph_page_shows_the_history(
    chromium: str, base_url: str, dashboard_dir: Path, tmp_path: Path
) -> None:
    """With several commits benchmarked, the commit axis plots a point of each (at least
    MIN_COMMITS of them)."""
    available = benchmarked_commits(dashboard_dir)
    if available < max(2, MIN_COMMITS):
        if MIN_COMMITS:
            pytest.fail(f"{available} commits have results, {MIN_COMMITS} are required")
        pytest.skip(f"{available} commit(s) benchmarked: no history to show")
    series = plotted_series(chromium, base_url, dashboard_dir, tmp_path, GRAPH_BENCHMARK)
    assert series, "the graph plotted no series"
    shown = {x for s in series for x, y in zip(s["x"], s["y"]) if x is not None and y is not None}
    assert len(shown) >= max(2, MIN_COMMITS), f"the graph shows {len(shown)} commits"


def test_parameter_axis_draws_bars(
    chromium: str, base_url: str, dashboard_dir: Path, tmp_path: Path
) -> None:
    """With a parameter as x-axis the page draws bars at finite positions (asv's
    flot-orderbars put them at NaN on a categories axis until .ci/dashboard fixed it)."""
    fragment = f"{GRAPH_BENCHMARK}?x-axis=strategy"
    series = plotted_series(chromium, base_url, dashboard_dir, tmp_path, fragment)
    assert series and all(s["bars"] for s in series), "no bar series on the parameter axis"
    for s in series:
        assert s["x"] and all(x is not None for x in s["x"]), f"bars at NaN: {s['label']}"
    assert any(y for s in series for y in s["y"]), "every bar is empty"
