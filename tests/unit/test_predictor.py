"""The accuracy predictor on real code snippets and a tiny synthetic LEMUR index (no real corpus)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nasgraph.tools.lemur import lemur_dir
from nasgraph.tools.predictor import (
    PredictorError,
    RunSettings,
    code_features,
    evaluate,
    load,
    load_table,
    save,
    train,
)
from nasgraph.tools.predictor import dataset as predictor_dataset
from nasgraph.tools.predictor.dataset import CACHE, COLUMNS, transform_parts
from nasgraph.tools.predictor.features import CATEGORICAL, GROUPS, NUMERIC
from nasgraph.tools.predictor.model import group_folds, scores
from tests.lemur_wheel import TRAIN, indexed
from tests.unit.test_cli import assert_clean_error, nasgraph

ALEXNET = """import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum', 'dropout'}


class Net(nn.Module):
    def train_setup(self, prm):
        self.criteria = (nn.CrossEntropyLoss(label_smoothing=0.1),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'], weight_decay=5e-4)

    def learn(self, train_data):
        for inputs, labels in train_data:
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3)
            self.optimizer.step()

    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        width = 96
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[1], 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(192, width * 2, 3, padding=1), nn.BatchNorm2d(width * 2), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((6, 6)))
        self.classifier = nn.Sequential(nn.Dropout(p=prm['dropout']), nn.Linear(256 * 6 * 6, 4096),
                                        nn.Dropout(0.3), nn.Linear(4096, out_shape[0]))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))
"""

RESIDUAL = """import torch
from torch import nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.conv2 = nn.Conv2d(c, c, 1)
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        out = F.relu(self.conv1(x))
        out = self.conv2(out) + x
        out += x
        return torch.cat([out, x], dim=1)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(32) for _ in range(8)])
        self.attn = nn.MultiheadAttention(32, 4)

    def train_setup(self, prm):
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=prm['lr'])
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, 10)
"""


# -- features ----------------------------------------------------------------------------------------
def test_features_of_an_alexnet() -> None:
    f = code_features(ALEXNET)
    n = f.numeric
    assert set(n) == set(NUMERIC)
    assert {c for cols in GROUPS.values() for c in cols} == set(NUMERIC) | set(CATEGORICAL)
    assert n["n_conv"] == 3 and n["n_linear"] == 2 and n["n_batchnorm"] == 1 and n["n_dropout"] == 2
    assert n["n_maxpool"] == 1 and n["n_adaptive_pool"] == 1 and n["n_act_relu"] == 3
    assert n["conv_out_max"] == 192  # width * 2, with `width = 96` bound earlier in __init__
    assert n["conv_kernel_max"] == 11 and n["first_conv_kernel"] == 11 and n["first_conv_stride"] == 4
    assert n["downsample_log2"] == 3  # the first conv's stride 4 and the pool's stride 2
    assert n["linear_in_max"] == 256 * 6 * 6 and n["linear_out_max"] == 4096
    assert n["dropout_p_max"] == 0.3  # the other Dropout's p is a hyperparameter, not stated
    assert n["adaptive_out_max"] == 6
    assert n["params_log10"] > math.log10(256 * 6 * 6 * 4096)
    assert n["clip_grad"] == 3 and n["label_smoothing"] == 0.1 and n["weight_decay"] == 5e-4
    assert n["n_hyperparameters"] == 3 and n["uses_dropout_hp"] == 1
    assert n["fwd_adds"] == 0 and n["fwd_cats"] == 0
    assert f.categorical == {"kind": "conv", "optimizer": "SGD"}
    assert f.parse_error is None


def test_features_of_a_residual_block() -> None:
    f = code_features(RESIDUAL)
    n = f.numeric
    assert n["fwd_adds"] == 2  # `conv2(out) + x` and `out += x`
    assert n["fwd_cats"] == 1 and n["fwd_functional"] == 1
    assert n["conv_grouped"] == 1 and n["n_other_norm"] == 1 and n["n_attention"] == 1
    assert n["range_max"] == 8 and n["n_comprehensions"] == 1 and n["n_classes"] == 2
    assert n["scheduler"] == 1 and n["n_hyperparameters"] == 0
    assert n["conv_literal_share"] == 0  # `c` is a parameter: its value is not in the source
    assert f.categorical == {"kind": "conv+attention", "optimizer": "AdamW"}


def test_a_file_that_does_not_parse_gets_zeros_and_its_error() -> None:
    f = code_features("import torch\ndef broken(:\n")
    assert f.parse_error and "SyntaxError" in f.parse_error
    assert f.numeric["n_lines"] == 2 and f.numeric["n_conv"] == 0 and set(f.numeric) == set(NUMERIC)


def test_features_never_run_the_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code_features(f"open({str(marker)!r}, 'w').write('x')\nimport os\nos.system('touch {marker}')\n")
    assert not marker.exists()


@pytest.mark.parametrize("name, parts", [
    ("norm_128_flip", ("norm", 128.0, 1.0)),
    ("echo_32", ("echo", 32.0, 0.0)),
    ("norm", ("norm", math.nan, 0.0)),
    ("bf-v1-RandomHorizontalFlip_Pad_5", ("bf-v1", math.nan, 1.0)),
    (None, ("none", math.nan, math.nan)),
])
def test_transform_parts(name: str | None, parts: tuple) -> None:
    got = transform_parts(name)
    assert got[0] == parts[0]
    assert all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got[1:], parts[1:]))


# -- a synthetic LEMUR index -------------------------------------------------------------------------
FAMILIES = ("alpha", "beta", "gamma", "delta", "eps", "zeta")
DATASETS = ("cifar-10", "mnist")


def model_code(n_conv: int, width: int) -> str:
    convs = ", ".join(f"nn.Conv2d({width}, {width}, 3, padding=1), nn.ReLU()" for _ in range(n_conv))
    return (f"import torch\nimport torch.nn as nn\n\n\ndef supported_hyperparameters():\n"
            f"    return {{'lr', 'momentum'}}\n\n\nclass Net(nn.Module):\n"
            f"    def __init__(self, in_shape, out_shape, prm, device):\n        super().__init__()\n"
            f"        self.stem = nn.Conv2d(in_shape[1], {width}, 3)\n"
            f"        self.body = nn.Sequential({convs})\n        self.fc = nn.Linear({width}, out_shape[0])\n")


def synthetic_records(*, models_per_family: int = 6, seed: int = 0) -> tuple[dict[str, object], dict[str, str]]:
    """LEMUR stat files and model files whose accuracies depend on a model's conv count (and, a little, on lr)."""
    rng = np.random.default_rng(seed)
    stats: dict[str, object] = {}
    models: dict[str, str] = {}
    for fi, fam in enumerate(FAMILIES):
        for i in range(models_per_family):
            name = f"{fam}-{i}"
            n_conv = 1 + (fi + 2 * i) % 6  # every family spans several conv counts
            models[name] = model_code(n_conv, 16 * (1 + i % 3))
            for dataset in DATASETS:
                base = 0.2 + 0.12 * n_conv + (0.05 if dataset == "mnist" else 0.0)
                for epoch in (1, 2):
                    runs = []
                    for r in range(4):
                        lr = float(10 ** rng.uniform(-3, -1))
                        acc = base + 0.03 * epoch + 0.02 * math.log10(lr) + rng.normal(0, 0.01)
                        runs.append({"accuracy": float(np.clip(acc, 0, 1)), "lr": lr, "momentum": 0.9,
                                     "batch": 32, "transform": "norm_32", "uid": f"{name}{r}",
                                     "duration": 1_000_000_000})
                    stats[f"{TRAIN}/img-classification_{dataset}_acc_{name}/{epoch}.json"] = runs
    # Another task's records are left out of the table.
    stats[f"{TRAIN}/txt-generation_wikitext_ppl_alpha-0/1.json"] = [{"accuracy": 0.5, "lr": 0.01}]
    return stats, models


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    indexed(home, *synthetic_records())
    return home


@pytest.fixture(scope="module")
def table(home: Path):
    return load_table(lemur_dir(home))


def test_table_holds_image_classification_runs(table) -> None:
    assert len(table) == len(FAMILIES) * 6 * len(DATASETS) * 2 * 4
    assert table.X.shape == (len(table), len(COLUMNS))
    assert set(table.dataset) == set(DATASETS) and set(table.epoch) == {1, 2}
    assert set(table.family) == set(FAMILIES)
    assert ((table.y >= 0) & (table.y <= 1)).all()


def test_table_is_cached_and_rebuilt_for_another_index(home: Path, table, monkeypatch: pytest.MonkeyPatch) -> None:
    root = lemur_dir(home)
    assert (root / CACHE).is_file()

    def no_build(*args, **kwargs):
        raise AssertionError("the cached table should have been used")

    monkeypatch.setattr(predictor_dataset, "build_table", no_build)
    again = load_table(root)
    np.testing.assert_array_equal(again.X, table.X)
    monkeypatch.setattr(predictor_dataset, "source_id", lambda root: "another index")
    with pytest.raises(AssertionError, match="cached table"):
        load_table(root)


@pytest.mark.parametrize("split", ["model", "family"])
def test_group_split_never_puts_a_group_on_both_sides(table, split: str) -> None:
    groups = table.model if split == "model" else table.family
    folds = group_folds(groups, 5)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(table)))  # every row is held out exactly once
    for fit_rows, test in folds:
        assert not set(groups[fit_rows]) & set(groups[test])
    if split == "family":  # and a family's models never straddle a fold either
        for fit_rows, test in folds:
            assert not set(table.model[fit_rows]) & set(table.model[test])


def test_code_features_beat_the_baselines_on_held_out_models(table) -> None:
    ev = evaluate(table, splits=("model",), folds=4)
    s = ev.splits[0].scores
    assert s["code"].rmse < 0.5 * s["mean"].rmse, s
    assert s["code"].rmse < 0.5 * s["hp"].rmse, s  # the accuracy is in the code, not in the settings
    assert s["code"].pearson > 0.9
    assert set(ev.splits[0].per_dataset) == set(DATASETS)


def test_scores() -> None:
    y = np.array([0.1, 0.5, 0.9, 0.9])
    s = scores(y + 0.1, y, np.array(["a", "b", "c", "c"]))
    assert s.rmse == pytest.approx(0.1) and s.mae == pytest.approx(0.1) and s.model_rmse == pytest.approx(0.1)
    assert s.pearson == pytest.approx(1.0) and s.rows == 4
    assert math.isnan(scores(np.full(4, 0.5), y).pearson)  # a constant prediction has no correlation


def test_train_save_load_predict(home: Path, table) -> None:
    predictor = train(table)
    save(predictor, home)
    loaded = load(home)
    assert loaded is not None and loaded.source == table.source
    deep, shallow = model_code(6, 32), model_code(1, 32)
    run = RunSettings("CIFAR10", epoch=2, lr=0.01)  # dataset spelling is forgiving
    high, low = loaded.predict(deep, run), loaded.predict(shallow, run)
    assert high.accuracy > low.accuracy + 0.3
    assert high.settings.dataset == "cifar-10" and high.settings.momentum == pytest.approx(0.9)
    assert high.defaults == ("momentum", "batch", "transform")  # no run states a dropout: it stays unknown
    assert high.settings.dropout is None
    assert high.settings.transform == "norm_32"
    with pytest.raises(PredictorError, match="cifar-10"):
        loaded.predict(deep, RunSettings("imagenet-22k", epoch=1))
    broken = loaded.predict("def f(:\n", run)
    assert broken.parse_error and 0 <= broken.accuracy <= 1


def test_a_predictor_of_other_features_is_not_loaded(home: Path, table) -> None:
    predictor = train(table)
    predictor.feature_version = -1
    save(predictor, home)
    assert load(home) is None


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_without_an_index_says_to_pull(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(ALEXNET)
    assert_clean_error(nasgraph(tmp_path, "predict", str(f), "--dataset", "cifar-10"), "nasgraph lemur pull")
    assert_clean_error(nasgraph(tmp_path, "predict", "--train"), "nasgraph lemur pull")


def test_cli_usage_errors(tmp_path: Path) -> None:
    assert_clean_error(nasgraph(tmp_path, "predict"), "--train")
    assert_clean_error(nasgraph(tmp_path, "predict", str(tmp_path / "nope.py"), "--dataset", "mnist"), "no such file")
    f = tmp_path / "m.py"
    f.write_text(ALEXNET)
    assert_clean_error(nasgraph(tmp_path, "predict", str(f)), "--dataset")


def test_cli_fits_once_then_predicts(home: Path, tmp_path: Path) -> None:
    (home / "predictor" / "model.joblib").unlink(missing_ok=True)
    f = tmp_path / "deep.py"
    f.write_text(model_code(6, 32))
    p = nasgraph(home, "predict", str(f), "--dataset", "cifar-10", "--epoch", "2", "--lr", "0.01", "--json")
    assert p.returncode == 0, p.stderr
    assert "fitting one" in p.stderr
    out = json.loads(p.stdout)
    assert out["accuracy"] > 0.8 and out["settings"]["dataset"] == "cifar-10" and out["settings"]["epoch"] == 2
    assert (home / "predictor" / "model.joblib").is_file()
    again = nasgraph(home, "predict", str(f), "--dataset", "mnist")
    assert again.returncode == 0, again.stderr
    assert "no saved predictor" not in again.stdout + again.stderr
    assert "predicted" in again.stdout and "on mnist" in again.stdout


def test_cli_train_prints_held_out_scores(home: Path) -> None:
    p = nasgraph(home, "predict", "--train", "--json")
    assert p.returncode == 0, p.stderr
    ev = json.loads(p.stdout)
    assert [s["split"] for s in ev["splits"]] == ["model", "family"]
    assert set(ev["splits"][0]["scores"]) == {"mean", "hp", "code"}
