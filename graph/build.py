"""Wiring: the loop graph (improve -> retrieve -> attempt -> record) and, inside its `attempt` node,
the attempt subgraph (generate -> check -> fix | repair -> fingerprint -> evaluate), each with its own
typed state, checkpointed to the same SQLite file (the subgraph under its own namespace, so a resumed
run continues an attempt from its last finished node)."""
from __future__ import annotations

from functools import partial
from typing import Callable

from langgraph.graph import END, START, StateGraph

from . import routing
from .nodes import Nodes
from .state import ATTEMPT_INPUTS, RESULT_KEYS, AttemptState, LoopState

LOOP_NODES = ("improve", "retrieve", "record")
ATTEMPT_NODES = ("generate", "check", "fix", "repair", "fingerprint", "evaluate")
NODE_NAMES = LOOP_NODES[:2] + ATTEMPT_NODES + LOOP_NODES[2:]  # every traced node, in iteration order


def build_attempt(nodes: Nodes, max_repairs: int, max_fixes: int = 0):
    g = StateGraph(AttemptState)
    for name in ATTEMPT_NODES:
        g.add_node(name, nodes.wrap(name, getattr(nodes, name)))
    g.add_edge(START, "generate")
    g.add_edge("generate", "check")
    g.add_edge("repair", "check")
    g.add_edge("fix", "check")
    bounds = {"max_repairs": max_repairs, "max_fixes": max_fixes}
    done = {"done": END}
    g.add_conditional_edges("check", partial(routing.after_check, **bounds),
                            {"fingerprint": "fingerprint", "fix": "fix", "repair": "repair", **done})
    g.add_conditional_edges("fingerprint", partial(routing.after_fingerprint, **bounds),
                            {"evaluate": "evaluate", "fix": "fix", "repair": "repair", **done})
    g.add_conditional_edges("evaluate", partial(routing.after_evaluate, **bounds), {"fix": "fix", "repair": "repair", **done})
    # No checkpointer of its own: invoked inside the loop's node, it uses the loop's.
    return g.compile()


def attempt_node(attempt_graph) -> Callable[[LoopState], dict]:
    """The loop's `attempt` node: runs the subgraph and hands back its result, the node runs it took
    (trace steps) and its stats. Not traced itself: its subgraph's nodes are."""
    def attempt(state: LoopState) -> dict:
        start = state.get("step", 0)
        inputs = {**{k: state.get(k) for k in ATTEMPT_INPUTS}, "stats": {}, "repairs": 0, "fixes": 0, "drafts": []}
        if state.get("view"):  # planned ahead (loop.in_flight > 1): drafts and repairs see what the plan saw
            inputs.update(history=state["view"]["history"], best=state["view"]["best"])
        # On resume LangGraph ignores `inputs` and continues the subgraph from its own checkpoint.
        out = attempt_graph.invoke(inputs)
        return {"attempt": {k: out.get(k) for k in RESULT_KEYS}, "step": out["step"] - start,
                "stats": out.get("stats", {})}
    return attempt


def build_graph(nodes: Nodes, max_repairs: int, checkpointer=None, max_fixes: int = 0):
    g = StateGraph(LoopState)
    for name in LOOP_NODES:
        g.add_node(name, nodes.wrap(name, getattr(nodes, name)))
    g.add_node("attempt", attempt_node(build_attempt(nodes, max_repairs, max_fixes)))
    g.add_edge(START, "improve")
    g.add_edge("improve", "retrieve")
    g.add_edge("retrieve", "attempt")
    g.add_edge("attempt", "record")
    g.add_conditional_edges("record", routing.after_record, {"improve": "improve", "__end__": END})
    return g.compile(checkpointer=checkpointer)


def recursion_limit(iterations: int, max_repairs: int, max_fixes: int = 0) -> int:
    # The limit counts one graph's own steps. Loop: improve, retrieve, attempt, record per iteration.
    # Attempt: generate, then (check, fingerprint, evaluate, repair or fix) per draft; each of the
    # 1 + max_repairs drafts gets up to max_fixes fixes. Both graphs run under the one limit given.
    return max(iterations * 4, 1 + 4 * (max_repairs + 1) * (max_fixes + 1)) + 50
