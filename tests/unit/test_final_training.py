"""Final training in-process: a resumed training equals an unbroken one, the store's training tables
(and their migration), the winners of a run, and the proxy's rank correlation."""
from __future__ import annotations

import sqlite3

import pytest
import torch
import torch.nn as nn

from nasgraph.tools.candidate import Candidate
from nasgraph.tools.evaluator.datasets import load_dataset
from nasgraph.tools.evaluator.harness import train_and_test
from nasgraph.tools.evaluator.outcome import Outcome
from nasgraph.tools.final_training import FinalTrainingError, rank_agreement, run_winners
from nasgraph.tools.store import SCHEMA_VERSION, Store, TrainingRecord
from tests.candidates import VALID

HW = {"cpu": "test", "threads": 1}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, 10))


def test_a_resumed_training_ends_where_an_unbroken_one_does(tmp_path):
    torch.set_num_threads(1)
    data = load_dataset("digits", tmp_path).subset(600, 200)
    prm = {"lr": 0.05, "batch": 64}
    whole = _net()
    states: list[dict] = []

    def save(state: dict) -> None:  # as the sandboxed child does: the state holds live tensors, write it now
        torch.save(state, tmp_path / f"ckpt{state['done']}.pt")
        states.append({"done": state["done"], "epochs_total": state["epochs_total"]})

    full = train_and_test(whole, data, prm, epochs=3, augment=True, on_epoch=save)
    assert [s["done"] for s in states] == [1, 2, 3] and states[-1]["epochs_total"] == 3

    # Stopped after epoch 1: a fresh process (fresh model) goes on from the saved checkpoint.
    path = tmp_path / "ckpt1.pt"
    resumed_model = _net()
    later: list[dict] = []
    resumed = train_and_test(resumed_model, data, prm, epochs=3, augment=True,
                             resume=torch.load(path, weights_only=True), on_epoch=later.append)
    assert [s["done"] for s in later] == [2, 3]  # epoch 1 was not trained again
    assert [e["epoch"] for e in resumed.epochs] == [0, 1, 2]
    assert resumed.accuracy == full.accuracy
    for a, b in zip(whole.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="3-epoch training, not of 5"):
        train_and_test(_net(), data, prm, epochs=5, resume=torch.load(path, weights_only=True))


def _ok(acc: float) -> Outcome:
    return Outcome(status="ok", stage="test", accuracy=acc, params=10, flops=100)


def test_winners_of_a_run_count_its_cache_hits(tmp_path):
    store = Store(tmp_path / "s.db")
    codes = [VALID.replace("16", str(w)) for w in (8, 16, 24, 32)]
    for code, acc in zip(codes, (0.5, 0.9, 0.7, 0.6)):
        store.evaluate_cached(Candidate.of(code), "digits", 1, {"lr": 0.1}, lambda acc=acc: _ok(acc),
                              origin="file", hardware=HW, run_id="a")
    store.evaluate_cached(Candidate.of(codes[1]), "digits", 1, {"lr": 0.1}, lambda: pytest.fail("cached"),
                          origin="file", hardware=HW, run_id="b")  # run b reused a's best design
    assert [w.proxy.accuracy for w in run_winners(store, "a", 3)] == [0.9, 0.7, 0.6]
    (w,) = run_winners(store, "b", 5)
    assert w.arch_id == Candidate.of(codes[1]).arch_id and w.code == codes[1] and w.prm == {"lr": 0.1}
    assert store.has_run("b") and not store.has_run("c")
    with pytest.raises(FinalTrainingError, match="no valid design"):
        run_winners(store, "c", 5)


def test_training_rows_curve_and_exports(tmp_path):
    store = Store(tmp_path / "s.db")
    cand = Candidate.of(VALID)
    store.evaluate_cached(cand, "digits", 1, {"lr": 0.1}, lambda: _ok(0.8), origin="file", hardware=HW, run_id="r")
    proxy = store.lookup(cand.arch_id, "digits", 1, {"lr": 0.1})
    t = store.start_training(cand.arch_id, "digits", 3, {"lr": 0.1}, checkpoint="/x/ckpt.pt", proxy=proxy, run_id="r")
    assert t.status == "running" and t.proxy_accuracy == 0.8 and t.epochs_done == 0
    store.record_training_epoch(t.id, {"epoch": 0, "accuracy": 0.85, "loss": 0.5, "seconds": 1.0})
    store.record_training_epoch(t.id, {"epoch": 1, "accuracy": 0.9, "loss": "junk"})
    again = store.start_training(cand.arch_id, "digits", 3, {"lr": 0.1}, checkpoint="/x/ckpt.pt", proxy=proxy)
    assert again.id == t.id and again.epochs_done == 2 and again.accuracy == 0.9  # a resume continues the row
    assert again.curve[1]["loss"] is None
    out = Outcome(status="ok", stage="test", accuracy=0.93, params=10, flops=100,
                  detail={"latency_ms": {"pytorch": {"1": 0.5, "64": 3.0}}},
                  epochs=[{"epoch": e, "accuracy": a} for e, a in enumerate((0.85, 0.9, 0.93))])
    done = store.finish_training(t.id, out, hardware=HW)
    assert done.status == "ok" and done.accuracy == 0.93 and done.epochs_done == 3
    assert done.latency == {"pytorch": {"1": 0.5, "64": 3.0}}
    assert store.find_training(cand.arch_id, "digits", 3, {"lr": 0.1}).id == t.id
    assert store.trainings(arch_ids=[cand.arch_id])[0].id == t.id and store.trainings(arch_ids=[]) == []
    store.record_export(t.id, "onnx", "/x/m.onnx", max_abs_diff=1e-6, latency={"1": 0.1}, detail={}, hardware=HW)
    assert store.exports(t.id)[0].max_abs_diff == 1e-6


def test_a_schema_2_store_gains_the_training_tables(tmp_path):
    path = tmp_path / "old.db"
    s = Store(path)
    cand = Candidate.of(VALID)
    s.record_new(cand, "file", _ok(0.7), dataset="digits", epochs=1, prm={}, hardware=HW)
    s.close()
    conn = sqlite3.connect(path)  # as schema 2 left it
    for table in ("training_epochs", "exports", "trainings"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    s = Store(path)
    assert s.lookup(cand.arch_id, "digits", 1, {}).accuracy == 0.7
    assert s.start_training(cand.arch_id, "digits", 2, {}, checkpoint="c").status == "running"
    s.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def _t(proxy, final, status="ok") -> TrainingRecord:
    return TrainingRecord(0, "a", "d", 3, {}, status, final, proxy, None, None, None, {}, None, "", {}, {}, None, "", "")


def test_rank_agreement():
    a = rank_agreement([_t(0.5, 0.80), _t(0.6, 0.85), _t(0.7, 0.90)])
    assert a.n == 3 and a.spearman == pytest.approx(1.0) and a.best_kept
    a = rank_agreement([_t(0.5, 0.90), _t(0.6, 0.85), _t(0.7, 0.80), _t(0.8, None), _t(0.9, 0.99, "timeout")])
    assert a.n == 3 and a.spearman == pytest.approx(-1.0) and a.best_kept is False
    assert rank_agreement([_t(0.5, 0.9), _t(0.6, 0.8)]).spearman is None  # too few to rank
    assert rank_agreement([_t(0.5, 0.9), _t(0.5, 0.8), _t(0.5, 0.7)]).spearman is None  # no proxy spread
    assert rank_agreement([]).n == 0


def test_regression_a_four_step_training_does_not_divide_by_zero(tmp_path):
    """OneCycleLR with pct_start 0.25 over exactly 4 steps raised ZeroDivisionError (a small folder of
    one's own images, one epoch, at the default batch)."""
    data = load_dataset("digits", tmp_path).subset(128, 50)
    res = train_and_test(_net(), data, {"batch": 32}, epochs=1, augment=False)
    assert 0 <= res.accuracy <= 1


def test_export_never_picks_one_of_two_datasets_silently(tmp_path):
    from nasgraph.tools.model_export import ExportError, pick_training

    store = Store(tmp_path / "s.db")
    cand = Candidate.of(VALID)
    for ds, acc in (("digits", 0.9), ("own:5a17e0c0ffee0123", 0.95)):  # a built-in set and a folder by its contents
        store.evaluate_cached(cand, ds, 1, {}, lambda: _ok(0.5), origin="file", hardware=HW)
        ckpt = tmp_path / f"{len(ds)}.pt"
        ckpt.write_bytes(b"weights")
        t = store.start_training(cand.arch_id, ds, 2, {}, checkpoint=str(ckpt))
        store.finish_training(t.id, _ok(acc), hardware=HW)
    with pytest.raises(ExportError, match=r"trained on 2 datasets .*say which with --dataset"):
        pick_training(store, cand.arch_id[:8])
    assert pick_training(store, cand.arch_id, "digits").accuracy == 0.9


def test_an_interrupted_training_does_not_stay_running(tmp_path):
    from nasgraph.config import load_config
    from nasgraph.tools.final_training import train_winner

    store = Store(tmp_path / "s.db")
    cand = Candidate.of(VALID)
    store.evaluate_cached(cand, "digits", 1, {}, lambda: _ok(0.5), origin="file", hardware=HW, run_id="r")
    (winner,) = run_winners(store, "r", 1)

    class CtrlC:
        def evaluate(self, req, on_progress=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_winner(load_config(home=tmp_path), store, CtrlC(), winner, 2, hardware=HW)
    (t,) = store.trainings()
    assert t.status == "killed" and "goes on from the last finished epoch" in t.error
