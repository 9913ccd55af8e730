import pandas as pd

from trainfail import report, stats


def test_caption_rst_marks_become_html():
    html = report.caption_html("**Claim:** a *small* batch\nis ``noisy``.\n\nSecond <para>.")
    assert html == "<p><b>Claim:</b> a <i>small</i> batch is <code>noisy</code>.</p><p>Second &lt;para&gt;.</p>"


def test_claims_table_escapes_and_marks_verdicts():
    claims = pd.DataFrame([stats.claim("batch_path", "c1", "a < b & c", "m", 1.0, 0.5, 1.5, 3, "reproduced"),
                           stats.claim("batch_path", "c2", "s", "m", float("nan"), float("nan"), float("nan"), 1,
                                       "inconclusive")])
    html = report.claims_table(claims)
    assert "a &lt; b &amp; c" in html and "class='reproduced'" in html and "class='inconclusive'" in html
    assert "[0.5, 1.5]" in html and "[–, –]" in html
