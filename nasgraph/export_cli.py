"""`nasgraph export ID --format pytorch|onnx`: a trained design as a self-contained model file, checked
with ONNX Runtime against PyTorch and timed on this machine (the engine: nasgraph.tools.model_export)."""
from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from nasgraph.config import Config
from nasgraph.views import fmt_acc


def export_views(r) -> list:
    lines = [f"exported {r.arch_id[:12]} (final training: {r.training.epochs} epochs on {r.training.dataset}, "
             f"test accuracy of the exported weights {fmt_acc(r.accuracy)})"]
    lines += [f"  {fmt:8} {path}" for fmt, path in r.files.items()]
    lines += [f"  code     {r.code}", f"  facts    {r.facts}"]
    for fmt, diff in r.max_abs_diff.items():
        what = "ONNX Runtime vs PyTorch" if fmt == "onnx" else "reloaded .pt2 vs PyTorch"
        same = f", same class on {100 * r.same_class[fmt]:.0f}% of them" if fmt in r.same_class else ""
        lines.append(f"  {what}: max abs difference of logits {diff:.2e} on the same test images{same}")
    t = Table(title="latency on this machine (median ms per forward pass)")
    for col in ("runtime", "batch 1", "batch 64"):
        t.add_column(col, justify="left" if col == "runtime" else "right")
    for runtime, lat in r.latency_ms.items():
        t.add_row("onnxruntime" if runtime == "onnx" else runtime, *(f"{lat.get(b, float('nan')):.3f}" for b in ("1", "64")))
    return [*lines, t]


def export_command(args, cfg: Config, console: Console) -> int:
    from nasgraph.tools.evaluator.harness import pick_device
    from nasgraph.tools.hardware import hardware_info
    from nasgraph.tools.model_export import ExportError, export_model
    from nasgraph.tools.store import Store

    if not cfg.store_path.exists():
        raise ExportError(f"no store at {cfg.store_path}; evaluate, run and train something first")
    formats = sorted(set(args.format or ["onnx"]))
    hardware = hardware_info(cfg.evaluator.threads, str(pick_device(cfg.evaluator.device)))
    store = Store(cfg.store_path)
    try:
        result = export_model(cfg, store, args.id, formats, args.out, dataset=cfg.loop.dataset if args.dataset else None,
                              hardware=hardware)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"arch_id": result.arch_id, "files": {k: str(v) for k, v in result.files.items()},
                          "code": str(result.code), "facts": str(result.facts), "accuracy": result.accuracy,
                          "max_abs_diff": result.max_abs_diff, "same_class": result.same_class,
                          "latency_ms": result.latency_ms}))
    else:
        for view in export_views(result):
            console.print(view)
    return 0


def cmd_export(args, cfg: Config, console: Console) -> int:
    return export_command(args, cfg, console)


def register(subparsers, commands: dict) -> None:
    e = subparsers.add_parser("export", help="a trained design as a model file with its weights (PyTorch .pt2 / "
                                             "ONNX), checked and timed")
    e.add_argument("id", help="architecture id or prefix (trained with `nasgraph train`)")
    e.add_argument("--format", action="append", choices=["pytorch", "onnx"],
                   help="pytorch (.pt2, torch.export) or onnx; repeat for both (default onnx)")
    e.add_argument("--out", default="nasgraph-export", help="folder for the files (default ./nasgraph-export)")
    e.add_argument("--dataset", help="when it was trained on several: which dataset's training to export")
    e.add_argument("--image-size", dest="image_size", type=int, help="with a folder --dataset: its image size")
    e.add_argument("--threads", type=int, help="threads for the latency measurement")
    e.add_argument("--json", action="store_true")
    commands["export"] = cmd_export
