"""The lecture mode (trainfail.pipeline.slides): one slide per lecture section, its headline figure
embedded, the lecture's claim as title and our finding, with its number, as footer; the keyboard
steps through every slide in a real browser (skipped without one, as tests/test_browser.py is).
Screenshots of a slide at 1400 and 400 px: <smoke copy>/results/report/screenshots/slide-<w>px.png.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from trainfail import experiments
from trainfail.analysis import plots
from trainfail.core import contract
from trainfail.pipeline import report, slides

from .browser import WIDTHS, set_width
from . import test_browser


def _claims(**over) -> pd.DataFrame:
    row = dict(experiment="momentum", claim_id="momentum_lower_training_loss", kind="test", role="primary",
               statement="Momentum reaches a lower training loss than SGD", metric="loss(SGD) - loss(momentum)",
               value=0.0636, ci_low=-0.019, ci_high=0.146, ci_low_adjusted=-0.031, ci_high_adjusted=0.158,
               level_adjusted=0.975, n=5, verdict_unadjusted="inconclusive", verdict="inconclusive")
    row.update(over)
    other = dict(row, claim_id="secondary", role="secondary", statement="another", value=9.0)
    return pd.DataFrame([other, row])


def test_footer_gives_the_primary_with_its_verdict_value_and_interval():
    text = slides.footer(contract.MOMENTUM, _claims(), ["momentum"])
    assert "Momentum reaches a lower training loss than SGD" in text and "another" not in text
    # the finding's sentence (analysis.findings), with the adjusted interval and the level it was read at
    assert "inconclusive" in text and "0.064" in text
    assert "-0.031 to 0.16" in text and "97.5% interval" in text
    assert "reproduced" in slides.footer(contract.MOMENTUM, _claims(verdict="reproduced"), ["momentum"])


def test_footer_without_a_test_claim_gives_the_first_claim_or_says_none():
    demos = _claims(kind="demonstration", role="", verdict="reproduced").assign(kind="demonstration", role="")
    assert "another" in slides.footer(contract.MOMENTUM, demos, ["momentum"])  # the first claim, a demonstration
    assert "No claim" in slides.footer(contract.MOMENTUM, _claims().iloc[:0], ["momentum"])


def test_slide_mode_draws_large_text_on_a_slide_sized_figure(tmp_path):
    """In slide mode a figure is SLIDE_SIZE, its footnote dropped and every text at SLIDE_FONT or more."""
    with plots.slide_mode():
        fig, axes = plots.figure(ncols=3, width=3.0)
        axes[0][0].plot([0, 1], [0, 1], label="a")
        axes[0][0].legend(fontsize=6)
        axes[0][0].set_title("small", fontsize=7)
        plots.finish(fig, note="a footnote")
        fig.canvas.draw()
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text"))
             if t.get_visible() and t.get_text().strip()]
    assert texts and min(t.get_fontsize() for t in texts) >= plots.SLIDE_FONT
    assert "a footnote" not in [t.get_text() for t in texts]
    assert tuple(fig.get_size_inches()) == pytest.approx(plots.SLIDE_SIZE)
    plots._pyplot().close(fig)
    fig, _ = plots.figure(width=3.0)  # and out of it, figures are as before
    assert tuple(fig.get_size_inches()) == pytest.approx((3.0, 3.6))
    plots._pyplot().close(fig)


def _sections(work) -> list[contract.Section]:
    claims = pd.read_csv(work / "results/claims.csv")
    enabled = [e for e in experiments.MODULES if e in set(claims["experiment"])]
    return [s for s, _ in report.sections_of(enabled)]


@pytest.mark.e2e
def test_slides_one_per_section_with_figure_and_finding(smoke_run):
    work, proc = smoke_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (work / "results/report/slides.html").read_text()
    found = re.findall(r"<section class='slide' id='slide-(\d+)' data-section='([\d.]+)'>(.*?)</section>", page, re.S)
    sections = _sections(work)
    assert [s for _, s, _ in found] == [s.number for s in sections]  # one slide per section, in the lecture's order
    for (_, _, body), section in zip(found, sections):
        assert html_unescape(section.claim) in html_unescape(body)  # the lecture's claim as title
        assert "src='data:image/png;base64," in body, f"slide {section} has no embedded figure"
        finding = re.search(r"<footer>(.*)</footer>", body, re.S).group(1)
        assert re.search(r"\d\.\d", finding), f"slide {section}'s footer gives no number: {finding}"
    assert "http://" not in page and "https://" not in page  # offline: nothing to fetch


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


browser = test_browser.browser  # the fixture: headless Chromium, or skipped without it

_STATE = """
const s = document.querySelector('.slide.current'), img = s && s.querySelector('img');
const r = s ? s.getBoundingClientRect() : null;
return {id: s ? s.id : null, shown: document.querySelectorAll('.slide.current').length,
        total: document.querySelectorAll('.slide').length, hash: location.hash,
        image: !!img && img.complete && img.naturalWidth > 0,
        inside: !!r && r.left >= -1 && r.top >= -1 && r.right <= innerWidth + 1 && r.bottom <= innerHeight + 1};
"""


@pytest.mark.e2e
@pytest.mark.parametrize("width", WIDTHS)
def test_slides_step_through_with_the_keyboard(smoke_run, browser, width):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    work, _ = smoke_run
    page = work / "results/report/slides.html"
    set_width(browser, width, height=round(width * 9 / 16))
    browser.get(page.resolve().as_uri())
    state = browser.execute_script(_STATE)
    total = state["total"]
    assert total == len(_sections(work)) and state["id"] == "slide-1" and state["shown"] == 1
    for k in range(2, total + 1):  # the right arrow shows every slide in turn, its figure decoded, within the window
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
        state = browser.execute_script(_STATE)
        assert state["id"] == f"slide-{k}" and state["shown"] == 1 and state["hash"] == f"#{k}"
        assert state["image"], f"slide {k}'s figure did not decode"
        assert state["inside"], f"slide {k} does not fit the {width} px window"
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()  # past the last: stays
    assert browser.execute_script(_STATE)["id"] == f"slide-{total}"
    ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
    assert browser.execute_script(_STATE)["id"] == f"slide-{total - 1}"
    ActionChains(browser).send_keys(Keys.HOME).perform()
    assert browser.execute_script(_STATE)["id"] == "slide-1"
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    shots = work / "results/report/screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / f"slide-{width}px.png"))
    assert (shots / f"slide-{width}px.png").stat().st_size > 10_000
    print(f"screenshots: {shots}")
