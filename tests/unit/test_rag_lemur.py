"""LEMUR models as NN-RAG targets (`lemur_targets`, `nasgraph index build --lemur K`) on a tiny fake corpus.

The sandboxed validator and the Chroma index are stood in for: what is checked here is which models
become targets, what they carry, and how the build reports them; tests/integration/test_rag_index.py
builds real LEMUR blocks.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasgraph.cli import main
from nasgraph.config import load_config
from nasgraph.rag_index import build as build_mod
from nasgraph.rag_index import index as index_mod
from nasgraph.rag_index.build import build, default_targets, lemur_targets
from nasgraph.rag_index.extract import ClosureError, close
from nasgraph.rag_index.validate import Validation
from nasgraph.tools import lemur
from nasgraph.tools.lemur import LemurNotPulled, UnknownLemurName, lemur_dir
from tests.unit.test_lemur import ALEXNET, BROKEN, BROKEN_NAME, GA_MUT, TRAIN, _run, write_wheel

BEST = """import torch
import torch.nn as nn


class SE(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3)))).unsqueeze(-1).unsqueeze(-1)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 8, 3)
        self.se = SE(8)
        self.fc = nn.Linear(8, out_shape[0])
"""
MODELS = {"AlexNet": ALEXNET, "ga-mut-7": GA_MUT, BROKEN_NAME: BROKEN, "Best": BEST}
STATS: dict[str, object] = {
    f"{TRAIN}/img-classification_cifar-10_acc_Best/1.json": [_run(0.6)],
    f"{TRAIN}/img-classification_cifar-10_acc_Best/2.json": [_run(0.8), _run(0.55)],
    f"{TRAIN}/img-classification_cifar-10_acc_{BROKEN_NAME}/1.json": [_run(0.75)],  # ranked, but does not parse
    f"{TRAIN}/img-classification_cifar-10_acc_AlexNet/1.json": [_run(0.7)],
    f"{TRAIN}/img-classification_mnist_acc_AlexNet/1.json": [_run(0.99)],  # another dataset: not its rank
    f"{TRAIN}/img-classification_cifar-10_acc_ga-mut-7/1.json": [_run(0.4)],
    # Another task on the same dataset: neither ranks the model nor makes it appear twice.
    f"{TRAIN}/img-segmentation_cifar-10_iou_ga-mut-7/1.json": [_run(0.95)],
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home whose LEMUR index holds MODELS and STATS; no torchvision scan in the builds below."""
    wheel = tmp_path / "nn_dataset-9.9.9-py3-none-any.whl"
    source = write_wheel(wheel, STATS, models=MODELS)
    home = tmp_path / "home"
    lemur.pull(lemur_dir(home), wheel=wheel, source=source)
    monkeypatch.setattr(build_mod, "LIBRARY_PACKAGES", {})
    monkeypatch.setenv("NASGRAPH_HOME", str(home))
    return home


class FakeIndex:
    """The BlockIndex calls a build makes, in memory (no embedding model)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path, self.entries = Path(path), {}

    def metadata(self) -> dict[str, dict]:
        return {i: e["meta"] for i, e in self.entries.items()}

    def upsert(self, ids, codes, descriptions, metadatas) -> None:
        for i, code, meta in zip(ids, codes, metadatas):
            self.entries[i] = {"code": code, "meta": meta}

    def delete(self, ids) -> None:
        for i in ids:
            self.entries.pop(i, None)


class FakeValidator:
    """Every block it is given executes (the real sandbox is tests/unit/test_rag_validate.py's)."""

    def __init__(self, **_kw) -> None:
        pass

    def __enter__(self) -> FakeValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def validate(self, jobs, on_result=None) -> dict[str, Validation]:
        return {j.id: Validation(executed=True, instantiable=True, presented_ok=True) for j in jobs}


def _summary(targets) -> list[tuple]:
    return [(t.qualname, t.source, t.kind, t.hint["lemur_model"], t.hint["accuracy"], t.hint["dataset"])
            for t in targets]


def test_targets_are_the_best_models_by_recorded_accuracy_one_per_model(home: Path):
    root = lemur_dir(home)
    assert _summary(lemur_targets(root, "CIFAR10", 3)) == [  # the dataset's spelling is forgiving
        ("lemur.Best.SE", "lemur", "block", "Best", 0.8, "cifar-10"),  # its best epoch, not its first
        ("lemur.Best.Net", "lemur", "model", "Best", 0.8, "cifar-10"),
        (f"lemur.{BROKEN_NAME}.Net", "lemur", "model", BROKEN_NAME, 0.75, "cifar-10"),
        ("lemur.AlexNet.Net", "lemur", "model", "AlexNet", 0.7, "cifar-10"),
    ]
    every = lemur_targets(root, "cifar-10", 10)
    assert [t.hint["lemur_model"] for t in every if t.name == "Net"] == ["Best", BROKEN_NAME, "AlexNet", "ga-mut-7"]
    assert every[-1].hint["accuracy"] == 0.4  # its 0.95 is a segmentation score
    assert every[0].text == BEST  # the file as LEMUR ships it, closed like a stored design
    assert [t.hint["lemur_model"] for t in lemur_targets(root, "mnist", 5)] == ["AlexNet"]
    with pytest.raises(UnknownLemurName, match="cifar-10"):
        lemur_targets(root, "imagenet", 3)


def test_a_model_whose_code_does_not_parse_is_reported_not_dropped(home: Path):
    broken = next(t for t in lemur_targets(lemur_dir(home), "cifar-10", 3) if t.hint["lemur_model"] == BROKEN_NAME)
    with pytest.raises(ClosureError, match="cannot parse") as err:
        close(broken)
    assert err.value.kind == "extract"


def test_build_reports_the_unparsable_model_and_tags_blocks_with_their_origin(home: Path, monkeypatch):
    monkeypatch.setattr(build_mod, "Validator", FakeValidator)
    index = FakeIndex(home / "chroma")
    report = build(index, lemur_targets(lemur_dir(home), "cifar-10", 3))
    assert (report.targets, report.blocks, report.executable) == (4, 3, 3)
    assert report.failures == [{"id": f"lemur.{BROKEN_NAME}.Net", "kind": "extract_extract",
                                "error": report.failures[0]["error"]}]
    assert "cannot parse" in report.failures[0]["error"]
    meta = index.metadata()["lemur.Best.SE"]
    assert (meta["source"], meta["lemur_model"], meta["accuracy"], meta["dataset"]) == ("lemur", "Best", 0.8, "cifar-10")
    assert "arch_id" not in meta and "class SE(nn.Module)" in index.entries["lemur.Best.SE"]["code"]


def test_without_the_flag_lemur_is_left_out(home: Path):
    cfg = load_config(home=home)
    assert default_targets(cfg, with_store=False) == ([], [])
    assert [t.qualname for t in default_targets(cfg, with_store=False, lemur_k=1)[0]] == ["lemur.Best.SE",
                                                                                          "lemur.Best.Net"]


def test_cli_build_with_lemur_k(home: Path, monkeypatch, capsys):
    monkeypatch.setattr(build_mod, "Validator", FakeValidator)
    monkeypatch.setattr(index_mod, "BlockIndex", FakeIndex)
    assert main(["--home", str(home), "index", "build", "--lemur", "2", "--no-store", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["targets"], out["blocks"], out["executable"]) == (3, 2, 2)
    assert [f["id"] for f in out["failures"]] == [f"lemur.{BROKEN_NAME}.Net"]
    assert main(["--home", str(home), "index", "build", "--lemur", "1", "--lemur-dataset", "mnist",
                 "--no-store", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["targets"] == 1  # AlexNet's Net


@pytest.mark.parametrize(("argv", "words"), [
    (["--lemur", "-1"], ["--lemur"]),
    (["--lemur-dataset", "svhn"], ["--lemur K"]),
    (["--lemur", "2", "--lemur-dataset", "imagenet"], ["imagenet", "cifar-10"]),
])
def test_cli_refuses_bad_lemur_requests_in_one_line(home: Path, capsys, argv, words):
    assert main(["--home", str(home), "index", "build", "--no-store", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(w in err for w in words), err


def test_cli_without_a_lemur_index_says_to_pull_before_scanning_libraries(tmp_path: Path, monkeypatch, capsys):
    def scan(*_a: object) -> None:
        raise AssertionError("the library scan ran before the LEMUR index was checked")

    monkeypatch.setattr(build_mod, "library_targets", scan)
    with pytest.raises(LemurNotPulled):
        lemur_targets(lemur_dir(tmp_path), "cifar-10", 3)
    assert main(["--home", str(tmp_path), "index", "build", "--lemur", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert "nasgraph lemur pull" in err and "\n" not in err, err
    assert not (tmp_path / "index").exists()  # nothing was created
