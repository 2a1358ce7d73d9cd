"""Candidates per hour with 1 worker against N workers, measured side by side in one run.

The same K small CNNs (distinct widths) train one Fashion-MNIST epoch each through the evaluator:
first with one warm parent using every core, then with N warm parents splitting the cores
(threads = cores // N each), all K submitted at once and collected as they finish. The configurations
alternate run by run (`--rounds`), so load from other processes hits both alike. Reported per
configuration: wall seconds for the batch, candidates per hour, and the overhead per candidate (what a
caller waits for beyond the child's own train + test seconds, with one worker: fork, build, shape
check, measure, result). Statuses must agree across configurations.

With --ray the same batches also run on a local Ray instance (one worker, then N): outcomes must
match the local backend's, and the overhead per candidate shows what Ray adds.

Run: .venv/bin/python -m bench.workers [--candidates 6] [--workers 2] [--dataset fashion-mnist] [--ray] [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import as_completed
from pathlib import Path

from nasgraph.config import load_config
from nasgraph.tools.evaluator import EvalRequest, Evaluator

MODEL = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        c = {width}
        self.body = nn.Sequential(
            nn.Conv2d(in_shape[1], c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(2 * c, out_shape[0]))

    def forward(self, x):
        return self.body(x)
'''


def batch(data_dir: Path, dataset: str, widths: list[int], workers: int, threads: int, backend: str = "local") -> dict:
    cfg = load_config(evaluator={"threads": threads, "device": "cpu", "backend": backend})
    reqs = [EvalRequest.from_config(cfg.evaluator, code=MODEL.format(width=w), dataset=dataset) for w in widths]
    with Evaluator.from_config(cfg.evaluator, data_dir, device="cpu", workers=workers) as ev:
        # Warm every parent (torch import, dataset cache) outside the timed batch, as a long run would be.
        for f in [ev.submit(EvalRequest.from_config(cfg.evaluator, code=MODEL.format(width=2), dataset=dataset))
                  for _ in range(workers)]:
            assert f.result().ok, f.result().error
        start = time.perf_counter()
        submitted = {ev.submit(r): (w, time.perf_counter()) for r, w in zip(reqs, widths)}
        rows = []
        for fut in as_completed(submitted):
            out = fut.result()
            width, t0 = submitted[fut]
            inside = out.seconds.get("train", 0.0) + out.seconds.get("test", 0.0)
            rows.append({"width": width, "status": out.status, "accuracy": out.accuracy,
                         "waited_s": round(time.perf_counter() - t0, 2), "train_test_s": round(inside, 2)})
        wall = time.perf_counter() - start
    rows.sort(key=lambda r: r["width"])
    res = {"backend": backend, "workers": workers, "threads": threads, "wall_s": round(wall, 2),
           "candidates_per_hour": round(3600 * len(widths) / wall, 1), "candidates": rows}
    if workers == 1:  # one at a time: the batch's wall time beyond the children's own training
        res["overhead_per_candidate_s"] = round((wall - sum(r["train_test_s"] for r in rows)) / len(rows), 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--ray", action="store_true", help="also run both configurations on a local Ray instance")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    widths = [8 + 2 * i for i in range(args.candidates)]
    data_dir = load_config().data_dir
    runs: dict[str, list[dict]] = {"one": [], "many": []}
    backends = ["local", "ray"] if args.ray else ["local"]
    for _ in range(args.rounds):
        for backend in backends:
            runs["one"].append(batch(data_dir, args.dataset, widths, 1, cores, backend))
            runs["many"].append(batch(data_dir, args.dataset, widths, args.workers, max(1, cores // args.workers),
                                      backend))
    one = statistics.median(r["wall_s"] for r in runs["one"] if r["backend"] == "local")
    many = statistics.median(r["wall_s"] for r in runs["many"] if r["backend"] == "local")
    statuses = {k: [[c["status"] for c in r["candidates"]] for r in v] for k, v in runs.items()}
    result = {"machine": f"{cores} CPU cores", "dataset": args.dataset, "candidates": args.candidates,
              "one_worker": runs["one"], f"{args.workers}_workers": runs["many"],
              "throughput_ratio": round(one / many, 3), "same_statuses": len({json.dumps(s) for v in statuses.values()
                                                                               for s in v}) == 1}
    print(json.dumps(result, indent=1))
    print(f"\n{args.candidates} candidates, {args.dataset}, {cores} cores: 1 worker x {cores} threads "
          f"{3600 * args.candidates / one:.0f}/h, {args.workers} workers x {max(1, cores // args.workers)} threads "
          f"{3600 * args.candidates / many:.0f}/h -> x{one / many:.2f}")
    for r in runs["one"]:
        print(f"{r['backend']}: overhead per candidate {r['overhead_per_candidate_s']} s (1 worker)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
