"""The typed result of evaluating one candidate; every stage's failure has its own status."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .diagnosis import Diagnosis

Status = Literal[
    "ok",
    "syntax",         # does not parse
    "forbidden",      # static policy: disallowed import / call / attribute
    "build_error",    # module exec or Net(...) construction raised, or no Net class
    "shape_error",    # forward on a dummy batch failed on shapes or returned the wrong shape
    "runtime_error",  # anything else raised in the child (training included)
    "nan_loss",       # loss became NaN/inf while training
    "over_budget",    # params / FLOPs / projected epoch time beyond the task's budget
    "timeout",        # wall clock ran out; the child's process group was killed
    "memory",         # allocation failed under the memory limit
    "killed",         # child died by a signal or exited without reporting
    "duplicate",      # same canonical architecture already evaluated (cache hit)
    "screened",       # valid, but stopped part-way through the epoch below the cascade's bar
]

# Code that built, checked and trained: a screened design is valid, only its full-epoch accuracy is unknown.
VALID = frozenset({"ok", "screened"})

STAGES = ("parse", "policy", "build", "shape", "measure", "train", "test")


class Outcome(BaseModel):
    status: Status
    stage: str = Field("", description="stage that produced the status (one of STAGES, or 'cache')")
    accuracy: float | None = None
    params: int | None = None
    flops: int | None = Field(None, description="forward FLOPs for one sample")
    seconds: dict[str, float] = Field(default_factory=dict, description="wall seconds per stage")
    error: str = Field("", description="short, useful error text for the Prompt Improver")
    detail: dict = Field(default_factory=dict, description="stage-specific extras, e.g. budget projection")
    epochs: list[dict] = Field(default_factory=list, description="per-epoch stats: loss, accuracy, seconds")
    diagnosis: Diagnosis | None = Field(None, description="a failure's facts as fields, for rules, hints and routers")

    @property
    def ok(self) -> bool:
        return self.status == "ok"
