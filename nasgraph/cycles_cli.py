"""`nasgraph cycles`: self-improvement cycles (LoRA on the generator's own best novel designs), their
progress bar, the per-cycle table and a PNG of the curves."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nasgraph.config import Config


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def cycles_table(state) -> Table:
    spec = state.spec
    t = Table(title=f"cycles {spec.cycles_id}: {spec.base} on {spec.dataset}, N={spec.per_cycle}, "
                    f"threshold {spec.threshold:.2f}", title_justify="left")
    for col in ("gen", "model", "valid", "mean acc", "best acc", f"≥{spec.threshold:.2f}", "novel vs corpus",
                "new pairs", "trained on", "fine-tune min", "loss first→last"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in state.rows:
        loss = "–" if r.loss_first is None else f"{r.loss_first:.3f}→{r.loss_last:.3f}"
        t.add_row(str(r.cycle), r.model.split("+")[-1] if "+" in r.model else "base", _pct(r.valid), _pct(r.mean_accuracy),
                  _pct(r.best_accuracy), _pct(r.above), str(r.novel_corpus), str(r.pairs_new),
                  str(r.pairs_train or "–"), "–" if r.finetune_s is None else f"{r.finetune_s / 60:.1f}", loss)
    return t


def plot(state, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = state.rows
    x = [r.cycle for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, values in (("valid", [r.valid for r in rows]),
                          ("mean accuracy (valid)", [r.mean_accuracy for r in rows]),
                          ("best accuracy", [r.best_accuracy for r in rows]),
                          (f"share ≥ {state.spec.threshold:.2f}", [r.above for r in rows]),
                          ("exact repeats of earlier designs", [r.duplicates / state.spec.per_cycle for r in rows])):
        ax.plot(x, [float("nan") if v is None else v for v in values], marker="o", label=label)
    ax.set_xlabel("generation (0 = base model, c = after c fine-tunings)")
    ax.set_xticks(x)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{state.spec.base}: self-improvement cycles ({state.spec.dataset})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class _Bar:
    """Two bars: the generations and fine-tunings overall, and the iterations or steps of the one in flight."""

    def __init__(self, console: Console, phases: int):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.overall = self.progress.add_task("cycles", total=phases)
        self.inner = self.progress.add_task("", total=1)
        self.console = console

    def __call__(self, kind: str, data: dict) -> None:
        p = self.progress
        if kind == "generate":
            p.update(self.inner, description=f"generation {data['cycle']} ({data['model']})", completed=0,
                     total=data["iterations"])
        elif kind == "iteration":
            p.update(self.inner, completed=data["done"])
        elif kind == "generated":
            p.advance(self.overall)
            row = data["row"]
            self.console.print(f"generation {row['cycle']}: valid {_pct(row['valid'])}, mean {_pct(row['mean_accuracy'])}"
                               f", best {_pct(row['best_accuracy'])}, {row['pairs_new']} new pairs")
        elif kind == "finetune":
            p.update(self.inner, description=f"fine-tuning adapter {data['cycle']} on {data['pairs']} pairs",
                     completed=0, total=None)
        elif kind == "finetune_step" and data.get("event") in ("start", "resumed", "step"):
            p.update(self.inner, total=data["steps"], completed=data.get("step", 0))
        elif kind == "finetune_step" and data.get("event") == "done":
            p.advance(self.overall)
        elif kind == "note":
            self.console.print(f"[yellow]{data['text']}[/]")


def cmd_cycles(args, cfg: Config, console: Console) -> int:
    from nasgraph.graph.cycles import CyclesSpec, load_state, run_cycles
    from nasgraph.graph.run import new_run_id

    if args.show:
        state = load_state(cfg, args.show)
    else:
        spec = CyclesSpec(cycles_id=args.run_id or new_run_id(), base=args.base, cycles=args.cycles,
                          per_cycle=args.per_cycle, dataset=cfg.loop.dataset, threshold=args.threshold,
                          replay=args.replay, max_repairs=args.max_repairs, epochs=args.lora_epochs, lr=args.lora_lr, rank=args.lora_rank,
                          alpha=2.0 * args.lora_rank)
        console.print(f"cycles run [bold]{spec.cycles_id}[/] (resume with --run-id {spec.cycles_id})")
        bar = _Bar(console, 2 * spec.cycles + 1)
        with bar.progress:
            state = run_cycles(cfg, spec, bar)
    if args.json:
        print(json.dumps(state.model_dump(mode="json")))
        return 0
    console.print(cycles_table(state))
    png = Path(args.png) if args.png else cfg.home / "cycles" / state.spec.cycles_id / "cycles.png"
    console.print(f"curves: {plot(state, png)}")
    return 0


def register(subparsers, commands: dict) -> None:
    c = subparsers.add_parser("cycles", help="self-improvement: LoRA-fine-tune the generator on its own best novel "
                                             "designs, cycle after cycle (resumable)")
    c.add_argument("--cycles", type=int, default=3, help="fine-tunings (generations are one more; default 3)")
    c.add_argument("--per-cycle", dest="per_cycle", type=int, default=20, help="candidates per generation (default 20)")
    c.add_argument("--run-id", dest="run_id", help="resume this cycles run, or name a new one")
    c.add_argument("--model", dest="base", default="qwen2.5-coder-0.5b", help="embedded base model (default 0.5B)")
    c.add_argument("--dataset", help="dataset the candidates train on (default the loop's)")
    c.add_argument("--threshold", type=float, default=0.85, help="one-epoch accuracy a design needs to be learned from")
    c.add_argument("--max-repairs", dest="max_repairs", type=int, default=0,
                   help="LLM repairs per candidate (default 0: the generator's own first draft, after rule fixes)")
    c.add_argument("--replay", type=float, default=0.5, help="share of earlier cycles' pairs mixed in (default 0.5)")
    c.add_argument("--lora-epochs", dest="lora_epochs", type=int, default=3)
    c.add_argument("--lora-lr", dest="lora_lr", type=float, default=5e-4)
    c.add_argument("--lora-rank", dest="lora_rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank)")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where candidates and fine-tuning run")
    c.add_argument("--show", metavar="ID", help="print the table and plot of a cycles run without running it")
    c.add_argument("--png", help="where the curves go (default <home>/cycles/<id>/cycles.png)")
    c.add_argument("--json", action="store_true")
    commands["cycles"] = cmd_cycles
