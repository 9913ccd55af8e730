"""Findings in plain words, generated from the claims: what the report, the console and
results/findings.md say a run found.

Nothing here is written per result. A claim's sentence is its statement (the claim, as the
experiment declared it before any data) followed by what the numbers say of it:

    reproduced       "<statement> — reproduced, 0.32 (interval 0.30 to 0.35), above 0."
    not reproduced   "<statement> — not reproduced, 0.18 (interval 0.072 to 0.37), below the claimed 0.8."
    equivalent       "<statement> — no difference beyond ±0.02, -0.00012 (interval -0.0091 to 0.0089)."
    not equivalent   "<statement> — not equivalent, 0.14 (interval 0.033 to 0.24), beyond ±0.02."
    inconclusive     "<statement> — inconclusive, 0.064 (interval -0.065 to 0.19) on both sides of 0
                     (at 95% alone: reproduced)."

The verdict is the family-wise one (`verdict`), read from the interval it was decided on
(`ci_low_adjusted`, `ci_high_adjusted` for an applicable test, the 95% interval otherwise). Where
the generic words would miss what a verdict means, an experiment may declare a phrase per verdict,
before any data (`FINDINGS` = {claim id or fnmatch pattern: {verdict: phrase}}): it is appended,
"...: the update count explains it." A section's finding leads with its primary claim, then counts
its other tests; a figure's sentence is the finding of the claim it shows (`figure_claim`).
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Iterable, Mapping

import pandas as pd

Phrases = Mapping[str, Mapping[str, str]]   # claim id or fnmatch pattern -> verdict -> phrase
VERDICT_ORDER = ("reproduced", "not_reproduced", "equivalent", "not_equivalent", "inconclusive")


def num(x: Any) -> str:
    """A number as a sentence shows it: two significant digits (0.30, 0.065, 1.2, 79), whole
    numbers from 100 up (1437), scientific below 0.0001 (3.8e-29); "n/a" when missing."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(x):
        return "n/a"
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{x:.0f}"
    if a < 1e-4:
        return f"{x:.1e}"
    return f"{x:#.2g}".rstrip(".")


def constant(x: Any) -> str:
    """A declared constant (a threshold, a margin) as written: up to 3 significant digits (0.02, 167)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return f"{x:.3g}" if math.isfinite(x) else "n/a"


def _float(c: Mapping, key: str) -> float:
    try:
        v = float(c.get(key))
    except (TypeError, ValueError):
        return math.nan
    return v


def _text(c: Mapping, key: str) -> str:
    v = c.get(key)
    return v.strip() if isinstance(v, str) else ""


def _applicable(c: Mapping) -> bool:
    v = c.get("applicable", True)
    if isinstance(v, str):
        return v.strip().lower() not in ("false", "0", "")
    return bool(v) if v == v else True


def verdict(c: Mapping) -> str:
    """The claim's verdict: the family-wise one where there is one."""
    v = _text(c, "verdict") or _text(c, "verdict_unadjusted")
    return v or "inconclusive"


def interval(c: Mapping) -> tuple[float, float]:
    """The interval the verdict was read from: the family-wise one for an applicable test."""
    lo, hi = _float(c, "ci_low_adjusted"), _float(c, "ci_high_adjusted")
    if c.get("kind") == "test" and _applicable(c) and math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    return _float(c, "ci_low"), _float(c, "ci_high")


def margin(c: Mapping) -> float | None:
    """The equivalence margin: the threshold of a "within" claim, else the declared `margin`."""
    m = _float(c, "threshold") if c.get("direction") == "within" else _float(c, "margin")
    return abs(m) if math.isfinite(m) and m > 0 else None


def numbers(c: Mapping) -> str:
    """The value and its interval: "0.32 (interval 0.30 to 0.35)"; "2.6 in log10 (...)" where the
    metric is a logarithm (a threshold of 2 then means 100x)."""
    lo, hi = interval(c)
    scale = " in log10" if _text(c, "metric").startswith("log10") else ""
    if lo == hi or not (math.isfinite(lo) and math.isfinite(hi)):
        return num(c.get("value")) + scale
    return f"{num(c.get('value'))}{scale} (interval {num(lo)} to {num(hi)})"


def phrase(c: Mapping, phrases: Phrases | None) -> str:
    """The experiment's phrase for this claim's verdict ("" without one)."""
    for pattern, by_verdict in (phrases or {}).items():
        if fnmatch.fnmatchcase(str(c.get("claim_id")), pattern):
            return by_verdict.get(verdict(c), "")
    return ""


def _statement(c: Mapping) -> str:
    s = _text(c, "statement") or str(c.get("claim_id", "the claim")).replace("_", " ")
    return s.rstrip(" .")


def judgement(c: Mapping) -> str:
    """What the numbers say of the claim, with the numbers: "reproduced, 0.32 (interval 0.30 to
    0.35), above 0"."""
    v, direction = verdict(c), c.get("direction", ">")
    t, m, shown = constant(c.get("threshold")), constant(margin(c)), numbers(c)
    side, other = {">": ("above", "below"), "<": ("below", "above")}.get(direction, ("within", "beyond"))
    if not _applicable(c):
        return f"not applicable here, {shown}"
    if v == "reproduced":
        return f"reproduced, {shown}, {side} {t}"
    if v == "not_reproduced":
        return f"not reproduced, {shown}, {other} the claimed {t}"
    if v == "equivalent":
        return (f"equivalent as claimed, {shown}, within ±{m}" if direction == "within" else
                f"no difference beyond ±{m}, {shown}")
    if v == "not_equivalent":
        return f"not equivalent, {shown}, beyond ±{m}"
    n, min_n = _float(c, "n"), _float(c, "min_n")
    if math.isfinite(n) and math.isfinite(min_n) and n < min_n:
        return f"inconclusive, {shown}: too few samples ({n:g}, needs {min_n:g})"
    spans = f"±{m}" if direction == "within" else t
    unadjusted = _text(c, "verdict_unadjusted")
    alone = (f" (at 95% alone: {unadjusted.replace('_', ' ')})"
             if c.get("kind") == "test" and unadjusted and unadjusted != v else "")
    return f"inconclusive, {shown} on both sides of {spans}{alone}"


def sentence(c: Mapping, phrases: Phrases | None = None) -> str:
    """One claim in one sentence: its statement, the verdict with its numbers, the experiment's
    phrase for that verdict."""
    kind = {"check": " (a check)", "demonstration": " (a demonstration)"}.get(str(c.get("kind")), "")
    extra = phrase(c, phrases)
    return f"{_statement(c)}{kind} — {judgement(c)}{': ' + extra if extra else ''}."


def _records(claims: pd.DataFrame | Iterable[Mapping]) -> list[dict]:
    return claims.to_dict("records") if isinstance(claims, pd.DataFrame) else [dict(c) for c in claims]


def lead(claims: pd.DataFrame | Iterable[Mapping], experiments: list[str] | None = None) -> dict | None:
    """The claim that speaks for a group of experiments (`experiments`' order, else the claims'):
    the first applicable primary, else the first applicable test, else the first claim."""
    rows = _records(claims)
    if experiments is not None:
        order = {e: i for i, e in enumerate(experiments)}
        rows = sorted((r for r in rows if r.get("experiment") in order), key=lambda r: order[r["experiment"]])
    for wanted in (lambda r: r.get("role") == "primary" and _applicable(r),
                   lambda r: r.get("kind") == "test" and _applicable(r), lambda r: True):
        found = [r for r in rows if wanted(r)]
        if found:
            return found[0]
    return None


def counts(tests: list[dict]) -> str:
    """Verdict counts in words: "3 reproduced, 1 not reproduced and 8 inconclusive"."""
    parts = [f"{sum(verdict(c) == v for c in tests)} {v.replace('_', ' ')}" for v in VERDICT_ORDER
             if any(verdict(c) == v for c in tests)]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def section_finding(claims: pd.DataFrame | Iterable[Mapping], experiments: list[str],
                    phrases: Mapping[str, Phrases] | None = None) -> str:
    """A lecture section's finding in one or two sentences: its lead claim (`lead`) in words, then
    the verdicts of its other applicable tests. `phrases`: experiment -> its FINDINGS."""
    rows = [r for r in _records(claims) if r.get("experiment") in experiments]
    first = lead(rows, experiments)
    if first is None:
        return "No claims were measured here."
    text = sentence(first, (phrases or {}).get(first.get("experiment")))
    others = [r for r in rows if r.get("kind") == "test" and _applicable(r) and r is not first
              and (r.get("experiment"), r.get("claim_id")) != (first.get("experiment"), first.get("claim_id"))]
    if others:
        text += (f" Its other {len(others)} tests: {counts(others)}." if len(others) > 1 else
                 f" Its other test: {counts(others).split(' ', 1)[1]}.")
    return text


_NOT_WORDS = {"vs", "and", "the", "per", "of", "at", "to", "by", "in", "with"}


def _words(name: str) -> set[str]:
    return {w for w in name.lower().replace("-", "_").split("_") if len(w) > 2 and w not in _NOT_WORDS
            and not w.replace(".", "").isdigit()}


def figure_claim(stem: str, claims: pd.DataFrame | Iterable[Mapping], mapping: Mapping[str, str] | None = None) -> dict | None:
    """The claim a figure shows: `mapping` (figure stem, or the start of one -> claim id or fnmatch
    pattern; the experiment's FIGURE_CLAIMS) where it names one that exists; else the claim whose
    id shares the most words with the figure's name ("warmup_spike" -> warmup_lowers_spike_adam; the
    lead among equals); else (and for the figure named after the experiment) the lead (`lead`)."""
    rows = _records(claims)
    for start, pattern in sorted((mapping or {}).items(), key=lambda kv: -len(kv[0])):  # the longest match first
        if stem.startswith(start):
            found = [r for r in rows if fnmatch.fnmatchcase(str(r.get("claim_id")), pattern)]
            if found:
                return found[0]
    if any(stem == r.get("experiment") for r in rows):  # the experiment's own figure
        return lead(rows)
    shared = {i: len(_words(stem) & _words(str(r.get("claim_id")))) for i, r in enumerate(rows)}
    best = max(shared.values(), default=0)
    if best:
        return lead([r for i, r in enumerate(rows) if shared[i] == best])
    return lead(rows)


def figure_sentence(stem: str, claims: pd.DataFrame | Iterable[Mapping], mapping: Mapping[str, str] | None = None,
                    phrases: Phrases | None = None) -> str:
    """A figure's caption: the finding of the claim it shows."""
    c = figure_claim(stem, claims, mapping)
    return sentence(c, phrases) if c else "A figure of this experiment (it has no claims)."


def failed(claims: pd.DataFrame | Iterable[Mapping]) -> list[dict]:
    """The applicable tests that came out against their claim (not reproduced, not equivalent), the
    primaries first."""
    rows = [r for r in _records(claims) if r.get("kind") == "test" and _applicable(r)
            and verdict(r) in ("not_reproduced", "not_equivalent")]
    return sorted(rows, key=lambda r: r.get("role") != "primary")


def markdown(claims: pd.DataFrame | Iterable[Mapping], sections: list[tuple[Any, list[str]]],
             phrases: Mapping[str, Phrases] | None = None, report: str = "report/index.html") -> str:
    """results/findings.md: per lecture section (its `str` as the heading, its experiments) its
    finding, then the claims that failed."""
    rows = _records(claims)
    out = ["# Findings", "",
           f"Generated from claims.csv (family-wise verdicts); the figures, intervals and runs are in [the report]({report}).", ""]
    for section, exps in sections:
        out += [f"## {section}", "", section_finding(rows, exps, phrases), ""]
    bad = failed(rows)
    out += ["## Claims that failed", ""]
    out += [f"- `{r.get('experiment')}/{r.get('claim_id')}`{' (primary)' if r.get('role') == 'primary' else ''}: "
            f"{sentence(r, (phrases or {}).get(r.get('experiment')))}" for r in bad] or ["None."]
    return "\n".join(out) + "\n"
