"""`nasgraph hpo FILE --dataset D --trials N --sampler llm|tpe|random [--prior]`: tune a model file's training
hyperparameters through the sandboxed Evaluator, each trial one training run.

The study lives in optuna's SQLite storage under `<home>/runs/hpo/<name>/study.sqlite`; the same
command run again resumes it (trials already finished count towards N). The LLM sampler is the
hyperparameter agent (`nasgraph.agents.hpo_agent`) on the configured LLM.
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nasgraph.config import Config
from nasgraph.dataset_ref import parse
from nasgraph.errors import NasgraphError

SAMPLERS = ("llm", "tpe", "random")


class HpoCLIError(NasgraphError):
    """A user-facing error of `nasgraph hpo`."""


def trials_table(title: str, space_names: list[str], trials: list, best_number: int | None) -> Table:
    from nasgraph.tools.hpo import fmt_value

    t = Table(title=title)
    for col in ("#", "by", *space_names, "accuracy", "status", "s"):
        t.add_column(col, justify="right" if col not in ("by", "status") else "left", min_width=min(len(col), 8))
    for tr in trials:
        style = "bold green" if tr.number == best_number else ("yellow" if tr.source == "fallback" else "")
        acc = "–" if tr.accuracy is None else f"{tr.accuracy:.4f}"
        t.add_row(str(tr.number + 1), tr.source, *(fmt_value(tr.params[n]) for n in space_names), acc,
                  tr.status, f"{tr.seconds:.0f}", style=style)
    return t


def _run_name(path: Path, arch_id: str, dataset: str, sampler: str, seed: int) -> str:
    return f"{path.stem}-{arch_id[:8]}-{parse(dataset).label}-{sampler}-seed{seed}"  # a folder's name, not its path


def cmd_hpo(args, cfg: Config, console: Console) -> int:
    from nasgraph.tools.evaluator import static_check

    path = Path(args.file)
    if not path.is_file():
        raise HpoCLIError(f"no such file: {args.file}")
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HpoCLIError(f"cannot read {args.file}: {exc}") from exc
    if args.trials < 1:
        raise HpoCLIError("--trials must be at least 1")
    refused = static_check(code, "handed")
    if refused is not None:
        raise HpoCLIError(f"{args.file} cannot run ({refused.status}): {refused.error.strip().splitlines()[-1:]}")
    # Torch, optuna and the evaluator load only once the file is known to be worth a study.
    import optuna

    from nasgraph.tools.candidate import Candidate
    from nasgraph.tools.evaluator import Evaluator
    from nasgraph.tools.evaluator.harness import pick_device
    from nasgraph.tools.evaluator.policy_handed import HANDED_SIDES, NO_BUDGET
    from nasgraph.tools.hpo import TPE, Random, fmt_value, run_study, sqlite_storage
    from nasgraph.tools.hpo.live import LiveObjective, live_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial INFO lines would repeat our own
    dataset = cfg.loop.dataset
    arch_id = Candidate.of(code).arch_id
    label = args.sampler + ("+prior" if args.prior else "")
    run_dir = cfg.runs_dir / "hpo" / (args.name or _run_name(path, arch_id, dataset, label, args.seed))
    space = live_space(code)
    prior = None
    if args.prior:
        from nasgraph.tools.hpo.prior import transfer_prior
        from nasgraph.tools.lemur import lemur_dir

        prior = transfer_prior(lemur_dir(cfg.home), dataset)
        if prior is None:
            raise HpoCLIError(f"--prior: no LEMUR records for {dataset} (or none stand in for it); "
                              "run `nasgraph lemur pull` first, or leave out --prior")

    if args.sampler == "llm":
        from nasgraph.agents.code_generator import layer_kinds
        from nasgraph.agents.handle import open_llm
        from nasgraph.agents.hpo_agent import Architecture, LLMSampler

        handle = open_llm(cfg)
        kinds = layer_kinds(code)
        arch = Architecture(name=path.stem, dataset=dataset,
                            summary=f"{path.stem}" + (f", built from {kinds}" if kinds else ""))
        sampler = LLMSampler(lambda step: handle.at_step(step), arch, args.trials, prior)
    else:
        sampler = TPE() if args.sampler == "tpe" else Random()
        if prior is not None:
            from nasgraph.tools.hpo.prior import PriorFirst

            sampler = PriorFirst(sampler, prior)

    def show(tr) -> None:
        if args.json:
            return
        acc = "failed" if tr.accuracy is None else f"{tr.accuracy:.4f}"
        console.print(f"[dim]trial {tr.number + 1}/{args.trials} ({tr.source}): "
                      + ", ".join(f"{k} {fmt_value(v)}" for k, v in tr.params.items()) + f" -> {acc} ({tr.status})[/]")

    device = str(pick_device(cfg.evaluator.device))
    if not args.json:
        console.print(f"[bold]hpo[/] {path.name} on {dataset}, sampler {label}, {args.trials} trials "
                      f"of {cfg.loop.epochs} epoch(s); study in {run_dir}")
        if prior is not None:
            console.print(f"[dim]prior: {len(prior.settings)} settings from LEMUR's {prior.dataset} runs of "
                          f"{prior.judges} other models[/]")
    with Evaluator.from_config(cfg.evaluator, cfg.data_dir, device=device, workers=1) as evaluator:
        objective = LiveObjective(evaluator, cfg.evaluator, code, dataset, epochs=cfg.loop.epochs, origin="handed",
                                  image_sides=HANDED_SIDES, max_params=NO_BUDGET, max_flops=NO_BUDGET)
        result = run_study(objective, space, sampler, args.trials, name="hpo",
                           storage=sqlite_storage(run_dir / "study.sqlite"), seed=args.seed, on_trial=show)
    best = result.best
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), "sampler": result.sampler, "resumed": result.resumed,
                          "best": best.model_dump() if best else None,
                          "trials": [t.model_dump() for t in result.trials]}, default=str))
        return 0
    console.print(trials_table(f"{path.name} on {dataset}: {label}", space.names, result.trials,
                               best.number if best else None))
    fallbacks = sum(t.source == "fallback" for t in result.trials)
    if best is None:
        console.print("[red]no trial trained: every setting failed[/]")
        return 1
    line = (f"best: trial {best.number + 1}, accuracy [bold]{best.accuracy:.4f}[/] with "
            + ", ".join(f"{k} {fmt_value(v)}" for k, v in best.params.items()))
    console.print(line + (f"  [dim]({result.resumed} trial(s) resumed from the storage)[/]" if result.resumed else ""))
    if args.sampler == "llm":
        console.print(f"[dim]LLM replies unusable (random fallback): {fallbacks} of {len(result.trials)}[/]")
    return 0


def register(subparsers, commands: dict) -> None:
    p = subparsers.add_parser("hpo", help="tune a model file's hyperparameters: the LLM agent, optuna TPE or random")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--dataset", help="dataset to train on (default: the config's loop.dataset)")
    p.add_argument("--trials", type=int, default=12, help="trials in the study, resumed ones included (default 12)")
    # TPE by default: it beat the LLM agent on LEMUR's recorded runs and live on Fashion-MNIST
    # (docs/2026-11-27-hpo.md), and it needs no LLM.
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="tpe (optuna, default), random, or llm (the hyperparameter agent on the configured LLM)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--prior", action="store_true",
                   help="start from the settings LEMUR's records favour on the dataset (needs `nasgraph lemur pull`): "
                        "the agent is told them, tpe and random try them first")
    p.add_argument("--epochs", type=int, help="training epochs per trial (default: the config's, 1)")
    p.add_argument("--name", help="study folder under <home>/runs/hpo/ (default: file, architecture, dataset, "
                                  "sampler and seed); the same name resumes")
    p.add_argument("--model", help="LLM for --sampler llm (embedded name, GGUF path, or Ollama model)")
    p.add_argument("--backend", choices=["llamacpp", "ollama"])
    p.add_argument("--threads", type=int, help="training threads per trial")
    p.add_argument("--json", action="store_true")
    commands["hpo"] = cmd_hpo
