import gzip
import io
import struct
import tarfile

import numpy as np
import pytest
import torch

from trainfail.training import data


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(payload)


def test_read_idx_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 9], dtype=np.uint8)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l", labels, compress=False)
    assert np.array_equal(data.read_idx(tmp_path / "i.gz"), images)
    assert np.array_equal(data.read_idx(tmp_path / "l"), labels)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    write_idx(tmp_path / "i.gz", np.zeros((4, 3, 3)))
    raw = gzip.open(tmp_path / "i.gz").read()
    gzip.open(tmp_path / "short.gz", "wb").write(raw[:-5])
    with pytest.raises(ValueError, match="expected 36 values"):
        data.read_idx(tmp_path / "short.gz")
    (tmp_path / "foreign").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        data.read_idx(tmp_path / "foreign")


def test_idx_dataset_folder_is_loaded_and_standardised(tmp_path):
    rng = np.random.default_rng(1)
    write_idx(tmp_path / data.IDX_FILES["train_images"], rng.integers(0, 256, (20, 28, 28)))
    write_idx(tmp_path / data.IDX_FILES["train_labels"], rng.integers(0, 10, 20))
    write_idx(tmp_path / data.IDX_FILES["test_images"], rng.integers(0, 256, (6, 28, 28)))
    write_idx(tmp_path / data.IDX_FILES["test_labels"], rng.integers(0, 10, 6))
    ds = data._idx_dataset("mnist", tmp_path)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (6, 1, 28, 28)
    assert abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std()) - 1) < 1e-2
    assert ds.y_train.dtype == torch.int64


def _cifar_archive(path, name: str, n_train: int, n_test: int) -> None:
    label_bytes, label_index, _, train_members, test_members = data.CIFAR_MEMBERS[name]
    rng = np.random.default_rng(2)
    with tarfile.open(path, "w:gz") as tar:
        for member, n in [(m, n_train) for m in train_members] + [(m, n_test) for m in test_members]:
            rows = rng.integers(0, 256, (n, label_bytes + 3072), dtype=np.uint8)
            rows[:, label_index] = np.arange(n) % 10
            payload = rows.tobytes()
            info = tarfile.TarInfo(f"{name}-batches-bin/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_binary_archive(tmp_path, name):
    _cifar_archive(tmp_path / "a.tar.gz", name, n_train=4, n_test=3)
    ds = data.read_cifar_archive(name, tmp_path / "a.tar.gz")
    n_members = len(data.CIFAR_MEMBERS[name][3])
    assert ds.x_train.shape == (4 * n_members, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.y_test.tolist() == [0, 1, 2]
    assert ds.num_classes == (10 if name == "cifar10" else 100)


def test_cifar_records_must_be_whole():
    with pytest.raises(ValueError, match="whole number"):
        data.read_cifar_records(b"\x00" * 3074, 1, 0)


def test_download_verifies_checksum_and_explains_how_to_get_data(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"hello")
    monkeypatch.setitem(data.URLS, "mnist", src.as_uri() + "/")
    good = {"mnist": {"f.bin": data.hashlib.md5(b"hello").hexdigest()}}
    assert data.download("mnist", "f.bin", tmp_path / "d", good).read_bytes() == b"hello"
    bad = {"mnist": {"f.bin": "0" * 32}}
    with pytest.raises(data.DatasetUnavailable, match="does not match"):
        data.download("mnist", "f.bin", tmp_path / "d", bad)
    with pytest.raises(data.DatasetUnavailable, match="python -m trainfail download mnist"):
        data.download("mnist", "missing.bin", tmp_path / "d", good)


def test_offline_datasets_load():
    d = data.load("digits")
    assert d.x_train.shape == (1437, 1, 8, 8) and d.x_test.shape == (360, 1, 8, 8)
    m = data.load("mnist1d")
    assert m.x_train.shape == (4000, 1, 40) and m.num_classes == 10
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.exists(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_debian_package_is_verified(tmp_path):
    ds = data.load("fashion_mnist", tmp_path)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)


def test_cache_round_trip_without_pickle(tmp_path):
    ds = data.load("digits")
    data.save_cache(ds, tmp_path / "digits.pt")
    back = data.load_cache(tmp_path / "digits.pt")
    assert torch.equal(back.x_train, ds.x_train) and back.num_classes == 10


def test_batch_timing_auto_is_resolved_when_the_plan_is_made(tmp_path, monkeypatch):
    from trainfail.training.context import RunEnv
    from trainfail.experiments import batch_timing

    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    assert batch_timing.resolve_dataset("auto", tmp_path) == "random"
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    for fn in data.IDX_FILES.values():
        (folder / fn).write_bytes(b"")
    assert batch_timing.resolve_dataset("auto", tmp_path) == "fashion_mnist"
    assert batch_timing.resolve_dataset("random", tmp_path) == "random"
    x, y, source = batch_timing._inputs({"dataset": "random", "n_examples": 100},
                                        RunEnv(torch.device("cpu"), tmp_path, tmp_path / "cache"))
    assert x.shape == (100, 784) and source.startswith("random")


def test_mnist1d_large_is_mnist1d_generated_larger(monkeypatch):
    """The full preset's MNIST-1D: the same generator at more samples, 80% of them for training
    (a small count here: the real 50,000 take about 20 CPU-seconds)."""
    monkeypatch.setattr(data, "MNIST1D_LARGE_SAMPLES", 600)
    big, small = data.load("mnist1d_large"), data.load("mnist1d")
    assert big.name == "mnist1d_large"
    assert big.x_train.shape == (480, 1, 40) and big.x_test.shape == (120, 1, 40) and big.num_classes == 10
    assert "mnist1d_large" in data.DATASETS
    assert big.x_train.shape[1:] == small.x_train.shape[1:]
