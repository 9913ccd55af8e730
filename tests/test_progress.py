"""Progress lines of a training job: which runs, how far, the loss, elapsed and remaining time."""

import math


from trainfail.core import progress
from trainfail.pipeline.execution import run_shard
from trainfail.core.run_settings import complete


def test_no_line_outside_a_shard():
    assert progress.line(5, 10, [0.5]) is None


def test_line_names_the_runs_the_step_and_an_estimate():
    with progress.shard(4):
        with progress.training(1):
            pass                      # run 1 done
        with progress.training(2):    # runs 2-3, a stack, half-way
            text = progress.line(50, 100, [0.5, float("nan"), 0.7])
    assert text.startswith("[trainfail] runs 2-3/4 (stack of 2) step 50/100 loss 0.6 (mean) | elapsed ")
    assert "left" in text
    assert progress.line(1, 2, [1.0]) is None  # the shard is closed


def test_clock():
    assert progress.clock(3725.4) == "1:02:05"
    assert progress.clock(math.inf) == "?"


def test_a_training_job_prints_a_line_per_evaluation(tmp_path, capsys):
    settings = [{"task": "train", "dataset": "digits",
                 "model": {"arch": "mlp", "hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.1},
                 "batch_size": 16, "steps": 20, "eval_points": 4, "seed": s} for s in (0, 1)]
    settings = [complete(s) for s in settings]
    run_shard(settings, "cpu", tmp_path / "results", tmp_path / "data")
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if " step " in x]
    assert lines and all("/2 (stack of 2) step " in x for x in lines), out
    assert lines[-1].split(" step ")[1].startswith("20/20")
    assert "2 of 2 runs to train on cpu" in out
