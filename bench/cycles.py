"""Self-improvement cycles, measured: each generation of a `nasgraph cycles` run against generation 0 (the
base model), with 95% intervals, and the difference called noise when the intervals overlap.

Every generation ran the same loop (search = independent: one fixed prompt, no feedback) with the same
seed key and N, so what differs between generation 0 and generation c is the adapter alone.

    nasgraph cycles --cycles 3 --per-cycle 20 --run-id fmnist   # resumable; hours on 2 CPU cores
    python -m bench.cycles fmnist [--json docs/bench/cycles.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.search import mean_interval, wilson
from nasgraph.config import load_config
from nasgraph.graph.cycles import load_state
from nasgraph.tools.fingerprint import NoveltyIndex
from nasgraph.tools.store import Store

NOVEL = 0.1  # 1 - Jaccard under which a design counts as a near-copy of an earlier one (the loop's threshold)


def _per_iteration(store: Store, run_id: str, n: int) -> tuple[list[float], int, int, int]:
    """Valid designs' accuracies (one per iteration), valid iterations, and two measures of diversity among the valid designs: how many are novel (MinHash) against the ones
    before them, and how many distinct (parameters, FLOPs) sizes they have."""
    ok: dict[int, tuple[float, str, tuple]] = {}
    for r in store.evaluations_for_run(run_id):
        if r.iteration is None or r.iteration > n:
            continue
        if r.status == "ok" and r.accuracy is not None:
            ok[r.iteration] = (float(r.accuracy), r.arch_id, (r.params, r.flops))
    index, distinct = NoveltyIndex(), 0
    for _, arch, _ in ok.values():
        code = store.code(arch)
        distinct += index.novelty(code)[0] >= NOVEL
        index.add(arch, code)
    sizes = len({size for _, _, size in ok.values()})
    return [a for a, _, _ in ok.values()], len(ok), distinct, sizes


def analyse(cycles_id: str, home: str | None = None) -> dict:
    cfg = load_config(**({"home": Path(home)} if home else {}))
    state = load_state(cfg, cycles_id)
    n = state.spec.per_cycle
    rows = []
    with Store(cfg.store_path) as store:
        for row in state.rows:
            accs, valid, distinct, sizes = _per_iteration(store, row.run_id, n)
            fresh = row.iterations - row.duplicates  # a draft refused before evaluation has no store row
            mean, lo, hi = mean_interval(accs)
            above = sum(a >= state.spec.threshold for a in accs)
            rows.append({"generation": row.cycle, "model": row.model, "valid": valid, "fresh": fresh,
                         "valid_rate": round(valid / fresh, 3) if fresh else None, "valid_ci": wilson(valid, fresh),
                         "mean_accuracy": mean, "mean_ci": (lo, hi), "best_accuracy": max(accs) if accs else None,
                         "above": above, "above_ci": wilson(above, n), "distinct": distinct, "sizes": sizes,
                         "pairs_new": row.pairs_new,
                         "pairs_train": row.pairs_train, "finetune_min": round((row.finetune_s or 0) / 60, 1)})
    verdicts = {}
    if len(rows) > 1:
        base, last = rows[0], rows[-1]
        for key, ci in (("valid_rate", "valid_ci"), ("mean_accuracy", "mean_ci")):
            if base[key] is None or last[key] is None or None in base[ci] or None in last[ci]:
                verdicts[key] = "not enough data"
                continue
            overlap = last[ci][0] <= base[ci][1] and base[ci][0] <= last[ci][1]
            change = "rose" if last[key] > base[key] else "fell" if last[key] < base[key] else "held"
            verdicts[key] = f"{change} {base[key]} -> {last[key]}" + (" (inside the noise: intervals overlap)"
                                                                     if overlap else " (intervals apart)")
    return {"cycles_id": cycles_id, "spec": state.spec.model_dump(), "rows": rows, "verdicts": verdicts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cycles_id")
    ap.add_argument("--home", help="NASGRAPH home the run lives in (default the configured one)")
    ap.add_argument("--json", help="also write the analysis here")
    args = ap.parse_args()
    result = analyse(args.cycles_id, args.home)
    print(f"{'gen':>3} {'model':<34} {'valid':>15} {'mean acc (95% CI)':>26} {'best':>6} {'>=thr':>6} {'distinct':>8} "
          f"{'sizes':>5} {'pairs':>5}")
    for r in result["rows"]:
        lo, hi = r["mean_ci"]
        mean = "–" if r["mean_accuracy"] is None else f"{r['mean_accuracy']:.3f}"
        ci = "" if lo is None else f" ({lo:.3f}-{hi:.3f})"
        best = "–" if r["best_accuracy"] is None else f"{r['best_accuracy']:.3f}"
        print(f"{r['generation']:>3} {r['model'][-34:]:<34} {r['valid']:>3}/{r['fresh']:<3} {r['valid_ci'][0]:.2f}-"
              f"{r['valid_ci'][1]:.2f} {mean + ci:>26} {best:>6} {r['above']:>6} {r['distinct']:>8} {r['sizes']:>5} "
              f"{r['pairs_new']:>5}")
    for key, verdict in result["verdicts"].items():
        print(f"{key}: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
