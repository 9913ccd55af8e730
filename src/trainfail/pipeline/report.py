"""The report: one self-contained HTML page a lecturer can teach from and a reviewer can navigate.

Top to bottom: a compact provenance header; a table of contents; "how a verdict is decided"; a
one-screen overview (per lecture section: its headline figure, small, and its claims as verdict
badges with value and interval; the tally of test claims); then one section per lecture section
(the lecture's claim in one sentence, each experiment's caption, figures, tables and claims); the
full claims table (filterable, sortable) behind a disclosure element; the audit; the full
provenance (versions, config).

Figures are inline (PNG as data URIs); links to PDFs, CSVs and LaTeX tables are relative to
results/report/, so a zipped results/ tree keeps working. Every text that reaches the page is
escaped (html.escape) or rendered by docutils with raw HTML off. The page works from 400 px to
1920 px (wide tables scroll inside their own box) and prints as a handout.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
from pathlib import Path

import pandas as pd
import yaml

from trainfail import experiments
from trainfail.analysis import findings, power, stats
from trainfail.core import contract, provenance, store

TITLE = "trainfail: When Training Fails, re-run"
THUMB_WIDTH = 480  # pixels of an overview thumbnail (shown at most 8 em tall)

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;max-width:1300px;margin:0 auto;padding:0 1em 2em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin:0.6em 0 0.2em} h2{margin-top:1.8em;border-bottom:2px solid #ddd;padding-bottom:0.2em}
h3{margin-top:1.6em} h2,h3{scroll-margin-top:0.5em}
a{color:#1a5fb4}
header.provenance{font-size:0.85em;color:#444;display:flex;flex-wrap:wrap;gap:0.2em 1.2em;margin-bottom:0.8em}
header.provenance span{white-space:nowrap}
nav.toc{columns:3 22em;column-gap:1.5em;font-size:0.82em;background:#f7f7f9;padding:0.5em 1em;border-radius:6px}
nav.toc ul{margin:0;padding:0;list-style:none} nav.toc li{break-inside:avoid;margin:0.1em 0}
aside.howto{border-left:4px solid #1a5fb4;background:#f2f6fc;padding:0.4em 1em;margin:1em 0;font-size:0.9em}
.overview{display:grid;grid-template-columns:repeat(auto-fill,minmax(19em,1fr));gap:0.6em}
.card{border:1px solid #ddd;border-radius:6px;padding:0.5em;min-width:0}
.card h3{margin:0 0 0.3em;font-size:0.95em} .card img{max-height:8em;width:100%;object-fit:contain}
.badges{display:flex;flex-wrap:wrap;gap:0.25em;margin:0.3em 0;align-items:baseline}
.badge{display:inline-block;border-radius:4px;padding:0 0.3em;font-size:0.74em;text-decoration:none;color:#222;
 border:1px solid transparent;max-width:100%;line-height:1.3}
.badge b{font-weight:700} .badge .ci{color:#555} .badge.check,.badge.demonstration{border-style:dashed;border-color:#999}
.rest{font-size:0.75em;color:#555;margin-left:0.2em}
.reproduced{background:#d9f2d9} .not_reproduced{background:#f7d4d4} .inconclusive{background:#fbefc8} .equivalent{background:#d6e6f7} .not_equivalent{background:#ead9f2}
.na{background:#eee}
.tally{font-size:1.05em;display:flex;flex-wrap:wrap;gap:0.3em;align-items:baseline} .tally span{padding:0.1em 0.4em;border-radius:4px;white-space:nowrap}
.lecture{font-style:italic;font-size:1.05em} .finding{border-left:4px solid #888;padding-left:0.6em}
.scroll{overflow:auto;max-width:100%;max-height:85vh;margin:0.8em 0}
@media (min-width:1100px){.scroll{overflow:visible;max-height:none}}
table{border-collapse:separate;border-spacing:0;font-size:0.85em;width:100%}
caption{caption-side:top;text-align:left;font-weight:600;padding:0.2em 0;color:#333}
th,td{border:1px solid #ccc;border-width:0 1px 1px 0;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word;word-break:normal;hyphens:none}
tr>:first-child{border-left-width:1px} thead tr:first-child>*{border-top-width:1px}
th{background:#f3f3f3} thead th{position:sticky;top:0;z-index:1} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.verdict{min-width:7em} td.nowrap{min-width:7em} td.text{min-width:10em} td.statement{min-width:16em} td.paper{min-width:5em;overflow-wrap:anywhere}
tr:target>td,figure:target{background:#fff3b0;outline:2px solid #1a5fb4} tr{scroll-margin-top:6em} .note{font-size:0.85em;color:#555;margin-top:0.3em}
table#all-claims th{cursor:pointer}
figure{margin:1em 0} img{max-width:100%;height:auto} figure img{max-height:75vh;width:auto}
details.note>summary{font-weight:normal;margin:0;font-size:1em} details.protocol>summary{font-weight:normal}
figcaption,.caption{font-size:0.9em;color:#444}
.filters{display:flex;flex-wrap:wrap;gap:0.5em;margin:0.5em 0} .filters input{min-width:12em;flex:1}
details>summary{cursor:pointer;font-weight:600;margin:0.8em 0}
a.top{font-size:0.8em;float:right;font-weight:normal}
#to-top{position:fixed;right:1em;bottom:1em;background:#1a5fb4;color:#fff;padding:0.3em 0.6em;border-radius:4px;
 text-decoration:none;font-size:0.85em;opacity:0.85}
footer{font-size:0.8em;color:#555;border-top:1px solid #ccc;margin-top:3em}
pre{background:#f7f7f7;padding:0.5em;overflow-x:auto;font-size:0.8em}
.claim-card{display:none}
.claim-card:target{display:block;position:fixed;inset:0;z-index:10;background:rgba(0,0,0,0.35);overflow:auto;padding:2vh 1em}
.claim-card>div{background:#fff;max-width:52em;margin:0 auto;border-radius:8px;padding:0.6em 1.2em 1em;box-shadow:0 4px 24px rgba(0,0,0,0.3)}
.claim-card h3{margin:0.3em 0} .claim-card .close{float:right;font-size:0.9em} .claim-card svg{max-width:100%;height:auto;display:block}
.claim-card .runs{font-size:0.8em;columns:2 18em} .claim-card .runs code{font-size:0.95em} .claim-card pre{white-space:pre-wrap;word-break:break-all}
@media (max-width:600px){body{padding:0 0.5em} h1{font-size:1.3em} .card img{max-height:12em}}
@media print{
 #to-top,nav.toc,.filters,a.top,details.full-claims,footer details,.claim-card{display:none}
 .scroll{max-height:none} thead th{position:static}
 body{max-width:none;font-size:10pt} h2{break-before:page} #overview{break-before:auto} .overview h3,.card{break-inside:avoid}
 figure{break-inside:avoid} img{max-height:45vh} .scroll{overflow:visible}
 a{color:inherit;text-decoration:none}
 .reproduced,.not_reproduced,.equivalent,.not_equivalent,.inconclusive,.na{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""

# A jump to a claim's row inside a table's own scroll box (narrow screens) puts the row just under the
# box's sticky headings; filter the full claims table by text, verdict and kind; sort it by a click on a
# column heading.
JS = """
(function(){
 function showRow(){var r=document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if(!r||r.tagName!=='TR') return; var box=r.closest('.scroll');
  if(!box||getComputedStyle(box).overflowY==='visible') return;
  box.scrollIntoView({block:'start'}); var h=r.closest('table').tHead;
  box.scrollTop+=r.getBoundingClientRect().top-box.getBoundingClientRect().top-(h?h.offsetHeight:0)-4;}
 window.addEventListener('hashchange',showRow); window.addEventListener('load',showRow);
})();
(function(){
 var t=document.getElementById('all-claims'); if(!t) return;
 var q=document.getElementById('claims-q'), v=document.getElementById('claims-verdict'), k=document.getElementById('claims-kind');
 function filter(){var s=q.value.toLowerCase();
  Array.prototype.forEach.call(t.tBodies[0].rows,function(r){
   r.hidden=!(r.textContent.toLowerCase().indexOf(s)>=0&&(!v.value||r.dataset.verdict===v.value)&&(!k.value||r.dataset.kind===k.value));});}
 [q,v,k].forEach(function(e){e.addEventListener('input',filter);});
 Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){
  var rows=Array.prototype.slice.call(t.tBodies[0].rows), dir=th.dataset.dir==='1'?-1:1; th.dataset.dir=dir;
  function key(r){var c=r.cells[i], x=c.dataset.sort!==undefined?c.dataset.sort:c.textContent, n=parseFloat(x);return isNaN(n)?x:n;}
  rows.sort(function(a,b){var x=key(a),y=key(b);return (x<y?-1:x>y?1:0)*dir;});
  rows.forEach(function(r){t.tBodies[0].appendChild(r);});});});
})();
"""


# --- text --------------------------------------------------------------------------------------------

def fmt(value) -> str:
    """A value as escaped text: floats to 4 significant digits, missing as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def breakable(name: str) -> str:
    """An identifier (claim_id, experiment) that may wrap after its underscores, never mid-word."""
    return fmt(name).replace("_", "_<wbr>")


_RST = {"report_level": 5, "halt_level": 5, "embed_stylesheet": False, "doctitle_xform": False,
        "initial_header_level": 4, "file_insertion_enabled": False, "raw_enabled": False}


def caption_html(rst: str) -> str:
    """A caption (reStructuredText, as `snakemake --report` renders it) as HTML, by docutils, so
    both reports show the same text. Raw HTML and file inclusion are off: captions are text."""
    from docutils.core import publish_parts

    return publish_parts(rst, writer_name="html5", settings_overrides=_RST)["body"]


def caption_problems(rst: str) -> list[str]:
    """docutils' messages (warnings and errors) about a caption: a caption must have none."""
    import io

    from docutils.core import publish_doctree

    stream = io.StringIO()
    publish_doctree(rst, settings_overrides={**_RST, "report_level": 2, "warning_stream": stream})
    return [line for line in stream.getvalue().splitlines() if line.strip()]


# --- claims ------------------------------------------------------------------------------------------

def _claimed(c: dict) -> str:
    """The claimed side of the threshold, spelled out: "> 0", "< 0.02", "within ±0.02"."""
    t = fmt(float(c.get("threshold", 0.0)))
    return f"within ±{t}" if c.get("direction") == "within" else f"{html.escape(str(c.get('direction', '>')))} {t}"


def verdict_of(c: dict) -> str:
    return str(c.get("verdict", c.get("verdict_unadjusted")))


def _family_read(c: dict) -> bool:
    """Whether this claim's verdict is read from the family-wise interval (an applicable test)."""
    return c.get("kind") == "test" and "ci_low_adjusted" in c and bool(c.get("applicable", True))


def _values(c: dict) -> list[float] | None:
    """The per-seed values behind a t-interval on fewer than 3 samples: there the interval (12.7
    standard errors wide at n = 2) says nothing, and can leave the quantity's range; the values do."""
    if c.get("method") not in ("mean", "paired") or not (0 < int(c.get("n") or 0) < 3):
        return None
    try:
        data = json.loads(c.get("estimate") or "{}").get("data", {})
    except (TypeError, ValueError):
        return None
    a, b = data.get("a"), data.get("b")
    if c["method"] == "paired" and a is not None and b is not None:
        return [x - y for x, y in zip(a, b)]
    return a


def interval_text(c: dict) -> str:
    """The interval the verdict is read from (family-wise for an applicable test, else 95%), or the
    values themselves where a t-interval on n < 3 would be meaningless."""
    values = _values(c)
    if values is not None:
        return "values " + ", ".join(fmt(float(v)) for v in values)
    lo, hi = (c.get("ci_low_adjusted"), c.get("ci_high_adjusted")) if _family_read(c) else (c.get("ci_low"), c.get("ci_high"))
    return f"[{fmt(lo)}, {fmt(hi)}]"


def claim_anchor(c: dict) -> str:
    return f"claim-{c['experiment']}-{c['claim_id']}"


def card_anchor(c: dict) -> str:
    return f"card-{c['experiment']}-{c['claim_id']}"


SYMBOL = {"reproduced": "✓", "not_reproduced": "✗", "equivalent": "≈", "not_equivalent": "≠", "inconclusive": "?"}


def verdict_words(c: dict) -> str:
    """The verdict in words: an equivalence names its margin ("equivalent within ±0.02")."""
    v = verdict_of(c)
    margin = stats.margin_of(c.get("threshold") if c.get("direction") == "within" else c.get("margin"))
    if v == "equivalent" and margin is not None:
        return f"equivalent within ±{fmt(margin)}"
    if v == "not_equivalent" and margin is not None:
        return f"not equivalent (beyond ±{fmt(margin)})"
    return v.replace("_", " ")


def undecided_text(c: dict) -> str:
    """For an inconclusive test: the 95% verdict, the smallest effect this run could decide and
    about how many seeds would decide the effect measured."""
    if verdict_of(c) != "inconclusive" or c.get("kind") != "test" or not bool(c.get("applicable", True)):
        return ""
    parts = [f"unadjusted (95%): {str(c.get('verdict_unadjusted', '')).replace('_', ' ')}"]
    try:
        eff, need = float(c.get("decidable_effect")), float(c.get("seeds_to_decide"))
    except (TypeError, ValueError):
        eff = need = float("nan")
    if eff == eff:
        parts.append(f"smallest effect these {fmt(c.get('n'))} seeds decide (80% power): {fmt(eff)}")
    if need == need:
        parts.append(f"seeds to decide the effect measured: {'more than ' if need >= power.MAX_SEEDS else 'about '}"
                     f"{int(need)}")
    return "; ".join(parts)


def badge(c: dict, short: bool = False) -> str:
    """One claim as a badge: a verdict colour and symbol, the claim id, the value and the interval
    (short: the symbol alone, for checks and demonstrations); the statement on hover; a click opens
    the claim's card."""
    v = verdict_of(c)
    applicable = bool(c.get("applicable", True))
    cls = f"badge {html.escape(v) if applicable else 'na'} {html.escape(str(c.get('kind')))}"
    symbol = SYMBOL.get(v, "–") if applicable else "n/a"
    words = f"{verdict_words(c) if applicable else 'not applicable'}: {c['claim_id']} ({c.get('kind')}) = " \
            f"{fmt(c.get('value'))} {interval_text(c)}. {c['statement']}"
    paper = c.get("paper_value")
    paper = f" <span class='ci'>(paper: {fmt(paper)})</span>" if isinstance(paper, str) and paper or \
        isinstance(paper, (int, float)) and paper == paper else ""
    text = symbol if short else (f"<b>{symbol}</b> {breakable(c['claim_id'])} {fmt(c.get('value'))} "
                                 f"<span class='ci'>{interval_text(c)}</span>{paper}")
    return (f"<a class='{cls}' href='#{html.escape(card_anchor(c))}' data-claim='{html.escape(c['experiment'])}/"
            f"{html.escape(c['claim_id'])}' data-verdict='{html.escape(v)}' title='{html.escape(words)}'>{text}</a>")


def _tests(claims: pd.DataFrame) -> pd.DataFrame:
    return claims[claims["kind"].eq("test") & claims["applicable"].astype(bool)]


def _counts(tests: pd.DataFrame) -> str:
    counts = tests["verdict"].value_counts().to_dict()
    return "".join(f"<span class='{v}'><b>{counts.get(v, 0)}</b> {v.replace('_', ' ')}</span>"
                   for v in stats.VERDICTS if counts.get(v, 0) or v in ("reproduced", "not_reproduced", "inconclusive"))


def tally(claims: pd.DataFrame) -> str:
    """The headline: counts by verdict of the primary claims (one per lecture claim, Holm over them),
    then of every applicable test; checks and demonstrations are not counted."""
    if claims.empty or "kind" not in claims:
        return "<p>No claims.</p>"
    tests = _tests(claims)
    primaries = tests[tests["role"].eq("primary")] if "role" in tests else tests.iloc[:0]
    decided = int(primaries["verdict"].isin(stats.DECIDED).sum())
    return (f"<p class='tally'>Primary claims (one per lecture claim): {_counts(primaries)} of {len(primaries)} "
            f"({decided} decided). All tests: {_counts(tests)} of {len(tests)}. <small>Badges: ✓ reproduced, ✗ not "
            "reproduced, ≈ equivalent (no difference beyond the margin), ≠ not equivalent, ? inconclusive; the value "
            "and the interval the verdict was read from; checks and demonstrations (dashed) are not counted. "
            "<a href='#how'>How a verdict is decided</a>.</small></p>")


def _role(c: dict) -> str:
    role = c.get("role")
    return f" · {html.escape(str(role))}" if isinstance(role, str) and role else ""


NOTE_CHARS = 160  # a longer note is folded in a table row (its card shows it whole)


def note_html(note) -> str:
    """A claim's note under its statement: folded behind its first words when long."""
    if not isinstance(note, str) or not note:
        return ""
    if len(note) <= NOTE_CHARS:
        return f"<div class='note'>{fmt(note)}</div>"
    return (f"<details class='note'><summary>{fmt(' '.join(note[:NOTE_CHARS // 2].split()[:-1]))} … "
            f"({len(note.split())} words)</summary>{fmt(note)}</details>")


def claims_rows(claims: pd.DataFrame, anchors: bool, with_experiment: bool) -> str:
    rows = []
    for c in claims.to_dict("records"):
        v = verdict_of(c)
        ident = f" id='{html.escape(claim_anchor(c))}'" if anchors else ""
        fam = (f"[{fmt(c.get('ci_low_adjusted'))}, {fmt(c.get('ci_high_adjusted'))}] "
               f"<small>({fmt(100 * float(c['level_adjusted']))}%)</small>") if _family_read(c) else "–"
        values = _values(c)
        ci95 = f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]" if values is None else interval_text(c)
        note = note_html(c.get("note"))
        undecided = undecided_text(c)
        note += f"<div class='note'>{html.escape(undecided)}</div>" if undecided else ""
        experiment = (f"<td><a href='#{html.escape(c['experiment'])}'>{breakable(c['experiment'])}</a></td>"
                      if with_experiment else "")
        rows.append(
            f"<tr{ident} class='{html.escape(v)}' data-verdict='{html.escape(v)}' data-kind='{fmt(c.get('kind'))}'>"
            f"{experiment}<td class='verdict'><b>{fmt(verdict_words(c))}</b>"
            f"{'' if bool(c.get('applicable', True)) else '<br><small>not applicable here</small>'}</td>"
            f"<td><a href='#{html.escape(card_anchor(c))}' title='the claim card: values, runs, figure'>"
            f"{breakable(c['claim_id'])}</a><br><small>{fmt(c.get('kind'))}{_role(c)}</small></td>"
            f"<td class='text statement'>{fmt(c['statement'])}{note}</td>"
            f"<td class='text'><b>{fmt(c['metric'])} {_claimed(c)}</b></td>"
            f"<td class='num' data-sort='{fmt(c['value'])}'>{fmt(c['value'])}</td><td class='nowrap'>{ci95}</td>"
            f"<td class='nowrap'>{fam}</td><td class='num'>{fmt(c['n'])}</td>"
            f"<td class='paper'>{fmt(c.get('paper_value'))}</td></tr>")
    return "".join(rows)


def claims_table(claims: pd.DataFrame, anchors: bool = False, table_id: str | None = None,
                 with_experiment: bool = True, caption: str = "") -> str:
    """Claim rows in a box that scrolls sideways on a narrow screen, the verdict first: the claim
    (id and kind), its statement with the note below it, the claim as "metric > threshold" (the
    metric's sign convention), the value with its 95% interval, the family-wise interval
    (applicable tests), n, the paper's number."""
    if claims.empty:
        return "<p>No claims.</p>"
    heads = ((["experiment"] if with_experiment else []) +
             ["verdict", "claim", "statement", "claimed: metric (its sign) vs threshold", "value", "95% interval",
              "family-wise interval", "n", "paper"])
    head = "".join(f"<th>{h}</th>" for h in heads)
    ident = f" id='{table_id}'" if table_id else ""
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f"<div class='scroll'><table class='claims'{ident}>{cap}<thead><tr>{head}</tr></thead>"
            f"<tbody>{claims_rows(claims, anchors, with_experiment)}</tbody></table></div>")


def full_claims(claims: pd.DataFrame) -> str:
    """Every claim, filterable by text, verdict and kind and sortable, behind a disclosure element."""
    options = lambda name, values: (f"<select id='claims-{name}' aria-label='{name}'><option value=''>any {name}</option>"
                                    + "".join(f"<option>{v}</option>" for v in values) + "</select>")
    return ("<details class='full-claims' id='all-claims-box'><summary>All claims "
            f"({len(claims)}): filter and sort (click a column heading)</summary>"
            "<div class='filters'><input id='claims-q' type='search' placeholder='filter: any text' aria-label='filter'>"
            f"{options('verdict', stats.VERDICTS)}{options('kind', stats.KINDS)}</div>"
            f"{claims_table(claims, table_id='all-claims')}</details>")


# --- claim cards -------------------------------------------------------------------------------------

def _read_interval(c: dict) -> tuple[float, float, str]:
    """The interval the verdict was read from and its level in words."""
    if _family_read(c):
        level = float(c.get("level_adjusted") or stats.LEVEL)
        return (float(c.get("ci_low_adjusted")), float(c.get("ci_high_adjusted")),
                f"{100 * level:.4g}% ({stats.FAMILY_METHOD}-adjusted in the family {c.get('family')}, "
                f"m = {fmt(c.get('family_size'))})")
    return float(c.get("ci_low")), float(c.get("ci_high")), "95% (not adjusted: checks and demonstrations are not counted)"


def _seed_values(c: dict) -> list[tuple[str, list[float]]]:
    """The per-seed values on the claim's own axis (mean: the values, paired: the differences), or
    the two groups of a two-sample claim on theirs (labelled a and b)."""
    try:
        data = json.loads(c.get("estimate") or "{}").get("data", {})
    except (TypeError, ValueError):
        return []
    a, b = data.get("a"), data.get("b")
    if c.get("method") == "mean" and a:
        return [("per seed", [float(x) for x in a])]
    if c.get("method") == "paired" and a and b:
        return [("per seed (a − b)", [float(x) - float(y) for x, y in zip(a, b)])]
    return [(name, [float(x) for x in v]) for name, v in (("a", a), ("b", b)) if isinstance(v, list) and v]


def strip_svg(c: dict) -> str:
    """A small strip plot (inline SVG): the per-seed values as dots, the value and the interval the
    verdict was read from as a bar, the threshold as a dashed line and a margin as a shaded band.
    Two-sample claims (Welch, ratios of medians) show each group's values in a row of their own
    under the interval's axis when they share it (Welch), else as numbers below."""
    lo, hi, _ = _read_interval(c)
    value = float(c.get("value")) if c.get("value") == c.get("value") else math.nan
    threshold = float(c.get("threshold") or 0.0)
    margin = stats.margin_of(c.get("threshold") if c.get("direction") == "within" else c.get("margin"))
    rows = _seed_values(c)
    same_axis = c.get("method") in ("mean", "paired")
    band = (-margin, margin) if margin is not None and c.get("direction") == "within" else \
        (threshold - margin, threshold + margin) if margin is not None else None
    finite = lambda values: [x for x in values if isinstance(x, float) and math.isfinite(x)]
    xs = finite((lo, hi, value)) + (finite(x for _, v in rows for x in v) if same_axis else [])
    if not xs:
        return "<p class='note'>Nothing measured: no plot.</p>"
    xs += finite((threshold, *(band or ())))
    x0, x1 = min(xs), max(xs)
    pad = (x1 - x0) * 0.08 or max(abs(x0) * 0.1, 1e-9)
    x0, x1 = x0 - pad, x1 + pad
    W, L, R = 520, 110, 20
    X = lambda x: L + (W - L - R) * (min(max(x, x0), x1) - x0) / (x1 - x0)
    lines = rows if same_axis else []
    H = 46 + 22 * len(lines)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='strip' width='{W}' height='{H}' viewBox='0 0 {W} {H}' "
           f"role='img' aria-label='per-seed values, interval and threshold of {html.escape(str(c['claim_id']))}' "
           "font-family='system-ui,sans-serif' font-size='11'>"]
    if band:
        out.append(f"<rect x='{X(band[0]):.1f}' y='4' width='{max(X(band[1]) - X(band[0]), 1):.1f}' height='{H - 22}' "
                   "fill='#d6e6f7'><title>margin</title></rect>")
    if c.get("direction") != "within":
        out.append(f"<line x1='{X(threshold):.1f}' x2='{X(threshold):.1f}' y1='2' y2='{H - 18}' stroke='#b00' "
                   f"stroke-dasharray='4 3'/><text x='{X(threshold) + 3:.1f}' y='12' fill='#b00'>threshold {fmt(threshold)}</text>")
    y = 22
    if math.isfinite(lo) and math.isfinite(hi):
        out.append(f"<text x='4' y='{y + 4}'>value, interval</text><line x1='{X(lo):.1f}' x2='{X(hi):.1f}' y1='{y}' "
                   f"y2='{y}' stroke='#1a5fb4' stroke-width='4'/>")
    if math.isfinite(value):
        out.append(f"<circle cx='{X(value):.1f}' cy='{y}' r='5' fill='#fff' stroke='#1a5fb4' stroke-width='2'/>")
    for label, values in lines:
        y += 22
        out.append(f"<text x='4' y='{y + 4}'>{html.escape(label)}</text>")
        out += [f"<circle cx='{X(v):.1f}' cy='{y}' r='3.5' fill='#222' fill-opacity='0.6'><title>{fmt(v)}</title></circle>"
                for v in values if math.isfinite(v)]
    out.append(f"<line x1='{L}' x2='{W - R}' y1='{H - 16}' y2='{H - 16}' stroke='#999'/>"
               f"<text x='{L}' y='{H - 3}'>{fmt(x0)}</text><text x='{W - R}' y='{H - 3}' text-anchor='end'>{fmt(x1)}</text>")
    out.append("</svg>")
    if not same_axis and rows:
        out.append("<p class='note'>" + "; ".join(f"{html.escape(n)}: {', '.join(fmt(v) for v in vals)}"
                                                 for n, vals in rows) + "</p>")
    return "".join(out)


def figure_for(c: dict, figures_root: Path) -> Path | None:
    """The figure that shows a claim: the experiment's figure whose name shares the most words with
    the claim id, else its HEADLINE figure, else its first."""
    pngs = figure_pngs(figures_root, c["experiment"])
    if not pngs:
        return None
    words = set(str(c["claim_id"]).split("_"))
    score = lambda p: len(words & set(p.stem.split("_")) - {"vs", "and", "of", "the", "to"})
    best = max(pngs, key=score)
    if score(best) >= 2:
        return best
    name = getattr(experiments.get(c["experiment"]), "HEADLINE", None)
    return next((p for p in pngs if name and p.stem.startswith(name)), pngs[0])


def _configfiles(config: dict) -> str:
    """The --configfile part of the command that runs this config's preset."""
    preset = str(config.get("preset", ""))
    files = {"quick": "", "smoke": "presets/smoke.yaml", "full": "presets/full.yaml",
             "full+papers": "presets/full.yaml presets/papers.yaml"}
    if preset in files:
        return f" --configfile {files[preset]}" if files[preset] else ""
    return " --configfile <your config files>"


def retrain_command(config: dict, c: dict, runs: list[tuple[int, str]], how: str) -> str:
    """The one command that retrains a claim's runs and rebuilds what reads them (README: Retraining
    runs: a deleted run directory is retrained by the next `snakemake`); a claim without runs is
    recomputed by forcing its analysis."""
    cf = _configfiles(config)
    if how == "none" or not runs:
        return f"snakemake{cf} --forcerun analyze_{c['experiment']}"
    if how == "experiment":
        plan_cf = "".join(f" --configfile {f}" for f in ["config.yaml", *cf.replace(" --configfile ", "").split()]
                          if f and "<" not in f)
        return f"rm -r $(python -m trainfail plan{plan_cf} --run-dirs {c['experiment']}) && snakemake{cf}"
    ids = sorted({r for _, r in runs})
    dirs = f"results/runs/{ids[0]}" if len(ids) == 1 else "results/runs/{" + ",".join(ids) + "}"
    return f"rm -r {dirs} && snakemake{cf}"


HOW = {"rows": "the runs of the table rows its estimate was computed from",
       "seeds": "the experiment's runs of the seeds its estimate counts (the claim reads some of them)",
       "experiment": "every run of the experiment (this claim's estimate was not traced to single runs)",
       "none": "no training runs: a deterministic computation"}
RUNS_SHOWN = 48


def _where(captions_dir: Path | None, exp: str) -> str:
    """Where the claim is in the lecture or the paper: the caption's leading bold label, if any."""
    caption = captions_dir / f"{exp}.rst" if captions_dir else None
    if caption is None or not caption.exists():
        return ""
    import re

    m = re.match(r"\s*\*\*(.+?):?\*\*", caption.read_text())
    return m.group(1).rstrip(":") if m else ""


def claim_card(c: dict, config: dict, figures_root: Path, captions_dir: Path | None = None) -> str:
    """One claim's card, opened by its badge (CSS :target: no script): the statement, the verdict
    and the level it was read at, a strip plot of the per-seed values with the interval and the
    threshold, the paper's number and where it is, the figure that shows it, the runs (seeds, run
    ids, links to each run's meta.json and metrics.csv) and the command that retrains them."""
    from trainfail.pipeline import claim_runs

    v = verdict_of(c)
    applicable = bool(c.get("applicable", True))
    lo, hi, level = _read_interval(c)
    where = _where(captions_dir, c["experiment"])
    paper = c.get("paper_value")
    has_paper = isinstance(paper, str) and paper or isinstance(paper, (int, float)) and paper == paper
    paper_html = (f"<p><b>Paper / lecture:</b> {fmt(paper) if has_paper else 'no number given'}"
                  f"{f' ({html.escape(where)})' if where else ''}.</p>")
    fig = figure_for(c, figures_root)
    fig_html = (f"<p><b>Figure:</b> <a href='#fig-{html.escape(fig.parent.name)}-{html.escape(fig.stem)}'>"
                f"{html.escape(fig.stem.replace('_', ' '))}</a> (<a href='../figures/{html.escape(fig.parent.name)}/"
                f"{html.escape(fig.name)}'>PNG</a>)</p>") if fig else ""
    runs, how = claim_runs.runs_of(c)
    links = "".join(f"<li>{f'seed {s}: ' if s >= 0 else ''}<a href='../runs/{html.escape(r)}/meta.json'><code>{html.escape(r)}</code></a> "
                    f"(<a href='../runs/{html.escape(r)}/metrics.csv'>metrics.csv</a>)</li>" for s, r in runs[:RUNS_SHOWN])
    more = f"<li>and {len(runs) - RUNS_SHOWN} more (in claims.csv, column runs)</li>" if len(runs) > RUNS_SHOWN else ""
    seeds = sorted({s for s, _ in runs if s >= 0})
    runs_html = (f"<p><b>Runs:</b> {len(runs)}, seeds {', '.join(map(str, seeds)) or '–'}; {HOW.get(how, how)}.</p>"
                 f"<ul class='runs'>{links}{more}</ul>" if runs else f"<p><b>Runs:</b> {HOW.get(how, 'none recorded')}.</p>")
    command = retrain_command(config, c, runs, how)
    note = f"<p class='note'>{fmt(c.get('note'))}</p>" if isinstance(c.get("note"), str) and c["note"] else ""
    return (f"<section class='claim-card' id='{html.escape(card_anchor(c))}' aria-label='claim "
            f"{html.escape(c['experiment'])}/{html.escape(str(c['claim_id']))}'><div>"
            f"<a class='close' href='#{html.escape(claim_anchor(c))}'>close ✕</a>"
            f"<h3><span class='badge {html.escape(v) if applicable else 'na'}'>{SYMBOL.get(v, '–') if applicable else 'n/a'} "
            f"{fmt(verdict_words(c)) if applicable else 'not applicable'}</span> {breakable(c['claim_id'])} "
            f"<small>({html.escape(c['experiment'])}, {fmt(c.get('kind'))}{_role(c)})</small></h3>"
            f"<p>{fmt(c['statement'])}</p>"
            f"<p><b>Claimed:</b> {fmt(c['metric'])} {_claimed(c)}. <b>Measured:</b> {fmt(c.get('value'))}, "
            f"interval [{fmt(lo)}, {fmt(hi)}] read at {html.escape(level)}; n = {fmt(c.get('n'))}.</p>"
            f"{strip_svg(c)}{note}{paper_html}{fig_html}{runs_html}"
            f"<p><b>Retrain just these runs</b> (from the repository root; the next snakemake rebuilds the analysis "
            f"and the report):</p><pre>{html.escape(command)}</pre>"
            f"<p><a href='#{html.escape(claim_anchor(c))}'>its row in the claims table</a> · "
            f"<a href='#{html.escape(c['experiment'])}'>its experiment</a></p></div></section>")


def claim_cards(claims: pd.DataFrame, config: dict, figures_root: Path, captions_dir: Path | None = None) -> str:
    """Every claim's card (hidden until its badge or claim id is clicked)."""
    if claims.empty:
        return ""
    return ("<div class='cards'>" + "".join(claim_card(c, config, figures_root, captions_dir)
                                              for c in claims.to_dict("records")) + "</div>")


# --- pieces of the page ------------------------------------------------------------------------------

def design_text(claims: pd.DataFrame) -> str:
    """The families of this report: their names, sizes and the method (for "How a verdict is decided")."""
    tests = _tests(claims) if len(claims) and "kind" in claims else claims
    if tests.empty or "family" not in tests:
        return "no test claims"
    sizes = tests.groupby("family", sort=False).size()
    primary = int(sizes.get(stats.PRIMARY_FAMILY, 0))
    sections = [f"{html.escape(f)} ({int(n)})" for f, n in sizes.items() if f != stats.PRIMARY_FAMILY]
    return (f"the primaries (m = {primary}) and the secondaries of each lecture section: "
            f"{', '.join(sections) if sections else 'none'}")


def how_to_read(claims: pd.DataFrame) -> str:
    """How a verdict is decided: the interval, the threshold, the kinds, the roles and families."""
    return (
        "<aside class='howto' id='how'><b>How a verdict is decided.</b> A claim reads "
        "<i>metric &gt; threshold</i>, <i>metric &lt; threshold</i> or <i>metric within ±margin</i>. "
        "Its verdict comes from an interval around the measured value: <span class='reproduced'>reproduced</span> when "
        "the whole interval lies on the claimed side, <span class='not_reproduced'>not reproduced</span> when it lies "
        "wholly on the other side, <span class='equivalent'>equivalent</span> when it lies inside ±margin (an equivalence "
        "by two one-sided tests, or a control arm whose margin is declared in the schema with its reason: \"no "
        "difference beyond the margin\" is then a finding), <span class='not_equivalent'>not equivalent</span> when it "
        "lies wholly outside the margin, <span class='inconclusive'>inconclusive</span> otherwise (or with too few "
        "seeds); an inconclusive test shows its unadjusted verdict, the smallest effect its seeds could decide and "
        "about how many seeds would decide the effect it measured. "
        "Kinds: a <b>check</b> is an identity the code must satisfy, a <b>demonstration</b> an outcome set by constants "
        "chosen to show a mechanism (dashed badges: not counted), a <b>test</b> an outcome that could go either way. "
        "Roles: each experiment declares in code, before any data, its <b>primary</b> test: the one that decides "
        "the lecture's claim by its mechanism (the controlled arm, not the lecture's uncontrolled comparison); every "
        "other test is <b>secondary</b>. "
        f"Families: {design_text(claims)}. Within each family {stats.FAMILY_METHOD}'s step-down procedure keeps the "
        f"chance of any wrong decided verdict at most {stats.ALPHA:g}; a test's adjusted interval is read at the level "
        "at which it decides exactly when Holm does (shown beside it), its unadjusted 95% interval too. "
        "Badges give the value and the interval the verdict was read from; where a t-interval rests on "
        "fewer than 3 seeds the values are shown instead. Intervals: paired t over seeds where arms share seeds, "
        "Welch otherwise, Wilson for proportions (never outside [0, 1]), a seeded percentile bootstrap with enough "
        "resamples for its level for ratios of medians, Fisher's z for rank correlations.</aside>")


def _benchmark_totals(results: Path) -> tuple[float, float, int] | None:
    """Wall and CPU seconds summed over the jobs Snakemake benchmarked (results/benchmarks)."""
    files = sorted((results / "benchmarks").rglob("*.tsv")) if results else []
    if not files:
        return None
    frames = [pd.read_csv(f, sep="\t") for f in files]
    wall = sum(float(f["s"].sum()) for f in frames if "s" in f)
    cpu = sum(float(f["cpu_time"].sum()) for f in frames if "cpu_time" in f)
    return wall, cpu, len(files)


def provenance_header(config: dict, run_metas: list[dict], results: Path | None = None) -> str:
    """The run at a glance: preset, device, commit, seeds, runs, compute time."""
    git = provenance.git_state()
    devices = sorted({m.get("device_name", "?") for m in run_metas}) or ["no training runs"]
    diverged = sum(bool(m.get("diverged")) for m in run_metas)
    commit = (git["commit"] or "unknown")[:10] + (" (uncommitted changes)" if git["dirty"] else "")
    items = [f"preset <b>{fmt(config.get('preset', 'custom'))}</b>", f"device {html.escape(', '.join(devices))}",
             f"commit <code>{html.escape(commit)}</code>", f"seeds {fmt(config.get('seeds'))} (experiments may set their own)"
             + (f", every seed shifted by <b>seed_offset {int(config['seed_offset'])}</b>" if config.get("seed_offset") else ""),
             f"{len(run_metas)} runs, {diverged} diverged"]
    totals = _benchmark_totals(results) if results else None
    if totals:
        items.append(f"{totals[2]} jobs: {totals[0] / 60:.1f} min wall, {totals[1] / 60:.1f} min CPU (summed)")
    finished = sorted(m.get("finished_at", "") for m in run_metas if m.get("finished_at"))
    if finished:
        items.append(f"last run finished {html.escape(finished[-1])}")
    return "<header class='provenance'>" + "".join(f"<span>{i}</span>" for i in items) + "</header>"


def toc(sections: list[tuple[contract.Section, list[str]]]) -> str:
    """Every section and experiment, compact: a section per line, its experiments by id."""
    exp_link = lambda e: f"<a href='#{e}' title='{html.escape(experiments.get(e).TITLE)}'>{breakable(e)}</a>"
    items = "".join(f"<li><a href='#{s.anchor}'>{html.escape(str(s))}</a>: {' · '.join(exp_link(e) for e in exps)}</li>"
                    for s, exps in sections)
    return ("<nav class='toc' id='toc' aria-label='contents'><ul><li><a href='#overview'>Overview</a> · "
            "<a href='#how'>How a verdict is decided</a></li>"
            f"{items}<li><a href='#all-claims-box'>All claims</a> · <a href='#audit'>Reproducibility audit</a> · "
            "<a href='#provenance'>Provenance</a></li></ul></nav>")


def figure_pngs(figures_root: Path, exp: str) -> list[Path]:
    return sorted((figures_root / exp).glob("*.png"))


def headline(figures_root: Path, exps: list[str]) -> Path | None:
    """A section's headline figure: the HEADLINE figure (trainfail.core.contract) of its first
    experiment that names one and drew it, else the first experiment's figure named after it, else
    its first figure."""
    for exp in exps:
        name = getattr(experiments.get(exp), "HEADLINE", None)
        found = [p for p in figure_pngs(figures_root, exp) if name and p.stem.startswith(name)]
        if found:
            return found[0]
    pngs = [p for e in exps for p in figure_pngs(figures_root, e)]
    named = [p for p in pngs if p.stem == p.parent.name]
    return (named or pngs or [None])[0]


@functools.lru_cache(maxsize=None)
def _png_bytes(png: Path, max_width: int | None = None) -> bytes:
    """A figure as the page embeds it: flattened on white and stored with a 256-colour palette
    (plots have few colours: a third of the size, the same look), downscaled to `max_width` pixels
    for a thumbnail. The full-resolution PNG and the PDF stay linked beside it."""
    import io

    from PIL import Image

    try:
        with Image.open(png) as im:
            im.load()
            rgb = Image.new("RGB", im.size, "white")
            rgb.paste(im, mask=im.getchannel("A") if "A" in im.getbands() else None)
    except OSError:  # not an image PIL reads: embedded as it is (the browser test reports it)
        return png.read_bytes()
    if max_width and rgb.width > max_width:
        rgb = rgb.resize((max_width, max(1, round(rgb.height * max_width / rgb.width))), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.quantize(256, method=Image.Quantize.FASTOCTREE).save(out, "PNG", optimize=True)
    small = out.getvalue()
    return small if max_width or len(small) < png.stat().st_size else png.read_bytes()


def _data_uri(png: Path, max_width: int | None = None) -> str:
    return "data:image/png;base64," + base64.b64encode(_png_bytes(png, max_width)).decode()


def overview(sections: list[tuple[contract.Section, list[str]]], claims: pd.DataFrame, figures_root: Path) -> str:
    """One card per lecture section: its headline figure, small, and its claims as badges."""
    cards = []
    for s, exps in sections:
        png = headline(figures_root, exps)
        img = (f"<a href='#{s.anchor}'><img alt='{html.escape(figure_text(png, claims)[1])}' "
               f"src='{_data_uri(png, THUMB_WIDTH)}'></a>"
               if png else "")
        mine = (claims[claims["experiment"].isin(exps)] if len(claims) else claims).to_dict("records")
        tests = [c for c in mine if c.get("kind") == "test"]
        rest = [c for c in mine if c.get("kind") != "test"]
        badges = "".join(badge(c) for c in tests)
        if rest:
            badges += (f"<span class='rest'>{len(rest)} checks and demonstrations: </span>"
                       + "".join(badge(c, short=True) for c in rest))
        cards.append(f"<div class='card'><h3><a href='#{s.anchor}'>{html.escape(str(s))}</a></h3>{img}"
                     f"<div class='badges'>{badges}</div></div>")
    return f"<h2 id='overview'>Overview</h2>{tally(claims)}<div class='overview'>{''.join(cards)}</div>"


def figure_text(png: Path, claims: pd.DataFrame) -> tuple[str, str]:
    """A figure's caption and alt text: the finding of the claim it shows (the experiment's
    FIGURE_CLAIMS, else its primary; trainfail.analysis.findings), the alt text naming the figure."""
    exp = png.parent.name
    module = experiments.get(exp) if exp in experiments.REGISTRY else None
    mine = claims[claims["experiment"] == exp] if len(claims) and "experiment" in claims else claims
    caption = findings.figure_sentence(png.stem, mine, getattr(module, "FIGURE_CLAIMS", None),
                                       getattr(module, "FINDINGS", None))
    title = module.TITLE if module else exp
    return caption, f"Figure '{png.stem.replace('_', ' ')}' of {title}. {caption}"


def figure_html(png: Path, claims: pd.DataFrame | None = None) -> str:
    links = " ".join(f"<a href='../figures/{html.escape(png.parent.name)}/{html.escape(p.name)}'>{p.suffix[1:].upper()}</a>"
                     for p in sorted(png.parent.glob(png.stem + ".*")) if p.suffix in (".png", ".pdf"))
    caption, alt = figure_text(png, claims if claims is not None else pd.DataFrame())
    return (f"<figure id='fig-{html.escape(png.parent.name)}-{html.escape(png.stem)}'>"
            f"<img alt='{html.escape(alt)}' src='{_data_uri(png)}'>"
            f"<figcaption>{html.escape(caption)} ({links})</figcaption></figure>")


def caption_block(rst: str) -> str:
    """An experiment's caption: its first paragraph (the lecture's claim) shown, the rest (how it is
    measured and read, up to a few hundred words) behind a disclosure element, for a reader who skims."""
    paragraphs = [p for p in rst.strip().split("\n\n") if p.strip()]
    head, rest = paragraphs[:1], paragraphs[1:]
    folded = (f"<details class='protocol'><summary>How it is measured and read ({len(' '.join(rest).split())} words)"
              f"</summary>{caption_html(chr(10).join(p + chr(10) for p in rest))}</details>") if rest else ""
    return f"<div class='caption'>{caption_html(chr(10).join(head))}{folded}</div>"


FOLD_ROWS = 12  # a table an analysis wrote with more rows than this is folded behind its caption


def csv_table_html(csv: Path) -> str:
    """A table an analysis wrote as CSV beside its figures (Keskar's Tables 2-4, the BN steps
    table) as an HTML table, with links to the CSV and its LaTeX twin."""
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    base = f"../figures/{html.escape(csv.parent.name)}/{html.escape(csv.stem)}"
    head = "".join(f"<th>{fmt(c).replace('_', ' ')}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    tex = f", <a href='{base}.tex'>LaTeX</a>" if csv.with_suffix(".tex").exists() else ""
    name = html.escape(csv.stem.replace('_', ' '))
    table = (f"<div class='scroll'><table><caption>{name}</caption>"
             f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
    if len(df) > FOLD_ROWS:
        table = f"<details><summary>{name}: {len(df)} rows</summary>{table}</details>"
    return (f"<figure class='table' id='table-{html.escape(csv.parent.name)}-{html.escape(csv.stem)}'>{table}"
            f"<figcaption>{name} (<a href='{base}.csv'>CSV</a>{tex})</figcaption></figure>")


def experiment_html(exp: str, claims: pd.DataFrame, figures_root: Path, captions_dir: Path, finding: bool = True) -> str:
    """An experiment: its finding (unless the section's opener says it), caption, figures, tables, claims."""
    module = experiments.get(exp)
    mine = claims[claims["experiment"] == exp] if len(claims) else claims
    parts = [f"<h3 id='{exp}'>{html.escape(module.TITLE)} <small>({exp})</small> <a class='top' href='#top'>top</a></h3>"]
    first = findings.lead(mine) if finding and len(mine) else None
    if first:
        parts.append(f"<p class='finding'><b>Found:</b> {html.escape(findings.sentence(first, getattr(module, 'FINDINGS', None)))}</p>")
    caption = captions_dir / f"{exp}.rst"
    if caption.exists():
        parts.append(caption_block(caption.read_text()))
    tables = sorted((figures_root / exp).glob("*.csv"))
    table_stems = {t.stem for t in tables}
    # a table drawn as a picture is shown as the table itself
    parts += [figure_html(p, mine) for p in figure_pngs(figures_root, exp) if p.stem not in table_stems]
    parts += [csv_table_html(t) for t in tables]
    parts.append(claims_table(mine, anchors=True, with_experiment=False,
                              caption=f"Claims of {exp} (click a claim for its card: values, runs, figure)"))
    parts.append(f"<p>Data: <a href='../tables/{exp}.csv'>tables/{exp}.csv</a> (one row per run or point; "
                 f"the claims: <a href='../claims/{exp}.csv'>claims/{exp}.csv</a>)</p>")
    return "\n".join(parts)


def audit_section(audit: pd.DataFrame, config: dict) -> str:
    """The reproducibility audit: which sampled runs were re-run and whether they matched."""
    cfg = config.get("audit", {})
    matched = int(audit["match"].astype(bool).sum()) if not audit.empty else 0
    head = ("<tr><th>run</th><th>check</th><th>task</th><th>seed</th><th>stored on</th><th>re-run on</th><th>match</th>"
            "<th>largest difference</th><th>tolerance</th><th>note</th></tr>")
    rows = "".join(
        f"<tr class='{'reproduced' if bool(r['match']) else 'not_reproduced'}'><td><code>{fmt(r['run_id'])}</code></td>"
        f"<td>{fmt(r.get('check', 'rerun'))}</td><td>{fmt(r['experiment_task'])}</td><td>{fmt(r['seed'])}</td><td>{fmt(r['stored_device'])}</td>"
        f"<td>{fmt(r['device'])}</td><td><b>{fmt(bool(r['match']))}</b></td><td>{fmt(float(r['max_abs_diff']))}</td>"
        f"<td>{fmt(float(r['tolerance']))}</td><td>{fmt(r.get('note'))}</td></tr>"
        for r in audit.to_dict("records"))
    return ("<h2 id='audit'>Reproducibility audit <a class='top' href='#top'>top</a></h2>"
            f"<p>{len(audit)} finished runs (a deterministic sample, <code>audit.sample</code> = {fmt(cfg.get('sample'))}) "
            f"were trained again from their stored settings and their metrics compared with the stored ones: "
            f"<b>{matched} of {len(audit)} match</b>. A <i>rerun</i> is trained as the run was (a stacked run with "
            "its whole stack); the <i>alone</i> row, the canary, trains one stacked run by itself. On the CPU a match "
            "means bit-identical (the canary: its first row within rounding where this CPU's kernels, or "
            "<code>stack_exact</code> = false, make a stack member differ from its run alone, see its note); when a GPU "
            "is involved each "
            f"number may differ by <code>audit.tolerance</code> x max(1, |value|) = {fmt(cfg.get('tolerance'))} x max(1, |value|). "
            "Timing columns are measurements of the machine and are not compared. "
            "Table: <a href='../audit.csv'>audit.csv</a>.</p>"
            + (f"<div class='scroll'><table><caption>Re-runs and their match</caption><thead>{head}</thead>"
               f"<tbody>{rows}</tbody></table></div>" if len(audit) else ""))


def provenance_footer(config: dict, run_metas: list[dict]) -> str:
    git = provenance.git_state()
    devices = sorted({m.get("device_name", "?") for m in run_metas}) or ["(no training runs)"]
    run_versions = {}
    for m in run_metas:
        run_versions.update({k: v for k, v in m.get("versions", {}).items() if v})
    dirty = sorted({str(m.get("git", {}).get("dirty")) for m in run_metas})
    commits = sorted({str(m.get("git", {}).get("commit"))[:10] for m in run_metas})
    diverged = sum(bool(m.get("diverged")) for m in run_metas)
    return (
        "<footer id='provenance'><h2>Provenance</h2>"
        f"<p>Code: commit <code>{fmt(git['commit'])}</code> (uncommitted changes at report time: {fmt(git['dirty'])}; "
        f"in runs: {', '.join(dirty) or '–'}; runs trained at {html.escape(', '.join(commits)) or '–'}). "
        f"Runs: {len(run_metas)}, diverged: {diverged}. "
        f"Seeds: {fmt(config.get('seeds'))}; seed_offset {int(config.get('seed_offset') or 0)}. Devices: {html.escape(', '.join(devices))}.</p>"
        f"<p>Versions: {html.escape(', '.join(f'{k} {v}' for k, v in sorted((run_versions or provenance.versions()).items()) if v))}</p>"
        f"<details><summary>Config</summary><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre></details>"
        "</footer>")


# --- the page ----------------------------------------------------------------------------------------

def sections_of(experiment_ids: list[str]) -> list[tuple[contract.Section, list[str]]]:
    """The lecture's sections that have experiments here, in order, each with its experiments."""
    out: dict[contract.Section, list[str]] = {}
    for exp in experiment_ids:
        out.setdefault(experiments.get(exp).SECTION, []).append(exp)
    return list(out.items())


def build(config: dict, claims: pd.DataFrame, figures_root: Path, captions_dir: Path,
          run_metas: list[dict], experiment_ids: list[str], audit: pd.DataFrame | None = None,
          results: Path | None = None) -> str:
    sections = sections_of(experiment_ids)
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{TITLE}</title><style>{CSS}</style></head><body>",
             f"<h1 id='top'>{TITLE}</h1>",
             provenance_header(config, run_metas, results),
             "<p>Every claim of the lecture <i>When Training Fails</i> (Hung-yi Lee, ML 2021 Spring), measured with "
             f"real training at the <b>{fmt(config.get('preset', 'custom'))}</b> preset.</p>",
             toc(sections), overview(sections, claims, figures_root), how_to_read(claims),
             claim_cards(claims, config, figures_root, captions_dir)]
    for section, exps in sections:
        parts.append(f"<h2 id='{section.anchor}'>{html.escape(str(section))} <a class='top' href='#top'>top</a></h2>")
        parts.append(f"<p class='lecture'>{html.escape(section.claim)}</p>")
        order = lead_order(exps, figures_root)
        first = findings.lead(claims, order) if len(claims) else None
        if first:
            parts.append(f"<p class='finding'><b>Found:</b> {html.escape(section_finding(claims, order))}</p>")
        parts += [experiment_html(exp, claims, figures_root, captions_dir, finding=first is None or exp != first["experiment"])
                  for exp in exps]
    parts.append(f"<h2>All claims <a class='top' href='#top'>top</a></h2>{full_claims(claims)}"
                 "<p>Also as <a href='../claims.csv'>claims.csv</a> (with the per-seed values behind every interval).</p>")
    if audit is not None:
        parts.append(audit_section(audit, config))
    parts.append(provenance_footer(config, run_metas))
    parts.append(f"<a id='to-top' href='#top'>top</a><script>{JS}</script></body></html>")
    return "\n".join(parts)


VERDICT_COLUMNS = ["role", "experiment", "claim_id", "kind", "verdict", "value", "interval", "level", "verdict_at_95",
                   "family", "statement"]


def verdicts_table(claims: pd.DataFrame) -> pd.DataFrame:
    """The verdicts as this report reads them, for Snakemake's --report (results/report/verdicts.csv):
    the family-wise verdict of every claim, the primaries first, then the other tests, then checks,
    demonstrations and claims not applicable here; each with its value, the interval the verdict was
    read from and its level, and the unadjusted 95% verdict beside it."""
    rows = []
    for c in claims.to_dict("records"):
        applicable = bool(c.get("applicable", True))
        lo, hi, _ = _read_interval(c)
        order = (0 if c.get("role") == "primary" else 1) if c.get("kind") == "test" and applicable else 2
        rows.append((order, {
            "role": c.get("role") if isinstance(c.get("role"), str) and c.get("role") else "",
            "experiment": c["experiment"], "claim_id": c["claim_id"], "kind": c.get("kind"),
            "verdict": verdict_words(c) if applicable else "not applicable", "value": c.get("value"),
            "interval": interval_text(c) if _values(c) is not None else f"[{lo:.4g}, {hi:.4g}]",
            "level": f"{100 * float(c.get('level_adjusted') or stats.LEVEL):.4g}%" if _family_read(c) else "95%",
            "verdict_at_95": str(c.get("verdict_unadjusted", "")).replace("_", " "),
            "family": c.get("family") if isinstance(c.get("family"), str) else "", "statement": c["statement"]}))
    rows.sort(key=lambda r: r[0])  # stable: each group keeps the experiments' order
    return pd.DataFrame([r for _, r in rows], columns=VERDICT_COLUMNS)


def collect_claims(paths: list[Path]) -> pd.DataFrame:
    frames = [store.read_table(p) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["experiment", "verdict"])


# --- findings in words (trainfail.analysis.findings, with the experiments' FINDINGS phrases) -------------

def lead_order(exps: list[str], figures_root: Path | None = None) -> list[str]:
    """A section's experiments with the one whose figure heads the section first: its primary leads
    the section's finding."""
    png = headline(figures_root, exps) if figures_root else None
    first = png.parent.name if png is not None and png.parent.name in exps else None
    return [first] + [e for e in exps if e != first] if first else list(exps)


def phrases(exps: list[str]) -> dict:
    """Each experiment's FINDINGS phrases (contract.OPTIONAL)."""
    return {e: getattr(experiments.get(e), "FINDINGS", {}) for e in exps if e in experiments.REGISTRY}


def section_finding(claims: pd.DataFrame, exps: list[str]) -> str:
    return findings.section_finding(claims, exps, phrases(exps))


def claim_sections(claims: pd.DataFrame) -> list[tuple[contract.Section, list[str]]]:
    """The lecture's sections of the experiments in `claims`, in the lecture's order."""
    present = set(claims["experiment"]) if len(claims) else set()
    return sections_of([e for e in experiments.MODULES if e in present])


def findings_markdown(claims: pd.DataFrame, figures_root: Path | None = None, report_link: str = "report/index.html") -> str:
    """results/findings.md: each section's finding (its headline experiment's primary first), the claims that failed."""
    sections = [(s, lead_order(exps, figures_root)) for s, exps in claim_sections(claims)]
    return findings.markdown(claims, sections, phrases([e for _, exps in sections for e in exps]), report_link)


def console_summary(claims_csv: Path, report_html: Path, findings_md: Path | None = None) -> str:
    """What the console prints when the pipeline finishes: each section's finding, the tally, the
    claims that failed, where the report and the findings are."""
    claims = pd.read_csv(claims_csv)
    tests = claims[claims["kind"].eq("test") & claims["applicable"].astype(bool)]
    count = lambda part: ", ".join(f"{int(n)} {v.replace('_', ' ')}" for v, n in
                                   ((v, part["verdict"].eq(v).sum()) for v in stats.VERDICTS) if n)
    primaries = tests[tests["role"].eq("primary")] if "role" in tests else tests.iloc[:0]
    figures_root = Path(report_html).parent.parent / "figures"
    said = "".join(f"  {s}: {section_finding(claims, lead_order(exps, figures_root))}\n" for s, exps in claim_sections(claims))
    bad = findings.failed(claims)
    failed = (f"  claims that failed ({len(bad)}): " + ", ".join(f"{c['experiment']}/{c['claim_id']}"
                                                            + (" (primary)" if c.get("role") == "primary" else "")
                                                            for c in bad) + "\n") if bad else "  claims that failed: none\n"
    return (f"trainfail findings:\n{said}{failed}"
            f"trainfail report: {report_html}\n" + (f"trainfail findings: {findings_md}\n" if findings_md else "") +
            f"  primary claims: {count(primaries) or 'none'} (of {len(primaries)}; {stats.FAMILY_METHOD}, family-wise "
            f"{stats.ALPHA:g})\n"
            f"  all test claims: {count(tests) or 'none'} (of {len(tests)}; {stats.FAMILY_METHOD} within each family); "
            f"{len(claims) - len(tests)} checks, demonstrations and claims not applicable here, not counted")
