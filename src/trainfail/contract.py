"""The experiment contract, in code: the lecture's sections and what an experiment module provides.

An experiment is one module in `trainfail.experiments` that satisfies `Experiment`:

    ID: str                                       = config key = rule name = file names
    SECTION: Section                              one of SECTIONS (the report groups by it)
    ORDER: int                                    its place within the section (the lecture's order)
    TITLE: str                                    one line
    runs(cfg, ctx) -> list[Settings]              one settings record per training run ([] if none),
                                                  plain or labelled(settings, arm=...) (labels: not hashed)
    table(cfg, records, ctx) -> DataFrame         the finished runs (with their labels) as one tidy table
    figures(table, cfg, outdir, ctx) -> None      PNG + PDF files into outdir (plots.save)
    claims(table, cfg, ctx) -> list[Claim]        stats.claim rows, verdicts computed

and optionally

    execute(settings, env) -> RunResult           runs whose settings say task == ID
    stage(settings) -> int                        runs of a later stage wait for the earlier ones

Besides the module: its schema block `workflow/schemas/experiments/<ID>.schema.yaml` (every key
typed, documented, the quick preset's values as defaults), its caption `workflow/report/<ID>.rst`
and its lines in `presets/smoke.yaml`. tests/test_registry.py checks all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from .context import Context, RunEnv
    from .records import RunRecord, RunResult

Settings = dict[str, Any]   # a run's settings: JSON-able; its hash is the run id
Claim = dict[str, Any]      # a row made by stats.claim


class Run(dict):
    """A run's settings (the dict itself: hashed into the run id) with labels that are not settings
    (arm, group, variant, ...): they tell the experiment's table() which run is which and never enter
    the run id. runs() returns plain settings or runs made by `labelled`. The same settings under
    two labels are one run, trained once, that table() receives once per label (plan.make_plan).
    A dict subclass so that every reader of settings works unchanged; a copy ({**run}) is plain
    settings: labels cannot leak into a run id."""

    labels: dict[str, Any]

    def __init__(self, settings: Settings, labels: dict[str, Any]):
        super().__init__(settings)
        self.labels = dict(labels)

    def __repr__(self) -> str:
        return f"labelled({dict.__repr__(self)}, **{self.labels!r})"


def labelled(settings: Settings, **labels: Any) -> Run:
    """`settings` with JSON-able labels: labelled(s, arm="tuned")."""
    return Run(settings, labels)


def labels_of(run: Settings) -> dict[str, Any]:
    """A run's labels ({} for plain settings)."""
    return dict(getattr(run, "labels", {}))


class Section(NamedTuple):
    number: str
    title: str

    def __str__(self) -> str:
        return f"{self.number} {self.title}"

    @property
    def anchor(self) -> str:
        return "section-" + self.number.replace(".", "-")


# The lecture's sections, in its order: the one spelling of each, used by the modules, the
# report's headings and table of contents, Snakemake's report categories and the README.
CRITICAL_POINTS = Section("1.1", "Critical points: local minima and saddle points")
BATCH_SIZE = Section("1.2", "Batch size")
MOMENTUM = Section("1.3", "Momentum")
STUCK = Section("2.1", "Training stuck is not a critical point")
ADAPTIVE = Section("2.2", "Adaptive learning rates: Adagrad, RMSprop, Adam")
SCHEDULING = Section("2.3", "Learning-rate scheduling: decay and warm-up")
FEATURE_NORMALIZATION = Section("3.2", "Feature normalization")
BN_AT_TEST_TIME = Section("3.5", "Batch normalization at test time")
BN_EFFECTIVENESS = Section("3.6", "Effectiveness of batch normalization")
COVARIATE_SHIFT = Section("3.7", "Internal covariate shift?")
MORE_NORMALIZATIONS = Section("3.8", "More normalizations")

SECTIONS: tuple[Section, ...] = (CRITICAL_POINTS, BATCH_SIZE, MOMENTUM, STUCK, ADAPTIVE, SCHEDULING,
                                 FEATURE_NORMALIZATION, BN_AT_TEST_TIME, BN_EFFECTIVENESS, COVARIATE_SHIFT,
                                 MORE_NORMALIZATIONS)


@runtime_checkable
class Experiment(Protocol):
    ID: str
    SECTION: Section
    ORDER: int
    TITLE: str

    def runs(self, cfg: dict, ctx: Context) -> list[Settings]: ...

    def table(self, cfg: dict, records: list[RunRecord], ctx: Context) -> pd.DataFrame: ...

    def figures(self, table: pd.DataFrame, cfg: dict, outdir: Path, ctx: Context) -> None: ...

    def claims(self, table: pd.DataFrame, cfg: dict, ctx: Context) -> list[Claim]: ...


class Executes(Protocol):
    """An experiment with custom runs (settings["task"] == ID)."""

    def execute(self, settings: Settings, env: RunEnv) -> RunResult: ...


class Staged(Protocol):
    """An experiment whose runs come in stages (a later stage waits for the earlier ones)."""

    def stage(self, settings: Settings) -> int: ...


REQUIRED = ("ID", "SECTION", "ORDER", "TITLE", "runs", "table", "figures", "claims")
OPTIONAL = ("execute", "stage")
