"""A tabular benchmark on LEMUR's recorded runs: a proposal is answered by the nearest recorded run of
the same model on the same dataset and epoch, so a search costs no training.

The search space of a series is the box its records span: lr (log scale) and momentum between
their recorded extremes, batch (log scale) likewise, dropout when every run records one, and the
transforms it was run with as choices. Dimensions the records never vary are left out.

Distance (`TabularOracle.distance`): each numeric dimension is scaled to [0, 1] over that range
(lr and batch in log space); a transform name (`norm_256_flip`: pipeline kind, image side, flips)
is compared by its parts, a third each: another kind 1, flips on one side only 1, and the sides'
log2 difference over the series' range of sides (a name without a side keeps the native one,
taken as 32, the side of most of LEMUR's datasets); the Euclidean norm of these is taken. The
nearest run answers, ties by the mean of the tied runs. Comparing transforms as whole names made
a search a lottery of names: most of a series' ~20 names occur in one or two runs, so the name
alone picked the answer, however far its lr or batch. Runs with identical
settings are one point, at their mean accuracy (LEMUR repeats some settings with different
outcomes), so the best a search can find is the best point, and the regret of a search is that
best minus the best it found: never negative.
"""
from __future__ import annotations

import json
import math
import random
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from nasgraph.tools.hpo.space import ChoiceDim, FloatDim, IntDim, Params, SearchSpace, fmt_value
from nasgraph.tools.hpo.study import HpoError, Result
from nasgraph.tools.lemur import index_path

TIE = 1e-9


@dataclass(frozen=True)
class RecordedRun:
    lr: float
    momentum: float | None
    batch: int
    dropout: float | None
    transform: str
    accuracy: float


@dataclass(frozen=True)
class Point:
    params: Params
    accuracy: float
    runs: int  # recorded runs with these settings (their accuracies averaged)


@dataclass(frozen=True)
class Series:
    """One model trained on one dataset, its recorded runs at one epoch as points in its space."""
    model: str
    dataset: str
    epoch: int
    family: str
    kind: str
    layers: dict[str, int]
    space: SearchSpace
    points: tuple[Point, ...]

    @property
    def best(self) -> float:
        return max(p.accuracy for p in self.points)

    def describe(self) -> str:
        """The architecture as the LLM is told it (the code is not shown: a CPU prompt stays short)."""
        top = sorted(self.layers.items(), key=lambda kv: -kv[1])[:8]
        layers = ", ".join(f"{k} x{v}" for k, v in top)
        return f"{self.model} (family {self.family}, {self.kind})" + (f", built from {layers}" if layers else "")


def build_series(model: str, dataset: str, epoch: int, runs: Iterable[RecordedRun], *, family: str = "",
                 kind: str = "", layers: dict[str, int] | None = None) -> Series:
    runs = [r for r in runs if r.lr and r.lr > 0 and r.batch and r.batch > 0]
    if len(runs) < 2:
        raise HpoError(f"{model} on {dataset} epoch {epoch}: fewer than 2 usable recorded runs")
    dims: list = []
    lrs, batches = [r.lr for r in runs], [r.batch for r in runs]
    if min(lrs) < max(lrs):
        dims.append(FloatDim(name="lr", low=min(lrs), high=max(lrs), log=True, about="learning rate"))
    # Models trained with Adam record no momentum; a key some runs lack is not searched.
    moms = [float(r.momentum) for r in runs] if all(r.momentum is not None for r in runs) else [0.0]
    if min(moms) < max(moms):
        dims.append(FloatDim(name="momentum", low=min(moms), high=max(moms), about="SGD momentum"))
    if min(batches) < max(batches):
        dims.append(IntDim(name="batch", low=min(batches), high=max(batches), log=True, about="batch size"))
    if all(r.dropout is not None for r in runs):
        drops = [float(r.dropout) for r in runs]  # type: ignore[arg-type]
        if min(drops) < max(drops):
            dims.append(FloatDim(name="dropout", low=min(drops), high=max(drops), about="dropout probability"))
    transforms = sorted({r.transform for r in runs})
    if len(transforms) > 1:
        dims.append(ChoiceDim(name="transform", choices=transforms,
                              about="input pipeline: norm/echo + image side + _flip (random horizontal flips)"))
    if not dims:
        raise HpoError(f"{model} on {dataset} epoch {epoch}: the recorded runs never vary a hyperparameter")
    space = SearchSpace(dims=dims)
    groups: dict[tuple, list[float]] = {}
    settings: dict[tuple, Params] = {}
    for r in runs:
        full = {"lr": r.lr, "momentum": r.momentum, "batch": r.batch, "dropout": r.dropout, "transform": r.transform}
        params = {n: full[n] for n in space.names}
        key = tuple(round(v, 9) if isinstance(v, float) else v for v in params.values())
        groups.setdefault(key, []).append(r.accuracy)
        settings[key] = params
    points = tuple(Point(settings[k], sum(a) / len(a), len(a)) for k, a in groups.items())
    return Series(model, dataset, epoch, family, kind, dict(layers or {}), space, points)


NATIVE_SIDE = 32


def transform_parts(name: str) -> tuple[str, int, bool]:
    """`norm_256_flip` -> ('norm', 256, True); a name without a side keeps the native one."""
    parts = str(name).lower().split("_")
    sides = [int(p) for p in parts[1:] if p.isdigit()]
    return parts[0], sides[0] if sides else NATIVE_SIDE, "flip" in parts[1:]


def transform_gap(a: str, b: str, side_range: float) -> float:
    """How far two transform names are: another kind 1, flips on one side only 1, and the sides' log2
    difference over `side_range` (0: sides ignored)."""
    (ka, sa, fa), (kb, sb, fb) = transform_parts(a), transform_parts(b)
    side = abs(math.log2(sa) - math.log2(sb)) / side_range if side_range else 0.0
    return (ka != kb) + (fa != fb) + side


class TabularOracle:
    """The objective of a tabular search: the nearest recorded point's accuracy."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self.calls = 0
        sides = [math.log2(transform_parts(str(p.params["transform"]))[1])
                 for p in series.points if "transform" in p.params]
        self._side_range = (max(sides) - min(sides)) if sides else 0.0

    def distance(self, a: Params, b: Params) -> float:
        total = 0.0
        for d in self.series.space.dims:
            if isinstance(d, ChoiceDim):
                total += transform_gap(str(a[d.name]), str(b[d.name]), self._side_range) ** 2 / 9
            else:
                total += (d.unit(a[d.name]) - d.unit(b[d.name])) ** 2
        return math.sqrt(total)

    def nearest(self, params: Params) -> tuple[list[Point], float]:
        dists = [self.distance(params, p.params) for p in self.series.points]
        d = min(dists)
        return [p for p, x in zip(self.series.points, dists) if x <= d + TIE], d

    def __call__(self, params: Params) -> Result:
        self.calls += 1
        tied, d = self.nearest(params)
        acc = sum(p.accuracy for p in tied) / len(tied)
        shown = ", ".join(f"{k} {fmt_value(v)}" for k, v in tied[0].params.items())
        return Result(accuracy=acc, note=f"nearest recorded run at distance {d:.3f}: {shown}"
                                         + (f" (+{len(tied) - 1} tied)" if len(tied) > 1 else ""))


# --- the LEMUR index ---------------------------------------------------------------------------

def _connect(root: Path) -> sqlite3.Connection:
    path = index_path(root)
    if not path.is_file():
        raise HpoError(f"no LEMUR index at {path}; run `nasgraph lemur pull` first")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


# Runs with the same settings are one point, so a series qualifies by its distinct settings.
_ELIGIBLE = """
SELECT s.model, s.dataset, COUNT(DISTINCT printf('%.9g|%.9g|%d|%s|%s', r.lr, r.momentum, r.batch,
       IFNULL(r.dropout, ''), r.transform)) AS configs
FROM runs r JOIN series s ON s.id = r.series
WHERE s.task = 'img-classification' AND s.metric = 'acc' AND r.epoch = ?
      AND r.lr > 0 AND r.batch > 0 AND s.model IN (SELECT name FROM models)
GROUP BY s.id HAVING configs >= ? ORDER BY s.model, s.dataset
"""


def eligible(root: Path, *, min_configs: int = 20, epoch: int = 1) -> list[tuple[str, str, int]]:
    """(model, dataset, distinct settings) of every image-classification series with at least
    `min_configs` distinct recorded settings at `epoch`, sorted by model and dataset."""
    with closing(_connect(root)) as db:
        return [(m, d, int(n)) for m, d, n in db.execute(_ELIGIBLE, (epoch, min_configs))]


def load_series(root: Path, model: str, dataset: str, *, epoch: int = 1) -> Series:
    with closing(_connect(root)) as db:
        row = db.execute("SELECT family, kind, layers FROM models WHERE name = ?", (model,)).fetchone()
        runs = [RecordedRun(lr, mom, int(b), drop, tr or "none", acc) for lr, mom, b, drop, tr, acc in db.execute(
            "SELECT r.lr, r.momentum, r.batch, r.dropout, r.transform, r.accuracy FROM runs r "
            "JOIN series s ON s.id = r.series WHERE s.model = ? AND s.dataset = ? AND s.task = 'img-classification' "
            "AND s.metric = 'acc' AND r.epoch = ? AND r.lr > 0 AND r.batch > 0", (model, dataset, epoch))]
    if row is None:
        raise HpoError(f"no model {model!r} in the LEMUR index")
    return build_series(model, dataset, epoch, runs, family=row[0], kind=row[1], layers=json.loads(row[2]))


def draw(root: Path, n: int, *, seed: int = 0, min_configs: int = 20, epoch: int = 1) -> list[Series]:
    """A seeded draw of `n` eligible series, at most one per model (a model's datasets are alike)."""
    by_model: dict[str, list[tuple[str, str, int]]] = {}
    for m, d, c in eligible(root, min_configs=min_configs, epoch=epoch):
        by_model.setdefault(m, []).append((m, d, c))
    rng = random.Random(seed)
    models = sorted(by_model)
    rng.shuffle(models)
    return [load_series(root, *rng.choice(by_model[m])[:2], epoch=epoch) for m in models[:n]]
