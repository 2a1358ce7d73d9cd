"""The process that forks candidates must never run backward nor initialise CUDA.

On a GPU machine either one breaks every forked child ("Unable to handle autograd's threading in
combination with fork-based multiprocessing", "Cannot re-initialize CUDA in forked subprocess"),
while on a CPU-only machine everything still works: these tests catch it without a GPU.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from nasgraph.tools.evaluator import EvalRequest, Evaluator
from nasgraph.tools.evaluator.sandbox import PROJECT_ROOT

# Runs the warm parent's warm-up with autograd *enabled* and every entry into backward or CUDA
# recorded, so that a warm-up that trains (as it once did) is seen even though it would succeed here.
PROBE = textwrap.dedent("""
    import json
    import torch
    import torch.autograd
    import torch.cuda

    calls = []

    def record(name, fn):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)
        return wrapper

    torch.autograd.backward = record("backward", torch.autograd.backward)
    torch.autograd.grad = record("grad", torch.autograd.grad)
    torch.cuda._lazy_init = record("cuda_init", torch.cuda._lazy_init)
    torch.cuda.init = record("cuda_init", torch.cuda.init)
    torch.set_num_threads(1)

    from nasgraph.tools.evaluator import zygote
    zygote.warm_up()
    print(json.dumps({"calls": calls, "cuda_initialized": torch.cuda.is_initialized()}))
""")


def test_warm_up_never_runs_backward_nor_touches_cuda():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"calls": [], "cuda_initialized": False}


def test_the_probe_sees_a_backward(tmp_path):
    # The probe above would be worthless if a training step slipped past it: show that it records one.
    probe = PROBE.replace("from nasgraph.tools.evaluator import zygote\nzygote.warm_up()",
                          "x = torch.ones(2, requires_grad=True)\n(x * 2).sum().backward()")
    assert probe != PROBE
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["calls"] == ["backward"]


def test_warm_parent_forks_with_autograd_off_and_children_still_train(tmp_path):
    model = textwrap.dedent("""
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self, in_shape, out_shape, prm, device):
                super().__init__()
                self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], 32),
                                          nn.ReLU(), nn.Linear(32, out_shape[0]))

            def forward(self, x):
                return self.body(x)
    """)
    with Evaluator(tmp_path / "data") as ev:
        out = ev.evaluate(EvalRequest(code=model, dataset="digits", threads=1, batch_size=64, augment=False,
                                      device="cpu"))
        state = ev.warm_state
    assert out.status == "ok", out.error
    assert out.accuracy is not None and out.accuracy > 0.5  # the child re-enabled autograd and learned
    assert state["grad_enabled"] is False and state["cuda_initialized"] is False
