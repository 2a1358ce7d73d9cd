"""Validate blocks by execution, in the sandbox, many blocks per worker process.

`Validator` starts `python -m nasgraph.rag_index.worker` (torch and torchvision imported once) with the
evaluator's scrubbed environment, and sends it one block at a time; the worker forks a confined
child per block and enforces the per-block timeout. If the worker itself stops answering, this side
kills it, records the block as `killed` and starts a fresh one for the next block.

Like the evaluator's sandbox, this is damage control for buggy code, not a security boundary.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from nasgraph.errors import NasgraphError
from nasgraph.tools.evaluator.sandbox import READY_TIMEOUT_S, _Lines, _rmtree, stop_pipe_child, zygote_env

WORKER_SLACK_S = 30.0   # beyond a block's timeout, how long the worker may take to report it


@dataclass
class Validation:
    executed: bool = False
    instantiable: bool = False
    forward_checked: bool = False
    params: int | None = None
    init_args: dict | None = None
    input_shape: list | None = None
    output_shape: object = None
    failure: str | None = None      # why it is not executable: exec_error, no_class, timeout, memory, crashed, killed
    error: str = ""
    note: str = ""                  # why an executable block was not instantiated / forward-checked
    presented_ok: bool = False      # the compact text shown to the generator runs the same way
    presented_error: str = ""
    seconds: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> Validation:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Job:
    id: str
    code: str
    name: str
    hint: dict = field(default_factory=dict)
    presented: str | None = None


class WorkerUnavailable(NasgraphError, RuntimeError):
    """The validation worker cannot start (broken installation)."""


class Validator:
    def __init__(self, timeout_s: float = 60.0, memory_mb: int = 2048) -> None:
        self.timeout_s, self.memory_mb = float(timeout_s), int(memory_mb)
        self.base = Path(tempfile.mkdtemp(prefix="nasgraph-rag-"))
        os.chmod(self.base, 0o711)  # the unprivileged child may enter its own workdir, not list ours
        self.proc: subprocess.Popen | None = None
        self.lines: _Lines | None = None
        self.restarts = 0

    def __enter__(self) -> Validator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        log = open(self.base / "worker.log", "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "nasgraph.rag_index.worker", str(self.base)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=self.base,
                                         env=zygote_env(self.base), start_new_session=True, close_fds=True)
        finally:
            log.close()
        self.lines = _Lines(self.proc.stdout.fileno())
        try:
            msg = self.lines.get(time.monotonic() + READY_TIMEOUT_S)
        except EOFError:
            msg = None
        if not msg or msg.get("event") != "ready":
            tail = self._log_tail()
            self._stop()
            raise WorkerUnavailable(f"the block validation worker did not start:\n{tail}")

    def _log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.base / "worker.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _stop(self) -> None:
        if self.proc is not None:
            stop_pipe_child(self.proc, grace_s=5)
        self.proc, self.lines = None, None

    def close(self) -> None:
        self._stop()
        _rmtree(self.base)

    def validate_one(self, job: Job) -> Validation:
        if self.proc is None or self.proc.poll() is not None:
            self._stop()
            self._start()
        assert self.proc is not None and self.proc.stdin is not None and self.lines is not None
        msg = {"id": job.id, "code": job.code, "name": job.name, "hint": job.hint, "presented": job.presented,
               "timeout_s": self.timeout_s, "memory_mb": self.memory_mb}
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
            reply = self.lines.get(time.monotonic() + self.timeout_s + WORKER_SLACK_S)
        except (BrokenPipeError, OSError, EOFError):
            reply = None
        if not reply or reply.get("event") != "result" or reply.get("id") != job.id:
            self._kill_worker()
            return Validation(failure="killed", error="the validation worker died or stopped answering")
        return Validation.from_dict(reply.get("result") or {})

    def _kill_worker(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._stop()
        self.restarts += 1

    def validate(self, jobs: Iterable[Job], on_result: Callable[[Job, Validation], None] | None = None
                 ) -> dict[str, Validation]:
        results: dict[str, Validation] = {}
        for job in jobs:
            results[job.id] = v = self.validate_one(job)
            if on_result:
                on_result(job, v)
        return results
