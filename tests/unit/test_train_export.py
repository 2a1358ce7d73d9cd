"""Own data, final training and export through the real sandbox: an image folder as the dataset of a
'run', its winner trained with a checkpoint per epoch (stopped and resumed), then exported and checked
here with ONNX Runtime."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from nasgraph.cli import main
from nasgraph.config import load_config
from nasgraph.dataset_ref import BadDataset
from nasgraph.tools import final_training as ft
from nasgraph.tools.evaluator import EvalRequest, Evaluator
from nasgraph.tools.evaluator.outcome import Outcome
from nasgraph.tools.evaluator.own_data import dataset_key
from nasgraph.tools.store import Store
from tests.candidates import VALID

CLASSES = ("circle", "stripe", "blank")


def _folder(root: Path) -> Path:
    """Three easy classes of 12x12 grey images: a bright disc, a bright bar, nothing."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:12, :12]
    for split, n in (("train", 40), ("test", 10)):
        for k, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (12, 12))
                if k == 0:
                    img[(yy - 6) ** 2 + (xx - 6) ** 2 < 12] += 150
                elif k == 1:
                    img[:, 4:8] += 150
                Image.fromarray(img.clip(0, 255).astype(np.uint8), "L").save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own")
    folder = _folder(tmp / "shapes")
    files = []
    for w in (4, 8):
        f = tmp / f"w{w}.py"
        f.write_text(VALID.replace("16", str(w)).replace("64", str(4 * w)))
        files.append(str(f))
    home = tmp / "home"
    assert main(["--home", str(home), "eval", *files, "--dataset", str(folder), "--image-size", "8",
                 "--run-id", "shapes", "--workers", "1", "--threads", "1", "--json"]) == 0
    return home, folder


def test_a_folder_run_trains_resumes_and_exports(setup, tmp_path, capsys):
    home, folder = setup
    capsys.readouterr()
    cfg = load_config(home=home, evaluator={"threads": 1})
    store = Store(cfg.store_path)
    (winner,) = ft.run_winners(store, "shapes", 1)
    assert winner.dataset == dataset_key(f"{folder}@8") and winner.proxy.accuracy is not None  # by content
    seen: list[tuple[int, bool]] = []
    kept = tmp_path / "after-epoch-1.pt"

    def on_epoch(w, stats):
        ckpt = ft.checkpoint_dir(home, w, 3) / "checkpoint.pt"
        seen.append((stats["epoch"], ckpt.is_file()))  # copied out of the sandbox before we hear of the epoch
        if stats["epoch"] == 0:
            shutil.copyfile(ckpt, kept)

    with Evaluator(cfg.data_dir) as evaluator:
        first = ft.train_winner(cfg, store, evaluator, winner, 3, hardware={}, run_id="shapes", on_epoch=on_epoch)
        assert first.status == "ok" and first.epochs_done == 3 and seen == [(0, True), (1, True), (2, True)]
        assert set(first.latency["pytorch"]) == {"1", "64"}

        # Asked again: nothing to do. Then as if it had been stopped after epoch 1: it goes on from there.
        assert ft.train_winner(cfg, store, evaluator, winner, 3, hardware={}).curve == first.curve
        shutil.copyfile(kept, first.checkpoint)
        store.finish_training(first.id, Outcome(status="killed", error="stopped"), hardware={})
        seen.clear()
        again = ft.train_winner(cfg, store, evaluator, winner, 3, hardware={}, on_epoch=on_epoch)
        assert [e for e, _ in seen] == [1, 2] and again.status == "ok" and again.id == first.id
        def curve(t):
            return [{k: v for k, v in e.items() if k != "seconds"} for e in t.curve]
        assert again.accuracy == first.accuracy and curve(again) == curve(first)  # as if never stopped

        bad = _folder(tmp_path / "bad")
        (bad / "train" / "blank" / "3.png").write_bytes(b"no image")
        with pytest.raises(BadDataset, match="train/blank/3.png"):  # raised in the warm parent, named here
            evaluator.evaluate(EvalRequest(code=VALID, dataset=str(bad), threads=1))
    store.close()

    out = tmp_path / "export"
    assert main(["--home", str(home), "export", winner.arch_id[:10], "--format", "onnx", "--format", "pytorch",
                 "--out", str(out), "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(first.accuracy)  # the exported weights are the trained ones
    assert result["max_abs_diff"]["onnx"] < 1e-4 and set(result["latency_ms"]["onnx"]) == {"1", "64"}
    assert result["same_class"]["onnx"] == 1.0
    onnx_file, pt2 = Path(result["files"]["onnx"]), Path(result["files"]["pytorch"])
    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert json.loads(meta["classes"]) == sorted(CLASSES)

    # Checked here too: ONNX Runtime and the saved torch.export program agree on the same images.
    x = torch.rand(5, 1, 8, 8)
    got = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    want = torch.export.load(str(pt2)).module()(x).detach().numpy()
    assert got.shape == (5, 3) and np.abs(got - want).max() < 1e-4
    facts = json.loads((out / f"ng-{winner.arch_id[:12]}.json").read_text())
    assert facts["input"]["shape"] == ["batch", 1, 8, 8] and facts["final_epochs"] == 3
    assert not list(out.glob(".*"))  # no staging folder left
    with Store(home / "store.sqlite") as s:
        assert {e.format for e in s.exports(first.id)} == {"onnx", "pytorch"}


def test_export_without_a_final_training_says_what_to_do(setup, capsys):
    home, _ = setup
    with Store(home / "store.sqlite") as s:
        arch = [e.arch_id for e in s.run_candidates("shapes") if not s.trainings(arch_ids=[e.arch_id])][0]
    assert main(["--home", str(home), "export", arch]) == 1
    assert f"train it first: nasgraph train {arch[:12]}" in capsys.readouterr().err


def test_the_loop_runs_on_an_image_folder(tmp_path):
    """`nasgraph run --dataset FOLDER`: the task, the prompt's shapes and the sandboxed child all see the folder."""
    from nasgraph.graph.run import run_loop
    from tests import candidates as C
    from tests.fakes import FakeHandle, ScriptedChatModel
    from tests.trace_run import triple

    folder = _folder(tmp_path / "shapes")
    cfg = load_config(home=tmp_path / "home", evaluator={"threads": 1, "time_budget_s": 60, "batch_size": 32},
                      loop={"dataset": str(folder), "image_size": 8, "iterations": 1, "max_repairs": 0,
                            "max_fixes": 0})
    llm = ScriptedChatModel(improver=[triple("one convolution")], generator=[C.fenced(C.VALID)])
    run_loop(cfg, FakeHandle(llm), run_id="folder-run")
    with Store(cfg.store_path) as store:
        (e,) = store.evaluations_for_run("folder-run")
    assert e.status == "ok", e.error
    assert e.dataset == dataset_key(f"{folder}@8") and e.accuracy is not None


def test_files_leave_the_sandbox_only_as_regular_files(tmp_path):
    """What the child leaves is copied out without following links (not even the folder), skipping
    FIFOs, oversized and unfinished files."""
    import os

    from nasgraph.tools.evaluator.sandbox import collect_files

    art = tmp_path / "work" / "artifacts"
    art.mkdir(parents=True)
    (tmp_path / "secret").write_text("not theirs")
    (art / "checkpoint.pt").write_bytes(b"w" * 10)
    (art / "huge.pt").write_bytes(b"w" * 3000)
    (art / ".checkpoint.tmp").write_bytes(b"half")
    os.symlink(tmp_path / "secret", art / "link.pt")
    os.mkfifo(art / "pipe.pt")
    assert collect_files(art, tmp_path / "out", max_bytes=1000) == ["checkpoint.pt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint.pt"]
    os.symlink(tmp_path, tmp_path / "work" / "elsewhere")
    assert collect_files(tmp_path / "work" / "elsewhere", tmp_path / "out2", max_bytes=10**6) == []
