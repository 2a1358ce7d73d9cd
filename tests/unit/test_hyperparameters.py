"""Every key a model declares reaches it: the fill order of hyperparameters.py, without a child process."""
from __future__ import annotations

import copy
import json

from nasgraph.tools.evaluator.hyperparameters import FALLBACK, TABLE, Hyperparameters, complete, declared

RECIPE = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.0}  # harness.DEFAULTS
RUN = {"batch": 64, "batch_size": 64, "epoch": 1, "num_classes": 10}


def fill(fn, prm=None):
    names, own, problem = declared(fn)
    assert problem is None
    return complete({**RECIPE, **(prm or {})}, names, own, RUN)


def test_a_declared_set_gets_the_table():
    prm = fill(lambda: {"lr", "momentum", "dropout"})
    assert prm["dropout"] == TABLE["dropout"] and prm["lr"] == 0.05
    assert prm.filled == {"dropout": {"value": TABLE["dropout"], "source": "table"}}


def test_a_declared_list_works_like_a_set():
    prm = fill(lambda: ["lr", "stochastic_depth_prob", "norm_eps"])
    assert (prm["stochastic_depth_prob"], prm["norm_eps"]) == (TABLE["stochastic_depth_prob"], TABLE["norm_eps"])


def test_a_dict_supplies_its_own_defaults_but_not_the_recipe():
    # LEMUR's rl-init family: {'lr': 0.001, 'momentum': 0.9, 'batch': 64, 'transform': None, 'epoch': 10}
    prm = fill(lambda: {"lr": 0.001, "momentum": 0.9, "batch": 64, "transform": None, "epoch": 10, "width": 4})
    assert prm["width"] == 4 and prm.filled["width"]["source"] == "model"
    assert prm["transform"] is None and prm.filled["transform"]["source"] == "model"
    assert prm["lr"] == 0.05 and "lr" not in prm.filled          # every candidate trains under one recipe
    assert prm["batch"] == 64 and prm.filled["batch"]["source"] == "run"   # the batch really used
    assert prm["epoch"] == 1 and prm.filled["epoch"]["source"] == "run"


def test_the_request_wins():
    prm = fill(lambda: {"lr": 0.3, "dropout": 0.7}, {"dropout": 0.1, "lr": 0.2})
    assert prm["dropout"] == 0.1 and prm["lr"] == 0.2 and prm.filled == {}


def test_an_unknown_key_gets_the_fallback():
    prm = fill(lambda: {"lr", "random_sigma"})
    assert prm["random_sigma"] == FALLBACK == 0.5
    assert prm.filled["random_sigma"]["source"] == "fallback"


def test_a_key_read_but_not_declared_is_filled_on_read_and_recorded():
    # 171 torch-only LEMUR files read prm['dropout'] (or 'batch', 'transform') without declaring it
    prm = fill(lambda: {"lr", "momentum"})
    assert "dropout" not in prm and prm.get("dropout", 0.3) == 0.3  # a model that checks keeps its default
    assert prm["dropout"] == TABLE["dropout"] and prm["batch"] == 64
    assert prm.filled["dropout"] == {"value": TABLE["dropout"], "source": "table", "undeclared": True}
    assert prm.filled["batch"]["source"] == "run"


def test_copies_record_into_the_same_place_and_serialise_as_plain_dicts():
    prm = fill(None)
    mine = prm.copy()
    assert isinstance(mine, Hyperparameters) and mine["norm_std"] == TABLE["norm_std"]
    assert "norm_std" in prm.filled and "norm_std" not in prm  # recorded, but the original is not changed
    assert json.loads(json.dumps(mine))["norm_std"] == TABLE["norm_std"]
    assert type(copy.deepcopy(mine)) is dict


def test_an_unusable_declaration_is_reported_not_raised():
    def boom():
        raise RuntimeError("no")
    assert declared(boom)[:2] == ([], {}) and "RuntimeError" in declared(boom)[2]
    assert "not names" in declared(lambda: 3)[2]
    assert "strings" in declared(lambda: {1, 2})[2]
    assert declared(None) == ([], {}, None)


def test_every_table_value_is_json():
    json.dumps(TABLE)
