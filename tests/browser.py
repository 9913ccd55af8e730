"""The report as a reader sees it: opened in headless Chromium (Selenium, the system's driver).

`inspect(driver, page, width, shots)` loads the page at a window width and reads back what a test
asserts: images that did not decode, table-of-contents anchors without a target, elements wider
than the window outside a scroll box, the verdict badges; and saves screenshots of the top of the
page (the overview) and of the whole page. Also a script, for screenshots of any results tree:

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
    finally:
        driver.quit()
    print(f"screenshots: {shots}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/report/index.html")
