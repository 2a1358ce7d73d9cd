"""The rules replayed on the committed corpus of real failures (tests/fixtures/failures.jsonl), or
failures exported from your own runs into it.

    python -m bench.autofix                                   # replay the corpus, print the table
    python -m bench.autofix --export RUN_ID [...] --split held_out [--home DIR]   # append a run's failures

"Valid" means what it means in the loop: after at most --max-fixes rule fixes the model trains for one
epoch (on mnist-5k, the 28x28 grey set that ships offline, under the loop's parameter and FLOP budgets)
and reports a test accuracy. The table is per split: "seen" holds failures read while the rules were
written, "held_out" failures from runs nobody read for that.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from nasgraph.config import load_config
from nasgraph.graph.run import RunPaths
from nasgraph.graph.trace import read_events
from nasgraph.tools.autofix.replay import load_corpus, replay, summarize
from nasgraph.tools.evaluator import EvalRequest, Evaluator

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "failures.jsonl"
# The loop's budgets; an epoch of 5k images instead of 60k, and time that never decides validity here.
REPLAY = {"dataset": "mnist-5k", "epochs": 1, "max_params": 5_000_000, "max_flops": 60_000_000,
          "time_budget_s": 120.0, "threads": 1, "augment": False, "batch_size": 128}


def evaluator_fn(ev: Evaluator):
    return lambda code: ev.evaluate(EvalRequest(code=code, **REPLAY))


def run_failures(runs_dir: Path, run_id: str) -> list[dict]:
    """Every failed attempt of a run, from its trace: the check's refusals and the evaluator's failures."""
    out, code = [], None
    for e in read_events(RunPaths(runs_dir / run_id).trace):
        if e["node"] in ("generate", "repair", "fix"):
            code = e.get("code")
        elif e["node"] in ("check", "evaluate") and e.get("status") not in (None, "pass", "ok") and code:
            out.append({"source": run_id, "status": e["status"], "error": e.get("error") or "", "code": code})
            code = None  # one row per attempt
    return out


def export(run_ids: list[str], split: str, home: str | None, corpus: Path) -> int:
    cfg = load_config(**({"home": Path(home)} if home else {}))
    known = {c.id for c in load_corpus(corpus)} if corpus.exists() else set()
    added = 0
    with corpus.open("a", encoding="utf-8") as f:
        for run_id in run_ids:
            for row in run_failures(cfg.runs_dir, run_id):
                cid = hashlib.sha256(row["code"].encode()).hexdigest()[:12]
                if cid not in known:
                    known.add(cid)
                    f.write(json.dumps({"id": cid, "split": split, **row}, ensure_ascii=False) + "\n")
                    added += 1
    return added


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--max-fixes", type=int, default=8)
    p.add_argument("--export", nargs="+", metavar="RUN_ID", help="append these runs' failures to the corpus")
    p.add_argument("--split", choices=("seen", "held_out"), default="held_out")
    p.add_argument("--home", help="the NASGRAPH_HOME the runs live in")
    a = p.parse_args()
    if a.export:
        print(f"added {export(a.export, a.split, a.home, a.corpus)} failures to {a.corpus}")
        return
    cfg = load_config()
    cases = load_corpus(a.corpus)
    t = time.perf_counter()
    with Evaluator(cfg.data_dir) as ev:
        results = [replay(c, evaluator_fn(ev), a.max_fixes) for c in cases]
    table = summarize(results)
    print(json.dumps({"corpus": str(a.corpus), "max_fixes": a.max_fixes, "seconds": round(time.perf_counter() - t, 1),
                      **table}, indent=1))


if __name__ == "__main__":
    main()
