"""Tables for papers: a table an analysis writes as CSV beside its figures gets a LaTeX twin.

The report shows such tables (Keskar's Tables 2-4, the BN steps table) as HTML tables and links
both files; `python -m trainfail analyze` calls `write_latex_beside_csvs` on every figures folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trainfail.core import store

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "±": r"$\pm$", "–": "--"}


def escape(value) -> str:
    """A cell as LaTeX text: every special character escaped, missing as empty."""
    return "".join(_SPECIAL.get(ch, ch) for ch in ("" if pd.isna(value) else str(value)))


def latex_table(df: pd.DataFrame) -> str:
    """A table as a LaTeX tabular with booktabs rules (\\usepackage{booktabs})."""
    lines = [r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule",
             " & ".join(escape(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}", ""])


def write_latex_beside_csvs(folder: str | Path) -> list[Path]:
    """<name>.tex beside every <name>.csv in `folder` (cells read as text, as written)."""
    out = []
    for csv in sorted(Path(folder).glob("*.csv")):
        out.append(csv.with_suffix(".tex"))
        store.write_text(out[-1], latex_table(pd.read_csv(csv, dtype=str, keep_default_na=False)))
    return out
