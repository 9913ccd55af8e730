"""The smoke report opened in headless Chromium, as a reader would, at a desktop and a phone width.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them) and selenium (the test
extra). Without them the test is skipped with the reason, unless TRAINFAIL_REQUIRE_BROWSER=1 (CI),
where a missing browser fails. Screenshots (the overview, a claim card, the whole page, at each
width): <smoke copy>/results/report/screenshots/.
"""

import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from trainfail.core import store

from .browser import WIDTHS, chromium, inspect, jump_to_row, open_browser, open_card, sideways

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


@pytest.mark.parametrize("width", WIDTHS)
def test_a_badge_opens_its_claim_card(smoke_run, browser, width):
    """A click on a badge shows the claim's card: a strip plot, and links to its runs' files."""
    work, _ = smoke_run
    shots = work / "results/report/screenshots"
    card = open_card(browser, work / "results/report/index.html", width, shots)
    assert card is not None, "no overview badge opens a card that lists runs"
    assert card["display"] == "block" and card["height"] > 100 and card["top"] < 900  # shown, on screen
    assert card["svg"] >= 1 and card["command"].startswith(("rm -r ", "snakemake"))
    runs = (work / "results/runs").resolve()
    assert card["links"]
    for link in card["links"]:  # file:// URLs the browser resolved from the report's folder
        path = Path(unquote(urlparse(link).path)).resolve()
        assert path.is_relative_to(runs) and path.is_file(), link
    assert (shots / f"card-{width}px.png").stat().st_size > 10_000


@pytest.mark.parametrize("width", WIDTHS)
def test_a_jump_to_a_deep_row_keeps_the_headings_and_highlights_it(smoke_run, browser, width):
    work, _ = smoke_run
    found = jump_to_row(browser, work / "results/report/index.html", width)
    top, bottom = found["heading"]
    assert found["headingOnTop"] and -1 <= top and bottom < found["innerHeight"], found  # the headings on screen
    assert bottom - 1 <= found["row"][0] < found["innerHeight"], found  # the row below them, on screen
    assert found["targetBackground"] not in ("rgba(0, 0, 0, 0)", "transparent"), found  # highlighted


def test_no_table_scrolls_sideways_at_1400_px(smoke_run, browser):
    work, _ = smoke_run
    assert sideways(browser, work / "results/report/index.html", 1400) == []
