import pandas as pd

from trainfail import report, stats


def test_captions_render_with_docutils_and_escape_html():
    html = report.caption_html("**Claim:** a *small* batch\nis ``noisy``.\n\nSecond <para>.")
    assert "<strong>Claim:</strong>" in html and "<em>small</em>" in html and "noisy" in html
    assert "&lt;para&gt;" in html and "<para>" not in html


def _claims():
    return stats.family_adjust(pd.DataFrame([
        stats.claim("batch_path", "c1", "a < b & c", "m", stats.mean([1.0, 1.1, 0.9]), kind="test"),
        stats.claim("batch_path", "c2", "s", "m", stats.missing(), kind="test"),
        stats.claim("batch_path", "c3", "s", "m", stats.exact(1.0), kind="check")]))


def test_claims_table_escapes_and_marks_verdicts():
    html = report.claims_table(_claims())
    assert "a &lt; b &amp; c" in html and "class='reproduced'" in html and "class='inconclusive'" in html
    assert "[–, –]" in html and "&gt; 0" in html


def test_tally_counts_tests_only_and_states_the_family():
    text = report.verdict_summary(_claims())
    assert "<b>1</b> reproduced, <b>0</b> not reproduced, <b>1</b> inconclusive of 2" in text
    assert "m = 2" in text and "Bonferroni" in text and "97.5%" in text and "Checks and demonstrations (1)" in text
