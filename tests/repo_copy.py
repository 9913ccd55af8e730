"""Helpers for tests that run the real Snakemake pipeline in a throw-away copy of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def copy_repo(dest: Path) -> Path:
    """Copy the working tree (tracked and untracked, not ignored: no results/, no .snakemake/)."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def env_for(repo: Path) -> dict:
    """The environment jobs need: this Python first on PATH, the copy's src/ importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    return env


def snakemake(repo: Path, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=repo, env=env_for(repo),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def snakemake_background(repo: Path, *args: str) -> subprocess.Popen:
    """Start snakemake without waiting; its output goes to <repo>/snakemake.out."""
    with open(repo / "snakemake.out", "w") as out:
        return subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=repo, env=env_for(repo),
                                stdout=out, stderr=subprocess.STDOUT, text=True)


def run_metrics(results: Path) -> dict[str, pd.DataFrame]:
    """run id -> its metrics table (checksum verified)."""
    from trainfail.core import store

    return {p.parent.name: store.read_table(p) for p in sorted(Path(results).glob("runs/*/metrics.csv"))}
