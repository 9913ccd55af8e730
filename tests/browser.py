"""The report as a reader sees it: opened in headless Chromium (Selenium, the system's driver).

`inspect(driver, page, width, shots)` loads the page at a window width and reads back what a test
asserts: images that did not decode, table-of-contents anchors without a target, elements wider
than the window outside a scroll box, the verdict badges; and saves screenshots of the top of the
page (the overview) and of the whole page. `open_card` clicks a badge and reads its claim card
(screenshot card-<width>px.png), `jump_to_row` loads the page at its deepest claim row and reads
whether the row and its table's headings are on screen, `sideways` lists tables that scroll sideways. Also a script, for screenshots of any results tree:

    python -m tests.browser results/report/index.html      # -> results/report/screenshots/
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

WIDTHS = (1400, 400)


def chromium() -> tuple[str, str] | None:
    """The Chromium binary and its driver, or None where they are not installed."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def open_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def set_width(driver, width: int, height: int = 900) -> None:
    """The viewport exactly `width` CSS pixels wide (a window has a minimum width of its own)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


# Run in the page: what the checks need, in one round trip.
_PROBE = """
const inScrollBox = el => { for (let p = el.parentElement; p; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
const W = window.innerWidth;
const wide = [];
for (const el of document.body.querySelectorAll('*')) {
  if (el.id === 'to-top' || inScrollBox(el)) continue;
  const r = el.getBoundingClientRect();
  if (r.width > 0 && (r.right > W + 1 || r.left < -1)) wide.push(el.tagName + (el.id ? '#' + el.id : '') + '.' + el.className + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
}
return {
  innerWidth: W,
  scrollWidth: document.scrollingElement.scrollWidth,
  images: document.images.length,
  broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
  toc: Array.from(document.querySelectorAll('nav.toc a')).map(a => a.getAttribute('href')),
  unresolved: Array.from(document.querySelectorAll('nav.toc a')).map(a => a.getAttribute('href'))
                   .filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1))),
  wide: wide.slice(0, 20),
  badges: Array.from(document.querySelectorAll('.overview .badge')).map(b => [b.dataset.claim, b.dataset.verdict]),
};
"""


def inspect(driver, page: Path, width: int, shots: Path | None = None) -> dict:
    set_width(driver, width)
    driver.get(page.resolve().as_uri())
    driver.execute_script("return document.fonts.ready")
    found = driver.execute_script(_PROBE)
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / f"overview-{width}px.png"))
        full = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "format": "png",
                                                                 "clip": _whole_page(driver)})
        import base64

        (shots / f"page-{width}px.png").write_bytes(base64.b64decode(full["data"]))
    return found


# Run in the page: the first overview badge whose card lists runs (a test claim with seeds), its id.
_CARD_BADGE = """
for (const b of document.querySelectorAll('.overview .badge')) {
  const card = document.getElementById(b.getAttribute('href').slice(1));
  if (card && card.querySelector('.runs a')) { b.id = b.id || 'probe-badge'; return b.id; }
}
return null;
"""

_CARD = """
const card = document.querySelector('.claim-card:target');
if (!card) return null;
const r = card.firstElementChild.getBoundingClientRect();
return {id: card.id, display: getComputedStyle(card).display, height: r.height, top: r.top,
        svg: card.querySelectorAll('svg circle').length, command: (card.querySelector('pre') || {}).textContent,
        links: Array.from(card.querySelectorAll('.runs a')).map(a => a.href)};
"""


def open_card(driver, page: Path, width: int, shots: Path | None = None) -> dict | None:
    """Click the first overview badge whose claim has runs; what its card shows (None: no such badge)."""
    from selenium.webdriver.common.by import By

    set_width(driver, width)
    driver.get(page.resolve().as_uri())
    badge = driver.execute_script(_CARD_BADGE)
    if badge is None:
        return None
    element = driver.find_element(By.ID, badge)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()
    found = driver.execute_script(_CARD)
    if shots is not None and found:
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / f"card-{width}px.png"))
    return found


# Run in the page (arguments[0]: a row's id): is the row on screen, and its table's column headings?
_HEADING = """
const row = document.getElementById(arguments[0]);
const th = row.closest('table').tHead.rows[0].cells[0];
const r = row.getBoundingClientRect(), h = th.getBoundingClientRect();
const hit = document.elementFromPoint(h.left + h.width / 2, h.top + h.height / 2);
return {row: [r.top, r.bottom], heading: [h.top, h.bottom], headingOnTop: !!hit && th.contains(hit),
        targetBackground: getComputedStyle(row.cells[0]).backgroundColor, innerHeight: window.innerHeight};
"""


def deepest_row(driver) -> str:
    """The id of the last row of the longest claims table (with row anchors) on the page."""
    return driver.execute_script("""
      let best = null;
      for (const t of document.querySelectorAll('table.claims')) {
        const rows = Array.from(t.tBodies[0].rows).filter(r => r.id);
        if (rows.length && (!best || rows.length > best.length)) best = rows;
      }
      return best ? best[best.length - 1].id : null;""")


def jump_to_row(driver, page: Path, width: int) -> dict:
    """Load the page at `#<the deepest claim row>` (as a link to it would) and read what is on screen."""
    set_width(driver, width)
    driver.get(page.resolve().as_uri())
    rid = deepest_row(driver)
    driver.get(page.resolve().as_uri() + "#" + rid)
    return {"id": rid, **driver.execute_script(_HEADING, rid)}


def sideways(driver, page: Path, width: int) -> list[str]:
    """Tables (every <details> opened) that need sideways scrolling at this width: their captions."""
    set_width(driver, width)
    driver.get(page.resolve().as_uri())
    return driver.execute_script("""
      document.querySelectorAll('details').forEach(d => d.open = true);
      return Array.from(document.querySelectorAll('.scroll')).filter(e => e.scrollWidth > e.clientWidth + 1)
        .map(e => { const t = e.querySelector('table'); return (t && t.caption ? t.caption.textContent : e.id || '?')
                    + ': ' + e.scrollWidth + ' px in ' + e.clientWidth; });""")


def _whole_page(driver) -> dict:
    size = driver.execute_script("return [document.scrollingElement.scrollWidth, document.scrollingElement.scrollHeight]")
    # a 20,000 px tall capture is a few MB: enough to see the layout of the whole page
    return {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 20000), "scale": 1}


def main(page: str) -> None:
    page_path = Path(page)
    shots = page_path.parent / "screenshots"
    driver = open_browser()
    try:
        for width in WIDTHS:
            found = inspect(driver, page_path, width, shots)
            print(width, {k: v for k, v in found.items() if k not in ("toc", "badges")}, len(found["badges"]), "badges")
            card = open_card(driver, page_path, width, shots)
            print(width, "card:", card and {k: v for k, v in card.items() if k != "links"}, card and len(card["links"]), "run links")
            print(width, "deep row:", jump_to_row(driver, page_path, width))
            print(width, "tables scrolling sideways:", sideways(driver, page_path, width))
    finally:
        driver.quit()
    print(f"screenshots: {shots}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/report/index.html")
