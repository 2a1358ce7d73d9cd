"""The closed loop on the embedded model, measured: valid rates, duplicates, novelty, accuracy over the
run against its first five iterations, and seconds per iteration split into LLM / training / other.

    python -m bench.loop --model qwen2.5-coder-1.5b --dataset fashion-mnist --iterations 30
    python -m bench.loop --analyze RUN_ID          # figures of an existing (or resumed) run

Runs under the normal config (NASGRAPH_HOME etc.); the run id is printed so it can be resumed.
"""
from __future__ import annotations

import argparse
import json
import statistics

from nasgraph.config import load_config
from nasgraph.graph.run import RunPaths, run_loop
from nasgraph.graph.trace import read_events


def analyze(cfg, run_id: str, limit: int | None = None) -> dict:
    """Figures of a run from its trace; `limit` keeps its first N iterations only (then the seconds
    come from the trace's node timings instead of the checkpoint's totals)."""
    events = [e for e in read_events(RunPaths(cfg.runs_dir / run_id).trace)
              if limit is None or e["iteration"] <= limit]
    records = [e for e in events if e["node"] == "record"]
    fresh = [r for r in records if r["status"] != "duplicate"]
    ok = [r for r in records if r["status"] == "ok"]
    threshold = cfg.loop.novelty_threshold
    minhash_near = [r for r in ok if r.get("novelty") is not None and r["novelty"] < threshold]
    # MinHash compares code text; a design rewritten with other names but the same layers is caught
    # by its size instead: the same parameter and FLOP counts as an earlier valid design of the run.
    sizes = {e["iteration"]: (e.get("params"), e.get("flops")) for e in events
             if e["node"] == "evaluate" and e["status"] == "ok"}
    seen: set = set()
    same_size = []
    for r in ok:
        size = sizes.get(r["iteration"])
        if size in seen:
            same_size.append(r)
        seen.add(size)
    near = {r["iteration"] for r in minhash_near + same_size}

    def acc_stats(rows: list[dict]) -> dict:
        accs = [r["accuracy"] for r in rows if r["status"] == "ok" and r.get("accuracy") is not None]
        return {"n_valid": len(accs), "best": max(accs) if accs else None,
                "mean": round(statistics.mean(accs), 4) if accs else None}

    # Replies stopped at the token limit; runs traced before the `cut` flag count a reply of the
    # configured max_tokens as cut.
    replies = [e for e in events if e["node"] in ("generate", "repair")]
    cut = [e for e in replies if e.get("cut", (e.get("tokens_out") or 0) >= cfg.llm.max_tokens - 1)]
    # How many LLM repairs each valid iteration used: the valid share had max_repairs been k.
    repairs = _count(e["iteration"] for e in events if e["node"] == "repair")
    used = [repairs.get(r["iteration"], 0) for r in ok]
    most = max([cfg.loop.max_repairs, *used])
    n = len(records)
    if limit is None:
        stats = _state_stats(cfg, run_id)
        seconds = {k: stats.get(f"seconds_{k}", 0.0) for k in ("llm", "train", "other")}
    else:
        llm = sum(float(e.get("latency") or 0.0) for e in events)
        train = sum(sum(v for k, v in (e.get("stage_seconds") or {}).items() if k not in ("parse", "policy"))
                    for e in events if e["node"] == "evaluate")
        seconds = {"llm": llm, "train": train, "other": max(0.0, sum(e["seconds"] for e in events) - llm - train)}
    return {
        "run_id": run_id,
        "iterations": n,
        "valid_first_attempt": round(sum(r.get("first_status") == "ok" for r in fresh) / max(1, len(fresh)), 3),
        "valid_after_repair": round(len(ok) / max(1, len(fresh)), 3),
        "valid_within_k_repairs": {k: round(sum(u <= k for u in used) / max(1, len(fresh)), 3) for k in range(most + 1)},
        "duplicates": n - len(fresh),
        "rule_fixes": sum(e["node"] == "fix" for e in events),
        "llm_repairs": sum(e["node"] == "repair" for e in events),
        "replies_cut": f"{len(cut)}/{len(replies)}",
        "iterations_failed_after_a_cut": len({e["iteration"] for e in cut} - {r["iteration"] for r in ok}),
        "near_copies": len(near),
        "near_copy_share": round(len(near) / max(1, len(ok)), 3),
        "near_copies_minhash": len(minhash_near),
        "same_size_as_earlier": len(same_size),
        "novelty_median": statistics.median([r["novelty"] for r in ok if r.get("novelty") is not None] or [0]),
        "failures": _count(r["status"] for r in records if r["status"] != "ok"),
        "first_five": acc_stats(records[:5]),
        "whole_run": acc_stats(records),
        "seconds_per_iteration": {k: round(v / max(1, n), 2) for k, v in seconds.items()},
    }


def _count(items) -> dict:
    out: dict = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _state_stats(cfg, run_id: str) -> dict:
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(RunPaths(cfg.runs_dir / run_id).checkpoint)
    try:
        tup = SqliteSaver(conn).get_tuple({"configurable": {"thread_id": run_id}})
        return dict(tup.checkpoint["channel_values"].get("stats", {})) if tup else {}
    finally:
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--run-id")
    p.add_argument("--analyze", metavar="RUN_ID")
    p.add_argument("--first", type=int, help="with --analyze: only the run's first N iterations")
    p.add_argument("--rag", action="store_true")
    a = p.parse_args()
    cfg = load_config(llm={"model": a.model}, loop={"dataset": a.dataset}, rag={"enabled": a.rag})
    if a.analyze:
        print(json.dumps(analyze(cfg, a.analyze, a.first), indent=1))
        return
    from nasgraph.agents.handle import open_llm

    summary = run_loop(cfg, open_llm(cfg), run_id=a.run_id, iterations=a.iterations,
                       on_update=lambda node, u, s: print(f"[{s.get('iteration', 0)}] {node}", flush=True)
                       if node == "record" else None)
    print(json.dumps(summary))
    print(json.dumps(analyze(cfg, summary["run_id"]), indent=1))


if __name__ == "__main__":
    main()
