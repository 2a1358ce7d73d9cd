"""The SQLite model store: schema, dedup/cache flow, transactions under crashes, clear errors."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nasgraph.tools.candidate import Candidate, architecture_id
from nasgraph.tools.evaluator.outcome import Outcome
from nasgraph.tools.store import SCHEMA_VERSION, Store, StoreError

REPO = Path(__file__).resolve().parents[2]
HW = {"cpu": "test-cpu", "threads": 1, "device": "cpu", "torch": "x"}
PRM = {"lr": 0.01, "batch": 64, "momentum": 0.9}

CODE = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 16, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, out_shape[0]))

    def forward(self, x):
        return self.head(self.conv(x))
'''
CODE_COMMENTED = "# generated\n" + CODE.replace("def forward(self, x):", "def forward(self, img):  # fwd") \
    .replace("self.head(self.conv(x))", "self.head(self.conv(img))")
OTHER = CODE.replace("16", "24")


def ok(acc: float = 0.85) -> Outcome:
    return Outcome(status="ok", stage="test", accuracy=acc, params=1234, flops=5678,
                   seconds={"build": 0.1, "train": 8.0, "test": 1.0},
                   epochs=[{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "seconds": 8.0}])


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "sub" / "store.db")
    yield s
    s.close()


def test_schema_created_with_version_wal_and_tables(tmp_path):
    path = tmp_path / "a" / "b" / "store.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"architectures", "evaluations", "cache_hits", "meta"} <= tables
    conn.close()
    Store(path).close()  # reopening an existing store works


def test_add_architecture_dedups_and_records_novelty(store):
    a, new_a = store.add_architecture(Candidate.of(CODE), "reference")
    b, new_b = store.add_architecture(Candidate.of(CODE_COMMENTED), "llm:test")
    assert new_a and not new_b and a == b
    c, new_c = store.add_architecture(Candidate.of(OTHER), "llm:test")
    assert new_c and c != a
    detail = store.architecture(c)
    assert detail.nearest_id == a and 0 < detail.novelty < 0.5
    assert store.architecture(a).novelty == 1.0 and store.architecture(a).origin == "reference"
    assert store.novelty(Candidate.of(CODE_COMMENTED)) == (0.0, a)


def test_cache_flow_evaluates_once_for_equal_architectures(store):
    calls = []

    def evaluate():
        calls.append(1)
        return ok(0.87)

    c1, c2 = Candidate.of(CODE), Candidate.of(CODE_COMMENTED)
    arch1, arch2 = c1.arch_id, c2.arch_id
    out1, hit1 = store.evaluate_cached(c1, "fashion-mnist", 1, PRM, evaluate, origin="llm:m",
                                              hardware=HW, run_id="r1", iteration=0)
    out2, hit2 = store.evaluate_cached(c2, "fashion-mnist", 1, dict(reversed(PRM.items())),
                                              evaluate, origin="llm:m", hardware=HW, run_id="r1", iteration=1)
    assert len(calls) == 1
    assert arch1 == arch2 and not hit1 and hit2
    assert out2.status == "ok" and out2.accuracy == 0.87 and out2.params == 1234
    assert out2.detail["cache_hit"] is True and out2.detail["evaluation_id"] == out1.detail["evaluation_id"]
    assert out2.epochs == out1.epochs and out2.seconds == out1.seconds
    # Different keys are different cache entries.
    store.evaluate_cached(Candidate.of(CODE), "fashion-mnist", 2, PRM, evaluate, origin="llm:m", hardware=HW)
    store.evaluate_cached(Candidate.of(CODE), "fashion-mnist", 1, {**PRM, "lr": 0.02}, evaluate, origin="llm:m", hardware=HW)
    assert len(calls) == 3
    stats = store.stats()
    assert stats["evaluations"] == 3 and stats["cache_hits"] == 1 and stats["architectures"] == 1
    assert [e.iteration for e in store.evaluations_for_run("r1")] == [0]


@pytest.mark.parametrize("status", ["timeout", "memory", "killed", "over_budget"])
def test_transient_statuses_are_not_cached(store, status):
    calls = []

    def evaluate():
        calls.append(1)
        return Outcome(status=status, stage="train", error="ran out")

    for _ in range(2):
        out, hit = store.evaluate_cached(Candidate.of(CODE), "ds", 1, PRM, evaluate, origin="x", hardware=HW)
        assert not hit and out.status == status
    assert len(calls) == 2


def test_code_failures_are_cached(store):
    calls = []

    def evaluate():
        calls.append(1)
        return Outcome(status="shape_error", stage="shape", error="mat1 and mat2 shapes cannot be multiplied")

    store.evaluate_cached(Candidate.of(CODE), "ds", 1, PRM, evaluate, origin="x", hardware=HW)
    out, hit = store.evaluate_cached(Candidate.of(CODE), "ds", 1, PRM, evaluate, origin="x", hardware=HW)
    assert hit and out.status == "shape_error" and "mat1" in out.error and len(calls) == 1


def test_syntax_error_code_is_stored_too(store):
    bad = "class Net(nn.Module:\n    pass\n"
    arch = Candidate.of(bad).arch_id
    out, hit = store.evaluate_cached(Candidate.of(bad), "ds", 1, PRM, lambda: Outcome(status="syntax", stage="parse"),
                                           origin="llm:m", hardware=HW)
    assert not hit and arch == architecture_id(bad) and store.architecture(arch).code == bad


def test_lookup_record_and_explicit_cache_hit(store):
    arch, _ = store.add_architecture(Candidate.of(CODE), "reference")
    assert store.lookup(arch, "ds", 1, PRM) is None
    eid = store.record_evaluation(arch, ok(0.5), dataset="ds", epochs=1, prm=PRM, hardware=HW)
    eid2 = store.record_evaluation(arch, ok(0.6), dataset="ds", epochs=1, prm=PRM, hardware=HW)
    rec = store.lookup(arch, "ds", 1, PRM)
    assert rec.id == eid2 > eid and rec.accuracy == 0.6 and rec.hardware == HW  # most recent wins
    assert rec.to_outcome().epochs[0]["loss"] == 0.5
    store.record_cache_hit(arch, eid, run_id="r", iteration=3)
    assert store.architecture(arch).cache_hits == 1


def test_bad_requests_raise_store_error(store):
    arch, _ = store.add_architecture(Candidate.of(CODE), "reference")
    with pytest.raises(StoreError, match="unknown architecture"):
        store.record_evaluation("0" * 16, ok(), dataset="ds", epochs=1, prm=PRM, hardware=HW)
    with pytest.raises(StoreError, match="cache hit"):
        store.record_evaluation(arch, Outcome(status="duplicate"), dataset="ds", epochs=1, prm=PRM, hardware=HW)
    with pytest.raises(StoreError, match="unknown evaluation"):
        store.record_cache_hit(arch, 999)
    with pytest.raises(StoreError, match="plain JSON"):
        store.lookup(arch, "ds", 1, {"lr": object()})
    with pytest.raises(StoreError, match="order"):
        store.architectures(order="name")


def test_prefix_lookup_and_ambiguity(store):
    ids = [store.add_architecture(Candidate.of(CODE.replace("16", str(c))), "x")[0] for c in range(8, 80)]
    target = ids[0]
    # The shortest prefix that is unique resolves; a shared one is ambiguous.
    for n in range(1, 17):
        if sum(i.startswith(target[:n]) for i in ids) == 1:
            break
    assert store.architecture(target[:n]).id == target
    assert store.architecture(target.upper()).id == target
    first_chars = [i[0] for i in ids]
    shared = max(set(first_chars), key=first_chars.count)
    assert first_chars.count(shared) > 1
    with pytest.raises(StoreError, match="ambiguous"):
        store.architecture(shared)
    with pytest.raises(StoreError, match="no architecture"):
        store.architecture("f" * 16 if "f" * 16 not in ids else "e" * 16)
    with pytest.raises(StoreError, match="hex"):
        store.architecture("net-1")


def test_listing_best_and_stats(store):
    accs = {CODE: 0.8, OTHER: 0.9, CODE.replace("16", "32"): 0.7}
    for code, acc in accs.items():
        store.evaluate_cached(Candidate.of(code), "fm", 1, PRM, lambda a=acc: ok(a), origin="llm:m", hardware=HW)
    store.evaluate_cached(Candidate.of(CODE), "fm", 1, {"lr": 1.0}, lambda: ok(0.95), origin="llm:m", hardware=HW)
    store.evaluate_cached(Candidate.of(CODE.replace("16", "40")), "fm", 1, PRM, lambda: Outcome(status="nan_loss"),
                          origin="llm:m", hardware=HW)
    best = store.best("fm", k=3)
    assert [round(b.accuracy, 2) for b in best] == [0.95, 0.9, 0.7]  # one per architecture
    assert len({b.arch_id for b in best}) == 3
    assert store.best("fm", epochs=2) == [] and store.best("other") == []
    by_acc = store.architectures(order="accuracy")
    assert [s.best_accuracy for s in by_acc][:3] == [0.95, 0.9, 0.7] and by_acc[-1].best_accuracy is None
    assert by_acc[-1].last_status == "nan_loss"
    newest = store.architectures(limit=2)
    assert len(newest) == 2 and newest[0].evaluations == 1
    assert store.architectures(order="accuracy")[0].evaluations == 2
    s = store.stats()
    assert s["by_status"] == {"nan_loss": 1, "ok": 4} and s["best_accuracy"] == {"fm": 0.95}


def test_exception_inside_transaction_leaves_no_half_record(store, monkeypatch):
    def failing_insert(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Store, "_insert_evaluation", failing_insert)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.evaluate_cached(Candidate.of(CODE), "ds", 1, PRM, ok, origin="x", hardware=HW)
    monkeypatch.undo()
    assert store.stats()["architectures"] == 0  # the architecture insert was rolled back with it
    assert store.novelty(Candidate.of(CODE)) == (1.0, None)
    _, hit = store.evaluate_cached(Candidate.of(CODE), "ds", 1, PRM, ok, origin="x", hardware=HW)
    assert not hit and store.integrity_check() == "ok"


CHILD = textwrap.dedent('''
    import sys, time
    from nasgraph.tools.candidate import Candidate
    from nasgraph.tools.store import Store
    from nasgraph.tools.evaluator.outcome import Outcome

    original = Store._insert_evaluation
    def stalled(self, *args, **kwargs):
        eid = original(self, *args, **kwargs)
        print("inside", flush=True)   # architecture and evaluation written, not committed
        time.sleep(60)
        return eid
    Store._insert_evaluation = stalled
    store = Store(sys.argv[1])
    store.evaluate_cached(Candidate.of(sys.argv[2]), "ds", 1, {"lr": 0.1}, lambda: Outcome(status="ok", accuracy=0.5),
                          origin="child", hardware={})
''')


def test_killed_mid_write_leaves_store_consistent(tmp_path):
    path = tmp_path / "store.db"
    with Store(path) as s:
        s.evaluate_cached(Candidate.of(OTHER), "ds", 1, PRM, ok, origin="parent", hardware=HW)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), CODE], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline().strip() == "inside", child.stderr.read()
        # While the child holds the write lock, a reader still sees the committed state (WAL).
        with Store(path) as reader:
            assert reader.stats()["architectures"] == 1
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()  # a failed assertion above must not leave the child sleeping
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    with Store(path) as s:
        assert s.integrity_check() == "ok"
        assert s.stats()["architectures"] == 1 and s.stats()["evaluations"] == 1
        assert s.lookup(architecture_id(CODE), "ds", 1, {"lr": 0.1}) is None
        # The lock died with the child: writing works again.
        arch = Candidate.of(CODE).arch_id
        _, hit = s.evaluate_cached(Candidate.of(CODE), "ds", 1, {"lr": 0.1}, ok, origin="parent", hardware=HW)
        assert not hit and s.architecture(arch).origin == "parent"


def test_second_connection_sees_committed_writes(tmp_path):
    path = tmp_path / "store.db"
    with Store(path) as writer, Store(path) as reader:
        assert reader.novelty(Candidate.of(CODE)) == (1.0, None)
        arch, _ = writer.add_architecture(Candidate.of(CODE), "x")
        assert reader.novelty(Candidate.of(CODE)) == (0.0, arch)  # the index reloads signatures committed elsewhere
        writer.record_evaluation(arch, ok(), dataset="ds", epochs=1, prm=PRM, hardware=HW)
        assert reader.lookup(arch, "ds", 1, PRM).accuracy == 0.85


def test_not_a_sqlite_file_gives_clear_error(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError, match="not a readable nasgraph store"):
        Store(junk)


def test_foreign_sqlite_database_is_refused(tmp_path):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users(name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a nasgraph store.*users"):
        Store(other)


def test_newer_schema_and_directory_path_are_refused(tmp_path):
    path = tmp_path / "store.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)
    with pytest.raises(StoreError, match="directory"):
        Store(tmp_path)


def test_record_new_and_run_evaluation(store):
    arch = Candidate.of(CODE).arch_id
    eid = store.record_new(Candidate.of(CODE), "llm:m", ok(0.7), dataset="ds", epochs=1, prm=PRM, hardware=HW,
                                 run_id="run", iteration=4)
    assert arch == architecture_id(CODE_COMMENTED)
    assert store.run_evaluation("run", 4, arch).id == eid
    assert store.run_evaluation("run", 4).accuracy == 0.7
    assert store.run_evaluation("run", 5) is None and store.run_evaluation("other", 4) is None
    assert store.run_evaluation("run", 4, "0" * 16) is None
    arch2 = Candidate.of(CODE_COMMENTED).arch_id
    store.record_new(Candidate.of(CODE_COMMENTED), "llm:other", ok(0.71), dataset="ds", epochs=1, prm=PRM,
                                hardware=HW, run_id="run", iteration=5)
    assert arch2 == arch and store.architecture(arch).origin == "llm:m"  # first origin kept


def test_a_schema_1_store_gains_the_diagnosis_column_and_keeps_its_rows(tmp_path):
    from nasgraph.tools.evaluator.diagnosis import Diagnosis

    path = tmp_path / "old.db"
    s = Store(path)
    arch = Candidate.of(CODE).arch_id
    s.record_new(Candidate.of(CODE), "llm:m", ok(0.7), dataset="ds", epochs=1, prm=PRM, hardware=HW)
    s.close()
    conn = sqlite3.connect(path)  # make it a store as schema 1 wrote it
    conn.execute("ALTER TABLE evaluations DROP COLUMN diagnosis")
    for table in ("training_epochs", "exports", "trainings"):  # schema 3's
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    s = Store(path)
    try:
        assert s.lookup(arch, "ds", 1, PRM).diagnosis is None
        failed = Outcome(status="shape_error", stage="shape", error="mat1 and mat2",
                         diagnosis=Diagnosis(kind="linear_size", module_path="fc", got=[3136], expected=[784]))
        arch2 = Candidate.of(CODE_COMMENTED.replace("fwd", "forward pass")).arch_id
        s.record_new(Candidate.of(CODE_COMMENTED.replace("fwd", "forward pass")), "llm:m", failed, dataset="ds",
                                epochs=1, prm=PRM, hardware=HW)
        again = s.lookup(arch2, "ds", 1, PRM).to_outcome()
        assert again.diagnosis == failed.diagnosis  # a cached failure keeps its facts for the rules
    finally:
        s.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
