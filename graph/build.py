"""Wiring: nodes and pure routers into one LangGraph StateGraph, checkpointed to SQLite."""
from __future__ import annotations

from functools import partial

from langgraph.graph import END, START, StateGraph

from . import routing
from .nodes import Nodes
from .state import LoopState

NODE_NAMES = ("improve", "retrieve", "generate", "check", "fix", "repair", "fingerprint", "evaluate", "record")


def build_graph(nodes: Nodes, max_repairs: int, checkpointer=None, max_fixes: int = 0):
    g = StateGraph(LoopState)
    for name in NODE_NAMES:
        g.add_node(name, nodes.wrap(name, getattr(nodes, name)))
    g.add_edge(START, "improve")
    g.add_edge("improve", "retrieve")
    g.add_edge("retrieve", "generate")
    g.add_edge("generate", "check")
    g.add_edge("repair", "check")
    g.add_edge("fix", "check")
    bounds = {"max_repairs": max_repairs, "max_fixes": max_fixes}
    g.add_conditional_edges("check", partial(routing.after_check, **bounds), ["fingerprint", "fix", "repair", "record"])
    g.add_conditional_edges("fingerprint", partial(routing.after_fingerprint, **bounds),
                            ["evaluate", "fix", "repair", "record"])
    g.add_conditional_edges("evaluate", partial(routing.after_evaluate, **bounds), ["fix", "repair", "record"])
    g.add_conditional_edges("record", routing.after_record, {"improve": "improve", "__end__": END})
    return g.compile(checkpointer=checkpointer)


def recursion_limit(iterations: int, max_repairs: int, max_fixes: int = 0) -> int:
    # Worst case per iteration: improve, retrieve, generate, then (check, fingerprint, evaluate, repair
    # or fix) per attempt, then record; each of the 1 + max_repairs drafts gets up to max_fixes fixes.
    return iterations * (4 + 4 * (max_repairs + 1) * (max_fixes + 1)) + 50
