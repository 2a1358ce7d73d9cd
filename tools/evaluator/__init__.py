"""The evaluator tool: static checks in this process, everything else in a sandboxed child.

    with Evaluator(cfg.data_dir, workers=2) as ev:
        out = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=text, dataset="fashion-mnist"))
        futures = [ev.submit(req) for req in requests]     # several at once, collected later

Stages: parse -> policy (here) -> build -> shape -> measure -> train -> test (in a child forked from
a warm parent that already holds torch and the dataset). Each stage is timed into `Outcome.seconds`
and each has its own typed failure; see `policy.py`, `sandbox.py` and `child.py`. Importing this
package does not import torch.

The sandbox is damage control for careless generated code, not a security boundary against a
determined attacker; run nasgraph in a container when the code may be hostile.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import ConfigDict, Field, field_validator

from nasgraph.config import EvaluatorConfig
from nasgraph.dataset_ref import canonical

from .outcome import STAGES, Outcome, Status
from .policy import check_policy, check_syntax, static_check
from .sandbox import EvaluatorUnavailable, WarmParent

__all__ = ["STAGES", "EvalRequest", "Evaluator", "EvaluatorUnavailable", "Outcome", "Status", "default_workers",
           "main_thread_signals", "static_check", "training_recipe"]


class EvalRequest(EvaluatorConfig):
    """One candidate plus every budget and setting its child needs: the config's evaluator section
    (same fields, same defaults) and what is particular to this candidate."""

    model_config = ConfigDict(extra="forbid")

    code: str
    dataset: str
    epochs: int = Field(1, ge=1)
    prm: dict[str, Any] = Field(default_factory=dict, description="hyperparameters passed to Net and the harness")
    screen_min_accuracy: float | None = Field(
        None, ge=0.0, le=1.0, description="the cascade's bar: a model below it at the screen stops there (`screened`)")
    unused_allowed: list[str] | None = Field(
        None, description="stop, before training, a design whose forward leaves layers with weights unused, "
                          "except these (a child: its parent's own unused layers); None: only record them")
    parent_behaviour: str | None = Field(
        None, description="stop, before training, a design whose behaviour digest (detail.behaviour) is this one: "
                          "a child that computes exactly what its parent computes; None: only record it")
    origin: Literal["generated", "handed"] = Field(
        "generated", description="who wrote the code, which picks the static policy: the LLM (strict allow-list) "
                                 "or a person (a file given to `nasgraph eval`, LEMUR: see policy_handed.py)")
    image_sides: list[int] = Field(
        default_factory=list, description="larger square image sides to try, smallest first, when the model "
                                          "cannot take the dataset's own size (a too-small map, a flatten sized for "
                                          "another input): LEMUR's models were written for resized inputs")

    # Final training and export (nasgraph train / export): files cross the sandbox's wall, copied by
    # the parent, never opened by it but as weights (torch.load weights_only).
    task: Literal["evaluate", "export"] = Field(
        "evaluate", description="evaluate: build, check and train; export: load trained weights (resume_from) and "
                                "write export_formats, checked and timed")
    checkpoint: bool = Field(False, description="save a checkpoint after every epoch and resume from resume_from")
    resume_from: str | None = Field(None, description="a checkpoint (or trained weights) the child starts from")
    artifacts_dir: str | None = Field(None, description="folder this process copies the child's files into, after "
                                                        "each epoch and at the end (local backend only)")
    artifact_mb: int = Field(1024, ge=1, description="largest file (checkpoint, exported model) the child may write")
    latency_batches: list[int] = Field(default_factory=list, description="after training, time the forward pass "
                                                                         "at these batch sizes")
    export_formats: list[Literal["pytorch", "onnx"]] = Field(default_factory=list)
    export_meta: dict[str, Any] = Field(default_factory=dict, description="facts written into exported files")

    @field_validator("dataset")
    @classmethod
    def _canonical_dataset(cls, v: str) -> str:
        # The warm parent runs in a temp folder with another HOME: a relative or ~ path must be made
        # absolute here, where it means what the caller meant.
        return canonical(v)

    @field_validator("prm")
    @classmethod
    def _json_prm(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"prm must be JSON-serialisable: {e}") from None
        return v

    @classmethod
    def from_config(cls, cfg: EvaluatorConfig, *, code: str, dataset: str, **overrides: Any) -> "EvalRequest":
        """Settings and budgets from the config's evaluator section; `overrides` win (epochs, prm, ...)."""
        return cls(**{**cfg.model_dump(), "code": code, "dataset": dataset, **overrides})


def training_recipe(cfg: EvaluatorConfig, prm: dict[str, Any]) -> dict[str, Any]:
    """Every setting a candidate is trained with: the harness defaults, the evaluator's batch size,
    augmentation and seed, and the task's `prm` over the defaults. Results are stored and looked up
    under this, so a changed default or setting never returns a stale cached result."""
    from .harness import DEFAULTS  # the harness imports torch: keep this package's import light

    return {**DEFAULTS, "batch": cfg.batch_size, **prm, "augment": cfg.augment, "seed": cfg.seed}


def main_thread_signals() -> None:
    """Initializer of threads that run beside the main thread: SIGINT and SIGTERM are blocked in them,
    so the kernel hands those signals to the main thread, the only one Python runs handlers in. A
    Ctrl-C the kernel gave an idle pool thread went unseen while the main thread sat in readline (the
    chat's prompt) or waited on a Future (a run)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def default_workers(cfg: EvaluatorConfig, device: str) -> int:
    """`evaluator.workers` when set; else from the hardware: on CPU as many as the cores hold at
    `threads` each, on a GPU four per card (one-epoch proxies of small models leave it mostly idle)."""
    if cfg.workers:
        return cfg.workers
    if device == "cuda":
        return 4
    return max(1, (os.cpu_count() or 1) // cfg.threads)


class Evaluator:
    """Owns `workers` warm parents, each forking one candidate at a time; a context manager; safe to
    use for thousands of candidates.

    `submit(req)` returns a Future at once (the loop drafts the next designs meanwhile); `evaluate(req)`
    waits for one. Candidates beyond `workers` queue. Each keeps its own limits, timeout and outcome,
    in its own child: one candidate's crash or OOM never reaches its neighbours. On a GPU each
    candidate may hold `gpu_memory_fraction` of the card (0: an equal share per worker).
    `policy=False` skips the static policy (parsing still runs) so that tests can exercise the
    runtime sandbox behind it; never use it for generated code.
    Raises only for problems that no candidate could fix: an unknown or unavailable dataset
    (`ValueError`, `DatasetUnavailable`) or a warm parent that cannot start (`EvaluatorUnavailable`).
    """

    def __init__(self, data_dir: Path, *, policy: bool = True, workers: int = 1,
                 backend: Literal["local", "ray"] = "local", ray_address: str | None = None,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.policy, self.workers, self.backend = policy, workers, backend
        self._parents: list[Any]
        if backend == "ray":
            from .ray_backend import RaySlot, connect

            connect(ray_address, num_cpus=max(1, int(workers * cpus_per_worker)))
            self._parents = [RaySlot(Path(data_dir), cpus_per_worker, gpus_per_worker) for _ in range(workers)]
        else:
            self._parents = [WarmParent(Path(data_dir)) for _ in range(workers)]
            for parent in self._parents:
                parent.spawn()  # torch imports while the caller does other work
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for parent in self._parents:
            self._idle.put(parent)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nasgraph-eval",
                                        initializer=main_thread_signals)
        self._close_lock = threading.Lock()
        self._busy: set[Any] = set()
        self._closed = False

    @classmethod
    def from_config(cls, cfg: EvaluatorConfig, data_dir: Path, *, device: str, workers: int | None = None,
                    policy: bool = True) -> "Evaluator":
        """The evaluator the config asks for: backend, workers (default from the hardware) and, on
        Ray, each worker's share of CPUs and GPU."""
        n = workers or default_workers(cfg, device)
        gpus = (cfg.gpu_memory_fraction or 1.0 / n) if device == "cuda" else 0.0
        return cls(data_dir, policy=policy, workers=n, backend=cfg.backend, ray_address=cfg.ray_address or None,
                   cpus_per_worker=cfg.threads, gpus_per_worker=gpus)

    def submit(self, req: EvalRequest, on_progress: Callable[[dict], None] | None = None) -> Future[Outcome]:
        """`on_progress(event)` hears each finished epoch of a checkpointing request (after its
        checkpoint was copied to `artifacts_dir`), in a pool thread."""
        if self._closed:
            raise RuntimeError("Evaluator is closed")
        if self.backend == "ray" and (req.artifacts_dir or req.resume_from):
            raise ValueError("checkpoints and exports need the local backend: their files are copied on this machine")
        return self._pool.submit(self._evaluate, req, on_progress)

    def evaluate(self, req: EvalRequest, on_progress: Callable[[dict], None] | None = None) -> Outcome:
        return self.submit(req, on_progress).result()

    def _evaluate(self, req: EvalRequest, on_progress: Callable[[dict], None] | None = None) -> Outcome:
        """One candidate: static checks here, the rest on whichever warm parent is idle."""
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        tree, bad = check_syntax(req.code)
        seconds["parse"] = round(time.perf_counter() - t, 4)
        if bad is None and self.policy:
            t = time.perf_counter()
            bad = check_policy(tree, req.code, req.origin)
            seconds["policy"] = round(time.perf_counter() - t, 4)
        if bad is not None:
            bad.seconds = seconds
            return bad
        msg = req.model_dump()
        if not msg["gpu_memory_fraction"]:
            msg["gpu_memory_fraction"] = 1.0 / self.workers
        parent = self._idle.get()
        with self._close_lock:
            self._busy.add(parent)
        try:
            out = parent.run(msg, on_progress) if on_progress is not None else parent.run(msg)
        finally:
            with self._close_lock:
                self._busy.discard(parent)
            self._idle.put(parent)
        out.seconds = {**seconds, **out.seconds}
        return out

    @property
    def restarts(self) -> int:
        """How many times a warm parent had to be restarted (it died)."""
        return sum(p.restarts for p in self._parents)

    @property
    def worker_pids(self) -> list[int | None]:
        """Each worker's process: a warm parent here, or a Ray actor on its node."""
        return [p.pid for p in self._parents]

    # What follows describes the local backend's warm parents (none on Ray).
    @property
    def warm_state(self) -> dict:
        """What the first warm parent reported when it became ready (pid, threads, grad_enabled,
        cuda_initialized); the others are started alike."""
        return dict(self._local()[0].ready_info) if self._local() else {}

    @property
    def warm_pid(self) -> int | None:
        return self.warm_pids[0] if self.warm_pids else None

    @property
    def warm_pids(self) -> list[int | None]:
        return [p.proc.pid if p.proc else None for p in self._local()]

    @property
    def sandbox_dirs(self) -> list[Path]:
        """Each warm parent's folder; candidate `n` works in `<folder>/c<n>`."""
        return [p.base for p in self._local()]

    def _local(self) -> list[WarmParent]:
        return [p for p in self._parents if isinstance(p, WarmParent)]

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        # Closing with candidates in flight means the caller gave up on them (an exception, Ctrl-C):
        # they end now rather than after their training budget; queued ones are dropped.
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._close_lock:
            busy = list(self._busy)
        for parent in busy:
            parent.interrupt()
        self._pool.shutdown(wait=True)
        for parent in self._parents:
            parent.close()

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
