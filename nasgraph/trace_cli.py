"""`nasgraph trace`: list runs, show what each node saw and did, follow a live run, export, search.

ls      runs with their size, best accuracy and valid rate
show    each node's prompt, reply, code, outcome and timing (filters: --iter --node --status --grep)
tail    the last events, then new ones as a live run writes them, until the run stops
export  the (filtered) events as JSONL or Markdown
search  a text search over every run's events
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from nasgraph.config import Config
from nasgraph.dataset_ref import parse
from nasgraph.errors import NasgraphError
from nasgraph.trace_data import TRACE, RunDigest, TraceError, all_runs, load_run, matches, snippet, to_json
from nasgraph.views import fmt_acc, fmt_int

REPLY_LINES = 25  # a reply longer than this is cut in `show` unless --full
GOOD, WARN = ("ok", "pass", "new"), ("duplicate",)


def status_style(status: str | None) -> str:
    if status in GOOD:
        return "green"
    return "yellow" if status in WARN or status is None else "red"


def fmt_rate(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.0f}%"


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


# -- one event ---------------------------------------------------------------------------------
def event_line(e: dict) -> Text:
    """One line per event, for tail and compact listings."""
    node, st = e.get("node", "?"), e.get("status")
    head = Text(f"#{e.get('step', '?'):>4} it {e.get('iteration', '?'):>3} {node:<11} ", style="dim")
    body = Text()
    if node == "improve":
        body.append("→ " + (e.get("triple") or {}).get("modification", "")[:110])
    elif node in ("generate", "repair"):
        if e.get("repairing"):
            body.append(f"repairing {e['repairing']}: ", style="yellow")
        body.append(f"{e.get('tokens_out', 0)} tokens in {float(e.get('latency') or 0):.1f} s, "
                    f"code {e.get('code_hash') or 'unparsable'}")
    elif node == "retrieve":
        body.append(f"{len(e.get('blocks') or [])} blocks" if e.get("enabled") else "retrieval off", style="dim")
    else:
        if st:
            body.append(st, style=status_style(st))
        if e.get("accuracy") is not None:
            body.append(f"  acc {fmt_acc(e['accuracy'])}")
        if e.get("params") is not None:
            body.append(f"  {fmt_int(e['params'])} params")
        if node == "fingerprint" and e.get("novelty") is not None:
            body.append(f"  novelty {e['novelty']:.2f}")
        err = (e.get("error") or "").strip().splitlines()
        if err and st not in GOOD:
            body.append(f"  {err[-1][:90]}", style="red")
        if e.get("stop_reason"):
            body.append(f"  [stopped: {e['stop_reason']}]", style="bold")
    return head + body


def event_panel(e: dict, full: bool = False) -> Panel:
    """Everything one node run recorded: prompt, timing, tokens, triple, reply or code, outcome."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    if e.get("prompt"):
        grid.add_row("prompt", f"{e['prompt']}  [dim]sha {e.get('prompt_sha', '')}[/]")
        grid.add_row("llm", f"{e.get('backend', '')}/{e.get('model', '')}  {e.get('tokens_in', 0)} tokens in, "
                     f"{e.get('tokens_out', 0)} out, {float(e.get('latency') or 0):.2f} s")
    for key in ("status", "first_status", "repairing"):
        if e.get(key):
            grid.add_row(key.replace("_", " "), Text(str(e[key]), style=status_style(e[key])))
    for key, fmt in (("accuracy", fmt_acc), ("params", fmt_int), ("flops", fmt_int)):
        if e.get(key) is not None:
            grid.add_row(key, fmt(e[key]))
    if e.get("novelty") is not None:
        grid.add_row("novelty", f"{e['novelty']:.3f}" + (f"  nearest {e['nearest']}" if e.get("nearest") else ""))
    for key in ("code_hash", "repairs", "parse_mode", "stop_reason"):
        if e.get(key) not in (None, ""):
            grid.add_row(key.replace("_", " "), str(e[key]))
    if e.get("node") == "retrieve":
        grid.add_row("retrieval", f"{len(e.get('blocks') or [])} blocks" if e.get("enabled") else "off")
    if e.get("stage_seconds"):
        grid.add_row("stages", "  ".join(f"{k} {v:.2f}s" for k, v in e["stage_seconds"].items()))
    parts: list[RenderableType] = [grid]
    triple = e.get("triple")
    if triple:
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold magenta", no_wrap=True)
        t.add_column()
        for key in ("problem", "modification", "expected_effect"):
            t.add_row(key.replace("_", " "), triple.get(key, ""))
        parts.append(t)
    if (e.get("error") or "").strip():
        parts.append(Text(e["error"].strip(), style="red"))
    if e.get("code"):
        parts.append(Syntax(e["code"], "python", line_numbers=True, word_wrap=True))
    if e.get("prompt_text"):  # traces that keep the rendered prompt, not only its name and hash
        parts.append(Text("prompt:", style="bold"))
        parts.append(Text(_cut(e["prompt_text"], None if full else REPLY_LINES), style="dim"))
    if e.get("reply") and (full or not e.get("code")):
        parts.append(Text("reply:", style="bold"))
        parts.append(Text(_cut(e["reply"], None if full else REPLY_LINES)))
    title = (f"step {e.get('step', '?')} · iteration {e.get('iteration', '?')} · [bold]{e.get('node', '?')}[/] · "
             f"{float(e.get('seconds') or 0):.2f} s")
    return Panel(Group(*parts), title=title, title_align="left", border_style=status_style(e.get("status")))


def _cut(text: str, lines: int | None) -> str:
    rows = text.splitlines()
    if lines is None or len(rows) <= lines:
        return text
    return "\n".join(rows[:lines]) + f"\n… ({len(rows) - lines} more lines; --full shows them)"


# -- filters -----------------------------------------------------------------------------------
def _check_filters(digest: RunDigest, node: str | None, status: str | None) -> None:
    """Typos in a filter would silently show nothing: name what exists instead."""
    if node is not None:
        nodes = sorted({e.get("node") for e in digest.events if e.get("node")})
        if node not in nodes:
            raise TraceError(f"no node '{node}' in run {digest.run_id}; nodes: {', '.join(nodes) or 'none'}")
    if status is not None:
        from typing import get_args

        from nasgraph.tools.evaluator.outcome import Status

        known = set(get_args(Status)) | {"pass", "new"}
        if status not in known:
            raise TraceError(f"unknown status '{status}'; one of: {', '.join(sorted(known))}")


def selected(digest: RunDigest, args: argparse.Namespace) -> list[dict]:
    _check_filters(digest, getattr(args, "node", None), getattr(args, "status", None))
    return [e for e in digest.events if matches(e, iteration=getattr(args, "iter", None), node=args.node,
                                                status=args.status, text=args.grep)]


# -- ls / show / search -----------------------------------------------------------------------
@dataclass(frozen=True)
class LsColumn:
    key: str
    justify: Literal["left", "right"] = "left"
    shrink_to: int | None = None  # a name column that may be cut (with …) to this width; None: never cut


# In the order shown. Run, iterations, best accuracy and valid rate are what `ls` is for: they are never
# cut. The rest go when the terminal is too narrow, in DROP_ORDER: the size first, then the creation time
# (a default run id starts with it), then why it stopped; dataset and model names are cut before they go.
LS_COLUMNS = (LsColumn("run"), LsColumn("dataset", shrink_to=12), LsColumn("model", shrink_to=12),
              LsColumn("iters", "right"), LsColumn("size", "right"), LsColumn("best", "right"),
              LsColumn("valid", "right"), LsColumn("stopped"), LsColumn("created"))
DROP_ORDER = ("size", "created", "stopped", "model", "dataset")


def _ls_cells(d: RunDigest) -> dict[str, Text]:
    best = d.best
    created = time.strftime("%m-%d %H:%M", time.localtime(d.created)) if d.created else "–"
    return {"run": Text(d.run_id), "dataset": Text(parse(d.dataset).label if d.dataset else "–"),
            "model": Text(d.model or "–"), "iters": Text(str(d.iterations)), "size": Text(fmt_bytes(d.size_bytes)),
            "best": Text(fmt_acc(best.accuracy if best else None)), "valid": Text(fmt_rate(d.valid_rate)),
            "stopped": Text(d.stop_reason) if d.stop_reason else Text("open", style="yellow"),
            "created": Text(created)}


def _ls_widths(rows: list[dict[str, Text]], width: int | None) -> dict[str, int]:
    """The content width of each column shown: all at full width when they fit in `width` (None: no
    limit), else name columns cut and columns dropped as LS_COLUMNS says."""
    full = {c.key: max([cell_len(c.key), *(r[c.key].cell_len for r in rows)]) for c in LS_COLUMNS}
    least = {c.key: min(full[c.key], c.shrink_to or full[c.key]) for c in LS_COLUMNS}
    shown = [c.key for c in LS_COLUMNS]

    def room() -> int:  # what is left for content once each column's padding (2) and rule (1) and the edge are paid
        return (width or 0) - 3 * len(shown) - 1

    if width is None or sum(full[k] for k in shown) <= room():
        return {k: full[k] for k in shown}
    for gone in DROP_ORDER:
        if sum(least[k] for k in shown) <= room():
            break
        shown.remove(gone)
    widths = {k: least[k] for k in shown}
    spare = room() - sum(widths.values())
    for k in shown:  # what is left widens the cut names again, the dataset's first
        extra = max(0, min(spare, full[k] - widths[k]))
        widths[k] += extra
        spare -= extra
    return widths


def runs_table(digests: list[RunDigest], title: str, width: int | None = None) -> Table:
    """The runs, one row each; within `width` columns when given (a terminal's width), see LS_COLUMNS."""
    rows = [_ls_cells(d) for d in digests]
    widths = _ls_widths(rows, width)
    t = Table(title=title)
    shown = [c for c in LS_COLUMNS if c.key in widths]
    for c in shown:
        t.add_column(c.key, justify=c.justify, no_wrap=True, overflow="ellipsis", width=widths[c.key])
    for r in rows:
        t.add_row(*(r[c.key] for c in shown))
    return t


def digest_json(d: RunDigest) -> dict:
    best = d.best
    return {"run_id": d.run_id, "dataset": d.dataset, "model": d.model, "iterations": d.iterations,
            "events": len(d.events), "size_bytes": d.size_bytes, "best_accuracy": best.accuracy if best else None,
            "best_arch_id": best.arch_id if best else None, "valid_rate": d.valid_rate,
            "failures": d.failures(), "stop_reason": d.stop_reason, "created": d.created}


def cmd_ls(args, cfg: Config, console: Console) -> int:
    digests = all_runs(cfg.runs_dir)
    if args.json:
        print(json.dumps([digest_json(d) for d in digests]))
    elif not digests:
        console.print(f"no runs in {cfg.runs_dir}")
    else:
        console.print(runs_table(digests, str(cfg.runs_dir), console.width))
    return 0


def cmd_show(args, cfg: Config, console: Console) -> int:
    digest = load_run(cfg.runs_dir, args.run)
    events = selected(digest, args)
    if args.iter is not None and not any(e.get("iteration") == args.iter for e in digest.events):
        raise TraceError(f"run {digest.run_id} has no iteration {args.iter} (it has 1–{digest.iterations})")
    if not events:
        console.print(f"no events in run {digest.run_id} match these filters")
        return 0
    for e in events[-args.limit:] if args.limit else events:
        console.print(event_panel(e, full=args.full))
    console.print(f"[dim]{len(events)} of {len(digest.events)} events of run {digest.run_id}[/]")
    return 0


def cmd_search(args, cfg: Config, console: Console) -> int:
    runs = [load_run(cfg.runs_dir, args.run)] if args.run else all_runs(cfg.runs_dir)
    t = Table(title=f"'{args.text}'")
    for col in ("run", "step", "iter", "node", "status", "where"):
        t.add_column(col)
    hits = 0
    for d in runs:
        for e in d.events:
            if matches(e, node=args.node, status=args.status, text=args.text):
                hits += 1
                if hits <= args.limit:
                    st = e.get("status") or ""
                    t.add_row(d.run_id, str(e.get("step")), str(e.get("iteration")), e.get("node", ""),
                              Text(st, style=status_style(st)), snippet(e, args.text))
    if not hits:
        console.print(f"no event in {len(runs)} run(s) mentions '{args.text}'")
        return 0
    console.print(t)
    if hits > args.limit:
        console.print(f"[dim]{hits - args.limit} more hits; --limit shows more[/]")
    return 0


# -- export ------------------------------------------------------------------------------------
def fenced(text: str, lang: str) -> list[str]:
    """A Markdown code block whose fence is longer than any backtick run inside (prompts and replies
    hold fences of their own)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + lang, text.strip(), fence, ""]


def markdown(digest: RunDigest, events: list[dict]) -> str:
    best = digest.best
    out = [f"# Trace of run {digest.run_id}", "",
           f"- dataset: {digest.dataset or '?'}; model: {digest.model or '?'}",
           f"- iterations: {digest.iterations}; valid rate: {fmt_rate(digest.valid_rate)}; "
           f"best: {fmt_acc(best.accuracy) if best else '–'}" + (f" ({best.arch_id})" if best else ""),
           f"- events shown: {len(events)} of {len(digest.events)}", ""]
    current = None
    for e in events:
        if e.get("iteration") != current:
            current = e.get("iteration")
            out += [f"## Iteration {current}", ""]
        out += [f"### step {e.get('step')} · {e.get('node')} · {float(e.get('seconds') or 0):.2f} s", ""]
        for key in ("prompt", "prompt_sha", "model", "tokens_in", "tokens_out", "latency", "status",
                    "first_status", "repairing", "accuracy", "params", "flops", "novelty", "nearest",
                    "code_hash", "repairs", "stop_reason"):
            if e.get(key) not in (None, ""):
                out.append(f"- {key}: {e[key]}")
        for key, value in (e.get("triple") or {}).items():
            out.append(f"- {key.replace('_', ' ')}: {value}")
        out.append("")
        if (e.get("error") or "").strip():
            out += ["Error:", "", *fenced(e["error"], "text")]
        if e.get("prompt_text"):
            out += ["Prompt:", "", *fenced(e["prompt_text"], "text")]
        if e.get("code"):
            out += fenced(e["code"], "python")
        elif e.get("reply"):
            out += ["Reply:", "", *fenced(e["reply"], "text")]
    return "\n".join(out) + "\n"


def cmd_export(args, cfg: Config, console: Console) -> int:
    digest = load_run(cfg.runs_dir, args.run)
    events = selected(digest, args)
    text = ("".join(to_json(e) + "\n" for e in events) if args.format == "jsonl"
            else markdown(digest, events))
    if args.out in (None, "-"):
        print(text, end="")
        return 0
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise TraceError(f"cannot write {out}: {e}") from None
    console.print(f"wrote {len(events)} events of run {digest.run_id} to {out} ({args.format})")
    return 0


# -- tail ----------------------------------------------------------------------------------------
def follow(path: Path, *, interval: float = 0.5, start_step: int = -1,
           on_rewind: Callable[[], None] | None = None, sleep: Callable[[float], None] = time.sleep,
           ) -> Iterator[dict]:
    """New events of a growing trace (steps after `start_step`), forever; stop by breaking out.

    A resumed run rewrites the trace without its orphan events and then re-runs those steps: when the
    file shrinks, reading restarts after the last step that survived, so the re-run steps show again.
    """
    offset, last_step, partial = 0, start_step, ""
    if path.exists():
        offset = path.stat().st_size
    while True:
        size = path.stat().st_size if path.exists() else 0
        if size < offset:  # rewritten by a resume
            offset, partial = 0, ""
            kept = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            last_step = max((e.get("step", -1) for e in kept), default=-1)
            offset = path.stat().st_size
            if on_rewind:
                on_rewind()
            continue
        if size > offset:
            with open(path, encoding="utf-8") as f:
                f.seek(offset)
                chunk = f.read(size - offset)
            offset = size
            lines = (partial + chunk).split("\n")
            partial = lines.pop()  # an unfinished line waits for its end
            for line in lines:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if event.get("step", last_step + 1) > last_step:
                    last_step = event.get("step", last_step)
                    yield event
            continue
        sleep(interval)


def cmd_tail(args, cfg: Config, console: Console) -> int:
    digest = load_run(cfg.runs_dir, args.run)
    _check_filters(digest, args.node, args.status)
    show = (lambda e: console.print(event_panel(e, full=args.full))) if args.full else \
        (lambda e: console.print(event_line(e)))
    keep = [e for e in digest.events if matches(e, node=args.node, status=args.status, text=args.grep)]
    for e in keep[-args.lines:] if args.lines else []:
        show(e)
    last = digest.events[-1] if digest.events else {}
    if not args.follow or (last.get("node") == "record" and last.get("stop_reason")):
        console.print(f"[dim]run {digest.run_id}: {digest.iterations} iterations, "
                      f"{'stopped: ' + digest.stop_reason if digest.stop_reason else 'not finished'}[/]")
        return 0
    console.print(f"[dim]following run {digest.run_id} (Ctrl-C to stop)…[/]")
    start = max((e.get("step", -1) for e in digest.events), default=-1)
    try:
        for e in follow(digest.root / TRACE, interval=args.interval, start_step=start,
                        on_rewind=lambda: console.print("[yellow]trace rewound: the run resumed[/]")):
            if matches(e, node=args.node, status=args.status, text=args.grep):
                show(e)
            if e.get("node") == "record" and e.get("stop_reason"):
                console.print(f"[dim]run {digest.run_id} stopped: {e['stop_reason']}[/]")
                return 0
    except KeyboardInterrupt:
        console.print("[dim]stopped following[/]")
    return 0


# -- registration --------------------------------------------------------------------------------
def _filters(p: argparse.ArgumentParser, with_iter: bool = True) -> None:
    if with_iter:
        p.add_argument("--iter", type=int, metavar="N", help="only iteration N")
    p.add_argument("--node", metavar="NAME", help="only this node (improve, generate, check, evaluate, ...)")
    p.add_argument("--status", metavar="S", help="only events with this status, e.g. shape_error")
    p.add_argument("--grep", metavar="TEXT", help="only events whose prompt/reply/code/error mention TEXT")


def guarded(fn: Callable) -> Callable:
    """The CLI's one-line error path around a plugin command (also under `python -m nasgraph.cli`,
    where the CLI module runs as __main__; the base class lives in nasgraph.errors, one copy)."""
    def run(args, cfg: Config, console: Console) -> int:
        try:
            return fn(args, cfg, console)
        except NasgraphError as e:
            print(f"nasgraph: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
            return 1
    return run


SUBCOMMANDS = {"ls": cmd_ls, "show": cmd_show, "tail": cmd_tail, "export": cmd_export, "search": cmd_search}


def cmd_trace(args, cfg: Config, console: Console) -> int:
    return guarded(SUBCOMMANDS[args.trace_cmd])(args, cfg, console)


def register(subparsers, commands: dict) -> None:
    t = subparsers.add_parser("trace", help="inspect agent traces: ls, show, tail, export, search")
    ts = t.add_subparsers(dest="trace_cmd", required=True)
    ls = ts.add_parser("ls", help="runs with their size, best accuracy and valid rate")
    ls.add_argument("--json", action="store_true")
    sh = ts.add_parser("show", help="each node's prompt, reply, code, outcome and timing")
    sh.add_argument("run", help="run id, an unambiguous prefix, or 'last'")
    _filters(sh)
    sh.add_argument("--full", action="store_true", help="do not cut long replies")
    sh.add_argument("--limit", type=int, metavar="N", help="only the last N matching events")
    tl = ts.add_parser("tail", help="the last events, then follow a live run until it stops")
    tl.add_argument("run", help="run id, an unambiguous prefix, or 'last'")
    tl.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="events shown first (default 10)")
    tl.add_argument("--no-follow", dest="follow", action="store_false", help="print and exit")
    tl.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    tl.add_argument("--full", action="store_true", help="whole events instead of one line each")
    _filters(tl, with_iter=False)
    ex = ts.add_parser("export", help="events as JSONL or Markdown")
    ex.add_argument("run", help="run id, an unambiguous prefix, or 'last'")
    ex.add_argument("--format", choices=["jsonl", "md"], default="jsonl")
    ex.add_argument("--out", help="file to write (default: standard output)")
    _filters(ex)
    se = ts.add_parser("search", help="find text in the events of every run")
    se.add_argument("text")
    se.add_argument("--run", help="only this run")
    se.add_argument("--node", metavar="NAME")
    se.add_argument("--status", metavar="S")
    se.add_argument("--limit", type=int, default=50)
    commands["trace"] = cmd_trace
