"""The HTML report in a real headless Chromium (Debian's chromium and
chromium-driver), opened from a file with the network off: every chart
renders and the console stays clean."""
from __future__ import annotations

import shutil

import pytest

from harness import results
from harness.report import write_report

from ..test_results_report import sample_run

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    driver_path = shutil.which("chromedriver")
    assert driver_path and shutil.which("chromium"), "chromium and chromium-driver are installed by setup.sh"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions",
                # no network at all: every host resolves nowhere
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def test_report_renders_offline_without_console_errors(tmp_path, browser):
    store = sample_run(tmp_path)
    page = write_report(store.path, tmp_path / "report.html")
    browser.get(page.as_uri())
    assert browser.title.startswith("langbench report lbtest")
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg')).map(s => {"
        " const r = s.getBoundingClientRect(); return [r.width, r.height, s.querySelectorAll('path').length]; })")
    assert len(sizes) >= 4
    for w, h, paths in sizes:
        assert w > 100 and h > 100 and paths > 0, sizes
    # network was never needed: no resource other than the page itself
    entries = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert entries == []
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    text = browser.find_element("tag name", "body").text
    assert "Scorecard" in text and "Interop matrix" in text
    assert "<script>" in text            # escaped text shows as text, never runs
    assert results.load(store.dir)["status"] == "complete"
