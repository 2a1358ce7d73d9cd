"""What LEMUR's records say about good settings on a dataset, learned from *other* models' runs.

LEMUR holds thousands of models, each trained with many settings on the same datasets. A setting that
was the best for one model is often good for another on the same data: one epoch of SGD wants about the
same lr, momentum and batch whatever the exact layers. So the prior of a search is a short portfolio
of recorded settings (the way meta-learned warm starts are chosen): each candidate is one of some model's
two best recorded runs, scored by how well it does for *other* models, i.e. the mean, over a seeded sample of
other models' series on the dataset, of the percentile its nearest recorded run holds among that
series' runs (the tabular oracle's distance). The top `k` distinct candidates form the portfolio.

The model being tuned is excluded from candidates and judges (`exclude`), so a tabular benchmark on a
LEMUR series never sees its own records. A dataset LEMUR lacks is stood in for by its nearest LEMUR
dataset (`STAND_IN`: small grey 10-class images → mnist); one with no stand-in has no prior.

The agent is told the portfolio (`Prior.describe`); `PriorFirst` enqueues it before any sampler.
"""
from __future__ import annotations

import json
import random
import sqlite3
import statistics
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from nasgraph.tools.hpo.space import ChoiceDim, Params, SearchSpace, fmt_value
from nasgraph.tools.hpo.study import HpoError, Proposal, Sampler, Trial
from nasgraph.tools.hpo.tabular import RecordedRun, TabularOracle, build_series, transform_gap, transform_parts
from nasgraph.tools.lemur import index_path
from nasgraph.tools.lemur.query import dataset_key

# Datasets of ours that LEMUR lacks, and the LEMUR dataset whose records stand in for them.
STAND_IN = {"fashionmnist": "mnist", "mnist5k": "mnist", "digits": "mnist", "animalmnist": "mnist"}
RAW_KEYS = ("lr", "momentum", "batch", "dropout", "transform")  # a RecordedRun's settings
# A LEMUR transform's side counts against a space's choices over 4 doublings (32 to 512 px, LEMUR's range).
SIDE_RANGE = 4.0


@dataclass(frozen=True)
class PriorSetting:
    params: dict[str, object]  # LEMUR's keys: lr, momentum, batch, dropout, transform (None: not recorded)
    score: float               # mean percentile among other models' runs (0..1, higher is better)
    model: str                 # whose best run it is

    @property
    def recorded(self) -> frozenset[str]:
        """The space keys LEMUR's run gives a value for (`augment` follows from the transform)."""
        keys = {k for k, v in self.params.items() if v is not None}
        return frozenset(keys | ({"augment"} if "transform" in keys else set()))


@dataclass(frozen=True)
class Prior:
    dataset: str               # the LEMUR dataset the records are from
    judges: int                # other models' series each candidate was scored on
    settings: tuple[PriorSetting, ...] = field(default_factory=tuple)

    def in_space(self, space: SearchSpace, fill: Params) -> list[Params]:
        """The portfolio mapped into `space`: values clamped, the transform to its nearest choice,
        `augment` on where the transform flips; keys the space lacks dropped, ones it has filled."""
        return [fit(space, s.params, fill) for s in self.settings]

    def describe(self, space: SearchSpace, fill: Params) -> str:
        """Prompt lines: each portfolio setting in the space, with how it did for other models. Only what
        LEMUR recorded is shown: a key `fill` supplied (e.g. dropout in a run without one) is left out."""
        lines = []
        for i, (s, p) in enumerate(zip(self.settings, self.in_space(space, fill)), 1):
            shown = ", ".join(f"{k} {fmt_value(v)}" for k, v in p.items() if k in s.recorded)
            lines.append(f"{i}. {shown} (beat {s.score:.0%} of the runs of other models on average)")
        return "\n".join(lines)


def lemur_dataset(db: sqlite3.Connection, dataset: str) -> str | None:
    norm = dataset_key(dataset.split("@")[0])
    known = {dataset_key(d): d for (d,) in db.execute("SELECT DISTINCT dataset FROM series")}
    return known.get(norm) or known.get(STAND_IN.get(norm, ""))


def fit(space: SearchSpace, raw: dict[str, object], fill: Params) -> Params:
    out = dict(raw)
    names = set(space.names)
    if "transform" in names and raw.get("transform") is not None:
        dim = space.dim("transform")
        assert isinstance(dim, ChoiceDim)
        out["transform"] = min(dim.choices, key=lambda c: transform_gap(str(c), str(raw["transform"]), SIDE_RANGE))
    if "augment" in names and raw.get("transform") is not None:
        out["augment"] = transform_parts(str(raw["transform"]))[2]
    return space.validate({k: v for k, v in out.items() if k in names and v is not None}, fill).params


_RUNS = """
SELECT s.model, r.lr, r.momentum, r.batch, r.dropout, r.transform, r.accuracy FROM runs r
JOIN series s ON s.id = r.series
WHERE s.dataset = ? AND s.task = 'img-classification' AND s.metric = 'acc' AND r.epoch = ?
      AND r.lr > 0 AND r.batch > 0 AND s.model != ?
"""


def transfer_prior(root: Path, dataset: str, *, exclude: str | None = None, k: int = 3, epoch: int = 1,
                   candidates: int = 60, judges: int = 80, min_runs: int = 10, seed: int = 0) -> Prior | None:
    """The portfolio for `dataset` from models other than `exclude`; None when LEMUR has no records for it."""
    path = index_path(root)
    if not path.is_file():
        return None
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        name = lemur_dataset(db, dataset)
        if name is None:
            return None
        by_model: dict[str, list[RecordedRun]] = {}
        for m, lr, mom, b, drop, tr, acc in db.execute(_RUNS, (name, epoch, exclude or "")):
            by_model.setdefault(m, []).append(RecordedRun(lr, mom, int(b), drop, tr or "none", acc))
    models = sorted(m for m, runs in by_model.items() if len(runs) >= min_runs)
    if len(models) < 2:
        return None
    rng = random.Random(f"{seed}:{name}:{exclude}")
    pool = rng.sample(models, min(candidates, len(models)))
    panel = []
    for m in rng.sample(models, min(judges, len(models))):
        try:
            s = build_series(m, name, epoch, by_model[m])
        except HpoError:  # a series whose records never vary judges nothing
            continue
        ranked = sorted(p.accuracy for p in s.points)
        panel.append((m, TabularOracle(s), ranked))
    scored = []
    # Each pool model's two best runs: models often share their very best setting, and a portfolio of
    # one setting k times teaches a search nothing.
    for m, run in ((model, r) for model in pool for r in sorted(by_model[model], key=lambda r: -r.accuracy)[:2]):
        raw = {key: getattr(run, key) for key in RAW_KEYS}
        pct = []
        for judge, oracle, ranked in panel:
            if judge == m:
                continue
            space = oracle.series.space
            acc = oracle(fit(space, raw, oracle.series.points[0].params)).accuracy
            pct.append(sum(a < acc for a in ranked) / len(ranked))
        if pct:
            scored.append(PriorSetting(raw, round(statistics.fmean(pct), 4), m))
    scored.sort(key=lambda s: -s.score)
    picked: list[PriorSetting] = []
    for s in scored:
        if all(json.dumps(s.params, sort_keys=True) != json.dumps(p.params, sort_keys=True) for p in picked):
            picked.append(s)
        if len(picked) == k:
            break
    return Prior(dataset=name, judges=len(panel), settings=tuple(picked))


class PriorFirst(Sampler):
    """Another sampler with the portfolio tried first: the non-LLM control for an agent told the prior."""

    def __init__(self, inner: Sampler, prior: Prior | None) -> None:
        self.inner, self.prior = inner, prior
        self.name = f"{inner.name}+prior"

    def optuna_sampler(self, seed: int, trials: int):
        return self.inner.optuna_sampler(seed, trials)

    def propose(self, space: SearchSpace, trials: list[Trial], seed: int) -> Proposal | None:
        portfolio = self.prior.in_space(space, space.sample(random.Random(seed))) if self.prior else []
        if len(trials) < len(portfolio):
            return Proposal(params=portfolio[len(trials)], source="prior", attrs={})
        return self.inner.propose(space, trials, seed)
