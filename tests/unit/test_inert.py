"""What a child's change may leave inert. Layers built in __init__ that forward never uses: every
evaluation records them, and a child of a parent (`unused_allowed` = the parent's own) that adds more is
stopped before training. A digest of what a design computes (`detail.behaviour`): a child with its
parent's digest (`parent_behaviour`) is stopped too. So an edit the LLM wrote but never wired in costs no
epoch. Through the real sandboxed child on `digits`, and the digest in-process on real torch modules."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nasgraph.tools.evaluator import EvalRequest, Evaluator, Outcome
from nasgraph.tools.evaluator.inert import behaviour

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


def run(ev: Evaluator, code: str = MODEL, **kw) -> Outcome:
    return ev.evaluate(EvalRequest(code=code, dataset="digits", threads=1, batch_size=64, augment=False,
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


# What the 1.5B model wrote as "use GELU": a GELU built and never called, an attribute renamed, a comment.
SAME = (MODEL.replace("        self.bn1 = nn.BatchNorm2d(6)\n",
                      "        self.bn1 = nn.BatchNorm2d(6)\n        self.gelu1 = nn.GELU()  # smoother\n")
        .replace("self.drop", "self.dropout"))
# Real changes the digest must see: dropout used (in training mode only), a
# gradient doubled (backward only), a layer without its bias (its weights).
DROPOUT = MODEL.replace("return self.fc(torch.flatten", "return self.fc(self.drop(torch.flatten").replace(
    "1), 1))", "1), 1)))")
# 2x - x is x to the last bit, but its gradient is doubled.
GRAD_X2 = MODEL.replace("x = F.conv2d(x,", "x = 2 * x - x.detach()\n        x = F.conv2d(x,")
NO_BIAS = MODEL.replace("nn.Conv2d(6, 6, 1)", "nn.Conv2d(6, 6, 1, bias=False)").replace(
    "self.w.weight, self.w.bias", "self.w.weight")


def test_a_child_that_computes_what_its_parent_computes_stops_before_training(ev):
    parent = run(ev, unused_allowed=["c3", "bn3"])
    digest = parent.detail["behaviour"]
    assert parent.status == "ok" and len(digest) == 16
    out = run(ev, SAME, unused_allowed=["c3", "bn3"], parent_behaviour=digest)
    assert out.status == "build_error" and "train" not in out.seconds
    assert out.diagnosis.kind == "same_as_parent" and out.detail["behaviour"] == digest
    assert "computes exactly what its parent computes" in out.error and "in forward()" in out.error


@pytest.mark.parametrize("code", [DROPOUT, GRAD_X2, NO_BIAS], ids=["dropout", "gradient", "no-bias"])
def test_a_real_change_has_another_digest_and_trains(ev, code):
    digest = run(ev, max_params=1).detail["behaviour"]  # stopped at the budget: recorded all the same
    out = run(ev, code, unused_allowed=["c3", "bn3"], parent_behaviour=digest)
    assert out.status == "ok" and out.detail["behaviour"] != digest


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.drop = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.drop(self.bn(self.conv(x)).mean((2, 3))))


def test_the_digest_leaves_the_model_and_the_random_stream_as_they_were():
    torch.manual_seed(0)
    model, x = _Net(), torch.randn(2, 1, 8, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    first = behaviour(model, x, seed=7)
    assert first == behaviour(model, x, seed=7) and first != behaviour(model, x, seed=8)
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_model_with_its_own_training_code_gets_no_digest():
    model = _Net()
    model.learn = lambda feed: None
    assert behaviour(model, torch.randn(2, 1, 8, 8), seed=0) is None
