"""The process that forks candidates must never run backward nor initialise CUDA.

On a GPU machine either one breaks every forked child ("Unable to handle autograd's threading in
combination with fork-based multiprocessing", "Cannot re-initialize CUDA in forked subprocess", or,
when the runtime was started below torch's notice, "CUDA error: initialization error"), while on a
CPU-only machine everything still works: these tests catch it without a GPU, by pretending one is
there and recording every call into torch's CUDA runtime bindings.
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
# As on a GPU machine, torch.cuda.is_available() says yes, so code that asks first and then calls the
# CUDA runtime (the optimizers' graph-capture health check) takes its GPU path; each entry into CUDA
# is recorded and then refused, as there is no driver here, and the run stops there.
PROBE = textwrap.dedent("""
    import json
    import torch
    import torch.autograd
    import torch.cuda

    calls = []

    def record(name, fn, refuse=False):
        def wrapper(*args, **kwargs):
            calls.append(name)
            if refuse:
                raise RuntimeError(f"probe: {name} was called")
            return fn(*args, **kwargs)
        return wrapper

    torch.autograd.backward = record("backward", torch.autograd.backward)
    torch.autograd.grad = record("grad", torch.autograd.grad)
    torch.cuda._lazy_init = record("cuda_init", torch.cuda._lazy_init, refuse=True)
    torch.cuda.init = record("cuda_init", torch.cuda.init, refuse=True)
    torch.cuda.is_available = lambda: True
    for name in dir(torch._C):
        if name.startswith("_cuda_") and callable(getattr(torch._C, name)):
            setattr(torch._C, name, record(name, getattr(torch._C, name), refuse=True))
    torch.set_num_threads(1)

    error = None
    try:
        from nasgraph.tools.evaluator import zygote
        zygote.warm_up()
    except RuntimeError as e:
        error = str(e)
    print(json.dumps({"calls": calls, "cuda_initialized": torch.cuda.is_initialized(), "error": error}))
""")


def test_warm_up_never_runs_backward_nor_touches_cuda():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=PROJECT_ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"calls": [], "cuda_initialized": False, "error": None}


def test_the_probe_sees_a_backward(tmp_path):
    # The probe above would be worthless if a training step slipped past it: show that it records one.
    probe = PROBE.replace("from nasgraph.tools.evaluator import zygote\n    zygote.warm_up()",
                          "x = torch.ones(2, requires_grad=True)\n    (x * 2).sum().backward()")
    assert probe != PROBE
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["calls"] == ["backward"]


def test_the_probe_sees_the_cuda_runtime_called_by_an_optimizer_step():
    # An Adam step on CPU tensors, on a GPU machine, asks the CUDA runtime whether it is capturing a
    # graph. With torch 2.11 on an H200 that started the runtime without torch.cuda.is_initialized()
    # knowing, and every CUDA child failed; the warm-up rehearses such a step (with the GPU hidden).
    probe = PROBE.replace("from nasgraph.tools.evaluator import zygote\n    zygote.warm_up()",
                          "p = torch.nn.Parameter(torch.ones(2))\n    p.grad = torch.zeros(2)\n"
                          "    torch.optim.Adam([p], lr=0.1).step()")
    assert probe != PROBE
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["calls"] and seen["error"], seen


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
