"""Children written as edits, replayed under another edit system prompt: do more of their blocks apply?

Every child the search arms asked for as SEARCH/REPLACE edits (`code_generator.child_edit` calls in the
arms' traces) is asked again, with the same user prompt (history window included), the same model and the
same seed as in the run, under the system prompt in `--system` (default: the project's current one). Each
reply's blocks are sorted against the parent code the model was shown: applied (matched, changed it), copy
(matched, replaced by the same lines), example (matched nothing, and is one of the system prompt's own example
blocks, copied), unmatched (the rest). A reply changes its parent when one block applied. The recorded reply
is the other half of each pair. Candidate prompts live in bench/edit_prompts/: `skeleton.md` (the format as
placeholders, no example code), `toy.md` (the example on a toy module shown in full, its lines in no parent).

Run: .venv/bin/python -m bench.edit_prompt [--root ~/.nasgraph/bench-search] [--arms parents,drawn]
     [--system prompts/code_generator.edit_system.md] [--limit N] [--recorded-only] [--json out.json]
(--recorded-only: sort the recorded replies' blocks under the current matcher, no LLM.)
"""
from __future__ import annotations

import argparse
import json
import re
import zlib
from collections import Counter
from pathlib import Path

from bench.search import wilson
from nasgraph.agents.edits import apply_edits, parse_edits
from nasgraph.agents.llm_call import call
from nasgraph.agents.prompts import PROJECT_DIR, RenderedPrompt
from nasgraph.config import load_config
from nasgraph.graph.trace import read_events
from nasgraph.paths import RunPaths

SEED_KEY = "bench-search"  # bench.search runs every arm under this key
_SHOWN = re.compile(r"The current module \(.*?\):\n```python\n(.*?)\n```", re.S)


def edit_calls(root: Path, arms: list[str]) -> list[dict]:
    """The recorded child-as-edits calls of `arms`, in order: arm, step, user prompt, reply."""
    calls = []
    for arm in arms:
        trace = RunPaths(root / arm / "runs" / arm).trace
        for e in read_events(trace):
            if e.get("node") == "generate" and e.get("prompt") == "code_generator.child_edit":
                calls.append({"arm": arm, "step": e["step"], "user": e["prompt_text"], "reply": e["reply"]})
    return calls


def shown_code(user: str) -> str:
    m = _SHOWN.search(user)
    if m is None:
        raise ValueError("no parent module in the user prompt")
    return m.group(1) + "\n"


def outcome(code: str, reply: str, examples: list[list[str]]) -> dict:
    """Counts of the reply's blocks by kind, and whether it changed the parent."""
    done = apply_edits(code, reply)
    example = sum(1 for e in done.missed if [s.strip() for s in e.search if s.strip()] in examples)
    return {"blocks": done.blocks, "applied": done.applied, "copy": done.copies, "example": example,
            "unmatched": len(done.missed) - example, "changed": done.applied > 0}


def example_blocks(system: str) -> list[list[str]]:
    return [[s.strip() for s in e.search if s.strip()] for e in parse_edits(system)]


def totals(rows: list[dict], side: str) -> dict:
    n = len(rows)
    k = sum(r[side]["changed"] for r in rows)
    blocks = Counter()
    for r in rows:
        blocks.update({key: r[side][key] for key in ("blocks", "applied", "copy", "example", "unmatched")})
    return {"replies": n, "changed": k, "changed_95": wilson(k, n), **blocks}


def main() -> None:
    base = load_config()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=base.home / "bench-search")
    ap.add_argument("--arms", default="parents,drawn")
    ap.add_argument("--system", type=Path, default=PROJECT_DIR / "code_generator.edit_system.md")
    ap.add_argument("--old-system", type=Path, default=PROJECT_DIR / "code_generator.edit_system.md",
                    help="the system prompt the recorded replies were written under (for its example blocks)")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N calls (0: all)")
    ap.add_argument("--recorded-only", dest="recorded_only", action="store_true",
                    help="only sort the recorded replies' blocks (no LLM call)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from nasgraph.agents.handle import open_llm

    calls = edit_calls(args.root, args.arms.split(","))
    if args.limit:
        calls = calls[: args.limit]
    if not calls:
        raise SystemExit(f"no child-as-edits calls in the traces of {args.arms} under {args.root}")
    old_examples = example_blocks(args.old_system.read_text(encoding="utf-8"))
    if args.recorded_only:
        summary = totals([{"recorded": outcome(shown_code(c["user"]), c["reply"], old_examples)} for c in calls],
                         "recorded")
        print(json.dumps(summary))
        return
    new_text = args.system.read_text(encoding="utf-8").strip() + "\n"
    system = RenderedPrompt("code_generator.edit_system", new_text, "replay")
    new_examples = example_blocks(new_text)
    cfg = load_config(models_dir=base.models_dir, data_dir=base.data_dir, llm={"model": args.model})
    llm = open_llm(cfg)
    key = zlib.crc32(SEED_KEY.encode()) % 1_000_003
    rows = []
    for c in calls:
        code = shown_code(c["user"])
        reply = call(llm.at_step(key + c["step"]), system, RenderedPrompt("code_generator.child_edit", c["user"], ""),
                     "code_generator")
        row = {"arm": c["arm"], "step": c["step"], "recorded": outcome(code, c["reply"], old_examples),
               "replayed": outcome(code, reply.text, new_examples), "same_reply": reply.text == c["reply"],
               "seconds": round(reply.seconds, 1), "tokens_out": reply.tokens_out, "reply": reply.text}
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("arm", "step", "recorded", "replayed", "same_reply", "seconds")}),
              flush=True)
    summary = {side: totals(rows, side) for side in ("recorded", "replayed")}
    both = Counter((r["recorded"]["changed"], r["replayed"]["changed"]) for r in rows)
    print(f"\n{'':<9} {'changed':>9} {'95%':>14} {'blocks':>7} {'applied':>8} {'copy':>5} {'example':>8} "
          f"{'unmatched':>10}")
    for side, s in summary.items():
        print(f"{side:<9} {s['changed']:>4}/{s['replies']:<4} {str(s['changed_95']):>14} {s['blocks']:>7} "
              f"{s['applied']:>8} {s['copy']:>5} {s['example']:>8} {s['unmatched']:>10}")
    print(f"pairs: changed in both {both[(True, True)]}, only recorded {both[(True, False)]}, "
          f"only replayed {both[(False, True)]}, neither {both[(False, False)]}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "system": str(args.system), "summary": summary,
                                         "pairs": {f"{a}-{b}": n for (a, b), n in both.items()}, "rows": rows},
                                        indent=1))


if __name__ == "__main__":
    main()
