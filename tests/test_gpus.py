"""GPU hand-out on one machine, tested on the CPU: slots are lock files, GPUs are names."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

import pytest

from trainfail.pipeline import gpus

GPUS = ["0", "1", "2"]


def _hold(slot_dir, results, release):
    """Child: take a slot, say which, hold it until told to stop."""
    with gpus.gpu_slot("cuda", slot_dir) as gpu:
        results.put((os.getpid(), gpu, os.environ["CUDA_VISIBLE_DEVICES"]))
        release.wait(30)


@pytest.fixture
def ctx():
    return mp.get_context("fork")


@pytest.fixture
def fake_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(GPUS))


def test_visible_gpus_reads_cuda_visible_devices():
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-3f2a, GPU-77b1"}) == ["GPU-3f2a", "GPU-77b1"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_which_jobs_want_a_gpu():
    assert not gpus.wants_gpu("cpu", ["0"])
    assert gpus.wants_gpu("cuda", [])  # asked for: the job fails clearly later if there is none
    assert gpus.wants_gpu("auto", ["0"]) and not gpus.wants_gpu("auto", [])


def test_concurrent_processes_get_distinct_gpus(tmp_path, ctx, fake_gpus):
    results, release = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_hold, args=(tmp_path, results, release)) for _ in GPUS]
    for p in procs:
        p.start()
    got = [results.get(timeout=30) for _ in procs]
    try:
        assert sorted(g for _, g, _ in got) == GPUS  # each its own GPU
        assert all(g == visible for _, g, visible in got)  # and CUDA shows it only that one
        # a fourth job finds every slot taken and waits (here: gives up after a short timeout)
        with pytest.raises(TimeoutError):
            gpus.acquire(tmp_path, GPUS, timeout=0.3, poll=0.05)
    finally:
        release.set()
        for p in procs:
            p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    # all released: the next job gets one at once
    slot = gpus.try_acquire(tmp_path, GPUS)
    assert slot is not None
    slot.release()


def test_a_killed_jobs_gpu_is_free_again(tmp_path, ctx, fake_gpus):
    results, release = ctx.Queue(), ctx.Event()
    victim = ctx.Process(target=_hold, args=(tmp_path, results, release))
    victim.start()
    pid, gpu, _ = results.get(timeout=30)
    assert gpu == "0"  # first free of 0,1,2
    assert gpus.try_acquire(tmp_path, ["0"]) is None  # held
    os.kill(pid, signal.SIGKILL)  # no clean-up code runs
    victim.join(30)
    slot = gpus.try_acquire(tmp_path, ["0"])  # the kernel dropped the lock with the process
    assert slot is not None and slot.gpu == "0"
    slot.release()


def test_two_slots_in_one_process_differ(tmp_path):
    a = gpus.try_acquire(tmp_path, GPUS)
    b = gpus.try_acquire(tmp_path, GPUS)
    assert a.gpu != b.gpu
    a.release(), b.release()


def test_gpu_slot_sets_and_restores_cuda_visible_devices(tmp_path, fake_gpus):
    with gpus.gpu_slot("auto", tmp_path) as gpu:
        assert gpu == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(GPUS)
    with gpus.gpu_slot("cpu", tmp_path) as gpu:
        assert gpu is None and os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(GPUS)


def test_no_gpu_means_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with gpus.gpu_slot("auto", tmp_path) as gpu:
        assert gpu is None
    assert gpus.gpus_per_job("auto") == 0 and gpus.gpus_per_job("cuda") == 1


def test_slurm_job_without_gpus_hides_the_nodes_gpus(tmp_path, monkeypatch):
    """SLURM sets CUDA_VISIBLE_DEVICES only for jobs given GPUs: without it, `auto` is the CPU."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert gpus.visible_gpus() == []
    with gpus.gpu_slot("auto", tmp_path) as gpu:
        assert gpu is None and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_slurm_jobs_do_not_share_slots(tmp_path, monkeypatch):
    """Two SLURM jobs on one node each see their own "GPU 0": both must get it."""
    monkeypatch.setenv("SLURM_JOB_ID", "11")
    a = gpus.try_acquire(tmp_path, ["0"])
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    b = gpus.try_acquire(tmp_path, ["0"])
    assert a is not None and b is not None and a.path != b.path
    a.release(), b.release()
