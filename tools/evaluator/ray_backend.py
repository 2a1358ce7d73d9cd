"""Candidates on a Ray cluster: each worker is a Ray actor that owns one warm parent on its node.

The driver (the loop or `nasgraph eval`) keeps the static checks, the store and the checkpoint; an
actor only forks candidates and returns their outcomes, so nothing is written twice. A lost actor or
node (`RayActorError`) means the candidate is evaluated again on a fresh actor; its first attempt
left no record. Ray is imported only when this backend is chosen.

Point a run at a cluster with RAY_ADDRESS (or `evaluator.ray_address`); without one a local Ray
instance is started. Every node needs nasgraph installed and its datasets cached under the same
data folder as the driver's (a shared NASGRAPH_HOME, or `nasgraph datasets` run on each node).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from nasgraph.errors import NasgraphError

from .outcome import Outcome
from .sandbox import WarmParent

CONNECT_TIMEOUT_S = 5.0
MAX_LOSSES = 2  # fresh actors tried for one candidate before it is given up as `killed`


class RayUnavailable(NasgraphError, RuntimeError):
    """Ray is not installed, or the cluster named by the address does not answer."""


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (else RAY_ADDRESS), or start a local Ray instance."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("the Ray backend needs the `ray` package: pip install 'ray>=2.40'") from None
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto":
        # ray.init retries an address that does not answer for minutes, logging all along; a plain
        # TCP connect says it in seconds.
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as e:
            raise RayUnavailable(f"the Ray cluster at {address} does not answer ({e}); start one with "
                                 "`ray start --head` or unset RAY_ADDRESS for a local instance") from None
    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             log_to_driver=False)


class _Worker:
    """Runs inside a Ray actor: one warm parent on that actor's node."""

    def __init__(self, data_dir: str) -> None:
        self.parent = WarmParent(Path(data_dir))
        self.parent.spawn()

    def pid(self) -> int:
        return os.getpid()

    def run(self, msg: dict) -> dict:
        return self.parent.run(msg).model_dump()

    def close(self) -> None:
        self.parent.close()


class RaySlot:
    """One evaluation slot backed by a Ray actor; the evaluator's pool treats it like a warm parent."""

    def __init__(self, data_dir: Path, num_cpus: float, num_gpus: float) -> None:
        import ray

        self._ray = ray
        self._data_dir = str(data_dir)
        self._cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(_Worker)
        self._closing = False
        self.restarts = 0
        self.actor = self._cls.remote(self._data_dir)

    def run(self, msg: dict) -> Outcome:
        for _ in range(MAX_LOSSES + 1):
            try:
                return Outcome(**self._ray.get(self.actor.run.remote(msg)))
            except self._ray.exceptions.RayActorError as e:
                if self._closing:
                    return Outcome(status="killed", error="the evaluator closed while this candidate ran")
                # The worker or its node is gone: evaluate the candidate again on a fresh actor.
                lost = e
                self.restarts += 1
                self.actor = self._cls.remote(self._data_dir)
        return Outcome(status="killed", error=f"lost {MAX_LOSSES + 1} Ray workers in a row on this candidate: {lost}")

    @property
    def pid(self) -> int:
        """The actor's process id on its node."""
        return self._ray.get(self.actor.pid.remote())

    def interrupt(self) -> None:
        self._closing = True
        self._ray.kill(self.actor)

    def close(self) -> None:
        self._closing = True
        try:
            self._ray.get(self.actor.close.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - already gone, or the cluster with it
            pass
        self._ray.kill(self.actor)
