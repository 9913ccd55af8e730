"""What a plan asks of a machine, estimated from the settings alone, and the limits it must keep.

The schema bounds each size on its own (a width, a number of steps, a list's length); what it
cannot bound is their product: a plan of a million runs, or a job whose network, batch and data do
not fit in memory. make_plan checks both against the config's `limits` before any job starts
(and before any run id is hashed), naming the key and the estimate.

Nothing here builds a model or allocates a tensor: the parameter and activation counts are
computed from the model's settings (models.build's layers, counted by hand; a test checks them
against the built models), the data sets' sizes are known constants (SHAPES).

The memory estimate of a run, in bytes (0.9 to 1.7 times the peak memory training takes on the
CPU, as benchmarks/bench_memory.py measures it: a check against gross mistakes, not a sizing):
- parameters: 4 bytes x PARAM_COPIES (weights, gradients and up to two optimizer slots: Adam's
  moments) x the parameter count;
- activations: 4 bytes x the values every layer keeps per example for the backward pass (linear or
  conv output, norm output, activation output, pooled output: more than autograd keeps, which
  shares a layer's output with the next layer's input) x the batch, plus the gradients of the two
  widest layers in flight during the backward pass; or, when larger, the forward pass of an
  evaluation chunk (train.evaluate: 4,096 examples), two layers at a time;
- the data set on the device (training and test sets, float32), once per job (RunEnv caches it);
- a stacked cell (stack.py) holds all its members at once: its runs' parameters and activations add up;
- what a task adds of its own: Keskar's random subspace and Lanczos vectors (generalization_gap),
  exact Hessians in float64 (minimum_ratio), the recorded paths of the 2-parameter surfaces
  (momentum, ill_conditioned_convex), and every logged metrics row (ROW_BYTES each).
A job's estimate is the largest cell it trains plus every data set it loads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# (input shape, training examples, test examples) of each data set: what plan-time code knows
# without loading it (benchmarks/budget.py prices runs with the same table)
SHAPES = {"mnist1d": ((1, 40), 4000, 1000), "mnist1d_large": ((1, 40), 40000, 10000),
          "digits": ((1, 8, 8), 1437, 360), "fashion_mnist": ((1, 28, 28), 60000, 10000),
          "mnist": ((1, 28, 28), 60000, 10000), "cifar10": ((3, 32, 32), 50000, 10000),
          "cifar100": ((3, 32, 32), 50000, 10000)}
CLASSES = {"cifar100": 100}  # every other data set has 10

FLOAT = 4               # bytes of a float32
DOUBLE = 8              # bytes of a float64 (minimum_ratio, the 2-parameter surfaces)
PARAM_COPIES = 4        # weights, gradients, two optimizer slots
EVAL_CHUNK = 4096       # train.evaluate's chunk: a forward pass over this many examples at once
ROW_BYTES = 1024        # one logged metrics row (a dict of ~15 numbers, then a DataFrame row)
GIB = 2 ** 30


class SizeError(ValueError):
    """A model that cannot be built on its data (e.g. more pooling stages than positions)."""


def layers(spec: dict) -> list[int]:
    """The widths of a model's layers: `hidden` of an MLP, `channels` of a conv net."""
    if spec.get("arch", "mlp") == "cnn":
        return [int(c) for c in spec.get("channels", [16, 32])]
    return [int(h) for h in spec.get("hidden", [64])]


def _norm_params(norm: str, features: int) -> int:
    """Trainable parameters models.norm_layer adds after a layer of `features` outputs."""
    return 0 if norm in ("none", "weight") else 2 * features


def network(spec: dict, shape: tuple[int, ...], classes: int = 10) -> tuple[int, int, int]:
    """(parameters, values kept per example for the backward pass, the largest layer's values per
    example) of models.build(spec, shape, classes), counted without building it."""
    norm = spec.get("norm", "none")
    # layer output, norm output (noisy BN: and its noise), activation output
    per_layer = {"none": 2, "weight": 2, "noisy_batch": 4}.get(norm, 3)
    if spec.get("arch", "mlp") == "cnn":
        if len(shape) not in (2, 3):
            raise SizeError(f"a conv net (arch cnn) needs inputs with positions, (C, L) or (C, H, W); these are {tuple(shape)}")
        kernel = int(spec.get("kernel_size", 3))
        width, dims = int(shape[0]), [int(d) for d in shape[1:]]
        params, kept, widest = 0, math.prod(shape), math.prod(shape)
        for i, c in enumerate(layers(spec)):
            if i > 0:  # a max-pool halves every dimension before each stage after the first
                dims = [d // 2 for d in dims]
                if min(dims) < 1:
                    raise SizeError(f"{len(layers(spec))} conv stages pool an input of {tuple(shape)} to nothing: "
                                    f"at most {i} stages here (each stage after the first halves the positions)")
                kept += width * math.prod(dims)
            params += width * c * kernel ** len(dims) + c + _norm_params(norm, c) + (c if norm == "weight" else 0)
            values = c * math.prod(dims)
            kept += per_layer * values
            widest = max(widest, values)
            width = c
        params += width * classes + classes
        return params, kept + width + classes, widest
    if norm == "instance" and layers(spec):
        raise SizeError("instance norm needs a conv net (arch cnn): an MLP's layer has no positions to normalise over")
    bias = bool(spec.get("bias", True))
    width = math.prod(shape)
    params, kept, widest = 0, width, width
    for h in layers(spec):
        params += width * h + (h if bias else 0) + _norm_params(norm, h) + (h if norm == "weight" else 0)
        kept += per_layer * h
        widest = max(widest, h)
        width = h
    params += width * classes + (classes if bias else 0)
    return params, kept + classes, widest


def test_size(dataset: str) -> int:
    """The number of held-out examples a data set's validation/test accuracy is measured on."""
    return SHAPES[dataset][2]


def data_bytes(dataset: str) -> int:
    shape, n_train, n_test = SHAPES[dataset]
    return FLOAT * (n_train + n_test) * math.prod(shape)


def _rows(total: int, settings: dict, key: str = "log") -> int:
    """How many metrics rows a run logs (train.log_steps), without building the set of steps."""
    every = settings.get(f"{key}_every") or max(total // int(settings.get(f"{key}_points", 100)), 1)
    return total // int(every) + 2


def training_base(s: dict) -> dict | None:
    """The training settings a run's work is made of: its own, a tuned run's `base` (trained at the
    chosen rate, for as long; a derived one's model keys changed), or the sweep base of an
    experiment's own run that names a sweep (counted with batch norm: the larger)."""
    from trainfail.training import tuning

    spec = tuning.sweep_of(s) if "task" in s else None  # the one reading of "which sweep it trains at"
    if spec is not None:
        if s["task"] == tuning.TASK:
            return {**tuning.derived_base(s), "seed": s.get("seed", 0)}
        base = {**spec["base"], "seed": s.get("seed", 0)}
        return {**base, "model": {**base["model"], "norm": "batch"}}
    return s if "dataset" in s and "model" in s and "batch_size" in s else None


def training_bytes(params: int, kept: int, widest: int, batch: int) -> int:
    """Bytes of one network (`network`'s counts) training at `batch` examples: its parameters and
    their copies, the values kept for the backward pass, two layers' gradients in flight.
    benchmarks/bench_memory.py sets it beside the memory training takes on the CPU."""
    return FLOAT * (PARAM_COPIES * params + (kept + 2 * widest) * batch)


def _net_bytes(spec: dict, dataset: str, batch: int, members: int = 1, shape: tuple | None = None) -> tuple[int, int]:
    """(bytes of `members` networks training at `batch` examples each, their parameter count)."""
    shape_, n_train, n_test = SHAPES[dataset]
    shape = shape or shape_
    params, kept, widest = network(spec, shape, CLASSES.get(dataset, 10))
    evaluate = 2 * widest * min(EVAL_CHUNK, n_train + n_test)  # no graph: two layers' values at a time
    one = max(training_bytes(params, kept, widest, batch), FLOAT * (PARAM_COPIES * params + evaluate))
    return members * one, params


def run_bytes(s: dict, members: int = 1) -> tuple[int, list[str]]:
    """(estimated peak bytes of one run, or of a stacked cell of `members` runs equal but the seed,
    without its data sets; the data sets it loads)."""
    task = s.get("task", "train")
    if task in ("momentum", "ill_conditioned_convex"):  # the recorded path: (seeds, steps + 1, 3) float64
        return DOUBLE * 3 * (int(s["steps"]) + 1) * len(s["seeds"]), []
    if task == "minimum_ratio":
        # an ensemble of 1-h-1 nets in float64: per start a (P x P) Hessian and (N x P) Jacobian
        width, n = int(s["width"]), int(s["n_examples"])
        p = 3 * width + 1
        levels = len(s.get("weight_decays", [0.0]))  # every seed at every weight decay level
        starts = len(s["seeds"]) * levels * (1 + int(s["perturbations"]))
        rows = _rows(int(s["train_steps"]), s) * len(s["seeds"]) * levels
        return DOUBLE * starts * (4 * p * p + 4 * n * p) + ROW_BYTES * rows, []
    if task == "batch_timing":
        n = int(s["n_examples"])
        net, _ = _net_bytes(s["model"], "fashion_mnist", min(int(s["batch_size"]), n), shape=(784,))
        # its inputs: n flattened images and their labels (Fashion-MNIST's loaded besides, when used)
        return net + FLOAT * n * 785, [s["dataset"]] if s["dataset"] in SHAPES else []
    if task == "generalization_gap":
        dataset = s["dataset"]
        n_train = SHAPES[dataset][1]
        m = min(int(s["measure"]["hessian_examples"]) or n_train, n_train)
        batch = max(min(max(int(b) for b in s["batch_sizes"].values()), n_train), 2 * m)  # Hessian-vector products: a double backward
        net, params = _net_bytes(s["model"], dataset, batch)
        extra = FLOAT * params * (int(s["measure"]["subspace_dim"]) + int(s["measure"]["hessian_iters"]) + 8)
        return net + extra, [dataset]
    base = training_base(s)
    if base is None:
        return 0, []  # a task with nothing to estimate (it trains no network on a data set)
    dataset = base["dataset"]
    n_train = SHAPES[dataset][1]
    batch = min(int(base["batch_size"]), int(base.get("n_train") or n_train), n_train)
    if task == "bn_inference":
        batch = max(batch, *(min(int(b), n_train) for b in s["test_batch_sizes"]))
    net, _ = _net_bytes(base["model"], dataset, batch, members)
    total = int(base["steps"]) if base.get("steps") else int(base.get("epochs", 1)) * max(n_train // batch, 1)
    return net + ROW_BYTES * members * _rows(total, base), [dataset]


def job_bytes(cells: Iterable[list[dict]], stacking: bool = True) -> int:
    """A job's estimate: its largest cell (stacked, or its largest run when not) and every data set it loads."""
    largest, datasets = 0, set()
    for cell in cells:
        members = len(cell) if stacking else 1
        size, used = run_bytes(cell[0], members)
        largest = max(largest, size)
        datasets.update(used)
    return largest + sum(data_bytes(d) for d in datasets)


def gib(n: float) -> str:
    return f"{n / GIB:.3g} GiB"


def require_layers(spec: dict, key: str, why: str) -> None:
    """Refuse, naming `key` (the model's dotted key), a model without the layer an experiment
    measures: `why` says what needs it. A check at plan time: the job would crash, or its
    analysis find nothing to measure."""
    if not layers(spec):
        name = "channels" if spec.get("arch", "mlp") == "cnn" else "hidden"
        raise ValueError(f"{key}.{name}: expected at least one layer ({why}) (got [])")
