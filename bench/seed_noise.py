"""Is a child's gain over its parent more than the seed's noise? Children and parents retrained under other seeds.

A parents-search arm scores a child against its parent with one training seed; one-epoch accuracy moves
with the seed (initial weights, batch order). This takes the arm's valid children that beat their parent
by at least --min-gain, retrains each child and its parent with every seed in --seeds (the evaluator's
seed: weights and batch order; everything else as in the arm), and reports per pair the paired
difference per seed with its mean and 95% interval, and per design the accuracy's standard deviation
across seeds. The pooled standard deviation says how large a one-seed difference must be to mean much.
Two workers of one thread each (the CPU's fastest layout, bench.workers); the arm's own seed-0 figures
were measured with one worker of two threads, so seed 0 is retrained here too.

Run: .venv/bin/python -m bench.seed_noise [--root ~/.nasgraph/bench-search] [--arm parents] [--seeds 0,1,2]
     [--min-gain 0.001] [--pairs 2] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.search import _config, _events, mean_interval
from nasgraph.tools.evaluator import EvalRequest, Evaluator
from nasgraph.tools.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path.home() / ".nasgraph" / "bench-search")
    ap.add_argument("--arm", default="parents")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--min-gain", dest="min_gain", type=float, default=0.001)
    ap.add_argument("--pairs", type=int, default=2, help="the largest gains first")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.model, args.llm_threads, args.threads = "qwen2.5-coder-1.5b", 2, 1  # bench.search's; no LLM call here
    cfg = _config(args.root, args.arm, args)
    seeds = [int(s) for s in args.seeds.split(",")]
    records = [e for e in _events(cfg, args.arm) if e["node"] == "record"]
    acc = {e["code_hash"]: e["accuracy"] for e in records if e.get("status") == "ok"}
    gains, seen = [], set()
    for gain, e in sorted(((e["accuracy"] - acc[e["parent"]], e) for e in records
                           if e.get("status") == "ok" and e.get("parent") in acc
                           and e["accuracy"] - acc[e["parent"]] >= args.min_gain), key=lambda g: -g[0]):
        # A second child of the same parent at the same accuracy is the same network again (bench.inert).
        if (e["parent"], e["accuracy"]) not in seen and len(gains) < args.pairs:
            seen.add((e["parent"], e["accuracy"]))
            gains.append((gain, e))
    if not gains:
        raise SystemExit(f"no child of {args.arm} beat its parent by {args.min_gain} or more")
    designs = sorted({a for _, e in gains for a in (e["code_hash"], e["parent"])})
    with Store(cfg.store_path) as store:
        prm = {e.arch_id: e.prm for e in store.evaluations_for_run(args.arm) if e.status == "ok"}
        code = {a: store.code(a) for a in designs}
    with Evaluator(cfg.data_dir, workers=args.workers) as ev:
        futures = {(a, s): ev.submit(EvalRequest.from_config(
            cfg.evaluator, code=code[a], dataset=args.dataset, prm={**prm[a], "seed": s}, seed=s, threads=1,
            time_budget_s=900))  # one thread beside another worker: slower than the arm's epochs
            for a in designs for s in seeds}
        got = {k: f.result() for k, f in futures.items()}
    by_seed = {a: [got[a, s].accuracy for s in seeds] for a in designs}
    failed = [f"{a} seed {s}: {got[a, s].status}" for a in designs for s in seeds if got[a, s].status != "ok"]
    if failed:
        raise SystemExit("retraining failed: " + "; ".join(failed))
    pairs = []
    for gain, e in gains:
        child, parent = e["code_hash"], e["parent"]
        diffs = [round(c - p, 4) for c, p in zip(by_seed[child], by_seed[parent])]
        pairs.append({"iteration": e["iteration"], "child": child, "parent": parent, "arm_gain": round(gain, 4),
                      "diffs": diffs, "mean_diff": mean_interval(diffs), "better": sum(d > 0 for d in diffs)})
        m, lo, hi = pairs[-1]["mean_diff"]
        print(f"iteration {e['iteration']:3d}: arm {gain:+.4f}; retrained {', '.join(f'{d:+.4f}' for d in diffs)} "
              f"(mean {m:+.4f}, 95% {lo:+.4f} to {hi:+.4f})")
    sds = {a: round(statistics.stdev(v), 4) for a, v in by_seed.items()}
    pooled = round(statistics.fmean(v * v for v in sds.values()) ** 0.5, 4)
    print(f"accuracy sd across seeds per design: {', '.join(f'{v:.4f}' for v in sds.values())}; pooled {pooled}")
    if args.out:
        args.out.write_text(json.dumps({"arm": args.arm, "seeds": seeds, "pairs": pairs, "accuracy": by_seed,
                                        "sd": sds, "pooled_sd": pooled}, indent=1) + "\n")


if __name__ == "__main__":
    main()
