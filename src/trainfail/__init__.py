"""trainfail: the lecture "When Training Fails" (Hung-yi Lee, ML 2021 Spring), re-run for real.

The data's journey, one module per stage:
config (validated) -> plan (runs, run ids, shards) -> train (metrics rows + metadata per run)
-> experiments/<id>.table (pandas) -> experiments/<id>.figures (seaborn)
-> experiments/<id>.claims (verdicts with intervals) -> report (HTML).
"""

__version__ = "0.1.0"
