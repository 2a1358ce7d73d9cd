"""The state of one `nasgraph chat` session and the plain-words parsing behind it.

A session owns one run id (a new one only when the dataset changes: a run is bound to its dataset) and
keeps what the person asked for: the brief, later refinements, and budgets read from the text. It is a
JSON file in `<runs>/chat/`, rewritten atomically after every line typed and every answer given, so a
crash or a closed terminal loses nothing that was said.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nasgraph.dataset_ref import parse
from nasgraph.errors import NasgraphError
from nasgraph.trace_data import IterationRow, RunDigest

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
QUESTION_WORDS = ("why", "what", "which", "how", "when", "where", "who", "is", "are", "was", "were", "did",
                  "does", "do", "can", "could", "should", "would", "will", "explain", "tell")
FAILURE_WORDS = ("fail", "error", "crash", "wrong", "broke", "invalid", "didn't work", "did not work")
_UNITS = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "": 1.0}
_PARAMS = re.compile(r"(\d[\d,_]*(?:\.\d+)?)\s*(k|m|thousand|million)?\s*(?:trainable\s+)?(?:params|parameters|weights)\b",
                     re.IGNORECASE)
_EPOCHS = re.compile(r"\b(\d{1,3})\s*epochs?\b", re.IGNORECASE)
REQUESTS_KEPT = 3  # refinements passed on to the graph (older ones are superseded, but stay in the transcript)


class SessionError(NasgraphError):
    """A session that cannot be created, read or written; the message says why."""


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise SessionError(f"bad session name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return name


def sessions_dir(runs_dir: Path) -> Path:
    return runs_dir / "chat"


@dataclass
class Session:
    name: str
    dataset: str
    run_id: str
    runs: list[str] = field(default_factory=list)
    brief: str = ""                                     # what the person wants, in their words
    requests: list[str] = field(default_factory=list)  # refinements since the brief, oldest first
    max_params: int | None = None
    epochs: int | None = None
    transcript: list[dict] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @classmethod
    def new(cls, name: str, dataset: str) -> Session:
        run_id = f"chat-{check_name(name)}"
        return cls(name=name, dataset=dataset, run_id=run_id, runs=[run_id])

    @property
    def goal(self) -> str:
        """The goal text the graph's agents read."""
        parts = [self.brief.strip()] if self.brief.strip() else []
        if self.requests:
            parts.append("Latest requests, most recent last: " + " | ".join(self.requests[-REQUESTS_KEPT:]))
        return "\n".join(parts)

    def note(self, role: str, text: str) -> None:
        self.transcript.append({"role": role, "text": text, "ts": round(time.time(), 3)})

    def switch_dataset(self, dataset: str) -> None:
        """A run is bound to its dataset: another dataset continues in a new run of this session."""
        if dataset == self.dataset:
            return
        self.dataset = dataset
        self.run_id = f"chat-{self.name}-{len(self.runs) + 1}"
        self.runs.append(self.run_id)

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        self.updated = time.time()
        path = folder / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)  # atomic: a crash leaves the old file or the new one, never half
        except OSError as e:
            raise SessionError(f"cannot save session {self.name} to {path}: {e}") from None
        return path

    @classmethod
    def load(cls, folder: Path, name: str) -> Session:
        path = folder / f"{check_name(name)}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data)
        except FileNotFoundError:
            raise SessionError(f"no session '{name}' in {folder}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
            raise SessionError(f"session file {path} is unreadable ({e}); move it aside to start afresh") from None


def list_sessions(folder: Path) -> list[Session]:
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(Session.load(folder, path.stem))
        except SessionError:
            continue
    return sorted(out, key=lambda s: -s.updated)


# -- reading requests ----------------------------------------------------------------------------
def parse_number(digits: str, unit: str | None) -> int:
    return int(round(float(digits.replace(",", "").replace("_", "")) * _UNITS[(unit or "").lower()]))


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def find_dataset(text: str, names: list[str]) -> str | None:
    """The dataset a request names ('Fashion-MNIST', 'fashion mnist' → fashion-mnist); longest name wins,
    so 'fashion-mnist' is not read as 'mnist'."""
    squashed = _squash(text)
    hits = [n for n in names if _squash(n) and _squash(n) in squashed]
    return max(hits, key=lambda n: len(_squash(n))) if hits else None


def parse_request(text: str, datasets: list[str]) -> dict:
    """Constraints stated in plain words: dataset, parameter budget, epochs (only those present)."""
    found: dict = {}
    ds = find_dataset(text, datasets)
    if ds:
        found["dataset"] = ds
    m = _PARAMS.search(text)
    if m:
        found["max_params"] = parse_number(m.group(1), m.group(2))
    m = _EPOCHS.search(text)
    if m:
        found["epochs"] = int(m.group(1))
    return found


def is_question(text: str) -> bool:
    """A question is answered; anything else is a request that steers the design."""
    t = text.strip().lower()
    polite = re.match(r"(please|(can|could|would|will) you)\b[\s,]*(\w+)?", t)
    if polite:  # "could you try depthwise convolutions?" asks for an action
        return polite.group(3) in ("explain", "tell", "say", "show", "describe")
    words = t.split()
    return t.endswith("?") or (bool(words) and words[0].strip(",:") in QUESTION_WORDS)


# -- answers that the run's own records give ---------------------------------------------------------
def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines[-n:])


def describe_row(r: IterationRow) -> str:
    what = r.triple.get("modification", "").strip() or "(no instruction recorded)"
    if r.ok:
        result = f"ok, accuracy {100 * (r.accuracy or 0):.2f}% with {r.params:,} parameters" if r.params else "ok"
    elif r.status == "duplicate":
        result = f"a duplicate of {r.arch_id} (never trained twice)"
    else:
        result = f"{r.status}: {_last_lines(r.error)}"
    return f"#{r.iteration} asked for: {what} → {result}"


def failure_answer(digests: list[RunDigest]) -> str:
    """'Why did the last one fail?', answered from the trace: the error and the improver's diagnosis."""
    rows = [r for d in digests for r in d.rows]
    if not rows:
        return "Nothing has run yet in this session: /run N runs N iterations."
    failed = [r for r in rows if not r.ok and r.status != "duplicate"]
    last = rows[-1]
    if not failed:
        return f"No iteration has failed so far. The last one: {describe_row(last)}."
    f = failed[-1]
    head = "" if f is last else f"The last iteration did not fail ({describe_row(last)}). The last failure was:\n"
    text = (f"{head}Iteration {f.iteration} ended with {f.status}"
            + (f" after {f.repairs} repair attempt(s)" if f.repairs else "")
            + f".\nError: {_last_lines(f.error, 4) or '(no message)'}")
    if f.first_status and f.first_status != f.status:
        text += f"\nIts first attempt ended with {f.first_status}."
    nxt = next((r for r in rows if r.iteration == f.iteration + 1), None)
    if nxt and nxt.triple.get("problem"):
        text += (f"\nThe prompt improver's diagnosis: {nxt.triple['problem']}"
                 f"\nIt asked next for: {nxt.triple.get('modification', '')}")
    return text


def best_answer(digests: list[RunDigest]) -> str:
    top = sorted((r for d in digests for r in d.top(3)), key=lambda r: -(r.accuracy or 0))
    if not top:
        return "No valid design yet."
    b = top[0]
    return (f"The best design so far is {b.arch_id}: {100 * (b.accuracy or 0):.2f}% accuracy with "
            f"{b.params:,} parameters (iteration {b.iteration}, asked for: {b.triple.get('modification', '?')}). "
            "/best lists the top designs, /show ID prints the code.")


def count_answer(digests: list[RunDigest]) -> str:
    rows = [r for d in digests for r in d.rows]
    fresh = [r for r in rows if r.fresh]
    ok = sum(r.ok for r in fresh)
    fails: dict[str, int] = {}
    for r in rows:
        if not r.ok:
            fails[r.status] = fails.get(r.status, 0) + 1
    return (f"{len(rows)} iterations so far: {ok} valid of {len(fresh)} new designs, "
            f"{len(rows) - len(fresh)} duplicates; failures: "
            + (", ".join(f"{k} {v}" for k, v in sorted(fails.items())) or "none") + ".")


def direct_answer(question: str, digests: list[RunDigest]) -> str | None:
    """The obvious questions get an exact answer from the records; others go to the LLM (None)."""
    q = question.lower()
    if any(w in q for w in FAILURE_WORDS) and re.search(r"\b(why|what)\b", q):
        return failure_answer(digests)
    if re.search(r"\bhow many\b", q):
        return count_answer(digests)
    if re.search(r"\b(best|top)\b", q) and re.search(r"\b(what|which|show)\b", q):
        return best_answer(digests)
    return None


def answer_context(session: Session, digests: list[RunDigest], recent: int = 8, code_lines: int = 40) -> str:
    """A compact, factual summary of the session for the LLM to answer from."""
    lines = [f"Dataset: {parse(session.dataset).short_name}; parameter budget: "
             f"{f'{session.max_params:,}' if session.max_params else 'default'}; epochs per design: "
             f"{session.epochs or 'default'}.",
             f"User's goal: {session.goal or '(none stated)'}"]
    rows = [r for d in digests for r in d.rows]
    if not rows:
        lines.append("No design has been generated yet.")
        return "\n".join(lines)
    lines.append(count_answer(digests))
    lines.append(best_answer(digests).split(" /best")[0])
    lines.append("Recent iterations, oldest first:")
    lines += [describe_row(r) for r in rows[-recent:]]
    last = rows[-1]
    if last.code:
        code = last.code.strip().splitlines()
        lines.append(f"Code of the last design (iteration {last.iteration}):")
        lines += code[:code_lines] + ([f"... ({len(code) - code_lines} more lines)"] if len(code) > code_lines else [])
    return "\n".join(lines)
