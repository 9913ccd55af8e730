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


# --- claim cards --------------------------------------------------------------------------------------

def _runs_table():
    """An experiment's table: one row per run, two arms sharing seeds 0-2, and a run of seed 9."""
    rows = [{"run_id": f"{arm}{seed}", "seed": seed, "arm": arm, "acc": 0.5 + 0.1 * seed + (0.2 if arm == "a" else 0)}
            for arm in ("a", "b") for seed in (0, 1, 2)]
    return pd.DataFrame(rows + [{"run_id": "c9", "seed": 9, "arm": "c", "acc": 0.1}])


def _hand_claims(table):
    arm = lambda name: table[table["arm"] == name].sort_values("seed")["acc"]
    by_seed = table[table["arm"] != "c"].groupby("seed")["acc"].mean()
    return [stats.claim("x", "rows", "a beats b", "acc", stats.paired(arm("a"), arm("b")), kind="test"),
            stats.claim("x", "seeds", "per seed", "acc", stats.mean(by_seed), kind="test"),
            stats.claim("x", "lists", "from numbers", "acc", stats.mean(list(arm("a"))), kind="test")]


def _records(table):
    from types import SimpleNamespace

    return [SimpleNamespace(run_id=r["run_id"], settings={"seed": r["seed"]}, meta={}, labels={"arm": r["arm"]})
            for r in table.to_dict("records")]


def test_claim_runs_are_traced_through_the_estimators():
    from trainfail.pipeline import claim_runs

    table = _runs_table()
    claims = pd.DataFrame(_hand_claims(table), columns=stats.CLAIM_COLUMNS)
    out = claim_runs.add_runs(claims, _hand_claims, table, _records(table)).set_index("claim_id")
    runs = {cid: claim_runs.runs_of(out.loc[cid].to_dict() | {"claim_id": cid}) for cid in out.index}
    # the rows its estimate read, each naming its run
    assert runs["rows"] == ([(0, "a0"), (0, "b0"), (1, "a1"), (1, "b1"), (2, "a2"), (2, "b2")], "rows")
    # a per-seed series: the experiment's runs of those seeds (not c9)
    assert runs["seeds"][1] == "seeds" and {r for _, r in runs["seeds"][0]} == {"a0", "a1", "a2", "b0", "b1", "b2"}
    # plain numbers name no rows: every run of the experiment, said so
    assert runs["lists"][1] == "experiment" and len(runs["lists"][0]) == 7
    # the claims themselves are unchanged, and the estimators are themselves again
    assert list(out["value"]) == list(claims["value"]) and stats.paired.__name__ == "paired"


def test_a_trace_that_disagrees_with_the_claims_is_dropped():
    from trainfail.pipeline import claim_runs

    table = _runs_table()
    claims = pd.DataFrame(_hand_claims(table), columns=stats.CLAIM_COLUMNS)
    assert claim_runs.trace(lambda t: _hand_claims(t)[::-1], table, claims) is None  # another order
    assert claim_runs.trace(lambda t: t.loc[0], table, claims) is None  # reads its index by position: fails


def _card_claim(**extra):
    table = _runs_table()
    from trainfail.pipeline import claim_runs

    claims = pd.DataFrame(_hand_claims(table), columns=stats.CLAIM_COLUMNS)
    claims = claim_runs.add_runs(claims, _hand_claims, table, _records(table))
    claims = stats.family_adjust(stats.assign_roles(claims, "rows", "1.2"))
    return claims.iloc[0].to_dict() | extra


def test_a_claim_card_has_the_verdict_its_level_a_strip_plot_the_runs_and_the_command(tmp_path):
    c = _card_claim(paper_value="14x")
    card = report.claim_card(c, {"preset": "smoke"}, tmp_path)
    assert f"id='{report.card_anchor(c)}'" in card and report.verdict_words(c) in card
    assert f"{100 * c['level_adjusted']:.4g}%" in card and "Holm" in card and "14x" in card
    assert card.count("<circle") == 3 + 1  # three seeds' differences and the value
    for rid in ("a0", "b2"):
        assert f"href='../runs/{rid}/meta.json'" in card and f"href='../runs/{rid}/metrics.csv'" in card
    assert "rm -r results/runs/{a0,a1,a2,b0,b1,b2} &amp;&amp; snakemake --configfile presets/smoke.yaml" in card
    # a badge opens it
    assert f"href='#{report.card_anchor(c)}'" in report.badge(c)


def test_strip_plot_draws_the_threshold_or_the_margin():
    c = _card_claim()
    svg = report.strip_svg(c)
    assert svg.startswith("<svg") and "threshold 0<" in svg and "stroke='#b00'" in svg and "<rect" not in svg
    within = report.strip_svg(c | {"direction": "within", "threshold": 0.02})
    assert "<rect" in within and "stroke='#b00'" not in within  # a band, no threshold line
    assert "Nothing measured" in report.strip_svg(c | {"value": float("nan"), "ci_low_adjusted": float("nan"),
                                                        "ci_high_adjusted": float("nan"), "estimate": "{}"})


def test_retrain_commands():
    c = {"experiment": "momentum", "claim_id": "x"}
    assert report.retrain_command({"preset": "quick"}, c, [(0, "r1")], "rows") == "rm -r results/runs/r1 && snakemake"
    assert report.retrain_command({"preset": "full+papers"}, c, [(0, "r1"), (1, "r2")], "seeds") == (
        "rm -r results/runs/{r1,r2} && snakemake --configfile presets/full.yaml presets/papers.yaml")
    assert report.retrain_command({"preset": "smoke"}, c, [(0, "r1")], "experiment") == (
        "rm -r $(python -m trainfail plan --configfile config.yaml --configfile presets/smoke.yaml --run-dirs momentum)"
        " && snakemake --configfile presets/smoke.yaml")
    assert report.retrain_command({"preset": "quick"}, c, [], "none") == "snakemake --forcerun analyze_momentum"


def test_verdicts_table_puts_primaries_first_with_the_family_wise_verdicts():
    claims = _claims()
    table = report.verdicts_table(claims)
    assert list(table["role"][:2]) == ["primary", "primary"] and len(table) == len(claims)
    assert list(table["kind"]).index("check") > max(i for i, k in enumerate(table["kind"]) if k == "test")
    by_id = claims.set_index("claim_id")
    for row in table.to_dict("records"):
        assert row["verdict"] == report.verdict_words(by_id.loc[row["claim_id"]].to_dict())


def test_thumbnails_are_downscaled_and_figures_palette_encoded(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    import io

    fig, ax = plt.subplots(figsize=(10, 5), dpi=150)
    ax.plot(range(100), [x ** 0.5 for x in range(100)])
    png = tmp_path / "f.png"
    fig.savefig(png)
    plt.close(fig)
    thumb = report._png_bytes(png, report.THUMB_WIDTH)
    assert Image.open(io.BytesIO(thumb)).width == report.THUMB_WIDTH and len(thumb) < png.stat().st_size / 3
    full = report._png_bytes(png)
    assert Image.open(io.BytesIO(full)).size == Image.open(png).size and len(full) <= png.stat().st_size
