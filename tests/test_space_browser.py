"""A real browser on the Space: headless Debian Chromium driven by Playwright.

Opens the page, selects a ROI, clicks Run, waits for the S2-like LR image and the histogram plot, and
saves the screenshot shown in the Space's README (``spaces/sen2naip-degradation/screenshot.png``).
Skips when Chromium (``apt-get install chromium``) or the ``playwright`` package is missing; no
Playwright browser download is needed.
"""

from __future__ import annotations

import shutil

import pytest
from space_helpers import SPACE_DIR, launched_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = SPACE_DIR / "screenshot.png"
TIMEOUT_MS = 60_000

pytestmark = [  # ~10 s on 2 cores: not marked slow
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:Warning"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated:Warning"),
]


@pytest.fixture(scope="module")
def sync_playwright():
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    return playwright.sync_playwright


@pytest.fixture(scope="module")
def page_url(sync_playwright, reference_dir, tmp_path_factory):
    with launched_app(reference_dir / "sen2naip-degradation", tmp_path_factory) as (demo, _):
        yield demo.local_url


def test_pick_roi_run_and_see_lr_and_histogram(sync_playwright, page_url):
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(page_url, wait_until="networkidle", timeout=TIMEOUT_MS)
            dropdown = page.get_by_label("cross_sensor ROI")
            dropdown.click()
            options = page.get_by_role("option")
            options.last.wait_for(timeout=TIMEOUT_MS)
            assert options.count() == 2
            chosen = options.last.inner_text().strip()
            options.last.click()
            assert dropdown.input_value() == chosen
            page.locator("#run").click()
            page.locator("#lr img").wait_for(state="visible", timeout=TIMEOUT_MS)
            page.locator("#histogram img, #histogram svg").first.wait_for(state="visible", timeout=TIMEOUT_MS)
            page.locator("#summary").get_by_text("spectral angle").wait_for(timeout=TIMEOUT_MS)
            assert page.locator("#real img").is_visible()
            assert "_s2like" in page.locator("#download").inner_text()
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
