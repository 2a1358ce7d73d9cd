"""LEMUR export: model files and per-epoch stat lists that round-trip the store's values."""
from __future__ import annotations

import json

from nasgraph.tools.candidate import Candidate
from nasgraph.tools.evaluator.outcome import Outcome
from nasgraph.tools.export import export_lemur, lemur_name
from nasgraph.tools.store import Store

CODE = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_shape[1], 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, out_shape[0])

    def forward(self, x):
        return self.fc(self.body(x))
'''
OTHER = CODE.replace("8", "12")
HW = {"cpu": "Test CPU", "threads": 2, "device": "cpu", "torch": "2.x"}


def _ok(acc: float, train_s: float) -> Outcome:
    return Outcome(status="ok", stage="test", accuracy=acc, params=100, flops=1000,
                   seconds={"build": 0.5, "train": train_s, "test": 1.0},
                   epochs=[{"epoch": 1, "loss": 0.42, "train_accuracy": 0.81, "seconds": train_s}])


def test_export_round_trip(tmp_path):
    store = Store(tmp_path / "store.db")
    prm_a, prm_b = {"lr": 0.01, "momentum": 0.9, "batch": 64}, {"lr": 0.05, "momentum": 0.8, "batch": 128}
    arch = Candidate.of(CODE).arch_id
    store.evaluate_cached(Candidate.of(CODE), "fashion_mnist", 1, prm_a, lambda: _ok(0.80, 8.0),
                                       origin="llm:m", hardware=HW)
    store.evaluate_cached(Candidate.of(CODE), "fashion_mnist", 1, prm_b, lambda: _ok(0.86, 6.0), origin="llm:m", hardware=HW)
    store.evaluate_cached(Candidate.of(CODE), "fashion_mnist", 3, prm_a, lambda: _ok(0.89, 20.0), origin="llm:m", hardware=HW)
    store.evaluate_cached(Candidate.of(OTHER), "fashion_mnist", 1, prm_a, lambda: Outcome(status="shape_error", error="bad"),
                          origin="llm:m", hardware=HW)

    out = tmp_path / "lemur"
    assert export_lemur(store, out) == 3
    name = lemur_name(arch)
    assert (out / "nn" / f"{name}.py").read_text() == CODE
    assert sorted(p.name for p in (out / "nn").iterdir()) == [f"{name}.py"]  # the failed design is left out
    folder = out / "stat" / f"img-classification_fashion-mnist_acc_{name}"
    assert sorted(p.name for p in folder.iterdir()) == ["1.json", "3.json"]

    trials = json.loads((folder / "1.json").read_text())
    assert [t["accuracy"] for t in trials] == [0.86, 0.80]  # best first, as LEMUR lists them
    best = trials[0]
    assert best["lr"] == 0.05 and best["momentum"] == 0.8 and best["batch"] == 128
    assert best["duration"] == 7_000_000_000  # train + test seconds, in nanoseconds
    assert best["transform"] == "default" and len(best["uid"]) == 32
    assert best["train_loss"] == 0.42 and best["train_accuracy"] == 0.81
    assert best["cpu_type"] == "Test CPU" and best["gpu_type"] == "No GPU"
    assert trials[1]["uid"] != best["uid"]
    assert json.loads((folder / "3.json").read_text())[0]["uid"] == trials[1]["uid"]  # same prm, same uid

    # Exporting again rewrites the same files; including failures adds the failed trial.
    assert export_lemur(store, out) == 3
    assert export_lemur(store, tmp_path / "all", only_ok=False) == 4
    failed = next((tmp_path / "all" / "stat").glob("*_acc_ng-*")).parent
    failed_trials = [t for d in failed.iterdir() for t in json.loads((d / "1.json").read_text())
                     if t.get("status")]
    assert [t["status"] for t in failed_trials] == ["shape_error"] and failed_trials[0]["accuracy"] is None
    assert export_lemur(store, tmp_path / "none", dataset="cifar-10") == 0
    assert export_lemur(store, tmp_path / "nested", train_subdir=True) == 3
    assert (tmp_path / "nested" / "stat" / "train" / folder.name / "1.json").is_file()
    store.close()
