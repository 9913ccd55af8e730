"""The experiment registry: one module per experiment id, each with the same functions.

    ID, SECTION, TITLE                   names; SECTION is the lecture section it reproduces
    runs(cfg, ctx) -> list[dict]         settings records, one per training run ([] if none)
    execute(settings, env) -> RunResult  optional: runs whose settings say task == ID
    table(cfg, runs, ctx) -> DataFrame   tidy table from the finished runs
    figures(table, cfg, outdir, ctx)     PNG + PDF files into outdir
    claims(table, cfg, ctx) -> list      claim rows (see stats.claim) with computed verdicts

Adding an experiment = a module here, its line in MODULES, its block in the config schema and
config.yaml/presets, and a caption in workflow/report/<id>.rst.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Report order: the lecture's order (sections 1.1 critical points ... 3.8 more normalizations).
MODULES = [
    "toy_critical_points",
    "minimum_ratio",
    "batch_path",
    "batch_timing",
    "batch_accuracy",
    "generalization_gap",
    "momentum",
    "stuck_not_critical",
    "ill_conditioned_convex",
    "optimizer_schedule",
    "warmup_large_batch",
    "feature_normalization",
    "bn_inference",
    "bn_speedup",
    "internal_covariate_shift",
    "normalization_variants",
]

REGISTRY: dict[str, ModuleType] = {
    name: importlib.import_module(f"{__name__}.{name}") for name in MODULES
}


def get(experiment_id: str) -> ModuleType:
    try:
        return REGISTRY[experiment_id]
    except KeyError:
        raise KeyError(f"unknown experiment {experiment_id!r}; known: {', '.join(REGISTRY)}") from None
