"""The real evaluator end to end: a reference model on real MNIST images, and a long run of candidates
through one warm parent without leaking processes, file descriptors or temp dirs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nasgraph.tools.evaluator import EvalRequest, Evaluator
from nasgraph.tools.evaluator.reference_models import reference_source

pytestmark = pytest.mark.integration


def _fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat[stat.rfind(")") + 2:].startswith(("Z", "X"))


def _children(pid: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
                kids.append(int(name))
    return kids


def test_reference_model_on_mnist_5k(tmp_path):
    with Evaluator(tmp_path / "data") as ev:
        # 4k training images: small batches give the one epoch enough steps
        # a generous budget: this shared 2-core machine is often busy with other work
        out = ev.evaluate(EvalRequest(code=reference_source("tiny_cnn"), dataset="mnist-5k", threads=1,
                                      device="cpu", time_budget_s=600, prm={"batch": 32, "lr": 0.05}))
    assert out.status == "ok", out.error
    assert out.accuracy is not None and out.accuracy > 0.6, out.accuracy   # chance is 0.1
    assert out.params and out.flops and out.epochs and out.epochs[0]["seconds"] > 0
    assert set(out.seconds) >= {"parse", "policy", "build", "shape", "measure", "train", "test"}


TINY = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], {width}, 3, padding=1)
        self.fc = nn.Linear({width}, out_shape[0])

    def forward(self, x):
        {hook}
        x = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(x)
"""


def test_twenty_candidates_leak_nothing(tmp_path):
    with Evaluator(tmp_path / "data") as ev:
        warm = ev.evaluate(EvalRequest(code=TINY.format(width=4, hook="pass"), dataset="digits", threads=1))
        assert warm.status == "ok", warm.error  # dataset cached, file descriptors settled
        base = ev.sandbox_dirs[0]
        fds_here, fds_warm = _fds(), _fds(ev.warm_pid)
        statuses = []
        for i in range(20):
            hook = {4: "x = x.flatten(1)", 9: "raise ValueError('boom')"}.get(i % 10, "pass")
            out = ev.evaluate(EvalRequest(code=TINY.format(width=4 + i, hook=hook), dataset="digits", threads=1,
                                          augment=False))
            statuses.append(out.status)
            assert _children(ev.warm_pid) == []
            assert [p.name for p in base.iterdir() if p.name.startswith("c")] == []  # no workdir left
        assert statuses.count("ok") == 16 and statuses.count("shape_error") == 2, statuses
        assert statuses.count("runtime_error") == 2, statuses
        assert _fds() == fds_here and _fds(ev.warm_pid) == fds_warm
        assert ev.restarts == 0
    assert not base.exists()


ORPHAN_SCRIPT = """
import sys, threading
from pathlib import Path
from nasgraph.tools.evaluator import EvalRequest, Evaluator
holder = {}
t = threading.Thread(target=lambda: holder.update(ev=Evaluator(Path(sys.argv[1]))))
t.start(); t.join()  # created in a thread that is gone before the first candidate
ev = holder["ev"]
ok = ev.evaluate(EvalRequest(code=sys.argv[2], dataset="digits", threads=1))
print("first", ok.status, ev.restarts, ev.warm_pid, flush=True)
ev.evaluate(EvalRequest(code=sys.argv[2].replace("pass", "while True: pass"), dataset="digits", threads=1,
                        setup_timeout_s=600))
"""


def test_evaluator_from_a_thread_and_parent_death(tmp_path):
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    code = TINY.format(width=4, hook="pass")
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path / "data"), code],
                            stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().split()
        assert first[:3] == ["first", "ok", "0"], first  # the thread's end did not take the warm parent along
        warm_pid = int(first[3])
        time.sleep(2)  # the looping candidate is running now
        kids = _children(warm_pid)
        assert kids
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        alive = [warm_pid, *kids]
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _running(p)]
            time.sleep(0.2)
        assert alive == [], "the warm parent or its child outlived the Evaluator's process"
        assert not Path(f"/proc/{warm_pid}").exists() or not _running(warm_pid)
        leftovers = [p for p in Path(tempfile.gettempdir()).glob("nasgraph-eval-*") if (p / "zygote.log").exists()
                     and f"zygote {warm_pid}:" in (p / "zygote.log").read_text()]
        assert leftovers == [], "the dead Evaluator's temp tree was not removed"
    finally:
        proc.kill()
