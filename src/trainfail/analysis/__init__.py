"""From tables to verdicts and pictures: statistics, figures, LaTeX tables.

Layer 4 of 6: core < training < measure < analysis < experiments < pipeline < __main__ (tests/test_layers.py)."""
