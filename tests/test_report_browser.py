"""report.html in a real browser: headless Chromium, network off, plotly renders every figure with data,
no console errors, no request leaves the file, a `<script>` caption shows as text. Saves a screenshot
(``report-screenshot.png`` beside the report). Skipped when Chromium, its driver or selenium is missing."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lakd.data.store import write_store
from lakd.report import ReportConfig, geometry_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)",
)

EVIL = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'> \"quoted\" & more"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
PLOTLY_READY = """
const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
return plots.length > 0 && plots.every(p => p._fullLayout && p.querySelector('.main-svg'));
"""
FIGURE_DATA = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => ({
  id: p.id,
  traces: p._fullData.length,
  points: p._fullData.reduce((n, t) => n + ((t.x && t.x.length) || (t.z && t.z.length) || 0), 0),
  drawn: p.querySelectorAll('.scatterlayer .trace, .barlayer .trace, .heatmaplayer image').length,
}));
"""
COLOUR_BARS = "return document.querySelectorAll('#figure-alignment .colorbar').length;"
HOVER_FIRST_POINT = """
const plot = document.getElementById('figure-ellipsoids');
Plotly.Fx.hover(plot, [{curveNumber: 0, pointNumber: 0}]);
const label = plot.querySelector('.hoverlayer .hovertext');
return label ? label.textContent : null;
"""


def _store(path: Path, dim: int, seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    shared = np.random.default_rng(0).normal(size=(n, 8))
    mix = rng.normal(size=(8, dim))
    image = shared @ mix + 2.0 + 0.1 * rng.normal(size=(n, dim))
    text = shared @ mix - 1.0 + 0.3 * rng.normal(size=(n, dim))
    captions = [EVIL if i == 0 else f"caption {i} & more" for i in range(n)]
    return write_store(
        path,
        torch.tensor(image, dtype=torch.float32),
        model=f"synthetic-{dim}",
        source="synthetic",
        text=torch.tensor(text, dtype=torch.float32),
        text_item=torch.arange(n),
        captions=captions,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    _store(root / "teacher", 48, 1)
    _store(root / "student", 24, 2)
    cfg = ReportConfig(
        out=str(root / "report"),
        teacher=str(root / "teacher"),
        students=(str(root / "student"),),
        tsne_items=40,
        plot_points=60,
    )
    return geometry_report(cfg)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="lakd-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_report_renders_offline_without_errors(report, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")
    browser.get_log("performance")  # drop what the blank start page did
    browser.get((report / "report.html").resolve().as_uri())
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(PLOTLY_READY))

    figures = browser.execute_script(FIGURE_DATA)
    metrics = json.loads((report / "metrics.json").read_text())
    assert {f["id"] for f in figures} == {f"figure-{Path(p).stem}" for p in metrics["figures"]}
    for figure in figures:
        assert figure["traces"] > 0 and figure["points"] > 0 and figure["drawn"] > 0, figure

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    urls = _requested_urls(browser)
    assert urls and all(url.startswith(("file:", "data:", "blob:")) for url in urls), urls

    # the caption with <script> and an onerror image is text, in the page and on hover
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    hover = browser.execute_script(HOVER_FIRST_POINT)
    assert hover is not None and "<script>window.__pwned = 1</script>" in hover
    assert '"quoted" & more' in hover and "&quot;" not in hover and "&amp;" not in hover
    assert browser.execute_script("return window.__pwned === undefined")

    # the similarity matrices share one visible colour scale
    assert browser.execute_script(COLOUR_BARS) == 1

    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(report / "report-screenshot.png"))
    assert (report / "report-screenshot.png").stat().st_size > 10_000
