"""`nasgraph` command line. Every known failure becomes one clear line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pydantic
from rich.console import Console

from nasgraph.config import Config, load_config
from nasgraph.errors import NasgraphError

EXIT_USAGE, EXIT_FAIL = 2, 1


class CLIError(NasgraphError):
    """A user-facing error; its message is printed as is."""


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if getattr(args, "home", None):
        o["home"] = Path(args.home)
    ev: dict[str, Any] = {}
    for key in ("threads", "time_budget_s", "max_params", "max_flops", "device", "workers"):
        if getattr(args, key, None) is not None:
            ev[key] = getattr(args, key)
    if getattr(args, "eval_backend", None):
        ev["backend"] = args.eval_backend
    if ev:
        o["evaluator"] = ev
    llm: dict[str, Any] = {k: getattr(args, k) for k in ("backend", "model") if getattr(args, k, None)}
    if llm:
        o["llm"] = llm
    loop: dict[str, Any] = {}
    for key in ("dataset", "image_size", "epochs", "iterations", "max_repairs", "max_fixes", "target_accuracy",
                "search", "child_format", "objective", "cascade", "in_flight"):
        if getattr(args, key, None) is not None:
            loop[key] = getattr(args, key)
    if loop:
        o["loop"] = loop
    if getattr(args, "rag", None) is not None:
        o["rag"] = {"enabled": args.rag}
    return o


def _prm(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("lr", args.lr), ("momentum", args.momentum), ("batch", args.batch),
                              ("dropout", args.dropout)) if v is not None}


# -- eval / reference ------------------------------------------------------------------------------
def _evaluate_files(cfg: Config, files: list[tuple[str, str]], prm: dict, origin: str, as_json: bool,
                    console: Console, handed: bool = False, budgets: dict | None = None,
                    run_id: str | None = None) -> int:
    """Evaluate files `evaluator.workers` at a time; results print in the order the files were given.
    Files with the same architecture go to one worker in turn, so it trains once and the rest are
    cache hits. `handed`: code a person wrote (its own policy, larger image sides when needed, no
    parameter or FLOP budget but the ones in `budgets`)."""
    from concurrent.futures import ThreadPoolExecutor

    from nasgraph.tools.candidate import Candidate
    from nasgraph.tools.evaluator import (
        EvalRequest,
        Evaluator,
        default_workers,
        main_thread_signals,
        static_check,
        training_recipe,
    )
    from nasgraph.tools.evaluator.harness import pick_device
    from nasgraph.tools.evaluator.policy_handed import HANDED_SIDES, NO_BUDGET
    from nasgraph.tools.hardware import hardware_info
    from nasgraph.tools.store import Store
    from nasgraph.views import outcome_table

    store = Store(cfg.store_path)
    device = str(pick_device(cfg.evaluator.device))
    hardware = hardware_info(cfg.evaluator.threads, device)
    prm = training_recipe(cfg.evaluator, prm)
    code_origin = "handed" if handed else "generated"
    extra = {"origin": code_origin, "image_sides": HANDED_SIDES, "max_params": NO_BUDGET, "max_flops": NO_BUDGET,
             **(budgets or {})} if handed else {}
    # Handed-in files are cached apart from generated code: another policy and image sides can
    # change their outcome. The model still receives `prm` alone.
    cache_prm = {**prm, "origin": code_origin, "image_sides": HANDED_SIDES, **(budgets or {})} if handed else prm
    groups: dict[str, list[int]] = {}
    for i, (_, code) in enumerate(files):
        groups.setdefault(Candidate.of(code).arch_id, []).append(i)
    workers = min(default_workers(cfg.evaluator, device), len(groups))
    if device == "cpu" and workers * cfg.evaluator.threads > (os.cpu_count() or 1) and not as_json:
        console.print(f"[yellow]{workers} workers x {cfg.evaluator.threads} threads exceed this machine's "
                      f"{os.cpu_count()} cores: candidates will slow each other down (--threads)[/]")
    results: list[tuple[str | None, bool, Any] | None] = [None] * len(files)

    def evaluate(evaluator: Evaluator, indices: list[int]) -> None:
        for i in indices:
            code = files[i][1]
            outcome = static_check(code, code_origin)
            if outcome is not None:
                results[i] = (None, False, outcome)
                continue
            cand = Candidate.of(code)
            req = EvalRequest.from_config(cfg.evaluator, code=code, dataset=cfg.loop.dataset,
                                          epochs=cfg.loop.epochs, prm=prm, **extra)
            outcome, cache_hit = store.evaluate_cached(cand, cfg.loop.dataset, cfg.loop.epochs, cache_prm,
                                                       lambda req=req: evaluator.evaluate(req),
                                                       origin=origin, hardware=hardware, run_id=run_id)
            results[i] = (cand.arch_id, cache_hit, outcome)

    try:
        with Evaluator.from_config(cfg.evaluator, cfg.data_dir, device=device, workers=workers) as evaluator, \
                ThreadPoolExecutor(workers, initializer=main_thread_signals) as pool:
            for f in [pool.submit(evaluate, evaluator, indices) for indices in groups.values()]:
                f.result()
    finally:
        store.close()
    payload = []
    for (name, _), (arch_id, cache_hit, outcome) in zip(files, results):
        if as_json:
            payload.append({"file": name, "arch_id": arch_id, "cache_hit": cache_hit, **outcome.model_dump()})
        else:
            console.print(outcome_table(f"{name}  [dim]{arch_id or ''}[/]", outcome, cache_hit))
    if as_json:
        print(json.dumps(payload[0] if len(payload) == 1 else payload))
    return EXIT_FAIL if any(not outcome.ok for _, _, outcome in results) else 0


def cmd_eval(args, cfg: Config, console: Console) -> int:
    files = []
    for f in args.files:
        path = Path(f)
        if not path.is_file():
            raise CLIError(f"no such file: {f}")
        try:
            files.append((f, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read {f}: {exc}") from exc
    budgets = {k: getattr(args, k) for k in ("max_params", "max_flops") if getattr(args, k, None) is not None}
    return _evaluate_files(cfg, files, _prm(args), "file", args.json, console, handed=True, budgets=budgets,
                           run_id=args.run_id)


def cmd_reference(args, cfg: Config, console: Console) -> int:
    from nasgraph.tools.evaluator.reference_models import reference_names, reference_source

    files = [(name, reference_source(name)) for name in reference_names()]
    return _evaluate_files(cfg, files, _prm(args), "reference", args.json, console, run_id=args.run_id)


# -- store -------------------------------------------------------------------------------------------
def cmd_store(args, cfg: Config, console: Console) -> int:
    from rich.table import Table

    from nasgraph.tools.export import export_lemur
    from nasgraph.tools.store import Store
    from nasgraph.views import code_view, fmt_acc, fmt_int

    if args.store_cmd != "ls" and not cfg.store_path.exists():
        raise CLIError(f"no store at {cfg.store_path}; evaluate something first (nasgraph eval / nasgraph run)")
    store = Store(cfg.store_path)
    try:
        if args.store_cmd == "ls":
            rows = store.architectures(limit=args.limit, order=args.order)
            if args.json:
                print(json.dumps([dataclasses.asdict(r) for r in rows], default=str))
                return 0
            t = Table(title=f"{cfg.store_path}")
            for col in ("id", "origin", "best acc", "last status", "evals", "novelty", "created"):
                t.add_column(col)
            for r in rows:
                t.add_row(r.id, r.origin, fmt_acc(r.best_accuracy), r.last_status or "–", str(r.evaluations),
                          "–" if r.novelty is None else f"{r.novelty:.2f}", str(r.created)[:19])
            console.print(t)
        elif args.store_cmd == "show":
            detail = store.architecture(args.id)
            if args.json:
                print(json.dumps(dataclasses.asdict(detail), default=str))
                return 0
            console.print(f"[bold]{detail.id}[/]  origin {detail.origin}  created {detail.created}")
            console.print(code_view(detail.code))
            t = Table(title="evaluations")
            for col in ("dataset", "epochs", "status", "accuracy", "params", "run", "iter", "error"):
                t.add_column(col)
            for e in detail.evaluations:
                t.add_row(e.dataset, str(e.epochs), e.status, fmt_acc(e.accuracy), fmt_int(e.params),
                          str(e.run_id or ""), str(e.iteration or ""), (e.error or "")[:80])
            console.print(t)
        elif args.store_cmd == "export":
            n = export_lemur(store, Path(args.out), dataset=args.dataset)
            console.print(f"exported {n} models to {args.out} (LEMUR layout)")
    finally:
        store.close()
    return 0


# -- models / datasets ------------------------------------------------------------------------------
def cmd_models(args, cfg: Config, console: Console) -> int:
    from nasgraph.agents.models import list_models, pull

    if args.models_cmd == "pull":
        path = pull(args.name, cfg.models_dir, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
        console.print(f"{args.name}: {path}")
        return 0
    if args.models_cmd == "export-ollama":
        return _export_ollama(args, cfg, console)
    rows = list_models(cfg.models_dir) + _adapter_rows(cfg)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    from rich.table import Table

    t = Table(title=str(cfg.models_dir))
    for col in rows[0].keys() if rows else ("name",):
        t.add_column(str(col))
    for r in rows:
        t.add_row(*(str(v) for v in r.values()))
    console.print(t)
    return 0


def _adapter_rows(cfg: Config) -> list[dict]:
    from nasgraph.agents.adapters import list_adapters

    return [{"name": a.model, "file": str(a.path), "size": a.path.stat().st_size, "present": True, "verified": None,
             "embedded": False, "description": f"LoRA adapter of cycle {a.meta.get('cycle', '?')}: "
                                               f"{a.meta.get('pairs', '?')} pairs, {a.meta.get('steps', '?')} steps"}
            for a in list_adapters(cfg.models_dir)]


def _export_ollama(args, cfg: Config, console: Console) -> int:
    from nasgraph.agents import adapters
    from nasgraph.agents.models import resolve

    base, _ = adapters.split(args.name)
    base_path = resolve(base, cfg.models_dir)
    adapter = adapters.checked(args.name, base_path, cfg.models_dir)
    out = Path(args.out) if args.out else adapter.path.parent / "Modelfile"
    out.write_text(adapters.modelfile(adapter, base_path))
    tag = args.name.replace("+", "-")
    console.print(f"{out}\nthen: ollama create {tag} -f {out} && nasgraph run --backend ollama --model {tag}")
    return 0


def cmd_lemur(args, cfg: Config, console: Console) -> int:
    from nasgraph.lemur_views import detail_views, listing_table, pull_lines, stats_views
    from nasgraph.tools.lemur import lemur_dir, list_models, pull, show, stats

    root = lemur_dir(cfg.home)
    if args.lemur_cmd == "pull":
        result = pull(root, wheel=Path(args.wheel) if args.wheel else None, keep_wheel=args.keep_wheel,
                      force=args.force, progress=lambda msg: console.print(f"[dim]{msg}[/]"))
        data, views = result, pull_lines(result)
    elif args.lemur_cmd == "ls":
        rows = list_models(root, dataset=args.dataset, family=args.family, name=args.name, limit=args.limit)
        data, views = rows, [listing_table(rows, f"LEMUR models{f' on {args.dataset}' if args.dataset else ''}, best first")]
    elif args.lemur_cmd == "show":
        detail = show(root, args.name)
        data, views = detail, detail_views(detail)
    else:
        corpus = stats(root)
        data, views = corpus, stats_views(corpus)
    if args.json:
        payload = [dataclasses.asdict(d) for d in data] if isinstance(data, list) else dataclasses.asdict(data)
        print(json.dumps(payload, default=str))
        return 0
    for view in views:
        console.print(view)
    return 0


def cmd_predict(args, cfg: Config, console: Console) -> int:
    """Predict a file's accuracy from its code and run settings; `--train` refits and scores the predictor."""
    from nasgraph.predictor_views import evaluation_views, prediction_lines
    from nasgraph.tools.lemur import lemur_dir
    from nasgraph.tools.predictor import RunSettings, evaluate, load, load_table, save, train

    def say(msg: str) -> None:
        console.print(f"[dim]{msg}[/]")

    if not args.train and not args.file:
        raise CLIError("give a model FILE to predict for, or --train to fit the predictor")
    code = None
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise CLIError(f"no such file: {args.file}")
        if not args.dataset:
            raise CLIError("--dataset is needed, e.g. cifar-10, mnist, svhn (LEMUR's image-classification datasets)")
        try:
            code = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read {args.file}: {exc}") from exc
    predictor = None if args.train else load(cfg.home)
    if predictor is None:
        if not args.train:
            say("no saved predictor yet: fitting one on the LEMUR index, once (about a minute; "
                "`nasgraph predict --train` also prints its held-out scores)")
        table = load_table(lemur_dir(cfg.home), progress=say)
        evaluation = evaluate(table, folds=args.folds, progress=say) if args.train else None
        predictor = train(table, evaluation=evaluation)
        say(f"saved {save(predictor, cfg.home)}")
        if args.train:
            if args.json:
                print(json.dumps(dataclasses.asdict(evaluation), default=str))
            else:
                for view in evaluation_views(evaluation):
                    console.print(view)
    if code is None:
        return 0
    prediction = predictor.predict(code, RunSettings(args.dataset, args.epoch, args.lr, args.momentum, args.dropout,
                                                     args.batch, args.transform))
    if args.json:
        print(json.dumps({"file": args.file, **dataclasses.asdict(prediction)}, default=str))
    else:
        for line in prediction_lines(args.file, prediction):
            console.print(line)
    return 0


def cmd_datasets(args, cfg: Config, console: Console) -> int:
    from nasgraph.tools.evaluator.datasets import dataset_names, describe

    if not args.dataset:
        for name in dataset_names():
            console.print(f"{name:14} [dim]{describe(name)}[/]")
        console.print("[dim]or your own: an image folder (train/<class>/*.jpg|png, optional test/; --image-size) "
                      "or an .npz with x_train, y_train, x_test, y_test[/]")
        return 0
    from nasgraph.dataset_ref import canonical
    from nasgraph.tools.evaluator.datasets import load_dataset

    data = load_dataset(canonical(args.dataset, args.image_size), cfg.data_dir)  # builds the cache once
    train = data.train_y.bincount(minlength=data.classes).tolist()
    test = data.test_y.bincount(minlength=data.classes).tolist()
    names = list(data.class_names) or [str(i) for i in range(data.classes)]
    info = {"dataset": data.name, "shape": list(data.in_shape), "classes": names, "train": len(data.train_y),
            "test": len(data.test_y), "train_per_class": train, "test_per_class": test,
            "mean": list(data.mean), "std": list(data.std)}
    if args.json:
        print(json.dumps(info))
        return 0
    from rich.table import Table

    c, h, w = data.in_shape
    t = Table(title=f"{data.name}: {len(data.train_y):,} train / {len(data.test_y):,} test images, {c}x{h}x{w}")
    for col in ("label", "class", "train", "test"):
        t.add_column(col, justify="right" if col in ("label", "train", "test") else "left")
    for i, name in enumerate(names):
        t.add_row(str(i), name, f"{train[i]:,}", f"{test[i]:,}")
    console.print(t)
    return 0


def cmd_autofix(args, cfg: Config, console: Console) -> int:
    """The rule catalogue: what each rule fixes, for which diagnosis kinds, in which order."""
    from nasgraph.tools.autofix import REGISTRY

    rules = sorted(REGISTRY.values(), key=lambda r: (r.kinds[0], r.priority, r.id))
    if args.json:
        print(json.dumps([{"id": r.id, "kinds": list(r.kinds), "priority": r.priority, "summary": r.summary}
                          for r in rules], indent=1))
        return 0
    from rich.table import Table

    table = Table("rule", "diagnosis kinds", "priority", "what it fixes", title=f"{len(rules)} repair rules")
    for r in rules:
        table.add_row(r.id, ", ".join(r.kinds), str(r.priority), r.summary)
    console.print(table)
    return 0


# -- run -----------------------------------------------------------------------------------------------
def cmd_run(args, cfg: Config, console: Console) -> int:
    from nasgraph.agents.handle import open_llm
    from nasgraph.graph.run import new_run_id, run_loop
    from nasgraph.views import RunView, summary_table

    run_id = args.run_id or new_run_id()
    llm = open_llm(cfg, progress=None if args.json else (lambda m: console.print(f"[dim]{m}[/]")))
    if args.json:
        summary = run_loop(cfg, llm, run_id=run_id, iterations=args.iterations, goal=args.goal or "")
        print(json.dumps(summary))
        return 0
    with RunView(console, run_id, args.iterations or cfg.loop.iterations) as view:
        summary = run_loop(cfg, llm, run_id=run_id, iterations=args.iterations, goal=args.goal or "",
                           on_update=view.update)
    console.print(summary_table(summary))
    return 0


# -- parser ------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (the full usage is one `--help` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nasgraph", description="LLM-driven neural architecture search, locally.")
    p.add_argument("--home", help="folder for the store, models, datasets and runs (default $NASGRAPH_HOME or ~/.nasgraph)")
    sub = p.add_subparsers(dest="cmd", required=True)

    def train_flags(sp: argparse.ArgumentParser, backend_flag: str = "--backend") -> None:
        sp.add_argument("--dataset", help="a dataset name (see `nasgraph datasets`), an image folder "
                                          "(train/<class>/*.jpg|png, optional test/) or an .npz")
        sp.add_argument("--image-size", dest="image_size", type=int,
                        help="square side an image folder is resized to (default 32)")
        sp.add_argument("--epochs", type=int)
        sp.add_argument("--threads", type=int)
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"])
        sp.add_argument(backend_flag, dest="eval_backend", choices=["local", "ray"],
                        help="run candidates here, or on Ray actors (RAY_ADDRESS names a cluster)")
        sp.add_argument("--time-budget-s", dest="time_budget_s", type=float, help="max projected seconds per epoch")
        sp.add_argument("--max-params", dest="max_params", type=int)
        sp.add_argument("--max-flops", dest="max_flops", type=int, help="forward FLOPs per sample")
        sp.add_argument("--json", action="store_true", help="print one JSON result instead of tables")

    def prm_flags(sp: argparse.ArgumentParser) -> None:
        for name, typ in (("lr", float), ("momentum", float), ("batch", int), ("dropout", float)):
            sp.add_argument(f"--{name}", type=typ, help=f"hyperparameter {name!r} passed to the model and harness")

    e = sub.add_parser("eval", help="evaluate model file(s) under the model contract")
    e.add_argument("files", nargs="+", metavar="FILE")
    e.add_argument("--workers", type=int, help="candidates evaluated at once (default: evaluator.workers, "
                                               "else from the hardware)")
    train_flags(e)
    prm_flags(e)
    r = sub.add_parser("reference", help="evaluate the built-in reference models")
    train_flags(r)
    prm_flags(r)
    for sp in (e, r):
        sp.add_argument("--run-id", dest="run_id", help="record the results under this run id, so that "
                                                        "`nasgraph train RUN --top K` can pick the winners")

    s = sub.add_parser("store", help="inspect the model store")
    ss = s.add_subparsers(dest="store_cmd", required=True)
    ls = ss.add_parser("ls")
    ls.add_argument("--limit", type=int)
    ls.add_argument("--order", choices=["created", "accuracy"], default="created")
    ls.add_argument("--json", action="store_true")
    sh = ss.add_parser("show")
    sh.add_argument("id", help="architecture id or an unambiguous prefix")
    sh.add_argument("--json", action="store_true")
    ex = ss.add_parser("export", help="write the store in LEMUR's layout")
    ex.add_argument("--out", default="lemur-export")
    ex.add_argument("--dataset")

    m = sub.add_parser("models", help="embedded LLMs and their LoRA adapters: pull / ls / export-ollama")
    ms = m.add_subparsers(dest="models_cmd", required=True)
    mp = ms.add_parser("pull")
    mp.add_argument("name", help="e.g. qwen2.5-coder-0.5b, qwen2.5-coder-1.5b")
    ml = ms.add_parser("ls")
    ml.add_argument("--json", action="store_true")
    mo = ms.add_parser("export-ollama", help="write an Ollama Modelfile for a base+adapter model")
    mo.add_argument("name", help="e.g. qwen2.5-coder-0.5b+<cycles id>-cycle3 (see `nasgraph models ls`)")
    mo.add_argument("--out", help="Modelfile path (default: beside the adapter)")

    lm = sub.add_parser("lemur", help="the LEMUR corpus of models and training records: pull / ls / show / stats")
    lms = lm.add_subparsers(dest="lemur_cmd", required=True)
    lp = lms.add_parser("pull", help="download (once), verify and index the nn-dataset wheel")
    lp.add_argument("--wheel", help="a local copy of the wheel to use instead of PyPI (must match the pinned sha256)")
    lp.add_argument("--keep-wheel", dest="keep_wheel", action="store_true", help="keep the 100 MB wheel beside the index")
    lp.add_argument("--force", action="store_true", help="rebuild the index even if it is current")
    lp.add_argument("--json", action="store_true")
    ll = lms.add_parser("ls", help="models ranked by their best result, one row per model and dataset")
    ll.add_argument("--dataset", help="e.g. cifar-10, svhn, mnist (see `nasgraph lemur stats`)")
    ll.add_argument("--family", help="name stem, e.g. FractalNet, ga-mut, ast-dimension-AlexNet")
    ll.add_argument("--name", help="part of the model name")
    ll.add_argument("--limit", type=int, default=20, help="rows to print (0: all)")
    ll.add_argument("--json", action="store_true")
    lsh = lms.add_parser("show", help="one model: code, static facts and its records per dataset and epoch")
    lsh.add_argument("name")
    lsh.add_argument("--json", action="store_true")
    lst = lms.add_parser("stats", help="totals per task and dataset, accuracy distribution, disk used")
    lst.add_argument("--json", action="store_true")

    pr = sub.add_parser("predict", help="predict a model file's accuracy from its code (fitted on LEMUR's runs)")
    pr.add_argument("file", nargs="?", metavar="FILE")
    pr.add_argument("--dataset", help="a LEMUR image-classification dataset, e.g. cifar-10, mnist, svhn")
    pr.add_argument("--epoch", type=int, default=1, help="accuracy after this many epochs (default 1)")
    for name, typ in (("lr", float), ("momentum", float), ("batch", int), ("dropout", float)):
        pr.add_argument(f"--{name}", type=typ, help=f"{name} of the run (default: LEMUR's typical one)")
    pr.add_argument("--transform", help="LEMUR transform name, e.g. norm_32_flip (default: LEMUR's typical one)")
    pr.add_argument("--train", action="store_true", help="fit the predictor again and print its held-out scores")
    pr.add_argument("--folds", type=int, default=3, help="folds of the held-out scores --train prints")
    pr.add_argument("--json", action="store_true")

    ds = sub.add_parser("datasets", help="list dataset names, or check and describe one (a folder, an .npz)")
    ds.add_argument("dataset", nargs="?", help="a name, image folder or .npz: read once, cached, described")
    ds.add_argument("--image-size", dest="image_size", type=int, help="square side a folder is resized to (default 32)")
    ds.add_argument("--json", action="store_true")
    af = sub.add_parser("autofix", help="the rule-based repair rules: `autofix rules` prints the catalogue")
    af.add_argument("what", choices=["rules"])
    af.add_argument("--json", action="store_true")

    rn = sub.add_parser("run", help="autonomous closed-loop search (resumable)")
    train_flags(rn, backend_flag="--eval-backend")  # --backend picks the LLM's here
    rn.add_argument("--iterations", type=int)
    rn.add_argument("--run-id", dest="run_id", help="resume this run, or name a new one")
    rn.add_argument("--model", help="LLM name (embedded name, GGUF path, or Ollama model)")
    rn.add_argument("--backend", choices=["llamacpp", "ollama"])
    rn.add_argument("--max-repairs", dest="max_repairs", type=int, help="LLM repairs per iteration")
    rn.add_argument("--max-fixes", dest="max_fixes", type=int, help="rule-based fixes per draft (0: off)")
    rn.add_argument("--target-accuracy", dest="target_accuracy", type=float)
    rn.add_argument("--search", choices=["improver", "parents", "independent"],
                    help="parents (default): one change to a design drawn from the run's archive; improver: fresh "
                         "designs steered by the history; independent: no feedback (a baseline)")
    rn.add_argument("--child-format", dest="child_format", choices=["module", "edit"],
                    help="with --search parents: the child written as edits of its parent (default) or as a whole module")
    rn.add_argument("--objective", choices=["accuracy", "pareto"],
                    help="accuracy (default): the most accurate design wins; pareto: keep the front of accuracy, "
                         "parameters and batch-1 latency, build on it, and show it in the report")
    rn.add_argument("--cascade", action=argparse.BooleanOptionalAction,
                    help="stop a design part-way through its epoch when it is behind the run's top designs there")
    rn.add_argument("--in-flight", dest="in_flight", type=int,
                    help="iterations planned at once: the LLM drafts the next ones while a design trains (default 1)")
    rn.add_argument("--goal", help="free-text design goal added to the prompts")
    rn.add_argument("--rag", action=argparse.BooleanOptionalAction, help="retrieve validated blocks (needs `nasgraph index build`)")
    for module in PLUGINS:  # commands that live beside the code they drive
        importlib.import_module(module).register(sub, COMMANDS)
    return p


# Each plugin module has register(subparsers, commands) and imports nothing heavy at module level.
PLUGINS: tuple[str, ...] = ("nasgraph.trace_cli", "nasgraph.report", "nasgraph.chat", "nasgraph.rag_index.cli",
                            "nasgraph.cycles_cli", "nasgraph.train_cli", "nasgraph.export_cli", "nasgraph.hpo_cli")

COMMANDS = {"eval": cmd_eval, "reference": cmd_reference, "store": cmd_store, "models": cmd_models,
            "datasets": cmd_datasets, "run": cmd_run, "autofix": cmd_autofix, "lemur": cmd_lemur,
            "predict": cmd_predict}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=getattr(args, "json", False))
    try:
        cfg = load_config(**_overrides(args))
        return COMMANDS[args.cmd](args, cfg, console)
    except KeyboardInterrupt:
        print("nasgraph: interrupted", file=sys.stderr)
        return 130
    except (NasgraphError, pydantic.ValidationError) as exc:  # anything else is a bug: its traceback stays
        msg = _pydantic_msg(exc) if isinstance(exc, pydantic.ValidationError) else str(exc).strip().splitlines()[0]
        print(f"nasgraph: error: {msg}", file=sys.stderr)
        return EXIT_FAIL


def _pydantic_msg(exc) -> str:
    e = exc.errors()[0]
    return f"invalid setting {'.'.join(str(x) for x in e['loc'])}: {e['msg']}"


if __name__ == "__main__":
    sys.exit(main())
