"""Pure routing functions: state in, next node out. They raise on states the graph should never reach.
The attempt's routers end it with "done" (back to the loop, which records it)."""
from __future__ import annotations

from typing import Literal

from .state import AttemptState, LoopState

# Failures the generator can fix from the error text alone: static checks, build, and the shape check
# (any exception on the dummy forward, e.g. an attribute used but never defined, counts as the latter),
# and budgets, which are found before or within the first few batches (a few seconds) and say by how much.
REPAIRABLE = frozenset({"syntax", "forbidden", "build_error", "shape_error", "over_budget"})
REPAIRABLE_STAGES = frozenset({"parse", "policy", "build", "shape"})


def _status(state: AttemptState) -> str | None:
    outcome = state.get("outcome")
    return outcome["status"] if outcome else None


def repairable(outcome: dict) -> bool:
    return outcome["status"] in REPAIRABLE or (
        outcome["status"] == "runtime_error" and outcome.get("stage") in REPAIRABLE_STAGES)


Attempt = Literal["fix", "repair", "done"]


def _next_attempt(state: AttemptState, max_repairs: int, max_fixes: int) -> Attempt:
    """A rule-based fix when one applies (instant, no LLM), else an LLM repair, each within its bound."""
    outcome = state.get("outcome")
    if not outcome:
        return "done"
    # A rule knows its error exactly, whatever the stage (an in-place op fails only in the first backward).
    # The node that set the outcome found the fix (pending_fix); this only reads it.
    if state.get("fixes", 0) < max_fixes and state.get("pending_fix"):
        return "fix"
    if not repairable(outcome):
        return "done"
    if state.get("repairs", 0) < max_repairs:
        return "repair"
    return "done"


def after_check(state: AttemptState, max_repairs: int, max_fixes: int = 0) -> Literal["fingerprint", "fix", "repair", "done"]:
    if state.get("code") is None:
        raise ValueError("check ran without a candidate")
    if _status(state) is None:
        return "fingerprint"
    return _next_attempt(state, max_repairs, max_fixes)


def after_fingerprint(state: AttemptState, max_repairs: int, max_fixes: int = 0) -> Literal["evaluate", "fix", "repair", "done"]:
    if state.get("arch_id") is None:
        raise ValueError("fingerprint left no architecture id")
    status = _status(state)
    if status is None:
        return "evaluate"
    if status == "duplicate":  # trained before: nothing to learn again, unless a child echoed its parent
        echo = state["outcome"].get("detail", {}).get("parent_echo")
        return "repair" if echo and state.get("repairs", 0) < max_repairs else "done"
    # The exact code of an earlier failure (often a repair that echoed its input): repair it again.
    return _next_attempt(state, max_repairs, max_fixes)


def after_evaluate(state: AttemptState, max_repairs: int, max_fixes: int = 0) -> Attempt:
    if _status(state) is None:
        raise ValueError("evaluate left no outcome")
    return _next_attempt(state, max_repairs, max_fixes)


def after_record(state: LoopState) -> Literal["improve", "__end__"]:
    return "__end__" if state.get("stop_reason") else "improve"


def stop_reason(iteration: int, max_iterations: int, elapsed_s: float, time_budget_s: float | None,
                best_accuracy: float | None, target_accuracy: float | None) -> str | None:
    """Why the run should stop after this iteration, or None to go on."""
    if iteration >= max_iterations:
        return "iterations"
    if time_budget_s is not None and elapsed_s >= time_budget_s:
        return "time_budget"
    if target_accuracy is not None and best_accuracy is not None and best_accuracy >= target_accuracy:
        return "target_accuracy"
    return None
