"""The layout of a run folder, owned here and nowhere else: `<home>/runs/<run_id>/` holds
checkpoint.sqlite (LangGraph's), trace.jsonl (one event per node run) and run.json (id, creation time,
config). A bottom module: the loop writes through it, and the readers (trace, report, chat) use it
without importing the loop, which pulls in torch and langgraph."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRACE, META, CHECKPOINT = "trace.jsonl", "run.json", "checkpoint.sqlite"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def trace(self) -> Path:
        return self.root / TRACE

    @property
    def meta(self) -> Path:
        return self.root / META


def list_runs(runs_dir: Path) -> list[str]:
    """Run ids in `runs_dir`: the folders with a checkpoint."""
    return sorted(p.name for p in runs_dir.iterdir() if (p / CHECKPOINT).exists()) if runs_dir.is_dir() else []
