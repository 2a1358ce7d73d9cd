"""Start or resume one autonomous run: the graph, its SQLite checkpoint, its trace and its summary.

A run lives in `<home>/runs/<run_id>/` (checkpoint.sqlite, trace.jsonl, run.json). LangGraph writes a
checkpoint after every node, the attempt subgraph's nodes included, so `kill -9` loses at most the node
in flight; resuming re-runs that node (the evaluate node first looks for its own result in the store,
so nothing is trained or counted twice).
"""
from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
import time
from typing import Any, Callable, Iterator

from langgraph.checkpoint.sqlite import SqliteSaver

from nasgraph.agents.schemas import Task
from nasgraph.config import Config
from nasgraph.errors import NasgraphError
from nasgraph.paths import RunPaths, list_runs  # noqa: F401 - list_runs is part of this module's API
from nasgraph.tools import archive
from nasgraph.tools.evaluator import Evaluator, training_recipe
from nasgraph.tools.evaluator.datasets import load_dataset
from nasgraph.tools.evaluator.harness import pick_device
from nasgraph.tools.hardware import hardware_info
from nasgraph.tools.store import Store

from .ahead import Ahead
from .build import build_graph, recursion_limit
from .nodes import Deps, Nodes, run_designs
from .state import LoopState
from .trace import TraceWriter


class RunError(NasgraphError, RuntimeError):
    """A run cannot start or resume (bad run id, finished run, config mismatch)."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def make_task(cfg: Config, goal: str = "") -> Task:
    data = load_dataset(cfg.loop.dataset, cfg.data_dir)
    return Task(dataset=data.name, in_shape=(cfg.evaluator.batch_size, *data.in_shape), classes=data.classes,
                max_params=cfg.evaluator.max_params, max_flops=cfg.evaluator.max_flops,
                epochs=cfg.loop.epochs, goal=goal, objective=cfg.loop.objective)


def summarize(run_id: str, values: dict) -> dict:
    s = values.get("stats", {})
    n = int(values.get("iteration", 0))
    dup = int(s.get("duplicates", 0))
    fresh = max(1, n - dup)  # valid rates are over iterations that produced a new design
    ok = int(s.get("valid_after_repair", 0))
    trained = ok - int(s.get("screened", 0))  # valid designs trained to the end (the mean's denominator)
    best = values.get("best")
    return {
        "run_id": run_id,
        "iterations": n,
        "valid_first_attempt": round(s.get("valid_first_attempt", 0) / fresh, 4),
        "valid_after_repair": round(ok / fresh, 4),
        "duplicates": dup,
        "rule_fixes": int(s.get("rule_fixes", 0)),
        "novel": int(s.get("novel", 0)),
        "near_copies": int(s.get("near_copies", 0)),
        "best_accuracy": best["accuracy"] if best else None,
        "best_params": best["params"] if best else None,
        "best_arch_id": best["arch_id"] if best else None,
        "mean_accuracy": round(s.get("accuracy_sum", 0) / trained, 4) if trained else None,
        "screened": int(s.get("screened", 0)),
        "screen_saved_s": round(s.get("screen_saved_s", 0.0), 1),
        "failures": {k[len("status_"):]: int(v) for k, v in s.items() if k.startswith("status_") and k != "status_ok"},
        "seconds": {k: round(s.get(f"seconds_{k}", 0.0), 2) for k in ("llm", "train", "other")},
        "seconds_per_iteration": {k: round(s.get(f"seconds_{k}", 0.0) / max(1, n), 2) for k in ("llm", "train", "other")},
        "stop_reason": values.get("stop_reason"),
    }


def run_loop(cfg: Config, llm: Any, *, run_id: str | None = None, iterations: int | None = None,
             goal: str = "", on_update: Callable[[str, dict, dict], None] | None = None,
             evaluator: Evaluator | None = None, retrieve: Any = None, retask: bool = False,
             seed_key: str = "") -> dict:
    """Run (or resume) until the stop condition; returns the summary. `llm` is a nasgraph.agents.llm handle.

    `retask`: on resume, replace the stored task and goal with this call's (a chat session refining its
    constraints between extensions); otherwise a resumed run keeps the ones it started with.
    `seed_key`: what seeds the LLM's samples instead of the run id, so that two runs (say, a base model and
    its fine-tuned adapter) draw the same seeds step by step."""
    run_id = run_id or new_run_id()
    if retrieve is None and cfg.rag.enabled:
        from nasgraph.agents.rag_retriever import make_retriever
        retrieve = make_retriever(cfg)
    paths = RunPaths(cfg.runs_dir / run_id)
    paths.root.mkdir(parents=True, exist_ok=True)
    task = make_task(cfg, goal)
    device = str(pick_device(cfg.evaluator.device))
    store = Store(cfg.store_path)
    own_evaluator = evaluator is None
    # One candidate at a time: an attempt waits for its outcome before it repairs or ends.
    evaluator = evaluator or Evaluator.from_config(cfg.evaluator, cfg.data_dir, device=device, workers=1)
    trace = TraceWriter(paths.trace)
    conn = sqlite3.connect(paths.checkpoint, check_same_thread=False)
    ahead = Ahead(cfg.loop.in_flight) if cfg.loop.in_flight > 1 else None
    try:
        saver = SqliteSaver(conn)
        deps = Deps(cfg=cfg, llm=llm, evaluator=evaluator, store=store, trace=trace,
                    hardware=hardware_info(cfg.evaluator.threads, device), prm=training_recipe(cfg.evaluator, cfg.loop.prm),
                    retrieve=retrieve, ahead=ahead)
        graph = build_graph(Nodes(deps), cfg.loop.max_repairs, checkpointer=saver, max_fixes=cfg.loop.max_fixes)
        config = {"configurable": {"thread_id": run_id}}
        snapshot = graph.get_state(config, subgraphs=True)
        values = snapshot.values or {}
        if values:
            _check_resumable(values, task)
            trace.truncate_from(_resume_step(snapshot))
            total = iterations or values["max_iterations"]
            retasked = {"task": task.model_dump(), "user_goal": goal} if retask else {}
            # Finished before only if no task is left, not merely none to run: the live snapshot lists a
            # task whose writes were saved without the checkpoint after them (a kill in between) under
            # `tasks` but not `next`, and streaming on applies its writes.
            if not snapshot.tasks:  # finished before: extend it if asked for more iterations
                if total <= values.get("iteration", 0):
                    return _summary(cfg, store, run_id, values)
                graph.update_state(config, {"max_iterations": total, "stop_reason": None, **retasked},
                                   as_node="record")
            elif total != values["max_iterations"] or retasked:
                graph.update_state(config, {"max_iterations": total, **retasked})
            inputs = None
        else:
            total = iterations or cfg.loop.iterations
            inputs = LoopState(run_id=run_id, seed_key=seed_key or run_id, max_iterations=total, task=task.model_dump(), user_goal=goal,
                               iteration=0, step=0, history=[], best=None, stats={})
            paths.meta.write_text(json.dumps({"run_id": run_id, "created": time.time(),
                                              "config": json.loads(cfg.model_dump_json())}, indent=1))
        config["recursion_limit"] = recursion_limit(total, cfg.loop.max_repairs, cfg.loop.max_fixes)
        if on_update:  # a view shows where the run stands before its first node ends
            on_update("start", {}, graph.get_state(config).values)
        for node, update, state in _stream(graph, inputs, config):
            if on_update:
                on_update(node, update, state)
        return _summary(cfg, store, run_id, graph.get_state(config).values)
    finally:
        if ahead is not None:  # before the store closes: the planner's last LLM call ends first
            ahead.close()
        conn.close()
        store.close()
        if own_evaluator:
            evaluator.close()


def _summary(cfg: Config, store: Store, run_id: str, values: dict) -> dict:
    summary = summarize(run_id, values)
    if cfg.loop.objective == "pareto":
        summary["front"] = [dataclasses.asdict(d) for d in archive.front(run_designs(store, run_id))]
    return summary


def _resume_step(snapshot) -> int:
    """The step a resumed run continues from: that of the innermost checkpoint (an attempt subgraph
    in flight has run nodes past the loop's own checkpoint; their trace events stay)."""
    step = snapshot.values.get("step", 0)
    for task in snapshot.tasks:
        if task.state is not None and getattr(task.state, "values", None):
            step = max(step, _resume_step(task.state))
    return step


def _stream(graph, inputs, config) -> Iterator[tuple[str, dict, dict]]:
    """Yield (node, its update, the loop's state) as each node finishes, the attempt subgraph's
    nodes included (with the loop's state as of their attempt's start)."""
    pending: list[tuple[str, dict]] = []
    loop_state: dict = {}
    # durability="sync": a step's checkpoint is on disk before the next step runs, so no node's trace event
    # can outlive an unsaved checkpoint of an earlier node (the invariant truncate_from relies on).
    for namespace, mode, payload in graph.stream(inputs, config, stream_mode=["updates", "values"], subgraphs=True,
                                                 durability="sync"):
        if namespace:  # inside the attempt subgraph
            if mode == "updates":
                for node, update in payload.items():
                    yield node, update or {}, loop_state
            continue
        if mode == "updates":
            pending.extend((node, update or {}) for node, update in payload.items())
        else:  # "values" follows the updates of the same step
            loop_state = payload
            for node, update in pending:
                if node != "attempt":  # its nodes were yielded as they ran
                    yield node, update, payload
            pending = []


def _check_resumable(values: dict, task: Task) -> None:
    if values.get("task", {}).get("dataset") != task.dataset:
        raise RunError(f"run {values.get('run_id')} was started on {values['task']['dataset']!r}, "
                       f"not {task.dataset!r}; start a new run id for another dataset")
