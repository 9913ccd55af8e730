"""Rates tuned on tuning seeds, then used on the claim's seeds (trainfail.training.tuning)."""

import json
import shutil

import pandas as pd
import pytest
import torch

from trainfail.core import run_record, store
from trainfail.pipeline import execution
from trainfail.training import tuning
from trainfail.core.config import load_yaml, merge, run_id, validate
from trainfail.training.context import RunEnv
from trainfail.pipeline.plan import make_plan
from trainfail.core.run_settings import complete

from .repo_copy import ROOT

# the training settings of a sweep (run_settings: completed with the defaults a plan fills in)
BASE = {k: v for k, v in complete({"task": "train", "seed": 0, "dataset": "digits", "model": {"arch": "mlp", "hidden": [8]},
                                   "optimizer": {"name": "sgd", "lr": 0.1}, "batch_size": 64, "steps": 30,
                                   "eval_points": 3, "log_points": 3}).items() if k not in ("task", "seed")}


def test_plan_refuses_tuning_on_the_claim_seeds():
    with pytest.raises(ValueError, match="tuning seeds \\[1\\]"):
        tuning.plan(BASE, [0.1, 1.0], [1, 100], [0, 1])
    out = tuning.plan(BASE, [0.1, 1.0], [100, 101], [0, 1])
    assert [tuning.stage(s) for s in out] == [0, 0, 0, 0, 1, 1]
    assert {s["optimizer"]["lr"] for s in out[:4]} == {0.1, 1.0} and {s["seed"] for s in out[:4]} == {100, 101}


def test_choose_skips_unsafe_rates_and_follows_the_criterion():
    t = pd.DataFrame({"lr": [0.01, 0.01, 0.1, 0.1, 1.0, 1.0], "seed": [0, 1] * 3,
                      "score": [0.5, 0.6, 0.2, 0.3, 0.01, 9.0], "diverged": [False] * 5 + [True]})
    assert tuning.choose(t, "final_train_loss") == 0.1     # 1.0 is out: one tuning seed diverged
    assert tuning.choose(t, "final_val_acc") == 0.01
    with pytest.raises(ValueError, match="diverged"):
        tuning.choose(t.assign(diverged=True), "final_train_loss")


SPEC = {"base": BASE, "lrs": [0.001, 0.3], "tuning_seeds": [100, 101], "criterion": "final_train_loss"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A results tree holding SPEC's sweep runs (as its stage-0 shard leaves them), trained once."""
    tmp = tmp_path_factory.mktemp("swept")
    execution.run_shard(tuning.sweep(BASE, SPEC["lrs"], SPEC["tuning_seeds"]), "cpu", tmp / "results", tmp / "data")
    return tmp / "results"


def _sweep(tmp_path, swept):
    """A copy of the swept tree of one's own."""
    return shutil.copytree(swept, tmp_path / "results")


def test_the_tune_job_writes_every_rates_score_and_chooses_as_choose_does(tmp_path, swept):
    from trainfail.__main__ import main

    results = _sweep(tmp_path, swept)
    sweep = run_record.load_runs(results, [run_id(s) for s in tuning.sweep(BASE, SPEC["lrs"], SPEC["tuning_seeds"])])
    out = results / tuning.choice_file(SPEC)
    with pytest.raises(SystemExit, match="not the choice file of sweep"):
        main(["tune", "--sweep", json.dumps(SPEC), "--results", str(results), "--out", str(out.with_name("x.json"))])
    main(["tune", "--sweep", json.dumps(SPEC), "--results", str(results), "--out", str(out)])
    assert out.name == f"{tuning.sweep_id(SPEC)}.json" and out.with_name(out.name + ".sha256").exists()
    choice = store.read_checked_json(out)
    assert choice == tuning.read_choice(results, SPEC)
    # every rate on every tuning seed, scored as the analysis scored them, with the run it was read from
    scores = {(s["lr"], s["seed"]): s for s in choice["scores"]}
    assert set(scores) == {(lr, seed) for lr in SPEC["lrs"] for seed in SPEC["tuning_seeds"]}
    for r in sweep:
        key = (r.settings["optimizer"]["lr"], r.settings["seed"])
        assert scores[key]["run_id"] == r.run_id and scores[key]["score"] == tuning.score(r, "final_train_loss")
    assert choice["runs"] == [r.run_id for r in sweep]
    assert choice["criterion"] == "final_train_loss" and choice["better"] == "min" and choice["sweep"] == SPEC
    assert choice["lr"] == tuning.choose(tuning.sweep_table(SPEC, sweep), "final_train_loss") == 0.3
    assert [r["lr"] for r in choice["rates"]] == SPEC["lrs"] and all(r["eligible"] for r in choice["rates"])
    assert tuning.choice_scores(choice)["score"].tolist() == [scores[(lr, s)]["score"] for lr in SPEC["lrs"]
                                                              for s in SPEC["tuning_seeds"]]
    # a choice file edited after it was written is refused, naming what to do
    out.write_text(out.read_text().replace('"lr": 0.3', '"lr": 0.001'))
    with pytest.raises(store.CorruptFileError, match="checksum.*\n.*tune job"):
        tuning.read_choice(results, SPEC)


def test_a_tuned_run_reads_its_rate_from_the_choice_file(tmp_path, swept):
    results = _sweep(tmp_path, swept)
    tuned = tuning.tuned(BASE, SPEC["lrs"], SPEC["tuning_seeds"], 0)
    env = RunEnv(torch.device("cpu"), tmp_path / "data", results / "data", results)
    with pytest.raises(FileNotFoundError, match="tune job writes it"):
        execution.run_one(tuned, env, results)
    choice = tuning.tune(results, SPEC)
    for s in tuning.sweep(BASE, SPEC["lrs"], SPEC["tuning_seeds"]):  # no sweep run is read at training time
        shutil.rmtree(run_record.run_dir(results, run_id(s)))
    meta = execution.run_one(tuned, env, results)
    record = run_record.load_run(results, meta["run_id"])
    assert record.summary["lr"] == 0.3 == tuning.check(record, results)   # the larger rate trains faster here
    assert meta["choice"] == tuning.choice_record(choice) and meta["choice"]["file"] == tuning.choice_file(SPEC)
    # the tuned run is the plain run at the chosen rate on the claim seed, trained the same way
    plain = execution.run_one(tuning.with_lr(BASE, 0.3, 0), env, results)
    assert run_record.load_run(results, plain["run_id"]).metrics["train_loss"].equals(record.metrics["train_loss"])
    # a doctored choice: the run trains at the file's rate, whatever the sweep's runs would choose
    store.write_checked_json(results / tuning.choice_file(SPEC), {**choice, "lr": 0.001})
    assert run_record.load_run(results, execution.run_one(tuned, env, results)["run_id"]).summary["lr"] == 0.001


def test_a_changed_choice_retrains_the_tuned_runs_and_nothing_else(tmp_path, swept):
    results = _sweep(tmp_path, swept)
    choice = tuning.tune(results, SPEC)
    arm = tuning.plan(BASE, SPEC["lrs"], SPEC["tuning_seeds"], [0, 1])
    shard = lambda: {r["run_id"]: r["status"] for r in execution.run_shard(arm, "cpu", results, tmp_path / "data")}
    tuned_ids = [run_id(s) for s in arm if tuning.stage(s)]
    assert set(shard().values()) == {"reused", "trained"}
    assert set(shard().values()) == {"reused"}
    # the same rate with other scores (a sweep run retrained on a GPU): not a new choice, reused
    rescored = {**choice, "scores": [{**s, "score": 1.0} for s in choice["scores"]]}
    store.write_checked_json(results / tuning.choice_file(SPEC), rescored)
    assert set(shard().values()) == {"reused"}
    # another rate: the tuned runs were trained at a choice that is no longer the sweep's
    store.write_checked_json(results / tuning.choice_file(SPEC), {**choice, "lr": 0.001})
    stale = run_record.load_run(results, tuned_ids[0])
    with pytest.raises(ValueError, match="now chooses 0.001.*run snakemake again"):
        tuning.check(stale, results)
    status = shard()
    assert [status[r] for r in tuned_ids] == ["trained", "trained"]
    assert {s for r, s in status.items() if r not in tuned_ids} == {"reused"}  # the sweep's runs are not retrained
    retrained = run_record.load_run(results, tuned_ids[0])
    assert retrained.summary["lr"] == 0.001 == tuning.check(retrained, results)
    assert retrained.meta["choice"]["hash"] != stale.meta["choice"]["hash"]
    assert not retrained.metrics["train_loss"].equals(stale.metrics["train_loss"])


def test_the_plan_puts_tuned_runs_after_their_sweep():
    cfg = validate(merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "presets/smoke.yaml")),
                   ROOT / "workflow/schemas/config.schema.yaml")
    plan_runs = tuning.plan(BASE, [0.1, 0.3], [100], [0, 1])
    from trainfail import experiments

    class Fake:
        ID = "fake"

        @staticmethod
        def runs(cfg, ctx):
            return plan_runs

    experiments.REGISTRY["fake"] = Fake
    try:
        cfg["experiments"]["fake"] = {}
        plan = make_plan(cfg, ["fake"])
    finally:
        del experiments.REGISTRY["fake"]
    first = [s for s in plan.shards if "-stage1-" not in s]
    second = [s for s in plan.shards if "-stage1-" in s]
    assert first and second and all(plan.runs[r]["task"] == "tuned" for s in second for r in plan.shards[s])
    # the tuned shards wait for their sweep's choice file, whose tune job waits for the sweep's shards
    sweep = tuning.sweep_id(tuning.sweep_of(plan_runs[-1]))
    assert list(plan.sweeps) == [sweep] and plan.sweep_shards(sweep) == sorted(first)
    assert all(plan.after[s] == [] and plan.choices_for_shard(s) == [sweep] for s in second)
    assert plan.choices_for("fake") == [sweep] and not any(plan.choices_for_shard(s) for s in first)


def test_tuned_runs_wait_for_sweep_runs_another_experiment_planned():
    """Two experiments whose sweeps share runs: the second's tuned runs need sweep runs that the
    first planned (and sharded), so its stage-1 shards must wait for the first's shards too."""
    from trainfail import experiments

    def fake(name, lrs):
        class Fake:
            ID = name

            @staticmethod
            def runs(cfg, ctx):
                return tuning.plan(BASE, lrs, [100], [0, 1])
        return Fake

    experiments.REGISTRY["fake_a"] = fake("fake_a", [0.1, 0.3])
    experiments.REGISTRY["fake_b"] = fake("fake_b", [0.1, 0.3, 1.0])
    try:
        plan = make_plan({"experiments": {"fake_a": {}, "fake_b": {}}}, ["fake_a", "fake_b"])
    finally:
        del experiments.REGISTRY["fake_a"], experiments.REGISTRY["fake_b"]
    a_sweep = [s for s in plan.shards if s.startswith("fake_a-") and "-stage1-" not in s]
    b_tuned = [s for s in plan.shards if s.startswith("fake_b-stage1-")]
    assert a_sweep and b_tuned
    sweep = tuning.sweep_id(tuning.sweep_of(tuning.tuned(BASE, [0.1, 0.3, 1.0], [100], 0)))
    needed = {plan.shard_of[run_id(s)] for s in tuning.sweep(BASE, [0.1, 0.3, 1.0], [100])}
    assert needed & set(a_sweep) and set(plan.sweep_shards(sweep)) == needed
    assert all(plan.choices_for_shard(s) == [sweep] for s in b_tuned)


def test_edge_marks_a_choice_at_either_end_of_its_grid():
    assert tuning.edge([0.1, 0.3, 1.0], 1.0) == "high" and tuning.edge([1.0, 0.1, 0.3], 0.1) == "low"
    assert tuning.edge([0.1, 0.3, 1.0], 0.3) is None and tuning.edge([0.3], 0.3) == "only"


def _choice(lrs, means, diverged=()):
    """A choice file's content for a sweep of BASE at `lrs` whose rates scored `means` (two seeds each)."""
    spec = {**SPEC, "lrs": lrs}
    t = pd.DataFrame([{"lr": lr, "seed": s, "score": m + d, "diverged": lr in diverged, "run_id": f"r{lr}{s}"}
                      for lr, m in zip(lrs, means) for s, d in ((100, -0.01), (101, 0.01))])
    per_rate = tuning.rates(t)
    lr = tuning.choose(t, "final_train_loss")
    rate_rows = [{"lr": v, "mean_score": r.mean_score, "diverged_seeds": int(r.diverged_seeds), "eligible": bool(r.eligible)}
                 for v, r in per_rate.iterrows()]
    return {"sweep_id": tuning.sweep_id(spec), "sweep": spec, "criterion": "final_train_loss", "better": "min",
            "lr": lr, "rates": rate_rows}


def test_a_choice_row_gives_the_neighbours_scores_and_the_edge():
    inner = tuning.choice_row(_choice([0.1, 0.3, 1.0], [0.5, 0.2, 0.4]))
    assert inner["lr"] == 0.3 and inner["score"] == pytest.approx(0.2) and not inner["edge_optimum"]
    assert (inner["lower_lr"], inner["upper_lr"]) == (0.1, 1.0)
    assert (inner["lower_score"], inner["upper_score"]) == (pytest.approx(0.5), pytest.approx(0.4))
    assert inner["tuning_seeds"] == "100 101" and inner["optimizer"] == "sgd" and inner["grid"] == "0.1 0.3 1"
    top = tuning.choice_row(_choice([0.1, 0.3, 1.0], [0.5, 0.4, 0.2]))
    assert top["edge"] == "high" and top["edge_optimum"] and top["upper_lr"] != top["upper_lr"]  # NaN: nothing above
    # the largest rate diverged on one seed: the one below it is chosen, bounded from above (interior)
    bounded = tuning.choice_row(_choice([0.1, 0.3, 1.0], [0.5, 0.4, 0.1], diverged=(1.0,)))
    assert bounded["lr"] == 0.3 and not bounded["edge_optimum"]


def test_edge_note_flags_the_claims_resting_on_an_edge_optimum():
    rows = pd.DataFrame([tuning.choice_row(_choice([0.1, 0.3, 1.0], m)) for m in ([0.5, 0.2, 0.4], [0.5, 0.4, 0.2])],
                        columns=tuning.ROW_COLUMNS)
    note = tuning.edge_note(rows)
    assert note.startswith("edge_optimum:") and "sgd lr 1 (high edge of 0.1 0.3 1)" in note and "lr 0.3" not in note
    assert tuning.edge_note(rows.iloc[:1]) == "" == tuning.edge_note(rows.iloc[:0])
    claims = [{"claim_id": "a", "note": "x"}, {"claim_id": "b", "note": ""}]
    assert [c["note"] for c in tuning.flagged(claims, note)] == [f"x; {note}", note]
    assert tuning.flagged(claims, "") == claims


def test_the_choice_file_holds_the_edge_and_the_neighbours(tmp_path, swept):
    choice = tuning.tune(_sweep(tmp_path, swept), SPEC)
    # two rates, the larger chosen: at the top edge, its lower neighbour the smaller rate
    assert choice["lr"] == 0.3 and choice["edge"] == "high" and choice["edge_optimum"] is True
    assert choice["neighbours"]["upper"] is None and choice["neighbours"]["lower"]["lr"] == 0.001
    assert choice["neighbours"]["chosen"] == next(r for r in choice["rates"] if r["lr"] == 0.3)
    row = tuning.choice_row(choice)
    assert row["edge"] == "high" and row["lower_score"] == choice["neighbours"]["lower"]["mean_score"]


def _tuning_seed_lists(node, path=()):
    """Every tuning seed list in a config: a `tuning_seeds` key, or the `seeds` of a `tuning` block."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "tuning_seeds" or (k == "seeds" and path[-1:] == ("tuning",)):
                yield (*path, k), v
            else:
                yield from _tuning_seed_lists(v, (*path, k))


def test_every_preset_tunes_on_at_least_two_seeds_and_one_seed_is_refused_naming_the_key():
    from trainfail.core.config import ConfigError, load_schema

    schema = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
    assert schema["definitions"]["tuning_seeds"]["minItems"] == tuning.MIN_TUNING_SEEDS == 2
    assert schema["definitions"]["network_tuning"]["properties"]["seeds"]["$ref"] == "#/definitions/tuning_seeds"
    for preset in (None, "presets/smoke.yaml", "presets/full.yaml"):
        cfg = load_yaml(ROOT / "config.yaml")
        cfg = validate(merge(cfg, load_yaml(ROOT / preset)) if preset else cfg, ROOT / "workflow/schemas/config.schema.yaml")
        lists = dict(_tuning_seed_lists(cfg["experiments"]))
        assert {k[:1] for k in lists} >= {("momentum",), ("optimizer_schedule",), ("batch_accuracy",), ("bn_speedup",)}
        assert all(len(v) >= tuning.MIN_TUNING_SEEDS for v in lists.values()), (preset, lists)
    for key, value in (("batch_accuracy", {"tuning": {"seeds": [100]}}), ("bn_speedup", {"tuning_seeds": [100]}),
                       ("optimizer_schedule", {"tuning": {"seeds": [100]}})):
        one = merge(load_yaml(ROOT / "config.yaml"), {"experiments": {key: value}})
        with pytest.raises(ConfigError, match=f"experiments.{key}.tuning.seeds|experiments.{key}.tuning_seeds"):
            validate(one, ROOT / "workflow/schemas/config.schema.yaml")


def test_every_sweeps_grid_and_tuning_seeds_are_the_schemas():
    """The candidate rates are declared in the schema (an experiment's lrs, or its configured lr x
    multipliers), never added by the analysis: every sweep a preset plans is exactly its grid."""
    from trainfail import experiments
    from trainfail.core import contract
    from trainfail.training.context import Context
    from trainfail.training.network_arms import multipliers, sweep_lrs

    for preset in (None, "presets/smoke.yaml"):
        cfg = load_yaml(ROOT / "config.yaml")
        cfg = validate(merge(cfg, load_yaml(ROOT / preset)) if preset else cfg, ROOT / "workflow/schemas/config.schema.yaml")
        ctx = Context(cfg)
        for exp in ("momentum", "optimizer_schedule", "batch_accuracy", "bn_speedup"):
            c = ctx.experiment(exp)
            specs = {tuning.sweep_id(sp): sp for r in contract.call(experiments.get(exp).runs, c, ctx=ctx)
                     if (sp := tuning.sweep_of(r)) is not None}
            assert specs, exp
            for sp in specs.values():
                if exp == "batch_accuracy":
                    grid, seeds = c["tuning"]["lrs"], c["tuning"]["seeds"]
                elif exp == "bn_speedup":
                    grid, seeds = c["sweep_lrs"], c["tuning_seeds"]
                else:
                    t = c["network"]["tuning"] if exp == "momentum" else c["tuning"]
                    opt = sp["base"]["optimizer"]
                    lr = next(float(o["lr"]) for o in c["optimizers"] if o["name"] == opt["name"]) \
                        if exp == "optimizer_schedule" else float(c["network"]["lr"])
                    grid, seeds = sweep_lrs({**opt, "lr": lr}, multipliers(t, opt["name"])), t["seeds"]
                assert sp["lrs"] == [float(v) for v in grid] and sp["tuning_seeds"] == seeds, (preset, exp)


def test_a_grid_extends_by_factor_3_steps_where_declared():
    from trainfail.training.network_arms import multipliers, sweep_lrs

    t = {"multipliers": [1.0, 3.0, 10.0, 30.0], "extend": {"radam": 1, "adagrad": -2}}
    assert multipliers(t, "sgd") == [1.0, 3.0, 10.0, 30.0]                      # not named: the grid itself
    assert sweep_lrs({"name": "radam", "lr": 0.001}, multipliers(t, "radam"))[-1] == 0.09   # x30 x 3
    assert multipliers(t, "adagrad")[-2:] == [pytest.approx(1 / 3), pytest.approx(1 / 9)]
    assert multipliers({"multipliers": [1.0, 3.0]}, "radam") == [1.0, 3.0]      # no extend key (a test's config)
    # the quick preset's RAdam grid is one factor-3 step wider than the others' (its tuning seed's best was x30)
    cfg = validate(load_yaml(ROOT / "config.yaml"), ROOT / "workflow/schemas/config.schema.yaml")
    quick = cfg["experiments"]["optimizer_schedule"]["tuning"]
    assert multipliers(quick, "radam") == [*quick["multipliers"], max(quick["multipliers"]) * 3]
    bad = merge(load_yaml(ROOT / "config.yaml"), {"experiments": {"optimizer_schedule": {"tuning": {"extend": {"radam": 9}}}}})
    from trainfail.core.config import ConfigError
    with pytest.raises(ConfigError, match="experiments.optimizer_schedule.tuning.extend.radam"):
        validate(bad, ROOT / "workflow/schemas/config.schema.yaml")


def test_the_tuning_choices_table_the_report_shows(tmp_path):
    rows = pd.DataFrame([tuning.choice_row(_choice([0.1, 0.3, 1.0], m)) for m in ([0.5, 0.2, 0.4], [0.5, 0.4, 0.2])],
                        columns=tuning.ROW_COLUMNS)
    table = pd.concat([pd.DataFrame([{"kind": "run", "lr": 0.1}]), rows.assign(kind="tuning")], ignore_index=True)
    tuning.write_choices(tuning.rows_in(table, "kind", "tuning"), tmp_path)
    shown = pd.read_csv(tmp_path / "tuning_choices.csv", keep_default_na=False)
    assert list(shown.columns) == tuning.SHOWN and len(shown) == 2
    assert shown["edge"].tolist() == ["", "high"] and shown["upper_lr"].astype(str).tolist() == ["1", ""]
    # a table from before the rows existed (a figure fixture): no rows, no file
    assert tuning.rows_in(pd.DataFrame([{"kind": "run"}]), "kind", "tuning").empty
    tuning.write_choices(tuning.rows_in(pd.DataFrame([{"kind": "run"}]), "kind", "tuning"), tmp_path / "none")
    assert not (tmp_path / "none").exists()


def _record(rows: list[dict], diverged: bool = False) -> run_record.RunRecord:
    return run_record.RunRecord("r", {}, {"diverged": diverged}, {}, pd.DataFrame(rows), None)


def test_the_recomputed_criterion_reads_the_recomputed_training_loss():
    """final_train_loss_recomputed scores the final evaluation's train_loss_recomputed (BN statistics
    recomputed on the training set), not the eval-mode train_loss: where the two rank the rates
    oppositely, the choice follows the recomputed loss; a diverged run scores its step-0 evaluation."""
    rows = lambda eval_mode, recomputed: [
        {"step": 0, "train_loss": 2.3, "train_loss_recomputed": 2.31},
        {"step": 5, "batch_loss": 0.1},  # a logged row between evaluations
        {"step": 10, "train_loss": eval_mode, "train_loss_recomputed": recomputed}]
    low, high = _record(rows(0.5, 0.9)), _record(rows(0.9, 0.4))
    assert tuning.score(low, "final_train_loss") == 0.5 and tuning.score(low, "final_train_loss_recomputed") == 0.9
    table = pd.DataFrame({"lr": [0.1, 1.0], "seed": [100, 100], "diverged": [False, False],
                          "score": [tuning.score(r, "final_train_loss_recomputed") for r in (low, high)]})
    assert tuning.choose(table, "final_train_loss_recomputed") == 1.0
    assert tuning.choose(table.assign(score=[tuning.score(r, "final_train_loss") for r in (low, high)]),
                         "final_train_loss") == 0.1
    diverged = _record(rows(float("nan"), float("nan")), diverged=True)
    assert tuning.score(diverged, "final_train_loss_recomputed") == 2.31
    assert pd.isna(tuning.score(_record([{"step": 0, "train_loss": 2.3}]), "final_train_loss_recomputed"))  # not evaluated


def test_a_recomputed_sweep_asks_the_loop_for_the_recomputed_evaluation(tmp_path):
    """The criterion needs its column: plan refuses a base that does not ask the loop for it (naming
    the key), base_for adds it; the loop then evaluates, at every evaluation of every member of a
    stacked cell, the training loss of the network with BN statistics recomputed on the training set
    (batchnorm.recomputed_evaluation of the trained model), which differs from the eval-mode loss."""
    from trainfail.training import batchnorm, data as data_, stack, train

    bn = {**BASE, "model": {"arch": "mlp", "hidden": [8], "norm": "batch"}, "steps": 12, "eval_points": 1}
    with pytest.raises(ValueError, match="eval_recomputed"):
        tuning.plan(bn, [0.1, 1.0], [100, 101], [0], "final_train_loss_recomputed")
    base = tuning.base_for(bn, "final_train_loss_recomputed")
    assert base["eval_recomputed"] == ["train"] and tuning.base_for(base, "final_train_loss_recomputed") == base
    assert "eval_recomputed" not in tuning.base_for(bn, "final_train_loss")
    runs = [complete(r) for r in tuning.sweep(base, [1.0], [100, 101])]  # a run setting of its own, typed
    assert all(r["eval_recomputed"] == ["train"] for r in runs)
    with pytest.raises(Exception, match="eval_recomputed"):
        complete({**runs[0], "eval_recomputed": ["training"]})
    torch.set_num_threads(1)
    ds = data_.load("digits").subset(256)
    for results in (stack.train_stack(runs, ds, torch.device("cpu")), [train.train(r, ds, torch.device("cpu")) for r in runs]):
        for r in results:
            final = r.rows[-1]
            expected = batchnorm.recomputed_evaluation(r.model, ds, sets=("train",))
            assert final["train_loss_recomputed"] == pytest.approx(expected["train_loss_recomputed"], rel=1e-5)
            assert final["train_acc_recomputed"] == pytest.approx(expected["train_acc_recomputed"])
            assert abs(final["train_loss_recomputed"] - final["train_loss"]) > 1e-4  # running statistics lag
            assert "val_loss_recomputed" not in final
            assert [k for k in r.rows[0] if k.endswith("_recomputed")] == ["train_loss_recomputed", "train_acc_recomputed"]
