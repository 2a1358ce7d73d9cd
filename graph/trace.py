"""Append-only JSONL trace: one event per node run. Every viewer reads these same events.

Each event carries the graph `step` it belongs to. A node killed after writing its event but before
LangGraph checkpointed it runs again on resume; `truncate_from(step)` drops such orphan events so the
trace and the checkpoint (and the store) tell the same story.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator


class TraceWriter:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, **event: Any) -> None:
        event.setdefault("ts", time.time())
        line = json.dumps(event, default=str, ensure_ascii=False)
        # One write of one full line, flushed and fsynced: a crash can cut the last line, never mix two.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_from(self, step: int) -> int:
        """Drop events with step >= `step` (and any torn last line); returns how many were dropped."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for event in read_events(self.path):
            if event.get("step", -1) >= step:
                dropped += 1
            else:
                kept.append(json.dumps(event, default=str, ensure_ascii=False))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        return dropped


def read_events(path: Path) -> Iterator[dict]:
    """Events in order; a torn final line (crash mid-write) is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
