"""Progress lines of a training job, so that a user watching a log (or `tail -f` on a SLURM job)
sees how far a shard is and how long it has to go.

    [trainfail] run 3/40 step 120/300 loss 0.412 | elapsed 0:00:14, about 0:03:02 left
    [trainfail] runs 4-8/40 (stack of 5) step 60/300 loss 0.871 (mean) | elapsed 0:00:20, ...

The training loop (train.run, for a run alone or a stack) calls `evaluation()` at each
evaluation step; execution.run_shard opens a `shard()` and marks the runs being trained with
`training()`. Outside a shard (tests, the audit, analyses) nothing is printed. The estimate assumes the remaining runs
cost what the finished ones did per run: a shard of mixed runs gets a rough one.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class _Shard:
    total: int
    done: int = 0                       # runs finished (or reused) so far
    current: tuple[int, int] | None = None  # (first index, count) of the runs training now
    start: float = field(default_factory=time.perf_counter)


_active: _Shard | None = None


@contextmanager
def shard(total: int) -> Iterator[None]:
    """A training job's shard of `total` runs to train."""
    global _active
    _active = _Shard(total)
    try:
        yield
    finally:
        _active = None


@contextmanager
def training(count: int = 1) -> Iterator[None]:
    """The next `count` runs of the shard train now (together, when they are a stack)."""
    if _active is None:
        yield
        return
    _active.current = (_active.done, count)
    try:
        yield
    finally:
        _active.done += count
        _active.current = None


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def line(step: int, steps: int, losses: list[float]) -> str | None:
    """The progress line for an evaluation at `step` of `steps` (None outside a shard)."""
    if _active is None or _active.current is None:
        return None
    first, count = _active.current
    runs = f"run {first + 1}/{_active.total}" if count == 1 else \
        f"runs {first + 1}-{first + count}/{_active.total} (stack of {count})"
    finite = [x for x in losses if math.isfinite(x)]
    loss = "loss nan" if not finite else f"loss {sum(finite) / len(finite):.4g}" + (" (mean)" if len(finite) > 1 else "")
    elapsed = time.perf_counter() - _active.start
    progress = _active.done + count * (step / steps if steps else 1.0)  # runs' worth of work done
    left = elapsed / progress * (_active.total - progress) if progress > 0 else math.inf
    return f"[trainfail] {runs} step {step}/{steps} {loss} | elapsed {clock(elapsed)}, about {clock(left)} left"


def evaluation(step: int, steps: int, losses: list[float]) -> None:
    text = line(step, steps, losses)
    if text:
        print(text, flush=True)
