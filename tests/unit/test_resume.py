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

from graph.run import RunPaths
from graph.trace import read_events
from tools.store import Store

ROOT = Path(__file__).resolve().parents[2]
N = 6


def _start(home: Path, width: int) -> subprocess.Popen:
    env = {**os.environ, "NASGRAPH_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.resume_driver", str(home), "kr", str(N), str(width)],
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
    leftovers = subprocess.run(["pgrep", "-af", f"tools.evaluator.zygote.*{tmp_path}"],
                               capture_output=True, text=True).stdout
    assert leftovers.strip() == "", f"orphaned evaluator processes: {leftovers}"
