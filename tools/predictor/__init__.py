"""A code-aware accuracy predictor fitted on LEMUR: how accurate a model file will be on a dataset after
some epochs with some hyperparameters, without training it.

`features` reads a file with `ast` (never running it); `dataset` builds the training table from the
LEMUR index (`nasgraph lemur pull`); `model` fits gradient-boosted trees on it, scores them against
baselines with whole models or families held out, and saves the fitted predictor under
`<home>/predictor/`.
"""
from __future__ import annotations

from nasgraph.tools.predictor.dataset import RunSettings, TrainingTable, load_table
from nasgraph.tools.predictor.features import CodeFeatures, code_features
from nasgraph.tools.predictor.model import (
    VARIANTS,
    Evaluation,
    Importance,
    Prediction,
    Predictor,
    PredictorError,
    Scores,
    SplitReport,
    evaluate,
    importance,
    load,
    save,
    train,
)

__all__ = [
    "VARIANTS", "CodeFeatures", "Evaluation", "Importance", "Prediction", "Predictor", "PredictorError",
    "RunSettings", "Scores", "SplitReport", "TrainingTable", "code_features", "evaluate", "importance",
    "load", "load_table", "save", "train",
]
