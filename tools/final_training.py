"""Final training of the winners: a run's best designs (by their one-epoch proxy) trained for N epochs.

Each training runs in the sandboxed child like every evaluation (generated code is untrusted), with
the harness's recipe and a learning-rate schedule over all N epochs. After every epoch the child
saves a checkpoint, which the parent copies to `<home>/trained/<arch>-<key>/checkpoint.pt` and
records the epoch in the store; a training that was stopped (Ctrl-C, a crash, a time limit) resumes
from its last finished epoch when asked again, and a finished one is not trained twice. The last
checkpoint holds the trained weights that `nasgraph export` writes out.

How far to trust the proxy is `rank_agreement`: Spearman's rank correlation between the proxy
accuracy that chose the winners and their final accuracy.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nasgraph.config import Config
from nasgraph.errors import NasgraphError
from nasgraph.tools.evaluator.outcome import Outcome
from nasgraph.tools.evaluator.own_data import dataset_key
from nasgraph.tools.store import EvaluationRecord, Store, TrainingRecord, canonical_prm

# Keys the cache adds to a handed-in file's recipe (see the CLI's eval): settings of the request,
# not hyperparameters the model is given.
REQUEST_KEYS = ("origin", "image_sides", "max_params", "max_flops")
NO_BUDGET = 10**15          # a winner already passed the budgets once; final training does not re-judge them
# The proxy's per-epoch time budget stops a design that projects too slow from its first batches. For a
# winner that already passed it, a load spike must not end its final training: measured here, 3 of 5
# Fashion-MNIST winners were stopped after one timed batch while other jobs loaded the machine.
FINAL_BUDGET_FACTOR = 10
LATENCY_BATCHES = [1, 64]


class FinalTrainingError(NasgraphError):
    """Nothing to train (no valid design, no such run) or a target that names nothing."""


@dataclass(frozen=True)
class Winner:
    arch_id: str
    code: str
    dataset: str
    prm: dict                        # the recipe as the proxy's evaluation stored it (cache key form)
    proxy: EvaluationRecord | None   # the evaluation that ranked it; None for a design never evaluated


@dataclass(frozen=True)
class Agreement:
    """How the proxy ranking held up: Spearman's rho over `n` designs (None below 3 or without spread)."""
    n: int
    spearman: float | None
    best_kept: bool | None           # the proxy's best design is also the best after final training


def run_winners(store: Store, run_id: str, k: int) -> list[Winner]:
    """The `k` best designs of a run by their proxy accuracy (one evaluation per architecture)."""
    best: dict[str, EvaluationRecord] = {}
    for e in store.run_candidates(run_id):
        if e.status == "ok" and e.accuracy is not None and (e.arch_id not in best or e.accuracy > best[e.arch_id].accuracy):
            best[e.arch_id] = e
    if not best:
        raise FinalTrainingError(f"run {run_id} has no valid design in the store {store.path}")
    ranked = sorted(best.values(), key=lambda e: (-e.accuracy, e.id))[:k]
    return [Winner(e.arch_id, store.code(e.arch_id), e.dataset, e.prm, e) for e in ranked]


def arch_winner(store: Store, arch_id: str, dataset: str | None, default_prm: dict) -> Winner:
    """One architecture (id or prefix); its proxy is its best valid evaluation with the fewest epochs,
    on `dataset` when given. Without any evaluation there, it trains with `default_prm` on `dataset`."""
    detail = store.architecture(arch_id)
    wanted = dataset_key(dataset) if dataset is not None else None  # as the store records it
    ok = [e for e in detail.evaluations if e.status == "ok" and e.accuracy is not None
          and (wanted is None or e.dataset == wanted)]
    if ok:
        proxy = min(ok, key=lambda e: (e.epochs, -e.accuracy, e.id))
        return Winner(detail.id, detail.code, proxy.dataset, proxy.prm, proxy)
    if dataset is None:
        raise FinalTrainingError(f"architecture {detail.id} has no valid evaluation; give --dataset to train it anyway")
    return Winner(detail.id, detail.code, dataset, default_prm, None)


def model_prm(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k not in REQUEST_KEYS}


def request_settings(recipe: dict) -> dict[str, Any]:
    """The request fields a stored recipe implies: who wrote the code (its policy, image sides) and
    the recipe's own seed and augmentation; budgets off."""
    out: dict[str, Any] = {"max_params": NO_BUDGET, "max_flops": NO_BUDGET}
    if recipe.get("origin") == "handed":
        out.update(origin="handed", image_sides=list(recipe.get("image_sides") or []))
    for key in ("seed", "augment"):
        if key in recipe:
            out[key] = recipe[key]
    return out


def checkpoint_dir(home: Path, winner: Winner, epochs: int) -> Path:
    # Keyed as the store keys the training: the same images trained by path or by content key share one folder.
    key = hashlib.sha256(f"{dataset_key(winner.dataset)}|{epochs}|{canonical_prm(winner.prm)}".encode()).hexdigest()[:12]
    return Path(home) / "trained" / f"{winner.arch_id[:16]}-{key}"


def _epoch_stats(ev: dict) -> dict | None:
    """A progress event's epoch statistics, if well formed (they come from the sandboxed child)."""
    stats = ev.get("stats")
    if not isinstance(stats, dict) or not isinstance(stats.get("epoch"), int) or isinstance(stats["epoch"], bool):
        return None
    return {k: stats.get(k) for k in ("epoch", "accuracy", "loss", "train_accuracy", "seconds")}


def train_winner(cfg: Config, store: Store, evaluator, winner: Winner, epochs: int, *, hardware: dict,
                 run_id: str | None = None, on_epoch: Callable[[Winner, dict], None] | None = None,
                 time_budget_s: float | None = None) -> TrainingRecord:
    """Train one winner for `epochs` (or resume it, or return it when already done). `time_budget_s`:
    seconds an epoch may take (default FINAL_BUDGET_FACTOR x the evaluator's proxy budget)."""
    from nasgraph.tools.evaluator import EvalRequest

    folder = checkpoint_dir(cfg.home, winner, epochs)
    ckpt = folder / "checkpoint.pt"
    done = store.find_training(winner.arch_id, winner.dataset, epochs, winner.prm)
    if done is not None and done.status == "ok" and ckpt.exists():
        return done  # trained before: never twice
    record = store.start_training(winner.arch_id, winner.dataset, epochs, winner.prm, checkpoint=str(ckpt),
                                  proxy=winner.proxy, run_id=run_id)
    folder.mkdir(parents=True, exist_ok=True)
    req = EvalRequest.from_config(
        cfg.evaluator, code=winner.code, dataset=winner.dataset, epochs=epochs, prm=model_prm(winner.prm),
        checkpoint=True, resume_from=str(ckpt) if ckpt.exists() else None, artifacts_dir=str(folder),
        latency_batches=LATENCY_BATCHES,
        time_budget_s=time_budget_s or FINAL_BUDGET_FACTOR * cfg.evaluator.time_budget_s, **request_settings(winner.prm))

    def progress(ev: dict) -> None:
        stats = _epoch_stats(ev)
        if stats is None:
            return
        store.record_training_epoch(record.id, stats)
        if on_epoch is not None:
            on_epoch(winner, stats)

    try:
        outcome = evaluator.evaluate(req, progress)
    except BaseException:  # Ctrl-C or an error here: the row must not say 'running' forever
        store.finish_training(record.id, Outcome(status="killed", stage="train", error=(
            "interrupted; the same command goes on from the last finished epoch")), hardware=hardware)
        raise
    return store.finish_training(record.id, outcome, hardware=hardware)


def rank_agreement(trainings: list[TrainingRecord]) -> Agreement:
    pairs = [(t.proxy_accuracy, t.accuracy) for t in trainings
             if t.status == "ok" and t.proxy_accuracy is not None and t.accuracy is not None]
    if not pairs:
        return Agreement(0, None, None)
    best_kept = max(pairs, key=lambda p: p[0])[1] == max(p[1] for p in pairs)
    rho = None
    proxy, final = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(pairs) >= 3 and len(set(proxy)) > 1 and len(set(final)) > 1:  # a constant column has no ranking
        from scipy.stats import spearmanr

        value = float(spearmanr(proxy, final).statistic)
        rho = None if math.isnan(value) else value
    return Agreement(len(pairs), rho, best_kept)


def describe(t: TrainingRecord) -> dict:
    """One training as plain JSON (for --json and reports)."""
    return {"arch_id": t.arch_id, "dataset": t.dataset, "epochs": t.epochs, "status": t.status,
            "proxy_accuracy": t.proxy_accuracy, "accuracy": t.accuracy, "params": t.params, "flops": t.flops,
            "latency_ms": t.latency.get("pytorch", {}), "epochs_done": t.epochs_done, "curve": t.curve,
            "checkpoint": t.checkpoint, "error": t.error.splitlines()[0] if t.error else ""}

