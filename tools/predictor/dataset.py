"""The training table: one row per LEMUR image-classification run and epoch, code features beside the
run's hyperparameters, accuracy (0..1) as the target.

Reading 7,800 model files with `ast` takes about a minute, so the table is cached as one `.npz` in the
lemur folder, keyed by the index it came from and FEATURE_VERSION; a new pull or a feature change
rebuilds it. Rows are encoded the same way at predict time (`encode`), against the vocabularies the
table was built with.
"""
from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasgraph.tools.lemur import LemurNotPulled, index_path
from nasgraph.tools.lemur.index import read_meta
from nasgraph.tools.predictor.features import CATEGORICAL, FEATURE_VERSION, NUMERIC, CodeFeatures, code_features

Progress = Callable[[str], None]

TASK, METRIC = "img-classification", "acc"
CACHE = "predictor-table.npz"
# What a run states about itself; `transform` is split into its kind, image size and flip.
RUN_NUMERIC: tuple[str, ...] = ("epoch", "lr", "momentum", "dropout", "batch", "transform_size", "transform_flip",
                                 # SGD's step is about lr / (1 - momentum), and its noise about lr / batch: a
                                 # tree needs many splits to find a ratio of two columns, one to use it.
                                 "effective_lr", "lr_per_sample")
RUN_CATEGORICAL: tuple[str, ...] = ("dataset", "transform_kind")
CODE_COLUMNS: tuple[str, ...] = (*NUMERIC, *CATEGORICAL)
RUN_COLUMNS: tuple[str, ...] = (*RUN_NUMERIC, *RUN_CATEGORICAL)
COLUMNS: tuple[str, ...] = (*CODE_COLUMNS, *RUN_COLUMNS)
CATEGORY_COLUMNS: tuple[str, ...] = (*CATEGORICAL, *RUN_CATEGORICAL)
_SIZE = re.compile(r"(?:^|_)(\d{2,4})(?:_|$)")


@dataclass(frozen=True)
class RunSettings:
    """One training run as LEMUR records it (None: not stated)."""
    dataset: str
    epoch: int
    lr: float | None = None
    momentum: float | None = None
    dropout: float | None = None
    batch: int | None = None
    transform: str | None = None


@dataclass(frozen=True)
class TrainingTable:
    """X's rows are runs at one epoch; its columns are COLUMNS, category columns holding codes into `vocab`."""
    X: np.ndarray  # float32 (rows, len(COLUMNS)); NaN where a value is unknown
    y: np.ndarray  # float32 accuracy in [0, 1]
    model: np.ndarray  # str: the row's model name
    family: np.ndarray  # str: the model's family (the LEMUR name stem)
    vocab: dict[str, tuple[str, ...]]  # category column -> its values; code i stands for vocab[col][i]
    source: str  # the index the table was built from (wheel sha256 and build time)

    @property
    def dataset(self) -> np.ndarray:
        """Each row's dataset name."""
        codes = self.X[:, COLUMNS.index("dataset")].astype(int)
        return np.asarray(self.vocab["dataset"], dtype=object)[codes]

    @property
    def epoch(self) -> np.ndarray:
        return self.X[:, COLUMNS.index("epoch")].astype(int)

    def __len__(self) -> int:
        return len(self.y)


def transform_parts(transform: str | None) -> tuple[str, float, float]:
    """`norm_128_flip` -> ("norm", 128, 1); `bf-v1-RandomCrop_Pad` -> ("bf-v1", NaN, 0)."""
    if not transform:
        return "none", math.nan, math.nan
    kind = "bf-v1" if transform.startswith("bf-v1") else transform.split("_")[0]
    size = _SIZE.search(transform) if kind != "bf-v1" else None  # bf-v1's numbers are not sizes
    flip = "flip" in transform.split("_") or "HorizontalFlip" in transform
    return kind, float(size.group(1)) if size else math.nan, float(flip)


def _number(v: float | int | None) -> float:
    return math.nan if v is None else float(v)


def _category(vocab: dict[str, tuple[str, ...]], col: str, value: str) -> float:
    values = vocab[col]
    return float(values.index(value)) if value in values else math.nan


def encode_code(code: CodeFeatures, vocab: dict[str, tuple[str, ...]]) -> np.ndarray:
    """The CODE_COLUMNS part of a row; a category `vocab` does not hold is NaN (missing)."""
    return np.array([*(code.numeric[c] for c in NUMERIC),
                     *(_category(vocab, c, code.categorical[c]) for c in CATEGORICAL)], dtype=np.float32)


def encode_run(run: RunSettings, vocab: dict[str, tuple[str, ...]]) -> np.ndarray:
    """The RUN_COLUMNS part of a row."""
    kind, size, flip = transform_parts(run.transform)
    lr, momentum, batch = _number(run.lr), _number(run.momentum), _number(run.batch)
    effective = lr / (1.0 - min(momentum, 0.999)) if not math.isnan(momentum) else lr
    per_sample = lr / batch if batch and batch > 0 else math.nan
    return np.array([float(run.epoch), lr, momentum, _number(run.dropout), batch, size, flip, effective, per_sample,
                     _category(vocab, "dataset", run.dataset), _category(vocab, "transform_kind", kind)],
                    dtype=np.float32)


def encode(code: CodeFeatures, run: RunSettings, vocab: dict[str, tuple[str, ...]]) -> np.ndarray:
    """One row of X: `code` trained as `run`."""
    return np.concatenate([encode_code(code, vocab), encode_run(run, vocab)])


def source_id(root: Path) -> str:
    """Which index (and feature version) a table or a predictor was built from."""
    meta = read_meta(index_path(root))
    if meta is None:
        raise LemurNotPulled(f"no LEMUR index in {root}; run `nasgraph lemur pull` first")
    return f"{meta.get('wheel_sha256', '?')[:16]}@{meta.get('built_at', '?')}/features-v{FEATURE_VERSION}"


def load_table(root: Path, *, progress: Progress | None = None, cache: bool = True) -> TrainingTable:
    """The table of the index in `root` (a lemur folder), from the cache when it is of this index."""
    root = Path(root)
    source = source_id(root)
    cached = root / CACHE
    if cache and cached.is_file():
        table = _read(cached)
        if table is not None and table.source == source:
            return table
    table = build_table(root, source, progress)
    if cache:
        _write(cached, table)
    return table


def build_table(root: Path, source: str, progress: Progress | None = None) -> TrainingTable:
    start = time.perf_counter()
    db = sqlite3.connect(f"file:{index_path(root)}?mode=ro", uri=True)
    try:
        models = db.execute(
            "SELECT name, family, path FROM models WHERE name IN "
            "(SELECT model FROM series WHERE task = ? AND metric = ?) ORDER BY name", (TASK, METRIC)).fetchall()
        rows = db.execute(
            "SELECT model, dataset, epoch, accuracy, lr, momentum, dropout, batch, transform FROM records "
            "WHERE task = ? AND metric = ? AND accuracy BETWEEN 0 AND 1", (TASK, METRIC)).fetchall()
    finally:
        db.close()
    if progress:
        progress(f"reading {len(models):,} model files for {len(rows):,} training records")
    features: dict[str, CodeFeatures] = {}
    family: dict[str, str] = {}
    for i, (name, fam, path) in enumerate(models, 1):
        try:
            source_bytes = (root / path).read_bytes()
        except OSError:
            continue  # a model file gone from disk: its runs are left out
        features[name] = code_features(source_bytes)
        family[name] = fam or name
        if progress and i % 1000 == 0:
            progress(f"  {i:,} model files")
    runs = [r for r in rows if r[0] in features]
    vocab = _vocab(features.values(), runs)
    code_rows = {name: encode_code(f, vocab) for name, f in features.items()}
    X = np.empty((len(runs), len(COLUMNS)), dtype=np.float32)
    n_code = len(CODE_COLUMNS)
    for i, (name, dataset, epoch, _acc, lr, momentum, dropout, batch, transform) in enumerate(runs):
        X[i, :n_code] = code_rows[name]
        X[i, n_code:] = encode_run(RunSettings(dataset, epoch, lr, momentum, dropout, batch, transform), vocab)
    if progress:
        progress(f"table of {len(runs):,} rows built in {time.perf_counter() - start:.0f} s")
    return TrainingTable(
        X=X, y=np.fromiter((r[3] for r in runs), dtype=np.float32, count=len(runs)),
        model=np.array([r[0] for r in runs]), family=np.array([family[r[0]] for r in runs]),
        vocab=vocab, source=source,
    )


def _vocab(codes: Iterable[CodeFeatures], runs: list[tuple]) -> dict[str, tuple[str, ...]]:
    values: dict[str, set[str]] = {c: set() for c in CATEGORY_COLUMNS}
    for f in codes:
        for col in CATEGORICAL:
            values[col].add(f.categorical[col])
    for r in runs:
        values["dataset"].add(r[1])
        values["transform_kind"].add(transform_parts(r[8])[0])
    return {col: tuple(sorted(v)) for col, v in values.items()}


def _write(path: Path, table: TrainingTable) -> None:
    # Written beside the target and renamed: a reader sees the old cache or the new one, never half.
    fd, tmp = tempfile.mkstemp(prefix=".predictor-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, X=table.X, y=table.y, model=table.model, family=table.family,
                                meta=np.array(json.dumps({"source": table.source, "vocab": table.vocab,
                                                          "columns": COLUMNS})))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path) -> TrainingTable | None:
    """The cached table, or None when it is unreadable or has other columns (it is then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if tuple(meta["columns"]) != COLUMNS:
                return None
            return TrainingTable(X=z["X"], y=z["y"], model=z["model"], family=z["family"],
                                 vocab={k: tuple(v) for k, v in meta["vocab"].items()}, source=meta["source"])
    except (OSError, ValueError, KeyError):
        return None
