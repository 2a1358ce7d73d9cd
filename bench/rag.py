"""The closed loop with and without retrieval, side by side: same model, seed, dataset and iteration
budget; each arm in its own home (own store, so neither arm sees the other's designs as duplicates),
sharing the model and data caches. Prints valid rates and best/mean accuracy of both arms and the ratio
with/without.

    python -m bench.rag --model qwen2.5-coder-1.5b --dataset fashion-mnist --iterations 30

    python -m bench.rag --against RUN_ID    # a finished run of the normal home is the "without" arm

With `--against`, the "with" arm reuses that run's id, so every step draws the same LLM seed.
The "with" arm needs a block index: `--index DIR` (default: the normal home's, built by
`nasgraph index build`) is copied into its home; without one, an index of torchvision.models and
torchvision.ops is built first (about two minutes).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from nasgraph.config import load_config


def _config(name: str, root: Path, base, a: argparse.Namespace, rag: bool):
    return load_config(home=root / name, models_dir=base.models_dir, data_dir=base.data_dir,
                       llm={"model": a.model, "seed": a.seed}, evaluator={"seed": a.seed},
                       loop={"dataset": a.dataset, "iterations": a.iterations}, rag={"enabled": rag})


def _arm(cfg, llm, run_id: str, iterations: int) -> None:
    from nasgraph.graph.run import run_loop

    run_loop(cfg, llm, run_id=run_id, iterations=iterations)


def _prepare_index(source: Path, target_home: Path) -> None:
    from nasgraph.rag_index.build import build, default_targets
    from nasgraph.rag_index.index import BlockIndex

    target = target_home / "index" / "chroma"
    if target.exists():
        return
    if (source / "chroma.sqlite3").is_file():
        shutil.copytree(source, target)
        return
    print(f"no index at {source}: building one from torchvision (library blocks only)")
    cfg = load_config(home=target_home)
    targets, _ = default_targets(cfg, with_store=False)
    report = build(BlockIndex(target, create=True), targets)
    print(f"index: {report.executable}/{report.targets} executable, {report.prompt_ready} prompt-ready")


def _ratio(on, off):
    return round(on / off, 3) if isinstance(on, (int, float)) and isinstance(off, (int, float)) and off else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for both arms' homes (default: <home>/bench-rag-<time>)")
    p.add_argument("--index", help="block index folder to copy (default: <home>/index/chroma)")
    p.add_argument("--against", metavar="RUN_ID", help="a finished run of the normal home as the 'without' arm")
    a = p.parse_args()
    base = load_config()
    root = Path(a.out) if a.out else base.home / f"bench-rag-{time.strftime('%Y%m%d-%H%M%S')}"
    _prepare_index(Path(a.index) if a.index else base.index_dir / "chroma", root / "with")
    from bench.loop import analyze
    from nasgraph.agents.handle import open_llm

    off, on = _config("without", root, base, a, False), _config("with", root, base, a, True)
    llm = open_llm(off)  # one model for both arms: the LLM seeds itself per step, so the arms match
    if a.against:  # the finished run's first N iterations against N new ones with its seeds
        without = analyze(base, a.against, a.iterations)
        if without["iterations"] < a.iterations:
            raise SystemExit(f"run {a.against} has {without['iterations']} iterations, fewer than {a.iterations}")
        _arm(on, llm, a.against, a.iterations)
        results = {"without": without, "with": analyze(on, a.against)}
    else:
        _arm(off, llm, "bench-without", a.iterations)
        _arm(on, llm, "bench-with", a.iterations)
        results = {"without": analyze(off, "bench-without"), "with": analyze(on, "bench-with")}
    print(f"{'':22}{'without':>12}{'with':>12}{'with/without':>14}")
    for k in ("valid_first_attempt", "valid_after_repair", "duplicates", "near_copies"):
        off_v, on_v = results["without"][k], results["with"][k]
        print(f"{k:22}{off_v!s:>12}{on_v!s:>12}{_ratio(on_v, off_v)!s:>14}")
    for k in ("best", "mean"):
        off_v, on_v = results["without"]["whole_run"][k], results["with"]["whole_run"][k]
        print(f"{k + '_accuracy':22}{off_v!s:>12}{on_v!s:>12}{_ratio(on_v, off_v)!s:>14}")
    print(json.dumps({"root": str(root), **results}, default=str))


if __name__ == "__main__":
    main()
