"""Static checks: undefined names, unused imports and redefinitions anywhere in the code."""

import subprocess
import sys

from .repo_copy import ROOT


def test_pyflakes_is_clean():
    proc = subprocess.run([sys.executable, "-m", "pyflakes", "src", "tests", "benchmarks", "tools"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
