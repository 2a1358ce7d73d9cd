"""Datasets registry: names, errors, offline behaviour, small real sets, the tensor cache."""
from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import io
import os
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nasgraph.tools.evaluator import datasets
from nasgraph.tools.evaluator.datasets import DatasetUnavailable, TensorData, dataset_names, load_dataset


def test_registry_names():
    assert set(dataset_names()) == {"fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "imagenette",
                                    "mnist-5k", "animal-mnist", "digits"}


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(ValueError) as e:
        load_dataset("cifar11", tmp_path)
    msg = str(e.value)
    assert "cifar11" in msg and "cifar10" in msg and "digits" in msg


def test_offline_cifar10_names_the_folder_fast(tmp_path, monkeypatch):
    import torchvision.datasets  # noqa: F401 - a cold import can take seconds on a loaded machine; not timed
    monkeypatch.setattr(datasets, "_reachable", lambda url, timeout=0: False)
    t = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as e:
        load_dataset("cifar10", tmp_path)
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    folder = tmp_path / "raw" / "cifar10"
    assert str(folder) in msg and "cifar-10-python.tar.gz" in msg and "'cifar10'" in msg
    assert folder.is_dir()  # created, ready for the user's files
    assert not (tmp_path / "cifar10.pt").exists()


def test_unreachable_host_answers_quickly():
    t = time.perf_counter()
    assert datasets._reachable("http://192.0.2.1:81/x.tar.gz", timeout=0.5) is False  # TEST-NET-1, never routed
    assert time.perf_counter() - t < 2.0


def test_failed_download_becomes_unavailable(tmp_path, monkeypatch):
    """A host that answers but a download that fails still gives the clear error, not a traceback."""
    monkeypatch.setattr(datasets, "_reachable", lambda url, timeout=0: True)

    def build(root, download):
        raise RuntimeError("Dataset not found") if not download else OSError("connection reset")

    with pytest.raises(DatasetUnavailable) as e:
        datasets._torchvision("svhn", tmp_path / "svhn", build, ["train_32x32.mat"], "http://example.invalid/a")
    assert "connection reset" in str(e.value) and str(tmp_path / "svhn") in str(e.value)


def test_digits_shapes_and_split(tmp_path):
    d = load_dataset("digits", tmp_path)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.train_x.shape == (1438, 1, 8, 8) and d.test_x.shape == (359, 1, 8, 8)
    assert d.in_shape == (1, 8, 8) and d.classes == 10 and d.flip is False
    assert d.train_x.is_contiguous() and int(d.train_x.max()) == 255
    assert set(d.train_y.tolist()) == set(range(10)) and set(d.test_y.tolist()) == set(range(10))
    counts = torch.bincount(d.test_y, minlength=10)
    assert int(counts.min()) >= 33  # stratified: about 20% of each class's ~180 images
    assert 0.1 < d.mean[0] < 0.6 and 0.1 < d.std[0] < 0.6


def test_split_is_deterministic_and_disjoint():
    x = np.arange(200, dtype=np.uint8).reshape(200, 1, 1, 1)
    y = np.repeat(np.arange(4), 50).astype(np.int64)
    a, b = datasets._split(x, y), datasets._split(x, y)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    tr, te = set(a[0].ravel().tolist()), set(a[2].ravel().tolist())
    assert not tr & te and len(tr) + len(te) == 200 and len(te) == 40


def test_mnist_5k_shapes(tmp_path):
    d = load_dataset("mnist-5k", tmp_path)
    assert d.train_x.shape == (4000, 1, 28, 28) and d.test_x.shape == (1000, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and d.test_y.dtype == torch.int64
    assert abs(d.mean[0] - 0.13) < 0.02  # MNIST's well-known mean intensity


@pytest.mark.skipif(importlib.util.find_spec("animal_mnist") is None, reason="animal-mnist not installed")
def test_animal_mnist_shapes(tmp_path):
    d = load_dataset("animal-mnist", tmp_path)
    assert d.train_x.shape == (8000, 1, 28, 28) and d.test_x.shape == (2000, 1, 28, 28)
    assert torch.bincount(d.train_y).tolist() == [800] * 10


def test_cache_round_trip_skips_the_source(tmp_path, monkeypatch):
    first = load_dataset("digits", tmp_path)
    assert datasets.cache_path("digits", tmp_path).is_file()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    def boom(root):
        raise AssertionError("source read although a cache exists")

    monkeypatch.setitem(datasets._REGISTRY, "digits", dataclasses.replace(datasets._REGISTRY["digits"], fetch=boom))
    t = time.perf_counter()
    again = load_dataset("digits", tmp_path)
    assert time.perf_counter() - t < 1.0
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)
    assert first.mean == again.mean and first.std == again.std


def test_damaged_cache_is_rebuilt(tmp_path):
    datasets.cache_path("digits", tmp_path).parent.mkdir(parents=True, exist_ok=True)
    datasets.cache_path("digits", tmp_path).write_bytes(b"not a tensor file")
    d = load_dataset("digits", tmp_path)
    assert d.train_x.shape[0] == 1438
    assert load_dataset("digits", tmp_path).train_x.shape[0] == 1438


def _idx_gz(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_debian_idx_files(tmp_path, monkeypatch):
    deb = tmp_path / "deb"
    deb.mkdir()
    rng = np.random.default_rng(0)
    tx, vx = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    ty, vy = np.arange(30) % 10, np.arange(10)
    for name, arr in [("train-images-idx3-ubyte.gz", tx), ("train-labels-idx1-ubyte.gz", ty),
                      ("t10k-images-idx3-ubyte.gz", vx), ("t10k-labels-idx1-ubyte.gz", vy)]:
        _idx_gz(deb / name, arr)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", deb)
    d = load_dataset("fashion-mnist", tmp_path / "data")
    assert d.train_x.shape == (30, 1, 28, 28) and d.test_x.shape == (10, 1, 28, 28)
    assert np.array_equal(d.train_x[:, 0].numpy(), tx.astype(np.uint8))
    assert d.train_y.tolist() == ty.tolist()


def test_idx_reader_rejects_other_files(tmp_path):
    p = tmp_path / "x.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"hello world")
    with pytest.raises(ValueError, match="IDX"):
        datasets._read_idx(p)


def test_data_file_unpickler_refuses_code():
    blob = pickle.dumps(os.getcwd)  # any callable outside numpy's array rebuild
    with pytest.raises(pickle.UnpicklingError):
        datasets._NumpyOnlyUnpickler(io.BytesIO(blob)).load()
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(datasets._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arr))).load(), arr)


def test_tensor_data_validates():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    y = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="uint8"):
        TensorData("t", x.float(), y, x, y, 10, (0.5,), (0.2,))
    with pytest.raises(ValueError, match="length"):
        TensorData("t", x, y[:3], x, y, 10, (0.5,), (0.2,))
    with pytest.raises(ValueError, match="per channel"):
        TensorData("t", x, y, x, y, 10, (0.5, 0.5), (0.2, 0.2))
    sub = TensorData("t", x, y, x, y, 10, (0.5,), (0.2,)).subset(train=2, test=1)
    assert len(sub.train_x) == 2 and len(sub.test_y) == 1 and sub.in_shape == (1, 8, 8)
