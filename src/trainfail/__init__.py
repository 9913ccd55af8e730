"""trainfail: the lecture "When Training Fails" (Hung-yi Lee, ML 2021 Spring), re-run for real.

The data's journey:
config (validated) -> plan (runs, run ids, shards) -> train (metrics rows + metadata per run)
-> experiments/<id>.table (pandas) -> experiments/<id>.figures (seaborn)
-> experiments/<id>.claims (verdicts with intervals) -> report (HTML).

The library is laid out by stage, lowest first; a module imports from its own stage and lower
ones only (tests/test_layers.py): core/ (config, run settings, files, run records, the
experiment contract) < training/ (data, models, the training loop, stacked cells, tuned rates)
< measure/ (Hessians, sharpness, landscapes, covariate shift, spikes, timing) < analysis/
(statistics, figures, tables) < experiments/ (one module per experiment) < pipeline/ (plan,
shard execution, audit, source tracking, GPUs, report) < __main__ (the commands the rules call).
"""

__version__ = "0.1.0"
