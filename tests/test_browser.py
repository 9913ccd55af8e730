"""The smoke report opened in headless Chromium, as a reader would, at a desktop and a phone width.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them) and selenium (the test
extra). Without them the test is skipped with the reason, unless TRAINFAIL_REQUIRE_BROWSER=1 (CI),
where a missing browser fails. Screenshots: <smoke copy>/results/report/screenshots/.
"""

import importlib.util
import os

import pytest

from trainfail.core import store

from .browser import WIDTHS, chromium, inspect, open_browser

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser():
    missing = None
    if importlib.util.find_spec("selenium") is None:
        missing = "selenium is not installed (pip install -e '.[test]')"
    if missing is None and chromium() is None:
        missing = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    if missing:
        if os.environ.get("TRAINFAIL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"TRAINFAIL_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    driver = open_browser()
    yield driver
    driver.quit()


@pytest.mark.parametrize("width", WIDTHS)
def test_report_in_a_real_browser(smoke_run, browser, width):
    work, _ = smoke_run
    page = work / "results/report/index.html"
    shots = work / "results/report/screenshots"
    found = inspect(browser, page, width, shots)
    assert found["innerWidth"] == width
    assert found["images"] > 0 and found["broken"] == [], f"images that did not decode: {found['broken']}"
    assert len(found["toc"]) > 10 and found["unresolved"] == [], f"contents links without a target: {found['unresolved']}"
    # nothing wider than the window outside a box that scrolls on its own
    assert found["scrollWidth"] <= width and found["wide"] == [], found["wide"]
    claims = store.read_table(work / "results/claims.csv")
    expected = sorted([f"{c.experiment}/{c.claim_id}", c.verdict] for c in claims.itertuples())
    assert sorted(found["badges"]) == expected  # one badge per claim, its verdict the one in claims.csv
    assert (shots / f"overview-{width}px.png").stat().st_size > 10_000
    print(f"screenshots: {shots}")
