"""Training runs: data, models, optimizers, the training loop, stacked cells, tuned rates,
batch norm's statistics, the arms that experiments share, and the memory estimate.

Layer 2 of 6: core < training < measure < analysis < experiments < pipeline < __main__ (tests/test_layers.py)."""
