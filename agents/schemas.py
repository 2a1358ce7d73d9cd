"""Typed inputs and outputs of the Code Generator and the Prompt Improver.

They live in one module so both agents (and the graph) share them without importing each other.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, computed_field, field_validator


class Task(BaseModel):
    dataset: str
    in_shape: tuple[int, int, int, int] = Field(description="(B, C, H, W) of one training batch")
    classes: int = Field(ge=2)
    max_params: int = Field(ge=1)
    max_flops: int = Field(ge=1, description="forward FLOPs per sample")
    epochs: int = Field(1, ge=1)
    goal: str = Field("", description="free text from the user")
    objective: Literal["accuracy", "pareto"] = Field("accuracy", description="what makes a design better")

    @field_validator("in_shape")
    @classmethod
    def _positive(cls, v: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        if min(v) < 1:
            raise ValueError(f"in_shape must be four positive ints (B, C, H, W), got {v}")
        return v


class Triple(BaseModel):
    problem: str
    modification: str
    expected_effect: str

    def as_instruction(self) -> str:
        """The text the Code Generator receives as its design instruction."""
        parts = [self.modification.strip()]
        if self.problem.strip():
            parts.append(f"(Problem: {self.problem.strip()})")
        if self.expected_effect.strip():
            parts.append(f"(Expected: {self.expected_effect.strip()})")
        return " ".join(parts)


class HistoryEntry(BaseModel):
    iteration: int
    triple: Triple
    status: str
    accuracy: float | None = None
    params: int | None = None
    error: str = ""
    diagnosis: dict | None = Field(None, description="the failure's typed facts (evaluator Diagnosis), for hints")
    arch_id: str = ""
    novelty: float | None = Field(None, description="MinHash 1-Jaccard distance to the closest earlier design")
    same_as: int | None = Field(None, description="an earlier iteration whose valid design had the same "
                                                  "parameter and FLOP counts (the same network, other code)")
    parent: str | None = Field(None, description="arch id of the design this one was built from (None: fresh)")
    parent_accuracy: float | None = Field(None, description="that parent's accuracy: the change's effect is the "
                                                            "difference")


class BestDesign(BaseModel):
    arch_id: str
    code: str
    accuracy: float
    params: int | None = None


class Parent(BaseModel):
    """A design from the run's archive that the next one is built from."""
    arch_id: str
    code: str
    accuracy: float
    params: int
    flops: int
    latency_ms: float | None = None
    niche: tuple[int, int]
    children: int = Field(0, description="designs already built from it before this one")
    unused: list[str] = Field(default_factory=list, description="its layers that forward never uses")
    behaviour: str | None = Field(None, description="digest of what it computes: a child with the same one is stopped")


class CallMeta(BaseModel):
    """What one LLM call cost and which prompt produced it (goes into the trace)."""
    prompt_name: str
    prompt_sha: str
    tokens_in: int
    tokens_out: int
    tokens_estimated: bool = Field(False, description="backend reported no usage; counts are chars/4")
    seconds: float
    reply: str
    prompt: str = Field("", description="the rendered user prompt (the system prompt is named by prompt_sha)")


class Generation(CallMeta):
    code: str
    extract_source: str = Field("", description="fence / unclosed_fence / bare / empty / edit")
    cut: bool = Field(False, description="the reply stopped at the token limit, so the module is unfinished")
    added_imports: list[str] = Field(default_factory=list)
    edit_blocks: int | None = Field(None, description="SEARCH/REPLACE blocks in the reply (child_format edit)")
    edits_applied: int | None = Field(None, description="of them, those that matched the parent and were applied")


class Improvement(CallMeta):
    parse_mode: Literal["labelled", "json", "fallback"]
    explore: bool = Field(False, description="the triple was pushed towards a structurally different design")
    repeated: bool = Field(False, description="the reply repeated a modification of the window; the next "
                                              "untried move replaced it")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def parsed(self) -> bool:
        return self.parse_mode != "fallback"
