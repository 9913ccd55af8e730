"""Shared fixtures (one smoke run of the whole pipeline per test session), the session's dataset
memo, and the grouping that lets pytest-xdist run the suite on every core.

Parallel runs (`make test`, `make test-fast`: `pytest -n 2 --dist loadgroup`): each worker is a
process of its own, so a session- or module-scoped fixture would be built once per worker that
runs one of its tests. `pytest_collection_modifyitems` below therefore puts every test that shares
such a fixture (defined under tests/, e.g. `smoke_run`, test_faults' `killed`) into one xdist
group, joined transitively: the fixture is built once, its tests run on one worker, one after the
other (they may modify its files in turn). A test that must not run beside another one for another
reason names a group itself: `@pytest.mark.xdist_group("name")`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from .repo_copy import copy_repo, snakemake

# fixtures that do not tie their tests together (cheap, or the same in every worker)
UNGROUPED = frozenset()


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


# --- the datasets that are generated, not read: built once per process --------------------------

def _memoised(loader, key):
    """`loader` that builds each dataset once per test process (MNIST-1D is generated, digits
    shuffled: the same tensors every time) and hands out copies, so a test that changes its
    tensors in place changes no other test's."""
    from trainfail.training import data

    built: dict = {}

    def load(data_dir: Path):
        k = key(data_dir)
        if k not in built:
            built[k] = loader(data_dir)
        ds = built[k]
        return data.Dataset(ds.name, ds.x_train.clone(), ds.y_train.clone(), ds.x_test.clone(), ds.y_test.clone(),
                            ds.num_classes)

    return load


def pytest_configure(config):
    from trainfail.training import data

    config.add_cleanup(_restore(data.LOADERS, dict(data.LOADERS)))
    # what each loader's result depends on besides its name (a test may monkeypatch the size)
    data.LOADERS["mnist1d"] = _memoised(data.LOADERS["mnist1d"], lambda d: None)
    data.LOADERS["mnist1d_large"] = _memoised(data.LOADERS["mnist1d_large"], lambda d: data.MNIST1D_LARGE_SAMPLES)
    data.LOADERS["digits"] = _memoised(data.LOADERS["digits"], lambda d: None)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # a worker reads --dist from the command line, not from pytest_cmdline_main below: name
        # its tests' groups in their ids either way (`--dist load` ignores them)
        config.option.loadgroup = True
    if os.environ.get("PYTEST_XDIST_WORKER") and torch.get_num_threads() > 1:
        # the workers share the cores already: a second torch thread in each only contends
        torch.set_num_threads(1)


def _restore(target: dict, original: dict):
    def restore():
        target.clear()
        target.update(original)
    return restore


# --- tests that share a fixture run in one xdist group -----------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`-n N` alone distributes by group (`--dist loadgroup`), so the groups below hold; a `--dist`
    given on the command line is kept."""
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", None) == "no":
        config.option.dist = "loadgroup"


def _shared_fixtures(item) -> list[str]:
    """The session-, package-, module- and class-scoped fixtures of this suite that the test uses
    (directly or through another fixture), each named with where its instance lives."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    out = []
    for name in item.fixturenames:
        defs = info.name2fixturedefs.get(name)
        if not defs or name in UNGROUPED:
            continue
        fixturedef = defs[-1]
        module = getattr(fixturedef.func, "__module__", "") or ""
        if fixturedef.scope == "function" or not module.startswith("tests"):
            continue
        if fixturedef.scope == "session":
            out.append(f"{name}")
        elif fixturedef.scope == "package":
            out.append(f"{module}.{name}")
        elif fixturedef.scope == "module":
            out.append(f"{item.module.__name__}.{name}")
        else:  # class
            out.append(f"{item.module.__name__}.{item.cls.__name__ if item.cls else ''}.{name}")
    return out


def _name_group(item, group: str) -> None:
    """What xdist's worker does for `--dist loadgroup` (`item._nodeid += "@group"`), which pytest 9
    no longer reads (a node keeps its id in `_id`): the controller groups by the id's suffix."""
    if hasattr(item, "_id"):
        from _pytest.nodeid import coerce_node_id

        item._id = coerce_node_id(f"{item.nodeid}@{group}")
    else:
        item._nodeid = f"{item.nodeid}@{group}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Join the tests that share an instance of a fixture (transitively) into one xdist group; a
    group a test names itself joins its fixtures' group and names it."""
    parent: dict[str, str] = {}

    def rank(x: str) -> int:
        return 2 if not x.startswith("fixture:") else 0 if "." in x else 1

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(a: str, b: str) -> None:
        a, b = find(a), find(b)
        if a != b:  # the group is named by a test's own group, else by a session fixture
            a, b = sorted((a, b), key=rank)
            parent[a] = b

    uses = {}
    for item in items:
        named = [f"{m.args[0] if m.args else m.kwargs.get('name', 'default')}" for m in item.iter_markers("xdist_group")]
        nodes = named + [f"fixture:{f}" for f in _shared_fixtures(item)]
        uses[item] = (named, nodes)
        for other in nodes[1:]:
            join(nodes[0], other)
    worker = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    for item, (named, nodes) in uses.items():
        if nodes:
            group = find(nodes[0]).removeprefix("fixture:")
            if not named:
                item.add_marker(pytest.mark.xdist_group(group))
            if worker and "@" not in item.nodeid:
                _name_group(item, group)
