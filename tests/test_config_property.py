"""Property test (issue 14): a careless edit of the config is either refused before any job, with
a message naming a key, or accepted as a config the plan builds without error.

Hypothesis mutates the merged smoke config the way a user might: a value of the wrong type, NaN or
infinity, an integral float or a huge integer, a non-string key (YAML's `on:`, `1:`), an empty
list or mapping, an unknown key, a deleted key, a long or odd string. Derandomized (a fixed
sequence of examples) and bounded, so it runs in CI in seconds. The sample of accepted mutations
that goes through real Snakemake is in test_faults.py.
"""

from __future__ import annotations

import copy
import functools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainfail import config as tf_config
from trainfail import experiments
from trainfail.config import ConfigError, load_yaml, merge, validate
from trainfail.plan import describe, make_plan

from .repo_copy import ROOT

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
EXAMPLES = 300


_load_schema = tf_config.load_schema


@functools.lru_cache(maxsize=None)
def _schema(path: str) -> dict:
    return _load_schema(path)


def cached_schema(path) -> dict:
    """The composed schema read once (validation never changes it): 20 ms an example, not 180."""
    return _schema(str(path))


@functools.lru_cache(maxsize=None)
def smoke() -> dict:
    """config.yaml with the smoke preset over it, as Snakemake merges them, every default filled
    in (so that every experiment's every key can be edited)."""
    return validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets" / "smoke.yaml")), SCHEMA)


def paths(node, prefix=()) -> list[tuple]:
    """Every key path into the config (mappings and lists), the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out += paths(value, (*prefix, key))
    return out


def _at(node, path):
    for p in path:
        node = node[p]
    return node


ODD_TEXT = st.sampled_from(["", " ", "x" * 5000, "\u00e9\u4e2d\U0001f600", "a\nb", "$\\notacommand$", "$x^2$",
                            "{braces}", "'quote\"", "../../etc", "--flag", "NaN", "null", "$", "\\"])
REPLACEMENTS = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e300, -1e300, 2**40, -(2**40), 10**400,
                     True, False, None, 0, -1, 0.0, -0.5, 1.5, [], {}, [[]], [{}], [None]]),
    st.integers(min_value=-10, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    ODD_TEXT,
    st.lists(st.integers(min_value=-3, max_value=50), max_size=4),
)
NON_STRING_KEYS = st.sampled_from([True, False, 1, 0, None, 1.5])


@st.composite
def mutated(draw):
    """The smoke config with one to three careless edits; returns (config, edited paths)."""
    cfg = copy.deepcopy(smoke())
    edited = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(cfg)))
        parent, key, value = _at(cfg, path[:-1]), path[-1], _at(cfg, path)
        kind = draw(st.sampled_from(["replace", "integral_float", "delete", "unknown_key", "non_string_key",
                                     "empty", "odd_text"]))
        if kind == "integral_float" and isinstance(value, int) and not isinstance(value, bool):
            parent[key] = float(value)
        elif kind == "delete" and isinstance(parent, dict):
            del parent[key]
        elif kind == "unknown_key" and isinstance(value, dict):
            value[draw(st.sampled_from(["typo", "lr_", "enabeld", "x" * 300]))] = draw(REPLACEMENTS)
        elif kind == "non_string_key" and isinstance(value, dict):
            value[draw(NON_STRING_KEYS)] = draw(REPLACEMENTS)
        elif kind == "empty":
            parent[key] = [] if isinstance(value, list) else {} if isinstance(value, dict) else ""
        elif kind == "odd_text":
            parent[key] = draw(ODD_TEXT)
        else:
            parent[key] = draw(REPLACEMENTS)
        edited.append(path)
    return cfg, edited


OUTCOMES: dict[str, int] = {"refused": 0, "accepted": 0}


@pytest.fixture(autouse=True)
def _cached_schema(monkeypatch):
    monkeypatch.setattr(tf_config, "load_schema", cached_schema)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_a_mutated_config_is_refused_naming_a_key_or_planned(case):
    cfg, edited = case
    try:
        validate(cfg, SCHEMA)
        plan = make_plan(cfg, [e for e in experiments.MODULES if e in cfg["experiments"]])
    except ConfigError as e:
        OUTCOMES["refused"] += 1
        message = str(e)
        # every line of the message names a key path (or the top level), and one of them lies
        # in the part of the config that was edited (a cross-reference may name its partner)
        keys = re.findall(r"^  (\S+?)(?::| \(the key )", message, flags=re.M)
        assert keys, message
        assert any(k.split(".")[0] in {str(p[0]) for p in edited} or k == "(top level)" for k in keys), (edited, message)
        return
    OUTCOMES["accepted"] += 1
    describe(plan)  # the plan table (results/plan.tsv) too
    for settings_ in plan.runs.values():
        tf_config.canonical_json(settings_)  # what a job file holds


def test_the_property_test_saw_both_outcomes():
    """Runs after the property test (file order): the mutations are not all refused, nor all accepted."""
    if not OUTCOMES["refused"] + OUTCOMES["accepted"]:
        pytest.skip("run with the property test")
    print(f"property test: {OUTCOMES}")
    assert OUTCOMES["refused"] > 0.2 * EXAMPLES and OUTCOMES["accepted"] > 0.05 * EXAMPLES, OUTCOMES


def accepted_sample(n: int) -> list[tuple[dict, list]]:
    """The first n accepted mutations of a derandomized run, each editing a different experiment."""
    found: list[tuple[dict, list]] = []

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def collect(case):
        cfg, edited = case
        try:
            validate(cfg, SCHEMA)
            make_plan(cfg, [e for e in experiments.MODULES if e in cfg["experiments"]])
        except ConfigError:
            return
        touched = {p[1] for p in edited if p[0] == "experiments" and len(p) > 1}
        if len(found) < n and len(touched) == 1 and touched.isdisjoint(t for _, es in found for t in es):
            found.append((cfg, sorted(touched)))

    collect()
    return found


@pytest.mark.e2e
def test_accepted_mutations_run_through_snakemake(tmp_path):
    """A few accepted mutations through real Snakemake on the smoke preset: each one's DAG is
    built (validation, plan, job files: a dry run), and the one with the fewest runs is trained and
    analysed for real (its experiment's named target) to a table, figures and claims."""
    import yaml

    from .repo_copy import copy_repo, snakemake

    sample = accepted_sample(3)
    assert len(sample) == 3
    repo = copy_repo(tmp_path)
    for i, (cfg, touched) in enumerate(sample):
        (repo / f"mutated{i}.yaml").write_text(yaml.safe_dump(cfg))
        proc = snakemake(repo, "--configfile", "presets/smoke.yaml", f"mutated{i}.yaml", "--cores", "1", "-n")
        assert "Traceback" not in proc.stdout + proc.stderr
    def runs(i: int) -> int:
        cfg, (experiment,) = sample[i]
        return len(make_plan(cfg, [experiment]).by_experiment[experiment])

    i = min(range(len(sample)), key=runs)
    experiment = sample[i][1][0]
    proc = snakemake(repo, "--configfile", "presets/smoke.yaml", f"mutated{i}.yaml", "--cores", "2", experiment,
                     timeout=600)
    assert (repo / "results" / "claims" / f"{experiment}.csv").exists(), proc.stderr[-3000:]
