"""Layers built in __init__ that forward never uses: every evaluation records them, and a child of a
parent (`unused_allowed` = the parent's own) that adds more is stopped before training, so that an edit
the LLM wrote but never wired in costs no epoch. Through the real sandboxed child on `digits`."""
from __future__ import annotations

import pytest

from nasgraph.tools.evaluator import EvalRequest, Evaluator, Outcome

MODEL = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.c1 = nn.Conv2d(in_shape[1], 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.c3 = nn.Conv2d(6, 12, 3, padding=1)   # built, never used: the change was not made
        self.bn3 = nn.BatchNorm2d(12)
        self.w = nn.Conv2d(6, 6, 1)                # used through its weight, not called
        self.drop = nn.Dropout(0.1)                # no weights: never counted
        self.fc = nn.Linear(6, out_shape[0])

    def forward(self, x):
        x = F.relu(self.bn1(self.c1(x)))
        x = F.conv2d(x, self.w.weight, self.w.bias)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
'''


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
    with Evaluator(tmp_path_factory.mktemp("unused") / "data") as evaluator:
        yield evaluator


def run(ev: Evaluator, **kw) -> Outcome:
    return ev.evaluate(EvalRequest(code=MODEL, dataset="digits", threads=1, batch_size=64, augment=False,
                                   time_budget_s=20.0, setup_timeout_s=10.0, memory_limit_mb=1024, **kw))


def test_unused_layers_are_recorded_and_train_as_before(ev):
    out = run(ev)
    assert out.status == "ok" and out.detail["unused"] == ["c3", "bn3"]


def test_a_child_that_adds_an_unused_layer_stops_before_training_naming_it(ev):
    out = run(ev, unused_allowed=[])
    assert out.status == "build_error" and "train" not in out.seconds
    assert out.diagnosis.kind == "unused_layers" and out.diagnosis.name == "c3, bn3"
    assert "never used by forward: c3, bn3" in out.error and "use it in forward()" in out.error


def test_a_child_may_keep_what_its_parent_left_unused(ev):
    assert run(ev, unused_allowed=["c3", "bn3"]).status == "ok"
    out = run(ev, unused_allowed=["c3"])
    assert out.status == "build_error" and out.diagnosis.name == "bn3"
