"""A job imports only what it uses: training and tuning never import the plotting or statistics
libraries (matplotlib, seaborn, scipy), and tuning not even torch (issue 22: start-up is paid by
every job). Checked in a fresh interpreter, by what lands in sys.modules: behaviour, not time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("matplotlib", "seaborn", "scipy")


def imported(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC), "PATH": ""})
    return {m.split(".")[0] for m in json.loads(out.stdout.splitlines()[-1])}


@pytest.mark.parametrize("module", ["trainfail.pipeline.execution", "trainfail.training.train",
                                    "trainfail.training.stack", "trainfail.experiments"])
def test_training_entry_points_import_no_plotting_nor_scipy(module):
    mods = imported(f"import trainfail.__main__, {module}")
    assert not mods & set(HEAVY), f"{module} imports {sorted(mods & set(HEAVY))}"


def test_a_tune_job_imports_neither_torch_nor_plotting():
    mods = imported("import trainfail.__main__, trainfail.training.tuning")
    assert not mods & {"torch", *HEAVY}, sorted(mods & {"torch", *HEAVY})


def test_the_figures_module_imports_matplotlib_only_when_drawing():
    assert not imported("import trainfail.analysis.plots") & {"matplotlib", "seaborn"}
    assert {"matplotlib", "seaborn"} <= imported("from trainfail.analysis import plots\nplots.figure()")


def test_deterministic_kernels_are_asked_for_without_loading_the_compiler():
    # torch.use_deterministic_algorithms imports torch._inductor (about a CPU-second per job) to set
    # the compiler's flag; make_deterministic sets the same kernel flag without it
    code = ("import torch\nfrom trainfail.core.provenance import make_deterministic\nmake_deterministic(3)\n"
            "assert torch.are_deterministic_algorithms_enabled()\n"
            "assert torch.is_deterministic_algorithms_warn_only_enabled()")
    mods = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint('torch._inductor' in sys.modules)"],
                          capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert mods.stdout.split()[-1] == "False"
