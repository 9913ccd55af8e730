"""Progress lines of a training job, so that a user watching a log (or `tail -f` on a SLURM job)
sees how far a shard is and how long it has to go, and a person watching the console sees every
job's runs done and time left at most every 15 s.

    [trainfail] run 3/40 step 120/300 loss 0.412 | elapsed 0:00:14, about 0:03:02 left
    [trainfail] runs 4-8/40 (stack of 5) step 60/300 loss 0.871 (mean) | elapsed 0:00:20, ...

The training loop (train.run, for a run alone or a stack) calls `evaluation()` at each
evaluation step; execution.run_shard opens a `shard()` and marks the runs being trained with
`training()`. Outside a shard (tests, the audit, analyses) nothing is printed. The estimate assumes the remaining runs
cost what the finished ones did per run: a shard of mixed runs gets a rough one.

The log gets every line (the rule sends the job's output there). The console gets a short line,

    [trainfail] train batch_accuracy-001: 12/40 runs done, about 0:03:02 left

at most every CONSOLE_EVERY seconds per job (none for a job shorter than that; the Snakemake line
"Finished job" says it), and one at the end of a job that printed any, on the file descriptor
named by TRAINFAIL_CONSOLE_FD: the train rule's shell opens it on the console (`3>&2`) before it
sends stdout and stderr to the log. TRAINFAIL_JOB names the job (the shard).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, TextIO

CONSOLE_EVERY = 15.0                  # seconds: the most often a job writes to the console
CONSOLE_FD = "TRAINFAIL_CONSOLE_FD"   # environment: a file descriptor open on the console
JOB = "TRAINFAIL_JOB"                 # environment: the job's name on the console

_now = time.perf_counter              # the clock (tests replace it)


@dataclass
class _Shard:
    total: int
    done: int = 0                       # runs finished (or reused) so far
    current: tuple[int, int] | None = None  # (first index, count) of the runs training now
    start: float = field(default_factory=lambda: _now())
    console: TextIO | None = None       # where the short lines go (None: nowhere)
    name: str = "train"
    last_console: float | None = None   # when the last short line went out (None: none yet)


_active: _Shard | None = None


def console_from_env() -> TextIO | None:
    """The console stream TRAINFAIL_CONSOLE_FD names, if it names an open file descriptor."""
    try:
        fd = int(os.environ.get(CONSOLE_FD, ""))
        os.fstat(fd)
        return open(fd, "w", buffering=1, closefd=False)
    except (ValueError, OSError):
        return None


@contextmanager
def shard(total: int, console: TextIO | None = None, name: str | None = None) -> Iterator[None]:
    """A training job's shard of `total` runs to train; short lines to `console` (default: the
    stream TRAINFAIL_CONSOLE_FD names), as job `name` (default: TRAINFAIL_JOB)."""
    global _active
    _active = _Shard(total, console=console if console is not None else console_from_env(),
                     name=name or ("train " + os.environ[JOB] if os.environ.get(JOB) else "train"))
    try:
        yield
    finally:
        finished, _active = _active, None
        if finished.console is not None and finished.last_console is not None:
            _say(finished, f"{finished.done}/{finished.total} runs done in {clock(_now() - finished.start)}")


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
        _tick(_active, float(_active.done))


def _left(s: _Shard, progress: float) -> float:
    """Seconds left, from the time per run's worth of work so far."""
    elapsed = _now() - s.start
    return elapsed / progress * (s.total - progress) if progress > 0 else math.inf


def _say(s: _Shard, text: str) -> None:
    try:
        s.console.write(f"[trainfail] {s.name}: {text}\n")
        s.console.flush()
    except (OSError, ValueError):  # a console that went away stops the short lines, not the job
        s.console = None


def _tick(s: _Shard, progress: float) -> None:
    """The short console line, when CONSOLE_EVERY seconds have passed since the last (or the start)."""
    now = _now()
    if s.console is None or now - (s.last_console if s.last_console is not None else s.start) < CONSOLE_EVERY:
        return
    s.last_console = now
    _say(s, f"{s.done}/{s.total} runs done, about {clock(_left(s, progress))} left")


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
    elapsed = _now() - _active.start
    left = _left(_active, _progress(step, steps))
    return f"[trainfail] {runs} step {step}/{steps} {loss} | elapsed {clock(elapsed)}, about {clock(left)} left"


def _progress(step: int, steps: int) -> float:
    """Runs' worth of work done in the active shard."""
    count = _active.current[1] if _active.current else 0
    return _active.done + count * (step / steps if steps else 1.0)


def evaluation(step: int, steps: int, losses: list[float]) -> None:
    text = line(step, steps, losses)
    if text:
        print(text, flush=True)
        _tick(_active, _progress(step, steps))
