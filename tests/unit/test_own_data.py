"""A user's own data: image folders and .npz files as datasets, their cache, and every bad input's message."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasgraph.cli import main
from nasgraph.config import LoopConfig
from nasgraph.dataset_ref import BadDataset, canonical, parse
from nasgraph.tools.evaluator import EvalRequest, datasets, own_data
from nasgraph.tools.evaluator.datasets import load_dataset


def _images(root: Path, split: str, cls: str, n: int, *, mode: str = "RGB", size=(40, 30), seed: int = 0) -> None:
    d = root / split / cls
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(d / f"{cls}{i}.png")


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "pets"
    for k, cls in enumerate(("cat", "dog", "eel")):
        _images(root, "train", cls, 6, seed=k)
        _images(root, "test", cls, 2, seed=10 + k)
    return root


def test_folder_becomes_tensors_with_class_names(folder, tmp_path):
    d = load_dataset(f"{folder}@16", tmp_path / "data")
    assert d.name == f"{folder}@16" and d.class_names == ("cat", "dog", "eel") and d.classes == 3
    assert d.train_x.shape == (18, 3, 16, 16) and d.test_x.shape == (6, 3, 16, 16)  # 40x30 -> crop -> 16x16
    assert d.train_x.dtype == torch.uint8 and sorted(d.test_y.tolist()) == [0, 0, 1, 1, 2, 2]
    # the first cat image, decoded by hand: shorter side to 16, centre crop
    ref = Image.open(folder / "train" / "cat" / "cat0.png").convert("RGB")
    from PIL import ImageOps
    want = np.asarray(ImageOps.fit(ref, (16, 16), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert any(np.array_equal(x.numpy(), want) for x in d.train_x[d.train_y == 0])


def test_grey_folder_without_test_gets_a_seeded_split(tmp_path):
    root = tmp_path / "digits"
    for k, cls in enumerate(("zero", "one")):
        _images(root, "train", cls, 10, mode="L", size=(28, 28), seed=k)
    a = load_dataset(f"{root}@28", tmp_path / "a")
    b = load_dataset(f"{root}@28", tmp_path / "b")
    assert a.in_shape == (1, 28, 28) and len(a.train_y) == 16 and len(a.test_y) == 4
    assert torch.equal(a.test_x, b.test_x)  # the same split in another cache
    assert sorted(a.test_y.tolist()) == [0, 0, 1, 1]  # stratified


def test_cache_is_used_and_rebuilt_when_the_folder_changes(folder, tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    first = load_dataset(f"{folder}@16", data_dir)
    (cache,) = (data_dir / "own").glob("*.pt")
    monkeypatch.setattr(own_data, "read", lambda ref: pytest.fail("read again despite a valid cache"))
    assert torch.equal(load_dataset(f"{folder}@16", data_dir).train_x, first.train_x)
    monkeypatch.undo()
    _images(folder, "train", "cat", 7, seed=5)  # one image more (and six rewritten)
    assert len(load_dataset(f"{folder}@16", data_dir).train_y) == 19
    assert not cache.exists() and len(list((data_dir / "own").glob("*.pt"))) == 1  # the stale cache is gone
    load_dataset(f"{folder}@8", data_dir)  # another size: another cache beside it
    assert len(list((data_dir / "own").glob("*.pt"))) == 2


def test_a_damaged_cache_is_rebuilt(folder, tmp_path):
    data_dir = tmp_path / "data"
    load_dataset(f"{folder}@8", data_dir)
    (cache,) = (data_dir / "own").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:1000])  # as if a writer had died half way without the rename
    assert load_dataset(f"{folder}@8", data_dir).train_x.shape == (18, 3, 8, 8)


@pytest.mark.parametrize("make, words", [
    (lambda r: None, ["does not exist"]),
    (lambda r: (r / "cat").mkdir(parents=True), ["no train/ folder", "train/<class>"]),
    (lambda r: (_images(r, "train", "cat", 2), (r / "train" / "dog").mkdir(), (r / "train" / "dog" / "a.txt").touch()),
     ["empty class folders", "train/dog"]),
    (lambda r: _images(r, "train", "cat", 3), ["one class only", "train/cat"]),
    (lambda r: (_images(r, "train", "cat", 2), _images(r, "train", "dog", 2),
                (r / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")),
     ["unreadable", "train/dog/broken.jpg"]),
    (lambda r: (_images(r, "train", "cat", 3), _images(r, "train", "dog", 2), _images(r, "test", "dog", 1, mode="L")),
     ["mixed channel counts", "test/dog/dog0.png", "grey"]),
    (lambda r: (_images(r, "train", "cat", 2), _images(r, "train", "dog", 2), _images(r, "test", "cow", 1)),
     ["test/cow"]),
])
def test_bad_folders_get_a_clear_error_and_no_cache(tmp_path, make, words):
    root = tmp_path / "mine"
    make(root)
    with pytest.raises(BadDataset) as e:
        load_dataset(str(root), tmp_path / "data")
    first_line = str(e.value).splitlines()[0]  # the CLI prints only the first line
    assert all(w in first_line for w in words), first_line
    assert not list((tmp_path / "data").rglob("*.pt*"))  # nothing (half-)cached


def test_npz_layouts_labels_and_names(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "set.npz"
    np.savez(p, x_train=rng.random((20, 12, 12, 3)).astype(np.float32), y_train=np.repeat([3, 7], 10),
             x_test=rng.random((4, 12, 12, 3)).astype(np.float32), y_test=np.array([7, 3, 3, 7]))
    d = load_dataset(str(p), tmp_path / "data")
    assert d.in_shape == (3, 12, 12) and d.class_names == ("3", "7") and d.test_y.tolist() == [1, 0, 0, 1]
    assert int(d.train_x.max()) > 200  # floats in [0, 1] were scaled to 0..255
    np.savez(p, x_train=np.zeros((4, 1, 8, 8), np.uint8), y_train=np.array([0, 1, 0, 1]),
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([[1], [0]]), classes=np.array(["no", "yes"]))
    assert load_dataset(str(p), tmp_path / "data2").class_names == ("no", "yes")


@pytest.mark.parametrize("arrays, words", [
    ({"x_train": np.zeros((2, 8, 8), np.uint8)}, ["lacks the arrays", "y_train"]),
    ({"x_train": np.zeros((2, 8, 8), np.uint8), "y_train": np.array([0, 1]), "x_test": np.zeros((1, 8, 8, 3), np.uint8),
      "y_test": np.array([0])}, ["mixed channel counts"]),
    ({"x_train": np.zeros((2, 8, 8), np.uint8), "y_train": np.array([1, 1]), "x_test": np.zeros((1, 8, 8), np.uint8),
      "y_test": np.array([1])}, ["one class only"]),
    ({"x_train": np.zeros((2, 8, 8), np.uint8), "y_train": np.array([0, 1]), "x_test": np.zeros((1, 8, 8), np.uint8),
      "y_test": np.array([5])}, ["y_test has labels that y_train lacks", "5"]),
    ({"x_train": np.full((2, 8, 8), 300), "y_train": np.array([0, 1]), "x_test": np.zeros((1, 8, 8)),
      "y_test": np.array([0])}, ["outside 0..255"]),
    ({"x_train": np.array([{"a": 1}], dtype=object), "y_train": np.array([0]), "x_test": np.zeros((1, 8, 8)),
      "y_test": np.array([0])}, ["plain arrays"]),
])
def test_bad_npz(tmp_path, arrays, words):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(BadDataset) as e:
        load_dataset(str(p), tmp_path / "data")
    assert all(w in str(e.value).splitlines()[0] for w in words), str(e.value)


def test_dataset_strings_are_canonical(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    assert canonical("./imgs") == f"{tmp_path}/imgs@32"
    assert canonical("./imgs", 64) == canonical(f"{tmp_path}/imgs@64") == f"{tmp_path}/imgs@64"
    assert canonical(canonical("./imgs@48")) == f"{tmp_path}/imgs@48"  # idempotent
    assert canonical("fashion-mnist", 64) == "fashion-mnist" and parse("digits").kind == "name"
    assert parse("~/x.npz").path == str(Path.home() / "x.npz")
    with pytest.raises(BadDataset, match="an .npz file is used at the size"):
        parse("./x.npz", 64)
    with pytest.raises(BadDataset, match="out of range"):
        parse("./imgs", 2)
    assert LoopConfig(dataset="./imgs", image_size=24).dataset == f"{tmp_path}/imgs@24"
    assert EvalRequest(code="", dataset="imgs@24/..//imgs@24").dataset == f"{tmp_path}/imgs@24"


def test_cli_describes_a_folder_and_names_bad_files(folder, tmp_path, capsys):
    home = ["--home", str(tmp_path / "home")]
    assert main([*home, "datasets", str(folder), "--image-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "cat" in out and "eel" in out and "18 train / 6 test" in out
    (folder / "train" / "eel" / "x.png").write_bytes(b"\x89PNG broken")
    assert main([*home, "datasets", str(folder), "--image-size", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nasgraph: error: 1 unreadable image(s)") and "train/eel/x.png" in err


def test_unknown_bare_name_suggests_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flowers").mkdir()
    with pytest.raises(datasets.UnknownDataset, match=r"write \./flowers"):
        load_dataset("flowers", tmp_path / "data")
    assert os.listdir(tmp_path) == ["flowers"]


# ---------------------------------------------------------------- keyed by content, named without the path

def _record(store, folder_spec: str, code: str, accuracy: float) -> None:
    from nasgraph.tools.candidate import Candidate
    from nasgraph.tools.evaluator.outcome import Outcome

    store.record_new(Candidate.of(code), "test", Outcome(status="ok", stage="test", accuracy=accuracy),
                     dataset=folder_spec, epochs=1, prm={"lr": 0.1}, hardware={})


def test_the_store_keys_own_data_by_content_not_by_path(folder, tmp_path):
    """Regression: evaluations were keyed by the folder's path, so the same images elsewhere were trained
    again and changed images at the same path reused results made on the old ones."""
    from nasgraph.tools.candidate import Candidate
    from nasgraph.tools.final_training import arch_winner
    from nasgraph.tools.store import Store
    from tests import candidates as C

    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(folder, moved)
    key = own_data.dataset_key(f"{folder}@16")
    assert key.startswith("own:") and key == own_data.dataset_key(f"{moved}@16") == own_data.dataset_key(key)
    assert own_data.dataset_key(f"{folder}@8") != key  # another size is other data
    assert own_data.dataset_key("fashion-mnist") == "fashion-mnist"  # built-in names stay as they were
    arch = Candidate.of(C.VALID).arch_id
    with Store(tmp_path / "store.sqlite") as store:
        _record(store, f"{folder}@16", C.VALID, 0.5)
        (row,) = store.evaluations()
        assert row.dataset == key and str(tmp_path) not in row.dataset
        hit = store.lookup(arch, f"{moved}@16", 1, {"lr": 0.1})  # the same images at another path
        assert hit is not None and hit.accuracy == 0.5
        assert [e.accuracy for e in store.best(f"{moved}@16")] == [0.5]
        assert arch_winner(store, arch, f"{moved}@16", {}).proxy == hit  # `nasgraph train ID --dataset PATH`
        _images(folder, "train", "cat", 1, seed=99)  # cat0.png rewritten: other data at the same path
        assert store.lookup(arch, f"{folder}@16", 1, {"lr": 0.1}) is None
        assert store.lookup(arch, f"{moved}@16", 1, {"lr": 0.1}) is not None
        _record(store, "digits", C.VALID, 0.7)
        assert store.lookup(arch, "digits", 1, {"lr": 0.1}).dataset == "digits"


def test_a_content_key_loads_from_any_cache_of_those_contents(folder, tmp_path):
    data_dir = tmp_path / "data"
    by_path = load_dataset(f"{folder}@8", data_dir)
    key = own_data.dataset_key(f"{folder}@8")
    by_key = load_dataset(key, data_dir)  # what final training and export get from the store
    assert by_key.name == key and torch.equal(by_key.train_x, by_path.train_x)
    assert by_key.class_names == ("cat", "dog", "eel") and EvalRequest(code="", dataset=key).dataset == key
    for f in (data_dir / "own").glob("*.pt"):
        f.unlink()
    with pytest.raises(datasets.DatasetUnavailable, match="nasgraph datasets PATH"):
        load_dataset(key, data_dir)


def test_prompts_name_own_data_by_its_folder_never_its_path(folder, tmp_path):
    import random

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from nasgraph.agents.code_generator import build_prompt, task_values
    from nasgraph.agents.hpo_agent import Architecture, propose
    from nasgraph.agents.schemas import Task
    from nasgraph.chat_session import Session, answer_context
    from nasgraph.tools.hpo.live import live_space
    from tests import candidates as C

    spec = canonical(str(folder), 16)
    task = Task(dataset=spec, in_shape=(32, 3, 16, 16), classes=3, max_params=10**5, max_flops=10**7)
    assert task_values(task)["dataset"] == "pets"
    prompt = build_prompt(task, "add a residual block", [], None).text
    assert "classify pets images" in prompt and "(32, 3, 16, 16)" in prompt and "Classes: 3" in prompt
    assert str(tmp_path) not in prompt
    _, meta = propose(FakeListChatModel(responses=['{"lr": 0.01}']), Architecture(name="net", dataset=spec),
                      live_space(C.VALID), [], 3, random.Random(0))
    assert "Dataset: pets" in meta.prompt and str(tmp_path) not in meta.prompt
    assert "Dataset: pets;" in answer_context(Session.new("s", spec), [])
    npz = Task(dataset=str(tmp_path / "scans.npz"), in_shape=(8, 1, 12, 12), classes=2, max_params=1, max_flops=1)
    assert task_values(npz)["dataset"] == "scans"
    builtin = Task(dataset="fashion-mnist", in_shape=(8, 1, 28, 28), classes=10, max_params=1, max_flops=1)
    assert task_values(builtin)["dataset"] == "fashion-mnist"  # built-in names unchanged


def test_a_deleted_folder_finds_nothing_instead_of_failing(folder, tmp_path):
    from nasgraph.tools.store import Store
    from tests import candidates as C

    with Store(tmp_path / "store.sqlite") as store:
        _record(store, f"{folder}@16", C.VALID, 0.5)
        shutil.rmtree(folder)  # `nasgraph report` on an old run: the store still answers, with nothing
        assert store.trainings(dataset=f"{folder}@16") == [] and store.best(f"{folder}@16") == []
        assert len(store.evaluations()) == 1
