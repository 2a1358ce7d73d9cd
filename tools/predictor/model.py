"""Fit, evaluate, save and use the accuracy predictor: gradient-boosted trees over the training table.

Evaluation holds out whole models (GroupKFold by model name) and, harder, whole families: LEMUR holds
many near-copies within a family, so a split by model still lets a model's siblings teach the
predictor about it. Each split scores three predictors on the same folds: the dataset x epoch mean,
trees over the run's settings only (`hp`), and trees over code features and settings (`code`), so
what the code features add is measured, not assumed.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import joblib
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold
from threadpoolctl import threadpool_limits

from nasgraph.errors import NasgraphError
from nasgraph.tools.lemur.query import dataset_key
from nasgraph.tools.predictor.dataset import (
    CATEGORY_COLUMNS,
    COLUMNS,
    RUN_COLUMNS,
    RunSettings,
    TrainingTable,
    encode,
)
from nasgraph.tools.predictor.features import FEATURE_VERSION, code_features

Progress = Callable[[str], None]
Variant = Literal["mean", "hp", "code"]
Split = Literal["model", "family"]
VARIANTS: tuple[Variant, ...] = ("mean", "hp", "code")
VARIANT_COLUMNS: dict[Variant, tuple[str, ...]] = {"mean": (), "hp": RUN_COLUMNS, "code": COLUMNS}
PREDICTOR_FILE = "model.joblib"
# A fold's trees are fitted on at most this many rows: on one core 150k rows take about 30 s, and all
# of a fold's 360k rows gave the same held-out RMSE (0.118 on the first by-model fold) in over twice that.
MAX_TRAIN_ROWS = 150_000


class PredictorError(NasgraphError):
    """The predictor cannot answer: unknown dataset, no saved predictor, unreadable file."""


@dataclass(frozen=True)
class Scores:
    rmse: float
    mae: float
    pearson: float
    spearman: float
    rows: int
    # RMSE with each model's rows weighing as much as any other model's: a few hand-written LEMUR
    # models hold thousands of runs each (43% of all runs sit in 145 of 7,774 models), and they
    # dominate the plain RMSE.
    model_rmse: float = math.nan


@dataclass(frozen=True)
class SplitReport:
    """Out-of-fold scores of every variant on one way of holding data out."""
    split: Split
    folds: int
    groups: int  # models or families
    scores: dict[Variant, Scores]
    per_dataset: dict[str, dict[Variant, float]]  # dataset -> variant -> RMSE
    seconds: dict[Variant, float]  # fitting and predicting, all folds


@dataclass(frozen=True)
class Importance:
    name: str  # a column, or a group of them
    columns: tuple[str, ...]
    rmse_increase: float  # held-out RMSE with these columns shuffled (rows permuted together), less without
    std: float


@dataclass(frozen=True)
class Evaluation:
    source: str
    rows: int
    models: int
    families: int
    max_train_rows: int
    splits: list[SplitReport]


@dataclass(frozen=True)
class Prediction:
    accuracy: float  # in [0, 1]
    settings: RunSettings  # the run predicted for, defaults filled in
    defaults: tuple[str, ...]  # the settings that were not given and were taken from LEMUR's typical run
    parse_error: str | None  # the file did not parse: only the run's settings informed the prediction
    source: str  # the index the predictor was fitted on


@dataclass
class Predictor:
    """A fitted predictor, as saved under `<home>/predictor/`."""
    estimator: HistGradientBoostingRegressor
    vocab: dict[str, tuple[str, ...]]
    defaults: dict[str, dict[str, float | str | None]]  # dataset -> typical lr, momentum, dropout, batch, transform
    source: str
    rows: int
    evaluation: Evaluation | None = None
    feature_version: int = FEATURE_VERSION
    columns: tuple[str, ...] = COLUMNS

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.vocab["dataset"]

    def resolve_dataset(self, name: str) -> str:
        """`CIFAR10`, `cifar_10` and `cifar-10` name one dataset."""
        for d in self.datasets:
            if dataset_key(d) == dataset_key(name):
                return d
        raise PredictorError(f"the predictor knows no dataset {name!r}: one of {', '.join(self.datasets)}")

    def predict(self, code: str, run: RunSettings) -> Prediction:
        dataset = self.resolve_dataset(run.dataset)
        typical = self.defaults[dataset]
        filled: list[str] = []
        values: dict[str, object] = {}
        for key in ("lr", "momentum", "dropout", "batch", "transform"):
            given = getattr(run, key)
            if given is None and typical[key] is not None:
                filled.append(key)
            values[key] = typical[key] if given is None else given
        settings = replace(run, dataset=dataset, **values)  # type: ignore[arg-type]
        features = code_features(code)
        row = encode(features, settings, self.vocab)[None, :]
        with threadpool_limits(1):
            value = float(self.estimator.predict(row)[0])
        return Prediction(min(max(value, 0.0), 1.0), settings, tuple(filled), features.parse_error, self.source)


# -- fitting ---------------------------------------------------------------------------------------
def _regressor(columns: Sequence[str], seed: int) -> HistGradientBoostingRegressor:
    # Smaller trees, more of them, each split choosing among half the columns: on held-out models this
    # beat 63-leaf trees (RMSE 0.118 against 0.122 on the first by-model fold); larger trees, leaves
    # of 200 rows, or weighting rows so each model counts alike did not help.
    return HistGradientBoostingRegressor(
        max_iter=600, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=40, l2_regularization=1.0,
        max_features=0.5, categorical_features=[c in CATEGORY_COLUMNS for c in columns], early_stopping=False,
        random_state=seed)


class MeanBaseline:
    """The mean accuracy of the dataset at that epoch in the training rows (of the dataset, when the
    epoch is unseen; of everything, when the dataset is)."""

    def fit(self, dataset: np.ndarray, epoch: np.ndarray, y: np.ndarray) -> MeanBaseline:
        self.overall = float(y.mean())
        self.by_dataset: dict[str, float] = {}
        self.by_epoch: dict[tuple[str, int], float] = {}
        keys = np.char.add(np.char.add(dataset.astype(str), "|"), epoch.astype(str))
        for key in np.unique(keys):
            d, e = key.split("|")
            self.by_epoch[(d, int(e))] = float(y[keys == key].mean())
        for d in np.unique(dataset):
            self.by_dataset[str(d)] = float(y[dataset == d].mean())
        return self

    def predict(self, dataset: np.ndarray, epoch: np.ndarray) -> np.ndarray:
        return np.array([self.by_epoch.get((str(d), int(e)), self.by_dataset.get(str(d), self.overall))
                         for d, e in zip(dataset, epoch)], dtype=np.float32)


def _subsample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= limit else np.sort(rng.choice(rows, limit, replace=False))


def fit_trees(table: TrainingTable, rows: np.ndarray, columns: Sequence[str], *, seed: int = 0,
              n_jobs: int = 1) -> HistGradientBoostingRegressor:
    idx = [COLUMNS.index(c) for c in columns]
    X = table.X[np.ix_(rows, idx)]
    # sklearn's binning fails on a column with no value at all (a corpus without dropout runs); a
    # constant column is never split on, so predictions do not depend on what it holds.
    X[:, np.isnan(X).all(axis=0)] = 0.0
    with threadpool_limits(n_jobs):
        return _regressor(columns, seed).fit(X, table.y[rows])


def group_folds(groups: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold; no group has rows on both sides of any fold."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise PredictorError(f"cannot hold out groups: the table has {n_groups} group")
    k = min(folds, n_groups)
    return list(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups))


def scores(pred: np.ndarray, y: np.ndarray, models: np.ndarray | None = None) -> Scores:
    err = pred.astype(np.float64) - y.astype(np.float64)
    constant = np.ptp(pred) == 0 or np.ptp(y) == 0  # a correlation with a constant is undefined
    model_rmse = math.nan
    if models is not None and len(models):
        _, inverse, counts = np.unique(models, return_inverse=True, return_counts=True)
        model_rmse = float(np.sqrt(np.average(err ** 2, weights=1.0 / counts[inverse])))
    return Scores(
        rmse=float(np.sqrt(np.mean(err ** 2))), mae=float(np.mean(np.abs(err))),
        pearson=math.nan if constant else float(pearsonr(pred, y)[0]),
        spearman=math.nan if constant else float(spearmanr(pred, y)[0]), rows=len(y), model_rmse=model_rmse)


def evaluate(table: TrainingTable, *, splits: Sequence[Split] = ("model", "family"), folds: int = 5,
             variants: Sequence[Variant] = VARIANTS, max_train_rows: int = MAX_TRAIN_ROWS, seed: int = 0,
             n_jobs: int = 1, progress: Progress | None = None) -> Evaluation:
    """Out-of-fold scores of each variant, with whole models (or families) held out."""
    reports = []
    dataset, epoch = table.dataset, table.epoch
    for split in splits:
        groups = table.model if split == "model" else table.family
        fold_rows = group_folds(groups, folds)
        preds = {v: np.empty(len(table), dtype=np.float32) for v in variants}
        seconds = dict.fromkeys(variants, 0.0)
        rng = np.random.default_rng(seed)
        for i, (train, test) in enumerate(fold_rows, 1):
            sample = _subsample(train, max_train_rows, rng)
            for v in variants:
                start = time.perf_counter()
                if v == "mean":
                    preds[v][test] = MeanBaseline().fit(dataset[train], epoch[train], table.y[train]).predict(
                        dataset[test], epoch[test])
                else:
                    idx = [COLUMNS.index(c) for c in VARIANT_COLUMNS[v]]
                    trees = fit_trees(table, sample, VARIANT_COLUMNS[v], seed=seed, n_jobs=n_jobs)
                    with threadpool_limits(n_jobs):
                        preds[v][test] = trees.predict(table.X[np.ix_(test, idx)])
                seconds[v] += time.perf_counter() - start
            if progress:
                progress(f"  split by {split}: fold {i}/{len(fold_rows)} done")
        for v in variants:
            np.clip(preds[v], 0.0, 1.0, out=preds[v])
        per_dataset = {str(d): {v: scores(preds[v][dataset == d], table.y[dataset == d]).rmse for v in variants}
                       for d in np.unique(dataset)}
        reports.append(SplitReport(split, len(fold_rows), len(np.unique(groups)),
                                   {v: scores(preds[v], table.y, table.model) for v in variants}, per_dataset,
                                   seconds))
    return Evaluation(table.source, len(table), len(np.unique(table.model)), len(np.unique(table.family)),
                      max_train_rows, reports)


def importance(table: TrainingTable, *, groups: dict[str, Sequence[str]] | None = None, split: Split = "model",
               rows: int = 20_000, repeats: int = 2, max_train_rows: int = MAX_TRAIN_ROWS, seed: int = 0,
               n_jobs: int = 1) -> list[Importance]:
    """Permutation importance for the `code` predictor on (a sample of) one held-out fold, most important
    first. `groups` names sets of columns shuffled together; by default each column is its own group."""
    groups = groups or {c: (c,) for c in COLUMNS}
    train_rows, test_rows = group_folds(table.model if split == "model" else table.family, 5)[0]
    rng = np.random.default_rng(seed)
    trees = fit_trees(table, _subsample(train_rows, max_train_rows, rng), COLUMNS, seed=seed, n_jobs=n_jobs)
    test_rows = _subsample(test_rows, rows, rng)
    X, y = table.X[test_rows], table.y[test_rows]

    def rmse(data: np.ndarray) -> float:
        with threadpool_limits(n_jobs):
            return float(np.sqrt(np.mean((np.clip(trees.predict(data), 0, 1) - y) ** 2)))

    base = rmse(X)
    out = []
    for name, cols in groups.items():
        idx = [COLUMNS.index(c) for c in cols]
        rises = []
        for _ in range(repeats):
            shuffled = X.copy()
            shuffled[:, idx] = X[rng.permutation(len(X))][:, idx]  # one permutation for all: rows stay whole
            rises.append(rmse(shuffled) - base)
        out.append(Importance(name, tuple(cols), float(np.mean(rises)), float(np.std(rises))))
    return sorted(out, key=lambda i: -i.rmse_increase)


def _typical_runs(table: TrainingTable) -> dict[str, dict[str, float | str | None]]:
    """Per dataset, the median recorded lr, momentum and dropout, the median batch rounded to a power
    of two, and the most used transform."""
    out: dict[str, dict[str, float | str | None]] = {}
    dataset = table.dataset
    kind, size, flip = (table.X[:, COLUMNS.index(c)] for c in ("transform_kind", "transform_size", "transform_flip"))
    for d in np.unique(dataset):
        mask = dataset == d
        typical: dict[str, float | str | None] = {}
        for key in ("lr", "momentum", "dropout", "batch"):
            col = table.X[mask, COLUMNS.index(key)]
            col = col[~np.isnan(col)]
            typical[key] = float(np.median(col)) if len(col) else None  # None: LEMUR never states it
        batch = typical["batch"]
        typical["batch"] = 2 ** round(math.log2(batch)) if isinstance(batch, float) and batch >= 1 else None
        triples = np.stack([kind[mask], size[mask], flip[mask]], axis=1)
        values, counts = np.unique(np.nan_to_num(triples, nan=-1.0), axis=0, return_counts=True)
        k, s, f = values[np.argmax(counts)]
        name = table.vocab["transform_kind"][int(k)] if k >= 0 else "norm"
        typical["transform"] = name + (f"_{int(s)}" if s > 0 else "") + ("_flip" if f == 1 else "")
        out[str(d)] = typical
    return out


def train(table: TrainingTable, *, evaluation: Evaluation | None = None, max_train_rows: int = MAX_TRAIN_ROWS,
          seed: int = 0, n_jobs: int = 1) -> Predictor:
    """The `code` variant fitted on (a sample of) every row of the table."""
    rows = _subsample(np.arange(len(table)), max_train_rows, np.random.default_rng(seed))
    trees = fit_trees(table, rows, COLUMNS, seed=seed, n_jobs=n_jobs)
    return Predictor(trees, dict(table.vocab), _typical_runs(table), table.source, len(rows), evaluation)


# -- saving ------------------------------------------------------------------------------------------
def predictor_dir(home: Path) -> Path:
    return Path(home).expanduser() / "predictor"


def save(predictor: Predictor, home: Path) -> Path:
    folder = predictor_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PREDICTOR_FILE
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".joblib", dir=folder)
    os.close(fd)
    try:
        joblib.dump(predictor, tmp)
        os.replace(tmp, target)  # a reader finds the old predictor or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load(home: Path) -> Predictor | None:
    """The saved predictor; None when there is none, or it was built with other features or columns."""
    path = predictor_dir(home) / PREDICTOR_FILE
    if not path.is_file():
        return None
    try:
        predictor = joblib.load(path)
    except Exception as exc:  # a file pickled by other library versions can fail in any way
        raise PredictorError(f"cannot read {path} ({type(exc).__name__}); run `nasgraph predict --train`") from exc
    if (not isinstance(predictor, Predictor) or predictor.feature_version != FEATURE_VERSION
            or predictor.columns != COLUMNS):
        return None
    return predictor

