"""The loop's one typed state. Everything here is JSON-able, so the SQLite checkpoint holds it whole.

Fields that accumulate use reducers; the history is kept bounded so a checkpoint (and the prompt built
from it) stays the same size whether the run is at iteration 5 or 5000.
"""
from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

HISTORY_KEEP = 50  # entries kept in state; the prompt window (K) is a suffix of this
# What the loop hands to a new attempt; the rest of AttemptState starts empty.
ATTEMPT_INPUTS = ("run_id", "seed_key", "task", "triple", "parent", "blocks", "history", "best", "iteration", "step")


def keep_recent(old: list[dict], new: list[dict]) -> list[dict]:
    return (old + new)[-HISTORY_KEEP:]


def add_counts(old: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    out = dict(old)
    for k, v in new.items():
        out[k] = out.get(k, 0) + v
    return out


class LoopState(TypedDict, total=False):
    """Run and iteration scope. One attempt at a design lives in its own subgraph (`AttemptState`)
    and comes back as `attempt`."""
    run_id: str
    seed_key: str                        # seeds the LLM's samples (default the run id); runs that share it share seeds
    max_iterations: int
    task: dict[str, Any]                 # nasgraph.agents.code_generator.Task
    user_goal: str
    iteration: int                       # completed iterations; the one in flight is iteration + 1
    step: Annotated[int, operator.add]   # node runs so far, subgraph nodes included; trace events carry it
    triple: dict[str, Any] | None        # the Prompt Improver's current triple
    parent: dict[str, Any] | None        # nasgraph.agents.schemas.Parent this iteration builds on (None: fresh)
    children: Annotated[dict[str, float], add_counts]  # designs built on each parent so far
    blocks: list[str]                    # retrieved blocks for this iteration (RAG node, when enabled)
    view: dict[str, Any] | None          # loop.in_flight > 1: the history and best this iteration was planned from
    attempt: dict[str, Any] | None       # AttemptResult of this iteration's attempt subgraph
    history: Annotated[list[dict], keep_recent]   # nasgraph.agents.prompt_improver.HistoryEntry dicts
    best: dict[str, Any] | None          # nasgraph.agents.prompt_improver.BestDesign
    stats: Annotated[dict[str, float], add_counts]
    stop_reason: str | None


class AttemptState(TypedDict, total=False):
    """One iteration's attempt: draft -> check -> (fix | repair)* -> fingerprint -> evaluate.
    Its own checkpointed subgraph; the parent hands in the first block and reads `AttemptResult`."""
    # handed in by the parent, read-only here
    run_id: str
    seed_key: str
    task: dict[str, Any]
    triple: dict[str, Any]
    parent: dict[str, Any] | None
    blocks: list[str]
    history: list[dict]                  # the window's source
    best: dict[str, Any] | None
    iteration: int
    # the attempt's own
    step: Annotated[int, operator.add]
    stats: Annotated[dict[str, float], add_counts]
    code: str | None                     # the draft in flight
    cut: bool                            # the reply behind it stopped at the token limit (code unfinished)
    candidate: dict[str, Any] | None     # nasgraph.tools.candidate.Candidate of the draft (to_state)
    arch_id: str | None                  # set by the fingerprint: the draft reached the cache and the store
    first_status: str | None             # status of the first draft
    repairs: int                         # LLM repairs spent
    fixes: int                           # rule fixes (nasgraph.tools.autofix) applied to the current draft
    drafts: list[str]                    # ids of the earlier drafts (not novelty rivals)
    novelty: float | None
    nearest: str | None
    outcome: dict[str, Any] | None       # nasgraph.tools.evaluator.Outcome of the latest draft
    pending_fix: dict[str, Any] | None   # the rule fix decided for that outcome: {code, rule, description}


# What the attempt subgraph hands back to the loop.
RESULT_KEYS = ("code", "arch_id", "first_status", "repairs", "novelty", "nearest", "outcome")
