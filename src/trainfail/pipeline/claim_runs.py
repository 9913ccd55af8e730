"""Which runs each claim rests on: the `runs` column of results/claims/<id>.csv (the claim cards).

An experiment's claims() reads its table (one row per run or point, with `seed` and, where a row
is one run, `run_id`) and hands slices of it to the estimators (stats.mean, paired, welch, ...).
`trace` calls claims() once more on a copy of the table whose index cannot be mistaken for a seed
or a count (row i is labelled ROW + i), with the estimators wrapped to note the index labels of the
pandas objects they are given, and stats.claim wrapped to note which estimate each claim got. The
claims that count are the ones the analysis computed first, unchanged; the traced call only names
rows, and is thrown away when it fails or disagrees with them (the claims then fall back to the
experiment's runs of the claim's seeds, or to every run of the experiment, and say so).

A traced row names its run by `run_id`, else (a table without run ids) by its seed and the labels
the experiment gave its runs (contract.labelled: arm, group, ...) that the row carries as columns.
"""

from __future__ import annotations

import contextlib
import json
import math

import pandas as pd

from trainfail.analysis import stats

ROW = 7_000_000_000  # far above any seed, step or count an index could otherwise hold
ESTIMATORS = ("mean", "paired", "welch", "median_ratio", "spearman", "proportion")


@contextlib.contextmanager
def _tracing(rows: dict):
    """Within: each stats.claim(...) notes in rows[claim_id] the traced table rows of its estimate
    ({"rows": positions, "seeds": the seeds of the per-seed series it was given, when indexed by seed})."""
    seen: dict[int, tuple[object, set]] = {}
    originals = {name: getattr(stats, name) for name in (*ESTIMATORS, "claim")}

    def wrap(f):
        def traced(*args, **kwargs):
            est = f(*args, **kwargs)
            labels, seeds = set(), set()
            for a in (*args, *kwargs.values()):
                if isinstance(a, (pd.Series, pd.DataFrame)):
                    labels |= {int(i) for i in a.index if isinstance(i, int) and i >= ROW}
                    if "seed" in (a.index.names or []):  # a per-seed series (groupby, set_index, pivot)
                        seeds |= {int(s) for s in a.index.get_level_values("seed") if s == s}
            seen[id(est)] = (est, labels, seeds)  # the estimate kept alive: its id stays its own
            return est
        return traced

    def claim(experiment, claim_id, statement, metric, estimate, *args, **kwargs):
        _, labels, seeds = seen.get(id(estimate), (None, set(), set()))
        rows[claim_id] = {"rows": sorted(i - ROW for i in labels), "seeds": sorted(seeds)}
        return originals["claim"](experiment, claim_id, statement, metric, estimate, *args, **kwargs)

    try:
        for name in ESTIMATORS:
            setattr(stats, name, wrap(originals[name]))
        stats.claim = claim
        yield
    finally:
        for name, f in originals.items():
            setattr(stats, name, f)


def trace(claims_fn, table: pd.DataFrame, expected: pd.DataFrame) -> dict[str, dict] | None:
    """claim id -> {"rows": the table's row positions its estimate was computed from, "seeds": the
    seeds of the per-seed series it was given}, by calling
    `claims_fn(table)` again on a relabelled copy; None when that call fails or gives other values
    than `expected` (the claims computed first)."""
    copy = table.copy()
    copy.index = pd.RangeIndex(ROW, ROW + len(table))
    rows: dict[str, dict] = {}
    try:
        with _tracing(rows):
            again = pd.DataFrame(claims_fn(copy), columns=stats.CLAIM_COLUMNS)
    except Exception:  # an experiment that reads its index positionally: no trace, nothing wrong
        return None
    same = lambda a, b: (a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    if list(again["claim_id"]) != list(expected["claim_id"]) or not all(
            same(a, b) for a, b in zip(again["value"], expected["value"])):
        return None
    return rows


def _seed(record) -> int:
    """A run's seed (-1 for a run without one)."""
    seed = record.settings.get("seed")
    seed = record.meta.get("seed") if seed is None else seed
    return int(seed) if isinstance(seed, (int, float)) and seed == seed else -1


def _runs_by_seed(records) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in records:
        out.setdefault(_seed(r), []).append(r)
    return out


def _matches(record, row: dict) -> bool:
    return all(k not in row or str(row[k]) == str(v) for k, v in record.labels.items())


def runs_column(claims: pd.DataFrame, table: pd.DataFrame, records, traced: dict[str, dict] | None) -> list[str]:
    """Per claim, a JSON object {"runs": [[seed, run id], ...], "how": ...}: how is "rows" (the
    table rows its estimate read, each naming its run), "seeds" (the experiment's runs of the seeds
    of the per-seed series its estimate read), "experiment" (not traced: every run of the
    experiment) or "none" (the experiment trains no runs)."""
    by_seed = _runs_by_seed(records)
    every = sorted({(_seed(r), r.run_id) for r in records})
    out = []
    for c in claims.to_dict("records"):
        found: set[tuple[int, str]] = set()
        got = (traced or {}).get(c["claim_id"], {})
        for row in table.iloc[got.get("rows", [])].to_dict("records"):
            rid, seed = row.get("run_id"), row.get("seed")
            seed = int(seed) if isinstance(seed, (int, float)) and seed == seed else None
            if isinstance(rid, str) and rid:
                found.add((seed if seed is not None else -1, rid))
            elif seed is not None:
                found |= {(seed, r.run_id) for r in by_seed.get(seed, []) if _matches(r, row)}
        how = "rows"
        if not found and got.get("seeds"):
            how, found = "seeds", {(s, r.run_id) for s in got["seeds"] for r in by_seed.get(s, [])}
        if not found:
            how, found = ("experiment", set(every)) if records else ("none", set())
        out.append(json.dumps({"runs": sorted([s, r] for s, r in found), "how": how}))
    return out


def add_runs(claims: pd.DataFrame, claims_fn, table: pd.DataFrame, records) -> pd.DataFrame:
    """The claims with their `runs` column (see runs_column)."""
    rows = trace(claims_fn, table, claims)
    return claims.assign(runs=runs_column(claims, table, records, rows))


def runs_of(c: dict) -> tuple[list[tuple[int, str]], str]:
    """A claim row's runs and how they were found, from its `runs` column ([] and "" without one)."""
    try:
        data = json.loads(c.get("runs") or "")
    except (TypeError, ValueError):
        return [], ""
    return [(int(s), str(r)) for s, r in data.get("runs", [])], str(data.get("how", ""))
