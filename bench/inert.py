"""How many children of a parents-search arm changed nothing, replayed on its stored designs.

For every valid child in an arm's trace, the child and its parent are built again in the real sandboxed
evaluator, stopped after the measure stage (a parameter budget of 1, so nothing trains), and their
behaviour digests (`tools.evaluator.inert.behaviour`) compared. A child with its parent's digest is what
`EvalRequest.parent_behaviour` now stops before training. The check is validated on the arm's own
numbers: such a child must have trained to exactly its parent's accuracy, and (for the digest to be
worth having) a child with another digest should not have. Designs of any arm that compute what an
earlier design computes are counted too.

Run: .venv/bin/python -m bench.inert [--root ~/.nasgraph/bench-search] [--arm parents] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.search import _config, _events
from nasgraph.tools.evaluator import EvalRequest, Evaluator
from nasgraph.tools.store import Store


def digests(cfg, arm: str, arch_ids: set[str]) -> dict[str, str | None]:
    with Store(cfg.store_path) as store:
        evals = {e.arch_id: e for e in store.evaluations_for_run(arm) if e.status == "ok"}
        codes = {a: store.code(a) for a in arch_ids}
    out = {}
    with Evaluator(cfg.data_dir) as ev:
        for arch_id in sorted(arch_ids):
            e = evals[arch_id]
            req = EvalRequest.from_config(cfg.evaluator, code=codes[arch_id], dataset=e.dataset, epochs=1,
                                          prm=e.prm, max_params=1)
            outcome = ev.evaluate(req)
            out[arch_id] = outcome.detail.get("behaviour")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path.home() / ".nasgraph" / "bench-search")
    ap.add_argument("--arm", default="parents")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--threads", type=int, default=2, help="as the arm was run: the digest is exact to the bit")
    args = ap.parse_args()
    args.model, args.llm_threads = "qwen2.5-coder-1.5b", 2  # bench.search's; nothing here calls the LLM
    cfg = _config(args.root, args.arm, args)
    records = [e for e in _events(cfg, args.arm) if e["node"] == "record"]
    acc = {e["code_hash"]: e["accuracy"] for e in records if e.get("status") == "ok"}
    children = [e for e in records if e.get("status") == "ok" and e.get("parent") in acc]
    digest = digests(cfg, args.arm, set(acc))
    rows = [{"iteration": e["iteration"], "child": e["code_hash"], "parent": e["parent"],
             "delta": round(e["accuracy"] - acc[e["parent"]], 4),
             "same": digest[e["code_hash"]] is not None and digest[e["code_hash"]] == digest[e["parent"]]}
            for e in children]
    same = [r for r in rows if r["same"]]
    report = {"arm": args.arm, "children": len(rows), "same_as_parent": len(same),
              "same_with_equal_accuracy": sum(r["delta"] == 0 for r in same),
              "different_with_equal_accuracy": sum(r["delta"] == 0 and not r["same"] for r in rows),
              "no_digest": sum(digest[a] is None for a in digest), "rows": rows}
    # Any two designs of the arm, child or not: the epochs a cache by digest would have saved.
    first: dict[str, str] = {}
    repeats = []
    for e in records:
        d = digest.get(e["code_hash"]) if e.get("status") == "ok" else None
        if d is not None and first.setdefault(d, e["code_hash"]) != e["code_hash"]:
            repeats.append({"iteration": e["iteration"], "design": e["code_hash"], "same_as": first[d],
                            "equal_accuracy": acc[e["code_hash"]] == acc[first[d]]})
    report["repeats"] = repeats
    for r in rows:
        print(f"iteration {r['iteration']:3d}  {'SAME ' if r['same'] else 'other'}  change {r['delta']:+.4f}")
    print(f"{args.arm}: {len(same)} of {len(rows)} valid children compute what their parent computes "
          f"({report['same_with_equal_accuracy']} of them trained to exactly its accuracy); "
          f"{report['different_with_equal_accuracy']} other children matched their parent's accuracy; "
          f"{report['no_digest']} designs without a digest")
    print(f"{args.arm}: {len(repeats)} of {len(acc)} valid designs compute what an earlier one computes "
          f"({sum(r['equal_accuracy'] for r in repeats)} of them with its accuracy)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
