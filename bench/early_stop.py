"""How well the start of an epoch predicts its end: the early-stop predictor, cross-validated on the
designs of real runs (every evaluation since the screen was added carries its screen accuracy).

Reads the stores of the given homes (default: the search benchmark's arms and the default home),
takes the one-epoch designs screened at --fraction, and prints out-of-fold RMSE, MAE and Pearson /
Spearman correlation for each variant: the mean, the screen accuracy alone, with the design's size,
and with its code's features. Also, for each point the screen measured (`curve`: the decision point and
its probes), how well the accuracy there ranks and tracks the end of the epoch: the data for choosing
evaluator.screen_fraction.

Run: .venv/bin/python -m bench.early_stop [--homes DIR ...] [--dataset fashion-mnist] [--json OUT]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from scipy.stats import pearsonr, spearmanr

from nasgraph.config import load_config
from nasgraph.tools.cascade import trained_screen
from nasgraph.tools.predictor.early_stop import VARIANTS, cross_validate, samples
from nasgraph.tools.store import Store


def collect(homes: list[Path], dataset: str, fraction: float):
    out, seen = [], set()
    for home in homes:
        path = home / "store.sqlite"
        if not path.exists():
            continue
        with Store(path) as store:
            for s in samples(store.evaluations(dataset=dataset), store.code, fraction):
                if s.arch_id not in seen:
                    seen.add(s.arch_id)
                    out.append(s)
    return out


def curve_points(homes: list[Path], dataset: str) -> dict[str, list[tuple[float, float]]]:
    """fraction -> (screen accuracy there, final accuracy) over every fully trained, screened design."""
    out: dict[str, list[tuple[float, float]]] = {}
    for home in homes:
        path = home / "store.sqlite"
        if not path.exists():
            continue
        with Store(path) as store:
            for r in store.evaluations(dataset=dataset, status="ok"):
                screen = trained_screen(r)
                if screen is not None and r.epochs == 1:
                    for f, acc in (screen.get("curve") or {}).items():
                        out.setdefault(f, []).append((acc, r.accuracy))
    return out


def main() -> None:
    base = load_config()
    bench = base.home / "bench-search"
    default = [base.home, *sorted(p for p in bench.iterdir() if p.is_dir())] if bench.exists() else [base.home]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--homes", type=Path, nargs="+", default=default)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--fraction", type=float, default=base.evaluator.screen_fraction)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    batch = collect(args.homes, args.dataset, args.fraction)
    cv = cross_validate(batch, folds=args.folds)
    accs = [s.accuracy for s in batch]
    print(f"{len(batch)} designs on {args.dataset} screened at {args.fraction:.0%} of the epoch "
          f"(final accuracy {min(accs):.3f}-{max(accs):.3f}); {args.folds}-fold cross-validation")
    print(f"{'variant':<18} {'RMSE':>7} {'MAE':>7} {'Pearson':>8} {'Spearman':>9}")
    for v in VARIANTS:
        s = cv[v]
        print(f"{v:<18} {s.rmse:>7.4f} {s.mae:>7.4f} {s.pearson:>8.3f} {s.spearman:>9.3f}")
    points = {}
    for f, pairs in sorted(curve_points(args.homes, args.dataset).items(), key=lambda kv: float(kv[0])):
        if len(pairs) >= 3:
            x, y = zip(*pairs)
            points[f] = {"designs": len(pairs), "pearson": round(float(pearsonr(x, y)[0]), 3),
                         "spearman": round(float(spearmanr(x, y)[0]), 3), "mean_screen": round(sum(x) / len(x), 3)}
            print(f"screen at {float(f):.0%} of the epoch: {len(pairs)} designs, mean accuracy there "
                  f"{points[f]['mean_screen']:.3f}; against the final accuracy Pearson {points[f]['pearson']:.3f}, "
                  f"Spearman {points[f]['spearman']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"designs": len(batch), "dataset": args.dataset, "fraction": args.fraction,
                                         "scores": {v: dataclasses.asdict(cv[v]) for v in VARIANTS},
                                         "curve": points}, indent=1))


if __name__ == "__main__":
    main()
