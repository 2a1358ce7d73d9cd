"""Designs planned ahead (`loop.in_flight` = k > 1): while one iteration's design trains, the agents plan
the next k-1 iterations (the Prompt Improver's triple, the retrieved blocks, the Code Generator's first
draft) in a background thread.

A plan made ahead must be the plan the loop would have made itself, and a resumed run must replay it.
So with k > 1 iteration m is always planned from the *view* after iteration m-k was recorded (history,
best design, children per parent and the archive as they were then; `Nodes.view`), and the LLM samples
of its improve and generate nodes are seeded by (iteration, node) instead of by graph step, which is not
known ahead. A plan is only a cache of agent work: nothing is evaluated or stored ahead, so a kill loses
some LLM seconds at most, never a candidate, and nothing is counted twice.

One lock serialises the agents (one LLM, one RAG client, neither thread-safe): what overlaps is agent
work with training, which runs in the evaluator's own processes.
"""
from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Plan:
    """What the graph's improve, retrieve and generate nodes would return for one iteration (NodeResults),
    and the inputs they were made from, so a node uses a plan only for the very same inputs."""
    iteration: int
    improve: Any
    retrieve: Any
    generate: Any | None     # None when the plan stopped early (closing)
    triple: dict
    parent: dict | None
    blocks: list[str]


class Ahead:
    def __init__(self, in_flight: int):
        if in_flight < 2:
            raise ValueError("planning ahead needs in_flight >= 2")
        self.in_flight = in_flight
        self.agents = threading.RLock()  # held around every LLM or RAG call, in the graph and here
        self.closing = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nasgraph-ahead")
        self._plans: dict[int, Future] = {}
        self.current: Plan | None = None  # the plan the graph is following (set by improve)

    def scheduled(self, iteration: int) -> bool:
        return iteration in self._plans

    def schedule(self, iteration: int, make: Callable[[], Plan]) -> None:
        if iteration not in self._plans and not self.closing.is_set():
            self._plans[iteration] = self._pool.submit(make)

    def take(self, iteration: int) -> Plan | None:
        """The plan for `iteration` (waiting for it if it is being made); None when none was scheduled
        (a resumed run) or making it failed: the graph then plans it itself. The node's wrapper times the wait."""
        future = self._plans.pop(iteration, None)
        if future is None:
            return None
        try:
            return future.result()
        except (Exception, CancelledError):  # noqa: BLE001 - the graph redoes it and raises there if it must
            return None

    def close(self) -> None:
        """Stop planning: no new LLM call starts; the one in progress (if any) is waited for, so the model
        is free when the run returns."""
        self.closing.set()
        for future in self._plans.values():
            future.cancel()
        self._plans.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
