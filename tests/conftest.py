"""Shared fixtures: the repository root, a fresh copy of the workflow, and one smoke run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"results", ".snakemake", "data", ".venv", ".whl", ".git", "__pycache__", ".pytest_cache"}


def copy_workflow(dest: Path) -> Path:
    """A clean copy of the workflow (no results), as a user's fresh clone would have it."""
    for name in ("Snakefile", "config.yaml", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("workflow", "presets", "profiles"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(*SKIP))
    return dest


def snakemake(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real Snakemake CLI of this Python environment in `cwd`."""
    env = dict(os.environ)
    # the rules call `python -m trainfail`: the Python of this environment, as if it were activated
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The whole smoke preset, end to end, once per test session."""
    work = copy_workflow(tmp_path_factory.mktemp("smoke"))
    proc = snakemake(work, "--configfile", "presets/smoke.yaml", "--cores", "2")
    if proc.returncode:
        pytest.fail(f"smoke pipeline failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return work, proc
