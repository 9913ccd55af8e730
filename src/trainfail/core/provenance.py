"""Where a number came from: code version, packages, device, determinism settings."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when a GPU is visible (CUDA_VISIBLE_DEVICES is honoured), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for, but torch sees no GPU "
                           f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


@functools.lru_cache(maxsize=None)  # one lookup per process: a shard stores hundreds of tiny runs
def git_state(root: str | None = None) -> dict:
    """The commit and whether the working tree had uncommitted changes."""
    root = root or str(Path(__file__).resolve().parents[3])
    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


@functools.lru_cache(maxsize=None)
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("trainfail", "torch", "numpy", "pandas", "scikit-learn", "mnist1d", "matplotlib", "seaborn", "snakemake"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return out


def determinism() -> dict:
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "num_threads": torch.get_num_threads(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        # TF32 trades float32 precision for speed on Ampere+ GPUs: a GPU re-run only matches
        # within tolerance when these agree
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def host() -> dict:
    """Which machine and which of its GPUs a run saw (a SLURM job says which job it was)."""
    return {
        "hostname": platform.node(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def make_deterministic(seed: int) -> None:
    """Seed everything; ask for deterministic kernels (warn only where none exists)."""
    import random

    import numpy as np

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # torch.use_deterministic_algorithms(True, warn_only=True), without its import of the compiler
    # (torch._inductor, about 1.2 CPU-s per process in torch 2.13) to set the compiler's own flag:
    # no run is compiled; if the compiler is loaded already, its flag is set as that function sets it
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    if "torch._inductor.config" in sys.modules:
        sys.modules["torch._inductor.config"].deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True  # implied by the line above; recorded explicitly in meta.json
