"""Where a job's time goes: wall and CPU seconds per named phase, one JSON file per job.

    with phases.phase("eval"):
        ...

Phases nest and are counted exclusively: time spent in an inner phase is the inner phase's, not
its parent's (a Hessian computed inside a training loop is curvature, not training). Time outside
every phase is "other". `start_up` is the interpreter's start and the imports before the command
ran (from the process's start time, as the kernel records it, to `begin`); imports a command makes
itself are counted in the phase it makes them in (the commands open an "imports" phase for theirs).

A phase switch costs two clock reads (well under a microsecond each): cheap enough for every
training step. On a GPU, kernels run asynchronously: a step's time is charged where the host
waits for it (the loop synchronises at evaluations and logged steps), so step and eval blur there.

`dump(path)` writes {"wall": ..., "cpu": ..., "phases": {name: {"wall", "cpu", "calls"}}, "counts":
{...}} atomically; `benchmarks/profile_pipeline.py` reads them from results/benchmarks/phases/.
Counting is always on and process-local: nothing is written unless `dump` is called.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

OTHER = "other"
START_UP = "start_up"

_totals: dict[str, list[float]] = {}  # phase -> [wall, cpu, calls]
_counts: dict[str, float] = {}
_stack: list[str] = [OTHER]
_mark: list[float] = [0.0, 0.0]  # the clocks when the current (innermost) phase last started counting


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _charge(now: tuple[float, float]) -> None:
    t = _totals.setdefault(_stack[-1], [0.0, 0.0, 0])
    t[0] += now[0] - _mark[0]
    t[1] += now[1] - _mark[1]
    _mark[0], _mark[1] = now


def _process_age() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere 0, start-up then unmeasured)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def begin() -> None:
    """Start counting (the entry point calls it first): what ran before is start-up."""
    now = _clocks()
    _totals.clear()
    _counts.clear()
    del _stack[1:]
    _totals[START_UP] = [_process_age(), now[1], 1]  # CPU: all this process used so far
    _mark[0], _mark[1] = now


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time inside to `name` (exclusively of phases nested in it)."""
    _charge(_clocks())
    _stack.append(name)
    _totals.setdefault(name, [0.0, 0.0, 0])[2] += 1
    try:
        yield
    finally:
        _charge(_clocks())
        _stack.pop()


def timed(name: str):
    """A decorator: every call of the function is counted to phase `name`."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with phase(name):
                return fn(*args, **kwargs)

        return inner

    return wrap


def count(name: str, amount: float = 1) -> None:
    """Add to a named counter (e.g. examples trained), dumped beside the phases."""
    _counts[name] = _counts.get(name, 0) + amount


def snapshot() -> dict:
    """The totals so far: {"wall", "cpu", "phases": {name: {wall, cpu, calls}}, "counts"}."""
    _charge(_clocks())
    phases = {k: {"wall": round(v[0], 6), "cpu": round(v[1], 6), "calls": int(v[2])} for k, v in _totals.items()}
    return {"wall": round(sum(p["wall"] for p in phases.values()), 6),
            "cpu": round(sum(p["cpu"] for p in phases.values()), 6), "phases": phases, "counts": dict(_counts)}


def dump(path: str | Path, **extra) -> None:
    """Write the snapshot (and `extra` keys) to `path` as JSON, atomically (a job killed midway
    leaves no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**snapshot(), **extra}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
