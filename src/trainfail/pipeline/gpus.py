"""One GPU per training job on a machine with several: Snakemake counts GPUs, this hands them out.

Snakemake's `gpu` resource (`--resources gpu=N`) only limits how many GPU jobs run at once; it
does not say which GPU a job should use. Each job therefore takes a slot here before torch
touches CUDA: an exclusive flock (fcntl module) on `<slot dir>/<host>/<gpu>.lock` for one of
the GPUs it can see (per SLURM job inside one, see `scope`), then CUDA_VISIBLE_DEVICES narrowed
to that GPU. The kernel drops the lock when the process exits, however it exits (SIGKILL
included), so a dead job's GPU is free at once; no stale-lock clean-up is needed. If more jobs than GPUs start (no `--resources gpu=N` limit), the
extra ones wait for a free slot instead of sharing a GPU.

Nothing here imports torch: CUDA_VISIBLE_DEVICES only has an effect if it is set before CUDA
is initialised, and counting GPUs through torch would initialise it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


def visible_gpus(env: dict | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs).

    CUDA_VISIBLE_DEVICES, when set, is the answer (SLURM sets it for a job's allocated GPUs;
    an empty value means none). Otherwise `nvidia-smi -L` lists the machine's GPUs.
    """
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    if env.get("SLURM_JOB_ID"):
        return []  # a SLURM job given no GPU: the node's GPUs belong to other jobs
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        # no nvidia-smi (some containers): the driver still lists its GPUs here
        driver = Path("/proc/driver/nvidia/gpus")
        return [str(i) for i in range(len(list(driver.iterdir())))] if driver.is_dir() else []
    if out.returncode:
        return []
    return [str(i) for i, line in enumerate(l for l in out.stdout.splitlines() if l.startswith("GPU "))]


def wants_gpu(device: str, gpus: list[str] | None = None) -> bool:
    """Whether a job for `device` (cpu / cuda / auto) trains on a GPU here."""
    if device == "cpu":
        return False
    if device == "cuda":
        return True
    return bool(visible_gpus() if gpus is None else gpus)


def gpus_per_job(device: str) -> int:
    """The `gpu` resource of a training job: 1 when it trains on a GPU, else 0."""
    return int(wants_gpu(device))


def scope(env: dict | None = None) -> str:
    """Whose GPUs the slots divide: this host's (GPU 0 on two nodes is two GPUs) or, inside a
    SLURM job, that job's allocation: SLURM numbers each job's GPUs from 0, so two jobs on one
    node both see a "GPU 0" that are different devices, while the jobs of one grouped
    submission share its GPUs and must split them."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    return socket.gethostname() + (f"-slurm-{job}" if job else "")


def _lock_name(gpu: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", gpu) + ".lock"


@dataclass
class Slot:
    gpu: str       # the CUDA_VISIBLE_DEVICES entry this job owns
    path: Path     # its lock file
    fd: int        # open descriptor holding the flock (closing it, or dying, frees the slot)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def try_acquire(slot_dir: Path, gpus: list[str]) -> Slot | None:
    """Lock the first free GPU of `gpus` without waiting; None when all are taken."""
    host_dir = Path(slot_dir) / scope()
    host_dir.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        path = host_dir / _lock_name(gpu)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live process
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people looking; the lock is the truth
        return Slot(gpu, path, fd)
    return None


def acquire(slot_dir: Path, gpus: list[str], timeout: float | None = None, poll: float = 0.5) -> Slot:
    """Lock a free GPU, waiting while all are taken (at most `timeout` seconds if given)."""
    if not gpus:
        raise RuntimeError("no GPU is visible to hand out (CUDA_VISIBLE_DEVICES empty, nvidia-smi lists none)")
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        slot = try_acquire(slot_dir, gpus)
        if slot is not None:
            return slot
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"all GPUs {gpus} stayed taken for {timeout}s (slots in {slot_dir})")
        if not told:
            print(f"[trainfail] all GPUs {gpus} are taken; waiting for a free one "
                  "(limit concurrent GPU jobs with --resources gpu=N)", file=sys.stderr, flush=True)
            told = True
        time.sleep(poll)


@contextlib.contextmanager
def gpu_slot(device: str, slot_dir: Path, timeout: float | None = None) -> Iterator[str | None]:
    """For the duration of a job: own one GPU and make it the only one CUDA shows.

    Yields the GPU's CUDA_VISIBLE_DEVICES entry, or None when the job runs on the CPU
    (device cpu, or auto with no GPU). Must be entered before torch initialises CUDA.
    """
    gpus = visible_gpus()
    if device == "cpu":
        yield None
        return
    if device == "auto" and not gpus:
        if os.environ.get("SLURM_JOB_ID"):
            # a SLURM job given no GPU: hide the node's GPUs (other jobs') so `auto` is the CPU
            with _visible_devices(""):
                yield None
        else:
            yield None
        return
    if device == "cuda" and not gpus:
        yield None  # resolve_device will fail with a clear message about the missing GPU
        return
    slot = acquire(slot_dir, gpus, timeout)
    try:
        with _visible_devices(slot.gpu):
            yield slot.gpu
    finally:
        slot.release()


@contextlib.contextmanager
def _visible_devices(value: str) -> Iterator[None]:
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old
