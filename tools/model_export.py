"""A trained winner as files to take home: `nasgraph export ID --format pytorch|onnx`.

The weights are those of the architecture's final training (nasgraph.tools.final_training). Loading
the generated code, exporting it and timing it all happen in the sandboxed child (see
evaluator/deploy.py); this side picks the training, copies the child's files out under stable names
and records each export (file, ONNX-vs-PyTorch difference, latency) in the store:

    <out>/ng-<arch12>.pt2 | .onnx   the model with its weights and input pipeline (float [0, 1] NCHW -> logits)
    <out>/ng-<arch12>.py            the model's code, as stored
    <out>/ng-<arch12>.json          what the file expects and what was measured (classes, accuracy, latency)

The store's LEMUR layout is `nasgraph store export` (tools/export.py).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from nasgraph.config import Config
from nasgraph.errors import NasgraphError
from nasgraph.tools.final_training import model_prm, request_settings
from nasgraph.tools.store import Store, TrainingRecord

SUFFIX = {"pytorch": ".pt2", "onnx": ".onnx"}


class ExportError(NasgraphError):
    """No trained weights to export, or the export failed in the child (the message says how)."""


@dataclass
class ExportResult:
    arch_id: str
    training: TrainingRecord
    files: dict[str, Path] = field(default_factory=dict)     # format -> model file
    code: Path | None = None
    facts: Path | None = None
    accuracy: float | None = None                             # test accuracy of the exported weights
    max_abs_diff: dict[str, float] = field(default_factory=dict)   # format -> vs eager PyTorch
    same_class: dict[str, float] = field(default_factory=dict)     # format -> share of images with the same argmax
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # runtime -> batch -> ms


def pick_training(store: Store, arch_id: str, dataset: str | None = None) -> TrainingRecord:
    """The architecture's best finished final training whose weights are still on disk."""
    detail = store.architecture(arch_id)
    done = [t for t in store.trainings(arch_ids=[detail.id], dataset=dataset)
            if t.status == "ok" and t.checkpoint and Path(t.checkpoint).is_file()]
    if not done:
        raise ExportError(f"architecture {detail.id} has no finished final training with its weights on disk; "
                          f"train it first: nasgraph train {detail.id[:12]} --epochs N")
    datasets = sorted({t.dataset for t in done})
    if len(datasets) > 1:  # weights for different data are different models: never pick one silently
        raise ExportError(f"architecture {detail.id} was trained on {len(datasets)} datasets "
                          f"({', '.join(datasets)}); say which with --dataset")
    return done[0]  # trainings() lists the best final accuracy first


def export_model(cfg: Config, store: Store, arch_id: str, formats: list[str], out_dir: Path, *,
                 dataset: str | None = None, hardware: dict | None = None) -> ExportResult:
    from nasgraph.tools.evaluator import EvalRequest, Evaluator

    unknown = [f for f in formats if f not in SUFFIX]
    if unknown or not formats:
        raise ExportError(f"unknown export format(s) {', '.join(unknown) or '(none)'}; use {' or '.join(SUFFIX)}")
    training = pick_training(store, arch_id, dataset)
    code = store.code(training.arch_id)
    stem = f"ng-{training.arch_id[:12]}"
    out_dir = Path(out_dir).expanduser()
    staging = out_dir / f".{stem}.{os.getpid()}.staging"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create the export folder {out_dir}: {e}") from None
    meta = {"arch_id": training.arch_id, "final_epochs": training.epochs, "final_accuracy": training.accuracy}
    req = EvalRequest.from_config(cfg.evaluator, code=code, dataset=training.dataset, prm=model_prm(training.prm),
                                  task="export", resume_from=training.checkpoint, artifacts_dir=str(staging),
                                  export_formats=formats, export_meta=meta, **request_settings(training.prm))
    try:
        with Evaluator(cfg.data_dir) as evaluator:  # local: the files are copied on this machine
            outcome = evaluator.evaluate(req)
        if not outcome.ok:
            first = (outcome.error or "").strip().splitlines()
            raise ExportError(f"export of {training.arch_id} failed ({outcome.status} in stage {outcome.stage}): "
                              f"{first[-1] if first else 'no message'}")
        facts = outcome.detail.get("export") or {}
        result = ExportResult(training.arch_id, training, accuracy=outcome.accuracy)
        for fmt in formats:
            got = (facts.get("formats") or {}).get(fmt) or {}
            src = staging / str(got.get("file", ""))
            if not got or not src.is_file():
                raise ExportError(f"the export child reported no {fmt} file for {training.arch_id}")
            dest = out_dir / f"{stem}{SUFFIX[fmt]}"
            os.replace(src, dest)
            result.files[fmt] = dest
            if isinstance(got.get("max_abs_diff"), (int, float)):
                result.max_abs_diff[fmt] = float(got["max_abs_diff"])
            if isinstance(got.get("same_class"), (int, float)):
                result.same_class[fmt] = float(got["same_class"])
            if isinstance(got.get("latency_ms"), dict):
                result.latency_ms[fmt] = got["latency_ms"]
        if isinstance(facts.get("pytorch_latency_ms"), dict):
            result.latency_ms = {"pytorch eager": facts["pytorch_latency_ms"], **result.latency_ms}
        result.code = out_dir / f"{stem}.py"
        result.code.write_text(code, encoding="utf-8")
        result.facts = out_dir / f"{stem}.json"
        result.facts.write_text(json.dumps({**(facts.get("meta") or {}), "files": {k: v.name for k, v in
                                            result.files.items()}, "max_abs_diff": result.max_abs_diff,
                                            "same_class": result.same_class,
                                            "latency_ms": result.latency_ms, "hardware": hardware or {}},
                                           indent=2) + "\n", encoding="utf-8")
        for fmt, path in result.files.items():
            store.record_export(training.id, fmt, str(path), max_abs_diff=result.max_abs_diff.get(fmt),
                                latency=result.latency_ms.get(fmt, result.latency_ms.get("pytorch eager", {})),
                                detail={"accuracy": outcome.accuracy, "same_class": result.same_class.get(fmt)},
                                hardware=hardware or {})
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
