"""Findings in words (trainfail.analysis.findings): sentences that follow the numbers whichever way
they come out, name the numbers they rest on, and give every figure a caption that is not its name."""

import re

import pandas as pd
import pytest

from trainfail.analysis import findings, stats
from trainfail.core import contract
from trainfail.pipeline import report


def row(**kw) -> dict:
    """A hand-made claim row (claims.csv's columns); an applicable test read at its family's level."""
    base = {"experiment": "momentum", "claim_id": "c", "kind": "test", "applicable": True, "role": "secondary",
            "statement": "momentum reaches a lower training loss than SGD", "metric": "loss(SGD) - loss(momentum)",
            "direction": ">", "threshold": 0.0, "margin": float("nan"), "value": 0.3, "ci_low": 0.25, "ci_high": 0.35,
            "ci_low_adjusted": 0.22, "ci_high_adjusted": 0.38, "level_adjusted": 0.99, "n": 5, "min_n": 2,
            "verdict_unadjusted": "reproduced", "verdict": "reproduced"}
    return {**base, **kw}


CASES = {  # name: (row, words the sentence must say)
    "reproduced": (row(), "reproduced, 0.30 (interval 0.22 to 0.38), above 0"),
    "reproduced below": (row(direction="<", threshold=0.5, value=0.1, ci_low_adjusted=0.05, ci_high_adjusted=0.15),
                         "reproduced, 0.10 (interval 0.050 to 0.15), below 0.5"),
    "not reproduced": (row(threshold=0.8, value=0.18, ci_low_adjusted=0.072, ci_high_adjusted=0.37,
                           verdict="not_reproduced", verdict_unadjusted="not_reproduced"),
                       "not reproduced, 0.18 (interval 0.072 to 0.37), below the claimed 0.8"),
    "equivalent within": (row(direction="within", threshold=0.15, value=0.013, ci_low_adjusted=-0.042,
                              ci_high_adjusted=0.067, verdict="equivalent", verdict_unadjusted="equivalent"),
                          "equivalent as claimed, 0.013 (interval -0.042 to 0.067), within ±0.15"),
    "equivalent by margin": (row(margin=0.02, value=-0.000117, ci_low_adjusted=-0.0091, ci_high_adjusted=0.0089,
                                 verdict="equivalent", verdict_unadjusted="equivalent"),
                             "no difference beyond ±0.02, -0.00012 (interval -0.0091 to 0.0089)"),
    "not equivalent": (row(direction="within", threshold=0.02, value=0.14, ci_low_adjusted=0.033, ci_high_adjusted=0.24,
                           verdict="not_equivalent", verdict_unadjusted="not_equivalent"),
                       "not equivalent, 0.14 (interval 0.033 to 0.24), beyond ±0.02"),
    "inconclusive": (row(value=0.064, ci_low_adjusted=-0.065, ci_high_adjusted=0.19, verdict="inconclusive",
                         verdict_unadjusted="inconclusive"),
                     "inconclusive, 0.064 (interval -0.065 to 0.19) on both sides of 0"),
    "inconclusive after adjustment": (row(value=0.11, ci_low=0.01, ci_high=0.21, ci_low_adjusted=-0.045,
                                          ci_high_adjusted=0.27, verdict="inconclusive"),
                                      "inconclusive, 0.11 (interval -0.045 to 0.27) on both sides of 0 "
                                      "(at 95% alone: reproduced)"),
    "too few seeds": (row(n=1, min_n=2, value=0.4, ci_low_adjusted=float("nan"), ci_high_adjusted=float("nan"),
                          ci_low=float("nan"), ci_high=float("nan"), verdict="inconclusive",
                          verdict_unadjusted="inconclusive"),
                      "inconclusive, 0.40: too few samples (1, needs 2)"),
    "not applicable": (row(applicable=False, value=5.7, ci_low=4.9, ci_high=6.4, verdict="inconclusive"),
                       "not applicable here, 5.7 (interval 4.9 to 6.4)"),
    "demonstration": (row(kind="demonstration", role=None, value=2.6, ci_low=2.5, ci_high=2.7, threshold=2.0,
                          metric="log10(cond(raw) / cond(standardized))"),
                      "(a demonstration) — reproduced, 2.6 in log10 (interval 2.5 to 2.7), above 2"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_sentence_for_each_verdict_says_it_with_its_numbers(case):
    c, words = CASES[case]
    text = findings.sentence(c)
    assert text.startswith(c["statement"]) and text.endswith(".")
    assert words in text, text


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_finding_names_the_numbers_it_rests_on(case):
    c, _ = CASES[case]
    text = findings.sentence(c)
    lo, hi = findings.interval(c)
    assert findings.num(c["value"]) in text
    for bound in (lo, hi):
        if bound == bound and lo != hi:
            assert findings.num(bound) in text
    if findings.verdict(c) in ("reproduced", "not_reproduced") and findings._applicable(c):
        assert findings.constant(c["threshold"]) in text
    if findings.verdict(c) in ("equivalent", "not_equivalent"):
        assert "±" + findings.constant(findings.margin(c)) in text


def test_the_verdict_said_is_the_adjusted_one_and_the_sentence_follows_the_numbers():
    up, down = row(), row(value=-0.3, ci_low_adjusted=-0.38, ci_high_adjusted=-0.22, verdict="not_reproduced",
                          verdict_unadjusted="not_reproduced")
    assert "— reproduced, 0.30" in findings.sentence(up)
    assert "— not reproduced, -0.30 (interval -0.38 to -0.22), below the claimed 0" in findings.sentence(down)
    # decided at 95% alone, undecided family-wise: the sentence says inconclusive
    text = findings.sentence(CASES["inconclusive after adjustment"][0])
    assert "— inconclusive" in text and "— reproduced" not in text


def test_the_sentences_of_real_claim_rows():
    rows = pd.DataFrame([
        stats.claim("momentum", "lower", "momentum trains faster", "d", stats.mean([0.3, 0.32, 0.29, 0.31]), kind="test"),
        stats.claim("momentum", "equal", "the arms agree", "d", stats.mean([0.001, -0.002, 0.0015, 0.0]), 0.02,
                    "within", kind="test")])
    rows = stats.family_adjust(stats.assign_roles(rows, "lower", "1.3"))
    for c in rows.to_dict("records"):
        text = findings.sentence(c)
        assert findings.num(c["value"]) in text and c["verdict"].replace("_", " ") in text or \
            c["verdict"] == "equivalent" and "equivalent as claimed" in text, text


def test_an_experiment_phrase_says_what_a_verdict_means():
    phrases = {"*_equal_updates": {"equivalent": "the update count explains it",
                                   "reproduced": "more than the update count is at work"}}
    eq = row(claim_id="gap_equal_updates", **{k: v for k, v in CASES["equivalent by margin"][0].items()
                                              if k not in ("claim_id",)})
    assert findings.sentence(eq, phrases).endswith(": the update count explains it.")
    assert findings.sentence({**eq, "verdict": "reproduced"}, phrases).endswith(": more than the update count is at work.")
    assert "explains" not in findings.sentence({**eq, "verdict": "inconclusive"}, phrases)
    assert "explains" not in findings.sentence({**eq, "claim_id": "other"}, phrases)


def test_a_section_leads_with_its_applicable_primary_and_counts_the_rest():
    claims = pd.DataFrame([
        row(experiment="batch_timing", claim_id="parallel", role="primary", applicable=False, statement="timing"),
        row(experiment="batch_accuracy", claim_id="tuned", statement="tuned gap"),
        row(experiment="batch_accuracy", claim_id="equal", role="primary", statement="equal gap",
            **{k: v for k, v in CASES["equivalent by margin"][0].items() if k not in ("experiment", "claim_id", "role",
                                                                                      "statement")}),
        row(experiment="batch_accuracy", claim_id="other", statement="other", verdict="inconclusive"),
        row(experiment="batch_path", claim_id="demo", kind="demonstration", role=None, statement="demo")])
    text = findings.section_finding(claims, ["batch_timing", "batch_accuracy", "batch_path"])
    assert text.startswith("equal gap — no difference beyond ±0.02, -0.00012"), text
    assert text.endswith("Its other 2 tests: 1 reproduced and 1 inconclusive.")
    only_demo = findings.section_finding(claims, ["batch_path"])
    assert only_demo.startswith("demo (a demonstration) — reproduced") and "other" not in only_demo
    assert findings.section_finding(claims, ["nothing"]) == "No claims were measured here."


def test_the_claims_that_failed_primaries_first():
    claims = [row(claim_id="a", verdict="not_reproduced"), row(claim_id="b", role="primary", verdict="not_equivalent",
                                                               direction="within", threshold=0.02),
              row(claim_id="c"), row(claim_id="d", applicable=False, verdict="not_reproduced")]
    assert [c["claim_id"] for c in findings.failed(claims)] == ["b", "a"]


def test_a_figure_shows_the_claim_it_names_else_one_sharing_its_words_else_the_lead():
    claims = [row(claim_id="adam_beats_sgd", role="primary"), row(claim_id="warmup_lowers_spike_adam"),
              row(claim_id="condition_number_cut")]
    assert findings.figure_claim("learning_curves", claims)["claim_id"] == "adam_beats_sgd"
    assert findings.figure_claim("warmup_spike", claims)["claim_id"] == "warmup_lowers_spike_adam"
    assert findings.figure_claim("warmup_spike", claims, {"warmup": "condition_*"})["claim_id"] == "condition_number_cut"
    assert findings.figure_claim("momentum", claims)["claim_id"] == "adam_beats_sgd"  # the experiment's own figure
    assert findings.figure_claim("x", claims, {"x": "no_such_claim"})["claim_id"] == "adam_beats_sgd"
    assert findings.figure_claim("x", []) is None


def _png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def test_no_figure_caption_or_alt_text_is_a_file_stem(tmp_path):
    claims = pd.DataFrame([row(claim_id="momentum_lower_training_loss", role="primary"),
                           row(claim_id="momentum_escapes_shallow_minimum", kind="demonstration", role=None,
                               statement="momentum rolls past a shallow minimum", value=1.2, ci_low=1.2, ci_high=1.2)])
    for stem in ("toy_paths", "network_curves", "unmapped_figure"):
        png = _png(tmp_path / "figures" / "momentum" / f"{stem}.png")
        html = report.figure_html(png, claims)
        alt = re.search(r"<img alt='([^']*)'", html).group(1)
        caption = re.search(r"<figcaption>(.*?) \(<a", html).group(1)
        for text in (alt, caption):
            assert text.strip() not in (stem, stem.replace("_", " ")), html
            assert re.search(r"\d", text), text   # it says a number
        assert findings.num(findings.figure_claim(stem, claims, {"toy_paths": "momentum_escapes_*"})["value"]) in caption
    toy = report.figure_html(tmp_path / "figures" / "momentum" / "toy_paths.png", claims)
    assert "momentum rolls past a shallow minimum" in toy        # momentum.FIGURE_CLAIMS
    bare = report.figure_html(_png(tmp_path / "figures" / "momentum" / "lonely.png"), claims.iloc[:0])
    assert re.search(r"<figcaption>(.*?) \(<a", bare).group(1) != "lonely"


def test_findings_markdown_and_the_console_say_the_sections_and_the_failures(tmp_path):
    claims = pd.DataFrame([row(experiment="momentum", claim_id="momentum_lower_training_loss", role="primary"),
                           row(experiment="batch_accuracy", claim_id="gap", role="primary", statement="the gap",
                               verdict="not_reproduced", value=-0.2, ci_low_adjusted=-0.3, ci_high_adjusted=-0.1)])
    text = report.findings_markdown(claims)
    assert text.startswith("# Findings") and f"## {contract.BATCH_SIZE}" in text and f"## {contract.MOMENTUM}" in text
    assert text.index(str(contract.BATCH_SIZE)) < text.index(str(contract.MOMENTUM))   # the lecture's order
    assert "- `batch_accuracy/gap` (primary): the gap — not reproduced, -0.20 (interval -0.30 to -0.10)" in text
    csv = tmp_path / "claims.csv"
    claims.to_csv(csv, index=False)
    console = report.console_summary(csv, tmp_path / "report" / "index.html", tmp_path / "findings.md")
    assert f"{contract.MOMENTUM}: momentum reaches a lower training loss than SGD — reproduced, 0.30" in console
    assert "claims that failed (1): batch_accuracy/gap (primary)" in console
    assert str(tmp_path / "findings.md") in console and str(tmp_path / "report" / "index.html") in console


def test_numbers_read_as_a_sentence_shows_them():
    assert [findings.num(x) for x in (0.3, 0.0647, 1.2178, 79.36, 1437.0, -0.000117, 3.79e-29, 0, None, float("nan"))] \
        == ["0.30", "0.065", "1.2", "79", "1437", "-0.00012", "3.8e-29", "0", "n/a", "n/a"]
    assert [findings.constant(x) for x in (0.02, 166.78, 0.30103, 1e-06)] == ["0.02", "167", "0.301", "1e-06"]


def test_the_contract_names_a_malformed_figure_map_or_phrase_table():
    from types import SimpleNamespace

    from trainfail import experiments

    bad = SimpleNamespace(FIGURE_CLAIMS={"curves": 3}, FINDINGS={"c": "reproduced"})
    text = " ".join(contract.problems(bad, "x"))
    assert "FIGURE_CLAIMS is {'curves': 3}" in text and "FINDINGS is {'c': 'reproduced'}" in text
    for name in experiments.MODULES:  # the real modules' maps are well formed
        assert not [p for p in contract.problems(experiments.get(name), name) if "FIGURE_CLAIMS" in p or "FINDINGS" in p]
