"""The validation worker: imports torch and torchvision once, then forks one confined child per block.

Run as `python -m nasgraph.rag_index.worker BASE_DIR` by `nasgraph.rag_index.validate.Validator`. Protocol, JSON lines:

  stdin  {"id", "code", "name", "hint", "presented", "timeout_s", "memory_mb"}     one block
  stdout {"event": "ready", "pid": ...}                                once, after the imports
         {"event": "result", "id": ..., "result": {...}}               one per block

The child confines itself with the evaluator's own `child.confine` (process group, rlimits, scrubbed
environment, private working directory, captured output, unprivileged uid when we are root), runs
`probe.check` and writes its result to a pipe. This process owns the clock: past `timeout_s` the
child's process group is killed and the result is a `timeout`. Forking from a warm process saves
the seconds that importing torch costs per block.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time
from pathlib import Path

MAX_RESULT_BYTES = 1 << 20
OUTPUT_MB = 4


def warm_up() -> None:
    """Import what blocks use, and run the common layers once, before any fork: an unprivileged
    child may be unable to read the Python installation, so it must not import anything new."""
    import importlib
    import pkgutil

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from nasgraph.rag_index import probe  # noqa: F401 - imported for the children

    for stdlib in ("warnings", "collections.abc", "functools", "itertools", "math", "copy", "enum", "dataclasses",
                   "numbers", "operator", "typing", "abc", "inspect", "numpy"):
        importlib.import_module(stdlib)
    try:
        import torchvision
        for pkg in ("torchvision.models", "torchvision.ops"):
            root = importlib.import_module(pkg)
            for info in pkgutil.walk_packages(root.__path__, pkg + "."):
                importlib.import_module(info.name)
        del torchvision
    except ImportError:
        pass  # blocks that need torchvision then fail with an exec_error that says so
    torch.set_num_threads(1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, groups=1), nn.BatchNorm2d(8), nn.ReLU(), nn.GELU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.GroupNorm(2, 8), nn.SiLU(), nn.Hardswish(),
                          nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Dropout(0.1), nn.Flatten(), nn.Linear(32, 8),
                          nn.LayerNorm(8))
        m.eval()
        y = m(x)
        mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
        mha(y[:, None], y[:, None], y[:, None])
        F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        nn.Conv3d(3, 4, 3)(torch.randn(1, 3, 4, 8, 8))
        nn.Conv1d(3, 4, 3)(torch.randn(1, 3, 8))
    probe.check("import torch.nn as nn\nclass A(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
                "        self.l = nn.Linear(c, 2)\n    def forward(self, x):\n        return self.l(x)\n", "A")
    probe.check("raise ValueError('warm-up')", "A")


def _child(req: dict, wfd: int, zygote_pid: int) -> None:
    from nasgraph.rag_index import probe
    from nasgraph.tools.evaluator import child

    confine_req = {"workdir": req["workdir"], "max_output_mb": OUTPUT_MB, "threads": 1,
                   "memory_limit_mb": int(req.get("memory_mb", 2048)),
                   "cpu_limit_s": int(float(req.get("timeout_s", 60)) * 2) + 5,
                   "uid": req.get("uid"), "gid": req.get("gid"), "zygote_pid": zygote_pid}
    try:
        child.confine(confine_req, wfd)
        result = probe.check(req["code"], req["name"], req.get("hint") or {}, req.get("presented"))
    except BaseException as e:  # noqa: BLE001 - report, never raise out of a forked child
        result = {"executed": False, "failure": "sandbox_error", "error": f"{type(e).__name__}: {e}"[:400]}
    data = (json.dumps(result, default=str) + "\n").encode()
    while data:
        data = data[os.write(wfd, data):]


def run_one(req: dict, base: Path, count: int, uid: int | None, gid: int | None) -> dict:
    from nasgraph.tools.evaluator.sandbox import _rmtree
    from nasgraph.tools.evaluator.zygote import sweep

    workdir = base / f"b{count}"
    workdir.mkdir(mode=0o700)
    if uid is not None:
        os.chown(workdir, uid, gid)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # ---- child: never returns
        try:
            os.close(rfd)
            _child({**req, "workdir": str(workdir), "uid": uid, "gid": gid}, wfd, os.getppid())
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    timeout = float(req.get("timeout_s", 60))
    buf, timed_out = b"", False
    pidfd = os.pidfd_open(pid)
    deadline = time.monotonic() + timeout
    try:
        watch = [rfd, pidfd]
        while pidfd in watch:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select(watch, [], [], max(remaining, 0))
            if not ready:
                timed_out = True
                break
            if rfd in ready:
                chunk = os.read(rfd, 65536)
                if chunk and len(buf) < MAX_RESULT_BYTES:
                    buf += chunk
                elif not chunk:
                    watch.remove(rfd)
            if pidfd in ready:
                watch.remove(pidfd)
        try:
            os.killpg(pid, signal.SIGKILL)  # on time-out, and whatever the block left running
        except (ProcessLookupError, PermissionError):
            pass
        if rfd in watch:
            os.set_blocking(rfd, False)
            try:
                while chunk := os.read(rfd, 65536):
                    buf += chunk
            except BlockingIOError:
                pass
        _, status, usage = os.wait4(pid, 0)
    finally:
        os.close(pidfd)
        os.close(rfd)
    sweep(os.getpid())
    _rmtree(workdir)
    return _result(buf, status, usage, timed_out, timeout, int(req.get("memory_mb", 2048)))


def _result(buf: bytes, status: int, usage, timed_out: bool, timeout: float, memory_mb: int) -> dict:
    if timed_out:
        return {"executed": False, "failure": "timeout", "error": f"no result within {timeout:.0f}s; killed"}
    for line in buf.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            return msg
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGXCPU:
            return {"executed": False, "failure": "timeout", "error": f"CPU-time limit exceeded ({name})"}
        if usage.ru_maxrss >= 0.9 * memory_mb * 1024:
            return {"executed": False, "failure": "memory", "error": f"killed by {name} near the memory limit"}
        return {"executed": False, "failure": "crashed", "error": f"killed by {name}"}
    return {"executed": False, "failure": "crashed",
            "error": f"exited with code {os.waitstatus_to_exitcode(status)} without a result"}


def main(argv: list[str]) -> int:
    from nasgraph.tools.evaluator.sandbox import sandbox_ids
    from nasgraph.tools.evaluator.zygote import PR_SET_CHILD_SUBREAPER

    base = Path(argv[1])
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a stray print (ours or a library's) must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm_up()
    uid, gid = sandbox_ids()
    out.write(json.dumps({"event": "ready", "pid": os.getpid()}) + "\n")
    count = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        count += 1
        result = run_one(req, base, count, uid, gid)
        try:
            out.write(json.dumps({"event": "result", "id": req.get("id"), "result": result}, default=str) + "\n")
        except BrokenPipeError:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
