"""Shared fixtures: one smoke run of the whole pipeline per test session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from .repo_copy import copy_repo, snakemake


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The whole smoke preset, end to end, in a fresh copy of the repository."""
    work = copy_repo(tmp_path_factory.mktemp("smoke"))
    proc = snakemake(work, "--configfile", "presets/smoke.yaml", "--cores", "2", timeout=900)
    return work, proc


@pytest.fixture
def one_thread():
    """One torch thread for the test (the pipeline's jobs run with one too): tiny batches on a
    shared machine only contend with a second thread. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
