"""LEMUR models run unchanged: the share of real corpus files the evaluator builds, shape-checks and trains.

A seeded random sample of the LEMUR image-classification model files (`nasgraph lemur pull`) goes
through the real Evaluator as code a person handed in (origin "handed": the policy calibrated on
real model files), with no parameter or FLOP budget and a short training budget, on each dataset
asked for. A model that cannot take the data's own 28-pixel images is rebuilt for larger ones
(`--sides`, as LEMUR's own runs resize their inputs). A file counts as OK when it trains, or when it
ends `over_budget` with a projected epoch time (it runs; it is only slower than this proxy allows).
Printed per dataset, separately for the
torch/torchvision-only files and the rest: the OK rate and the count of each failure kind, then one
typed line per failed file. Target: >= 95% of the torch-only files OK.

--static checks both static policies (generated and handed) over every image-classification file
instead, without running anything: how many files each refuses, and why. That is the handed-in
policy's calibration; it lists every torch-only file the handed-in policy refuses.

Run: .venv/bin/python -m bench.lemur_compat [--sample 200] [--seed 0] [--dataset fashion-mnist --dataset mnist-5k]
                                            [--time-budget 30] [--sides 32,64,128,256,299] [--workers 1] [--out F.json]
     (with --out, each measured file is journaled beside it; the same command again resumes)
     .venv/bin/python -m bench.lemur_compat --static [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
from collections import Counter
from concurrent.futures import as_completed
from pathlib import Path

from nasgraph.config import load_config
from nasgraph.tools.evaluator import EvalRequest, Evaluator, Outcome, static_check
from nasgraph.tools.evaluator.datasets import dataset_names
from nasgraph.tools.lemur import lemur_dir, list_models
from nasgraph.tools.lemur.layout import MODELS_DIR

TASK = "img-classification"
NO_BUDGET = 10**15  # parameters and FLOPs: a person's file is measured, not refused for its size


def corpus(root: Path) -> list[tuple[str, bool]]:
    """(name, torch_only) of every image-classification model file, by name."""
    seen: dict[str, bool] = {}
    for m in list_models(root, limit=None):
        if m.series is not None and m.series.task == TASK:
            seen[m.name] = bool(m.torch_only)
    return sorted(seen.items())


def group(torch_only: bool) -> str:
    return "torch_only" if torch_only else "other"


def kind(out: Outcome) -> str:
    """The failure's typed key: status and diagnosis kind (e.g. build_error/missing_module)."""
    d = out.diagnosis.kind if out.diagnosis else "other"
    return out.status if out.status == "ok" else f"{out.status}/{d}"


def counts_ok(out: Outcome) -> bool:
    return out.ok or (out.status == "over_budget" and "projected_s" in out.detail)


def reason(out: Outcome) -> str:
    """One line: the typed key, the name the diagnosis is about, and the error's telling line."""
    d = out.diagnosis
    name = f" {d.name}" if d and d.name else ""
    lines = [ln.strip() for ln in out.error.splitlines() if ln.strip()]
    tell = next((ln for ln in reversed(lines) if ln.startswith("missing module:")), None)
    tell = tell or next((ln for ln in reversed(lines) if re.match(r"^[\w.]*(Error|Exception)\b", ln)), None)
    return f"{kind(out)}{name}: {(tell or (lines[0] if lines else ''))[:160]}"


# ---------------------------------------------------------------- static calibration

def _category(reason_text: str) -> str:
    """A violation's reason with its particular names blanked, so that reasons group."""
    return re.sub(r"'[^']*'", "'…'", reason_text).split("; allowed:")[0]


def static(root: Path) -> dict:
    files = corpus(root)
    table: dict[str, dict] = {}
    refused_torch_only: list[dict] = []
    t = time.perf_counter()
    for origin in ("generated", "handed"):
        per: dict[str, dict] = {g: {"files": 0, "refused": 0, "reasons": Counter(), "names": Counter()}
                                for g in ("torch_only", "other")}
        for name, torch_only in files:
            code = (root / MODELS_DIR / f"{name}.py").read_text(encoding="utf-8", errors="replace")
            out = static_check(code, origin)
            row = per[group(torch_only)]
            row["files"] += 1
            if out is None:
                continue
            row["refused"] += 1
            violations = out.detail.get("violations") or [{"name": out.status, "reason": out.error.splitlines()[0]}]
            row["reasons"].update({_category(v["reason"]) for v in violations})
            row["names"].update({v["name"] for v in violations})
            if origin == "handed" and torch_only:
                refused_torch_only.append({"file": name, "violations": [f"line {v.get('line')}: {v['name']}: "
                                                                        f"{v['reason']}" for v in violations]})
        table[origin] = {g: {**r, "reasons": dict(r["reasons"].most_common()),
                             "names": dict(r["names"].most_common(25))} for g, r in per.items()}
    return {"files": len(files), "seconds": round(time.perf_counter() - t, 1), "policies": table,
            "handed_refuses_torch_only": refused_torch_only}


def print_static(res: dict) -> None:
    print(f"{res['files']} LEMUR {TASK} files, both policies, {res['seconds']} s")
    for origin, groups in res["policies"].items():
        for g, r in groups.items():
            print(f"\n{origin} policy, {g}: {r['refused']} of {r['files']} refused (files per reason)")
            for why, n in r["reasons"].items():
                print(f"  {n:5}  {why}")
    print(f"\nhanded-in policy refuses {len(res['handed_refuses_torch_only'])} torch-only file(s):")
    for f in res["handed_refuses_torch_only"]:
        print(f"  {f['file']}: {'; '.join(f['violations'][:3])}")


# ---------------------------------------------------------------- evaluation

def journal(out: Path | None) -> Path | None:
    """Rows already measured, one JSON line each beside --out: a stopped run resumes where it was."""
    return out.with_suffix(".rows.jsonl") if out else None


def evaluate(root: Path, sample: list[tuple[str, bool]], datasets: list[str], args: argparse.Namespace) -> list[dict]:
    cfg = load_config(evaluator={"threads": args.threads or load_config().evaluator.threads})
    log = journal(args.out)
    rows = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()] if log and log.exists() else []
    done = {(r["dataset"], r["file"]) for r in rows}
    if rows:
        print(f"resuming: {len(rows)} rows from {log}", flush=True)
    with Evaluator(cfg.data_dir, workers=args.workers) as ev:
        futures = {}
        for dataset in datasets:
            for name, torch_only in sample:
                if (dataset, name) in done:
                    continue
                code = (root / MODELS_DIR / f"{name}.py").read_text(encoding="utf-8", errors="replace")
                req = EvalRequest.from_config(cfg.evaluator, code=code, dataset=dataset, origin="handed",
                                              max_params=NO_BUDGET, max_flops=NO_BUDGET,
                                              time_budget_s=args.time_budget, setup_timeout_s=args.setup_timeout,
                                              image_sides=args.sides)
                futures[ev.submit(req)] = (dataset, name, torch_only)
        for fut in as_completed(futures):
            dataset, name, torch_only = futures[fut]
            out = fut.result()
            row = {"dataset": dataset, "file": name, "group": group(torch_only), "ok": counts_ok(out),
                   "kind": kind(out), "status": out.status, "stage": out.stage, "accuracy": out.accuracy,
                   "params": out.params, "projected_s": out.detail.get("projected_s"),
                   "image_side": out.detail.get("image_side"),
                   "prm_filled": out.detail.get("prm_filled", {}),
                   "seconds": round(sum(out.seconds.values()), 1), "reason": None if out.ok else reason(out)}
            rows.append(row)
            if log:
                with log.open("a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
            side = f"@{row['image_side']}px" if row["image_side"] else ""
            print(f"  {dataset:14} {row['group']:10} {'OK ' if row['ok'] else 'BAD'} {row['kind']:28} {name} {side}",
                  flush=True)
    return sorted(rows, key=lambda r: (r["dataset"], r["group"], r["file"]))


def summarise(rows: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for r in rows:
        s = out.setdefault(r["dataset"], {}).setdefault(r["group"], {"files": 0, "ok": 0, "kinds": Counter()})
        s["files"] += 1
        s["ok"] += r["ok"]
        s["kinds"][r["kind"]] += 1
    for groups in out.values():
        for s in groups.values():
            s["rate"] = round(s["ok"] / s["files"], 3)
            s["kinds"] = dict(s["kinds"].most_common())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=200, help="model files drawn at random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", action="append", help="repeatable; default fashion-mnist and mnist-5k")
    ap.add_argument("--time-budget", type=float, default=30.0, help="projected training seconds per epoch allowed")
    ap.add_argument("--sides", type=lambda s: [int(v) for v in s.split(",") if v], default=[32, 64, 128, 256, 299],
                    help="image sides tried when a model cannot take the data's own (LEMUR resizes: 32-512)")
    ap.add_argument("--setup-timeout", type=float, default=120.0, help="seconds for build + shape check + measure")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, help="torch threads per candidate (default: evaluator.threads)")
    ap.add_argument("--static", action="store_true", help="calibrate the static policies on every file instead")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    root = lemur_dir(load_config().home)
    if args.static:
        res = static(root)
        print_static(res)
    else:
        datasets = args.dataset or [d for d in ("fashion-mnist", "mnist-5k") if d in dataset_names()]
        files = corpus(root)
        sample = sorted(random.Random(args.seed).sample(files, min(args.sample, len(files))))
        print(f"{len(sample)} of {len(files)} LEMUR {TASK} files (seed {args.seed}), {', '.join(datasets)}, "
              f"{args.time_budget:g} s epoch budget, sides tried {args.sides}, {args.workers} worker(s), "
              f"{os.cpu_count()} cores")
        t = time.perf_counter()
        rows = evaluate(root, sample, datasets, args)
        summary = summarise(rows)
        res = {"sample": len(sample), "corpus": len(files), "seed": args.seed, "datasets": datasets,
               "time_budget_s": args.time_budget, "image_sides": args.sides, "wall_s": round(time.perf_counter() - t, 1),
               "summary": summary, "files": rows}
        for dataset, groups in summary.items():
            for g, s in groups.items():
                print(f"\n{dataset}, {g}: {s['ok']}/{s['files']} OK ({s['rate']:.0%})")
                for k, n in s["kinds"].items():
                    print(f"  {n:4}  {k}")
        failed = [r for r in rows if not r["ok"]]
        if failed:
            print("\nfailed files:")
            for r in failed:
                print(f"  {r['dataset']:14} {r['group']:10} {r['file']}: {r['reason']}")
    if args.out:
        args.out.write_text(json.dumps(res, indent=1, default=str))
        if journal(args.out).exists():
            journal(args.out).unlink()


if __name__ == "__main__":
    main()
