"""Proposals in flight: wall seconds per iteration when the agents draft the next iteration while a design
trains (loop.in_flight = 2), against one thing at a time (in_flight = 1), in the same run.

Arms, each its own run in its own home under --root (models and datasets shared), same model, data,
search and number of iterations:
  sequential  in_flight 1: the LLM and the training each use all --threads, one after the other
  ahead       in_flight 2: the LLM and the training each use half of them, at the same time
The two arms seed their samples differently (planned ahead, a sample is keyed by iteration rather than
by graph step), so they draft different designs: compare their seconds, not their accuracies.

Run: .venv/bin/python -m bench.in_flight [--iterations 8] [--model qwen2.5-coder-0.5b] [--threads 2]
     [--dataset fashion-mnist] [--root DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nasgraph.config import load_config

ARMS = {"sequential": 1, "ahead": 2}


def run_arm(root: Path, arm: str, args: argparse.Namespace) -> dict:
    from nasgraph.agents.handle import open_llm
    from nasgraph.graph.run import run_loop

    in_flight = ARMS[arm]
    threads = args.threads if in_flight == 1 else max(1, args.threads // 2)
    base = load_config()
    cfg = load_config(home=root / arm, models_dir=base.models_dir, data_dir=base.data_dir,
                      llm={"model": args.model, "threads": threads},
                      loop={"search": "improver", "dataset": args.dataset, "in_flight": in_flight},
                      evaluator={"threads": threads})
    llm = open_llm(cfg)
    llm.base.invoke("Say OK.")  # the model's load is not an iteration's cost
    start = time.perf_counter()
    summary = run_loop(cfg, llm, run_id=arm, iterations=args.iterations, seed_key="bench-in-flight")
    wall = time.perf_counter() - start
    return {"in_flight": in_flight, "threads_each": threads, "iterations": summary["iterations"],
            "wall_s": round(wall, 1), "seconds_per_iteration": round(wall / max(1, summary["iterations"]), 1),
            "split_per_iteration": summary["seconds_per_iteration"],
            "valid_after_repair": summary["valid_after_repair"], "best_accuracy": summary["best_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--root", type=Path, help="default: a new folder under <home>/bench-in-flight")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = args.root or load_config().home / "bench-in-flight" / time.strftime("%Y%m%d-%H%M%S")
    report = {"model": args.model, "dataset": args.dataset, "threads": args.threads, "arms": {}}
    for arm in ARMS:
        report["arms"][arm] = run_arm(root, arm, args)
        print(f"{arm}: {json.dumps(report['arms'][arm])}", flush=True)
    seq, ahead = report["arms"]["sequential"], report["arms"]["ahead"]
    report["speedup"] = round(seq["seconds_per_iteration"] / ahead["seconds_per_iteration"], 2)
    print(f"\nseconds per iteration: sequential {seq['seconds_per_iteration']}, ahead {ahead['seconds_per_iteration']} "
          f"-> {report['speedup']}x ({args.iterations} iterations each, {args.model}, {args.dataset})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
