"""kill -9 at random points, resume, and the run still ends with exactly N iterations, one record per
iteration in the trace, and one fresh evaluation per iteration in the store."""
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from nasgraph.graph.run import RunPaths
from nasgraph.graph.trace import read_events
from nasgraph.tools.store import Store

ROOT = Path(__file__).resolve().parents[2]
N = 6


def _start(home: Path, width: int, iterations: int = N) -> subprocess.Popen:
    env = {**os.environ, "NASGRAPH_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.resume_driver", str(home), "kr", str(iterations), str(width)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _events(home: Path) -> int:
    path = RunPaths(home / "runs" / "kr").trace
    return sum(1 for _ in read_events(path)) if path.exists() else 0


def test_kill_and_resume_is_exact(tmp_path):
    rng = random.Random(7)
    kills = 0
    # Kill at random points that are sure to be past some progress (a few more trace events, plus a
    # random slice of the next node); then let the last attempt finish. Fresh widths on each restart
    # make a re-generated candidate new work, never a cache hit. The first three kills land within a
    # short slice so that a fast machine cannot finish the run before them.
    for attempt in range(6):
        proc = _start(tmp_path, 4 + 40 * attempt)
        if attempt < 5:
            target = _events(tmp_path) + rng.randint(1, 4 if attempt < 3 else 6)
            deadline = time.monotonic() + 240
            while proc.poll() is None and _events(tmp_path) < target and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.2 if attempt < 3 else 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills += 1
                continue
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        assert f"SUMMARY {N}" in out
        break
    assert kills >= 3, "the random kills never landed; the test proved nothing"

    events = list(read_events(RunPaths(tmp_path / "runs" / "kr").trace))
    records = [e["iteration"] for e in events if e["node"] == "record"]
    assert records == list(range(1, N + 1))
    assert [e["step"] for e in events] == list(range(len(events)))

    store = Store(tmp_path / "store.sqlite")
    per_iteration = Counter(e.iteration for e in store.evaluations_for_run("kr") if e.status == "ok")
    store.close()
    assert sorted(per_iteration) == list(range(1, N + 1))
    assert set(per_iteration.values()) == {1}

    time.sleep(0.5)  # the warm evaluator parent must not outlive a killed loop
    # Only this test's warm parents: their command line names this test's data folder.
    leftovers = subprocess.run(["pgrep", "-af", f"nasgraph.tools.evaluator.zygote.*{tmp_path}"],
                               capture_output=True, text=True).stdout
    assert leftovers.strip() == "", f"orphaned evaluator processes: {leftovers}"


def test_death_between_a_nodes_writes_and_its_checkpoint_resumes_exactly(tmp_path):
    # Regression: LangGraph saves a node's writes, then the checkpoint after them. Dying in between
    # left a snapshot with no task to *run* (the writes are there), which resume took for a finished
    # run: it restarted the iteration, tracing the same step twice and drafting again.
    for k in (4, 9):
        home = tmp_path / f"k{k}"
        first = subprocess.run([sys.executable, "-m", "tests.resume_driver", str(home), "kr", "2", "4"],
                               cwd=ROOT, env={**os.environ, "NASGRAPH_HOME": str(home), "PYTHONPATH": str(ROOT),
                                              "EXIT_AT_CHECKPOINT": str(k)}, capture_output=True, text=True)
        assert first.returncode == 9, first.stderr[-2000:]
        proc = _start(home, 44, iterations=2)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        events = list(read_events(RunPaths(home / "runs" / "kr").trace))
        assert [e["step"] for e in events] == list(range(len(events)))
        assert [e["iteration"] for e in events if e["node"] == "record"] == [1, 2]
        assert [e["node"] for e in events].count("improve") == 2


def test_a_run_killed_inside_an_attempt_continues_that_attempt(tmp_path):
    # The attempt is a checkpointed subgraph: dying after its generate node was saved must not draft
    # the design again on resume (the LLM's minutes are the costliest part of an attempt).
    env = {**os.environ, "NASGRAPH_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    first = subprocess.run([sys.executable, "-m", "tests.resume_driver", str(tmp_path), "kr", "2", "4"], cwd=ROOT,
                           env={**env, "EXIT_IN_ATTEMPT": "1"}, capture_output=True, text=True)
    assert first.returncode == 9, first.stderr[-2000:]
    proc = _start(tmp_path, 44, iterations=2)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert "DRAFTS 1" in out  # only iteration 2 was drafted by the resumed process
    events = list(read_events(RunPaths(tmp_path / "runs" / "kr").trace))
    assert [e["step"] for e in events] == list(range(len(events)))
    assert [e["node"] for e in events].count("generate") == 2
    assert [e["iteration"] for e in events if e["node"] == "record"] == [1, 2]


def test_a_run_planning_ahead_killed_and_resumed_loses_and_repeats_nothing(tmp_path):
    # With loop.in_flight = 2 a plan for the next iteration is being drafted while one trains; dying then
    # loses only that LLM work: the resumed run drafts it again, and every iteration is evaluated once.
    for k in (6, 13):
        home = tmp_path / f"k{k}"
        env = {**os.environ, "NASGRAPH_HOME": str(home), "PYTHONPATH": str(ROOT), "IN_FLIGHT": "2"}
        first = subprocess.run([sys.executable, "-m", "tests.resume_driver", str(home), "kr", "4", "4"],
                               cwd=ROOT, env={**env, "EXIT_AT_CHECKPOINT": str(k)}, capture_output=True, text=True)
        assert first.returncode == 9, first.stderr[-2000:]
        resumed = subprocess.run([sys.executable, "-m", "tests.resume_driver", str(home), "kr", "4", "44"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert "SUMMARY 4" in resumed.stdout
        events = list(read_events(RunPaths(home / "runs" / "kr").trace))
        assert [e["step"] for e in events] == list(range(len(events)))
        assert [e["iteration"] for e in events if e["node"] == "record"] == [1, 2, 3, 4]
        assert any(e.get("ahead") for e in events)
        with Store(home / "store.sqlite") as store:
            assert sorted(e.iteration for e in store.evaluations_for_run("kr")) == [1, 2, 3, 4]
