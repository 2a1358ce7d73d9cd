"""The warm parent: a long-lived process that imports torch once, caches datasets, and forks one child per candidate.

Run as `python -m nasgraph.tools.evaluator.zygote DATA_DIR` by `sandbox.WarmParent`; it reads one JSON request
per line on stdin and answers with JSON lines on stdout (never pickle):

  {"event": "ready", "pid": ...}                                  once, after the imports
  {"event": "dataset_error", "kind": ..., "message": ...}         the dataset could not be loaded
  {"event": "forked", "pid": ..., "load_s": ...}                  the child runs (its pid is its process group)
  {"event": "stage" | "stage_done" | "result", ...}               relayed from the child
  {"event": "exit", "code": ..., "signal": ..., "maxrss_kb": ..., "strays": ...}   the child is reaped

The zygote never runs torch compute with more than one thread, never runs backward (grad mode is off
for its whole life) and never initialises CUDA, so a forked child starts from a clean OpenMP, autograd
and CUDA state and sets its own threads and device. A backward in this process would start
autograd's per-device threads, and on a GPU machine every child would then fail ("Unable to handle
autograd's threading in combination with fork-based multiprocessing", "Cannot re-initialize CUDA in
forked subprocess"), and so would a CUDA runtime started below torch's notice ("CUDA error: initialization
error"; measured on an H200, where an Adam step on CPU tensors asked the runtime whether it was capturing a
graph): the warm-up runs with the GPU hidden (`_gpu_hidden`). On a CPU-only machine nothing would show
either, so `main` checks both, and the driver's device files, on every start. It is a child
subreaper, so processes that a candidate spawned and detached come back to it and are killed after
each candidate. It ends when its parent does (EOF on stdin, or a changed parent pid mid-candidate).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
MAX_LINE = 1 << 20          # a child line longer than this is dropped (a result is a few kB)
SWEEP_SECONDS = 5.0
ORPHAN_CHECK_S = 1.0        # while a child runs, how often to check that the Evaluator still exists
PARENT_PID = os.getppid()


class Channel:
    def __init__(self, fd: int) -> None:
        self.out = os.fdopen(fd, "w", buffering=1)
        self.broken = False

    def send(self, **msg: Any) -> None:
        if self.broken:
            return
        try:
            self.out.write(json.dumps(msg) + "\n")
        except BrokenPipeError:
            self.broken = True  # the Evaluator is gone; main() notices and leaves


def _children(me: int) -> list[int]:
    """Pids whose parent is this process (zombies included), from /proc."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == me:
            kids.append(int(name))
    return kids


def sweep(me: int) -> int:
    """Kill and reap every remaining child of the zygote (orphans the candidate left); returns how many."""
    killed = 0
    deadline = time.monotonic() + SWEEP_SECONDS
    while time.monotonic() < deadline:
        try:
            while True:  # reap whatever already died
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
        except ChildProcessError:
            return killed  # no children at all: the common, cheap case
        kids = _children(me)
        if not kids:
            return killed
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return killed


def _relay(chan: Channel, pid: int, rfd: int) -> tuple[int, int, Any]:
    """Forward the child's lines until it exits; return wait4's (pid, status, rusage).

    The child's exit (a pidfd) ends the relay, not EOF on the pipe: processes the candidate forked
    may still hold the pipe open, and they are killed afterwards."""
    pidfd = os.pidfd_open(pid)
    buf = bytearray()

    def take(chunk: bytes) -> None:
        nonlocal buf
        buf += chunk
        *lines, rest = bytes(buf).split(b"\n")
        buf = bytearray(rest if len(rest) <= MAX_LINE else b"")
        for line in lines:
            _forward(chan, line)

    try:
        watch = [rfd, pidfd]
        while True:
            ready, _, _ = select.select(watch, [], [], ORPHAN_CHECK_S)
            if not ready and os.getppid() != PARENT_PID:  # the Evaluator is gone: so is its clock
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if rfd in ready:
                chunk = os.read(rfd, 65536)
                if chunk:
                    take(chunk)
                else:
                    watch.remove(rfd)
            if pidfd in ready:
                break
        if rfd in watch:  # the child is gone; what it wrote before dying is in the pipe already
            os.set_blocking(rfd, False)
            try:
                while chunk := os.read(rfd, 65536):
                    take(chunk)
            except BlockingIOError:
                pass
        return os.wait4(pid, 0)
    finally:
        os.close(pidfd)


def _forward(chan: Channel, line: bytes) -> None:
    try:
        msg = json.loads(line)
    except ValueError:
        return
    if isinstance(msg, dict) and msg.get("event") in ("stage", "stage_done", "result", "checkpoint"):
        chan.send(**msg)


def _warm_exporters(cache: dict) -> None:
    """Before the first export: run the exporters once here (see deploy.warm_up). Not at start-up:
    they cost seconds that plain evaluations never need."""
    if cache.get("__exporters_warm__"):
        return
    import tempfile

    from nasgraph.tools.evaluator import deploy

    with tempfile.TemporaryDirectory(dir=os.getcwd()) as folder:
        deploy.warm_up(Path(folder))
    cache["__exporters_warm__"] = True


def handle(chan: Channel, req: dict, cache: dict, data_dir: Path) -> None:
    from nasgraph.tools.evaluator import child
    from nasgraph.tools.evaluator.datasets import DatasetUnavailable, load_dataset

    if req.get("task") == "export":
        try:
            _warm_exporters(cache)
        except Exception as e:  # noqa: BLE001 - the child then meets the same failure and reports it typed
            print(f"zygote: exporter warm-up failed: {type(e).__name__}: {e}", file=sys.stderr)
    t = time.perf_counter()
    name = req["dataset"]
    try:
        if name not in cache:
            cache[name] = load_dataset(name, data_dir)
    except DatasetUnavailable as e:
        chan.send(event="dataset_error", kind="DatasetUnavailable", message=str(e))
        return
    except Exception as e:  # noqa: BLE001 - unknown name, damaged files: the parent raises it
        chan.send(event="dataset_error", kind=type(e).__name__, message=str(e))
        return
    load_s = time.perf_counter() - t
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # ---- child: never returns
        try:
            os.close(rfd)
            child.run({**req, "zygote_pid": os.getppid()}, cache[name], wfd)
        finally:
            os._exit(70)
    os.close(wfd)
    try:
        os.setpgid(pid, pid)  # also done by the child; doing it here too closes the race with a kill
    except OSError:
        pass
    chan.send(event="forked", pid=pid, load_s=round(load_s, 4))
    try:
        _, status, usage = _relay(chan, pid, rfd)
    finally:
        os.close(rfd)
    try:
        os.killpg(pid, signal.SIGKILL)  # whatever the candidate left running in its group
    except (ProcessLookupError, PermissionError):
        pass
    strays = sweep(os.getpid())
    chan.send(event="exit", code=os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
              signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
              maxrss_kb=usage.ru_maxrss, strays=strays)


# Exercises the layers, losses and optimizers generated models commonly use, so that their lazy
# imports (torch._dynamo, sympy, ... : hundreds of modules, seconds of work) happen once, here.
WARMUP_MODEL = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        c = in_shape[1]
        self.conv = nn.Sequential(
            nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
            nn.GroupNorm(2, 8), nn.GELU(), nn.MaxPool2d(2), nn.AvgPool2d(1), nn.Dropout2d(0.1), nn.LeakyReLU())
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(8, out_shape[0]))

    def forward(self, x):
        x = self.conv(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        t = F.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)
        t = self.enc(t)
        t = t + self.mha(t, t, t)[0] + F.scaled_dot_product_attention(t, t, t)
        return self.head(self.norm(t).mean(1).view(t.size(0), -1, 1, 1))

    def train_setup(self, prm):
        self.criteria = (nn.CrossEntropyLoss(label_smoothing=0.1),)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3)
"""


@contextlib.contextmanager
def _gpu_hidden():
    """torch.cuda.is_available() says no while this is active. Library code that finds a GPU may call
    the CUDA runtime directly (the optimizers' graph-capture health check does), which starts the driver
    in this process without torch.cuda.is_initialized() knowing, and no forked child can then use CUDA."""
    import torch

    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: False
    try:
        yield
    finally:
        torch.cuda.is_available = real


def driver_files() -> list[str]:
    """NVIDIA device files this process holds open: there are some once the CUDA driver was started."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/dev/nvidia"):
            held.append(target)
    return sorted(held)


def warm_up() -> None:
    """Run the child's stages in-process, on the CPU with one thread, on a tiny synthetic dataset,
    with autograd off and CUDA untouched (the caller checks both), so that forked children can train
    and use a GPU.

    Besides speed this matters for correctness: a child that dropped to an unprivileged uid may be
    unable to read the Python installation (here it lives under /root), so a module it first
    imports after the fork would fail to load."""
    import importlib

    import torch

    from nasgraph.tools.evaluator import child, policy
    from nasgraph.tools.evaluator.datasets import TensorData
    from nasgraph.tools.evaluator.harness import rehearse
    from nasgraph.tools.evaluator.reference_models import reference_names, reference_source

    for mod in (*policy.ALLOWED_MODULES, "encodings.idna"):  # idna: any socket call with a host name
        try:
            importlib.import_module(mod)
        except ImportError:
            pass  # e.g. no torchvision: candidates importing it get a build_error
    g = torch.Generator().manual_seed(0)
    data = TensorData("warm-up", torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=g),
                      torch.randint(0, 10, (64,), generator=g), torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8,
                                                                               generator=g),
                      torch.randint(0, 10, (16,), generator=g), 10, (0.5,), (0.25,))
    req = {"seed": 0, "batch": 32, "batch_size": 32, "prm": {"dropout": 0.1}, "epochs": 1, "time_budget_s": 600.0,
           "augment": True, "max_params": 10**9, "max_flops": 10**12}
    device = torch.device("cpu")
    for code in [WARMUP_MODEL, *(reference_source(n) for n in reference_names())]:
        r = {**req, "prm_full": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "label_smoothing": 0.0,
                                 "dropout": 0.1, "batch": 32}}
        with _gpu_hidden():
            model = child.build(code, r, data, device)
            x = child.shape_check(model, code.splitlines(), data, device)
            child.measure(model, x, r)
            rehearse(model, data, r["prm_full"])  # the training path, without backward: see rehearse()
    try:  # the error paths format tracebacks and classify messages: warm them too
        child.build("raise ValueError('x')", req, data, device)
    except child.Failure:
        pass
    child.installed_modules()  # listed once, as this user: a child may no longer be able to read the installation


def main(argv: list[str]) -> int:
    data_dir = Path(argv[1])
    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started us ends, and an Evaluator may
    # be created in a short-lived thread. Parent death shows as EOF on stdin (idle) or a changed
    # parent pid (while relaying), and each child has the signal armed against us instead.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    chan = Channel(os.dup(1))
    os.dup2(2, 1)  # a stray print (ours or a library's) must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the Evaluator decides when we stop
    # Started from an evaluator's pool thread (a restart), we inherit its blocked signals; candidates
    # must not.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    # torch.cuda.is_available() (a candidate's device="auto") must not initialise the driver here.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    import torch

    torch.set_num_threads(1)  # torch work here (warm-up, dataset caching) stays on this thread: no pool to fork
    torch.set_grad_enabled(False)  # no backward in the forking process, ever; the child turns it back on
    t = time.perf_counter()
    warm_up()
    if torch.cuda.is_initialized() or driver_files():
        print(f"zygote: CUDA was initialised before forking ({', '.join(driver_files()) or 'by torch'}); "
              "children could not use it", file=sys.stderr)
        return 3
    threads = len(os.listdir("/proc/self/task"))
    print(f"zygote {os.getpid()}: warm-up {time.perf_counter() - t:.1f}s, {threads} thread(s)", file=sys.stderr)
    chan.send(event="ready", pid=os.getpid(), threads=threads, grad_enabled=torch.is_grad_enabled(),
              cuda_initialized=torch.cuda.is_initialized())
    cache: dict = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        handle(chan, req, cache, data_dir)
        if chan.broken:
            break
    if os.getppid() != PARENT_PID:  # the Evaluator died without close(): remove its temp tree for it
        shutil.rmtree(os.getcwd(), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
