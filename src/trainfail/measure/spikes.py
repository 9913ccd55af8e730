"""Loss spikes early in training (warm-up's effect) and the window they are measured over.

A warm-up run's rate peaks when warm-up ends, so a window that ends there never sees the peak:
the window must be at least twice the warm-up.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainfail.core.run_record import SPIKE_CAP

def check_window(window: int, warmup: int, key: str) -> None:
    """Refuse a spike window shorter than twice the warm-up (see the module docstring)."""
    if int(window) < 2 * int(warmup):
        raise ValueError(f"{key}: expected at least twice the warm-up of {warmup} updates, {2 * int(warmup)} (got "
                         f"{window}): a warm-up run peaks when warm-up ends, so its spike would fall outside the "
                         "window; lengthen the window or shorten the warm-up")


def early_spike(metrics: pd.DataFrame, window: int, diverged: bool) -> float:
    """The largest early spike: max over updates k <= window of batch_loss[k] / min(batch_loss[:k]).

    1 when the batch loss never rises above its running minimum; a spike is a rise over the
    lowest loss reached so far (the initial loss is not the reference: a spike after the loss
    has fallen is still a spike). SPIKE_CAP if the run diverged.
    """
    if diverged:
        return SPIKE_CAP
    early = metrics[(metrics["step"] <= window)]["batch_loss"].dropna().to_numpy(float)
    if len(early) == 0 or not np.isfinite(early).all():
        return SPIKE_CAP
    if len(early) < 2:
        return 1.0
    running_min = np.minimum.accumulate(early)[:-1]
    return float(min(max(1.0, (early[1:] / running_min).max()), SPIKE_CAP))
