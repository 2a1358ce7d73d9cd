"""Code a person hands in runs as LEMUR's models expect: every declared hyperparameter reaches Net,
a missing module is named, and a model written for larger images gets them. Through the real
sandboxed child, on the 1797-image `digits` set (8x8 pixels) with tiny models; one Evaluator serves
the module."""
from __future__ import annotations

import textwrap

import pytest

from nasgraph.tools.evaluator import EvalRequest, Evaluator, Outcome
from nasgraph.tools.evaluator.hyperparameters import FALLBACK, TABLE

MODEL = '''
import torch
import torch.nn as nn

{head}

class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        {init}
        self.pool = nn.Sequential({pools})
        self.fc = nn.Linear(in_shape[1], out_shape[0])

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.pool(x), 1), 1))
'''


def model(head: str = "", init: str = "pass", pools: int = 0) -> str:
    return MODEL.format(head=textwrap.dedent(head).strip(), init="\n        ".join(init.strip().splitlines()),
                        pools=", ".join(["nn.MaxPool2d(2)"] * pools))


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
    with Evaluator(tmp_path_factory.mktemp("handed") / "data") as evaluator:
        yield evaluator


def run(ev: Evaluator, code: str, **kw) -> Outcome:
    settings = dict(dataset="digits", threads=1, batch_size=64, augment=False, time_budget_s=20.0,
                    setup_timeout_s=10.0, timeout_grace_s=5.0, memory_limit_mb=1024, seed=0, origin="handed")
    return ev.evaluate(EvalRequest(code=code, **{**settings, **kw}))


# The model checks in __init__ what it was given: a wrong value is a build_error naming it.
CHECK = "assert prm['{key}'] == {value!r}, ('{key}', prm['{key}'])"


def test_declared_keys_reach_net_from_the_table_and_the_fallback(ev):
    head = "def supported_hyperparameters():\n    return {'lr', 'momentum', 'dropout', 'stochastic_depth_prob', 'zeta'}"
    init = "\n".join([CHECK.format(key="dropout", value=TABLE["dropout"]),
                      CHECK.format(key="stochastic_depth_prob", value=TABLE["stochastic_depth_prob"]),
                      CHECK.format(key="zeta", value=FALLBACK), "self.drop = nn.Dropout(prm['dropout'])"])
    out = run(ev, model(head, init))
    assert out.status == "ok", out.error
    assert out.detail["prm_filled"] == {"dropout": {"value": TABLE["dropout"], "source": "table"},
                                        "stochastic_depth_prob": {"value": TABLE["stochastic_depth_prob"],
                                                                  "source": "table"},
                                        "zeta": {"value": FALLBACK, "source": "fallback"}}


def test_a_dict_declaration_supplies_its_defaults_and_the_request_wins(ev):
    head = "def supported_hyperparameters():\n    return {'lr': 0.9, 'dropout': 0.3, 'width': 4}"
    init = "\n".join([CHECK.format(key="dropout", value=0.1), CHECK.format(key="width", value=4),
                      CHECK.format(key="lr", value=0.05)])
    out = run(ev, model(head, init), prm={"dropout": 0.1})
    assert out.status == "ok", out.error
    assert out.detail["prm_filled"] == {"width": {"value": 4, "source": "model"}}


def test_a_key_read_without_declaring_it_is_filled_and_recorded(ev):
    # LEMUR's runner always passes dropout; about 3% of its torch-only files read it undeclared
    head = "def supported_hyperparameters():\n    return {'lr', 'momentum'}"
    init = "self.drop = nn.Dropout(prm['dropout'])\nself.setup_batch = prm['batch']"
    out = run(ev, model(head, init))
    assert out.status == "ok", out.error
    assert out.detail["prm_filled"]["dropout"] == {"value": TABLE["dropout"], "source": "table", "undeclared": True}
    assert out.detail["prm_filled"]["batch"]["source"] == "run"


def test_no_declaration_fills_nothing(ev):
    out = run(ev, model())
    assert out.status == "ok", out.error
    assert "prm_filled" not in out.detail


@pytest.mark.parametrize("line, name", [
    ("from ab.nn.util.Util import export_torch_weights", "ab"),
    ("import timm", "timm"),
    ("from .blocks import Bottleneck", ".blocks"),
])
def test_a_missing_module_is_a_build_error_naming_it(ev, line, name):
    out = run(ev, model(head=line))
    assert out.status == "build_error" and out.stage == "build", out
    assert out.diagnosis.kind == "missing_module" and out.diagnosis.name == name, out.diagnosis
    assert f"missing module: '{name}'" in out.error and out.diagnosis.line == 5


def test_generated_code_importing_it_stays_forbidden(ev):
    out = run(ev, model(head="import timm"), origin="generated")
    assert out.status == "forbidden" and out.diagnosis.kind == "forbidden_import"


def test_a_model_for_larger_images_is_rebuilt_for_the_first_side_it_takes(ev):
    # four 2x2 pools need 16 pixels; digits has 8
    out = run(ev, model(pools=4))
    assert out.status == "shape_error" and out.diagnosis.kind == "too_small", out
    out = run(ev, model(pools=4), image_sides=[12, 16, 32])
    assert out.status == "ok", out.error
    assert out.detail["image_side"] == 16


def test_a_model_no_side_cures_reports_the_largest_tried(ev):
    out = run(ev, model(pools=6), image_sides=[16, 32])
    assert out.status == "shape_error" and out.diagnosis.kind == "too_small" and out.detail["image_side"] == 32
