"""Code-aware accuracy prediction on LEMUR, against its baselines and NNGPT's reported figures.

Whole models are held out (GroupKFold by model name), and, harder, whole families (many LEMUR models
are near-copies within a family). On the same folds: the dataset x epoch mean, trees over the run's
hyperparameters, dataset and epoch only, and trees over code features as well; so the difference
between the last two is what the code adds. Printed: RMSE, MAE, Pearson r, Spearman and the
model-balanced RMSE (each held-out model weighing alike) per predictor and split, NNGPT's 0.14 / 0.78
beside them, RMSE per dataset, the permutation importance of the code predictor's columns on one
held-out fold, and the wall time of each part. Needs `nasgraph lemur pull`.

Run: .venv/bin/python -m bench.predictor [--folds 5] [--max-train-rows 150000] [--split model --split family]
                                         [--no-importance] [--out F.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from nasgraph.config import default_home
from nasgraph.tools.lemur import lemur_dir
from nasgraph.tools.predictor import VARIANTS, evaluate, importance, load_table
from nasgraph.tools.predictor.dataset import CODE_COLUMNS, COLUMNS
from nasgraph.tools.predictor.features import GROUPS
from nasgraph.tools.predictor.model import MAX_TRAIN_ROWS

NNGPT = {"rmse": 0.14, "pearson": 0.78}  # NNGPT's code-aware accuracy prediction (fine-tuned LLM), as reported
LABELS = {"mean": "dataset x epoch mean", "hp": "hyperparameters only", "code": "code + hyperparameters"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-train-rows", type=int, default=MAX_TRAIN_ROWS, help="rows each fold's trees are fitted on")
    ap.add_argument("--split", action="append", choices=["model", "family"], help="default: both")
    ap.add_argument("--no-importance", dest="importance", action="store_false")
    ap.add_argument("--home", type=Path, default=default_home())
    ap.add_argument("--out", help="write the figures as JSON here too")
    a = ap.parse_args()
    splits = a.split or ["model", "family"]

    start = time.perf_counter()
    table = load_table(lemur_dir(a.home), progress=print)
    table_s = time.perf_counter() - start
    print(f"table: {len(table):,} runs x epochs of {len(set(table.model)):,} models in "
          f"{len(set(table.family)):,} families, {len(table.vocab['dataset'])} datasets ({table_s:.1f} s)")
    t = time.perf_counter()
    ev = evaluate(table, splits=splits, folds=a.folds, max_train_rows=a.max_train_rows, progress=print)
    eval_s = time.perf_counter() - t

    print(f"\nheld-out accuracy prediction ({a.folds} folds, trees fitted on <= {a.max_train_rows:,} rows per fold)")
    head = f"{'split':8} {'predictor':24} {'RMSE':>7} {'MAE':>7} {'r':>7} {'Spearman':>8} {'model RMSE':>10} {'fit s':>6}"
    print(head)
    print("-" * len(head))
    for rep in ev.splits:
        for v in VARIANTS:
            s = rep.scores[v]
            print(f"{rep.split:8} {LABELS[v]:24} {s.rmse:7.4f} {s.mae:7.4f} {s.pearson:7.3f} {s.spearman:8.3f} "
                  f"{s.model_rmse:10.4f} {rep.seconds[v]:6.0f}")
        code, mean = rep.scores["code"], rep.scores["mean"]
        print(f"{'':8} {'code / mean RMSE':24} {code.rmse / mean.rmse:7.2f}   "
              f"code / hp RMSE {code.rmse / rep.scores['hp'].rmse:.2f}")
    print(f"{'':8} {'NNGPT (reported)':24} {NNGPT['rmse']:7.2f} {'':7} {NNGPT['pearson']:7.2f}")

    for rep in ev.splits:
        print(f"\nRMSE per dataset, held out by {rep.split}")
        print(f"{'dataset':15} {'mean':>7} {'hp':>7} {'code':>7} {'code/mean':>9}")
        for d, r in sorted(rep.per_dataset.items()):
            print(f"{d:15} {r['mean']:7.4f} {r['hp']:7.4f} {r['code']:7.4f} {r['code'] / r['mean']:9.2f}")

    ranked, imp_s = [], 0.0
    if a.importance:
        t = time.perf_counter()
        groups = {**{c: (c,) for c in COLUMNS}, **{f"[{g}]": cols for g, cols in GROUPS.items()},
                  "[all code features]": CODE_COLUMNS,
                  "[run: lr, momentum, batch, dropout]": ("lr", "momentum", "batch", "dropout", "effective_lr",
                                                          "lr_per_sample"),
                  "[run: transform]": ("transform_kind", "transform_size", "transform_flip")}
        ranked = importance(table, groups=groups, split="model", max_train_rows=a.max_train_rows)
        imp_s = time.perf_counter() - t
        print("\npermutation importance, code predictor, first by-model fold: held-out RMSE increase when "
              "shuffled ([groups] shuffled together)")
        for imp in [i for i in ranked if i.name.startswith("[")] + [i for i in ranked if not i.name.startswith("[")][:15]:
            print(f"  {imp.name:38} {imp.rmse_increase:+.4f} ± {imp.std:.4f}")

    total = time.perf_counter() - start
    print(f"\nwall time: table {table_s:.0f} s, evaluation {eval_s:.0f} s, importance {imp_s:.0f} s, total {total:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps({
            "evaluation": dataclasses.asdict(ev), "importance": [dataclasses.asdict(i) for i in ranked],
            "nngpt": NNGPT, "seconds": {"table": table_s, "evaluation": eval_s, "importance": imp_s, "total": total},
        }, indent=1))


if __name__ == "__main__":
    main()
