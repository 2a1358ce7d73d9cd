"""The early-stop predictor on synthetic stores: what it reads, and that the screen carries signal."""
import math
import random
from types import SimpleNamespace

import pytest

from nasgraph.tools.predictor.early_stop import VARIANTS, EarlyStop, Sample, cross_validate, samples
from nasgraph.tools.predictor.model import PredictorError
from tests import candidates as C


def _record(arch_id, status="ok", accuracy=0.8, screen=0.6, fraction=0.1, epochs=1):
    return SimpleNamespace(arch_id=arch_id, status=status, accuracy=accuracy, epochs=epochs, params=5000, flops=10**6,
                           detail={"screen": {"fraction": fraction, "accuracy": screen}} if screen is not None else {})


def test_samples_are_screened_one_epoch_designs_once_each():
    records = [_record("a"), _record("a", accuracy=0.9), _record("b", status="screened", accuracy=None),
               _record("c", screen=None), _record("d", fraction=0.2), _record("e", epochs=3), _record("f")]
    got = samples(records, lambda arch: f"code of {arch}", 0.1)
    assert [(s.arch_id, s.accuracy, s.code) for s in got] == [("a", 0.8, "code of a"), ("f", 0.8, "code of f")]


def test_the_screen_predicts_the_end_of_the_epoch_better_than_the_mean():
    rng = random.Random(0)
    batch = []
    for i in range(40):
        final = rng.uniform(0.6, 0.9)
        width = rng.choice([4, 8, 16, 32])
        batch.append(Sample(f"d{i}", final - 0.2 + rng.gauss(0, 0.02), 1000 * width, 10**5 * width, final,
                            C.wide(width)))
    cv = cross_validate(batch)
    assert set(cv) == set(VARIANTS)
    assert cv["screen"].rmse < 0.5 * cv["mean"].rmse and cv["screen"].pearson > 0.9
    assert all(math.isfinite(cv[v].rmse) for v in VARIANTS)
    pred = EarlyStop("screen+size+code").fit(batch).predict(batch[:3])
    assert pred.shape == (3,) and ((0 <= pred) & (pred <= 1)).all()
    with pytest.raises(PredictorError, match="too few"):
        cross_validate(batch[:6])
    with pytest.raises(PredictorError, match="unknown early-stop variant"):
        EarlyStop("trees")
