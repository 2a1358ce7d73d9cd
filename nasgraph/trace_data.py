"""A run as its trace tells it: per-iteration rows, summary figures, filters and text search.

`trace`, `report` and `chat` all read runs through this module, so they agree on what an iteration,
a valid design and a failure are. Only the trace (and run.json) is read: no store, no checkpoint, so a
run folder copied to another machine can still be inspected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from nasgraph.errors import NasgraphError
from nasgraph.graph.trace import read_events
from nasgraph.paths import CHECKPOINT, META, TRACE, list_runs  # noqa: F401 - re-exported for the readers
from nasgraph.tools.evaluator.outcome import VALID

# Fields a text search looks into (the rest are numbers and names).
SEARCH_FIELDS = ("node", "status", "first_status", "repairing", "prompt_text", "reply", "code", "error", "triple",
                 "prompt", "code_hash", "stop_reason")


class TraceError(NasgraphError):
    """A run that cannot be found or read; the message says what to do."""


@dataclass
class IterationRow:
    """One finished iteration: its final outcome and the design behind it."""
    iteration: int
    status: str
    first_status: str | None = None
    accuracy: float | None = None
    params: int | None = None
    flops: int | None = None
    arch_id: str | None = None
    novelty: float | None = None
    repairs: int = 0
    error: str = ""
    triple: dict = field(default_factory=dict)
    code: str | None = None
    seconds: float = 0.0
    attempts: list[str] = field(default_factory=list)  # how each attempt ended: check/dup/evaluate status
    latency_ms: float | None = None  # batch-1 forward time, measured when the objective is pareto

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def valid(self) -> bool:
        """Code that built, checked and trained (a screened design too, stopped part-way)."""
        return self.status in VALID

    @property
    def fresh(self) -> bool:
        """Produced a design not seen before (a duplicate cost no training and is not counted in rates)."""
        return self.status != "duplicate"


@dataclass
class RunDigest:
    run_id: str
    root: Path
    events: list[dict]
    rows: list[IterationRow]
    meta: dict

    @property
    def iterations(self) -> int:
        return len(self.rows)

    @property
    def size_bytes(self) -> int:
        trace = self.root / TRACE
        return trace.stat().st_size if trace.exists() else 0

    @property
    def best(self) -> IterationRow | None:
        ok = [r for r in self.rows if r.ok and r.accuracy is not None]
        return max(ok, key=lambda r: r.accuracy) if ok else None

    @property
    def valid_rate(self) -> float | None:
        """Valid designs over iterations that produced a new design (as nasgraph.graph.run.summarize counts)."""
        fresh = [r for r in self.rows if r.fresh]
        return sum(r.valid for r in fresh) / len(fresh) if fresh else None

    @property
    def dataset(self) -> str | None:
        cfg = self.meta.get("config", {})
        return cfg.get("loop", {}).get("dataset")

    @property
    def model(self) -> str | None:
        return next((e.get("model") for e in reversed(self.events) if e.get("model")), None)

    @property
    def stop_reason(self) -> str | None:
        last = next((e for e in reversed(self.events) if e.get("node") == "record"), None)
        return last.get("stop_reason") if last else None

    @property
    def created(self) -> float | None:
        return self.meta.get("created") or (self.events[0].get("ts") if self.events else None)

    def failures(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            if not r.ok:
                out[r.status] = out.get(r.status, 0) + 1
        return out

    def top(self, k: int = 5) -> list[IterationRow]:
        """Best valid designs, one row per architecture, best first."""
        seen: dict[str, IterationRow] = {}
        for r in self.rows:
            if r.ok and r.accuracy is not None and r.arch_id:
                if r.arch_id not in seen or r.accuracy > (seen[r.arch_id].accuracy or 0):
                    seen[r.arch_id] = r
        return sorted(seen.values(), key=lambda r: -(r.accuracy or 0))[:k]

    def code_of(self, arch_id: str) -> str | None:
        return next((e.get("code") for e in self.events if e.get("code_hash") == arch_id and e.get("code")), None)


def iteration_rows(events: Iterable[dict]) -> list[IterationRow]:
    """Fold the node events of each iteration into one row (iterations without a record are in flight)."""
    events = list(events)
    rows: list[IterationRow] = []
    code: str | None = None
    triple: dict = {}
    seconds = 0.0
    attempts: list[str] = []
    for e in events:
        node = e.get("node")
        seconds += float(e.get("seconds") or 0.0)
        if node == "improve":
            triple, code, seconds, attempts = e.get("triple") or {}, None, float(e.get("seconds") or 0.0), []
        elif node in ("generate", "repair"):
            code = e.get("code") or code
        elif node == "check" and e.get("status") not in (None, "pass"):
            attempts.append(e["status"])
        elif node == "fingerprint" and e.get("status") == "duplicate":
            attempts.append("duplicate")
        elif node == "evaluate":
            attempts.append(e.get("status") or "?")
        elif node == "record":
            rows.append(IterationRow(
                iteration=int(e.get("iteration", len(rows) + 1)), status=e.get("status") or "?",
                first_status=e.get("first_status"), accuracy=e.get("accuracy"), params=e.get("params"),
                arch_id=e.get("code_hash"), novelty=e.get("novelty"), repairs=int(e.get("repairs") or 0),
                error=e.get("error") or "", triple=triple, code=code, seconds=round(seconds, 3),
                attempts=attempts))
            seconds = 0.0
    # One row per iteration, the last record winning: should an event of a node that was not checkpointed
    # ever outlive the truncation on resume, the rerun of that iteration replaces it instead of counting twice.
    rows = sorted({r.iteration: r for r in rows}.values(), key=lambda r: r.iteration)
    # A duplicate's record has no FLOPs; the evaluation of the same architecture has them.
    flops = {e.get("code_hash"): e.get("flops") for e in events if e.get("node") == "evaluate" and e.get("flops")}
    latency = {e.get("code_hash"): e.get("latency_ms") for e in events
               if e.get("node") == "evaluate" and e.get("latency_ms") is not None}
    for r in rows:
        r.flops, r.latency_ms = flops.get(r.arch_id), latency.get(r.arch_id)
    return rows


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


def resolve_run(runs_dir: Path, key: str) -> str:
    """A run id from an id or an unambiguous prefix (or 'last', the newest run)."""
    runs = list_runs(runs_dir)
    if not runs:
        raise TraceError(f"no runs in {runs_dir}; start one with `nasgraph run` or `nasgraph chat`")
    if key == "last":
        return max(runs, key=lambda r: _mtime(runs_dir / r / TRACE))
    if key in runs:
        return key
    hits = [r for r in runs if r.startswith(key)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise TraceError(f"run prefix '{key}' is ambiguous: {', '.join(hits[:5])}; give more characters")
    raise TraceError(f"no run '{key}' in {runs_dir}; `nasgraph trace ls` lists the runs")


def load_run(runs_dir: Path, key: str) -> RunDigest:
    run_id = resolve_run(runs_dir, key)
    root = runs_dir / run_id
    try:
        events = list(read_events(root / TRACE))
        meta = json.loads((root / META).read_text(encoding="utf-8")) if (root / META).exists() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TraceError(f"cannot read run {run_id} in {root}: {e}") from None
    return RunDigest(run_id, root, events, iteration_rows(events), meta)


def all_runs(runs_dir: Path) -> list[RunDigest]:
    return [load_run(runs_dir, r) for r in list_runs(runs_dir)]


def event_text(event: dict) -> str:
    parts = []
    for key in SEARCH_FIELDS:
        value = event.get(key)
        if value:
            parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return "\n".join(parts)


def matches(event: dict, *, iteration: int | None = None, node: str | None = None, status: str | None = None,
            text: str | None = None) -> bool:
    """The trace filters: iteration, node name, status (of the event or of the attempt being repaired),
    and a case-insensitive text search over prompts, replies, code, errors and triples."""
    if iteration is not None and event.get("iteration") != iteration:
        return False
    if node is not None and event.get("node") != node:
        return False
    if status is not None and status not in (event.get("status"), event.get("repairing")):
        return False
    if text and text.lower() not in event_text(event).lower():
        return False
    return True


def snippet(event: dict, text: str, width: int = 70) -> str:
    """The line around the first hit of `text`, for search listings."""
    hay = event_text(event)
    i = hay.lower().find(text.lower())
    if i < 0:
        return ""
    start = max(0, i - width // 3)
    line = hay[start:start + width].replace("\n", " ⏎ ")
    return ("…" if start else "") + line + ("…" if start + width < len(hay) else "")


def moving_rate(flags: list[bool | None], window: int) -> list[float | None]:
    """Trailing-window mean of booleans; None entries (not counted) are skipped, all-None gives None."""
    out: list[float | None] = []
    for i in range(len(flags)):
        seen = [f for f in flags[max(0, i - window + 1):i + 1] if f is not None]
        out.append(sum(seen) / len(seen) if seen else None)
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(params, accuracy) points not beaten by a smaller-or-equal model with higher-or-equal accuracy."""
    front: list[tuple[float, float]] = []
    for p, a in sorted(set(points), key=lambda t: (t[0], -t[1])):
        if not front or a > front[-1][1]:
            front.append((p, a))
    return front


def to_json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
