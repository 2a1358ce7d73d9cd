"""The hyperparameter agent against optuna's TPE and random search, at equal trial budgets.

tabular  LEMUR's recorded runs as a lookup table (nasgraph.tools.hpo.tabular): a seeded draw of
         series (one model on one dataset at epoch 1 with at least --min-configs distinct recorded
         settings, one series per model), --seeds searches per sampler and series, --trials each;
         a proposal is answered by the nearest recorded run, so nothing trains. Regret: the best
         recorded accuracy of the series minus the best the search found.
         TPE and random also run on a wider draw (--wide-series x --wide-seeds), which costs seconds.
live     Fashion-MNIST through the sandboxed Evaluator: the reference models x --trials per sampler,
         one epoch each. No table to look up, so regret is against the best accuracy any sampler found
         for that architecture in this run.

Figures: best-found accuracy and regret, means over series (each series' seeds averaged first) with
95% t-intervals, the paired regret difference to TPE with its interval, wins/ties/losses against
TPE per search, and for the agent how its replies were read (fallbacks, repeats, clamped values)
and its seconds per proposal. Each search is an optuna study in SQLite under --run-dir (default
<home>/runs/bench-hpo/<part>), so a killed benchmark resumes where it stopped.

Run: nice -n 19 .venv/bin/python -m bench.hpo tabular [--series 12] [--seeds 2] [--trials 10] [--model M] [--prior]
     nice -n 19 .venv/bin/python -m bench.hpo live [--trials 12] [--seeds 1] [--json docs/bench/F.json]
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from nasgraph.agents.hpo_agent import Architecture, LLMSampler
from nasgraph.config import default_home, load_config
from nasgraph.tools.hpo import TPE, Random, Sampler, StudyResult, run_study, sqlite_storage
from nasgraph.tools.hpo import tabular as tab
from nasgraph.tools.hpo.prior import Prior, PriorFirst, transfer_prior
from nasgraph.tools.lemur import lemur_dir

SAMPLERS = ("llm", "tpe", "random")
PRIOR_SAMPLERS = ("llm+prior", "tpe+prior")  # with --prior: told / tried first LEMUR's portfolio
START = time.perf_counter()
REFERENCES = ("tiny_cnn", "small_resnet", "lemur_hooks")


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for a single value)."""
    from scipy import stats

    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    return m, float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def _per_unit(rows: list[dict], sampler: str, key: str) -> dict[str, float]:
    """A sampler's `key` averaged over seeds, per unit (series or architecture)."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["sampler"] == sampler:
            by.setdefault(r["unit"], []).append(r[key])
    return {u: statistics.fmean(v) for u, v in by.items()}


def summarise(rows: list[dict], samplers: tuple[str, ...]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    tpe_regret = _per_unit(rows, "tpe", "regret")
    tpe_rows = {(r["unit"], r["seed"]): r["best"] for r in rows if r["sampler"] == "tpe"}
    for s in samplers:
        best, regret = _per_unit(rows, s, "best"), _per_unit(rows, s, "regret")
        if not best:
            continue
        units = sorted(best)
        entry: dict = {"units": len(units), "searches": sum(r["sampler"] == s for r in rows),
                       "best": t_interval([best[u] for u in units]), "regret": t_interval([regret[u] for u in units])}
        shared = [u for u in units if u in tpe_regret]
        if s != "tpe" and shared:
            entry["regret_minus_tpe"] = t_interval([regret[u] - tpe_regret[u] for u in shared])
            pairs = [(r["best"], tpe_rows[(r["unit"], r["seed"])]) for r in rows
                     if r["sampler"] == s and (r["unit"], r["seed"]) in tpe_rows]
            entry["vs_tpe"] = {"wins": sum(a > b + 1e-9 for a, b in pairs), "ties": sum(abs(a - b) <= 1e-9 for a, b in pairs),
                               "losses": sum(a < b - 1e-9 for a, b in pairs)}
        llm = [r for r in rows if r["sampler"] == s and "llm" in r]
        if llm:
            calls = sum(r["llm"]["calls"] for r in llm)
            entry["llm"] = {k: sum(r["llm"][k] for r in llm) for k in ("calls", "fallback", "repeated", "clamped")}
            entry["llm"]["seconds_per_call"] = sum(r["llm"]["seconds"] for r in llm) / max(calls, 1)
        out[s] = entry
    return out


def print_table(title: str, summary: dict[str, dict]) -> None:
    print(f"\n{title}")
    head = (f"{'sampler':8} {'units':>5} {'searches':>8} {'best found (95% CI)':>22} {'regret (95% CI)':>20} "
            f"{'regret/TPE':>10} {'regret - TPE (95% CI)':>23} {'W/T/L vs TPE':>13}")
    print(head)
    print("-" * len(head))
    tpe = summary.get("tpe", {}).get("regret", (float("nan"), 0))[0]
    for s, e in summary.items():
        (b, bh), (r, rh) = e["best"], e["regret"]
        ratio = f"{r / tpe:10.2f}" if tpe > 0 else f"{'–':>10}"
        diff = f"{e['regret_minus_tpe'][0]:+.4f} ± {e['regret_minus_tpe'][1]:.4f}" if "regret_minus_tpe" in e else "–"
        wtl = "{wins}/{ties}/{losses}".format(**e["vs_tpe"]) if "vs_tpe" in e else "–"
        print(f"{s:8} {e['units']:5d} {e['searches']:8d} {b:13.4f} ± {bh:.4f} {r:11.4f} ± {rh:.4f} {ratio} "
              f"{diff:>23} {wtl:>13}")
    for s, e in summary.items():
        if "llm" in e:
            c = e["llm"]
            print(f"{s}: {c['calls']} proposals, {c['fallback']} unusable replies (random fallback), {c['repeated']} "
                  f"repeats moved, {c['clamped']} with values clamped into the space; "
                  f"{c['seconds_per_call']:.1f} s per proposal")


def _llm_counts(result: StudyResult) -> dict:
    llm = [t for t in result.trials if "parse_mode" in t.attrs]
    return {"calls": len(llm), "fallback": sum(t.attrs["parse_mode"] == "fallback" for t in llm),
            "repeated": sum(bool(t.attrs.get("repeated")) for t in llm),
            "clamped": sum(bool(t.attrs.get("clamped")) for t in llm),
            "seconds": sum(float(t.attrs.get("llm_seconds", 0.0)) for t in llm)}


def search(sampler_name: str, objective, space, arch: Architecture, trials: int, seed: int, storage, study: str,
           llm_at: Callable | None, prior: Prior | None = None) -> StudyResult:
    """`llm+prior` is the agent told LEMUR's portfolio; `tpe+prior` tries the portfolio first, then TPE."""
    base, _, with_prior = sampler_name.partition("+")
    sampler: Sampler
    if base == "llm":
        sampler = LLMSampler(llm_at, arch, trials, prior if with_prior else None)
    else:
        sampler = TPE() if base == "tpe" else Random()
        if with_prior:
            sampler = PriorFirst(sampler, prior)
    return run_study(objective, space, sampler, trials, name=study, storage=storage, seed=seed)


def _samplers(a, llm_at: Callable | None) -> tuple[str, ...]:
    names = SAMPLERS + (PRIOR_SAMPLERS if a.prior else ())
    return tuple(s for s in names if not s.startswith("llm") or llm_at is not None)


def _storages(run_dir: Path, samplers: tuple[str, ...]) -> dict:
    return {s: sqlite_storage(run_dir / f"{s}.sqlite") for s in samplers}


def tabular_part(a, llm_at: Callable | None) -> dict:
    root = lemur_dir(a.home)
    run_dir = Path(a.run_dir or Path(a.home) / "runs" / "bench-hpo" / "tabular")
    series = tab.draw(root, a.series, seed=a.draw_seed, min_configs=a.min_configs)
    samplers = _samplers(a, llm_at)
    storages = _storages(run_dir, samplers)
    print(f"tabular: {len(series)} series (>= {a.min_configs} distinct recorded settings at epoch 1), "
          f"{a.seeds} seed(s), {a.trials} trials per search; studies in {run_dir}")
    rows, seconds = [], {s: 0.0 for s in samplers}
    for i, s in enumerate(series, 1):
        if _out_of_time(a):
            print(f"  --max-minutes reached: {i - 1} of {len(series)} series done (the same command resumes)")
            break
        arch = Architecture(name=s.model, dataset=s.dataset, summary=s.describe())
        # The series' own model is left out of its prior: the search never sees its own records.
        prior = transfer_prior(root, s.dataset, exclude=s.model) if a.prior else None
        for seed in range(a.seeds):
            for name in samplers:
                t = time.perf_counter()
                res = search(name, tab.TabularOracle(s), s.space, arch, a.trials, seed, storages[name],
                             f"{s.model}@{s.dataset}-seed{seed}", llm_at, prior)
                seconds[name] += time.perf_counter() - t
                row = {"sampler": name, "unit": f"{s.model}@{s.dataset}", "seed": seed, "best": res.best_accuracy,
                       "regret": s.best - res.best_accuracy, "recorded_best": s.best, "points": len(s.points)}
                if name.startswith("llm"):
                    row["llm"] = _llm_counts(res)
                rows.append(row)
        done = {n: statistics.fmean(r["regret"] for r in rows if r["sampler"] == n) for n in samplers}
        print(f"  [{i}/{len(series)}] {s.model} on {s.dataset}: {len(s.points)} points, best {s.best:.4f}; "
              "mean regret so far " + ", ".join(f"{n} {v:.4f}" for n, v in done.items()), flush=True)
    summary = summarise(rows, samplers)
    print_table(f"tabular: {len(series)} LEMUR series x {a.seeds} seeds x {a.trials} trials", summary)
    wide = None
    if a.wide_series:
        wide_series = tab.draw(root, a.wide_series, seed=a.draw_seed + 1, min_configs=a.min_configs)
        wrows = []
        for s in wide_series:
            for seed in range(a.wide_seeds):
                for name in ("tpe", "random"):
                    res = search(name, tab.TabularOracle(s), s.space, Architecture(name=s.model, dataset=s.dataset),
                                 a.trials, seed, None, "wide", None)
                    wrows.append({"sampler": name, "unit": f"{s.model}@{s.dataset}", "seed": seed,
                                  "best": res.best_accuracy, "regret": s.best - res.best_accuracy})
        wide = {"series": len(wide_series), "seeds": a.wide_seeds, "summary": summarise(wrows, ("tpe", "random"))}
        print_table(f"tabular, TPE and random only: {len(wide_series)} series x {a.wide_seeds} seeds x {a.trials} "
                    "trials (in-memory studies)", wide["summary"])
    return {"series": [{"model": s.model, "dataset": s.dataset, "points": len(s.points), "best": s.best,
                        "space": s.space.names} for s in series],
            "seeds": a.seeds, "trials": a.trials, "min_configs": a.min_configs, "rows": rows, "summary": summary,
            "seconds": seconds, "wide": wide}


def live_part(a, llm_at: Callable | None) -> dict:
    from nasgraph.tools.evaluator import Evaluator
    from nasgraph.tools.evaluator.policy_handed import HANDED_SIDES, NO_BUDGET
    from nasgraph.tools.evaluator.reference_models import reference_source
    from nasgraph.tools.hpo.live import LiveObjective, live_space

    cfg = load_config(home=a.home, evaluator={"threads": a.threads})
    run_dir = Path(a.run_dir or Path(a.home) / "runs" / "bench-hpo" / "live")
    samplers = _samplers(a, llm_at)
    prior = transfer_prior(lemur_dir(a.home), a.dataset) if a.prior else None
    storages = _storages(run_dir, samplers)
    print(f"live: {', '.join(REFERENCES)} on {a.dataset}, {a.seeds} seed(s), {a.trials} one-epoch trials per "
          f"search, {a.threads} training thread(s); studies in {run_dir}")
    rows, seconds = [], {s: 0.0 for s in samplers}
    with Evaluator.from_config(cfg.evaluator, cfg.data_dir, device="cpu", workers=1) as evaluator:
        for ref in REFERENCES[:a.architectures]:
            code = reference_source(ref)
            space = live_space(code)
            arch = Architecture(name=ref, dataset=a.dataset, summary=_live_summary(ref, code))
            if _out_of_time(a):  # checked per architecture: a started one finishes with every sampler
                print(f"  --max-minutes reached before {ref} (the same command resumes)")
                break
            for seed in range(a.seeds):
                for name in samplers:
                    t = time.perf_counter()
                    objective = LiveObjective(evaluator, cfg.evaluator, code, a.dataset, origin="handed",
                                              image_sides=HANDED_SIDES, max_params=NO_BUDGET, max_flops=NO_BUDGET)
                    res = search(name, objective, space, arch, a.trials, seed, storages[name],
                                 f"{ref}@{a.dataset}-seed{seed}", llm_at, prior)
                    seconds[name] += time.perf_counter() - t
                    row = {"sampler": name, "unit": ref, "seed": seed, "best": res.best_accuracy,
                           "failed": sum(t.accuracy is None for t in res.trials),
                           "trials": [{"params": t.params, "accuracy": t.accuracy, "status": t.status,
                                       "source": t.source, "seconds": t.seconds} for t in res.trials]}
                    if name.startswith("llm"):
                        row["llm"] = _llm_counts(res)
                    rows.append(row)
                    print(f"  {ref} seed {seed} {name}: best {res.best_accuracy:.4f} "
                          f"({row['failed']} failed) in {time.perf_counter() - t:.0f} s", flush=True)
    # No table to look up: regret against the best any search found for that architecture in this run.
    top = {u: max(r["best"] for r in rows if r["unit"] == u) for u in {r["unit"] for r in rows}}
    for r in rows:
        r["regret"] = top[r["unit"]] - r["best"]
    rows = _complete_units(rows, samplers, a.seeds)
    summary = summarise(rows, samplers)
    print_table(f"live: {len({r['unit'] for r in rows})} architecture(s) x {a.seeds} seed(s) x {a.trials} trials on {a.dataset} "
                "(regret vs the best found by any sampler)", summary)
    return {"architectures": list(REFERENCES), "dataset": a.dataset, "seeds": a.seeds, "trials": a.trials,
            "rows": rows, "summary": summary, "seconds": seconds}


def _out_of_time(a) -> bool:
    return a.max_minutes is not None and time.perf_counter() - START > 60 * a.max_minutes


def _complete_units(rows: list[dict], samplers: tuple[str, ...], seeds: int) -> list[dict]:
    """Only units every sampler finished with every seed: a run stopped by --max-minutes compares like with like."""
    count: dict[str, int] = {}
    for r in rows:
        count[r["unit"]] = count.get(r["unit"], 0) + 1
    return [r for r in rows if count[r["unit"]] == len(samplers) * seeds]


def _live_summary(name: str, code: str) -> str:
    from nasgraph.agents.code_generator import layer_kinds

    kinds = layer_kinds(code)
    return name + (f", built from {kinds}" if kinds else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["tabular", "live"])
    ap.add_argument("--trials", type=int, help="trials per search (default: tabular 10, live 12)")
    ap.add_argument("--seeds", type=int, help="searches per sampler and unit (default: tabular 2, live 1)")
    ap.add_argument("--series", type=int, default=12, help="tabular: LEMUR series in the draw")
    ap.add_argument("--min-configs", type=int, default=20, help="tabular: distinct recorded settings a series needs")
    ap.add_argument("--draw-seed", type=int, default=0)
    ap.add_argument("--wide-series", type=int, default=100, help="tabular: series for TPE and random alone (0: none)")
    ap.add_argument("--wide-seeds", type=int, default=10)
    ap.add_argument("--dataset", default="fashion-mnist", help="live: dataset")
    ap.add_argument("--architectures", type=int, default=len(REFERENCES), help="live: the first N reference models")
    ap.add_argument("--max-minutes", type=float, help="start no new search after this; finished ones are summarised")
    ap.add_argument("--threads", type=int, default=2, help="live: training threads")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="the agent's LLM (embedded name or GGUF path)")
    ap.add_argument("--no-llm", action="store_true", help="TPE and random only")
    ap.add_argument("--prior", action="store_true",
                    help="also llm+prior and tpe+prior: LEMUR's portfolio for the dataset (other models' runs)")
    ap.add_argument("--home", type=Path, default=default_home())
    ap.add_argument("--run-dir", help="folder of the studies' SQLite files (the same folder resumes)")
    ap.add_argument("--json", help="write the figures here too, e.g. docs/bench/2026-11-27-hpo-tabular.json")
    a = ap.parse_args()
    # `timeout` stops a run with SIGTERM: exit through the `with Evaluator` so its warm parent goes too
    # (the studies keep every finished trial; the same command resumes).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    a.trials = a.trials or (10 if a.part == "tabular" else 12)
    a.seeds = a.seeds or (2 if a.part == "tabular" else 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    llm_at, model = None, None
    if not a.no_llm:
        from nasgraph.agents.handle import open_llm

        cfg = load_config(home=a.home, llm={"model": a.model, "max_tokens": 160})
        handle = open_llm(cfg)
        model = handle.model

        def llm_at(step: int):
            return handle.at_step(step)

    start = time.perf_counter()
    figures = (tabular_part if a.part == "tabular" else live_part)(a, llm_at)
    wall = time.perf_counter() - start
    print(f"\nwall time {wall / 60:.1f} min" + (f"; agent LLM {model}" if model else ""))
    if a.json:
        out = {"part": a.part, "llm": model, "wall_s": round(wall, 1), **figures}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
