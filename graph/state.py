"""The loop's one typed state. Everything here is JSON-able, so the SQLite checkpoint holds it whole.

Fields that accumulate use reducers; the history is kept bounded so a checkpoint (and the prompt built
from it) stays the same size whether the run is at iteration 5 or 5000.
"""
from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

HISTORY_KEEP = 50  # entries kept in state; the prompt window (K) is a suffix of this


def keep_recent(old: list[dict], new: list[dict]) -> list[dict]:
    return (old + new)[-HISTORY_KEEP:]


def add_counts(old: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    out = dict(old)
    for k, v in new.items():
        out[k] = out.get(k, 0) + v
    return out


class LoopState(TypedDict, total=False):
    run_id: str
    max_iterations: int
    task: dict[str, Any]                 # nasgraph.agents.code_generator.Task
    user_goal: str
    iteration: int                       # completed iterations; the one in flight is iteration + 1
    step: Annotated[int, operator.add]   # node runs so far; trace events carry it (resume dedup)
    triple: dict[str, Any] | None        # the Prompt Improver's current triple
    blocks: list[str]                    # retrieved blocks for this iteration (RAG node, when enabled)
    code: str | None                     # the candidate in flight
    cut: bool                            # the reply behind it stopped at the token limit (code unfinished)
    first_status: str | None             # status of the iteration's first attempt
    repairs: int                         # LLM repairs spent on this iteration
    fixes: int                           # rule-based fixes (nasgraph.tools.autofix) applied to the current draft
    arch_id: str | None
    drafts: list[str]                    # ids of this iteration's earlier attempts (not novelty rivals)
    novelty: float | None
    nearest: str | None
    outcome: dict[str, Any] | None       # nasgraph.tools.evaluator.Outcome of the latest attempt
    pending_fix: dict[str, Any] | None   # the rule fix decided for that outcome: {code, rule, description}
    history: Annotated[list[dict], keep_recent]   # nasgraph.agents.prompt_improver.HistoryEntry dicts
    best: dict[str, Any] | None          # nasgraph.agents.prompt_improver.BestDesign
    stats: Annotated[dict[str, float], add_counts]
    stop_reason: str | None
