"""What runs inside the forked child: confine the process, then build, shape-check, measure, train, test.

The warm parent (`zygote.py`) forks this child with torch and the dataset already in memory and
calls `run(request, data, result_fd)`, which never returns. The child first confines itself
(`confine`): own process group, parent-death signal, resource limits, scrubbed environment, a
private working directory, output captured to a capped file, no network namespace where the
kernel allows, and, when started as root, an unprivileged uid/gid (RLIMIT_NPROC is not enforced
for root). Then it runs the stages and reports each one as a JSON line on `result_fd`, so that a
parent that has to kill it still knows how far it got. The last line is the typed Outcome.

This is damage control for buggy or careless generated code, not a security boundary against a
determined attacker: run nasgraph in a container (or VM) when the code may be hostile.
"""
from __future__ import annotations

import ast
import ctypes
import functools
import io
import json
import linecache
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from nasgraph.tools.evaluator import deploy
from nasgraph.tools.evaluator.datasets import TensorData
from nasgraph.tools.evaluator.diagnosis import Diagnosis, classify_message, is_memory_message, is_shape_message
from nasgraph.tools.evaluator.harness import (
    DEFAULTS,
    NaNLoss,
    OverBudget,
    Screen,
    ScreenedOut,
    _batch_size,
    pick_device,
    test_accuracy,
    train_and_test,
)
from nasgraph.tools.evaluator.hyperparameters import Hyperparameters, complete, declared
from nasgraph.tools.evaluator.inert import behaviour, unused_layers
from nasgraph.tools.evaluator.outcome import Outcome

FILENAME = "<candidate>"
NPROC_LIMIT = 64           # tasks (threads included) the unprivileged uid may hold: room for torch, not a fork storm
NOFILE_LIMIT = 1024
MAX_ERROR_LINES = 15
MAX_MESSAGE_CHARS = 800
PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
            "CUDA_DEVICE_ORDER")
# Shape failures a larger input cures (see fit_input): a map pooled below its kernel, a flatten sized for more pixels.
RESIZE_KINDS = {"too_small", "linear_size"}


# ---------------------------------------------------------------- reporting

class Reporter:
    """JSON lines to the parent. Only the original child reports: a process the candidate forked
    that wanders into this code exits silently instead of sending a second result."""

    def __init__(self, fd: int) -> None:
        self.fd, self.pid = fd, os.getpid()

    def send(self, **msg: Any) -> None:
        if os.getpid() != self.pid:
            os._exit(0)
        data = (json.dumps(msg, default=str) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]


class CappedText(io.TextIOBase):
    """sys.stdout/sys.stderr for the candidate: writes to the log fd until a shared byte budget is
    spent, then counts and drops the rest (RLIMIT_FSIZE backs this up for raw fd writes)."""

    budget = 0
    dropped = 0

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        data = str(s).encode("utf-8", "replace")
        keep = data[: max(CappedText.budget, 0)]
        CappedText.budget -= len(keep)
        CappedText.dropped += len(data) - len(keep)
        try:
            while keep:
                keep = keep[os.write(self.fd, keep):]
        except OSError:
            CappedText.dropped += len(keep)
        return len(s)


# ---------------------------------------------------------------- confinement

def _vm_data_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def _limit(which: int, value: int) -> None:
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(which)  # lower the soft limit as far as the hard one allows
        if hard == resource.RLIM_INFINITY or value <= hard:
            resource.setrlimit(which, (value, hard))


def confine(req: dict, result_fd: int) -> None:
    """Shut this freshly forked process in. Order matters: limits and namespaces need root, so the
    uid/gid drop comes last, and the parent-death signal is armed after it (a credential change clears it)."""
    os.setpgid(0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long write fails with EFBIG instead of killing
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass

    workdir = req["workdir"]
    os.chdir(workdir)
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(os.path.join(workdir, "output.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # Everything else the zygote held (its request/response pipes included) is closed.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != result_fd:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own fd, already gone
    cap = int(req["max_output_mb"]) * 2**20
    CappedText.budget = cap
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout, sys.stderr = CappedText(1), CappedText(2)

    threads = str(req["threads"])
    keep = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    os.environ.clear()
    os.environ.update(keep, HOME=workdir, TMPDIR=workdir, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    os.environ.setdefault("PATH", "/usr/bin:/bin")
    # The warm parent already asked tempfile for its folder (its own, which the unprivileged child may
    # not write to) and tempfile remembers the answer: point it at the workdir too (torch.export's
    # caches live there).
    tempfile.tempdir = workdir

    # memory_limit_mb is what the candidate may allocate on top of the inherited torch + data footprint.
    _limit(resource.RLIMIT_DATA, _vm_data_bytes() + int(req["memory_limit_mb"]) * 2**20)
    _limit(resource.RLIMIT_CPU, int(req["cpu_limit_s"]))
    # A checkpoint or an exported model may be larger than the output cap; each is one file the parent copies out.
    big = int(req.get("artifact_mb") or 0) * 2**20 if (req.get("checkpoint") or req.get("task") == "export") else 0
    _limit(resource.RLIMIT_FSIZE, max(cap + 2**16, big))
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_NOFILE, NOFILE_LIMIT)
    uid, gid = req.get("uid"), req.get("gid")
    if os.geteuid() == 0 and uid is not None:
        _limit(resource.RLIMIT_NPROC, NPROC_LIMIT)
        libc.unshare(CLONE_NEWNET)  # best effort: an empty network namespace, only loopback (down)
        os.setgroups([])
        os.setgid(int(gid))
        os.setuid(int(uid))
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != req["zygote_pid"]:  # the zygote died before the signal was armed
        os._exit(75)
    torch.set_num_threads(int(req["threads"]))


# ---------------------------------------------------------------- error text

def _source_line(code_lines: list[str], lineno: int | None) -> str:
    if lineno and 0 < lineno <= len(code_lines):
        return code_lines[lineno - 1].strip()
    return ""


def candidate_frames(exc: BaseException, code_lines: list[str], last: int = 3) -> list[str]:
    """The traceback's frames in candidate code (`File "<candidate>", line N` + that line)."""
    lines: list[str] = []
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    for f in frames[-last:]:
        lines.append(f'File "{FILENAME}", line {f.lineno}, in {f.name}')
        src = _source_line(code_lines, f.lineno)
        if src:
            lines.append(f"    {src}")
    return lines


def format_error(exc: BaseException, code_lines: list[str], extra: list[str] | None = None) -> str:
    """Exception type and message plus the candidate's own frames; never the harness's internals."""
    lines = candidate_frames(exc, code_lines)
    if isinstance(exc, SyntaxError) and exc.filename == FILENAME:
        lines.append(f'File "{FILENAME}", line {exc.lineno}')
        lines.append(f"    {_source_line(code_lines, exc.lineno)}")
    msg = str(exc).strip()
    if len(msg) > MAX_MESSAGE_CHARS:
        msg = msg[:MAX_MESSAGE_CHARS] + " ..."
    msg_lines = msg.splitlines() or [""]
    budget = MAX_ERROR_LINES - len(lines) - len(extra or [])
    head = [f"{type(exc).__name__}: {msg_lines[0]}", *msg_lines[1:]][: max(budget, 1)]
    return "\n".join([*lines, *head, *(extra or [])])


def is_memory_error(exc: BaseException) -> bool:
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or is_memory_message(str(exc))


def is_shape_error(exc: BaseException) -> bool:
    return isinstance(exc, (RuntimeError, ValueError, IndexError, TypeError)) and is_shape_message(str(exc))


class LayerTracker:
    """Forward hooks that remember which submodule was running, and on what input, when forward failed."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[tuple[str, nn.Module, list[tuple[int, ...]]]] = []
        self.handles = []
        for name, mod in model.named_modules():
            self.handles.append(mod.register_forward_pre_hook(self._enter(name or "(model)")))
            self.handles.append(mod.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(mod, args):
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            self.stack.append((name, mod, shapes))
        return hook

    def _leave(self, mod, args, out):
        if self.stack:
            self.stack.pop()

    def locate(self, d: Diagnosis) -> Diagnosis:
        """The diagnosis with the running submodule's path, class and input shapes filled in."""
        if not self.stack:
            return d
        name, mod, shapes = self.stack[-1]
        return d.model_copy(update={"module_path": name, "layer_type": type(mod).__name__,
                                    "input_shapes": [list(s) for s in shapes]})

    def describe(self) -> list[str]:
        if not self.stack:
            return []
        name, mod, shapes = self.stack[-1]
        text = repr(mod)
        what = text if "\n" not in text and len(text) <= 120 else type(mod).__name__
        inputs = ", ".join(str(s) for s in shapes) or "no tensor"
        return [f"in module '{name}' = {what}, called with input shape {inputs}"]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


# ---------------------------------------------------------------- stages

class Failure(Exception):
    """A stage's typed failure, carried up to `run_stages`."""

    def __init__(self, status: str, error: str, detail: dict | None = None, diagnosis: Diagnosis | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail or {}
        self.diagnosis = diagnosis or Diagnosis()


@functools.cache
def installed_modules() -> frozenset[str]:
    """Top-level modules this Python could import, listed without importing any. The warm parent
    computes it before forking: a child that dropped to an unprivileged uid may not be able to read
    the installation (see zygote.warm_up), so it could not tell "not installed" from "not loadable"."""
    import pkgutil

    return frozenset(m.name for m in pkgutil.iter_modules()) | frozenset(sys.builtin_module_names)


def _imported_at(line: int | None) -> list[str]:
    """The modules the candidate's import statement on `line` names (none when it is no import)."""
    try:
        node = ast.parse(linecache.getline(FILENAME, line).strip()).body[0] if line else None
    except (SyntaxError, IndexError):
        return []
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return ["." * node.level + (node.module or "")]
    return []


def missing_module(exc: BaseException, line: int | None) -> str | None:
    """The module an ImportError could not find: ModuleNotFoundError names it; a relative import
    (`from .blocks import X`, a file taken out of its package) is read from the candidate's line."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return exc.name
    if type(exc) is ImportError and "relative import" in str(exc):
        return next(iter(_imported_at(line)), None)
    return None


def _missing_module_text(name: str, line: int | None) -> str:
    if name.startswith("."):
        return (f"missing module: '{name}' is a relative import; the file was taken out of its package, "
                "and only the one file is evaluated")
    # The candidate may import something that is there and needs something that is not.
    wanted = [m for m in _imported_at(line) if not (m == name or m.startswith(name + "."))]
    needed = f" (needed by '{wanted[0]}', imported at line {line})" if wanted else ""
    if name.split(".")[0] in installed_modules():
        return (f"missing module: '{name}'{needed} is installed here, but the sandboxed child cannot load it: "
                "it runs as an unprivileged user and has only the modules the warm parent loaded before forking")
    return f"missing module: '{name}'{needed} is not installed in this environment"


def diagnose(exc: BaseException, tracker: LayerTracker | None = None) -> Diagnosis:
    """Kind and fields of a candidate's exception: the message's, the innermost own frame's line,
    and the running submodule (when forward hooks were on)."""
    d = classify_message(type(exc).__name__, str(exc))
    own = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    d.line = own[-1].lineno if own else None
    if isinstance(exc, ImportError) and (name := missing_module(exc, d.line)):
        d = d.model_copy(update={"kind": "missing_module", "name": name})
    return tracker.locate(d) if tracker is not None else d


def _classify(exc: BaseException, default: str, code_lines: list[str], extra: list[str] | None = None,
              tracker: LayerTracker | None = None) -> Failure:
    d = diagnose(exc, tracker)
    if isinstance(exc, SystemExit):
        text = "\n".join([*candidate_frames(exc, code_lines),
                           f"the candidate called sys.exit({exc.code!r}) before reporting a result"])
        return Failure("runtime_error", text, {"exit_code": exc.code if isinstance(exc.code, int) else None}, d)
    if is_memory_error(exc):
        return Failure("memory", format_error(exc, code_lines, extra), diagnosis=d)
    if default != "build_error" and is_shape_error(exc):
        return Failure("shape_error", format_error(exc, code_lines, extra), diagnosis=d)
    if d.kind == "missing_module" and d.name:
        extra = [*(extra or []), _missing_module_text(d.name, d.line)]
    return Failure(default, format_error(exc, code_lines, extra), diagnosis=d)


def load(code: str) -> dict[str, Any]:
    """Execute the candidate module; its namespace."""
    code_lines = code.splitlines()
    linecache.cache[FILENAME] = (len(code), None, code.splitlines(True), FILENAME)
    namespace: dict[str, Any] = {"__name__": "candidate"}
    try:
        exec(compile(code, FILENAME, "exec"), namespace)  # noqa: S102 - this process exists to run it
    except BaseException as e:  # noqa: BLE001 - every failure of candidate code is an outcome
        raise _classify(e, "build_error", code_lines) from None
    return namespace


def fill_prm(namespace: dict[str, Any], req: dict, data: TensorData) -> tuple[Hyperparameters, dict]:
    """The request's prm with every key the model declares (`supported_hyperparameters()`, module
    level or on Net) filled, and any other it reads filled on demand; see hyperparameters.py.
    Returns (prm, notes for the outcome's detail: `prm_filled` keeps growing as keys are read)."""
    fn = namespace.get("supported_hyperparameters")
    net = namespace.get("Net")
    if not callable(fn) and isinstance(net, type):
        fn = getattr(net, "supported_hyperparameters", None)
    names, own, problem = declared(fn)
    run_facts = {"batch": int(req["batch"]), "batch_size": int(req["batch"]), "epoch": int(req["epochs"]),
                 "num_classes": data.classes}
    prm = complete(req["prm_full"], names, own, run_facts)
    notes: dict[str, Any] = {"prm_filled": prm.filled}
    if problem:
        notes["prm_declared_error"] = problem
    return prm, notes


def build(code: str, req: dict, data: TensorData, device: torch.device) -> nn.Module:
    """Execute the module and construct Net with `req["prm_full"]` as it is."""
    return construct(load(code), code, req, data, device)


def in_shape(data: TensorData, side: int | None) -> tuple[int, int, int]:
    """(C, H, W) the model is given: the data's, or upsampled to side x side."""
    c, h, w = data.in_shape
    return (c, side, side) if side else (c, h, w)


def construct(namespace: dict[str, Any], code: str, req: dict, data: TensorData, device: torch.device,
              side: int | None = None) -> nn.Module:
    code_lines = code.splitlines()
    try:
        net = namespace.get("Net")
        if not (isinstance(net, type) and issubclass(net, nn.Module)):
            found = "nothing" if net is None else f"{type(net).__name__} {net!r}"[:80]
            raise Failure("build_error", f"the module must define `class Net(nn.Module)`; found {found} named Net")
        c, h, w = in_shape(data, side)
        torch.manual_seed(int(req["seed"]))
        prm = req["prm_full"]
        given = prm.copy() if isinstance(prm, Hyperparameters) else dict(prm)  # the model may change its own
        model = net((int(req["batch"]), c, h, w), (data.classes,), given, device)
        if not isinstance(model, nn.Module):
            raise Failure("build_error", "Net(...) did not produce an nn.Module")
        return model.to(device)
    except Failure:
        raise
    except BaseException as e:  # noqa: BLE001 - every failure of candidate code is an outcome
        raise _classify(e, "build_error", code_lines) from None


def shape_check(model: nn.Module, code_lines: list[str], data: TensorData, device: torch.device,
                side: int | None = None) -> torch.Tensor:
    c, h, w = in_shape(data, side)
    x = torch.randn(2, c, h, w, device=device)
    tracker = LayerTracker(model)
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except BaseException as e:  # noqa: BLE001
        extra = [*tracker.describe(), f"dummy input batch: {tuple(x.shape)}"]
        raise _classify(e, "runtime_error", code_lines, extra, tracker) from None
    finally:
        tracker.close()
        model.train()
    if not isinstance(out, torch.Tensor):
        raise Failure("shape_error", f"forward must return a Tensor of shape (2, {data.classes}) for a batch of 2, "
                                     f"got {type(out).__name__}",
                      diagnosis=Diagnosis(kind="not_tensor", owner=type(out).__name__, expected=[2, data.classes],
                                          input_shapes=[list(x.shape)]))
    if tuple(out.shape) != (2, data.classes):
        raise Failure("shape_error", f"output shape: expected (2, {data.classes}) (batch, classes) for input "
                                     f"{tuple(x.shape)}, got {tuple(out.shape)}",
                      {"expected": [2, data.classes], "got": list(out.shape)},
                      Diagnosis(kind="output_shape", expected=[2, data.classes], got=list(out.shape),
                                input_shapes=[list(x.shape)]))
    return x


def drop_unreached_lazy(model: nn.Module) -> None:
    """A Lazy layer the shape check's forward never reached (built and never used; rules make layers
    Lazy) has no weights and never will, and the parameter count and the optimizer would fail on it:
    it becomes an Identity, which changes nothing forward computes."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, nn.Identity())


def _check_unused(unused: list[str], req: dict) -> None:
    allowed = req.get("unused_allowed")
    new = [n for n in unused if allowed is not None and n not in allowed]
    if new:
        raise Failure("build_error", f"built in __init__ but never used by forward: {', '.join(new[:8])}"
                                     f"{' and more' if len(new) > 8 else ''}. A layer forward does not call changes "
                                     "nothing: use it in forward() where the change needs it, or leave it out",
                      {"unused": unused}, Diagnosis(kind="unused_layers", name=", ".join(new)))


def _check_same(digest: str | None, req: dict) -> None:
    if digest is not None and digest == req.get("parent_behaviour"):
        raise Failure("build_error", "computes exactly what its parent computes (the same outputs and gradients "
                                     "from the same starting weights): the change was not made. Layers built but "
                                     "never called, renamed attributes and comments change nothing: make the "
                                     "change asked for in forward()",
                      {"behaviour": digest}, Diagnosis(kind="same_as_parent"))


def measure(model: nn.Module, x: torch.Tensor, req: dict) -> tuple[int, int | None, dict]:
    """Parameter count and forward FLOPs per sample (FlopCounterMode counts a multiply-add as 2)."""
    params = sum(p.numel() for p in model.parameters())
    flops: int | None = None
    note: dict = {}
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        flops = int(counter.get_total_flops()) // x.shape[0]
    except Exception as e:  # noqa: BLE001 - a counting failure must not fail a model that runs
        note["flops_error"] = f"{type(e).__name__}: {e}"[:200]
    finally:
        model.train()
    return params, flops, note


def _check_budgets(params: int, flops: int | None, req: dict) -> None:
    problems, budgets = [], {}
    if params > int(req["max_params"]):
        problems.append(f"{params:,} parameters exceed the budget of {int(req['max_params']):,}")
        budgets["parameters"] = [float(params), float(req["max_params"])]
    if flops is not None and flops > int(req["max_flops"]):
        problems.append(f"{flops:,} FLOPs per sample exceed the budget of {int(req['max_flops']):,}")
        budgets["FLOPs"] = [float(flops), float(req["max_flops"])]
    if problems:
        raise Failure("over_budget", "; ".join(problems) + " (checked before training)",
                      {"params": params, "max_params": req["max_params"], "flops": flops, "max_flops": req["max_flops"]},
                      Diagnosis(kind="over_budget", budgets=budgets))


ARTIFACTS, RESUME = "artifacts", "resume.pt"   # in the workdir: what the parent copies out / copied in


def _saved_state() -> dict | None:
    """The checkpoint (or trained weights) the parent placed in the workdir, if any. weights_only:
    tensors and plain values only, whoever wrote the file."""
    return torch.load(RESUME, weights_only=True, map_location="cpu") if os.path.exists(RESUME) else None


def _checkpointer(report: Reporter):
    """After each epoch: the checkpoint to artifacts/ (atomically), then an event, upon which the
    parent copies it out of this temporary folder."""
    os.makedirs(ARTIFACTS, exist_ok=True)

    def on_epoch(state: dict) -> None:
        tmp = os.path.join(ARTIFACTS, ".checkpoint.tmp")
        torch.save(state, tmp)
        os.replace(tmp, os.path.join(ARTIFACTS, "checkpoint.pt"))
        report.send(event="checkpoint", epoch=state["done"] - 1, stats=state["history"][-1])
    return on_epoch


def train(model: nn.Module, code_lines: list[str], data: TensorData, req: dict, device: torch.device,
          side: int | None = None, report: Reporter | None = None, screen: Screen | None = None):
    checkpoint = bool(req.get("checkpoint")) and report is not None
    try:
        return train_and_test(model, data, dict(req["prm_full"]), epochs=int(req["epochs"]),
                              time_budget_s=float(req["time_budget_s"]), batch_size=int(req["batch_size"]),
                              device=device, seed=int(req["seed"]), augment=bool(req["augment"]), side=side,
                              resume=_saved_state() if checkpoint else None,
                              on_epoch=_checkpointer(report) if checkpoint else None, screen=screen)
    except ScreenedOut as e:
        raise Failure("screened", str(e), {"screen": e.screen.facts(), "projected_s": round(e.projected_s, 2)}) from None
    except OverBudget as e:
        raise Failure("over_budget", f"too slow: {e}", {"projected_s": round(e.projected_s, 2), "budget_s": e.budget_s,
                                                        "batches_timed": e.batches_timed, "epoch": e.epoch},
                      Diagnosis(kind="over_budget", budgets={"epoch time": [e.projected_s, e.budget_s]})) from None
    except NaNLoss as e:
        raise Failure("nan_loss", str(e), {"batch": e.batch, "epoch": e.epoch}, Diagnosis(exc_type="NaNLoss")) from None
    except BaseException as e:  # noqa: BLE001
        raise _classify(e, "runtime_error", code_lines) from None


def export_stage(model: nn.Module, code_lines: list[str], data: TensorData, req: dict, device: torch.device,
                 side: int | None) -> dict:
    """Load the trained weights the parent placed here, check them (test accuracy), write the
    requested formats into artifacts/ and time them; the facts go into the outcome's detail."""
    try:
        state = _saved_state()
        if state is None:
            raise Failure("runtime_error", "no trained weights were given to export")
        model.load_state_dict(state["model"] if "model" in state else state)
        model.eval()
        accuracy = test_accuracy(model, data, device, side)
        facts = deploy.export(model.cpu(), data, side, list(req.get("export_formats") or []), Path(ARTIFACTS),
                       threads=int(req["threads"]), extra_meta={**(req.get("export_meta") or {}), "test_accuracy": accuracy})
    except Failure:
        raise
    except BaseException as e:  # noqa: BLE001 - an exporter's failure on this model is an outcome
        raise _classify(e, "runtime_error", code_lines) from None
    return {"accuracy": accuracy, "export": facts}


def fit_input(model: nn.Module, namespace: dict[str, Any], code: str, req: dict, data: TensorData,
              device: torch.device, result: dict) -> tuple[nn.Module, torch.Tensor, int | None]:
    """Shape-check the model on the data's own size; when it cannot take that size and the request
    names larger image sides (`image_sides`), rebuild and check it at each in turn, smallest first.
    LEMUR's models were written for inputs resized to 32-512 pixels (its runs record the resize).
    Returns (model, dummy input, the side used or None); the side is noted in result["detail"]."""
    own = max(data.in_shape[1:])
    sides: list[int | None] = [None, *sorted({int(s) for s in req.get("image_sides") or [] if int(s) > own})]
    code_lines = code.splitlines()
    for i, side in enumerate(sides):
        if side is not None:
            result.setdefault("detail", {})["image_side"] = side  # also says which size a failure is from
            model = construct(namespace, code, req, data, device, side)
        try:
            x = shape_check(model, code_lines, data, device, side)
        except Failure as f:
            if i + 1 == len(sides) or f.diagnosis.kind not in RESIZE_KINDS:
                raise
            continue
        return model, x, side
    raise AssertionError("unreachable: the last side re-raises")


def _filled(notes: dict) -> dict:
    """The prm notes for an outcome's detail, without an empty record."""
    return {k: v for k, v in notes.items() if v}


def run_stages(req: dict, data: TensorData, report: Reporter) -> Outcome:
    code = req["code"]
    code_lines = code.splitlines()
    seconds: dict[str, float] = {}
    stage = "build"
    result: dict[str, Any] = {}
    notes: dict[str, Any] = {}  # which prm keys were filled, kept on every outcome from the build on
    started = time.perf_counter()

    def begin(name: str) -> float:
        nonlocal stage, started
        stage, started = name, time.perf_counter()
        report.send(event="stage", stage=name)
        return started

    def failed_in() -> dict[str, float]:
        """The seconds of every stage, the one that failed included (a NaN at batch 178 spent them training)."""
        return {**seconds, stage: seconds.get(stage, round(time.perf_counter() - started, 4))}

    def done(name: str, t: float) -> None:
        seconds[name] = round(time.perf_counter() - t, 4)
        report.send(event="stage_done", stage=name, seconds=seconds[name])

    try:
        t = begin("build")
        prm = {**DEFAULTS, **req["prm"]}
        try:
            batch = _batch_size(prm, int(req["batch_size"]), len(data.train_x))
        except ValueError as e:
            raise Failure("build_error", str(e)) from None
        req = {**req, "prm_full": prm, "batch": batch}
        device = pick_device(req["device"])
        if device.type == "cuda" and req.get("gpu_memory_fraction"):
            # Several candidates share a card: past its share a candidate ends `memory`, alone.
            # the current device: torch refuses a device without an index here ("cuda" is what requests carry)
            torch.cuda.set_per_process_memory_fraction(float(req["gpu_memory_fraction"]))
        namespace = load(code)
        prm, notes = fill_prm(namespace, req, data)
        req["prm_full"] = prm  # Net and the training recipe (train_setup) see the same keys
        model = construct(namespace, code, req, data, device)
        for key, fill in prm.filled.items():  # keys read undeclared while building: training sees them too
            prm.setdefault(key, fill["value"])
        done("build", t)
        t = begin("shape")
        model, x, side = fit_input(model, namespace, code, req, data, device, result)
        drop_unreached_lazy(model)
        done("shape", t)
        t = begin("measure")
        params, flops, note = measure(model, x, req)
        result.update(params=params, flops=flops)
        result.setdefault("detail", {}).update(note)
        if unused := unused_layers(model, x):
            result["detail"]["unused"] = unused
        if digest := behaviour(model, x, int(req["seed"])):
            result["detail"]["behaviour"] = digest
        done("measure", t)
        _check_budgets(params, flops, req)
        _check_unused(unused, req)
        _check_same(digest, req)
        if req.get("task") == "export":
            t = begin("export")
            detail = {**_filled(notes), **result.get("detail", {}), "device": str(device),
                      **export_stage(model, code_lines, data, req, device, side)}
            done("export", t)
            return Outcome(status="ok", stage="export", accuracy=detail["accuracy"], params=params, flops=flops,
                           seconds=seconds, detail=detail)
        begin("train")
        screen = Screen(float(req["screen_fraction"]), req.get("screen_min_accuracy"),
                        tuple(float(f) for f in req.get("screen_probes") or ())) if req.get("screen_fraction") else None
        res = train(model, code_lines, data, req, device, side, report, screen)
        seconds["train"], seconds["test"] = round(res.train_seconds, 4), round(res.test_seconds, 4)
        stage = "test"
        detail = {**_filled(notes), **result.get("detail", {}), "images_per_s": round(res.images_per_s, 1),
                  "device": str(device)}
        if screen is not None and screen.accuracy is not None:
            detail["screen"] = screen.facts()
        if req.get("latency_batches"):
            detail["latency_ms"] = {"pytorch": deploy.torch_latency(model, data, req["latency_batches"])}
        return Outcome(status="ok", stage="test", accuracy=res.accuracy, params=params, flops=flops,
                       seconds=seconds, detail=detail, epochs=res.epochs)
    except Failure as f:
        return Outcome(status=f.status, stage=stage, params=result.get("params"), flops=result.get("flops"),
                       seconds=failed_in(), error=f.error,
                       detail={**_filled(notes), **result.get("detail", {}), **f.detail}, diagnosis=f.diagnosis)
    except BaseException as e:  # noqa: BLE001 - our own bug or an odd device failure: still an outcome
        failure = _classify(e, "runtime_error", code_lines)
        return Outcome(status=failure.status, stage=stage, params=result.get("params"), flops=result.get("flops"),
                       seconds=failed_in(), error=failure.error, detail={**_filled(notes), **failure.detail},
                       diagnosis=failure.diagnosis)


def run(req: dict, data: TensorData, result_fd: int) -> NoReturn:
    """Entry point in the forked child; never returns."""
    report = Reporter(result_fd)
    try:
        confine(req, result_fd)
    except BaseException as e:  # noqa: BLE001
        report.send(event="result", outcome=Outcome(
            status="runtime_error", stage="build", error=f"sandbox setup failed: {type(e).__name__}: {e}").model_dump())
        os._exit(0)
    torch.set_grad_enabled(True)  # the warm parent forks with autograd off (see zygote.py)
    outcome = run_stages(req, data, report)
    if CappedText.dropped:
        outcome.detail["output_dropped_bytes"] = CappedText.dropped
    report.send(event="result", outcome=outcome.model_dump())
    os._exit(0)
