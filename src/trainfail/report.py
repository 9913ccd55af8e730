"""The report: one self-contained HTML page, claims first, then one section per lecture section.

Each experiment shows its figures (PNG inline, PDF beside it), its caption (the lecture's
claim, what was measured) and its claim rows with verdicts; a provenance footer says which code,
config, seeds, packages and devices produced the numbers.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd
import yaml

from . import experiments, provenance, stats, store

CSS = """
body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
table.claims{width:100%;table-layout:fixed} table.claims td:nth-child(2){font-size:0.85em}
table.claims td:nth-child(8){overflow-wrap:normal}
th{background:#f3f3f3} .reproduced{background:#d9f2d9} .not_reproduced{background:#f7d4d4}
.inconclusive{background:#fbefc8} figure{margin:1em 0} img{max-width:100%}
figcaption,.caption{font-size:0.9em;color:#444}
footer{font-size:0.8em;color:#555;border-top:1px solid #ccc;margin-top:3em}
pre{background:#f7f7f7;padding:0.5em;overflow-x:auto;font-size:0.8em}
"""


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


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


def _claimed(c: dict) -> str:
    """The claimed side of the threshold, spelled out: "> 0", "< 0.02", "within +-0.02"."""
    t = fmt(float(c.get("threshold", 0.0)))
    return f"within ±{t}" if c.get("direction") == "within" else f"{html.escape(str(c.get('direction', '>')))} {t}"


def claims_table(claims: pd.DataFrame) -> str:
    """Claim rows: the metric and its claimed side, the value with its 95% interval, the interval
    at the family-wise level (test claims), n, the verdict, the paper's number and a note."""
    if claims.empty:
        return "<p>No claims.</p>"
    head = ("<tr><th>experiment</th><th>claim</th><th>kind</th><th>statement</th><th>metric (claimed)</th>"
            "<th>value</th><th>95% interval</th><th>family-wise interval</th><th>n</th><th>verdict</th>"
            "<th>paper</th><th>note</th></tr>")
    rows = []
    for c in claims.to_dict("records"):
        verdict = c.get("verdict", c.get("verdict_unadjusted"))
        interval = f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]"
        adjusted = (f"[{fmt(c.get('ci_low_adjusted'))}, {fmt(c.get('ci_high_adjusted'))}] "
                    f"<small>({fmt(100 * float(c['level_adjusted']))}%)</small>"
                    if c.get("kind") == "test" and "level_adjusted" in c and bool(c.get("applicable", True)) else "–")
        rows.append(
            f"<tr class='{html.escape(str(verdict))}'><td><a href='#{c['experiment']}'>{fmt(c['experiment'])}</a>"
            f"</td><td>{fmt(c['claim_id'])}</td><td>{fmt(c.get('kind'))}</td><td>{fmt(c['statement'])}</td>"
            f"<td>{fmt(c['metric'])} <b>{_claimed(c)}</b></td><td>{fmt(c['value'])}</td><td>{interval}</td>"
            f"<td>{adjusted}</td><td>{fmt(c['n'])}</td><td><b>{fmt(verdict)}</b></td>"
            f"<td>{fmt(c.get('paper_value'))}</td><td>{fmt(c.get('note'))}</td></tr>")
    widths = (9, 10, 6, 17, 12, 5, 8, 9, 3, 8, 6, 7)  # percent, in column order
    cols = "".join(f"<col style='width:{w}%'>" for w in widths)
    return f"<table class='claims'><colgroup>{cols}</colgroup>{head}{''.join(rows)}</table>"


def verdict_summary(claims: pd.DataFrame) -> str:
    """The tally: test claims only, with the family size and the multiplicity method."""
    if claims.empty or "kind" not in claims:
        return "<p>No claims.</p>"
    tests = claims[claims["kind"].eq("test")]
    counts = tests["verdict"].value_counts().to_dict()
    tally = ", ".join(f"<b>{counts.get(v, 0)}</b> {v.replace('_', ' ')}" for v in stats.VERDICTS)
    m = int(claims["family_size"].iloc[0]) if "family_size" in claims and len(claims) else 0
    level = 100 * (1 - stats.ALPHA / m) if m else 100 * stats.LEVEL
    na = int((~tests["applicable"].astype(bool)).sum()) if "applicable" in tests else 0
    by_construction = claims[~claims["kind"].eq("test")]
    return (f"<p>Test claims (outcomes that could have come out either way): {tally} of {len(tests)}"
            + (f" ({na} cannot be tested on this device and are left out of the family)" if na else "") + ". "
            f"Family-wise error control: {stats.FAMILY_METHOD} over the family of <b>m = {m}</b> test claims at "
            f"alpha = {stats.ALPHA:g}, so each test's verdict is read from its interval at the {fmt(level)}% level; the "
            f"unadjusted 95% interval is shown beside it. Checks and demonstrations ({len(by_construction)}) hold by "
            "construction and are listed apart; they are not counted.</p>")


def figure_html(png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    links = " ".join(f"<a href='../figures/{png.parent.name}/{p.name}'>{p.suffix[1:].upper()}</a>"
                     for p in sorted(png.parent.glob(png.stem + ".*")))
    return (f"<figure><img alt='{html.escape(png.stem)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(png.stem)} ({links})</figcaption></figure>")


def provenance_footer(config: dict, run_metas: list[dict]) -> str:
    git = provenance.git_state()
    devices = sorted({m.get("device_name", "?") for m in run_metas}) or ["(no training runs)"]
    run_versions = {}
    for m in run_metas:
        run_versions.update({k: v for k, v in m.get("versions", {}).items() if v})
    dirty = sorted({str(m.get("git", {}).get("dirty")) for m in run_metas})
    diverged = sum(bool(m.get("diverged")) for m in run_metas)
    return (
        "<footer><h2>Provenance</h2>"
        f"<p>Code: commit <code>{fmt(git['commit'])}</code> (uncommitted changes at report time: {fmt(git['dirty'])}; "
        f"in runs: {', '.join(dirty) or '–'}). Runs: {len(run_metas)}, diverged: {diverged}. "
        f"Seeds: {fmt(config.get('seeds'))}. Devices: {html.escape(', '.join(devices))}.</p>"
        f"<p>Versions: {html.escape(', '.join(f'{k} {v}' for k, v in sorted((run_versions or provenance.versions()).items()) if v))}</p>"
        f"<details><summary>Config</summary><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre></details>"
        "</footer>")


def audit_section(audit: pd.DataFrame, config: dict) -> str:
    """The reproducibility audit: which sampled runs were re-run and whether they matched."""
    cfg = config.get("audit", {})
    matched = int(audit["match"].astype(bool).sum()) if not audit.empty else 0
    head = ("<tr><th>run</th><th>task</th><th>seed</th><th>stored on</th><th>re-run on</th><th>match</th>"
            "<th>largest difference</th><th>tolerance</th><th>note</th></tr>")
    rows = "".join(
        f"<tr class='{'reproduced' if bool(r['match']) else 'not_reproduced'}'><td><code>{fmt(r['run_id'])}</code></td>"
        f"<td>{fmt(r['experiment_task'])}</td><td>{fmt(r['seed'])}</td><td>{fmt(r['stored_device'])}</td>"
        f"<td>{fmt(r['device'])}</td><td><b>{fmt(bool(r['match']))}</b></td><td>{fmt(float(r['max_abs_diff']))}</td>"
        f"<td>{fmt(float(r['tolerance']))}</td><td>{fmt(r.get('note'))}</td></tr>"
        for r in audit.to_dict("records"))
    return ("<h2 id='audit'>Reproducibility audit</h2>"
            f"<p>{len(audit)} finished runs (a deterministic sample, <code>audit.sample</code> = {fmt(cfg.get('sample'))}) "
            f"were trained again from their stored settings and their metrics compared with the stored ones: "
            f"<b>{matched} of {len(audit)} match</b>. On the CPU a match means bit-identical; when a GPU is involved each "
            f"number may differ by <code>audit.tolerance</code> x max(1, |value|) = {fmt(cfg.get('tolerance'))} x max(1, |value|). "
            "Timing columns are measurements of the machine and are not compared. "
            "Table: <a href='../audit.csv'>results/audit.csv</a>.</p>"
            + (f"<table>{head}{rows}</table>" if len(audit) else ""))


def build(config: dict, claims: pd.DataFrame, figures_root: Path, captions_dir: Path,
          run_metas: list[dict], experiment_ids: list[str], audit: pd.DataFrame | None = None) -> str:
    title = "trainfail: When Training Fails, re-run"
    tests = claims[claims["kind"].eq("test")] if "kind" in claims else claims
    rest = claims[~claims["kind"].eq("test")] if "kind" in claims else claims.iloc[:0]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head><body>",
             f"<h1>{title}</h1>",
             "<p>Every claim of the lecture <i>When Training Fails</i> (Hung-yi Lee, ML 2021 Spring), "
             f"measured with real training at the <b>{fmt(config.get('preset', 'custom'))}</b> preset.</p>",
             verdict_summary(claims),
             "<h2>Test claims</h2>", claims_table(tests),
             "<details><summary><b>Checks and demonstrations</b>: by construction, not counted "
             f"({len(rest)})</summary>", claims_table(rest), "</details>"]
    section = None
    for exp in experiment_ids:
        module = experiments.get(exp)
        if module.SECTION != section:
            section = module.SECTION
            parts.append(f"<h2 id='{section.anchor}'>{html.escape(str(section))}</h2>")
        parts.append(f"<h3 id='{exp}'>{html.escape(module.TITLE)} <small>({exp})</small></h3>")
        caption = captions_dir / f"{exp}.rst"
        if caption.exists():
            parts.append(f"<div class='caption'>{caption_html(caption.read_text())}</div>")
        for png in sorted((figures_root / exp).glob("*.png")):
            parts.append(figure_html(png))
        mine = claims[claims["experiment"] == exp] if not claims.empty else claims
        parts.append(claims_table(mine))
        parts.append(f"<p>Table: <a href='../tables/{exp}.csv'>results/tables/{exp}.csv</a></p>")
    if audit is not None:
        parts.append(audit_section(audit, config))
    parts.append(provenance_footer(config, run_metas))
    parts.append("</body></html>")
    return "\n".join(parts)


def collect_claims(paths: list[Path]) -> pd.DataFrame:
    frames = [store.read_table(p) for p in paths]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["experiment", "verdict"])
