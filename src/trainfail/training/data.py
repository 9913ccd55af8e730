"""Datasets: a registry of loaders, each returning whole tensors that then live on the device.

Offline: `mnist1d` and `mnist1d_large` (generated from templates by the mnist1d package),
`digits` (scikit-learn's bundled 8x8 digits), `fashion_mnist` (Debian's dataset-fashion-mnist, or
IDX files in data_dir).
Online: `mnist`, `cifar10`, `cifar100` are downloaded into data_dir and verified by MD5 before
use. CIFAR is read from the *binary* distribution, so no pickle is ever loaded.

Batches are index slices of the device tensors (see train.py): no DataLoader, no per-batch
host-to-device copies.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainfail.core import store

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class DatasetUnavailable(RuntimeError):
    """A dataset is not on this machine and cannot be fetched; the message says how to get it."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device), self.num_classes)

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first n examples (datasets are stored shuffled, so this is a random subset)."""
        return Dataset(self.name, self.x_train[:n_train], self.y_train[:n_train],
                       self.x_test[:n_test], self.y_test[:n_test], self.num_classes)


def _standardize(x_train: np.ndarray, x_test: np.ndarray, per_channel_axis: int | None = None):
    """Zero mean, unit variance using training-set statistics only."""
    if per_channel_axis is None:
        mean, std = x_train.mean(), x_train.std()
    else:
        axes = tuple(i for i in range(x_train.ndim) if i != per_channel_axis)
        shape = [1] * x_train.ndim
        shape[per_channel_axis] = -1
        mean = x_train.mean(axis=axes).reshape(shape)
        std = x_train.std(axis=axes).reshape(shape)
    return (x_train - mean) / std, (x_test - mean) / std


def _make(name, x_train, y_train, x_test, y_test, num_classes) -> Dataset:
    f = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    i = lambda a: torch.as_tensor(np.array(a, dtype=np.int64))
    return Dataset(name, f(x_train), i(y_train), f(x_test), i(y_test), num_classes)


# --- offline datasets -------------------------------------------------------------------------

# MNIST-1D generated larger for the full preset: ten times the paper's 5,000 sequences (40,000 / 10,000),
# the same generator and seed, offline (about 20 CPU-seconds, once, in the data rule)
MNIST1D_LARGE_SAMPLES = 50_000


def load_mnist1d(data_dir: Path, num_samples: int | None = None, name: str = "mnist1d") -> Dataset:
    """MNIST-1D (Greydanus 2020): 4,000 train / 1,000 test sequences of length 40, 10 classes
    (num_samples: how many to generate in all, 80% train; the package's default 5,000)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if num_samples is not None:
        args.num_samples = num_samples
    d = make_dataset(args)  # seeded inside (seed 42): the same data everywhere
    x, xt = d["x"][:, None, :], d["x_test"][:, None, :]  # (N, 1 channel, 40)
    return _make(name, x, d["y"], xt, d["y_test"], 10)


def load_mnist1d_large(data_dir: Path) -> Dataset:
    """MNIST-1D at 50,000 sequences: 40,000 train / 10,000 test."""
    return load_mnist1d(data_dir, MNIST1D_LARGE_SAMPLES, "mnist1d_large")


def load_digits(data_dir: Path) -> Dataset:
    """scikit-learn's 8x8 digits: 1,797 images, split 1,437 / 360 with a fixed shuffle."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(d.target))
    x = d.images[order][:, None, :, :].astype(np.float32)
    y = d.target[order]
    n = 1437
    x_train, x_test = _standardize(x[:n], x[n:])
    return _make("digits", x_train, y[:n], x_test, y[n:], 10)


# --- IDX (MNIST, Fashion-MNIST) ----------------------------------------------------------------

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
    "cifar100": {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"},
}

# MD5 of the *decompressed* IDX data, for copies recompressed by a distribution (Debian's
# dataset-fashion-mnist ships the same bytes in differently compressed .gz files).
RAW_MD5 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

# HTTPS everywhere: Fashion-MNIST's S3 website endpoint speaks only HTTP, so its files come from
# Zalando's own repository (the same files; the MD5s above are checked either way).
URLS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic (0, 0, dtype 0x08, ndim), then dims, then data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def md5(path: str | Path, decompress: bool = False) -> str:
    h = hashlib.md5()
    with (gzip.open if decompress else open)(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str, raw_expected: str | None = None) -> None:
    """Check a file's MD5 against the published one (or its decompressed data's, if known)."""
    got = md5(path)
    if got == expected or (raw_expected and str(path).endswith(".gz") and md5(path, True) == raw_expected):
        return
    raise DatasetUnavailable(f"{path}: MD5 {got} does not match the published {expected}; "
                             "delete the file and download it again")


def _read_with_progress(response, size: int | None, chunk: int = 1 << 20) -> bytes:
    """The response body, with a line every 10% (downloads of CIFAR take minutes)."""
    parts, done, shown = [], 0, 0
    while block := response.read(chunk):
        parts.append(block)
        done += len(block)
        if size and done * 10 // size > shown:
            shown = done * 10 // size
            print(f"[trainfail]   {done / 1e6:.1f} of {size / 1e6:.1f} MB", flush=True)
    return b"".join(parts)


def download(name: str, filename: str, data_dir: Path, md5_table: dict | None = None) -> Path:
    """Download one file of a dataset into data_dir/name/, verify it, and return its path."""
    md5_table = md5_table or MD5
    target = Path(data_dir) / name / filename
    if not target.exists():
        try:  # the folder first: a file in the way is data_dir's fault, not the network's
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatasetUnavailable(f"data_dir {str(data_dir)!r}: cannot make {target.parent} for {name!r} "
                                     f"({e.strerror or e}): data_dir must be a directory, not a file") from e
        url = URLS[name] + filename
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                size = response.headers.get("Content-Length")
                print(f"[trainfail] downloading {url} ({int(size) / 1e6:.1f} MB)" if size else
                      f"[trainfail] downloading {url}", flush=True)
                store.write_bytes(target, _read_with_progress(response, int(size) if size else None))
        except OSError as e:
            raise DatasetUnavailable(
                f"dataset {name!r} is not in {target.parent} and could not be downloaded from "
                f"{url} ({e}). On a machine with internet run `python -m trainfail download {name} "
                f"--data-dir {data_dir}`, then copy {target.parent} here.") from e
    verify(target, md5_table[name][filename], RAW_MD5.get(name, {}).get(filename))
    return target


def _idx_dataset(name: str, folder: Path) -> Dataset:
    a = {key: read_idx(folder / fn) for key, fn in IDX_FILES.items()}
    x_train = a["train_images"][:, None].astype(np.float32) / 255.0
    x_test = a["test_images"][:, None].astype(np.float32) / 255.0
    x_train, x_test = _standardize(x_train, x_test)
    return _make(name, x_train, a["train_labels"], x_test, a["test_labels"], 10)


def fashion_mnist_on_disk(data_dir: str | Path) -> bool:
    """Whether Fashion-MNIST's four files are here (data_dir or Debian's package): no download."""
    return any(all((folder / fn).exists() for fn in IDX_FILES.values())
               for folder in (Path(data_dir) / "fashion_mnist", DEBIAN_FASHION_MNIST))


def load_fashion_mnist(data_dir: Path) -> Dataset:
    """Fashion-MNIST: data_dir/fashion_mnist/ first, then Debian's package, then a download."""
    for folder in (Path(data_dir) / "fashion_mnist", DEBIAN_FASHION_MNIST):
        if all((folder / fn).exists() for fn in IDX_FILES.values()):
            for fn in IDX_FILES.values():
                verify(folder / fn, MD5["fashion_mnist"][fn], RAW_MD5["fashion_mnist"][fn])
            return _idx_dataset("fashion_mnist", folder)
    try:
        for fn in IDX_FILES.values():
            download("fashion_mnist", fn, data_dir)
    except DatasetUnavailable as e:
        raise DatasetUnavailable(f"{e}\nOr, on Debian/Ubuntu: apt-get install dataset-fashion-mnist "
                                 f"(installs {DEBIAN_FASHION_MNIST}).") from None
    return _idx_dataset("fashion_mnist", Path(data_dir) / "fashion_mnist")


def load_mnist(data_dir: Path) -> Dataset:
    for fn in IDX_FILES.values():
        download("mnist", fn, data_dir)
    return _idx_dataset("mnist", Path(data_dir) / "mnist")


# --- CIFAR (binary version: fixed-size records, no pickle) --------------------------------------

def read_cifar_records(data: bytes, label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Records of `label_bytes` label bytes then 3,072 pixel bytes (3 x 32 x 32, channel-major)."""
    record = label_bytes + 3072
    if len(data) % record:
        raise ValueError(f"CIFAR binary data of {len(data)} bytes is not a whole number of {record}-byte records")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32), rows[:, label_index].astype(np.int64)


CIFAR_MEMBERS = {
    "cifar10": (1, 0, 10, [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"]),
    "cifar100": (2, 1, 100, ["train.bin"], ["test.bin"]),  # label 1 = fine label
}


def read_cifar_archive(name: str, archive: Path) -> Dataset:
    label_bytes, label_index, num_classes, train_members, test_members = CIFAR_MEMBERS[name]
    parts: dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            base = Path(member.name).name
            if member.isfile() and base in train_members + test_members:
                parts[base] = tar.extractfile(member).read()
    missing = [m for m in train_members + test_members if m not in parts]
    if missing:
        raise ValueError(f"{archive}: members {missing} not found")
    x_tr, y_tr = read_cifar_records(b"".join(parts[m] for m in train_members), label_bytes, label_index)
    x_te, y_te = read_cifar_records(b"".join(parts[m] for m in test_members), label_bytes, label_index)
    x_tr, x_te = _standardize(x_tr.astype(np.float32) / 255.0, x_te.astype(np.float32) / 255.0, per_channel_axis=1)
    return _make(name, x_tr, y_tr, x_te, y_te, num_classes)


def load_cifar10(data_dir: Path) -> Dataset:
    return read_cifar_archive("cifar10", download("cifar10", "cifar-10-binary.tar.gz", data_dir))


def load_cifar100(data_dir: Path) -> Dataset:
    return read_cifar_archive("cifar100", download("cifar100", "cifar-100-binary.tar.gz", data_dir))


LOADERS = {
    "mnist1d": load_mnist1d,
    "mnist1d_large": load_mnist1d_large,
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}
DATASETS = tuple(LOADERS)


def load(name: str, data_dir: str | Path = "data") -> Dataset:
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return LOADERS[name](Path(data_dir))


# --- the prepared cache: one tensor file per dataset, loaded without pickle ------------------

def save_cache(ds: Dataset, path: str | Path) -> None:
    tensors = {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test, "y_test": ds.y_test,
               "num_classes": torch.tensor(ds.num_classes)}
    path = Path(path)
    store._atomic(path, lambda f: torch.save(tensors, f))


def load_cache(path: str | Path, name: str | None = None) -> Dataset:
    t = torch.load(path, map_location="cpu", weights_only=True)
    return Dataset(name or Path(path).stem, t["x_train"], t["y_train"], t["x_test"], t["y_test"],
                   int(t["num_classes"]))


def prepared(name: str, cache_dir: str | Path, data_dir: str | Path = "data") -> Dataset:
    """The dataset from its cache file, preparing the cache first if it is missing."""
    path = Path(cache_dir) / f"{name}.pt"
    if not path.exists():
        save_cache(load(name, data_dir), path)
    return load_cache(path, name)
