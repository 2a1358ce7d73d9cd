"""The evaluator's public request type and static entry point (no child process involved)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from nasgraph.config import EvaluatorConfig
from nasgraph.tools.evaluator import EvalRequest, static_check


def test_from_config_takes_every_evaluator_setting():
    cfg = EvaluatorConfig(threads=1, device="cpu", seed=7, batch_size=32, augment=False, time_budget_s=12.5,
                          max_params=1000, max_flops=2000, memory_limit_mb=512, timeout_grace_s=5, max_output_mb=2)
    req = EvalRequest.from_config(cfg, code="x = 1", dataset="digits", epochs=2, prm={"lr": 0.1})
    for key, value in cfg.model_dump().items():
        assert getattr(req, key) == value, key
    assert (req.code, req.dataset, req.epochs, req.prm) == ("x = 1", "digits", 2, {"lr": 0.1})


def test_overrides_win_and_unknown_keys_are_refused():
    req = EvalRequest.from_config(EvaluatorConfig(), code="", dataset="digits", threads=1)
    assert req.threads == 1
    with pytest.raises(ValidationError):
        EvalRequest(code="", dataset="digits", no_such_setting=1)


def test_prm_must_be_json():
    with pytest.raises(ValidationError, match="JSON"):
        EvalRequest(code="", dataset="digits", prm={"lr": object()})


def test_static_check_is_exported():
    assert static_check("import torch\n") is None
    assert static_check("import os\n").status == "forbidden"
    assert static_check("def f(:\n").status == "syntax"


def test_origin_picks_the_policy_and_defaults_to_generated():
    assert EvalRequest(code="", dataset="digits").origin == "generated"
    assert EvalRequest(code="", dataset="digits", origin="handed").origin == "handed"
    with pytest.raises(ValidationError):
        EvalRequest(code="", dataset="digits", origin="llm")
    code = "import torch\nfrom torch.amp import autocast\n"
    assert static_check(code).status == "forbidden" and static_check(code, "handed") is None


def test_image_sides_default_to_none():
    assert EvalRequest(code="", dataset="digits").image_sides == []
    assert EvalRequest(code="", dataset="digits", image_sides=[32, 64]).image_sides == [32, 64]
