"""`nasgraph index build | query TEXT | stats`: the NN-RAG block index from the command line.

`build --lemur K` adds the K best LEMUR image classifiers on `--lemur-dataset` (their `Net` and helper
blocks, each tagged with its LEMUR model name and best recorded accuracy); without it LEMUR is left out.

A plugin of `nasgraph.cli`: `register` adds the `index` command; nothing heavy is imported until it runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nasgraph.errors import NasgraphError

ALL_FILTER = None                                    # --all: every entry, validated or not
RETRIEVABLE = {"prompt_ready": True}                 # what the retriever would show the generator


class IndexCLIError(NasgraphError):
    """A bad `nasgraph index` request; the message is printed as is (kept here: a plugin never imports
    the CLI that loads it)."""


def register(subparsers: Any, commands: dict) -> None:
    p = subparsers.add_parser("index", help="NN-RAG block index: build / query / stats")
    sp = p.add_subparsers(dest="index_cmd", required=True)
    b = sp.add_parser("build", help="extract, validate (sandboxed) and embed blocks; incremental")
    b.add_argument("--json", action="store_true", help="print one JSON result")
    b.add_argument("--force", action="store_true", help="re-validate and re-embed every block")
    b.add_argument("--no-store", dest="no_store", action="store_true", help="leave out the store's best designs")
    b.add_argument("--dataset", help="dataset whose best designs are indexed (default: the loop's dataset)")
    b.add_argument("--store-k", dest="store_k", type=int, default=20, help="how many best designs to index")
    b.add_argument("--lemur", dest="lemur_k", type=int, default=0, metavar="K",
                   help="also index the K LEMUR models with the best recorded accuracy (needs `nasgraph lemur pull`)")
    b.add_argument("--lemur-dataset", dest="lemur_dataset",
                   help="the LEMUR dataset whose recorded accuracy ranks the models (default cifar-10)")
    b.add_argument("--timeout-s", dest="block_timeout_s", type=float, default=60.0, help="per-block validation limit")
    b.add_argument("--only", help="index only targets whose qualified name contains this text")
    q = sp.add_parser("query", help="the blocks nearest to a text")
    q.add_argument("text")
    q.add_argument("-k", type=int, default=5)
    q.add_argument("--all", action="store_true", help="search every entry, not only prompt-ready blocks")
    q.add_argument("--code", action="store_true", help="print each hit's code")
    q.add_argument("--json", action="store_true")
    s = sp.add_parser("stats", help="counts by source, kind and validation flag")
    s.add_argument("--json", action="store_true")
    commands["index"] = cmd_index


def cmd_index(args: argparse.Namespace, cfg: Any, console: Any) -> int:
    from .index import IndexUnavailable

    try:
        return {"build": _build, "query": _query, "stats": _stats}[args.index_cmd](args, cfg, console)
    except IndexUnavailable as e:
        raise IndexCLIError(str(e)) from e


def _index_path(cfg: Any):
    from .index import index_path

    return index_path(cfg)


def _build(args, cfg, console) -> int:
    from .build import build, default_targets
    from .index import BlockIndex

    if args.store_k < 1 or args.block_timeout_s <= 0 or args.lemur_k < 0:
        raise IndexCLIError("--store-k must be at least 1, --lemur at least 0 and --timeout-s positive")
    if args.lemur_dataset and not args.lemur_k:
        raise IndexCLIError("--lemur-dataset ranks LEMUR models: give --lemur K too")
    targets, errors = default_targets(cfg, with_store=not args.no_store, dataset=args.dataset, store_k=args.store_k,
                                      lemur_k=args.lemur_k, lemur_dataset=args.lemur_dataset)
    if args.only:
        targets = [t for t in targets if args.only in t.qualname]
    if not targets:
        raise IndexCLIError("no extraction targets" + (f" match --only {args.only!r}" if args.only else ""))
    index = BlockIndex(_index_path(cfg), create=True)
    if args.json:
        report = build(index, targets, timeout_s=args.block_timeout_s, force=args.force, prune=not args.only)
    else:
        from rich.progress import Progress

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"{len(targets)} targets", total=None)

            def progress(stage: str, done: int, total: int, ident: str) -> None:
                bar.update(task, description=f"{stage} {ident.rsplit('.', 1)[-1]}", completed=done, total=total)

            report = build(index, targets, timeout_s=args.block_timeout_s, force=args.force,
                           prune=not args.only, progress=progress)
    report.discovery_errors = errors
    if args.json:
        print(json.dumps(report.to_dict(), default=str))
        return 0
    _print_report(console, report)
    return 0


def _print_report(console, report) -> None:
    from rich.table import Table

    t = Table(title=f"block index {report.index}")
    t.add_column("")
    t.add_column("count", justify="right")
    for label, value in (("targets", report.targets), ("blocks (closed)", report.blocks),
                         ("executable", f"{report.executable}  ({report.rate:.1%} of targets)"),
                         ("instantiable", report.instantiable), ("forward-checked", report.forward_checked),
                         ("torch-only", report.torch_only), ("prompt-ready", report.prompt_ready),
                         ("validated now / reused / removed", f"{report.validated_now} / {report.reused} / {report.removed}"),
                         ("seconds (extract/validate/embed)", " / ".join(str(report.seconds[k]) for k in
                                                                        ("extract", "validate", "embed")))):
        t.add_row(label, str(value))
    console.print(t)
    if report.failures:
        console.print(f"[bold]failures by kind[/]: {report.failures_by_kind}")
        for f in report.failures:
            console.print(f"  [red]{f['kind']}[/] {f['id']}: {f['error'][:160]}")
    for e in report.discovery_errors:
        console.print(f"  [yellow]import failed[/] {e}")


def _query(args, cfg, console) -> int:
    import time

    from .index import BlockIndex

    if args.k < 1:
        raise IndexCLIError("-k must be at least 1")
    if not args.text.strip():
        raise IndexCLIError("the query text is empty")
    index = BlockIndex(_index_path(cfg))
    t0 = time.perf_counter()
    hits = index.query(args.text, args.k, where=ALL_FILTER if args.all else RETRIEVABLE)
    seconds = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps({"query": args.text, "seconds": seconds, "hits": [h.to_dict() for h in hits]}, default=str))
        return 0
    from rich.table import Table

    t = Table(title=f"{args.text!r}  ({seconds}s)", caption="flags: x executes, i instantiates, "
              "f forward-checked, t torch-only, p prompt-ready")
    t.add_column("distance")
    t.add_column("block", overflow="fold")
    for col in ("kind", "params", "flags"):
        t.add_column(col, no_wrap=True)
    for h in hits:
        m = h.metadata
        flags = "".join(c if m.get(f) else "-" for c, f in (("x", "validated"), ("i", "instantiable"),
                        ("f", "forward_checked"), ("t", "torch_only"), ("p", "prompt_ready")))
        t.add_row(f"{h.distance:.3f}", h.id, str(m.get("kind", "")), str(m.get("params", "")), flags)
    console.print(t)
    if args.code:
        for h in hits:
            console.print(f"[bold]{h.id}[/]")
            sys.stdout.write(h.code + "\n")
    return 0


def _stats(args, cfg, console) -> int:
    from .build import stats
    from .index import BlockIndex

    s = stats(BlockIndex(_index_path(cfg)))
    if args.json:
        print(json.dumps(s))
        return 0
    from rich.table import Table

    t = Table(title=f"block index {s['index']}")
    t.add_column("")
    t.add_column("value")
    for k, v in s.items():
        if k != "index":
            t.add_row(k, str(v))
    console.print(t)
    return 0
