"""What every stage shares: the config and its schema, a run's settings, files, run records,
provenance, progress lines, and the experiment contract.

Layer 1 of 6: core < training < measure < analysis < experiments < pipeline < __main__ (tests/test_layers.py)."""
