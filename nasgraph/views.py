"""Rich views: outcome tables, store listings, the live run panel and the final run summary."""
from __future__ import annotations

import time

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
    """The live panel of `nasgraph run`: progress, best so far, recent valid rate, stage times, ETA.

    Everything shown comes from the run's state (history, stats), so a resumed run shows where it
    stands from its first line. When the console is not a terminal (a log file, a pipe) it prints one
    plain line per finished iteration instead of redrawing a panel nobody sees."""

    def __init__(self, console: Console, run_id: str, total: int, window: int = 10):
        self.console, self.run_id, self.total, self.window = console, run_id, total, window
        self.node = "starting"
        self.state: dict = {}
        self.started = time.monotonic()
        self.done_at_start: int | None = None
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False) \
            if console.is_terminal else None

    def __enter__(self) -> "RunView":
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def update(self, node: str, update: dict, state: dict) -> None:
        """`node` is the node that just ran ("start": the state a run starts or resumes from)."""
        if state:
            self.state = state
            self.total = state.get("max_iterations", self.total)
            if self.done_at_start is None:
                self.done_at_start = state.get("iteration", 0) - (1 if node == "record" else 0)
        self.node = node
        if self.live:
            self.live.update(self._render())
        elif node == "record":
            self.console.print(self._line(), highlight=False)

    def _recent(self) -> list[dict]:
        return (self.state.get("history") or [])[-self.window:]

    def _valid(self) -> str:
        recent = self._recent()
        ok = sum(h.get("status") == "ok" for h in recent)
        return f"{100 * ok / len(recent):.0f}% of last {len(recent)}" if recent else "–"

    def _eta(self) -> float | None:
        it = self.state.get("iteration", 0)
        done_here = it - (self.done_at_start or 0)
        return (time.monotonic() - self.started) / done_here * (self.total - it) if done_here > 0 else None

    def _line(self) -> str:
        s, last = self.state, (self.state.get("history") or [{}])[-1]
        best = s.get("best")
        eta = self._eta()
        return (f"iteration {s.get('iteration', 0)}/{self.total}  {last.get('status', '–')}  "
                f"acc {fmt_acc(last.get('accuracy'))}  best {fmt_acc(best['accuracy'] if best else None)}  "
                f"valid {self._valid()}  ETA {'–' if eta is None else time.strftime('%H:%M:%S', time.gmtime(eta))}")

    def _render(self) -> Panel:
        s = self.state
        stats = s.get("stats", {})
        it = s.get("iteration", 0)
        best = s.get("best")
        eta = self._eta()
        failures = [h.get("status") for h in s.get("history") or [] if h.get("status") not in ("ok", None)]
        per = {k: stats.get(f"seconds_{k}", 0.0) / max(1, it) for k in ("llm", "train", "other")}
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold cyan")
        t.add_column()
        t.add_row("iteration", f"{it}/{self.total}   [dim]now: {self.node}[/]")
        t.add_row("best", f"{fmt_acc(best['accuracy'])}  ({fmt_int(best['params'])} params, {best['arch_id']})"
                  if best else "–")
        t.add_row("valid", self._valid())
        t.add_row("last failure", failures[-1] if failures else "–")
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
    if summary.get("screened"):
        t.add_row("cascade", f"{summary['screened']} stopped at the screen, ~{summary['screen_saved_s']:.0f}s of "
                             "training saved")
    if "front" in summary:
        t.add_row("Pareto front", "\n".join(
            f"{fmt_acc(d['accuracy'])}  {fmt_int(d['params'])} params  "
            + (f"{d['latency_ms']:.2f} ms  " if d["latency_ms"] is not None else "") + d["arch_id"]
            for d in summary["front"]) or "–")
    t.add_row("failures", ", ".join(f"{k} {v}" for k, v in summary["failures"].items()) or "none")
    t.add_row("s/iteration", "  ".join(f"{k} {v}" for k, v in summary["seconds_per_iteration"].items()))
    t.add_row("stopped by", str(summary.get("stop_reason")))
    return t
