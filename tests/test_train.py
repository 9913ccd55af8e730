import math

import torch

from trainfail.training import data, train
from trainfail.core.run_record import load_run
from trainfail.core.run_settings import complete
from trainfail.pipeline.execution import run_shard

# a run's settings as the plan makes them: completed with their defaults (run_settings)
SETTINGS = complete({"task": "train", "dataset": "digits", "model": {"arch": "mlp", "hidden": [16]},
                     "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 32, "epochs": 3, "seed": 0, "eval_points": 3})


def digits():
    return data.load("digits")


def test_short_run_lowers_the_loss():
    result = train.train(SETTINGS, digits(), torch.device("cpu"))
    evals = [r for r in result.rows if "train_loss" in r]
    assert evals[-1]["train_loss"] < 0.5 * evals[0]["train_loss"]
    assert evals[-1]["val_acc"] > 0.8 and not result.diverged
    assert result.rows[-1]["step"] == 3 * (1437 // 32)


def test_same_seed_same_metrics_different_seed_different():
    ds = digits()
    a = train.train(SETTINGS, ds, torch.device("cpu")).rows
    b = train.train(SETTINGS, ds, torch.device("cpu")).rows
    c = train.train({**SETTINGS, "seed": 1}, ds, torch.device("cpu")).rows
    assert a == [{**r, "wall_time": x["wall_time"]} for r, x in zip(b, a)]
    assert [r.get("batch_loss") for r in a] != [r.get("batch_loss") for r in c]


def test_diverging_run_is_recorded_and_stops():
    settings = {**SETTINGS, "optimizer": {"name": "sgd", "lr": 1e6}, "log_every": 1}
    result = train.train(settings, digits(), torch.device("cpu"))
    assert result.diverged and result.diverged_step is not None
    assert not math.isfinite(result.rows[-1]["batch_loss"])
    assert result.rows[-1]["step"] < 3 * (1437 // 32)


def test_early_stop_when_training_loss_stops_improving():
    settings = {**SETTINGS, "optimizer": {"name": "sgd", "lr": 1e-9}, "epochs": 50, "eval_every": 10,
                "early_stop": {"patience": 2, "min_delta": 1e-3}}
    result = train.train(settings, digits(), torch.device("cpu"))
    assert result.rows[-1]["step"] == 30  # evaluations at 10, 20, 30 bring no improvement


def test_schedule_and_grad_norm_are_logged():
    settings = {**SETTINGS, "schedule": {"name": "cosine"}, "log_every": 1}
    rows = train.train(settings, digits(), torch.device("cpu")).rows
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == 0.1 and lrs[-1] < 1e-3
    assert all(r["grad_norm"] > 0 for r in rows if "grad_norm" in r)


def test_shard_writes_runs_atomically_and_resumes(tmp_path):
    diverging = {**SETTINGS, "optimizer": {"name": "sgd", "lr": 1e6}, "log_every": 1}
    rows = run_shard([SETTINGS, diverging], "cpu", tmp_path, tmp_path / "data", tmp_path / "shard.json")
    assert [r["status"] for r in rows] == ["trained", "trained"]
    assert [r["diverged"] for r in rows] == [False, True]
    rec = load_run(tmp_path, rows[0]["run_id"])
    assert rec.meta["versions"]["torch"] == torch.__version__.split("+")[0] or rec.meta["versions"]["torch"]
    assert rec.meta["device"] == "cpu" and "train_acc" in rec.metrics
    again = run_shard([SETTINGS, diverging], "cpu", tmp_path, tmp_path / "data")
    assert [r["status"] for r in again] == ["reused", "reused"]
    assert not list(tmp_path.glob("runs/.*.tmp"))


def test_a_run_removed_after_its_shard_finished_is_named_with_the_fix(tmp_path):
    import shutil

    import pytest

    rows = run_shard([SETTINGS], "cpu", tmp_path, tmp_path / "data", tmp_path / "shards" / "x-000.json")
    shutil.rmtree(tmp_path / "runs" / rows[0]["run_id"])
    # the fix it names works: Snakemake retrains a finished shard whose run is gone (test_faults)
    with pytest.raises(FileNotFoundError, match="run snakemake again to retrain it"):
        load_run(tmp_path, rows[0]["run_id"])


def test_divergence_between_logged_steps_is_caught_at_its_step():
    settings = {**SETTINGS, "optimizer": {"name": "sgd", "lr": 1e30}, "steps": 20, "log_every": 50, "eval_points": 1}
    result = train.train(settings, digits(), torch.device("cpu"))
    assert result.diverged and 0 < result.diverged_step < 20


def test_final_eval_counts_a_diverged_run_as_no_progress(tmp_path):
    from trainfail.core.run_record import final_eval

    diverging = {**SETTINGS, "optimizer": {"name": "sgd", "lr": 1e6}, "log_every": 1}
    rows = run_shard([SETTINGS, diverging], "cpu", tmp_path, tmp_path / "data")
    good, bad = (load_run(tmp_path, r["run_id"]) for r in rows)
    first = bad.metrics.dropna(subset=["train_loss"]).iloc[0]
    assert final_eval(bad)["train_loss"] == first["train_loss"] and math.isfinite(final_eval(bad)["val_acc"])
    assert final_eval(good)["val_acc"] == good.metrics.dropna(subset=["val_acc"]).iloc[-1]["val_acc"]


def test_garbage_json_in_a_run_is_named_and_the_run_retrained(tmp_path):
    import pytest

    from trainfail.core import store
    from trainfail.pipeline.execution import run_problem

    rows = run_shard([SETTINGS], "cpu", tmp_path, tmp_path / "data")
    rid = rows[0]["run_id"]
    summary = tmp_path / "runs" / rid / "summary.json"
    summary.write_bytes(b"\x00\xffnot json{")
    with pytest.raises(store.CorruptFileError) as e:
        load_run(tmp_path, rid)
    assert f"runs/{rid}/summary.json: not valid JSON" in str(e.value)
    assert f"({tmp_path / 'runs' / rid})" in str(e.value) and "run snakemake again to retrain it" in str(e.value)
    assert "summary.json" in run_problem(tmp_path, SETTINGS)
    # the shard's next job does not reuse it: it trains it again
    assert run_shard([SETTINGS], "cpu", tmp_path, tmp_path / "data")[0]["status"] == "trained"
    assert load_run(tmp_path, rid).summary


def test_a_finished_shard_with_a_run_gone_is_unfinished(tmp_path):
    import shutil

    from trainfail.core.config import run_id
    from trainfail.pipeline.execution import unfinished_shards

    other = {**SETTINGS, "seed": 1}
    shards, runs = {"x-000": [run_id(SETTINGS), run_id(other)]}, {run_id(SETTINGS): SETTINGS, run_id(other): other}
    assert unfinished_shards(tmp_path, shards, runs) == {"x-000": "its manifest is missing"}
    run_shard([SETTINGS, other], "cpu", tmp_path, tmp_path / "data", tmp_path / "shards" / "x-000.json")
    assert unfinished_shards(tmp_path, shards, runs) == {}
    (tmp_path / "runs" / run_id(other) / "metrics.csv.sha256").unlink()
    assert "lacks metrics.csv.sha256" in unfinished_shards(tmp_path, shards, runs)["x-000"]
    shutil.rmtree(tmp_path / "runs" / run_id(SETTINGS))
    assert "is missing (and 1 more runs)" in unfinished_shards(tmp_path, shards, runs)["x-000"]


def test_a_given_model_is_trained_in_place_and_the_hooks_see_it():
    """train.train on a caller's model (the loop's one-member case on that module): on_step gets
    the module with the batch's gradients before the gradient norm is read and the update made,
    on_eval the module at each evaluation step; result.model is the caller's object."""
    from trainfail.training import models

    ds = digits()
    model = models.build(SETTINGS["model"], ds.input_shape, ds.num_classes)

    def on_step(m, opt, xb, yb, step):
        assert m is model and xb.shape == (32, *ds.input_shape) and yb.shape == (32,)
        return {"hook_grad_norm": float(train.grad_norm(m))}

    result = train.train({**SETTINGS, "steps": 6, "log_every": 2}, ds, torch.device("cpu"), model=model,
                         on_step=on_step, on_eval=lambda m, step: {"evaluated_at": step, "same": m is model})
    assert result.model is model
    logged = [r for r in result.rows if "batch_loss" in r]
    assert len(logged) == 3 and all(r["hook_grad_norm"] == r["grad_norm"] for r in logged)
    evals = [r for r in result.rows if "train_loss" in r]
    assert evals and all(r["evaluated_at"] == r["step"] and r["same"] for r in evals)


def test_a_finished_shard_with_a_damaged_run_is_unfinished(tmp_path):
    """Deciding what Snakemake retrains parses every file of a shard's runs and checks metrics.csv
    against its checksum (a truncated table, a garbled summary), as the shard's job does before it
    reuses a run; verify=False only looks for the files."""
    from trainfail.core.config import run_id
    from trainfail.pipeline.execution import shard_problem, unfinished_shards

    other = {**SETTINGS, "seed": 1}
    rids = [run_id(SETTINGS), run_id(other)]
    shards, runs = {"x-000": rids}, dict(zip(rids, [SETTINGS, other]))
    run_shard([SETTINGS, other], "cpu", tmp_path, tmp_path / "data", tmp_path / "shards" / "x-000.json")
    assert unfinished_shards(tmp_path, shards, runs) == {}
    metrics = tmp_path / "runs" / rids[1] / "metrics.csv"
    intact = metrics.read_bytes()
    metrics.write_bytes(intact[: len(intact) // 2])  # truncated, as by a full disk
    why = shard_problem(tmp_path, "x-000", rids, runs)
    assert f"runs/{rids[1]}/metrics.csv: contents do not match its checksum" in why
    assert unfinished_shards(tmp_path, shards, runs, verify=False) == {}  # the files are all there
    metrics.write_bytes(intact)
    assert shard_problem(tmp_path, "x-000", rids, runs) is None
    summary = tmp_path / "runs" / rids[0] / "summary.json"
    summary.write_bytes(summary.read_bytes()[:-5] + b"\x00\xff")  # garbled
    assert f"runs/{rids[0]}/summary.json: not valid JSON" in unfinished_shards(tmp_path, shards, runs)["x-000"]
    (tmp_path / "runs" / rids[1] / "meta.json").write_text("{}")  # another run's, or emptied
    assert "(and 1 more runs)" in shard_problem(tmp_path, "x-000", rids, runs)
    # the shard's job retrains exactly the damaged runs
    rows = run_shard([SETTINGS, other], "cpu", tmp_path, tmp_path / "data", tmp_path / "shards" / "x-000.json")
    assert [r["status"] for r in rows] == ["trained", "trained"]
    assert shard_problem(tmp_path, "x-000", rids, runs) is None
