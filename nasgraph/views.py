"""Rich views: outcome tables, store listings, the live run panel and the final run summary."""
from __future__ import annotations

import time
from collections import deque

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from nasgraph.tools.evaluator import Outcome


def fmt_int(n: int | float | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def fmt_acc(a: float | None) -> str:
    return "–" if a is None else f"{100 * a:.2f}%"


def outcome_table(name: str, outcome: Outcome, cache_hit: bool = False) -> Table:
    style = "green" if outcome.ok else "red"
    t = Table(title=f"{name}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("status", f"[{style}]{outcome.status}[/]" + (" (cached)" if cache_hit else ""))
    t.add_row("accuracy", fmt_acc(outcome.accuracy))
    t.add_row("params", fmt_int(outcome.params))
    t.add_row("FLOPs/sample", fmt_int(outcome.flops))
    t.add_row("seconds", "  ".join(f"{k} {v:.2f}" for k, v in outcome.seconds.items()))
    if outcome.error:
        t.add_row("error", outcome.error)
    return t


def code_view(code: str) -> Syntax:
    return Syntax(code, "python", line_numbers=True, word_wrap=True)


class RunView:
    """The live panel of `nasgraph run`: progress, best so far, recent valid rate, stage times, ETA."""

    def __init__(self, console: Console, run_id: str, total: int, window: int = 10):
        self.console, self.run_id, self.total = console, run_id, total
        self.recent: deque[bool] = deque(maxlen=window)
        self.node = "starting"
        self.state: dict = {}
        self.last_failure = "–"
        self.started = time.monotonic()
        self.done_at_start: int | None = None
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "RunView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def update(self, node: str, update: dict, state: dict) -> None:
        self.state = state
        self.total = state.get("max_iterations", self.total)
        if self.done_at_start is None:
            self.done_at_start = state.get("iteration", 0) - (1 if node == "record" else 0)
        self.node = node
        if node == "record":
            status = (state.get("history") or [{}])[-1].get("status")
            self.recent.append(status == "ok")
            if status not in ("ok", None):
                self.last_failure = status
        self.live.update(self._render())

    def _render(self) -> Panel:
        s = self.state
        stats = s.get("stats", {})
        it = s.get("iteration", 0)
        best = s.get("best")
        done_here = it - (self.done_at_start or 0)
        elapsed = time.monotonic() - self.started
        eta = (elapsed / done_here) * (self.total - it) if done_here > 0 else None
        per = {k: stats.get(f"seconds_{k}", 0.0) / max(1, it) for k in ("llm", "train", "other")}
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold cyan")
        t.add_column()
        t.add_row("iteration", f"{it}/{self.total}   [dim]now: {self.node}[/]")
        t.add_row("best", f"{fmt_acc(best['accuracy'])}  ({fmt_int(best['params'])} params, {best['arch_id']})"
                  if best else "–")
        valid = f"{100 * sum(self.recent) / len(self.recent):.0f}% of last {len(self.recent)}" if self.recent else "–"
        t.add_row("valid", valid)
        t.add_row("last failure", self.last_failure)
        t.add_row("s/iteration", "  ".join(f"{k} {v:.1f}" for k, v in per.items()))
        t.add_row("ETA", "–" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta)))
        return Panel(t, title=f"nasgraph run {self.run_id}", border_style="cyan")


def summary_table(summary: dict) -> Table:
    t = Table(title=f"run {summary['run_id']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("iterations", str(summary["iterations"]))
    t.add_row("valid, first attempt", f"{100 * summary['valid_first_attempt']:.0f}%")
    t.add_row("valid, after repair", f"{100 * summary['valid_after_repair']:.0f}%")
    t.add_row("duplicates caught", str(summary["duplicates"]))
    t.add_row("novel / near copies", f"{summary['novel']} / {summary['near_copies']}")
    t.add_row("best accuracy", f"{fmt_acc(summary['best_accuracy'])}  {summary.get('best_arch_id') or ''}")
    t.add_row("mean accuracy", fmt_acc(summary["mean_accuracy"]))
    t.add_row("failures", ", ".join(f"{k} {v}" for k, v in summary["failures"].items()) or "none")
    t.add_row("s/iteration", "  ".join(f"{k} {v}" for k, v in summary["seconds_per_iteration"].items()))
    t.add_row("stopped by", str(summary.get("stop_reason")))
    return t
