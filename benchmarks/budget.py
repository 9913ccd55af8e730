"""How long a preset takes on one GPU, estimated from counts: runs, updates, stacked cells.

    python benchmarks/budget.py                                  # config.yaml + presets/full.yaml
    python benchmarks/budget.py --configfile config.yaml --configfile presets/full.yaml \
                                --configfile presets/papers.yaml # with MNIST and CIFAR-10
    python benchmarks/budget.py --measure-host                   # re-measure the host cost per step

An estimate, not a measurement: it reads the plan (trainfail.pipeline.plan, no data needed), counts for
every experiment its runs, the stacked cells a GPU job trains (stack.cells), the updates of each
cell and the examples it evaluates, and prices them with the cost model below. On a GPU every
cell is one stacked model (stack.exact_on is false there), so a step of S members costs one
host-side step plus S members' arithmetic.

The cost model, chosen to err long (no GPU was available to measure it; see README, "Budget"):
- host time per training step (Python, dispatch, CUDA launches): these networks are small enough
  that the GPU waits on the host. Measured with `--measure-host` (the stacked step on this
  machine's CPU, tiny tensors so that dispatch is nearly all there is): MLP [4, 4] 0.8 ms, 5
  layers with batch norm 2.0 ms, conv net of 3 stages 1.9 ms, with batch norm 2.3 ms (CPU time, 1
  thread, this project's 2-core VM at a load of 5; at a load of 10 the same step took up to 2x
  longer). Fitted per layer (HOST_MS). On a GPU each of the step's ~30-60 operations costs its
  dispatch plus a launch (~10-20 us: 0.5-1 ms a step), while the CPU figure also holds the tiny
  kernels' own arithmetic (a CPU convolution has a fixed cost of tens of us): GPU_HOST_FACTOR
  1.0 takes the CPU figure as it is. The least certain number here: the GPU check measures it.
- arithmetic: 3 x the forward FLOPs (forward + backward) per example and member, counted by
  torch.utils.flop_counter on the real model, at SUSTAINED_FLOPS. An H100 does 51 (PCIe) to 67
  (SXM) TFLOP/s in FP32 without TF32 (the default, tf32: false); 8 TFLOP/s assumes these small
  GEMMs and deterministic cuDNN convolutions reach an eighth of that.
- a step's time is host + arithmetic (summed, not overlapped: conservative).
- every training job (shard) pays JOB_START (Python, torch and CUDA start, the dataset to the
  GPU); the GPU runs one job at a time (trainfail.pipeline.gpus hands out one slot per GPU).
- the audit re-trains its sampled runs with their whole stacks; the report and the last analysis
  add a fixed TAIL (they run on the CPU cores, beside the training jobs before them).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from functools import lru_cache
from pathlib import Path

from trainfail.training.sizes import SHAPES  # (input shape, train, test examples): known without loading data
from trainfail.training.sizes import training_base as base_of

ROOT = Path(__file__).resolve().parents[1]

SUSTAINED_FLOPS = 15e12  # FP32 FLOP/s an H100 sustains on these layers (see above)
GPU_HOST_FACTOR = 1.0    # host time on a GPU / the CPU-measured time per step (see above)
HOST_MS = {"linear": 0.25, "conv": 0.5, "norm": 0.15, "step": 0.1}  # fitted to --measure-host
LOGGED_STEP_S = 1e-3     # a logged step: device syncs, grad norms (batched over members) ...
LOGGED_ROW_S = 5e-5      # ... and a Python row per member
EVAL_CHUNK = 4096        # train.evaluate's chunk
CELL_START_S = 0.2       # building a stack, its optimizer, the permutations
JOB_START_S = 6.0        # one training job: interpreter and imports (3.6 CPU-s here), CUDA context, data
TAIL_S = 30.0            # the last analysis and the report after the last training job
BUDGET_S = 600.0         # the goal: the full preset in 10 minutes on one H100

# The budget, line by line, in one table: each experiment's estimate on the full preset (its
# training and its runs the audit re-trains) stays within its line, and so do the audit job's start
# and the tail (over_budget; tests/test_presets.py). The lines and RESERVE_S sum to BUDGET_S, so
# the lines fitting is the preset fitting. An experiment without a line draws on RESERVE_S (all such
# together): a new one that trains nothing on the full preset, or fits there, breaks nothing; one
# that needs more takes a line of its own, paid for by another line. Set at the estimates of the
# commit that introduced them plus 0.05 s, rounded up to 0.1 s (`python benchmarks/budget.py`
# prints estimate and allotment side by side). The audit's sample is the lowest run-id hashes, so
# run ids that change (the typed-run settings) move its re-training between lines: 1.0 s moved
# from normalization_variants (whose audited runs left the sample) to momentum and optimizer_schedule.
# A second tuning seed in every sweep (stacked: cheap) added 2.5 s to batch_accuracy, optimizer_schedule
# and bn_speedup, taken from normalization_variants' slack (its estimate was 51.5 s against 55.9 s).
# internal_covariate_shift's dose-response (8 arms, each with its sweep on two tuning seeds; 60 steps,
# ICS every 30, 4 claim seeds) needs 48.6 s: 12.5 s from minimum_ratio's (a sweep at 20 seeds per level) and
# normalization_variants' slack, from momentum's 0.7 and the reserve.
# bn_speedup's variants became derived tuned runs, trained in stacks (58.6 + 1.9 s -> 29.6 + 1.9 s):
# its line went to its estimate, and the 28.1 s it freed pays critical_batch_size's line (21.6 s at
# the quick preset's sizes, two stages' jobs, 12 s of it start-up; issue 19) and the reserve.
# edge_of_stability has no line: enabled at presets/full.yaml's settings it is estimated at 88.3 s (one
# job, 30 runs one at a time: full batch on 5,000 Fashion-MNIST examples, 2,000 steps, three seeds, the
# SGD and warm-up arms), 627 s in all with critical_batch_size; the other lines' slack (batch_accuracy,
# normalization_variants, internal_covariate_shift, optimizer_schedule: about 50 s) does not cover it,
# so it stays off in the full preset until the lead moves the budget or drops an arm elsewhere.
AUDIT, TAIL = "(audit job)", "(last analysis and report)"
ALLOTMENT_S = {
    "toy_critical_points": 0.0,
    "minimum_ratio": 77.2,
    "batch_path": 0.0,
    "batch_timing": 28.8,
    "batch_accuracy": 64.2,
    "generalization_gap": 44.2,
    "momentum": 19.4,
    "stuck_not_critical": 14.4,
    "ill_conditioned_convex": 17.7,
    "optimizer_schedule": 77.6,
    "warmup_large_batch": 26.4,
    "feature_normalization": 0.0,
    "bn_inference": 36.7,
    "bn_speedup": 31.6,
    "critical_batch_size": 21.7,
    "internal_covariate_shift": 48.6,
    "normalization_variants": 49.1,
    AUDIT: JOB_START_S,
    TAIL: TAIL_S,
}
RESERVE_S = round(BUDGET_S - sum(ALLOTMENT_S.values()), 6)


def config_for(files: list[str]) -> dict:
    from trainfail.core.config import load_yaml, merge, validate

    config: dict = {}
    for f in files:
        config = merge(config, load_yaml(f))
    return validate(config, ROOT / "workflow/schemas/config.schema.yaml")


@lru_cache(maxsize=None)
def _forward_flops(spec_json: str, dataset: str) -> float:
    import json

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainfail.training import models

    spec = json.loads(spec_json)
    shape = SHAPES[dataset][0]
    model = models.build(spec, shape, 10)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(2, *shape))
    return counter.get_total_flops() / 2


def forward_flops(spec: dict, dataset: str) -> float:
    """FLOPs of one example's forward pass (matmuls and convolutions, as counted by torch)."""
    import json

    return _forward_flops(json.dumps(spec, sort_keys=True), dataset)


def host_step_s(spec: dict) -> float:
    """Host time of one training step of this model on a GPU (one stacked step, any members)."""
    if spec.get("arch", "mlp") == "mlp":
        linear, conv, norms = len(spec.get("hidden", [64])) + 1, 0, len(spec.get("hidden", [64]))
    else:
        linear, conv, norms = 2, len(spec.get("channels", [16, 32])), len(spec.get("channels", [16, 32])) + 1
    normed = spec.get("norm", "none") not in ("none", "weight")
    ms = HOST_MS["step"] + linear * HOST_MS["linear"] + conv * HOST_MS["conv"] + normed * norms * HOST_MS["norm"]
    return GPU_HOST_FACTOR * ms / 1e3


def step_s(spec: dict, dataset: str, batch: int, members: int, passes: float = 3.0) -> float:
    """One update (passes = 3: forward and backward) of `members` stacked runs on `batch` examples each."""
    return host_step_s(spec) + passes * forward_flops(spec, dataset) * batch * members / SUSTAINED_FLOPS


def forward_s(spec: dict, dataset: str, examples: int, members: int, chunk: int = EVAL_CHUNK) -> float:
    """Forward passes over `examples` examples in chunks (evaluation): a third of a step's host time per chunk."""
    chunks = max(math.ceil(examples / chunk), 1)
    return chunks * host_step_s(spec) / 3 + forward_flops(spec, dataset) * examples * members / SUSTAINED_FLOPS


def training(s: dict, members: int = 1) -> tuple[int, float]:
    """(updates, seconds) of one training as trainfail.training.train runs it (settings with dataset, model,
    batch_size, steps or epochs, eval and log points), `members` stacked."""
    from trainfail.training import train

    shape, n_train, n_test = SHAPES[s["dataset"]]
    steps, _ = train.total_steps(s, n_train)
    bs = min(int(s["batch_size"]), n_train)
    evals = len(train.eval_steps(steps, s))
    logged = len(train.log_steps(steps, s) | train.eval_steps(steps, s))
    seconds = (steps * step_s(s["model"], s["dataset"], bs, members) + logged * (LOGGED_STEP_S + LOGGED_ROW_S * members)
               + evals * forward_s(s["model"], s["dataset"], n_train + n_test, members) + CELL_START_S)
    return steps, seconds


def run_cost(s: dict, members: int = 1) -> tuple[int, float]:
    """(updates, seconds) of one run, or of one stacked cell of `members` runs equal but the seed.
    Tasks with their own `execute` add their measurements, in update-equivalents."""
    task = s["task"]
    if task == "generalization_gap":
        return _generalization_gap(s)
    if task == "batch_timing":
        return _batch_timing(s)
    if task == "minimum_ratio":
        # an ensemble of small nets over seeds, on the CPU: per step, arithmetic in starts x width x
        # examples. Fitted to the quick preset's runs measured here (width 8: 5.0-7.4 CPU-s, width
        # 16: 12.4 CPU-s; the model: 8.0 and 14.6)
        steps = int(s["train_steps"]) + int(s["newton_iters"])
        starts = len(s["seeds"]) * len(s.get("weight_decays", [0.0])) * (1 + int(s["perturbations"]) * len(s["perturb_scales"]))
        width = int(s["width"])
        return steps, steps * (2e-4 + 1.6e-8 * starts * width * int(s["n_examples"])) + starts * 0.005
    if task in ("momentum", "ill_conditioned_convex"):
        # a 2-parameter surface on the CPU, every seed at once: 0.1 ms a step (the quick preset's
        # ill_conditioned_convex, the same settings: 116,000 steps in 10 CPU-s after start-up)
        return int(s["steps"]), int(s["steps"]) * 1e-4
    if task == "edge_of_stability":
        # full batch on n_train examples (or mini-batch SGD on batch_size of them), the losses kept on
        # the device and read at every sharpness step (a logged step there, not every step: the host
        # queues the steps between); every sharpness_every steps a full-batch loss and a warm-started
        # Lanczos of about 8 Hessian-vector products (4-6 measured on the quick preset, 13 from a cold
        # start), each about two full-batch steps' work
        n, steps = int(s["n_train"]), int(s["steps"])
        full = step_s(s["model"], s["dataset"], n, 1)
        step = step_s(s["model"], s["dataset"], min(int(s.get("batch_size") or n), n), 1)
        measurements = steps // int(s["sharpness_every"]) + 2
        return steps, steps * step + measurements * (LOGGED_STEP_S + full / 3 + 8 * 2 * full)
    if task == "stuck_not_critical":  # full batch on the whole training set, logged every step
        _, n_train, _ = SHAPES[s["dataset"]]
        n = int(s.get("n_train") or n_train)
        steps = int(s["steps"])
        return steps, steps * (step_s(s["model"], s["dataset"], n, 1) + LOGGED_STEP_S)
    base = base_of(s)
    if base is None:
        raise ValueError(f"no cost model for task {task!r}: add one to benchmarks/budget.py")
    updates, seconds = training(base, members)
    shape, n_train, n_test = SHAPES[base["dataset"]]
    spec, ds, bs = base["model"], base["dataset"], int(base["batch_size"])
    if task == "bn_inference":
        # test accuracy with per-batch statistics at every test batch size, population statistics
        # over the training set, and the moving average's floor (frozen weights, training-mode forwards)
        seconds += sum(forward_s(spec, ds, n_test, 1, chunk=int(b)) for b in s["test_batch_sizes"])
        seconds += 3 * forward_s(spec, ds, n_train, 1) + int(s["floor_steps"]) * step_s(spec, ds, bs, 1, passes=1)
    if task == "internal_covariate_shift":
        # the standard and BN arms, at each measurement: the loss and gradient at every step size along
        # the gradient, and the per-layer shift (a gradient before and after the update of the layers
        # below): ~ 3 + 2 x sizes steps; the noisy arms record the input shift and SNR only (hooks)
        if s["landscape"]:
            measures = updates // int(s["measure_every"]) + 1
            seconds += measures * (3 + 2 * len(s["step_sizes"])) * step_s(spec, ds, bs, 1)
        # evaluations beyond the base's two, each in eval mode and with statistics recomputed
        evals = max(updates // int(s["eval_every"]) + 1 - 2, 0)
        seconds += evals * 2 * forward_s(spec, ds, n_train + n_test, 1)
    return updates, seconds


def _generalization_gap(s: dict) -> tuple[int, float]:
    """Keskar et al.: SB and LB trained for at most `epochs` (no early stop counted), then polishing
    to a matched loss, sharpness searches, Lanczos Hessian-vector products and the interpolation,
    each a gradient (or two) over `hessian_examples`."""
    spec, ds = s["model"], s["dataset"]
    _, n_train, n_test = SHAPES[ds]
    meas = s["measure"]
    m = min(int(meas["hessian_examples"]), n_train)
    updates, seconds = 0, 0.0
    for bs in s["batch_sizes"].values():
        steps = int(s["epochs"]) * max(n_train // min(int(bs), n_train), 1)
        updates += steps
        seconds += steps * step_s(spec, ds, int(bs), 1) + int(s["epochs"]) * forward_s(spec, ds, n_train + n_test, 1)
    full_grad = step_s(spec, ds, m, 1)
    polish = 2 * (int(s["polish_steps"]) + int(s["descent_steps"]))
    points = 2 * 2  # SB and LB, at the end and matched
    sharp = points * len(meas["epsilons"]) * 2 * int(meas["sharpness_steps"])  # full space and subspace
    lanczos = points * 2 * int(meas["hessian_iters"])  # a Hessian-vector product ~ two gradients
    interp = points // 2 * len(s["alphas"]) * forward_s(spec, ds, n_train + n_test, 1)
    return updates, seconds + (polish + sharp + lanczos) * full_grad + interp


def _batch_timing(s: dict) -> tuple[int, float]:
    """Blocks of back-to-back updates (warm-up and repeats) and, where asked, whole epochs."""
    n = int(s["n_examples"])
    spec, ds = s["model"], "fashion_mnist"
    bs = min(int(s["batch_size"]), n)
    updates = (int(s["warmup"]) + int(s["repeats"])) * int(s["block"])
    epochs = int(s.get("epoch_repeats", 0)) if s.get("epoch") is not False else 0
    updates += epochs * (n // bs)
    return updates, updates * step_s(spec, ds, bs, 1)


def estimate(config: dict) -> tuple[list[dict], dict]:
    """One row per experiment: runs, stacked cells, updates (of every run), GPU seconds of its
    training ("seconds") and of its runs the audit re-trains ("audit"); and totals (the audit's
    whole time and its job's start, the tail, the total)."""
    from trainfail.pipeline import audit, plan
    from trainfail.training import stack

    p = plan.make_plan(config, plan.enabled_experiments(config))
    stacking = bool(config.get("stack", True))
    cost_of_run: dict[str, float] = {}
    owner: dict[str, str] = {}  # run id -> the experiment whose row counted it
    rows = []
    for exp, ids in p.by_experiment.items():
        runs = cells = updates = 0
        seconds = 0.0
        shards = [s for s in p.shards_for(exp)]
        for shard in shards:
            for cell in p.cells(shard):
                fresh = [s for s in cell if plan_id(s) not in owner]
                if not fresh:
                    continue
                owner.update((plan_id(s), exp) for s in fresh)
                together = stacking and stack.why_not(fresh) is None
                groups = [fresh] if together else [[s] for s in fresh]
                for group in groups:
                    u, t = run_cost(group[0], len(group))
                    updates += u * len(group)
                    seconds += t
                    for s in group:
                        cost_of_run[plan_id(s)] = t
                runs += len(fresh)
                cells += 1 if together else 0
        seconds += len(shards) * JOB_START_S
        rows.append({"experiment": exp, "runs": runs, "stacked cells": cells, "shards": len(shards),
                     "updates": updates, "seconds": seconds, "audit": 0.0})
    enabled = sorted({r for ids in p.by_experiment.values() for r in ids})
    sample = audit.sample(enabled, int(config["audit"]["sample"]), int(config["audit"]["seed"]))
    row_of = {r["experiment"]: r for r in rows}
    for r in sample:  # a sampled run's stack, re-trained, is its experiment's
        if r in owner:
            row_of[owner[r]]["audit"] += cost_of_run.get(r, 0.0)
    audit_start = JOB_START_S if sample else 0.0
    audit_s = audit_start + sum(r["audit"] for r in rows)
    total = sum(r["seconds"] for r in rows) + audit_s + TAIL_S
    return rows, {"audit": audit_s, "audit_start": audit_start, "tail": TAIL_S, "total": total,
                  "runs": len(p.runs), "shards": len(p.shards)}


def spent(rows: list[dict], totals: dict) -> dict[str, float]:
    """Seconds per budget line: each experiment's training and its share of the audit, the audit
    job's start, the tail."""
    lines = {r["experiment"]: r["seconds"] + r["audit"] for r in rows}
    return {**lines, AUDIT: totals["audit_start"], TAIL: totals["tail"]}


def over_budget(rows: list[dict], totals: dict) -> list[str]:
    """Every line over its allotment, the experiments without a line over the reserve, the total
    over BUDGET_S, each with what to do: [] when the preset fits (see ALLOTMENT_S)."""
    used = spent(rows, totals)
    fix = ("trim its settings in presets/full.yaml, or move seconds to its line from another line or the reserve "
           "(benchmarks/budget.py, ALLOTMENT_S)")
    out = [f"{line}: {used[line]:.1f} s estimated, over its allotment of {allotted:.1f} s: {fix}"
           for line, allotted in ALLOTMENT_S.items() if used.get(line, 0.0) > allotted]
    unlisted = {line: s for line, s in used.items() if line not in ALLOTMENT_S and s > 0}
    if sum(unlisted.values()) > RESERVE_S:
        out.append(f"{', '.join(f'{e} ({s:.1f} s)' for e, s in unlisted.items())}: no line of "
                   f"{'its' if len(unlisted) == 1 else 'their'} own in benchmarks/budget.py ALLOTMENT_S, and the reserve "
                   f"that experiments without a line share is {RESERVE_S:.1f} s: give it a line, paid for by another "
                   "line (trim that experiment in presets/full.yaml)")
    if totals["total"] > BUDGET_S:
        out.append(f"total: {totals['total']:.1f} s estimated > the budget of {BUDGET_S:.0f} s")
    return out


def plan_id(settings: dict) -> str:
    from trainfail.core.config import run_id

    return run_id(settings)


def measure_host(steps: int = 600) -> None:
    """The host cost per stacked step on this CPU: tiny tensors, so dispatch is all there is."""
    import torch

    from trainfail.training import data, stack

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    for label, model, shape in [("MLP [4, 4]", {"arch": "mlp", "hidden": [4, 4]}, (1, 4, 4)),
                                ("MLP 5 x [4], batch norm", {"arch": "mlp", "hidden": [4] * 5, "norm": "batch"}, (1, 4, 4)),
                                ("conv net [2, 2, 2]", {"arch": "cnn", "channels": [2, 2, 2]}, (1, 8, 8)),
                                ("conv net [2, 2, 2], batch norm", {"arch": "cnn", "channels": [2, 2, 2], "norm": "batch"},
                                 (1, 8, 8))]:
        d = data.Dataset("tiny", torch.randn(256, *shape, generator=g), torch.randint(0, 10, (256,), generator=g),
                         torch.randn(16, *shape, generator=g), torch.randint(0, 10, (16,), generator=g), 10)
        cell = [{"model": model, "optimizer": {"name": "momentum", "lr": 0.01, "momentum": 0.9}, "batch_size": 2,
                 "steps": steps, "eval_points": 1, "log_points": 1, "seed": i} for i in range(5)]
        stack.train_stack(cell, d, torch.device("cpu"), exact=False)  # warm-up
        c0 = time.process_time()
        stack.train_stack(cell, d, torch.device("cpu"), exact=False)
        cpu = (time.process_time() - c0) / steps
        print(f"{label:<34} {cpu * 1e3:.2f} ms CPU a step (5 members); the model's host time on a GPU: "
              f"{host_step_s(model) * 1e3:.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", action="append", help="config files merged in order "
                   "(default: config.yaml presets/full.yaml)")
    p.add_argument("--measure-host", action="store_true", help="measure the host cost per step on this CPU")
    p.add_argument("--check", action="store_true", help="exit with status 1 when a line is over its allotment")
    args = p.parse_args()
    if args.measure_host:
        measure_host()
        return
    files = args.configfile or ["config.yaml", "presets/full.yaml"]
    rows, totals = estimate(config_for(files))
    used = spent(rows, totals)
    allot = lambda line: f"{ALLOTMENT_S[line]:>10.1f}" if line in ALLOTMENT_S else f"{'reserve':>10}"
    print(f"estimated time on one H100 (cost model: benchmarks/budget.py), {' + '.join(files)}\n")
    print(f"{'experiment':<26}{'runs':>7}{'stacked cells':>15}{'jobs':>6}{'updates':>12}{'seconds':>9}"
          f"{'audit':>7}{'allotment':>10}")
    for r in rows:
        if r["runs"] or r["experiment"] not in ALLOTMENT_S:
            print(f"{r['experiment']:<26}{r['runs']:>7}{r['stacked cells']:>15}{r['shards']:>6}"
                  f"{r['updates']:>12,}{r['seconds']:>9.1f}{r['audit']:>7.1f}{allot(r['experiment'])}")
    print(f"{'audit job (its runs: their experiments)':<75}{used[AUDIT]:>7.1f}{allot(AUDIT)}")
    print(f"{'last analysis and report':<66}{totals['tail']:>9.1f}{'':>7}{allot(TAIL)}")
    print(f"{'reserve (experiments without a line)':<82}{RESERVE_S:>10.1f}")
    print(f"{'total':<26}{totals['runs']:>7}{'':>15}{totals['shards']:>6}"
          f"{sum(r['updates'] for r in rows):>12,}{totals['total']:>9.0f}"
          f"   ({totals['total'] / 60:.1f} min; budget {BUDGET_S / 60:.0f} min)")
    problems = over_budget(rows, totals)
    for problem in problems:
        print(f"over: {problem}")
    if args.check and problems:
        sys.exit(f"over budget on {len(problems)} line(s)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
