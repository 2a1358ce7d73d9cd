"""`nasgraph report RUN`: PNG plots of a run and a Markdown / HTML page that shows them with the top designs.

Plots (from the run's trace, see nasgraph.trace_data):
  accuracy.png   best-so-far and running mean accuracy of valid designs, each design as a dot
  valid_rate.png valid rate (first attempt / after repair) and duplicate share over a moving window
  failures.png   how failing attempts ended (shape error, timeout, duplicate, ...) per iteration bin
  pareto.png     accuracy against parameters, the Pareto front (no smaller model is as accurate) marked
  final.png      the winners' final-training curves (when `nasgraph train` trained some), see nasgraph.winners

A run known only to the store (`nasgraph eval --run-id`) is reported from its evaluations.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from nasgraph.config import Config
from nasgraph.trace_data import IterationRow, RunDigest, TraceError, load_run, moving_rate, pareto_front
from nasgraph.views import fmt_acc, fmt_int

PLOTS = ("accuracy", "valid_rate", "failures", "pareto")
TITLES = {"accuracy": "Accuracy over iterations", "valid_rate": "Valid rate over a moving window",
          "failures": "Failure kinds over time", "pareto": "Accuracy against parameters"}


@dataclass
class ReportFiles:
    images: dict[str, Path] = field(default_factory=dict)
    pages: list[Path] = field(default_factory=list)


# -- plots -------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    return plt


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_accuracy(rows: list[IterationRow], ax) -> None:
    ok = [r for r in rows if r.ok and r.accuracy is not None]
    if not ok:
        _empty(ax, "no valid design yet")
    else:
        xs = [r.iteration for r in ok]
        accs = [100 * (r.accuracy or 0.0) for r in ok]
        best, mean, total = [], [], 0.0
        for i, a in enumerate(accs):
            best.append(max(a, best[-1]) if best else a)
            total += a
            mean.append(total / (i + 1))
        ax.scatter(xs, accs, s=18, color="tab:blue", alpha=0.5, label="valid design")
        ax.step(xs, best, where="post", color="tab:green", linewidth=2, label="best so far")
        ax.plot(xs, mean, color="tab:orange", linewidth=1.5, label="mean of valid designs")
        ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("iteration")
    ax.set_ylabel("test accuracy (%)")


def plot_valid_rate(rows: list[IterationRow], ax, window: int) -> None:
    if not rows:
        _empty(ax, "no iteration yet")
    else:
        xs = [r.iteration for r in rows]
        # Rates over iterations that produced a new design, as the run summary counts them.
        first = moving_rate([(r.first_status == "ok") if r.fresh else None for r in rows], window)
        after = moving_rate([r.ok if r.fresh else None for r in rows], window)
        dup = moving_rate([not r.fresh for r in rows], window)

        def pct(v: list[float | None]) -> list[float]:
            return [math.nan if x is None else 100 * x for x in v]

        ax.plot(xs, pct(after), color="tab:green", linewidth=2, marker=".", label="valid after repair")
        ax.plot(xs, pct(first), color="tab:blue", linewidth=1.5, marker=".", label="valid at first attempt")
        ax.plot(xs, pct(dup), color="tab:grey", linestyle="--", label="duplicates (share of all)")
        ax.legend(loc="best", fontsize="small")
    ax.set_ylim(-3, 103)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"% of last {window} iterations")


def plot_failures(rows: list[IterationRow], ax, max_bars: int = 30) -> None:
    failed = [(r.iteration, a) for r in rows for a in r.attempts if a != "ok"]
    if not failed:
        _empty(ax, "no failed attempt")
        ax.set_xlabel("iteration")
        return
    last = max(r.iteration for r in rows)
    width = max(1, math.ceil(last / max_bars))  # iterations per bar
    kinds = sorted({a for _, a in failed})
    bins = list(range(1, last + 1, width))
    bottom = [0] * len(bins)
    cmap = _pyplot().get_cmap("tab10")
    for k, kind in enumerate(kinds):
        counts = [sum(1 for it, a in failed if a == kind and b <= it < b + width) for b in bins]
        ax.bar([b + (width - 1) / 2 for b in bins], counts, width=0.8 * width, bottom=bottom, label=kind,
               color=cmap(k % 10))
        bottom = [x + c for x, c in zip(bottom, counts)]
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of attempts
    ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("iteration" if width == 1 else f"iteration ({width} per bar)")
    ax.set_ylabel("failed attempts")


def plot_pareto(rows: list[IterationRow], ax) -> None:
    designs: dict[str, tuple[float, float]] = {}
    for r in rows:
        if r.ok and r.accuracy is not None and r.params and r.arch_id:
            designs[r.arch_id] = (float(r.params), 100 * r.accuracy)
    if not designs:
        _empty(ax, "no valid design yet")
    else:
        points = list(designs.values())
        front = pareto_front(points)
        ax.scatter([p for p, _ in points], [a for _, a in points], s=22, color="tab:blue", alpha=0.6,
                   label="design")
        ax.step([p for p, _ in front], [a for _, a in front], where="post", color="tab:red", marker="o",
                linewidth=1.5, label="Pareto front")
        best_id = max(designs, key=lambda k: designs[k][1])
        ax.annotate(best_id[:8], designs[best_id], textcoords="offset points", xytext=(5, 5), fontsize="small")
        ax.set_xscale("log")
        ax.legend(loc="lower right")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")


def write_plots(digest: RunDigest, out: Path, window: int = 10) -> dict[str, Path]:
    plt = _pyplot()
    paths: dict[str, Path] = {}
    for name in PLOTS:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        try:
            if name == "accuracy":
                plot_accuracy(digest.rows, ax)
            elif name == "valid_rate":
                plot_valid_rate(digest.rows, ax, window)
            elif name == "failures":
                plot_failures(digest.rows, ax)
            else:
                plot_pareto(digest.rows, ax)
            ax.set_title(f"{TITLES[name]} — {digest.run_id}")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            paths[name] = out / f"{name}.png"
            fig.savefig(paths[name])
        finally:
            plt.close(fig)
    return paths


# -- pages ---------------------------------------------------------------------------------------
def summary_rows(digest: RunDigest) -> list[tuple[str, str]]:
    best = digest.best
    ok = [r.accuracy for r in digest.rows if r.ok and r.accuracy is not None]
    rate = digest.valid_rate
    store_only = bool(digest.meta.get("store_only"))  # evaluated files (nasgraph eval --run-id), no loop
    return [("dataset", digest.dataset or "?"),
            ("model", "none: files evaluated with --run-id" if store_only else digest.model or "?"),
            ("iterations", str(digest.iterations)),
            ("valid rate", "–" if rate is None else f"{100 * rate:.0f}% of new designs"),
            ("best accuracy", f"{fmt_acc(best.accuracy)} ({best.arch_id}, {fmt_int(best.params)} params)"
             if best else "–"),
            ("mean accuracy", fmt_acc(sum(ok) / len(ok)) if ok else "–"),
            ("failures", ", ".join(f"{k} {v}" for k, v in sorted(digest.failures().items())) or "none"),
            ("stopped by", "–" if store_only else digest.stop_reason or "not finished")]


def write_winners_plot(winners, out: Path) -> Path:
    from nasgraph.winners import plot_curves

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        plot_curves(winners, ax)
        ax.set_title(f"Final training of the winners ({winners.epochs} epochs)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / "final.png"
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


FRONT_TITLE = "Pareto front: accuracy, parameters, batch-1 latency"
FRONT_HEAD = ("architecture", "accuracy", "params", "latency (ms)", "iteration")


def front_table(digest: RunDigest) -> list[tuple[str, ...]]:
    """Rows of the run's Pareto front, most accurate first; empty unless latency was measured
    (a run with `--objective pareto`)."""
    from nasgraph.tools import archive

    rows = {r.arch_id: r for r in digest.rows
            if r.ok and r.accuracy is not None and r.params and r.arch_id and r.latency_ms is not None}
    designs = [archive.Design(r.arch_id, r.accuracy, r.params, r.flops or 0, r.iteration, r.latency_ms)
               for r in rows.values()]
    return [(d.arch_id, fmt_acc(d.accuracy), fmt_int(d.params), f"{d.latency_ms:.2f}", str(d.iteration))
            for d in archive.front(designs)]


def markdown_page(digest: RunDigest, images: dict[str, Path], top: list[IterationRow], winners=None) -> str:
    out = [f"# nasgraph report: run {digest.run_id}", "", "| | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in summary_rows(digest)]
    out.append("")
    if winners is not None:  # what a user came for first: the trained winners
        from nasgraph.winners import markdown

        out += markdown(winners, images.get("final"))
    for name, path in images.items():
        if name in TITLES:
            out += [f"## {TITLES[name]}", "", f"![{TITLES[name]}]({path.name})", ""]
    if front := front_table(digest):
        out += [f"## {FRONT_TITLE}", "", "| " + " | ".join(FRONT_HEAD) + " |", "|" + " --- |" * len(FRONT_HEAD)]
        out += ["| " + " | ".join((f"`{row[0]}`", *row[1:])) + " |" for row in front] + [""]
    out += ["## Top designs by the proxy", ""]
    if not top:
        out.append("No valid design yet.")
    else:
        out += ["| # | architecture | accuracy | params | FLOPs | iteration | change asked for |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for i, r in enumerate(top, 1):
            change = (r.triple.get("modification") or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| {i} | `{r.arch_id}` | {fmt_acc(r.accuracy)} | {fmt_int(r.params)} | {fmt_int(r.flops)} "
                       f"| {r.iteration} | {change} |")
        for i, r in enumerate(top, 1):
            code = digest.code_of(r.arch_id or "") or r.code or "(code not in the trace)"
            out += ["", f"### {i}. `{r.arch_id}` — {fmt_acc(r.accuracy)}", "", "```python", code.strip(), "```"]
    return "\n".join(out) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}"
        "img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:.8rem;overflow-x:auto}")


def _code_html(code: str) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        return highlight(code, PythonLexer(), HtmlFormatter(noclasses=True))
    except ImportError:  # rich brings pygments; plain text is still readable without it
        return f"<pre><code>{html.escape(code)}</code></pre>"


def html_page(digest: RunDigest, images: dict[str, Path], top: list[IterationRow], winners=None) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>nasgraph report {e(digest.run_id)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>nasgraph report: run {e(digest.run_id)}</h1><table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary_rows(digest)]
    parts.append("</table>")
    if winners is not None:
        from nasgraph.winners import html_parts

        parts += html_parts(winners, images.get("final"), _code_html)
    for name, path in images.items():
        if name in TITLES:
            parts.append(f"<h2>{e(TITLES[name])}</h2><img src='{e(path.name)}' alt='{e(TITLES[name])}'>")
    if front := front_table(digest):
        parts.append(f"<h2>{e(FRONT_TITLE)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in FRONT_HEAD) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in front]
        parts.append("</table>")
    parts.append("<h2>Top designs by the proxy</h2>")
    if not top:
        parts.append("<p>No valid design yet.</p>")
    else:
        parts.append("<table><tr><th>#</th><th>architecture</th><th>accuracy</th><th>params</th><th>FLOPs</th>"
                     "<th>iteration</th><th>change asked for</th></tr>")
        for i, r in enumerate(top, 1):
            parts.append(f"<tr><td>{i}</td><td><code>{e(r.arch_id or '')}</code></td><td>{fmt_acc(r.accuracy)}</td>"
                         f"<td>{fmt_int(r.params)}</td><td>{fmt_int(r.flops)}</td><td>{r.iteration}</td>"
                         f"<td>{e(r.triple.get('modification') or '')}</td></tr>")
        parts.append("</table>")
        for i, r in enumerate(top, 1):
            code = digest.code_of(r.arch_id or "") or r.code or "(code not in the trace)"
            parts.append(f"<h3>{i}. <code>{e(r.arch_id or '')}</code> — {fmt_acc(r.accuracy)}</h3>")
            parts.append(_code_html(code.strip()))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_report(digest: RunDigest, out: Path, formats: tuple[str, ...] = ("md", "html"), top: int = 5,
                 window: int = 10, winners=None) -> ReportFiles:
    """`winners` (nasgraph.winners.Winners): the run's final trainings, shown first when given."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TraceError(f"cannot create the report folder {out}: {e}") from None
    files = ReportFiles(images=write_plots(digest, out, window))
    if winners is not None:
        files.images["final"] = write_winners_plot(winners, out)
    best = digest.top(top)
    for fmt in formats:
        page = out / f"report.{fmt}"
        text = (markdown_page(digest, files.images, best, winners) if fmt == "md"
                else html_page(digest, files.images, best, winners))
        page.write_text(text, encoding="utf-8")
        files.pages.append(page)
    return files


# -- command ---------------------------------------------------------------------------------------
def report_command(args, cfg: Config, console: Console) -> int:
    if args.top < 1 or args.window < 1:
        raise TraceError("--top and --window must be at least 1")
    digest, winners = _run_and_winners(cfg, args.run)
    out = Path(args.out) if args.out else digest.root / "report"
    formats = ("md", "html") if args.format == "both" else (args.format,)
    files = build_report(digest, out, formats, top=args.top, window=args.window, winners=winners)
    console.print(f"report of run {digest.run_id} ({digest.iterations} iterations):")
    for path in [*files.pages, *files.images.values()]:
        console.print(f"  {path}")
    return 0


def _run_and_winners(cfg: Config, key: str):
    """The run (its folder's trace, else the store's evaluations under that run id) and its winners'
    final trainings from the store (None when there are none, or no store)."""
    store = None
    if cfg.store_path.exists():
        from nasgraph.tools.store import Store

        store = Store(cfg.store_path)
    try:
        try:
            digest = load_run(cfg.runs_dir, key)
        except TraceError:
            if store is None or not store.has_run(key):
                raise
            from nasgraph.winners import digest_from_store

            digest = digest_from_store(store, key, cfg.runs_dir / key)
        winners = None
        if store is not None:
            from nasgraph.winners import gather

            winners = gather(store, {r.arch_id for r in digest.rows if r.arch_id}, digest.dataset)
        return digest, winners
    finally:
        if store is not None:
            store.close()


def cmd_report(args, cfg: Config, console: Console) -> int:
    from nasgraph.trace_cli import guarded

    return guarded(report_command)(args, cfg, console)


def register(subparsers, commands: dict) -> None:
    r = subparsers.add_parser("report", help="PNG plots of a run and a Markdown/HTML page with the top designs")
    r.add_argument("run", help="run id, an unambiguous prefix, or 'last'")
    r.add_argument("--out", help="folder for the page and the plots (default: <run folder>/report)")
    r.add_argument("--format", choices=["md", "html", "both"], default="both")
    r.add_argument("--top", type=int, default=5, help="designs listed with their code (default 5)")
    r.add_argument("--window", type=int, default=10, help="iterations in the moving valid rate (default 10)")
    commands["report"] = cmd_report
