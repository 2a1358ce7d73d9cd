"""`nasgraph train RUN|ID ... --top K --epochs N`: final training of a run's winners (or of named
architectures), with per-epoch progress, and how well the one-epoch proxy ranked them."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nasgraph.config import Config
from nasgraph.views import fmt_acc, fmt_int

DEFAULT_EPOCHS = 10


def _fmt_ms(latency: dict, batch: str) -> str:
    v = latency.get(batch)
    return f"{v:.2f}" if isinstance(v, (int, float)) else "–"


def training_table(trainings, title: str) -> Table:
    t = Table(title=title)
    for col in ("architecture", "proxy", "final", "params", "FLOPs", "ms@1", "ms@64", "status"):
        t.add_column(col, justify="left" if col in ("architecture", "status") else "right", no_wrap=col != "status")
    for r in trainings:
        lat = r.latency.get("pytorch", {})
        status = r.status if r.epochs_done == r.epochs else f"{r.status} {r.epochs_done}/{r.epochs}"
        t.add_row(r.arch_id[:12], fmt_acc(r.proxy_accuracy), fmt_acc(r.accuracy), fmt_int(r.params), fmt_int(r.flops),
                  _fmt_ms(lat, "1"), _fmt_ms(lat, "64"),
                  status if not r.error else f"{status}: {r.error.splitlines()[-1][:50]}")
    t.caption = "proxy: the run's 1-epoch accuracy; ms: eager PyTorch forward here, median per batch of 1 / 64"
    return t


def agreement_line(a, epochs: int) -> str:
    if a.n == 0:
        return "no finished training with a proxy accuracy: no rank correlation"
    rho = "n/a (needs 3 designs with distinct accuracies)" if a.spearman is None else f"{a.spearman:+.2f}"
    kept = "" if a.best_kept is None else ("; the proxy's best stayed best" if a.best_kept
                                           else "; the proxy's best did not stay best")
    return f"rank correlation (Spearman) of 1-epoch proxy vs {epochs}-epoch accuracy: {rho} over {a.n} designs{kept}"


def _winners(cfg: Config, store, targets: list[str], top: int, dataset: str | None):
    """(run id or None, winners) for the targets: run ids (store or run folder, 'last'), else architecture ids."""
    from nasgraph.tools.evaluator import training_recipe
    from nasgraph.tools.final_training import FinalTrainingError, arch_winner, run_winners
    from nasgraph.tools.store import StoreError
    from nasgraph.trace_data import TraceError, resolve_run

    run_id, winners = None, []
    for target in targets:
        run = target if store.has_run(target) else None
        if run is None:
            try:
                run = resolve_run(cfg.runs_dir, target)
            except TraceError:
                run = None
        if run is not None:
            run_id = run
            winners += run_winners(store, run, top)
            continue
        try:
            winners.append(arch_winner(store, target, dataset, training_recipe(cfg.evaluator, cfg.loop.prm)))
        except StoreError as e:
            raise FinalTrainingError(f"'{target}' is neither a run (in the store or {cfg.runs_dir}) nor an "
                                     f"architecture: {e}") from None
    seen, unique = set(), []
    for w in winners:
        if w.arch_id not in seen:
            seen.add(w.arch_id)
            unique.append(w)
    return run_id, unique


def train_command(args, cfg: Config, console: Console) -> int:
    from nasgraph.tools.evaluator import Evaluator
    from nasgraph.tools.evaluator.harness import pick_device
    from nasgraph.tools.final_training import FinalTrainingError, describe, rank_agreement, train_winner
    from nasgraph.tools.hardware import hardware_info
    from nasgraph.tools.store import Store

    if args.top < 1 or args.epochs < 1:
        raise FinalTrainingError("--top and --epochs must be at least 1")
    if not cfg.store_path.exists():
        raise FinalTrainingError(f"no store at {cfg.store_path}; evaluate or run something first")
    dataset = cfg.loop.dataset if args.dataset else None
    store = Store(cfg.store_path)
    try:
        run_id, winners = _winners(cfg, store, args.targets, args.top, dataset)
        device = str(pick_device(cfg.evaluator.device))
        hardware = hardware_info(cfg.evaluator.threads, device)
        say = (lambda m: None) if args.json else console.print
        say(f"final training of {len(winners)} design(s) for {args.epochs} epochs"
            f"{f' from run {run_id}' if run_id else ''}; checkpoints under {Path(cfg.home) / 'trained'}")

        def on_epoch(w, stats: dict) -> None:
            say(f"  {w.arch_id[:12]}  epoch {stats['epoch'] + 1}/{args.epochs}  test {fmt_acc(stats.get('accuracy'))}"
                f"  ({stats.get('seconds') or 0:.1f}s)")

        results = []
        with Evaluator(cfg.data_dir) as evaluator:  # local: checkpoints are copied on this machine
            for i, w in enumerate(winners, 1):
                say(f"[{i}/{len(winners)}] {w.arch_id[:12]} (proxy {fmt_acc(w.proxy.accuracy if w.proxy else None)}) "
                    f"on {w.dataset}")
                results.append(train_winner(cfg, store, evaluator, w, args.epochs, hardware=hardware, run_id=run_id,
                                            on_epoch=on_epoch, time_budget_s=args.time_budget_s))
    finally:
        store.close()
    agreement = rank_agreement(results)
    if args.json:
        print(json.dumps({"run_id": run_id, "epochs": args.epochs, "trainings": [describe(t) for t in results],
                          "spearman": agreement.spearman, "n": agreement.n, "best_kept": agreement.best_kept}))
    else:
        console.print(training_table(results, f"final training, {args.epochs} epochs"))
        console.print(agreement_line(agreement, args.epochs))
    return 0 if all(t.status == "ok" for t in results) else 1


def cmd_train(args, cfg: Config, console: Console) -> int:
    return train_command(args, cfg, console)


def register(subparsers, commands: dict) -> None:
    t = subparsers.add_parser("train", help="final training of a run's best designs (or of architecture ids) for N "
                                            "epochs; resumable, per-epoch curve in the store")
    t.add_argument("targets", nargs="+", metavar="RUN|ID", help="a run id (or 'last') whose top designs to train, "
                                                                  "or architecture ids (prefixes)")
    t.add_argument("--top", type=int, default=5, help="designs of a run to train, best proxy first (default 5)")
    t.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default {DEFAULT_EPOCHS})")
    t.add_argument("--dataset", help="for architecture ids: the dataset (name, folder or .npz) to train on")
    t.add_argument("--image-size", dest="image_size", type=int, help="with a folder --dataset: its image size")
    t.add_argument("--threads", type=int)
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--time-budget-s", dest="time_budget_s", type=float,
                   help="max projected seconds per epoch (default 10x evaluator.time_budget_s: a winner passed the "
                        "proxy's budget once, a busy machine must not stop its final training)")
    t.add_argument("--json", action="store_true")
    commands["train"] = cmd_train
