"""Rule-based fixes replayed on the real failures of earlier runs: for every failed evaluation in the
runs' traces, does a rule apply, and does the fixed code then pass the structural stages (build, shape,
params/FLOPs)? Chains up to --max-fixes fixes, re-evaluating after each one, as the loop does.

    python -m bench.autofix RUN_ID [RUN_ID ...] [--dataset fashion-mnist]

The fixed code runs in the sandboxed evaluator with a FLOP budget of 1, which stops every candidate
right after measuring it: "passes" means it built, its forward gave (batch, classes), and it was measured,
and, for a failure over a parameter or FLOP budget, that the measured count now fits that budget (an
epoch-time budget cannot be checked without training). `fixed_by_rule` counts, per rule, the failures
it applied to and how many of those passed.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

from nasgraph.config import load_config
from nasgraph.graph.run import RunPaths
from nasgraph.graph.trace import read_events
from nasgraph.tools.autofix import budget_excess, find_fix
from nasgraph.tools.evaluator import EvalRequest, Evaluator


def failures(cfg, run_ids: list[str]) -> list[tuple[str, str, str]]:
    """(code, status, error) of every failed evaluation in the runs, in order."""
    out = []
    for run_id in run_ids:
        code = None
        for e in read_events(RunPaths(cfg.runs_dir / run_id).trace):
            if e["node"] in ("generate", "repair", "fix"):
                code = e.get("code")
            elif e["node"] == "evaluate" and e.get("status") not in (None, "ok") and code:
                out.append((code, e["status"], e.get("error") or ""))
    return out


def passes_structure(evaluator: Evaluator, cfg, code: str, dataset: str, budgets: dict[str, float]):
    req = EvalRequest.from_config(cfg.evaluator, code=code, dataset=dataset, max_flops=1)
    out = evaluator.evaluate(req)
    measured = {"parameters": out.params, "FLOPs": out.flops}
    fits = all(measured[what] is not None and measured[what] <= budget for what, budget in budgets.items())
    return out.status == "over_budget" and out.stage == "measure" and fits, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--max-fixes", type=int, default=3)
    a = p.parse_args()
    cfg = load_config()
    cases = failures(cfg, a.runs)
    rules, results, by_rule = Counter(), Counter(), {}
    with Evaluator(cfg.data_dir) as evaluator:
        for code, _status, error in cases:
            budgets = {what: budget for what, (_, budget) in budget_excess(error).items() if what != "epoch time"}
            applied = []
            for _ in range(a.max_fixes):
                fix = find_fix(code, error)
                if fix is None:
                    break
                applied.append(fix.rule)
                code = fix.code
                ok, out = passes_structure(evaluator, cfg, code, a.dataset, budgets)
                if ok or out.stage == "measure":  # that error names the FLOP budget of 1, not the task's
                    break
                error = out.error
            if not applied:
                results["no rule"] += 1
                continue
            rules.update(applied)
            for rule in set(applied):
                by_rule.setdefault(rule, Counter()).update({"applied": 1, "fixed": int(ok)})
            results["fixed" if ok else "rule applied, still failing"] += 1
    fixable = results["fixed"] + results["rule applied, still failing"]
    summary = {"failures": len(cases), **results, "fixed_share_of_all": round(results["fixed"] / max(1, len(cases)), 3),
               "fixed_share_where_a_rule_applied": round(results["fixed"] / max(1, fixable), 3), "rules": dict(rules),
               "fixed_by_rule": {rule: dict(c) for rule, c in sorted(by_rule.items())}}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
