"""The graph's nodes. Each takes the state and returns a `NodeResult`: the state update, and beside
it, through its own channel, the node's trace event and its training seconds. The LLM, evaluator,
store and trace come from `Deps` (live objects, not state). `Nodes.wrap` adds the bookkeeping every
node shares: its step number, its trace event, and the split of wall time into LLM, training and other.
The loop's nodes (improve, retrieve, record) take `LoopState`; the attempt's nodes take `AttemptState`.
"""
from __future__ import annotations

import contextlib
import random
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from nasgraph.agents import code_generator, prompt_improver
from nasgraph.agents.schemas import BestDesign, HistoryEntry, Parent, Task, Triple
from nasgraph.config import Config
from nasgraph.tools import archive
from nasgraph.tools.autofix import find_fix
from nasgraph.tools.candidate import Candidate
from nasgraph.tools.cascade import screen_bar, screened_designs
from nasgraph.tools.evaluator import EvalRequest, Evaluator, Outcome, static_check
from nasgraph.tools.evaluator.diagnosis import Diagnosis
from nasgraph.tools.evaluator.outcome import VALID
from nasgraph.tools.store import Store

from .ahead import Ahead, Plan
from .routing import repairable, stop_reason
from .state import ATTEMPT_INPUTS, AttemptState, LoopState
from .trace import TraceWriter

NET_DEF = re.compile(r"^class\s+Net\b", re.M)


@dataclass
class NodeResult:
    update: dict                                      # the state update, nothing else
    event: dict = field(default_factory=dict)         # the node's trace event fields
    train_s: float = 0.0                              # seconds of training inside the node


@dataclass
class Deps:
    cfg: Config
    llm: Any                      # nasgraph.agents.llm handle: .chat (BaseChatModel), .backend, .model, .release()
    evaluator: Evaluator
    store: Store
    trace: TraceWriter
    hardware: dict
    prm: dict = field(default_factory=dict)
    retrieve: Callable[[Task, Triple], tuple[list[str], dict]] | None = None
    ahead: Ahead | None = None    # loop.in_flight > 1: iterations planned while earlier ones train
    _last_end: float | None = None


PLANNED_NODES = ("improve", "generate")  # the LLM nodes an iteration's plan holds
PLANNED_SEEDS = 10_000_000               # their seeds when planned ahead: clear of the step-keyed ones


def _llm_for(deps: Deps, state: LoopState | AttemptState, temperature: float | None = None, node: str | None = None):
    """The chat model seeded for this step of this run: a replayed step samples the same reply, and
    a new run (another id) does not replay an old run's designs. Planned ahead (deps.ahead), the improve
    and generate nodes are seeded by iteration and node, as their step number is not known yet."""
    key = state.get("seed_key") or state["run_id"]
    base = zlib.crc32(key.encode()) % 1_000_003
    if deps.ahead is not None and node in PLANNED_NODES:
        iteration = state.get("iteration", 0) + 1
        return deps.llm.at_step(base + PLANNED_SEEDS + len(PLANNED_NODES) * iteration + PLANNED_NODES.index(node),
                                temperature)
    return deps.llm.at_step(base + state.get("step", 0), temperature)


def _planned(result: NodeResult) -> NodeResult:
    """A node's result taken from a plan made ahead: its trace event says so."""
    return NodeResult(dict(result.update), {**result.event, "ahead": True}, result.train_s)


def _task(state: LoopState | AttemptState) -> Task:
    return Task(**state["task"])


def _history(state: LoopState | AttemptState) -> list[HistoryEntry]:
    return [HistoryEntry(**h) for h in state.get("history", [])]


def _best(state: LoopState | AttemptState) -> BestDesign | None:
    return BestDesign(**state["best"]) if state.get("best") else None


def _parent(state: LoopState | AttemptState) -> Parent | None:
    return Parent(**state["parent"]) if state.get("parent") else None


# With search = "independent" every design gets this one instruction and nothing else: the baseline.
INDEPENDENT = Triple(problem="", modification="Design a sound, efficient convolutional network for this task.",
                     expected_effect="")


def _llm_event(meta: Any) -> dict:
    return {"prompt": meta.prompt_name, "prompt_sha": meta.prompt_sha, "tokens_in": meta.tokens_in,
            "tokens_out": meta.tokens_out, "latency": round(meta.seconds, 3), "prompt_text": meta.prompt,
            "reply": meta.reply,
            # A child written as edits: how many SEARCH/REPLACE blocks came back, and how many applied.
            **({"edits": [meta.edit_blocks, meta.edits_applied]} if getattr(meta, "edit_blocks", None) is not None
               else {})}


def _latency_ms(detail: dict) -> float | None:
    """Batch-1 forward time of an evaluated design, when it was measured (objective pareto)."""
    return (detail.get("latency_ms") or {}).get("pytorch", {}).get("1")


def run_designs(store: Store, run_id: str) -> list[archive.Design]:
    """The run's designs trained to the end: the archive parents are drawn from, and the front."""
    return [archive.Design(e.arch_id, e.accuracy, e.params, e.flops, e.iteration or 0, _latency_ms(e.detail),
                           tuple(e.detail.get("unused", ())), e.detail.get("behaviour"))
            for e in store.evaluations_for_run(run_id)
            if e.status == "ok" and e.accuracy is not None and e.params and e.flops]


def _screen_saved_s(outcome: Outcome) -> float:
    """Training seconds the cascade saved: the epoch's projected time less what ran before the screen."""
    if outcome.status != "screened":
        return 0.0
    return max(0.0, float(outcome.detail.get("projected_s", 0.0)) - float(outcome.detail["screen"]["seconds"] or 0.0))


class Nodes:
    def __init__(self, deps: Deps):
        self.d = deps

    # -- bookkeeping shared by every node -------------------------------------------------------
    def wrap(self, name: str, fn: Callable[[Any], NodeResult]) -> Callable[[Any], dict]:
        def node(state: Any) -> dict:
            start = time.perf_counter()
            result = fn(state)
            update, event, train_s = dict(result.update), result.event, result.train_s
            now = time.perf_counter()
            # A node planned ahead ran its LLM call while earlier designs trained: the run spent on it
            # only the seconds it waited here.
            llm_s = (now - start) if event.get("ahead") else float(event.get("latency", 0.0))
            # Time since the previous node ended also covers LangGraph's own checkpoint writes.
            elapsed = now - (self.d._last_end if self.d._last_end is not None else start)
            self.d._last_end = now
            step = state.get("step", 0)
            iteration = state.get("iteration", 0) + 1  # the iteration in flight
            self.d.trace.emit(step=step, iteration=iteration, node=name, backend=self.d.llm.backend,
                              model=self.d.llm.model, seconds=round(now - start, 3), **event)
            if "outcome" in update:  # the node that sets an outcome decides the fix; routers read it
                update["pending_fix"] = self._pending_fix(state, update)
            update["step"] = 1
            update["stats"] = {**update.get("stats", {}), "seconds_llm": llm_s, "seconds_train": train_s,
                               "seconds_other": max(0.0, elapsed - llm_s - train_s)}
            return update
        node.__name__ = name
        return node

    def _pending_fix(self, state: AttemptState, update: dict) -> dict | None:
        """The rule fix for the outcome just set, while the draft has fixes left; None otherwise."""
        outcome = update["outcome"]
        fixes = update.get("fixes", state.get("fixes", 0))
        if not outcome or outcome["status"] in ("ok", "duplicate") or fixes >= self.d.cfg.loop.max_fixes:
            return None
        diagnosis = outcome.get("diagnosis")
        fix = find_fix(update.get("code", state.get("code")) or "", Diagnosis(**diagnosis) if diagnosis else None)
        return {"code": fix.code, "rule": fix.rule, "description": fix.description} if fix else None

    # -- agents ------------------------------------------------------------------------------
    def _agents(self):
        """Held around every LLM or RAG call: with planning ahead, the graph and the planner share them."""
        return self.d.ahead.agents if self.d.ahead is not None else contextlib.nullcontext()

    def improve(self, state: LoopState) -> NodeResult:
        ahead = self.d.ahead
        if ahead is None:
            return self._improve(state, *self._choose(state))
        iteration = state.get("iteration", 0) + 1
        plan = ahead.take(iteration)
        ahead.current = plan
        if plan is not None:
            result = _planned(plan.improve)
        else:  # not planned ahead (the first iterations of a resumed run): plan it here, from the same view
            view, designs = self.view(state, iteration)
            result = self._improve(view, *self._choose(view, designs))
        self._plan_ahead(state, iteration)
        return result

    def _choose(self, state: LoopState, designs: list[archive.Design] | None = None) -> tuple[Parent | None, int | None]:
        """The parent (None: a fresh design) and the archive's niches filled, with search = parents."""
        if self.d.cfg.loop.search != "parents":
            return None, None
        return self._pick_parent(state, designs)

    def _improve(self, state: LoopState, parent: Parent | None, niches: int | None) -> NodeResult:
        search = self.d.cfg.loop.search
        # Planned ahead, the attempt drafts from the view; otherwise none (a run resumed with in_flight 1
        # must not keep the view of its last planned iteration).
        view = {"view": {"history": state.get("history", []), "best": state.get("best")} if self.d.ahead else None}
        if search == "independent":  # no feedback: no improver call, no history, no parent
            return NodeResult({"triple": INDEPENDENT.model_dump(), "parent": None, "attempt": None, **view},
                              {"triple": INDEPENDENT.model_dump(), "search": search})
        if search == "parents" and parent is None:
            # A fresh design is a sample, not a change to anything: the improver's directions, given
            # nothing to improve, steered the 1.5B's first designs to exotic blocks (0.71 on
            # Fashion-MNIST where the plain instruction at the same seed gave 0.91).
            return NodeResult({"triple": INDEPENDENT.model_dump(), "parent": None, "attempt": None, **view},
                              {"triple": INDEPENDENT.model_dump(), "search": search, "niches": niches,
                               "parent": None, "fresh": True})
        if search == "parents" and self.d.cfg.loop.parent_move == "drawn":
            # The control arm: the same parents, children and history, but the change is drawn (seeded by
            # run and iteration, like the parent), not chosen by the improver.
            rng = random.Random(zlib.crc32(f"{state['run_id']}:{state.get('iteration', 0)}:move".encode()))
            triple = prompt_improver.drawn_triple(parent, rng)
            return NodeResult({"triple": triple.model_dump(), "parent": parent.model_dump(), "attempt": None, **view},
                              {"triple": triple.model_dump(), "search": search, "niches": niches, "drawn": True,
                               "parent": parent.arch_id, "parent_accuracy": parent.accuracy})
        history = _history(state)
        last = history[-1] if history else None
        window = prompt_improver.window(history, self.d.cfg.loop.history_k)
        with self._agents():
            triple, meta = prompt_improver.improve(_llm_for(self.d, state, node="improve"), _task(state), last, window,
                                                   _best(state), state.get("user_goal", ""),
                                                   novelty_threshold=self.d.cfg.loop.novelty_threshold, parent=parent)
        event = {**_llm_event(meta), "triple": triple.model_dump(), "parse_mode": meta.parse_mode,
                 "repeated": meta.repeated, "search": search, "niches": niches,
                 "parent": parent.arch_id if parent else None, "parent_accuracy": parent.accuracy if parent else None}
        return NodeResult({"triple": triple.model_dump(), "parent": parent.model_dump() if parent else None,
                           "attempt": None, **view}, event)

    def _pick_parent(self, state: LoopState, designs: list[archive.Design] | None = None) -> tuple[Parent | None, int]:
        """A parent drawn from this run's archive (seeded by run and iteration: a replayed step draws
        the same), and how many niches the archive fills."""
        designs = run_designs(self.d.store, state["run_id"]) if designs is None else designs
        children = Counter({k: int(v) for k, v in (state.get("children") or {}).items()})
        rng = random.Random(zlib.crc32(f"{state['run_id']}:{state.get('iteration', 0)}".encode()))
        loop = self.d.cfg.loop
        elite = archive.pick_parent(designs, children, rng, loop.fresh_share, loop.objective, loop.population_init)
        niches = len(archive.elites(designs))
        if elite is None:
            return None, niches
        d = elite.design
        return Parent(arch_id=d.arch_id, code=self.d.store.code(d.arch_id), accuracy=d.accuracy, params=d.params,
                      flops=d.flops, latency_ms=d.latency_ms, niche=elite.niche, children=elite.children,
                      unused=list(d.unused), behaviour=d.behaviour), niches

    # -- planning ahead (loop.in_flight > 1; graph.ahead) ---------------------------------------
    def view(self, state: LoopState, iteration: int) -> tuple[dict, list[archive.Design]]:
        """The loop's state as it was after iteration `iteration - in_flight` was recorded (its history,
        best design and children per parent), shaped as the state `iteration` is planned in, and the
        archive as it was then. The same whether computed ahead or when the iteration comes."""
        upto = iteration - self.d.ahead.in_flight
        history = [h for h in state.get("history", []) if h["iteration"] <= upto]
        later = Counter(h["parent"] for h in state.get("history", []) if h["iteration"] > upto and h.get("parent"))
        children = {p: n - later[p] for p, n in (state.get("children") or {}).items() if n - later[p] > 0}
        designs = [d for d in run_designs(self.d.store, state["run_id"]) if d.iteration <= upto]
        best = None
        if designs:
            top = max(designs, key=lambda d: (d.accuracy, -d.iteration))  # of equals the earliest, as record keeps
            best = BestDesign(arch_id=top.arch_id, code=self.d.store.code(top.arch_id), accuracy=top.accuracy,
                              params=top.params).model_dump()
        return {**state, "iteration": iteration - 1, "history": history, "children": children, "best": best}, designs

    def _plan_ahead(self, state: LoopState, iteration: int) -> None:
        """Schedule the plans of the iterations after `iteration` whose views are complete. The store is
        read here, on the graph's thread; the planner thread makes only agent calls."""
        ahead = self.d.ahead
        last = min(state["max_iterations"], iteration + ahead.in_flight - 1)
        for later in range(iteration + 1, last + 1):
            if not ahead.scheduled(later):
                view, designs = self.view(state, later)
                ahead.schedule(later, partial(self._make_plan, view, *self._choose(view, designs)))

    def _make_plan(self, view: dict, parent: Parent | None, niches: int | None) -> Plan:
        """The planner thread's work for one iteration: what its improve, retrieve and generate nodes
        will return."""
        iteration = view["iteration"] + 1
        improved = self._improve(view, parent, niches)
        triple, parent_state = improved.update["triple"], improved.update["parent"]
        retrieved = self._retrieve({**view, "triple": triple})
        blocks = retrieved.update["blocks"]
        generated = None
        if not self.d.ahead.closing.is_set():
            # The attempt's inputs as the loop will hand them over (the step count is not known yet).
            inputs = {k: view.get(k) for k in ATTEMPT_INPUTS if k != "step"}
            generated = self._generate({**inputs, "triple": triple, "parent": parent_state, "blocks": blocks,
                                        "iteration": iteration - 1})
        return Plan(iteration, improved, retrieved, generated, triple, parent_state, blocks)

    def _current_plan(self, state: LoopState | AttemptState) -> Plan | None:
        """The plan of the iteration in flight, if it was made for this very triple, parent and blocks."""
        plan = self.d.ahead.current if self.d.ahead is not None else None
        if plan is None or plan.iteration != state.get("iteration", 0) + 1 or plan.triple != state.get("triple") \
                or plan.parent != state.get("parent"):
            return None
        return plan

    def retrieve(self, state: LoopState) -> NodeResult:
        plan = self._current_plan(state)
        return _planned(plan.retrieve) if plan is not None else self._retrieve(state)

    def _retrieve(self, state: LoopState) -> NodeResult:
        if self.d.retrieve is None:
            return NodeResult({"blocks": []}, {"enabled": False})
        with self._agents():
            blocks, info = self.d.retrieve(_task(state), Triple(**state["triple"]))
        return NodeResult({"blocks": blocks}, {"enabled": True, **info})

    # -- the attempt subgraph ------------------------------------------------------------------
    def _draft(self, state: AttemptState, llm, instruction: str, first: bool = True) -> code_generator.Generation:
        # Only a first draft is written as edits: in the parents arm, redrafts as edits after a parent echo
        # or a broken edit came back as the parent or broke again in 6 of 7 tries (docs/2026-11-28-search.md).
        child_format = self.d.cfg.loop.child_format if first else "module"
        with self._agents():
            if self.d.cfg.loop.search == "independent":  # the baseline sees no results of earlier designs
                return code_generator.generate(llm, _task(state), instruction, [], None, state.get("blocks") or [])
            window = prompt_improver.window(_history(state), self.d.cfg.loop.history_k)
            return code_generator.generate(llm, _task(state), instruction, window, _best(state),
                                           state.get("blocks") or [], novelty_threshold=self.d.cfg.loop.novelty_threshold,
                                           parent=_parent(state), child_format=child_format)

    def generate(self, state: AttemptState) -> NodeResult:
        plan = self._current_plan(state)
        if plan is not None and plan.generate is not None and plan.blocks == (state.get("blocks") or []):
            return _planned(plan.generate)
        return self._generate(state)

    def _generate(self, state: AttemptState) -> NodeResult:
        gen = self._draft(state, _llm_for(self.d, state, node="generate"), Triple(**state["triple"]).as_instruction())
        cand = Candidate.of(gen.code)
        return NodeResult({"code": gen.code, "cut": gen.cut, "candidate": cand.to_state()},
                          {**_llm_event(gen), "code_hash": _code_hash(cand), "code": gen.code, "cut": gen.cut})

    def repair(self, state: AttemptState) -> NodeResult:
        outcome = state["outcome"]
        # Each further attempt samples hotter: the 1.5B model, asked at the same temperature, often
        # returned its input unchanged.
        echoed = {"repeat_of", "parent_echo"} & set(outcome.get("detail", {}))
        hotter = 0.2 if echoed else 0.1 * state.get("repairs", 0)
        temperature = min(1.0, self.d.cfg.llm.temperature + hotter) if hotter else None
        llm = _llm_for(self.d, state, temperature)
        # An unfinished module (cut at the token limit) is asked for again, shorter, whatever the mode.
        mode = "shorten" if state.get("cut") else self.d.cfg.loop.repair
        with self._agents():
            if mode == "shorten":
                gen = code_generator.shorten(llm, _task(state), state["code"])
            elif mode == "redraft":
                gen = self._draft(state, llm, code_generator.redraft_instruction(
                    Triple(**state["triple"]).as_instruction(), outcome["error"], outcome["status"],
                    outcome.get("diagnosis")), first=False)
            else:
                gen = code_generator.repair(llm, _task(state), state["code"], outcome["error"], outcome["status"],
                                            outcome.get("diagnosis"))
        # A new draft gets its own rule fixes: a redraft needs them as much as the first draft did.
        cand = Candidate.of(gen.code)
        return NodeResult({"code": gen.code, "cut": gen.cut, "candidate": cand.to_state(),
                           "repairs": state.get("repairs", 0) + 1, "fixes": 0, "outcome": None},
                          {**_llm_event(gen), "code_hash": _code_hash(cand), "code": gen.code, "cut": gen.cut,
                           "repairing": outcome["status"], "mode": mode, "temperature": temperature})

    # -- tools -------------------------------------------------------------------------------
    def fix(self, state: AttemptState) -> NodeResult:
        fix = state.get("pending_fix")
        if fix is None:  # the router only comes here when a rule applies
            raise ValueError("fix ran without an applicable rule")
        cand = Candidate.of(fix["code"])
        return NodeResult({"code": fix["code"], "candidate": cand.to_state(), "fixes": state.get("fixes", 0) + 1,
                           "outcome": None, "stats": {"rule_fixes": 1}},
                          {"rule": fix["rule"], "description": fix["description"], "code_hash": _code_hash(cand),
                           "code": fix["code"], "repairing": state["outcome"]["status"]})

    def check(self, state: AttemptState) -> NodeResult:
        code = state["code"]
        # A reply with no module (prose only) is a failed attempt to repair, not an empty architecture
        # to fingerprint: every such reply would otherwise count as a "duplicate" of the empty module.
        outcome = static_check(code) if NET_DEF.search(code) else Outcome(
            status="build_error", stage="parse",
            error="the reply contained no module defining `class Net(nn.Module)`; reply with the complete "
                  "module in one ```python block")
        update: dict = {"outcome": outcome.model_dump() if outcome else None}
        if state.get("first_status") is None and outcome is not None:
            update["first_status"] = outcome.status
        return NodeResult(update, {"status": outcome.status if outcome else "pass",
                                   "error": outcome.error if outcome else "",
                                   "diagnosis": outcome.diagnosis.kind if outcome and outcome.diagnosis else None})

    def fingerprint(self, state: AttemptState) -> NodeResult:
        """The lookup half of the store's cache-or-evaluate (`Store.cached`), plus novelty; the
        evaluate node is the other half (`Store.record_new`)."""
        cand, task = Candidate.from_state(state["candidate"]), _task(state)
        arch_id = cand.arch_id
        # A repair is measured against earlier designs, not against the drafts it was repaired from.
        drafts = state.get("drafts") or []
        novelty, nearest = self.d.store.novelty(cand, exclude=drafts)
        update: dict = {"arch_id": arch_id, "novelty": novelty, "nearest": nearest, "outcome": None,
                        "drafts": drafts if arch_id in drafts else [*drafts, arch_id]}
        cached = self.d.store.cached(cand, task.dataset, task.epochs, self.d.prm, run_id=state["run_id"],
                                     iteration=state.get("iteration", 0) + 1)
        status = "new"
        if cached is not None:
            previous = cached.to_outcome()
            if repairable(previous.model_dump()):
                # Not a duplicate design but the same broken code again: it keeps its failure, and the
                # repair is told that its input came back unchanged.
                outcome = Outcome(**{**previous.model_dump(), "detail": {"repeat_of": cached.id},
                                     "error": "UNCHANGED: this exact code was already evaluated and failed; "
                                              "change the lines that cause the error.\n" + previous.error})
                status = "repeat"
            else:
                detail = {"cached_status": cached.status, "evaluation_id": cached.id}
                error = f"duplicate of {arch_id} (already evaluated: {cached.status})"
                parent = _parent(state)
                if parent is not None and parent.arch_id == arch_id:
                    # The child came back as its parent, line for line: the change was not made. Worth a
                    # repair (the router reads `parent_echo`), unlike a duplicate of any other design.
                    detail["parent_echo"] = True
                    error = ("UNCHANGED: this is the parent design itself; make the change asked for: "
                             + Triple(**state["triple"]).modification)
                outcome = Outcome(**{**previous.model_dump(), "status": "duplicate", "stage": "cache",
                                     "error": error, "detail": detail})
                status = "duplicate"
            update["outcome"] = outcome.model_dump()
            if state.get("first_status") is None:
                update["first_status"] = outcome.status
        return NodeResult(update, {"code_hash": arch_id, "novelty": novelty, "nearest": nearest, "status": status})

    def evaluate(self, state: AttemptState) -> NodeResult:
        task, run_id = _task(state), state["run_id"]
        iteration = state.get("iteration", 0) + 1
        cand = Candidate.from_state(state["candidate"])
        arch_id = cand.arch_id
        # Idempotent across a crash: if this very attempt was recorded before the checkpoint, reuse it.
        done = self.d.store.run_evaluation(run_id, iteration, arch_id)
        if done is not None:
            outcome = done.to_outcome()
        else:
            if self.d.ahead is None:  # planning ahead, the LLM works while this trains: it stays loaded
                self.d.llm.release_for_training()
            parent = _parent(state)
            # A child whose new layers forward never calls, or that computes exactly what its parent computes,
            # is its parent again at the cost of an epoch: it is stopped before training and redrafted (the
            # 1.5B built conv4 and left it out of forward; it added ReLUs it never called).
            req = EvalRequest.from_config(self.d.cfg.evaluator, code=cand.code, dataset=task.dataset,
                                          epochs=task.epochs, prm=self.d.prm, max_params=task.max_params,
                                          max_flops=task.max_flops, screen_min_accuracy=self._screen_bar(run_id),
                                          latency_batches=[1] if task.objective == "pareto" else [],
                                          unused_allowed=parent.unused if parent else None,
                                          parent_behaviour=parent.behaviour if parent else None)
            outcome = self.d.evaluator.evaluate(req)
            self.d.store.record_new(cand, f"llm:{self.d.llm.model}", outcome, dataset=task.dataset,
                                    epochs=task.epochs, prm=self.d.prm, hardware=self.d.hardware,
                                    run_id=run_id, iteration=iteration)
        update: dict = {"outcome": outcome.model_dump()}
        if state.get("first_status") is None:
            update["first_status"] = outcome.status
        return NodeResult(update,
                          {"code_hash": arch_id, "status": outcome.status, "accuracy": outcome.accuracy,
                           "params": outcome.params, "flops": outcome.flops, "latency_ms": _latency_ms(outcome.detail),
                           "error": outcome.error,
                           "diagnosis": outcome.diagnosis.kind if outcome.diagnosis else None,
                           "stage_seconds": outcome.seconds, "reused": done is not None},
                          train_s=sum(v for k, v in outcome.seconds.items() if k not in ("parse", "policy")))

    def _screen_bar(self, run_id: str) -> float | None:
        """The cascade's bar for this run's next design (None: cascade off, or no yardstick yet)."""
        loop, fraction = self.d.cfg.loop, self.d.cfg.evaluator.screen_fraction
        if not loop.cascade or not fraction:
            return None
        done = screened_designs(self.d.store.evaluations_for_run(run_id), fraction)
        return screen_bar(done, loop.cascade_top, loop.cascade_margin)

    # -- back in the loop ----------------------------------------------------------------------
    def record(self, state: LoopState) -> NodeResult:
        attempt = state["attempt"]
        outcome = Outcome(**attempt["outcome"])
        arch_id = attempt.get("arch_id")  # None when the attempt ended before its fingerprint
        parent_id, parent_acc = ((state.get("parent") or {}).get(k) for k in ("arch_id", "accuracy"))
        iteration = state.get("iteration", 0) + 1
        cached_ok = outcome.status == "duplicate" and outcome.detail.get("cached_status") == "ok"
        valid = outcome.status == "ok" or cached_ok
        same_as = self.d.store.same_size(state["run_id"], iteration, outcome.params, outcome.flops) \
            if outcome.status == "ok" and outcome.params is not None and outcome.flops is not None else None
        entry = HistoryEntry(iteration=iteration, triple=Triple(**state["triple"]), status=outcome.status,
                             accuracy=outcome.accuracy if valid else None, params=outcome.params,
                             error=outcome.error, arch_id=arch_id or "", novelty=attempt.get("novelty"),
                             diagnosis=outcome.diagnosis.model_dump(exclude_defaults=True) if outcome.diagnosis else None,
                             same_as=same_as, parent=parent_id, parent_accuracy=parent_acc)
        best = state.get("best")
        if outcome.status == "ok" and outcome.accuracy is not None and (
                best is None or outcome.accuracy > best["accuracy"]):
            best = BestDesign(arch_id=arch_id, code=attempt["code"], accuracy=outcome.accuracy,
                              params=outcome.params).model_dump()
        threshold = self.d.cfg.loop.novelty_threshold
        novel = outcome.status == "ok" and same_as is None and (
            attempt.get("novelty") is None or attempt["novelty"] >= threshold)
        stats = {
            "valid_first_attempt": float(attempt.get("first_status") in VALID),
            "valid_after_repair": float(outcome.status in VALID),
            "repaired": float(outcome.status in VALID and attempt.get("first_status") not in VALID),
            "screened": float(outcome.status == "screened"),
            "screen_saved_s": _screen_saved_s(outcome),
            "duplicates": float(outcome.status == "duplicate"),
            "novel": float(novel),
            "near_copies": float(outcome.status == "ok" and not novel),
            "accuracy_sum": outcome.accuracy if outcome.status == "ok" and outcome.accuracy else 0.0,
            f"status_{outcome.status}": 1.0,
        }
        # The run's active seconds come from the checkpointed stats, so a resumed run keeps counting
        # from where it stopped instead of starting its time budget afresh.
        active_s = sum(state.get("stats", {}).get(f"seconds_{k}", 0.0) for k in ("llm", "train", "other"))
        reason = stop_reason(iteration, state["max_iterations"], active_s,
                             self.d.cfg.loop.time_budget_s, best["accuracy"] if best else None,
                             self.d.cfg.loop.target_accuracy)
        return NodeResult({"iteration": iteration, "history": [entry.model_dump()], "best": best, "stats": stats,
                           "stop_reason": reason, "children": {parent_id: 1} if parent_id else {}},
                          {"status": outcome.status, "accuracy": outcome.accuracy, "params": outcome.params,
                           "code_hash": arch_id, "novelty": attempt.get("novelty"),
                           "first_status": attempt.get("first_status"), "repairs": attempt.get("repairs", 0),
                           "same_as": same_as, "error": outcome.error, "stop_reason": reason, "parent": parent_id})


def _code_hash(cand: Candidate) -> str | None:
    """The id a trace shows for a draft: its architecture id, none for code that does not parse."""
    return cand.arch_id if cand.parsed else None
