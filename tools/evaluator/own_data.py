"""A user's own images as arrays: an image folder (train/<class>/..., optional test/<class>/...) or an
`.npz` with x_train, y_train, x_test, y_test. `datasets.load_dataset` caches what these return.

Every problem is a `BadDataset` whose first line names the files: the CLI prints only that line.
Images are decoded with PIL, once, resized (shorter side to the chosen size, centre crop) and kept as
uint8. A folder is checked whole before anything is cached: a set that fails leaves no cache behind.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasgraph.dataset_ref import CONTENT_PREFIX, BadDataset, DatasetRef, parse

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
READER_VERSION = 1   # part of the cache key: a change in how images are read rebuilds every cache
SHOWN = 5            # files named in one error message


@dataclass
class OwnArrays:
    train_x: np.ndarray              # uint8 (N, C, H, W)
    train_y: np.ndarray              # int64 (N,)
    test_x: np.ndarray | None        # None: no test split given, the caller splits train
    test_y: np.ndarray | None
    class_names: list[str]


def _some(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


# ---------------------------------------------------------------- the cache key and the store's key

def source_key(ref: DatasetRef) -> str:
    """A cheap digest of where and how the data is read from (every image's relative path, size and
    mtime; the .npz's size and mtime; image size, reader version): while it holds, `content_key` is
    not computed again."""
    h = hashlib.sha256(f"{READER_VERSION}|{ref.spec}".encode())
    root = Path(ref.path)
    try:
        if ref.kind == "npz":
            st = root.stat()
            h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
        else:
            for split in ("train", "test"):
                for name, files in sorted(_listing(root / split).items()):
                    for f in files:
                        st = f.stat()
                        h.update(f"{split}/{name}/{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    except OSError as e:
        raise BadDataset(f"cannot read {ref.path}: {e}") from None
    return h.hexdigest()[:16]


_CONTENT_KEYS: dict[tuple[str, str], str] = {}  # (spec, source_key) -> content_key, in this process


def content_key(ref: DatasetRef) -> str:
    """What the data is, not where it lies: a digest of every image file's bytes under its
    split/class/name (or of the .npz file), the image size and the reader version. The same files at
    another path give the same key, an edited, added or removed file another one. The cache file is
    named by it, and the store keys the dataset by it (`dataset_key`)."""
    stamp = source_key(ref)
    known = _CONTENT_KEYS.get((ref.spec, stamp))
    if known is not None:
        return known
    h = hashlib.sha256(f"{READER_VERSION}|{ref.kind}|{ref.size}".encode())
    root = Path(ref.path)
    try:
        files = [("", root)] if ref.kind == "npz" else [
            (f"{split}/{name}/{f.name}", f) for split in ("train", "test")
            for name, found in sorted(_listing(root / split).items()) for f in found]
        for rel, f in files:
            with open(f, "rb") as fh:
                h.update(f"{rel}\n".encode() + hashlib.file_digest(fh, "sha256").digest())
    except OSError as e:
        raise BadDataset(f"cannot read {ref.path}: {e}") from None
    key = _CONTENT_KEYS[(ref.spec, stamp)] = h.hexdigest()[:16]
    return key


def dataset_key(spec: str) -> str:
    """The dataset as the store keys its evaluations and trainings: a built-in name as it is, a folder
    or .npz as `own:<content_key>` (a key already made stays as it is). A folder or file that is gone
    keys as its path, which matches nothing recorded by content: a report or listing of a run whose
    folder was deleted finds no rows instead of failing (what was recorded never needed the folder)."""
    ref = parse(spec)
    if ref.kind not in ("folder", "npz") or not Path(ref.path).exists():
        return ref.spec
    return CONTENT_PREFIX + content_key(ref)


def check_exists(ref: DatasetRef) -> None:
    p = Path(ref.path)
    if not p.exists():
        raise BadDataset(f"dataset path {p} does not exist: give an image folder (train/<class>/*.jpg|png) "
                         "or an .npz file with x_train, y_train, x_test, y_test")
    if ref.kind == "npz" and not p.is_file():
        raise BadDataset(f"{p} is not a file")
    if ref.kind == "folder" and not p.is_dir():
        raise BadDataset(f"{p} is neither a folder nor an .npz file")


# ---------------------------------------------------------------- image folders

def _listing(split_dir: Path) -> dict[str, list[Path]]:
    """{class folder name: its image files, sorted}; hidden entries and other files are skipped."""
    if not split_dir.is_dir():
        return {}
    out: dict[str, list[Path]] = {}
    for d in sorted(split_dir.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            out[d.name] = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS
                                 and not f.name.startswith(".") and f.is_file())
    return out


def _channels(mode: str) -> int:
    """1 for grey images (alpha ignored), 3 for colour ones (palette images count as colour)."""
    return 1 if mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F") else 3


def _decode(path: Path, size: int) -> tuple[np.ndarray, int]:
    """One image as uint8 (C, size, size) and its channel count: shorter side to `size`, centre crop."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        channels = _channels(img.mode)
        img.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
        if img.mode.startswith("I"):  # 16/32-bit grey: keep the top 8 bits instead of clipping at 255
            arr = np.asarray(img, dtype=np.int64)
            img = Image.fromarray((arr >> (8 if arr.max() > 255 else 0)).clip(0, 255).astype(np.uint8))
        img = img.convert("L" if channels == 1 else "RGB")
        img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return (arr[None] if channels == 1 else arr.transpose(2, 0, 1)), channels


def _read_split(root: Path, split: str, classes: list[str], size: int, files: dict[str, list[Path]],
                bad: list[str], seen_channels: dict[int, list[str]]) -> tuple[list[np.ndarray], list[int]]:
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in files.get(name, []):
            rel = f"{split}/{name}/{f.name}"
            try:
                arr, ch = _decode(f, size)
            except Exception as e:  # noqa: BLE001 - PIL raises many kinds; each is "cannot read this image"
                bad.append(f"{rel} ({type(e).__name__}: {str(e)[:60]})")
                continue
            seen_channels.setdefault(ch, []).append(rel)
            xs.append(arr)
            ys.append(label)
    return xs, ys


def read_folder(ref: DatasetRef) -> OwnArrays:
    """The folder's images as arrays; raises BadDataset naming the files for every problem found."""
    root, size = Path(ref.path), int(ref.size or 0)
    check_exists(ref)
    if not (root / "train").is_dir():
        raise BadDataset(f"{root} has no train/ folder: expected {root}/train/<class>/*.jpg|png, one folder per "
                         "class, and optionally test/<class>/... (else a seeded 80/20 split)")
    train = _listing(root / "train")
    if not train:
        raise BadDataset(f"{root}/train has no class folders: put each class's images in train/<class>/")
    empty = [f"train/{name}" for name, files in train.items() if not files]
    if empty:
        raise BadDataset(f"empty class folders in {root} (no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS[:3])}/... "
                         f"images): {_some(empty)}")
    if len(train) < 2:
        raise BadDataset(f"{root} has one class only (train/{next(iter(train))}): a classifier needs at least two")
    classes = list(train)
    test = _listing(root / "test")
    extra = [f"test/{name}" for name in test if name not in train]
    if extra:
        raise BadDataset(f"class folders in {root}/test that train/ lacks: {_some(extra)} "
                         f"(train/ has {_some(classes)})")
    if (root / "test").is_dir() and not any(test.values()):
        raise BadDataset(f"{root}/test has no images in class folders: fill test/<class>/ or remove test/")

    bad: list[str] = []
    seen: dict[int, list[str]] = {}
    tx, ty = _read_split(root, "train", classes, size, train, bad, seen)
    vx, vy = _read_split(root, "test", classes, size, test, bad, seen) if test else ([], [])
    if bad:
        raise BadDataset(f"{len(bad)} unreadable image(s) in {root}: {_some(bad)}")
    if len(seen) > 1:
        grey, colour = seen[1], seen[3]
        few, kind = (grey, "grey") if len(grey) <= len(colour) else (colour, "colour")
        raise BadDataset(f"mixed channel counts in {root}: {len(colour)} colour and {len(grey)} grey images; the "
                         f"{kind} ones: {_some(few)}; convert them so that all images have the same mode")
    return OwnArrays(np.stack(tx), np.asarray(ty, dtype=np.int64),
                     np.stack(vx) if vx else None, np.asarray(vy, dtype=np.int64) if vx else None, classes)


# ---------------------------------------------------------------- .npz

def _images(name: str, x: np.ndarray, path: Path) -> np.ndarray:
    """uint8 NCHW from (N, H, W), (N, H, W, C) or (N, C, H, W), C in {1, 3}."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise BadDataset(f"{path}: {name} has shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
                         "with 1 or 3 channels")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise BadDataset(f"{path}: {name} holds integers outside 0..255 ({x.min()}..{x.max()})")
        return np.ascontiguousarray(x.astype(np.uint8))
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise BadDataset(f"{path}: {name} holds NaN or infinite values")
        top = float(x.max()) if x.size else 0.0
        if x.size and (float(x.min()) < 0 or top > 255):
            raise BadDataset(f"{path}: {name} holds floats outside 0..1 and 0..255 ({x.min()}..{top})")
        scale = 255.0 if top <= 1.0 else 1.0  # floats in [0, 1] are scaled, larger ones taken as 0..255
        return np.ascontiguousarray(np.rint(x * scale).astype(np.uint8))
    raise BadDataset(f"{path}: {name} has dtype {x.dtype}; give uint8, integers or floats")


def _labels(name: str, y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise BadDataset(f"{path}: {name} must be one integer label per image, got dtype {y.dtype} shape {y.shape}")
    if len(y) != n:
        raise BadDataset(f"{path}: {name} has {len(y)} labels for {n} images")
    return y.astype(np.int64)


def read_npz(ref: DatasetRef) -> OwnArrays:
    path = Path(ref.path)
    check_exists(ref)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise BadDataset(f"{path} lacks the arrays {', '.join(missing)} (it has {', '.join(z.files) or 'none'})")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            names = [str(v) for v in z["classes"]] if "classes" in z.files else None
    except BadDataset:
        raise
    except (OSError, ValueError, EOFError) as e:  # not a zip, damaged, or object arrays (pickles)
        raise BadDataset(f"cannot read {path} as an .npz of plain arrays: {str(e).splitlines()[0]}") from None
    tx, vx = _images("x_train", arrays["x_train"], path), _images("x_test", arrays["x_test"], path)
    if tx.shape[1] != vx.shape[1]:
        raise BadDataset(f"mixed channel counts in {path}: x_train has {tx.shape[1]} channel(s), "
                         f"x_test {vx.shape[1]}")
    if tx.shape[1:] != vx.shape[1:]:
        raise BadDataset(f"{path}: x_train images are {tx.shape[2:]} and x_test images {vx.shape[2:]}")
    ty, vy = _labels("y_train", arrays["y_train"], len(tx), path), _labels("y_test", arrays["y_test"], len(vx), path)
    values = np.unique(ty)
    if len(values) < 2:
        raise BadDataset(f"{path}: y_train holds one class only; a classifier needs at least two")
    unseen = sorted(set(np.unique(vy).tolist()) - set(values.tolist()))
    if unseen:
        raise BadDataset(f"{path}: y_test has labels that y_train lacks: {_some([str(v) for v in unseen])}")
    if names is not None:
        if values.min() < 0 or values.max() >= len(names):
            raise BadDataset(f"{path}: labels run {values.min()}..{values.max()} but `classes` names {len(names)}")
        return OwnArrays(tx, ty, vx, vy, names)
    # Labels become 0..K-1 in sorted order; the original values are the class names.
    return OwnArrays(tx, np.searchsorted(values, ty), vx, np.searchsorted(values, vy), [str(v) for v in values])


def read(ref: DatasetRef) -> OwnArrays:
    return read_npz(ref) if ref.kind == "npz" else read_folder(ref)


def cache_stem(ref: DatasetRef) -> str:
    """The part of the cache file name that names the source (not its contents): older caches of the
    same source share it and are removed when a new one is written."""
    where = hashlib.sha256(ref.path.encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ref.label)
    return f"{safe}-{where}"

