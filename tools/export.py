"""Export the store in LEMUR's (ABrain-One nn-dataset) file layout.

    out_dir/nn/ng-<arch_id>.py                                  the model code, as stored
    out_dir/stat/img-classification_<dataset>_acc_ng-<arch_id>/<epochs>.json

Each ``<epoch>.json`` is, as in LEMUR, a list of trials (best accuracy first), one flat object per
evaluation: the hyperparameters as top-level keys plus ``accuracy``, ``duration`` (nanoseconds, as
LEMUR's trainer records it), ``transform`` ("default" when the prm names none) and ``uid`` (md5 of
the hyperparameters). Where we have them, LEMUR's newer per-trial keys are filled too:
``train_loss``, ``train_accuracy`` (last epoch), ``cpu_type`` and ``gpu_type``. LEMUR splits the
folder name on '_', so '_' in dataset names is written as '-'. Newer LEMUR versions keep these folders
under ``stat/train/``; pass ``train_subdir=True`` for that layout.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

from nasgraph.tools.store import EvaluationRecord, Store

_NOT_HYPERPARAMETERS = {"uid", "duration", "accuracy", "epoch"}


def lemur_name(arch_id: str) -> str:
    return f"ng-{arch_id}"


def _trial(ev: EvaluationRecord) -> dict:
    trial: dict = {}
    for key, value in ev.prm.items():
        # LEMUR stores each hyperparameter as one scalar cell.
        ok = value is None or isinstance(value, (bool, int, float, str))
        trial[key] = value if ok else json.dumps(value, sort_keys=True)
    hyper = {k: v for k, v in trial.items() if k not in _NOT_HYPERPARAMETERS}
    trial["transform"] = trial.get("transform") or "default"
    trial["uid"] = hashlib.md5(json.dumps(hyper, sort_keys=True).encode("utf-8")).hexdigest()
    trial["accuracy"] = ev.accuracy
    timed = [ev.seconds[s] for s in ("train", "test") if s in ev.seconds] or list(ev.seconds.values())
    trial["duration"] = int(round(sum(timed) * 1e9))
    last = ev.epoch_stats[-1] if ev.epoch_stats and isinstance(ev.epoch_stats[-1], dict) else {}
    for ours, theirs in (("train_loss", "train_loss"), ("loss", "train_loss"),
                         ("train_accuracy", "train_accuracy")):
        if isinstance(last.get(ours), (int, float)) and theirs not in trial:
            trial[theirs] = last[ours]
    if ev.hardware.get("cpu"):
        trial["cpu_type"] = ev.hardware["cpu"]
    trial["gpu_type"] = ev.hardware.get("gpu") or "No GPU"
    if ev.status != "ok":
        trial["status"] = ev.status  # only with only_ok=False: LEMUR itself records successes only
    return trial


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # never leave a half-written stat file behind


def export_lemur(store: Store, out_dir: Path | str, *, dataset: str | None = None, only_ok: bool = True,
                 task: str = "img-classification", metric: str = "acc", train_subdir: bool = False) -> int:
    """Writes model files and per-epoch stats; returns the number of trials (evaluations) written.

    Files this export owns are rewritten from the store each time, so exporting again is idempotent;
    other files under ``out_dir`` are left alone.
    """
    out = Path(out_dir).expanduser()
    evals = store.evaluations(dataset=dataset, status="ok" if only_ok else None)
    if only_ok:
        evals = [e for e in evals if e.accuracy is not None]
    groups: dict[tuple[str, str, int], list[EvaluationRecord]] = defaultdict(list)
    for ev in evals:
        groups[(ev.arch_id, ev.dataset, ev.epochs)].append(ev)

    nn_dir = out / "nn"
    stat_root = out / "stat" / "train" if train_subdir else out / "stat"
    try:
        nn_dir.mkdir(parents=True, exist_ok=True)
        stat_root.mkdir(parents=True, exist_ok=True)
        written_code: set[str] = set()
        count = 0
        for (arch_id, ds, epochs), group in sorted(groups.items()):
            name = lemur_name(arch_id)
            if arch_id not in written_code:
                (nn_dir / f"{name}.py").write_text(store.code(arch_id), encoding="utf-8")
                written_code.add(arch_id)
            folder = stat_root / f"{task}_{ds.replace('_', '-')}_{metric}_{name}"
            folder.mkdir(exist_ok=True)
            trials = sorted((_trial(e) for e in group),
                            key=lambda t: (t["accuracy"] is None, -(t["accuracy"] or 0.0)))
            _write_json(folder / f"{epochs}.json", trials)
            count += len(trials)
    except OSError as e:
        raise OSError(f"cannot write the LEMUR export under {out}: {e}") from e
    return count
