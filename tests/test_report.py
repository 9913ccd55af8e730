import re

import pandas as pd

from trainfail.analysis import stats, textables
from trainfail.pipeline import report


def test_captions_render_with_docutils_and_escape_html():
    html = report.caption_html("**Claim:** a *small* batch\nis ``noisy``.\n\nSecond <para>.")
    assert "<strong>Claim:</strong>" in html and "<em>small</em>" in html and "noisy" in html
    assert "&lt;para&gt;" in html and "<para>" not in html


def _claims():
    rows = pd.DataFrame([
        stats.claim("batch_path", "c1", "a < b & c", "m", stats.mean([1.0, 1.1, 0.9]), kind="test"),
        stats.claim("batch_path", "c2", "s", "m", stats.missing(), kind="test"),
        stats.claim("batch_path", "c3", "s", "m", stats.exact(1.0), kind="check"),
        stats.claim("momentum", "c4", "two seeds", "steps", stats.mean([10.0, 40.0]), kind="test", min_n=2),
        stats.claim("momentum", "c5", "close", "m", stats.mean([0.001, -0.002, 0.0015, 0.0]), 0.02, "within",
                    kind="test")])
    rows = pd.concat([stats.assign_roles(rows[rows["experiment"] == "batch_path"], "c1", "1.2"),
                      stats.assign_roles(rows[rows["experiment"] == "momentum"], "c4", "1.3")], ignore_index=True)
    return stats.family_adjust(rows)


def test_claims_table_escapes_and_marks_verdicts():
    html = report.claims_table(_claims())
    assert "a &lt; b &amp; c" in html and "class='reproduced'" in html and "class='inconclusive'" in html
    assert "[–, –]" in html and "&gt; 0" in html
    assert "c1" in html and "<div class='scroll'>" in html  # a wide table scrolls in its own box


def test_two_seed_t_interval_shows_the_values_instead():
    """n = 2: a t-interval 12.7 standard errors wide (below zero for step counts) says nothing."""
    c = _claims().set_index("claim_id").loc["c4"].to_dict() | {"claim_id": "c4"}
    assert c["ci_low"] < 0  # the interval the report must not show
    assert report.interval_text(c) == "values 10, 40"
    three = _claims().set_index("claim_id").loc["c1"].to_dict() | {"claim_id": "c1"}
    assert report.interval_text(three).startswith("[") and "values" not in report.interval_text(three)


def test_badges_carry_the_verdict_and_the_interval_read():
    claims = _claims()
    c1 = claims[claims["claim_id"] == "c1"].iloc[0].to_dict()
    b = report.badge(c1)
    assert "data-claim='batch_path/c1'" in b and f"data-verdict='{c1['verdict']}'" in b
    # an applicable test is read at the family-wise level: its badge shows that interval
    assert f"{c1['ci_low_adjusted']:.4g}" in b and "a &lt; b &amp; c" in b
    # where a paper gives a number, the badge shows ours beside it
    assert "(paper: 14x)" in report.badge(c1 | {"paper_value": "14x"}) and "paper:" not in b


def test_tally_counts_primaries_then_every_applicable_test():
    text = report.tally(_claims())
    primaries, tests = text.split("All tests:")
    assert re.search(r"<b>1</b> reproduced.*<b>0</b> not reproduced.*<b>1</b> inconclusive</span> of 2", primaries)
    assert re.search(r"<b>1</b> reproduced.*<b>1</b> equivalent.*<b>2</b> inconclusive</span> of 4", tests)


def test_how_to_read_states_the_families():
    text = report.how_to_read(_claims())
    assert "the primaries (m = 2)" in text and "section 1.3 (1)" in text and "Holm" in text


def test_an_equivalence_reads_with_its_margin_and_an_undecided_test_says_what_would_decide_it():
    claims = _claims().set_index("claim_id")
    assert report.verdict_words(claims.loc["c5"].to_dict()) == "equivalent within ±0.02"
    undecided = report.undecided_text(claims.loc["c4"].to_dict())
    assert "unadjusted (95%)" in undecided and "seeds to decide the effect measured" in undecided


def test_latex_tables_escape_every_special_character():
    tex = textables.latex_table(pd.DataFrame({"net_1": ["1 ± 2", "a&b"], "x": ["50%", "$y"]}))
    assert r"net\_1 & x \\" in tex and r"1 $\pm$ 2 & 50\% \\" in tex and r"a\&b & \$y \\" in tex
    assert tex.startswith(r"\begin{tabular}{ll}") and r"\bottomrule" in tex


def test_console_summary_names_the_report_and_counts(tmp_path):
    csv = tmp_path / "claims.csv"
    _claims().to_csv(csv, index=False)
    text = report.console_summary(csv, tmp_path / "report/index.html")
    assert str(tmp_path / "report/index.html") in text
    assert "primary claims: 1 reproduced, 1 inconclusive (of 2" in text
    assert "all test claims: 1 reproduced, 1 equivalent, 2 inconclusive (of 4" in text and "1 checks" in text
