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


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_the_console_gets_a_short_line_at_most_every_15_s(monkeypatch):
    import io

    clock = _Clock()
    monkeypatch.setattr(progress, "_now", clock)
    console = io.StringIO()
    with progress.shard(4, console=console, name="train demo-000"):
        for run in range(4):
            with progress.training(1):
                for step in range(1, 11):    # an evaluation every second: 40 s in all
                    clock.t += 1.0
                    progress.evaluation(step, 10, [0.5])
    lines = console.getvalue().splitlines()
    # at 15 s and 30 s (run 3 at its last evaluation, not yet done), then the end line; never two within 15 s
    assert len(lines) == 3, lines
    assert all(x.startswith("[trainfail] train demo-000: ") for x in lines)
    assert lines[0] == "[trainfail] train demo-000: 1/4 runs done, about 0:00:25 left", lines
    assert lines[1] == "[trainfail] train demo-000: 2/4 runs done, about 0:00:10 left", lines  # run 3 at its last step
    assert lines[-1] == "[trainfail] train demo-000: 4/4 runs done in 0:00:40"


def test_a_short_job_says_nothing_on_the_console(monkeypatch):
    import io

    clock = _Clock()
    monkeypatch.setattr(progress, "_now", clock)
    console = io.StringIO()
    with progress.shard(2, console=console):
        for _ in range(2):
            with progress.training(1):
                clock.t += 5.0
                progress.evaluation(1, 1, [0.5])
    assert console.getvalue() == ""


def test_the_console_is_the_descriptor_the_environment_names(tmp_path, monkeypatch):
    import os

    monkeypatch.delenv(progress.CONSOLE_FD, raising=False)
    assert progress.console_from_env() is None
    monkeypatch.setenv(progress.CONSOLE_FD, "not a number")
    assert progress.console_from_env() is None
    with open(tmp_path / "console", "w") as f:
        monkeypatch.setenv(progress.CONSOLE_FD, str(f.fileno()))
        stream = progress.console_from_env()
        stream.write("seen\n")
        stream.flush()
    assert (tmp_path / "console").read_text() == "seen\n"
    closed = os.open(tmp_path / "x", os.O_WRONLY | os.O_CREAT)
    os.close(closed)
    monkeypatch.setenv(progress.CONSOLE_FD, str(closed))
    assert progress.console_from_env() is None
