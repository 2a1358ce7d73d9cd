"""Parent side of the sandbox: one warm parent process, one forked child per candidate, hard wall-clock limits.

`WarmParent` starts `python -m nasgraph.tools.evaluator.zygote` with a scrubbed environment (so no secret of
this process ever reaches it or its children), sends it one candidate at a time as a JSON line and
reads the child's progress back. This process owns the clock: build/shape/measure get
`setup_timeout_s`, training gets `epochs * time_budget_s + timeout_grace_s`; on expiry the child's
whole process group gets SIGKILL and the outcome is `timeout` with the last stage reached. How the
child ended (a reported result, a signal, an exit code without a result) becomes a typed Outcome.
If the warm parent itself dies, the current candidate gets a `killed` Outcome and the next call
starts a fresh one.

The child confines itself (see `child.confine`): process group, rlimits, temp working directory,
scrubbed environment, captured output, an empty network namespace where permitted, and when we
run as root it drops to nobody/nogroup, because root is exempt from RLIMIT_NPROC. Memory is capped
with RLIMIT_DATA, not RLIMIT_AS: measured here, a process that imported the CUDA build of torch
already has ~3.4 GB of address space (VmSize) but ~0.8 GB of data (VmData), and CUDA init reserves
far more address space (PROT_NONE, which RLIMIT_DATA does not count), so an AS cap would break CUDA
init; the cap is set to the child's VmData at fork plus `memory_limit_mb`. (CUDA under the cap, as
nobody, is written but has not yet been run on a GPU.)

Not a security boundary against a determined attacker: run nasgraph in a container or VM when the
generated code may be hostile.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import nasgraph
from nasgraph.errors import NasgraphError

from .outcome import Outcome

READY_TIMEOUT_S = 300.0     # importing torch on a cold, busy machine
LOAD_TIMEOUT_S = 1800.0     # the first load of a dataset may build its tensor cache
EXIT_WAIT_S = 20.0          # after a kill, how long the warm parent may take to report the reaped child
OUTPUT_TAIL_CHARS = 1500
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH", "PYTHONPATH",
            "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
# The folder the nasgraph package imports from (the checkout, or site-packages when installed): the warm
# parent's PYTHONPATH, so that it imports this very nasgraph whatever its working directory.
PROJECT_ROOT = Path(nasgraph.__file__).resolve().parents[1]


class EvaluatorUnavailable(NasgraphError, RuntimeError):
    """The warm parent cannot be started (broken installation); no candidate can be evaluated."""


def sandbox_ids() -> tuple[int | None, int | None]:
    """The uid/gid children drop to: nobody/nogroup when we are root, else None (keep our own)."""
    if os.geteuid() != 0:
        return None, None
    import grp
    import pwd
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        uid = 65534
    for group in ("nogroup", "nobody"):
        try:
            return uid, grp.getgrnam(group).gr_gid
        except KeyError:
            continue
    return uid, 65534


def zygote_env(base: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.update(HOME=str(base), TMPDIR=str(base), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


class _Lines:
    """JSON lines from a pipe, read with deadlines (select + os.read; no buffered-reader surprises)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.pending = fd, b"", deque()

    def get(self, deadline: float) -> dict | None:
        """Next message, or None when the deadline passes first; EOFError when the writer is gone."""
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    self.pending.append(msg)
        return self.pending.popleft()


def _await_gone(pid: int, timeout: float = 5.0) -> None:
    """Wait until a killed process that is not our child has died (a zombie counts as dead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat[stat.rfind(")") + 2:].startswith(("Z", "X")):
            return
        time.sleep(0.01)


def stop_pipe_child(proc: subprocess.Popen, grace_s: float) -> None:
    """End a warm parent started in its own session: closing its stdin asks it to exit; after
    `grace_s` its whole process group is killed, so no forked candidate outlives it."""
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=grace_s)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


def _rmtree(path: Path) -> None:
    def fix(func, p, _exc):  # a candidate may leave read-only dirs; as non-root we must chmod first
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    shutil.rmtree(path, onerror=fix)


def place_file(src: Path, workdir: Path, name: str, uid: int | None, gid: int | None) -> None:
    """Copy a file of ours into a candidate's workdir, readable by the (possibly unprivileged) child."""
    dest = workdir / name
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o600)
    if uid is not None:
        os.chown(dest, uid, gid)


def collect_files(src: Path, dest: Path, max_bytes: int) -> list[str]:
    """Copy what a candidate left in `src` into `dest`: regular files only, never through a link
    (O_NOFOLLOW, a FIFO or device is skipped), at most `max_bytes` each, each landing atomically
    (a reader of `dest` never sees half a checkpoint). Names starting with '.' are the child's
    unfinished files and are skipped. Returns the names copied."""
    copied: list[str] = []
    try:  # the folder itself may have been replaced by a link: opened without following one
        dfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return copied
    try:
        names = [e.name for e in os.scandir(dfd) if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
    finally:
        os.close(dfd)  # scandir(fd) works on a duplicate; names are opened below relative to a fresh fd
    for name in names:
        try:
            dfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return copied
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except OSError:
            continue
        finally:
            os.close(dfd)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
                continue
            dest.mkdir(parents=True, exist_ok=True)
            tmp = dest / f".{name}.{os.getpid()}.part"
            try:
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(f, out, 1 << 20)
                os.replace(tmp, dest / name)
            finally:
                tmp.unlink(missing_ok=True)
        copied.append(name)
    return copied


def _output_tail(workdir: Path, cap: int) -> dict:
    log = workdir / "output.log"
    try:
        size = log.stat().st_size
        with open(log, "rb") as f:
            f.seek(max(0, size - OUTPUT_TAIL_CHARS))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return {}
    out: dict[str, Any] = {}
    if tail.strip():
        out["output_tail"] = "\n".join(tail.splitlines()[-12:])
    if size >= cap:
        out["output_capped_at_bytes"] = cap
    return out


class _Run:
    """Book-keeping of one candidate's trip through the warm parent."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.stage = "start"
        self.seconds: dict[str, float] = {}
        self.result: dict | None = None
        self.exit: dict | None = None
        self.timed_out_after: float | None = None
        self.load_s = 0.0


class WarmParent:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.base = Path(tempfile.mkdtemp(prefix="nasgraph-eval-"))
        os.chmod(self.base, 0o711)  # the unprivileged child may enter its own workdir, not list ours
        self.uid, self.gid = sandbox_ids()
        self.proc: subprocess.Popen | None = None
        self.lines: _Lines | None = None
        self.pid: int | None = None
        self.count = 0
        self.restarts = -1
        self._ready = False
        self.ready_info: dict = {}

    # ---- life cycle
    def spawn(self) -> None:
        """Start the warm parent without waiting for it (it imports torch meanwhile)."""
        log = open(self.base / "zygote.log", "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nasgraph.tools.evaluator.zygote", str(self.data_dir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=self.base,
                env=zygote_env(self.base), start_new_session=True, close_fds=True)
        finally:
            log.close()
        self.lines = _Lines(self.proc.stdout.fileno())
        self._ready = False
        self.restarts += 1

    def _ensure_ready(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._stop()
            self.spawn()
        if self._ready:
            return
        try:
            msg = self.lines.get(time.monotonic() + READY_TIMEOUT_S)
        except EOFError:
            msg = None
        if not msg or msg.get("event") != "ready":
            log = self.log_tail()
            self._stop()
            raise EvaluatorUnavailable(f"the evaluator's warm parent did not start:\n{log}")
        self.pid = msg["pid"]
        self.ready_info = msg  # threads, grad mode and CUDA state of the process that forks candidates
        self._ready = True

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.base / "zygote.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _stop(self) -> None:
        if self.proc is not None:
            stop_pipe_child(self.proc, grace_s=2)
        self.proc, self.lines, self._ready = None, None, False

    def close(self) -> None:
        self._stop()
        _rmtree(self.base)

    def interrupt(self) -> None:
        """Kill the warm parent now, from another thread: the thread driving a candidate sees it gone,
        kills that candidate's group and returns its outcome at once."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()

    # ---- one candidate
    def run(self, req: dict, on_progress: Callable[[dict], None] | None = None) -> Outcome:
        """Evaluate one statically checked candidate; every way it can end is an Outcome.
        With `artifacts_dir` the child's artifacts/ folder is copied there after each finished epoch
        (then `on_progress(event)` is called) and when the child has ended, whatever its end."""
        self._ensure_ready()
        self.count += 1
        workdir = self.base / f"c{self.count}"
        workdir.mkdir(mode=0o700)
        if self.uid is not None:
            os.chown(workdir, self.uid, self.gid)
        if req.get("resume_from"):
            place_file(Path(req["resume_from"]), workdir, "resume.pt", self.uid, self.gid)
        dest = Path(req["artifacts_dir"]) if req.get("artifacts_dir") else None
        max_bytes = int(req.get("artifact_mb") or 1) * 2**20

        last = [-1]

        def on_checkpoint(ev: dict) -> None:
            epoch = ev.get("epoch")
            if not isinstance(epoch, int) or epoch <= last[0]:  # one copy per new epoch, however often it says so
                return
            last[0] = epoch
            if dest is not None:
                collect_files(workdir / "artifacts", dest, max_bytes)
            if on_progress is not None:
                on_progress(ev)
        wall = float(req["setup_timeout_s"]) + req["epochs"] * float(req["time_budget_s"]) + float(req["timeout_grace_s"])
        msg = {**req, "workdir": str(workdir), "uid": self.uid, "gid": self.gid,
               "cpu_limit_s": int(req["threads"] * wall) + 30}
        t0 = time.monotonic()
        try:
            run = self._drive(msg, on_checkpoint)
            if dest is not None:
                collect_files(workdir / "artifacts", dest, max_bytes)
            out = self._outcome(run, req)
            if out.status != "ok":
                out.detail.update(_output_tail(workdir, int(req["max_output_mb"]) * 2**20))
            out.detail["wall_s"] = round(time.monotonic() - t0 - run.load_s, 4)
            if run.load_s > 0.05:
                out.detail["load_s"] = run.load_s
            return out
        finally:
            _rmtree(workdir)

    def _send(self, msg: dict) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def _drive(self, msg: dict, on_checkpoint: Callable[[dict], None] | None = None) -> _Run:
        run = _Run()
        try:
            self._send(msg)
        except (BrokenPipeError, OSError):  # died while idle: restart once, transparently
            self._stop()
            self._ensure_ready()
            self._send(msg)
        setup_s = float(msg["setup_timeout_s"])
        train_s = msg["epochs"] * float(msg["time_budget_s"]) + float(msg["timeout_grace_s"])
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        try:
            while run.exit is None:
                ev = self.lines.get(deadline)
                if ev is None:
                    if run.timed_out_after is not None or run.pid is None:
                        raise EOFError  # the warm parent is wedged: treat it as dead
                    run.timed_out_after = setup_s if run.stage in ("start", "build", "shape", "measure") else train_s
                    self._kill_group(run.pid)
                    deadline = time.monotonic() + EXIT_WAIT_S
                    continue
                kind = ev.get("event")
                if kind == "dataset_error":
                    self._raise_dataset_error(ev)
                elif kind == "forked":
                    run.pid, run.load_s = int(ev["pid"]), float(ev.get("load_s", 0.0))
                    deadline = time.monotonic() + setup_s
                elif kind == "stage":
                    run.stage = str(ev["stage"])
                    if run.stage in ("train", "export") and run.timed_out_after is None:
                        deadline = time.monotonic() + train_s
                elif kind == "checkpoint" and on_checkpoint is not None and run.timed_out_after is None:
                    on_checkpoint(ev)
                elif kind == "stage_done":
                    run.seconds[str(ev["stage"])] = float(ev["seconds"])
                elif kind == "result":
                    run.result = ev.get("outcome")
                elif kind == "exit":
                    run.exit = ev
        except EOFError:
            if run.pid is not None:
                self._kill_group(run.pid)  # the child must not outlive its supervisor
                _await_gone(run.pid)
            self._stop()
            run.exit = {"zygote_died": True}
        return run

    def _kill_group(self, pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _raise_dataset_error(ev: dict) -> None:
        from . import datasets

        if ev.get("kind") in ("DatasetUnavailable", "UnknownDataset", "BadDataset"):
            raise getattr(datasets, ev["kind"])(ev.get("message", ""))
        if ev.get("kind") == "ValueError":
            raise ValueError(ev.get("message", ""))
        raise RuntimeError(f"could not load the dataset: {ev.get('kind')}: {ev.get('message')}")

    # ---- how it ended
    def _outcome(self, run: _Run, req: dict) -> Outcome:
        ex = run.exit or {}
        if run.result is not None:
            try:
                return Outcome.model_validate(run.result)
            except ValueError:
                pass  # a malformed result (the candidate wrote to our pipe): judge by the exit instead
        stage = run.stage
        base = {"stage": stage, "seconds": run.seconds}
        if run.timed_out_after is not None:
            return Outcome(status="timeout", error=f"wall-clock limit of {run.timed_out_after:.0f}s exceeded in stage "
                                                   f"'{stage}'; the candidate's process group was killed",
                           detail={"limit_s": run.timed_out_after}, **base)
        if ex.get("zygote_died"):
            return Outcome(status="killed", error=f"the evaluator's warm parent died while the candidate was in "
                                                  f"stage '{stage}'; it will be restarted", **base)
        sig, code = ex.get("signal"), ex.get("code")
        if sig is not None:
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
            if sig == signal.SIGXCPU:
                return Outcome(status="timeout", error=f"CPU-time limit exceeded in stage '{stage}' ({name})",
                               detail={"signal": name}, **base)
            limit_kb = int(req["memory_limit_mb"]) * 1024
            if sig == signal.SIGKILL and ex.get("maxrss_kb", 0) >= 0.9 * limit_kb:
                return Outcome(status="memory", error=f"killed by {name} in stage '{stage}' near the memory limit "
                                                      f"({ex['maxrss_kb'] // 1024} MB resident)",
                               detail={"signal": name, "maxrss_kb": ex["maxrss_kb"]}, **base)
            return Outcome(status="killed", error=f"the candidate's process was killed by {name} in stage '{stage}'",
                           detail={"signal": name}, **base)
        return Outcome(status="runtime_error", error=f"the candidate's process exited with code {code} in stage "
                                                     f"'{stage}' before reporting a result",
                       detail={"exit_code": code}, **base)
