"""The Ray backend on a local Ray instance: the same candidates give the same outcomes as the local
backend, a lost worker means the candidate is evaluated again (never lost, never counted twice),
and an address that does not answer is one clear line in seconds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import candidates as C

ray = pytest.importorskip("ray")

from nasgraph.tools.evaluator import EvalRequest, Evaluator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = dict(dataset="digits", threads=1, batch_size=32, augment=False, time_budget_s=20.0,
                setup_timeout_s=30.0, timeout_grace_s=3.0, memory_limit_mb=1024, seed=0, prm={"lr": 0.1})

SLOW_START = C.VALID.replace("super().__init__()", "super().__init__()\n        import time; time.sleep(4)")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ray") / "data"


@pytest.fixture(scope="module")
def on_ray(data_dir):
    os.environ.pop("RAY_ADDRESS", None)
    ev = Evaluator(data_dir, workers=2, backend="ray", policy=False)
    yield ev
    ev.close()
    ray.shutdown()


def _req(code: str) -> EvalRequest:
    return EvalRequest(code=textwrap.dedent(code), **SETTINGS)


def test_same_candidates_same_outcomes_on_both_backends(on_ray, data_dir):
    codes = [C.VALID, C.wide(6), C.BUILD_ERROR]
    remote = [f.result(timeout=300) for f in [on_ray.submit(_req(c)) for c in codes]]
    with Evaluator(data_dir, workers=1) as local:
        here = [local.evaluate(_req(c)) for c in codes]
    assert [o.status for o in remote] == [o.status for o in here] == ["ok", "ok", "build_error"]
    assert [o.accuracy for o in remote] == [o.accuracy for o in here]  # same seed, same single thread
    assert remote[2].diagnosis == here[2].diagnosis


def test_a_lost_worker_means_the_candidate_is_evaluated_again(on_ray):
    before = on_ray.restarts
    pids = on_ray.worker_pids
    fut = on_ray.submit(_req(SLOW_START))
    time.sleep(2.0)  # the candidate is in its constructor on one of the two actors
    for pid in pids:  # lose both: whichever held the candidate
        os.kill(pid, signal.SIGKILL)
    out = fut.result(timeout=300)
    assert out.status == "ok", out.error
    assert on_ray.restarts > before
    assert on_ray.submit(_req(C.wide(7))).result(timeout=300).status == "ok"  # and the pool goes on


def test_an_address_that_does_not_answer_is_one_line_in_seconds():
    code = ("from nasgraph.tools.evaluator.ray_backend import connect\n"
            "connect('127.0.0.1:1')\n")
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30
    assert p.returncode != 0 and "does not answer" in p.stderr and "ray start --head" in p.stderr


def test_cli_runs_files_on_ray(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(C.wide(5))
    env = {**os.environ, "NASGRAPH_HOME": str(tmp_path), "NASGRAPH_EVALUATOR__THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, "-m", "nasgraph.cli", "eval", str(f), "--backend", "ray", "--dataset", "digits",
                        "--lr", "0.1", "--batch", "32", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert '"status": "ok"' in p.stdout


def test_without_ray_installed_the_backend_says_so():
    code = ("import sys; sys.modules['ray'] = None\n"
            "from nasgraph.tools.evaluator.ray_backend import connect\n"
            "connect(None)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "pip install 'ray" in p.stderr
