"""Hyperparameter search: the space, the agent's parsing and fallbacks (a fake LLM), real optuna
samplers and storage (resume), and the tabular oracle on a tiny LEMUR-like fixture."""
from __future__ import annotations

import math
import random

import optuna
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from nasgraph.agents.hpo_agent import Architecture, LLMSampler, parse_reply, propose
from nasgraph.agents.prompts import render
from nasgraph.tools.hpo import (
    TPE,
    ChoiceDim,
    FloatDim,
    HpoError,
    IntDim,
    Random,
    Result,
    SearchSpace,
    Trial,
    run_study,
    sqlite_storage,
)
from nasgraph.tools.hpo.live import live_space
from nasgraph.tools.hpo.tabular import RecordedRun, TabularOracle, build_series, transform_parts

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace(dims=[
    FloatDim(name="lr", low=1e-4, high=0.5, log=True),
    FloatDim(name="momentum", low=0.0, high=0.99),
    IntDim(name="batch", low=8, high=512, log=True),
    FloatDim(name="dropout", low=0.0, high=0.5),
    ChoiceDim(name="transform", choices=["norm", "norm_64_flip", "echo_32"]),
])
ARCH = Architecture(name="net", dataset="cifar-10", summary="net, built from Conv2d x3")


def bowl(params) -> Result:
    """A smooth objective with its top at lr 0.05, momentum 0.9, batch 64, dropout 0.1, norm_64_flip."""
    d = (math.log10(params["lr"] / 0.05)) ** 2 + (params["momentum"] - 0.9) ** 2 \
        + (math.log2(params["batch"] / 64) / 6) ** 2 + (params["dropout"] - 0.1) ** 2
    return Result(accuracy=0.9 * math.exp(-d) + (0.05 if params["transform"] == "norm_64_flip" else 0.0))


def trial(n: int, acc: float | None, **params) -> Trial:
    base = {"lr": 0.01, "momentum": 0.5, "batch": 64, "dropout": 0.2, "transform": "norm"}
    return Trial(number=n, params={**base, **params}, accuracy=acc, source="test")


# --- the space ---------------------------------------------------------------------------------------

def test_validate_clamps_matches_and_fills():
    fill = {"lr": 0.01, "momentum": 0.5, "batch": 64, "dropout": 0.2, "transform": "norm"}
    v = SPACE.validate({"LR": "3", "momentum": -1, "batch": 100.4, "transform": "Norm_64_Flip", "optimizer": "adam",
                        "dropout": "high"}, fill)
    assert v.params == {"lr": 0.5, "momentum": 0.0, "batch": 100, "dropout": 0.2, "transform": "norm_64_flip"}
    assert set(v.clamped) == {"lr", "momentum", "batch"}
    assert v.invalid == ["dropout"] and v.extra == ["optimizer"] and v.missing == []


def test_choice_matches_close_spelling_and_refuses_nonsense():
    dim = SPACE.dim("transform")
    assert dim.validate_value("norm_64flip") == ("norm_64_flip", True)
    with pytest.raises(ValueError):
        dim.validate_value("random crop")
    assert ChoiceDim(name="augment", choices=[False, True]).validate_value("true") == (True, False)


def test_distance_scales_log_dimensions():
    a = {"lr": 1e-4, "momentum": 0.0, "batch": 8, "dropout": 0.0, "transform": "norm"}
    assert SPACE.distance(a, {**a, "lr": 0.5}) == pytest.approx(1.0)
    assert SPACE.distance(a, {**a, "lr": math.sqrt(1e-4 * 0.5)}) == pytest.approx(0.5)
    assert SPACE.distance(a, {**a, "transform": "echo_32"}) == pytest.approx(1.0)


def test_live_space_has_dropout_only_for_models_that_read_it():
    with_dropout = "def supported_hyperparameters():\n    return {'lr', 'momentum', 'dropout'}\n"
    assert "dropout" in live_space(with_dropout).names
    assert "dropout" in live_space("x = prm.get('dropout', 0.1)\n").names
    assert live_space("class Net: pass\n").names == ["lr", "momentum", "batch", "augment"]


# --- the agent's reply -------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, mode", [
    ('{"lr": 0.02, "momentum": 0.9, "batch": 128, "dropout": 0.1, "transform": "norm"}', "json"),
    ('Sure! ```json\n{"lr": 0.02, "momentum": 0.9, "batch": 128, "dropout": 0.1, "transform": "norm"}\n```', "json"),
    ("- **lr**: 0.02\n- momentum = 0.9\n- batch: 128\n- dropout: 0.1\n- transform: norm", "lines"),
])
def test_parse_reply_forms(reply, mode):
    raw, got = parse_reply(reply, SPACE)
    assert got == mode
    v = SPACE.validate(raw, SPACE.sample(random.Random(0)))
    assert v.params == {"lr": 0.02, "momentum": 0.9, "batch": 128, "dropout": 0.1, "transform": "norm"}


def test_unparseable_reply_falls_back_to_a_counted_random_setting():
    llm = FakeListChatModel(responses=["I cannot help with that."])
    params, meta = propose(llm, ARCH, SPACE, [], 10, random.Random(1))
    assert meta.parse_mode == "fallback" and meta.reply == "I cannot help with that."
    assert set(params) == set(SPACE.names)
    assert SPACE.validate(params, params).clamped == []  # inside the space


def test_reply_naming_keys_without_usable_values_is_a_fallback():
    llm = FakeListChatModel(responses=['{"lr": "<number>", "momentum": "<number>", "batch": "<integer>", '
                                       '"dropout": "<number>", "transform": "<one of the names above>"}'])
    _, meta = propose(llm, ARCH, SPACE, [], 10, random.Random(1))
    assert meta.parse_mode == "fallback"


def test_partial_reply_takes_the_rest_from_the_best_trial():
    history = [trial(0, 0.3, lr=0.2), trial(1, 0.6, lr=0.001, batch=32, transform="echo_32")]
    llm = FakeListChatModel(responses=['{"lr": 0.003}'])
    params, meta = propose(llm, ARCH, SPACE, history, 10, random.Random(0))
    assert meta.parse_mode == "json" and sorted(meta.missing) == ["batch", "dropout", "momentum", "transform"]
    assert params == {"lr": 0.003, "momentum": 0.5, "batch": 32, "dropout": 0.2, "transform": "echo_32"}


def test_repeated_setting_is_moved_and_marked():
    history = [trial(0, 0.6)]
    llm = FakeListChatModel(responses=['{"lr": 0.01, "momentum": 0.5, "batch": 64, "dropout": 0.2, "transform": "norm"}'])
    params, meta = propose(llm, ARCH, SPACE, history, 10, random.Random(0))
    assert meta.repeated and not SPACE.same(params, history[0].params)
    assert params["transform"] == "norm" and SPACE.distance(params, history[0].params) < 0.2


def test_near_repeat_is_moved_but_a_real_change_is_kept():
    history = [trial(0, 0.6)]
    near = '{"lr": 0.0101, "momentum": 0.5, "batch": 64, "dropout": 0.2, "transform": "norm"}'
    far = '{"lr": 0.03, "momentum": 0.5, "batch": 64, "dropout": 0.2, "transform": "norm"}'
    _, meta = propose(FakeListChatModel(responses=[near]), ARCH, SPACE, history, 10, random.Random(0))
    assert meta.repeated
    params, meta = propose(FakeListChatModel(responses=[far]), ARCH, SPACE, history, 10, random.Random(0))
    assert not meta.repeated and params["lr"] == 0.03


def test_prompt_shows_space_trials_and_best():
    history = [trial(0, 0.31), trial(1, None, lr=0.4)]
    history[1].status = "nan_loss"
    llm = FakeListChatModel(responses=['{"lr": 0.003}'])
    _, meta = propose(llm, ARCH, SPACE, history, 12, random.Random(0))
    assert "lr: a number from 0.0001 to 0.5 (log scale)" in meta.prompt
    assert "2. lr 0.4," in meta.prompt and "failed (nan_loss)" in meta.prompt
    assert "Best so far: trial 1, accuracy 0.3100" in meta.prompt and "10 trial(s) left" in meta.prompt
    assert '{"lr": 0.00707, "momentum": 0.495, "batch": 64, "dropout": 0.25, "transform": "norm"}' in meta.prompt
    assert "Explore:" in meta.prompt
    _, meta = propose(llm, ARCH, SPACE, [trial(i, 0.3, lr=0.001 * (i + 1)) for i in range(5)], 12, random.Random(0))
    assert "Refine:" in meta.prompt
    render("hpo_agent.system")  # renders without missing values


# --- samplers on real optuna -------------------------------------------------------------------------

def test_samplers_share_one_interface_and_stay_in_the_space():
    replies = ['{"lr": 0.05, "momentum": 0.9, "batch": 64, "dropout": 0.1, "transform": "norm_64_flip"}',
               "no idea", '{"lr": 9, "momentum": 0.8, "batch": 2, "dropout": 0.0, "transform": "echo_32"}']
    llm = FakeListChatModel(responses=replies)
    samplers = [TPE(), Random(), LLMSampler(lambda step: llm, ARCH, 3)]
    for sampler in samplers:
        result = run_study(bowl, SPACE, sampler, 3, seed=0)
        assert len(result.trials) == 3 and result.sampler == sampler.name
        for t in result.trials:
            assert SPACE.validate(t.params, t.params).clamped == []
    llm_trials = result.trials
    assert [t.source for t in llm_trials] == ["llm", "fallback", "llm"]
    assert llm_trials[0].params["lr"] == 0.05 and llm_trials[2].params["lr"] == 0.5  # clamped to the edge
    assert llm_trials[2].params["batch"] == 8 and llm_trials[2].attrs["clamped"] == ["lr", "batch"]
    assert llm_trials[1].attrs["parse_mode"] == "fallback"


def test_tpe_beats_random_on_a_smooth_objective():
    # The real TPESampler must find the top of a smooth bowl better than random at the same budget.
    tpe = [run_study(bowl, SPACE, TPE(), 40, seed=s).best_accuracy for s in range(4)]
    rnd = [run_study(bowl, SPACE, Random(), 40, seed=s).best_accuracy for s in range(4)]
    assert sum(tpe) / 4 > sum(rnd) / 4


def test_study_resumes_from_sqlite_and_refuses_another_sampler(tmp_path):
    storage = sqlite_storage(tmp_path / "study.sqlite")
    calls = []

    def objective(params):
        calls.append(params)
        return bowl(params)

    first = run_study(objective, SPACE, TPE(), 3, storage=storage, seed=0)
    again = run_study(objective, SPACE, TPE(), 4, storage=sqlite_storage(tmp_path / "study.sqlite"), seed=0)
    assert again.resumed == 3 and len(again.trials) == 4 and len(calls) == 4
    assert [t.params for t in again.trials[:3]] == [t.params for t in first.trials]
    with pytest.raises(HpoError, match="sampler 'tpe'"):
        run_study(objective, SPACE, Random(), 8, storage=storage, seed=0)


def test_failed_trial_is_told_as_zero_and_kept():
    def objective(params):
        return Result(accuracy=None, status="nan_loss", note="loss is nan") if params["lr"] > 0.02 else bowl(params)

    result = run_study(objective, SPACE, Random(), 12, seed=3)
    failed = [t for t in result.trials if t.accuracy is None]
    assert failed and all(t.status == "nan_loss" and t.value == 0.0 for t in failed)
    assert result.best.accuracy is not None


# --- the tabular oracle ------------------------------------------------------------------------------

def fixture_series():
    runs = [
        RecordedRun(0.001, 0.9, 32, 0.1, "norm_32", 0.40),
        RecordedRun(0.001, 0.9, 32, 0.1, "norm_32", 0.44),   # the same setting again: one point at 0.42
        RecordedRun(0.1, 0.9, 32, 0.1, "norm_32", 0.70),
        RecordedRun(0.1, 0.1, 256, 0.4, "echo_128_flip", 0.20),
        RecordedRun(0.01, 0.5, 64, 0.2, "norm_64_flip", 0.55),
    ]
    return build_series("Net", "cifar-10", 1, runs, family="Net", kind="conv", layers={"Conv2d": 3})


def test_series_space_and_points_from_records():
    s = fixture_series()
    assert s.space.names == ["lr", "momentum", "batch", "dropout", "transform"]
    lr = s.space.dim("lr")
    assert (lr.low, lr.high, lr.log) == (0.001, 0.1, True)
    assert len(s.points) == 4 and s.best == 0.70
    assert [p.accuracy for p in s.points if p.runs == 2] == [pytest.approx(0.42)]
    assert "Conv2d x3" in s.describe()


def test_oracle_answers_with_the_nearest_recorded_run():
    s = fixture_series()
    oracle = TabularOracle(s)
    near_best = {"lr": 0.08, "momentum": 0.85, "batch": 40, "dropout": 0.12, "transform": "norm_32"}
    assert oracle(near_best).accuracy == pytest.approx(0.70)
    # lr is compared in log space: 0.003 is nearer 0.001 than 0.01 on a linear axis would say
    assert oracle({**near_best, "lr": 0.003}).accuracy == pytest.approx(0.42)
    far = {"lr": 0.1, "momentum": 0.1, "batch": 256, "dropout": 0.4, "transform": "echo_128_flip"}
    result = oracle(far)
    assert result.accuracy == pytest.approx(0.20) and "distance 0.000" in result.note


def test_transform_distance_by_parts():
    assert transform_parts("norm_256_flip") == ("norm", 256, True)
    assert transform_parts("echo") == ("echo", 32, False)
    oracle = TabularOracle(fixture_series())
    base = {"lr": 0.01, "momentum": 0.5, "batch": 64, "dropout": 0.2}
    d_side = oracle.distance({**base, "transform": "norm_64_flip"}, {**base, "transform": "norm_128_flip"})
    d_kind = oracle.distance({**base, "transform": "norm_64_flip"}, {**base, "transform": "echo_64_flip"})
    assert 0 < d_side < d_kind == pytest.approx(1 / 3)


def test_tabular_search_regret_is_never_negative():
    s = fixture_series()
    for sampler in (TPE(), Random()):
        result = run_study(TabularOracle(s), s.space, sampler, 5, seed=1)
        assert 0.0 <= s.best - result.best_accuracy <= s.best


# --- the command ---------------------------------------------------------------------------------------

def test_cli_hpo_is_a_plugin_with_clear_errors(tmp_path, capsys):
    from nasgraph.cli import build_parser, main

    args = build_parser().parse_args(["hpo", "m.py", "--dataset", "digits", "--trials", "3", "--sampler", "tpe"])
    assert (args.cmd, args.trials, args.sampler, args.dataset) == ("hpo", 3, "tpe", "digits")
    assert main(["--home", str(tmp_path), "hpo", str(tmp_path / "missing.py"), "--sampler", "tpe"]) == 1
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    assert main(["--home", str(tmp_path), "hpo", str(bad), "--sampler", "random"]) == 1
    assert "cannot run (syntax)" in capsys.readouterr().err
