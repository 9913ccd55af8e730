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

`ctx` (the Context: seeds, device, data folder, other experiments' blocks) is the last parameter of
a hook that reads it, and left out of one that does not: the pipeline calls every hook through
`call`, which passes it only where the hook declares it.

and optionally

    execute(settings, env) -> RunResult           runs whose settings say task == ID
    stage(settings) -> int                        runs of a later stage wait for the earlier ones
    HEADLINE: str                                 the figure (its name, or the start of it) that
                                                  stands for the section in the report's overview
    PRIMARY: str                                  the one test claim that decides the lecture's claim
                                                  by its mechanism (declared before any data; a
                                                  claim id, or an fnmatch pattern whose first match
                                                  in claims()' order is the primary: e.g. the first
                                                  dataset's). Required of an experiment with tests.
    FIGURE_CLAIMS: dict[str, str]                 figure name (or its start) -> the claim id (or fnmatch
                                                  pattern) it shows: its caption and alt text are that
                                                  claim's finding (default: the primary, else the first test)
    FINDINGS: dict[str, dict[str, str]]           claim id (or pattern) -> verdict -> what that verdict
                                                  means, where the generic words would miss it
                                                  (trainfail.analysis.findings)

The lecture's one-sentence claim of each section is the section's (`Section.claim`, below).
Besides the module: its schema block `workflow/schemas/experiments/<ID>.schema.yaml` (every key
typed, documented, the quick preset's values as defaults), its caption `workflow/report/<ID>.rst`
its lines in `presets/smoke.yaml` and its figure fixture `tests/data/figure_tables/<ID>.csv.gz`.
tests/test_registry.py checks all of it and names every missing part in one failure.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

    from trainfail.training.context import Context, RunEnv
    from trainfail.core.run_record import RunRecord, RunResult

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
    claim: str  # the lecture's claim in one sentence: the report's section opener

    def __str__(self) -> str:
        return f"{self.number} {self.title}"

    @property
    def anchor(self) -> str:
        return "section-" + self.number.replace(".", "-")


# The lecture's sections, in its order: the one spelling of each, used by the modules, the
# report's headings, section openers and table of contents, Snakemake's report categories and the
# README.
CRITICAL_POINTS = Section(
    "1.1", "Critical points: local minima and saddle points",
    "When training stalls the gradient is near zero at a critical point, a local minimum or a saddle point; "
    "the Hessian tells which, a saddle can be escaped along a direction of negative curvature, and in many "
    "dimensions true local minima are rare.")
BATCH_SIZE = Section(
    "1.2", "Batch size",
    "A small batch takes many noisy updates, a large batch few careful ones; on parallel hardware a large "
    "batch costs little more time per update, yet small batches optimize and generalize better (flat rather "
    "than sharp minima).")
MOMENTUM = Section(
    "1.3", "Momentum",
    "Momentum adds the previous movement to the gradient step, which can carry training past saddle points "
    "and shallow local minima.")
STUCK = Section(
    "2.1", "Training stuck is not a critical point",
    "When the loss stops falling the gradient is often not small: training is stuck for other reasons than "
    "a critical point.")
ADAPTIVE = Section(
    "2.2", "Adaptive learning rates: Adagrad, RMSprop, Adam",
    "One learning rate cannot fit a surface that is steep in one direction and flat in another; Adagrad, "
    "RMSprop and Adam give each parameter its own rate from the size of its gradients.")
SCHEDULING = Section(
    "2.3", "Learning-rate scheduling: decay and warm-up",
    "Adaptive rates can burst when the accumulated gradients become small; decaying the learning rate calms "
    "the bursts, and a warm-up (a small rate first) keeps early statistics from misleading.")
FEATURE_NORMALIZATION = Section(
    "3.2", "Feature normalization",
    "Features on different scales make the error surface elongated and hard to optimize; standardizing them "
    "makes it rounder and gradient descent faster.")
BN_AT_TEST_TIME = Section(
    "3.5", "Batch normalization at test time",
    "At test time batch normalization uses moving averages of the training statistics in place of batch "
    "statistics.")
BN_EFFECTIVENESS = Section(
    "3.6", "Effectiveness of batch normalization",
    "Batch normalization reaches a given accuracy in fewer steps and tolerates larger learning rates "
    "(Ioffe & Szegedy 2015).")
COVARIATE_SHIFT = Section(
    "3.7", "Internal covariate shift?",
    "Batch normalization may help less by reducing internal covariate shift than by making the error surface "
    "smoother (Santurkar et al. 2018).")
MORE_NORMALIZATIONS = Section(
    "3.8", "More normalizations",
    "Batch normalization has relatives (layer, group, instance, weight normalization) that do not depend on "
    "the batch, and so differ where batches are small.")

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
# HEADLINE: a section's overview card shows the HEADLINE figure of its first experiment (the
# lecture's order) that names one and drew it; without any, the first experiment's figure named
# after it, else its first figure (trainfail.pipeline.report.headline)
OPTIONAL = ("execute", "stage", "HEADLINE", "PRIMARY", "FIGURE_CLAIMS", "FINDINGS")
HOOKS = ("runs", "table", "figures", "claims", "execute", "stage")


def takes_ctx(hook: Any) -> bool:
    """Whether a hook declares the Context as its last parameter (the contract makes it optional)."""
    return "ctx" in inspect.signature(hook).parameters


def call(hook: Any, *args: Any, ctx: Context) -> Any:
    """Call an experiment's hook with `args`, and `ctx` last where the hook declares it."""
    return hook(*args, ctx) if takes_ctx(hook) else hook(*args)


def primary_of(module: Any, claim_ids) -> str | None:
    """The claim id of the module's primary among `claim_ids` (claims()' order): PRIMARY itself, or
    the first id its fnmatch pattern matches; None without PRIMARY or a match."""
    import fnmatch

    pattern = getattr(module, "PRIMARY", None)
    if not pattern:
        return None
    return next((c for c in claim_ids if fnmatch.fnmatchcase(str(c), pattern)), None)


def problems(module: Any, name: str) -> list[str]:
    """What module `name` of trainfail.experiments lacks or gets wrong of this contract: its names
    and constants (the hooks' annotations: tests/test_registry.py). [] when it satisfies it."""
    out = []
    missing = [n + ("()" if n in HOOKS else "") for n in REQUIRED if not hasattr(module, n)]
    if missing:
        out.append(f"the module lacks {', '.join(missing)} (trainfail.core.contract.REQUIRED)")
    if hasattr(module, "ID") and module.ID != name:
        out.append(f"ID is {module.ID!r}: the ID must be the module's name, {name!r}")
    if hasattr(module, "SECTION") and module.SECTION not in SECTIONS:
        out.append(f"SECTION is {module.SECTION!r}: it must be one of trainfail.core.contract.SECTIONS")
    if hasattr(module, "ORDER") and (not isinstance(module.ORDER, int) or isinstance(module.ORDER, bool)):
        out.append(f"ORDER is {module.ORDER!r}: it must be an int (its place within the section)")
    for constant in ("TITLE", "HEADLINE", "PRIMARY"):
        if hasattr(module, constant) and not (isinstance(getattr(module, constant), str) and getattr(module, constant)):
            out.append(f"{constant} is {getattr(module, constant)!r}: it must be a non-empty str")
    figure_claims = getattr(module, "FIGURE_CLAIMS", {})
    if not (isinstance(figure_claims, dict) and all(isinstance(k, str) and isinstance(v, str) and k and v
                                                    for k, v in figure_claims.items())):
        out.append(f"FIGURE_CLAIMS is {figure_claims!r}: it must map figure names to claim ids (str -> str)")
    phrases = getattr(module, "FINDINGS", {})
    if not (isinstance(phrases, dict) and all(isinstance(k, str) and isinstance(v, dict) and
                                              all(isinstance(x, str) and isinstance(y, str) for x, y in v.items())
                                              for k, v in phrases.items())):
        out.append(f"FINDINGS is {phrases!r}: it must map claim ids to {{verdict: phrase}} (str -> str -> str)")
    out += [f"{hook} must be a function" for hook in HOOKS
            if hasattr(module, hook) and not callable(getattr(module, hook))]
    return out
