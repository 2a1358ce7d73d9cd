"""The HPO prior learned from LEMUR's records: a portfolio of other models' best settings, scored on
other models, never the tuned model's own records; the agent told it; TPE with it tried first."""
from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from nasgraph.agents.hpo_agent import Architecture, LLMSampler
from nasgraph.tools.hpo import TPE, FloatDim, IntDim, Result, SearchSpace, run_study
from nasgraph.tools.hpo.live import live_space
from nasgraph.tools.hpo.prior import PriorFirst, transfer_prior
from tests.lemur_wheel import TRAIN, indexed

CODE = ("import torch\nimport torch.nn as nn\n\n\ndef supported_hyperparameters():\n    return {'lr', 'momentum'}\n\n\n"
        "class Net(nn.Module):\n    def __init__(self, in_shape, out_shape, prm, device):\n        super().__init__()\n"
        "        self.fc = nn.Linear(4, out_shape[0])\n")
GOOD_LR = 0.03  # every model but "odd" does best near this lr
ODD_LR = 3e-4   # "odd" alone does best here


def _acc(lr: float, best_lr: float) -> float:
    return round(max(0.0, 0.9 - 0.25 * abs(math.log10(lr / best_lr))), 4)


def _records() -> tuple[dict[str, object], dict[str, str]]:
    """LEMUR stat files and model files: eight models best near GOOD_LR, one ("odd") best near ODD_LR."""
    rng = random.Random(0)
    stats: dict[str, object] = {}
    names = [f"net-{i}" for i in range(8)] + ["odd"]
    for name in names:
        best_lr = ODD_LR if name == "odd" else GOOD_LR
        runs = []
        for r in range(14):
            lr = 10 ** rng.uniform(-4, -0.5)
            runs.append({"accuracy": _acc(lr, best_lr), "lr": lr, "momentum": rng.uniform(0.5, 0.99),
                         "batch": rng.choice([16, 32, 64, 128]), "transform": rng.choice(["norm_32", "norm_64_flip"]),
                         "uid": f"{name}{r}", "duration": 10**9})
        runs.append({"accuracy": 0.95 if name == "odd" else 0.91, "lr": best_lr, "momentum": 0.9, "batch": 32,
                     "transform": "norm_32", "uid": f"{name}-best", "duration": 10**9})
        stats[f"{TRAIN}/img-classification_mnist_acc_{name}/1.json"] = runs
    return stats, dict.fromkeys(names, CODE)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return indexed(tmp_path_factory.mktemp("home"), *_records())


def test_portfolio_is_other_models_best_settings_scored_on_other_models(root: Path) -> None:
    prior = transfer_prior(root, "mnist", exclude="odd", k=3)
    assert prior is not None and prior.dataset == "mnist" and prior.judges == 8
    assert len(prior.settings) == 3
    assert all(s.model != "odd" for s in prior.settings)  # the tuned model's own records never inform it
    top = prior.settings[0]
    assert top.params["lr"] == pytest.approx(GOOD_LR) and top.score > 0.8
    assert [s.score for s in prior.settings] == sorted((s.score for s in prior.settings), reverse=True)
    every = transfer_prior(root, "mnist", exclude="net-3", k=50)
    assert {s.model for s in every.settings} == {f"net-{i}" for i in range(8) if i != 3} | {"odd"}


def test_a_model_whose_best_is_odd_is_scored_low_by_the_others(root: Path) -> None:
    prior = transfer_prior(root, "mnist", exclude="net-0", k=9, candidates=9)
    odd = next(s for s in prior.settings if s.model == "odd")
    assert odd.params["lr"] == pytest.approx(ODD_LR)
    shared = next(s for s in prior.settings if s.params["lr"] == pytest.approx(GOOD_LR))
    assert prior.settings[0] == shared and odd.score < shared.score - 0.3


def test_stand_in_datasets_and_missing_records(root: Path, tmp_path: Path) -> None:
    assert transfer_prior(root, "fashion-mnist").dataset == "mnist"  # small grey 10-class images
    assert transfer_prior(root, "MNIST").dataset == "mnist"
    assert transfer_prior(root, "cifar10") is None  # not in this index
    assert transfer_prior(tmp_path / "no-lemur", "mnist") is None  # not pulled: no prior, no error


def test_portfolio_fits_another_space(root: Path) -> None:
    prior = transfer_prior(root, "fashion-mnist", exclude="odd")
    space = live_space(CODE)  # lr 1e-3..0.5, momentum, batch 32..512, augment
    fill = space.sample(random.Random(0))
    for params in prior.in_space(space, fill):
        assert set(params) == set(space.names)
        assert 32 <= params["batch"] <= 512 and 1e-3 <= params["lr"] <= 0.5
        assert params["augment"] in (False, True)
    # The prompt shows what LEMUR recorded, never a value the fill supplied: these runs have no dropout.
    with_dropout = SearchSpace(dims=[*space.dims, FloatDim(name="dropout", low=0.0, high=0.5)])
    told = prior.describe(with_dropout, with_dropout.sample(random.Random(0)))
    assert "lr " in told and "batch " in told and "augment " in told and "dropout" not in told


SPACE = SearchSpace(dims=[FloatDim(name="lr", low=1e-4, high=0.3, log=True), IntDim(name="batch", low=16, high=128, log=True)])


def _objective(params) -> Result:
    return Result(accuracy=_acc(params["lr"], GOOD_LR))


def test_tpe_with_the_prior_tries_the_portfolio_first_then_tpe(root: Path) -> None:
    prior = transfer_prior(root, "mnist", exclude="odd", k=2)
    res = run_study(_objective, SPACE, PriorFirst(TPE(), prior), 6, name="p", seed=0)
    assert [t.source for t in res.trials[:2]] == ["prior", "prior"]
    assert res.trials[0].params["lr"] == pytest.approx(GOOD_LR)
    assert all(t.source == "tpe+prior" for t in res.trials[2:])  # optuna's own trials carry the sampler's name
    assert res.best_accuracy == pytest.approx(0.9, abs=1e-3)


def test_agent_is_told_the_prior(root: Path) -> None:
    prior = transfer_prior(root, "mnist", exclude="odd", k=2)
    seen: list[str] = []

    class Spy(FakeListChatModel):
        def _call(self, messages, *a, **kw):  # type: ignore[override]
            seen.append(messages[-1].content)
            return super()._call(messages, *a, **kw)

    llm = Spy(responses=['{"lr": 0.02, "batch": 32}'] * 3)
    arch = Architecture(name="net", dataset="mnist")
    told = LLMSampler(lambda step: llm, arch, 3, prior)
    assert told.name == "llm+prior"
    run_study(_objective, SPACE, told, 1, name="a", seed=0)
    assert "Settings that did best for other models on mnist" in seen[-1] and "lr 0.03" in seen[-1]
    plain = LLMSampler(lambda step: llm, arch, 3)
    run_study(_objective, SPACE, plain, 1, name="b", seed=0)
    assert plain.name == "llm" and "other models" not in seen[-1]


def test_cli_prior_without_lemur_records_is_a_clear_error(tmp_path: Path, capsys) -> None:
    from nasgraph.cli import build_parser, main

    defaults = build_parser().parse_args(["hpo", "m.py"])
    assert (defaults.sampler, defaults.prior) == ("tpe", False)  # the sampler that won the benchmarks, no LLM needed

    model = tmp_path / "m.py"
    model.write_text(CODE)
    assert main(["--home", str(tmp_path / "home"), "hpo", str(model), "--dataset", "digits", "--sampler", "tpe",
                 "--prior"]) == 1
    assert "--prior: no LEMUR records for digits" in capsys.readouterr().err
