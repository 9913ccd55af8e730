"""Measurements taken on trained or toy models: Hessians, sharpness, loss landscapes,
internal covariate shift, loss spikes, step timing.

Layer 3 of 6: core < training < measure < analysis < experiments < pipeline < __main__ (tests/test_layers.py)."""
