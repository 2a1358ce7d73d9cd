"""Several candidates at once: `Evaluator(workers=N)` with submit/collect. Each candidate keeps its
own child, limits and outcome; a crash beside it changes nothing; closing ends what is in flight."""
from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from nasgraph.config import EvaluatorConfig
from nasgraph.tools.evaluator import EvalRequest, Evaluator, default_workers

SETTINGS = dict(dataset="digits", threads=1, batch_size=64, augment=False, time_budget_s=20.0,
                setup_timeout_s=20.0, timeout_grace_s=3.0, memory_limit_mb=1024, seed=0)

# Waits in its constructor until the other candidate has started: only two at once can both build.
RENDEZVOUS = '''
import os, time
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        open("{folder}/{me}", "w").close()
        deadline = time.time() + 15
        while not os.path.exists("{folder}/{other}"):
            if time.time() > deadline:
                raise RuntimeError("the other candidate never started")
            time.sleep(0.05)
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
'''

PLAIN = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
'''


def _req(code: str, **kw) -> EvalRequest:
    return EvalRequest(code=textwrap.dedent(code), **{**SETTINGS, **kw})


@pytest.fixture()
def meeting():
    """A folder both candidates can write: they run as an unprivileged user when we are root."""
    folder = Path(tempfile.mkdtemp(prefix="nasgraph-rendezvous-"))
    os.chmod(folder, 0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    ev = Evaluator(tmp_path_factory.mktemp("workers") / "data", workers=2, policy=False)
    yield ev
    ev.close()


def test_two_candidates_run_at_once(pool, meeting):
    futures = [pool.submit(_req(RENDEZVOUS.format(folder=meeting, me=me, other=other)))
               for me, other in (("a", "b"), ("b", "a"))]
    outcomes = [f.result(timeout=120) for f in futures]
    assert [o.status for o in outcomes] == ["ok", "ok"], [o.error for o in outcomes]


def test_a_crash_beside_a_candidate_changes_nothing_for_it(pool):
    crash = PLAIN.replace("self.fc = nn.Linear", "import os; os._exit(3)\n        self.fc = nn.Linear")
    hog = PLAIN.replace("self.fc = nn.Linear", "self.hog = bytearray(4 * 2**30)\n        self.fc = nn.Linear")
    futures = [pool.submit(_req(code)) for code in (crash, PLAIN, hog, PLAIN)]
    crashed, ok1, oom, ok2 = (f.result(timeout=120) for f in futures)
    assert crashed.status == "runtime_error" and crashed.detail["exit_code"] == 3, crashed
    assert oom.status == "memory", oom
    assert ok1.status == ok2.status == "ok" and ok1.accuracy == ok2.accuracy  # same seed, same result
    assert pool.restarts == 0  # both warm parents survived their candidates


def test_one_worker_runs_them_one_after_another(tmp_path, meeting):
    # The same rendezvous cannot complete with one worker: the first candidate waits in vain.
    with Evaluator(tmp_path / "data", workers=1, policy=False) as ev:
        futures = [ev.submit(_req(RENDEZVOUS.format(folder=meeting, me=me, other=other)))
                   for me, other in (("a", "b"), ("b", "a"))]
        first, second = (f.result(timeout=120) for f in futures)
    assert first.status == "build_error" and "never started" in first.error
    assert second.status == "ok"


def test_closing_ends_a_candidate_in_flight_at_once(tmp_path):
    spin = PLAIN.replace("return self.fc(x.flatten(1))", "while True:\n            pass")
    ev = Evaluator(tmp_path / "data", workers=2, policy=False)
    futures = [ev.submit(_req(spin, setup_timeout_s=300.0)), ev.submit(_req(PLAIN))]
    assert futures[1].result(timeout=120).status == "ok"
    time.sleep(1.0)  # the spinning one is in its shape check by now
    start = time.monotonic()
    ev.close()
    assert time.monotonic() - start < 30  # not the 300 s its own budget allowed
    assert futures[0].result(timeout=5).status != "ok"
    with pytest.raises(RuntimeError, match="closed"):
        ev.submit(_req(PLAIN))


def test_workers_default_from_the_hardware(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert default_workers(EvaluatorConfig(threads=2), "cpu") == 8
    assert default_workers(EvaluatorConfig(threads=32), "cpu") == 1
    assert default_workers(EvaluatorConfig(), "cuda") == 4
    assert default_workers(EvaluatorConfig(workers=3), "cuda") == 3


def test_zero_workers_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        Evaluator(tmp_path, workers=0)


def test_pool_threads_leave_ctrl_c_to_the_main_thread(tmp_path):
    # Regression: a Ctrl-C the kernel handed an idle pool thread went unseen while the chat's main
    # thread sat in readline, and a run went on after Ctrl-C.
    import signal
    import subprocess
    import sys

    code = textwrap.dedent(f'''
        import signal, sys, time, threading
        from nasgraph.tools.evaluator import EvalRequest, Evaluator
        # Whatever launched the tests (a background job ignores SIGINT): this process hears Ctrl-C.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
        ev = Evaluator({str(tmp_path / "data")!r}, workers=2, policy=False)
        req = EvalRequest(code={PLAIN!r}, dataset="digits", threads=1, batch_size=64, augment=False,
                          time_budget_s=20.0, setup_timeout_s=20.0, timeout_grace_s=3.0, memory_limit_mb=1024)
        assert all(f.result().ok for f in [ev.submit(req), ev.submit(req)])  # both pool threads exist
        blocked = ev._pool.submit(lambda: signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])).result()
        try:  # the test sends Ctrl-C as soon as it reads this line: it must already be inside the try
            print("blocked", blocked, flush=True)
            threading.Event().wait()  # the main thread waits, as it does in readline or on a Future
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        ev.close()
    ''')
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "blocked True"
    for _ in range(20):  # process-directed signals: each lands on a thread that does not block it
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        if proc.poll() is not None:
            break
    out, err = proc.communicate(timeout=60)
    assert "interrupted" in out, err[-2000:]
