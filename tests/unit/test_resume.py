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


def test_kill_and_resume_is_exact(tmp_path):
    rng = random.Random(7)
    kills = 0
    # Each restart uses fresh widths so a re-generated candidate is new work, never a cache hit.
    for attempt in range(12):
        proc = _start(tmp_path, 4 + 40 * attempt)
        try:
            out, err = proc.communicate(timeout=rng.uniform(3.0, 9.0))
            assert proc.returncode == 0, err[-2000:]
            assert f"SUMMARY {N}" in out
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
    else:
        raise AssertionError("run never finished")
    assert kills >= 1, "the random kill never landed; the test proved nothing"

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
    leftovers = subprocess.run(["pgrep", "-f", "tools.evaluator.zygote"], capture_output=True, text=True).stdout
    assert leftovers.strip() == "", f"orphaned evaluator processes: {leftovers}"
