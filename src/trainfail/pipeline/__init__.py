"""Plumbing the Snakemake rules call: the plan, executing shards of runs, tuning and audit
jobs, source tracking, the results tree, GPU assignment, the report.

Layer 6 of 6: core < training < measure < analysis < experiments < pipeline < __main__ (tests/test_layers.py)."""
