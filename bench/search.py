"""Does the search learn? Arms of the same LLM, data and per-step seeds, compared at equal LLM calls.

Arms (`loop.search`): `parents` (each design one change to a parent drawn from the run's archive),
`improver` (the Prompt Improver steering fresh designs from the history window), `independent`
(the no-feedback baseline: the same generator prompt every time, no history, no improver, no parent)
and `drawn` (`parents` with each change drawn from the parent edits, not chosen by the improver: what
the improver's call is worth).
Each arm is its own run in its own home under --root (its own store, so no arm gets another's cache
hits; models and datasets are shared). Arms advance in chunks, the one with the fewest LLM calls
first, so a run stopped at any point compares arms at about equal cost; every run resumes exactly,
so the benchmark can be continued across sessions by running the same command again. With --state
FILE the arms' homes (stores, traces, checkpoints) are also saved to FILE (tar.gz) after every chunk
and restored from it into a root without them: the benchmark then continues on a fresh machine. Arms may
advance in separate processes (separate roots and state files); `--report-only` with every state file
reports them together.

Reported per arm, from the traces and the stores: best-so-far and running mean of valid designs per
iteration and per LLM call (plotted), the mean accuracy of valid designs in the last half with a 95%
interval, the valid rate with its 95% Wilson interval, niches filled, seconds per iteration. The
headline compares arms at the smallest LLM-call count any arm reached. Every design carries its
screen accuracy (evaluator.screen_fraction), so the cascade is replayed on each arm: how many designs
its bar would have stopped, the training seconds saved, and whether it would have cut a final top design.

Run: .venv/bin/python -m bench.search --iterations 60 [--calls C] [--arms parents,independent] [--chunk 5]
     [--model qwen2.5-coder-1.5b] [--root ~/.nasgraph/bench-search] [--state FILE.tgz ...] [--report-only]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import tarfile
from pathlib import Path

from nasgraph.config import load_config
from nasgraph.graph.trace import read_events
from nasgraph.paths import RunPaths
from nasgraph.tools import archive
from nasgraph.tools.cascade import Screened, replay, trained_screen
from nasgraph.tools.store import Store

# Each arm's loop settings; `drawn` is `parents` with the change drawn instead of asked of the improver.
ARMS = {"parents": {"search": "parents"}, "improver": {"search": "improver"},
        "independent": {"search": "independent"}, "drawn": {"search": "parents", "parent_move": "drawn"}}
BASELINE = "independent"  # the arm every other is measured against: the same LLM without feedback


def _config(root: Path, arm: str, args: argparse.Namespace):
    base = load_config()
    return load_config(home=root / arm, models_dir=base.models_dir, data_dir=base.data_dir,
                       llm={"model": args.model, "threads": args.llm_threads},
                       loop={**ARMS[arm], "dataset": args.dataset},
                       evaluator={"threads": args.threads})


def _events(cfg, arm: str) -> list[dict]:
    return list(read_events(RunPaths(cfg.runs_dir / arm).trace))


def llm_calls(events: list[dict]) -> int:
    return sum(1 for e in events if e.get("prompt"))


def restore(root: Path, state: Path) -> bool:
    """Unpack a saved benchmark into `root` when the root holds none of its arms yet; True if it did. Never
    replaces an arm: a root's own arm is newer than any saved copy. Several states (arms advanced by separate
    processes, each in its own root) unpack side by side into one root for the report."""
    if not state.is_file():
        return False
    with tarfile.open(state) as tar:
        if any((root / top).exists() for top in {m.name.split("/")[0] for m in tar.getmembers()}):
            return False
        root.mkdir(parents=True, exist_ok=True)
        tar.extractall(root, filter="data")
    return True


def snapshot(root: Path, state: Path, arms: list[str]) -> None:
    """Save the arms' homes, between chunks (no run is writing), atomically: these arms and every other arm
    the root holds, so advancing one arm never drops the others from the saved state."""
    tmp = state.with_name(state.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for arm in dict.fromkeys([*arms, *ARMS]):
            if (root / arm).is_dir():
                tar.add(root / arm, arcname=arm)
    tmp.replace(state)


def advance(root: Path, args: argparse.Namespace) -> None:
    from nasgraph.agents.handle import open_llm
    from nasgraph.graph.run import run_loop

    arms = args.arms.split(",")
    llm = None  # one model for every arm (their LLM settings are the same), loaded when first needed
    while True:
        done = {}
        for arm in arms:
            events = _events(_config(root, arm, args), arm)
            iterations = sum(e["node"] == "record" for e in events)
            if iterations < args.iterations or llm_calls(events) < args.calls:
                done[arm] = (llm_calls(events), iterations)
        if not done:
            return
        arm = min(done, key=lambda a: done[a])  # the arm that has spent the fewest LLM calls goes next
        cfg = _config(root, arm, args)
        llm = llm or open_llm(cfg)
        target = done[arm][1] + args.chunk
        if done[arm][1] < args.iterations:
            target = min(args.iterations, target)
        # One seed key for every arm: step k of each arm samples with the same seed.
        summary = run_loop(cfg, llm, run_id=arm, iterations=target, seed_key="bench-search")
        print(f"{arm}: {summary['iterations']} iterations, best {summary['best_accuracy']}", flush=True)
        if args.state:  # one file when advancing (main checks)
            snapshot(root, args.state[0], arms)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 3), round(centre + half, 3)


def mean_interval(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """The mean and its 95% interval (Student's t: a handful of seeds would be overstated by 1.96)."""
    from scipy.stats import t

    if not values:
        return None, None, None
    m = statistics.fmean(values)
    if len(values) < 2:
        return round(m, 4), None, None
    half = float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return round(m, 4), round(m - half, 4), round(m + half, 4)


def difference(a: list[float], b: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean of `a` minus mean of `b` with its 95% interval (Welch: the arms' spreads differ). An interval that
    holds 0 is a difference inside the noise."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return None, None, None
    ci = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return round(statistics.fmean(a) - statistics.fmean(b), 4), round(float(ci.low), 4), round(float(ci.high), 4)


def lineage(events: list[dict]) -> dict:
    """Children against their parents: how many valid children beat the design they were built from, and
    the mean accuracy change with its 95% interval (what a parent search must get right)."""
    acc = {e["code_hash"]: e.get("accuracy") for e in events
           if e["node"] == "record" and e.get("status") == "ok" and e.get("code_hash")}
    deltas = [e["accuracy"] - acc[e["parent"]] for e in events
              if e["node"] == "record" and e.get("status") == "ok" and e.get("accuracy") is not None
              and acc.get(e.get("parent")) is not None]
    better = sum(d > 0 for d in deltas)
    return {"children": len(deltas), "better": better, "better_95": wilson(better, len(deltas)),
            "delta": mean_interval(deltas)}


def origins(events: list[dict]) -> dict:
    """Valid designs by origin: `fresh` (no parent; in the parents arms written with the history window and
    the best design in the prompt, in the independent arm with neither) and `child` (one change to a parent):
    how many, their mean with its 95% interval, the best. Tells which half of a parents search finds its best."""
    out = {}
    for kind in ("fresh", "child"):
        accs = [e["accuracy"] for e in events if e["node"] == "record" and e.get("status") == "ok"
                and e.get("accuracy") is not None and bool(e.get("parent")) == (kind == "child")]
        out[kind] = {"n": len(accs), "mean": mean_interval(accs), "best": max(accs, default=None)}
    return out


def analyse(root: Path, args: argparse.Namespace) -> dict:
    arms = {}
    for arm in args.arms.split(","):
        cfg = _config(root, arm, args)
        events = _events(cfg, arm)
        if not events:
            continue
        rows, calls, best, accs = [], 0, None, []
        for e in events:
            calls += bool(e.get("prompt"))
            if e["node"] != "record":
                continue
            acc = e.get("accuracy") if e.get("status") == "ok" else None
            if acc is not None:
                accs.append(acc)
                best = acc if best is None else max(best, acc)
            rows.append({"iteration": e["iteration"], "calls": calls, "status": e.get("status"), "accuracy": acc,
                         "best": best, "running_mean": round(statistics.fmean(accs), 4) if accs else None})
        n = len(rows)
        fresh = [r for r in rows if r["status"] != "duplicate"]
        valid = sum(r["status"] == "ok" for r in fresh)
        half = [r["accuracy"] for r in rows[n // 2:] if r["accuracy"] is not None]
        with Store(cfg.store_path) as store:
            evals = store.evaluations_for_run(arm)
        ok = [archive.Design(x.arch_id, x.accuracy, x.params, x.flops, x.iteration or 0)
              for x in evals if x.status == "ok" and x.params and x.flops]
        screened = [(Screened(x.accuracy, s["accuracy"]), x.seconds.get("train", 0.0), s["seconds"])
                    for x in evals if (s := trained_screen(x))]
        seconds = sum(e.get("seconds", 0.0) for e in events)
        arms[arm] = {"iterations": n, "llm_calls": calls, "best": best, "valid": valid, "fresh": len(fresh),
                     "valid_rate": round(valid / max(1, len(fresh)), 3), "valid_rate_95": wilson(valid, len(fresh)),
                     "mean_last_half": mean_interval(half), "last_half": half, "niches": len(archive.elites(ok)),
                     "seconds_per_iteration": round(seconds / max(1, n), 1),
                     # The cascade replayed on designs trained without it (run config: loop.cascade off).
                     "cascade": dataclasses.asdict(replay(screened, top=5, margin=0.05)),
                     "lineage": lineage(events), "origins": origins(events), "curve": rows}
    if arms:
        budget = min(a["llm_calls"] for a in arms.values())
        for a in arms.values():
            upto = [r for r in a["curve"] if r["calls"] <= budget]
            valid = [r["accuracy"] for r in upto if r["accuracy"] is not None]
            half = valid[len(valid) // 2:]
            a["at_equal_calls"] = {"calls": budget, "iterations": len(upto), "best": max(valid, default=None),
                                   "mean_last_half": mean_interval(half), "last_half": half}
    if BASELINE in arms:  # each arm's mean of the last half against the no-feedback baseline's
        base = arms[BASELINE]
        for arm, a in arms.items():
            if arm != BASELINE:
                a["vs_baseline"] = difference(a["last_half"], base["last_half"])
                a["at_equal_calls"]["vs_baseline"] = difference(a["at_equal_calls"]["last_half"],
                                                                base["at_equal_calls"]["last_half"])
    return arms


def plot(arms: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, a in arms.items():
        xs = [r["calls"] for r in a["curve"]]
        axes[0].plot(xs, [r["best"] for r in a["curve"]], label=arm)
        axes[1].plot(xs, [r["running_mean"] for r in a["curve"]], label=arm)
    for ax, title in zip(axes, ("best so far", "running mean of valid designs")):
        ax.set_title(title)
        ax.set_xlabel("LLM calls")
        ax.set_ylabel("one-epoch accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--arms", default="parents,independent")
    ap.add_argument("--chunk", type=int, default=5)
    ap.add_argument("--calls", type=int, default=0,
                    help="also advance each arm until it has spent this many LLM calls (equal calls at the end)")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--threads", type=int, default=2, help="training threads")
    ap.add_argument("--llm-threads", dest="llm_threads", type=int, default=2)
    ap.add_argument("--root", type=Path, default=load_config().home / "bench-search")
    ap.add_argument("--state", type=Path, action="append", default=[],
                    help="save the arms here after every chunk; restore from it into a root without its arms. Repeat "
                         "it with --report-only to report arms saved by separate processes together")
    ap.add_argument("--report-only", dest="report_only", action="store_true")
    args = ap.parse_args()
    for arm in args.arms.split(","):
        if arm not in ARMS:
            ap.error(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    if len(args.state) > 1 and not args.report_only:
        ap.error("advancing saves to one --state file; give several only with --report-only")
    for state in args.state:
        if restore(args.root, state):
            print(f"restored the arms from {state} into {args.root}", flush=True)
    if not args.report_only:
        advance(args.root, args)
    arms = analyse(args.root, args)
    args.root.mkdir(parents=True, exist_ok=True)
    (args.root / "search.json").write_text(json.dumps(arms, indent=1))
    if arms:
        plot(arms, args.root / "search.png")
    print(f"{'arm':<12} {'iters':>5} {'calls':>5} {'best':>7} {'mean last half (95%)':>26} {'valid (95%)':>20} "
          f"{'niches':>6} {'s/iter':>6}")
    for arm, a in arms.items():
        m, lo, hi = a["mean_last_half"]
        mean = f"{m} ({lo}-{hi})" if lo is not None else str(m)
        best = f"{a['best']:.4f}" if a["best"] is not None else "-"
        print(f"{arm:<12} {a['iterations']:>5} {a['llm_calls']:>5} {best:>7} {mean:>26} "
              f"{a['valid_rate']:>6} {str(a['valid_rate_95']):>13} {a['niches']:>6} {a['seconds_per_iteration']:>6}")
    if arms:
        eq = {arm: a["at_equal_calls"] for arm, a in arms.items()}
        print(f"\nat equal LLM calls ({next(iter(eq.values()))['calls']}): " + "; ".join(
            f"{arm} best {e['best']} mean of last half {e['mean_last_half'][0]} over {e['iterations']} iterations"
            for arm, e in eq.items()))
    for arm, a in arms.items():
        if "vs_baseline" not in a:
            continue
        whole = f"over {a['iterations']} vs {arms[BASELINE]['iterations']} iterations"
        parts = []
        for label, (m, lo, hi) in ((whole, a["vs_baseline"]), ("at equal calls", a["at_equal_calls"]["vs_baseline"])):
            if m is not None:
                parts.append(f"{label} {m:+.4f} ({lo:+.4f} to {hi:+.4f})" + (" inside the noise" if lo <= 0 <= hi else ""))
        print(f"mean of the last half, {arm} minus {BASELINE}: " + "; ".join(parts))
    for arm, a in arms.items():
        c = a["cascade"]
        print(f"cascade replayed on {arm} (top 5, margin 0.05): {c['cut']} of {c['trained']} designs stopped at the "
              f"screen, {c['saved_s']:.0f} of {c['train_s']:.0f} training seconds saved; final top-5 ranks cut: "
              f"{c['top_cut'] or 'none'}")
    for arm, a in arms.items():
        lin = a["lineage"]
        if lin["children"]:
            m, lo, hi = lin["delta"]
            print(f"children of {arm}: {lin['better']} of {lin['children']} valid children beat their parent "
                  f"{lin['better_95']}; accuracy change {m:+.4f}" + (f" ({lo:+.4f} to {hi:+.4f})" if lo is not None else ""))
    for arm, a in arms.items():
        print(f"valid designs of {arm} by origin: " + "; ".join(
            f"{kind} {o['n']}, mean {o['mean'][0]}" + (f" ({o['mean'][1]}-{o['mean'][2]})" if o["mean"][1] else "")
            + f", best {o['best']}" for kind, o in a["origins"].items() if o["n"]))
    print(f"\nwrote {args.root / 'search.json'} and {args.root / 'search.png'}")


if __name__ == "__main__":
    main()
