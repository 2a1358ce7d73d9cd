"""Self-improvement cycles: the generator fine-tuned (LoRA) on its own best novel designs, cycle after cycle.

Generation c (c = 0..K) runs the loop for N iterations with model M_c, where M_0 is the base and M_c
the base with the adapter of the c-th fine-tuning. The loop runs with search = "independent" (one fixed
prompt, no history, no improver), so what changes between generations is the weights alone, and every
generation shares one seed key, so M_c and M_0 draw the same seeds step by step. After generation c < K:
the valid designs at or above the accuracy threshold that are novel (MinHash–Jaccard against each other,
every earlier generation and the LEMUR corpus) become prompt–code pairs; with a replay share of earlier
pairs they fine-tune the next adapter, which starts from the base each time (the pairs accumulate, not the
weights).

Resumable after kill -9 anywhere: the driver's state (`<home>/cycles/<id>/state.json`, written atomically
after each phase) says which phase is done; a generation resumes from the loop's own checkpoint and a
fine-tuning from its step checkpoint. Why no LangGraph here: each phase already checkpoints itself, and
what is left between phases is a list of finished rows.
"""
from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from nasgraph.agents import adapters, models
from nasgraph.agents import llm as backends
from nasgraph.agents.code_generator import build_prompt
from nasgraph.agents.prompts import render
from nasgraph.config import Config
from nasgraph.errors import NasgraphError
from nasgraph.graph.nodes import INDEPENDENT
from nasgraph.graph.run import make_task, run_loop
from nasgraph.tools.fingerprint import NoveltyIndex, minhash
from nasgraph.tools.lora.finetune import FinetuneSpec, run_finetune
from nasgraph.tools.lora.pairs import Pair, read_pairs, write_pairs
from nasgraph.tools.store import Store

Progress = Callable[[str, dict], None]


class CyclesError(NasgraphError):
    """A cycles run cannot start or go on; the message says why."""


class CyclesSpec(BaseModel):
    """Fixed when a cycles run starts; a resume keeps it (a changed setting would mix two experiments)."""
    cycles_id: str
    base: str = Field(description="embedded model the adapters are trained on")
    cycles: int = Field(3, ge=1, description="fine-tunings; generations are cycles + 1")
    per_cycle: int = Field(20, ge=1, description="loop iterations (candidates) per generation")
    dataset: str = "fashion-mnist"
    threshold: float = Field(0.85, ge=0, le=1, description="one-epoch accuracy a design needs to become a pair")
    # The generator is what is measured, so no LLM repairs by default (rule fixes still apply): a repair
    # would count the model's second try as its first, and costs an LLM call each.
    max_repairs: int = Field(0, ge=0, description="LLM repairs per iteration")
    novelty: float = Field(0.1, ge=0, le=1, description="min 1-Jaccard to count as novel")
    replay: float = Field(0.5, ge=0, le=1, description="share of earlier cycles' pairs mixed into each fine-tuning")
    rank: int = 16
    alpha: float = 32.0
    # A generation yields a handful of pairs, so a few passes at a LoRA-typical rate: ~10 optimizer steps.
    lr: float = 5e-4
    epochs: int = 3
    seed: int = 0

    def adapter_name(self, c: int) -> str:
        return f"{self.cycles_id}-cycle{c}"



class Row(BaseModel):
    """One generation: the model that generated, what came out, and the fine-tuning that followed."""
    cycle: int
    model: str
    run_id: str
    iterations: int = 0
    duplicates: int = 0
    valid: float = 0.0             # valid designs / fresh (non-duplicate) iterations
    mean_accuracy: float | None = None
    best_accuracy: float | None = None
    above: float = 0.0             # share of the N candidates at or above the threshold
    novel_corpus: int = 0          # designs above the threshold absent from the LEMUR corpus
    pairs_new: int = 0             # ... and novel against earlier generations and each other
    pairs_train: int = 0           # new + replayed: what the following fine-tuning saw (0: none ran)
    finetune_s: float | None = None
    loss_first: float | None = None
    loss_last: float | None = None
    seconds_generate: float = 0.0


class CyclesState(BaseModel):
    spec: CyclesSpec
    rows: list[Row] = Field(default_factory=list)
    finetuned: list[int] = Field(default_factory=list)  # generations whose following fine-tuning is done
    adapters: list[int] = Field(default_factory=list)   # k of each adapter written (after generation k - 1)

    def model(self, c: int) -> str:
        """Generation c's model: the base with the newest adapter written before it (a generation with
        nothing to learn from writes none, and the next one keeps the model it had), else the base."""
        k = max((k for k in self.adapters if k <= c), default=0)
        return self.spec.base if k == 0 else f"{self.spec.base}{adapters.SEP}{self.spec.adapter_name(k)}"


def cycles_dir(cfg: Config, cycles_id: str) -> Path:
    return cfg.home / "cycles" / cycles_id


def list_cycles(cfg: Config) -> list[str]:
    root = cfg.home / "cycles"
    return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file()) if root.is_dir() else []


def load_state(cfg: Config, cycles_id: str) -> CyclesState:
    path = cycles_dir(cfg, cycles_id) / "state.json"
    if not path.is_file():
        known = ", ".join(list_cycles(cfg)) or "none"
        raise CyclesError(f"no cycles run {cycles_id!r} in {cfg.home / 'cycles'} (known: {known})")
    return CyclesState.model_validate_json(path.read_text())


def _save(cfg: Config, state: CyclesState) -> None:
    path = cycles_dir(cfg, state.spec.cycles_id) / "state.json"
    tmp = path.with_name("state.json.tmp")
    tmp.write_text(state.model_dump_json(indent=1))
    tmp.replace(path)


def _start(cfg: Config, spec: CyclesSpec) -> CyclesState:
    folder = cycles_dir(cfg, spec.cycles_id)
    if (folder / "state.json").is_file():
        state = load_state(cfg, spec.cycles_id)
        fixed = state.spec.model_dump(exclude={"cycles"})
        if fixed != spec.model_dump(exclude={"cycles"}):
            changed = [k for k in fixed if fixed[k] != getattr(spec, k)]
            raise CyclesError(f"cycles run {spec.cycles_id} was started with other settings ({', '.join(changed)}); "
                              f"resume it with the same ones or start a new --run-id")
        state.spec = spec  # only the number of cycles may grow
        return state
    if spec.base not in models.EMBEDDED:
        raise CyclesError(f"cycles fine-tune an embedded model ({', '.join(models.EMBEDDED)}), not {spec.base!r}")
    folder.mkdir(parents=True, exist_ok=True)
    state = CyclesState(spec=spec)
    _save(cfg, state)
    return state


def _generator_messages(cfg: Config, spec: CyclesSpec) -> list[dict[str, str]]:
    """The chat every generation's first drafts get (search = independent): the pairs' prompt."""
    task = make_task(cfg)
    user = build_prompt(task, INDEPENDENT.as_instruction(), [], None)
    return [{"role": "system", "content": render("code_generator.system").text},
            {"role": "user", "content": user.text}]


def _cfg_for(cfg: Config, state: CyclesState, c: int) -> Config:
    spec = state.spec
    loop = cfg.loop.model_copy(update={"search": "independent", "dataset": spec.dataset, "iterations": spec.per_cycle,
                                       "max_repairs": spec.max_repairs})
    llm = cfg.llm.model_copy(update={"model": state.model(c), "backend": "llamacpp"})
    rag = cfg.rag.model_copy(update={"enabled": False})  # retrieved blocks would make every prompt different
    return cfg.model_copy(update={"loop": loop, "llm": llm, "rag": rag})


def _designs(store: Store, run_id: str) -> list[tuple[int, str, float]]:
    """(iteration, arch id, accuracy) of each iteration's valid design, in iteration order."""
    found: dict[int, tuple[int, str, float]] = {}
    for r in store.evaluations_for_run(run_id):
        if r.status == "ok" and r.accuracy is not None and r.iteration is not None:
            found[r.iteration] = (r.iteration, r.arch_id, float(r.accuracy))
    return [found[i] for i in sorted(found)]


def _earlier_index(store: Store, spec: CyclesSpec, upto: int) -> NoveltyIndex:
    index = NoveltyIndex()
    for c in range(upto):
        for _, arch, _ in _designs(store, f"{spec.cycles_id}-gen{c}"):
            index.add(arch, store.code(arch))
    return index


def _generate(cfg: Config, state: CyclesState, c: int, store: Store, corpus: NoveltyIndex | None,
              evaluator: Any, progress: Progress) -> Row:
    from nasgraph.agents.handle import open_llm

    spec = state.spec
    run_id = f"{spec.cycles_id}-gen{c}"
    ccfg = _cfg_for(cfg, state, c)
    llm = open_llm(ccfg)
    progress("generate", {"cycle": c, "model": state.model(c), "iterations": spec.per_cycle})

    def on_update(node: str, update: dict, values: dict) -> None:
        progress("iteration", {"cycle": c, "done": values.get("iteration", 0), "total": spec.per_cycle})

    try:
        summary = run_loop(ccfg, llm, run_id=run_id, iterations=spec.per_cycle, seed_key=spec.cycles_id,
                           on_update=on_update, evaluator=evaluator)
    finally:  # the next generation loads another adapter: two copies of the weights need not coexist
        backends.release(llm.base, "release", force=True)
    designs = [(arch, acc, store.code(arch)) for _, arch, acc in _designs(store, run_id)]
    accs = [acc for _, acc, _ in designs]
    chosen, novel_corpus = select(designs, threshold=spec.threshold, novelty=spec.novelty,
                                  earlier=_earlier_index(store, spec, c), corpus=corpus)
    messages = _generator_messages(ccfg, spec)
    kept = [Pair(messages=messages, code=code, arch_id=arch, accuracy=acc, cycle=c) for arch, acc, code in chosen]
    write_pairs(kept, cycles_dir(cfg, spec.cycles_id) / f"pairs-gen{c}.jsonl")
    seconds = summary.get("seconds", {})
    above = sum(acc >= spec.threshold for acc in accs)
    return Row(cycle=c, model=state.model(c), run_id=run_id, iterations=summary["iterations"],
               duplicates=summary["duplicates"], valid=summary["valid_after_repair"],
               mean_accuracy=round(statistics.fmean(accs), 4) if accs else None,
               best_accuracy=max(accs) if accs else None, above=round(above / max(1, spec.per_cycle), 4),
               novel_corpus=novel_corpus, pairs_new=len(kept),
               seconds_generate=round(sum(seconds.values()), 1))


def select(designs: list[tuple[str, float, str]], *, threshold: float, novelty: float, earlier: NoveltyIndex,
           corpus: NoveltyIndex | None) -> tuple[list[tuple[str, float, str]], int]:
    """The (arch id, accuracy, code) designs to learn from: at or above `threshold`, and novel against the
    corpus, the earlier generations and each other (of near-twins the more accurate one is kept). Also
    returns how many designs above the threshold are absent from the corpus."""
    kept: list[tuple[str, float, str]] = []
    within = NoveltyIndex()
    novel_corpus = 0
    for arch, acc, code in sorted((d for d in designs if d[1] >= threshold), key=lambda d: -d[1]):
        sig = minhash(code)
        if corpus is not None and corpus.novelty_of(sig)[0] < novelty:
            continue
        novel_corpus += 1
        if earlier.novelty_of(sig)[0] < novelty or within.novelty_of(sig)[0] < novelty:
            continue
        within.add_minhash(arch, sig)
        kept.append((arch, acc, code))
    return kept, novel_corpus


def _training_pairs(cfg: Config, spec: CyclesSpec, c: int) -> tuple[list[Pair], list[Pair]]:
    folder = cycles_dir(cfg, spec.cycles_id)
    new = read_pairs(folder / f"pairs-gen{c}.jsonl")
    earlier = [p for k in range(c) for p in read_pairs(folder / f"pairs-gen{k}.jsonl")]
    rng = random.Random(spec.seed * 1000 + c)
    replay = rng.sample(earlier, round(len(earlier) * spec.replay)) if earlier else []
    return new, replay


def _finetune(cfg: Config, state: CyclesState, c: int, progress: Progress) -> dict | None:
    """Fine-tune adapter c + 1 on generation c's pairs plus the replay; None when there is nothing to learn."""
    spec = state.spec
    new, replay = _training_pairs(cfg, spec, c)
    if not new and not replay:
        return None
    name = spec.adapter_name(c + 1)
    out = adapters.adapters_dir(cfg.models_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    pairs_file = cycles_dir(cfg, spec.cycles_id) / f"train-cycle{c + 1}.jsonl"
    if not pairs_file.is_file():  # written once: a resumed fine-tuning must see the very same pairs
        write_pairs([*new, *replay], pairs_file)
    base = models.EMBEDDED[spec.base]
    ft = FinetuneSpec(base_gguf=models.resolve(spec.base, cfg.models_dir), base_name=spec.base,
                      base_sha256=base.sha256, pairs=pairs_file, out_dir=out, rank=spec.rank, alpha=spec.alpha,
                      lr=spec.lr, epochs=spec.epochs, seed=spec.seed + c, threads=cfg.evaluator.threads,
                      device="cuda" if cfg.evaluator.device == "cuda" else "auto")
    progress("finetune", {"cycle": c + 1, "pairs": len(new) + len(replay)})
    meta = run_finetune(ft, lambda event: progress("finetune_step", {"cycle": c + 1, **event}))
    # The registry reads the cycle and the pairs from here (nasgraph models ls).
    meta.update({"cycle": c + 1, "cycles_id": spec.cycles_id, "pairs_new": len(new), "pairs_replay": len(replay)})
    meta_path = out / "adapter.json"
    tmp = meta_path.with_name("adapter.json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(meta_path)
    return meta


def run_cycles(cfg: Config, spec: CyclesSpec, progress: Progress | None = None,
               evaluator: Any = None) -> CyclesState:
    """Run (or resume) every generation and fine-tuning; returns the state with one row per generation."""
    from nasgraph.tools.evaluator import Evaluator
    from nasgraph.tools.evaluator.harness import pick_device
    from nasgraph.tools.lemur import lemur_dir
    from nasgraph.tools.lemur.novelty import corpus_index
    from nasgraph.tools.lemur.query import LemurNotPulled

    progress = progress or (lambda kind, data: None)
    state = _start(cfg, spec)
    try:
        corpus = corpus_index(lemur_dir(cfg.home))
    except LemurNotPulled:  # novelty is then measured against the cycles' own designs only
        corpus = None
        progress("note", {"text": "LEMUR corpus not pulled: novelty against it is not measured (`nasgraph lemur pull`)"})
    own = evaluator is None
    evaluator = evaluator or Evaluator.from_config(cfg.evaluator, cfg.data_dir,
                                                   device=str(pick_device(cfg.evaluator.device)), workers=1)
    store = Store(cfg.store_path)
    try:
        for c in range(spec.cycles + 1):
            if c >= len(state.rows):
                state.rows.append(_generate(cfg, state, c, store, corpus, evaluator, progress))
                _save(cfg, state)
                progress("generated", {"cycle": c, "row": state.rows[c].model_dump()})
            if c < spec.cycles and c not in state.finetuned:
                meta = _finetune(cfg, state, c, progress)
                row = state.rows[c]
                if meta:  # else nothing to learn from: the next generation keeps the model it had
                    losses = meta.get("losses") or [None]
                    row.pairs_train, row.finetune_s = meta["pairs"], meta["train_s"] + meta["load_s"]
                    row.loss_first, row.loss_last = losses[0], losses[-1]
                    state.adapters.append(c + 1)
                state.finetuned.append(c)
                _save(cfg, state)
    finally:
        store.close()
        if own:
            evaluator.close()
    return state
