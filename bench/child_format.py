"""A child of a parent design, written as a whole module or as SEARCH/REPLACE edits: which is more often
valid, which makes the change, and which costs fewer tokens, with the same LLM, parents, changes and seeds.

Parents: the most accurate valid designs of a run (default: the no-feedback arm of `bench.search`, real
designs of the 1.5B model). Each is paired with one of the edits a parent is offered
(`prompt_improver.PARENT_MOVES`, in turn), and the Code Generator writes the child in both formats from
the same seed. Each child then goes through the loop's rule fixes and the real sandbox, up to the
cascade's screen (a tenth of the epoch: valid means it builds, checks and trains; no accuracy is
claimed). Reported per format: valid children (Wilson 95%), children identical to their parent (the
change was not made), tokens out and LLM seconds per child.

Run: .venv/bin/python -m bench.child_format [--parents 12] [--home ~/.nasgraph/bench-search/independent]
     [--run independent] [--model qwen2.5-coder-1.5b] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import zlib
from pathlib import Path

from bench.search import wilson
from nasgraph.agents import code_generator
from nasgraph.agents.prompt_improver import PARENT_MOVES
from nasgraph.agents.schemas import Parent
from nasgraph.config import load_config
from nasgraph.graph.run import make_task
from nasgraph.tools import archive
from nasgraph.tools.autofix.replay import Case, replay
from nasgraph.tools.candidate import Candidate
from nasgraph.tools.evaluator import EvalRequest, Evaluator
from nasgraph.tools.store import Store

FORMATS = ("module", "edit")
MAX_FIXES = 8  # the loop's default (loop.max_fixes)


def parents(home: Path, run_id: str, n: int) -> list[Parent]:
    cfg = load_config(home=home)
    with Store(cfg.store_path) as store:
        ok = [e for e in store.evaluations_for_run(run_id) if e.status == "ok" and e.params and e.flops]
        ok.sort(key=lambda e: -(e.accuracy or 0.0))
        return [Parent(arch_id=e.arch_id, code=store.code(e.arch_id), accuracy=e.accuracy, params=e.params,
                       flops=e.flops, niche=archive.niche(e.params, e.flops)) for e in ok[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    base = load_config()
    ap.add_argument("--parents", type=int, default=12)
    ap.add_argument("--home", type=Path, default=base.home / "bench-search" / "independent")
    ap.add_argument("--run", default="independent")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from nasgraph.agents.handle import open_llm

    cfg = load_config(models_dir=base.models_dir, data_dir=base.data_dir, llm={"model": args.model},
                      loop={"dataset": args.dataset})
    task = make_task(cfg)
    chosen = parents(args.home, args.run, args.parents)
    if not chosen:
        raise SystemExit(f"no valid designs in run {args.run!r} under {args.home}")
    llm = open_llm(cfg)
    rows = []
    with Evaluator(cfg.data_dir) as ev:
        def evaluate(code: str):
            req = EvalRequest.from_config(cfg.evaluator, code=code, dataset=task.dataset, epochs=1, prm=cfg.loop.prm,
                                          screen_min_accuracy=1.0)  # stop every valid child at the screen
            return ev.evaluate(req)

        for i, parent in enumerate(chosen):
            change = PARENT_MOVES[i % len(PARENT_MOVES)]
            seed = zlib.crc32(f"child-format-{parent.arch_id}".encode()) % 1_000_003
            for fmt in FORMATS:
                gen = code_generator.generate(llm.at_step(seed), task, change, [], None, parent=parent,
                                              child_format=fmt)
                echo = Candidate.of(gen.code).arch_id == parent.arch_id
                result = replay(Case(f"{i}-{fmt}", "seen", args.run, "", "", gen.code), evaluate, MAX_FIXES)
                row = {"parent": parent.arch_id, "change": change, "format": fmt, "echo": echo,
                       "status": result.final.status, "first_status": result.first.status, "fixes": result.rules,
                       "valid": result.valid and not echo, "tokens_out": gen.tokens_out,
                       "seconds": gen.seconds, "edits": [gen.edit_blocks, gen.edits_applied],
                       "error": result.final.error[-300:] if not result.valid else "", "reply": gen.reply}
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("format", "status", "echo", "tokens_out", "seconds", "edits",
                                                      "error")}), flush=True)
                if fmt == "edit":
                    print(gen.reply[:600], flush=True)
    summary = {}
    for fmt in FORMATS:
        mine = [r for r in rows if r["format"] == fmt]
        k = sum(r["valid"] for r in mine)
        summary[fmt] = {"children": len(mine), "valid": k, "valid_95": wilson(k, len(mine)),
                        "echo": sum(r["echo"] for r in mine),
                        "tokens_out": round(statistics.fmean(r["tokens_out"] for r in mine), 1),
                        "seconds": round(statistics.fmean(r["seconds"] for r in mine), 1)}
    print(f"\n{'format':<8} {'valid':>7} {'95%':>14} {'echo':>5} {'tokens out':>11} {'LLM s':>7}")
    for fmt, s in summary.items():
        print(f"{fmt:<8} {s['valid']:>3}/{s['children']:<3} {str(s['valid_95']):>14} {s['echo']:>5} "
              f"{s['tokens_out']:>11} {s['seconds']:>7}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "dataset": args.dataset, "summary": summary,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
