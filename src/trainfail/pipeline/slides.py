"""The lecture mode: results/report/slides.html, one lecture section per 1280x720 screen.

Each slide: the lecture's claim (contract Section.claim) as its title, the section's headline
figure drawn again for the screen (plots.slide_mode: one 12 x 5.2 inch figure, every text at
plots.SLIDE_FONT = 14 pt or more, no footnote) and our finding as its footer (`footer`: the
section's primary claim, its family-wise verdict, value and interval from claims.csv). Arrow keys,
Page Up/Down, space, Home and End move; the slide number is in the address (#3). One file, offline:
the figures are embedded, nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import math
import tempfile
from pathlib import Path

import pandas as pd

from trainfail import experiments
from trainfail.analysis import findings, plots
from trainfail.core import contract, store
from trainfail.pipeline import report

WIDTH, HEIGHT = 1280, 720

CSS = f"""
*{{box-sizing:border-box}}
html,body{{margin:0;height:100%;background:#1e1e1e;font-family:system-ui,sans-serif;overflow:hidden}}
.slide{{position:absolute;left:50%;top:50%;width:{WIDTH}px;height:{HEIGHT}px;margin:{-HEIGHT // 2}px 0 0 {-WIDTH // 2}px;
 background:#fff;color:#222;padding:22px 40px 14px;display:none;flex-direction:column;transform-origin:center center}}
.slide.current{{display:flex}}
.kicker{{font-size:18px;color:#1a5fb4;font-weight:600;margin:0}}
.slide h1{{font-size:25px;line-height:1.25;margin:4px 0 10px;font-weight:600}}
.slide figure{{flex:1;margin:0;display:flex;align-items:center;justify-content:center;min-height:0}}
.slide img{{max-width:100%;max-height:100%;object-fit:contain}}
.slide footer{{font-size:18px;line-height:1.3;border-top:2px solid #ddd;padding-top:8px;display:flex;gap:1em;align-items:baseline}}
.slide footer .finding{{flex:1}} .slide footer .count{{color:#777;font-size:15px;white-space:nowrap}}
.verdict{{border-radius:4px;padding:0 0.3em;font-weight:700;white-space:nowrap}}
.reproduced{{background:#d9f2d9}} .not_reproduced{{background:#f7d4d4}} .inconclusive{{background:#fbefc8}}
.equivalent{{background:#d6e6f7}} .not_equivalent{{background:#ead9f2}} .na{{background:#eee}}
@media print{{html,body{{overflow:visible;background:#fff}}
 .slide{{display:flex;position:relative;left:0;top:0;margin:0;transform:none!important;break-after:page}}}}
"""

# One slide at a time, scaled to the window; the keys move, the address remembers (#n).
JS = """
(function(){
 var s=document.querySelectorAll('.slide'), i=0;
 function fit(){var k=Math.min(window.innerWidth/%d, window.innerHeight/%d);
  for(var j=0;j<s.length;j++) s[j].style.transform='scale('+k+')';}
 function show(n){i=Math.max(0,Math.min(s.length-1,n));
  for(var j=0;j<s.length;j++) s[j].classList.toggle('current', j===i);
  if(location.hash!=='#'+(i+1)) history.replaceState(null,'','#'+(i+1));}
 document.addEventListener('keydown',function(e){
  var next={ArrowRight:1,ArrowDown:1,PageDown:1,' ':1}[e.key], prev={ArrowLeft:1,ArrowUp:1,PageUp:1}[e.key];
  if(next){show(i+1);e.preventDefault();} else if(prev){show(i-1);e.preventDefault();}
  else if(e.key==='Home'){show(0);} else if(e.key==='End'){show(s.length-1);}});
 window.addEventListener('resize',fit);
 fit(); show((parseInt(location.hash.slice(1),10)||1)-1);
})();
""" % (WIDTH, HEIGHT)


def _num(x) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{float(x):.3g}"


def primary(section_exps: list[str], claims: pd.DataFrame) -> dict | None:
    """The section's primary claim (its first experiment's, in `section_exps`' order), else its
    first test claim, else its first claim (a section of demonstrations); None without any."""
    mine = claims[claims["experiment"].isin(section_exps)] if len(claims) else claims
    for rows in (mine[mine["role"].eq("primary")] if "role" in mine else mine.iloc[:0],
                 mine[mine["kind"].eq("test")] if "kind" in mine else mine.iloc[:0], mine):
        if len(rows):
            rows = rows.assign(_order=rows["experiment"].map(section_exps.index)).sort_values("_order", kind="stable")
            return rows.iloc[0].drop("_order").to_dict()
    return None


def footer(section: contract.Section, claims: pd.DataFrame, exps: list[str] | None = None) -> str:
    """Our finding for a slide, as HTML: the section's primary claim, its family-wise verdict and
    the value with the interval it was read at (claims.csv). The one place a slide's finding comes
    from: a sentence generator can replace it."""
    exps = exps if exps is not None else [e for e in experiments.MODULES if experiments.get(e).SECTION == section]
    c = primary(exps, claims)
    if c is None:
        return "<span class='finding'>No claim measured for this section here.</span>"
    verdict = str(c.get("verdict") or c.get("verdict_unadjusted") or "na")
    level = c.get("level_adjusted")
    level_text = f"{100 * float(level):.4g}% interval" if level is not None and pd.notna(level) else "95% interval"
    module = experiments.get(c["experiment"]) if c.get("experiment") in experiments.REGISTRY else None
    # the finding in words (the report's and findings.md's sentence), with its verdict's colour
    return (f"<span class='finding'><span class='verdict {html.escape(verdict)}'>"
            f"{html.escape(verdict.replace('_', ' '))}</span> "
            f"{html.escape(findings.sentence(c, getattr(module, 'FINDINGS', None)))} "
            f"({level_text}, n = {html.escape(str(c.get('n', '')))})</span>")


def draw_headline(exps: list[str], results: Path, ctx, outdir: Path) -> Path | None:
    """The section's headline figure (report.headline's choice) drawn again for a slide into
    outdir/<experiment>/: its experiments' figures() in slide mode, from their tables, until one
    draws its HEADLINE."""
    drawn = []
    for exp in exps:
        module = experiments.get(exp)
        table_csv = results / "tables" / f"{exp}.csv"
        if not table_csv.exists():
            continue
        (outdir / exp).mkdir(parents=True, exist_ok=True)
        with plots.slide_mode():
            contract.call(module.figures, store.read_table(table_csv), ctx.experiment(exp), outdir / exp, ctx=ctx)
        drawn.append(exp)
        name = getattr(module, "HEADLINE", None)
        if name and any(p.stem.startswith(name) for p in report.figure_pngs(outdir, exp)):
            break
    return report.headline(outdir, drawn) if drawn else None


def slide_html(number: int, total: int, section: contract.Section, png: Path | None, claims: pd.DataFrame,
               exps: list[str]) -> str:
    # the finding of the experiment whose figure the slide shows, where it has a primary
    shown_first = [png.parent.name] + [e for e in exps if e != png.parent.name] if png else exps
    img = (f"<img alt='{html.escape(str(section))}: {html.escape(png.stem.replace('_', ' '))}' "
           f"src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}'>" if png else "")
    return (f"<section class='slide' id='slide-{number}' data-section='{html.escape(section.number)}'>"
            f"<p class='kicker'>{html.escape(str(section))}</p><h1>{html.escape(section.claim)}</h1>"
            f"<figure>{img}</figure><footer>{footer(section, claims, shown_first)}"
            f"<span class='count'>{number} / {total}</span></footer></section>")


def build(config: dict, claims: pd.DataFrame, results: Path, experiment_ids: list[str]) -> str:
    from trainfail.training.context import Context

    ctx = Context(config, results)
    sections = report.sections_of(experiment_ids)
    slides = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (section, exps) in enumerate(sections, 1):
            png = draw_headline(exps, results, ctx, Path(tmp))
            slides.append(slide_html(k, len(sections), section, png, claims, exps))
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(report.TITLE)}: lecture mode</title><style>{CSS}</style></head><body>"
            + "".join(slides) + f"<script>{JS}</script></body></html>")
