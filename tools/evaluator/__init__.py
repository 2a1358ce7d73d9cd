"""The evaluator tool: static checks in this process, everything else in a sandboxed child.

    with Evaluator(cfg.data_dir) as ev:
        out = ev.evaluate(EvalRequest.from_config(cfg.evaluator, code=text, dataset="fashion-mnist"))

Stages: parse -> policy (here) -> build -> shape -> measure -> train -> test (in a child forked from
a warm parent that already holds torch and the dataset). Each stage is timed into `Outcome.seconds`
and each has its own typed failure; see `policy.py`, `sandbox.py` and `child.py`. Importing this
package does not import torch.

The sandbox is damage control for careless generated code, not a security boundary against a
determined attacker; run nasgraph in a container when the code may be hostile.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from nasgraph.config import EvaluatorConfig

from .outcome import STAGES, Outcome, Status
from .policy import check_policy, check_syntax, static_check
from .sandbox import EvaluatorUnavailable, WarmParent

__all__ = ["STAGES", "EvalRequest", "Evaluator", "EvaluatorUnavailable", "Outcome", "Status", "static_check",
           "training_recipe"]


class EvalRequest(EvaluatorConfig):
    """One candidate plus every budget and setting its child needs: the config's evaluator section
    (same fields, same defaults) and what is particular to this candidate."""

    model_config = ConfigDict(extra="forbid")

    code: str
    dataset: str
    epochs: int = Field(1, ge=1)
    prm: dict[str, Any] = Field(default_factory=dict, description="hyperparameters passed to Net and the harness")

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


class Evaluator:
    """Owns the warm parent; a context manager; safe to call `evaluate` thousands of times.

    `policy=False` skips the static policy (parsing still runs) so that tests can exercise the
    runtime sandbox behind it; never use it for generated code.
    Raises only for problems that no candidate could fix: an unknown or unavailable dataset
    (`ValueError`, `DatasetUnavailable`) or a warm parent that cannot start (`EvaluatorUnavailable`).
    """

    def __init__(self, data_dir: Path, *, policy: bool = True) -> None:
        self.policy = policy
        self._parent = WarmParent(Path(data_dir))
        self._parent.spawn()  # torch imports while the caller does other work
        self._lock = threading.Lock()
        self._closed = False

    def evaluate(self, req: EvalRequest) -> Outcome:
        if self._closed:
            raise RuntimeError("Evaluator is closed")
        with self._lock:
            seconds: dict[str, float] = {}
            t = time.perf_counter()
            tree, bad = check_syntax(req.code)
            seconds["parse"] = round(time.perf_counter() - t, 4)
            if bad is None and self.policy:
                t = time.perf_counter()
                bad = check_policy(tree, req.code)
                seconds["policy"] = round(time.perf_counter() - t, 4)
            if bad is not None:
                bad.seconds = seconds
                return bad
            out = self._parent.run(req.model_dump())
            out.seconds = {**seconds, **out.seconds}
            return out

    @property
    def restarts(self) -> int:
        """How many times the warm parent had to be restarted (it died)."""
        return self._parent.restarts

    @property
    def warm_state(self) -> dict:
        """What the warm parent reported when it became ready (pid, threads, grad_enabled, cuda_initialized)."""
        return dict(self._parent.ready_info)

    @property
    def warm_pid(self) -> int | None:
        return self._parent.proc.pid if self._parent.proc else None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._lock:
                self._parent.close()

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
