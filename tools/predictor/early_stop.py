"""The early-stop predictor: a design's one-epoch accuracy from the start of its epoch.

Every evaluation carries its screen (evaluator.harness.Screen): the test accuracy on 2,000 images
once a fraction of the first epoch has trained. From that, the design's size and its code's features
(predictor.features), a ridge regression predicts the accuracy at the end of the epoch. It is fitted
on the store's own evaluations (no LEMUR record has a partial epoch) and scored by cross-validation
against the plain mean and against the screen accuracy alone: the question it answers is whether
the cascade could cut on a prediction instead of the raw screen.

Few designs (tens to hundreds) and many code features: a linear model with strong shrinkage, not
trees; the penalty is chosen by inner cross-validation (RidgeCV).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nasgraph.tools.cascade import trained_screen

from .features import NUMERIC, code_features
from .model import PredictorError, Scores, scores

VARIANTS = ("mean", "screen", "screen+size", "screen+size+code")
ALPHAS = np.logspace(-2, 4, 25)


@dataclass(frozen=True)
class Sample:
    arch_id: str
    screen_accuracy: float
    params: int
    flops: int
    accuracy: float          # at the end of the epoch: the target
    code: str = ""


def samples(records: Iterable, code_of: Callable[[str], str], fraction: float) -> list[Sample]:
    """Fully trained one-epoch designs screened at `fraction`, one per architecture (its first)."""
    out: dict[str, Sample] = {}
    for r in records:
        screen = trained_screen(r, fraction)
        if screen is None or r.epochs != 1 or not r.params or not r.flops or r.arch_id in out:
            continue
        out[r.arch_id] = Sample(r.arch_id, screen["accuracy"], r.params, r.flops, r.accuracy, code_of(r.arch_id))
    return list(out.values())


def features(batch: list[Sample], variant: str) -> np.ndarray:
    cols = [[s.screen_accuracy] for s in batch]
    if variant in ("screen+size", "screen+size+code"):
        cols = [c + [math.log10(s.params), math.log10(s.flops)] for c, s in zip(cols, batch)]
    if variant == "screen+size+code":
        cols = [c + [code_features(s.code).numeric[k] for k in NUMERIC] for c, s in zip(cols, batch)]
    return np.asarray(cols, dtype=np.float64)


class EarlyStop:
    """A fitted variant; `predict` takes samples whose `accuracy` is not read."""

    def __init__(self, variant: str = "screen+size"):
        if variant not in VARIANTS:
            raise PredictorError(f"unknown early-stop variant {variant!r}; one of {', '.join(VARIANTS)}")
        self.variant = variant

    def fit(self, batch: list[Sample]) -> EarlyStop:
        y = np.array([s.accuracy for s in batch])
        if self.variant == "mean":
            self.mean = float(y.mean())
        else:
            self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(features(batch, self.variant), y)
        return self

    def predict(self, batch: list[Sample]) -> np.ndarray:
        if self.variant == "mean":
            return np.full(len(batch), self.mean)
        return np.clip(self.model.predict(features(batch, self.variant)), 0.0, 1.0)


def cross_validate(batch: list[Sample], folds: int = 5, seed: int = 0) -> dict[str, Scores]:
    """Out-of-fold scores of every variant on the same folds (designs, never rows of one, are held out:
    each sample is its own architecture)."""
    if len(batch) < 2 * folds:
        raise PredictorError(f"{len(batch)} screened designs are too few for {folds}-fold cross-validation "
                             f"(at least {2 * folds}); run the loop longer")
    y = np.array([s.accuracy for s in batch])
    out = {}
    for variant in VARIANTS:
        pred = np.zeros(len(batch))
        for train, test in KFold(folds, shuffle=True, random_state=seed).split(batch):
            model = EarlyStop(variant).fit([batch[i] for i in train])
            pred[test] = model.predict([batch[i] for i in test])
        out[variant] = scores(pred, y)
    return out
