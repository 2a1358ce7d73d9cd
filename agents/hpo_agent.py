"""Hyperparameter agent: an LLM proposes the next trial's setting from the search space and the trials so far.

The reply is asked for as one JSON object; small models also write `key: value` lines, fenced blocks
and prose around them, so the parser takes the first JSON object that names a key of the space and
then labelled lines. What comes back is made to fit the space (`SearchSpace.validate`: clamped into
ranges, choices matched by spelling); a key the reply leaves out is taken from the best trial so far.
A reply with no usable value at all falls back to a seeded random setting, marked `fallback`, so a
search never stops on a bad reply and the fallbacks are counted, not hidden. A setting that repeats
an earlier trial, or lies within 2% of one (the small model often re-proposes the best one with its
lr changed in the third digit), is moved by a small seeded step,
marked `repeated`: a repeat would cost a trial and teach nothing.
"""
from __future__ import annotations

import json
import math
import random
import re
from typing import Literal

import optuna
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from nasgraph.agents.extract import json_objects
from nasgraph.agents.llm_call import call
from nasgraph.agents.prompts import pair_sha, render
from nasgraph.agents.schemas import CallMeta
from nasgraph.dataset_ref import parse
from nasgraph.tools.hpo.prior import Prior
from nasgraph.tools.hpo.space import ChoiceDim, Params, SearchSpace, Validated, fmt_value
from nasgraph.tools.hpo.study import Proposal, Sampler, Trial

REPEAT_STEP = 0.1  # a repeated setting moves by up to this share of each numeric range
# Settings closer than this (unit-scaled Euclidean distance, see SearchSpace.distance) count as a repeat:
# the 0.5B model's "new" settings often changed the lr in its third digit, which teaches nothing.
REPEAT_DISTANCE = 0.02


class HpoCall(CallMeta):
    """One proposal: the LLM call's cost and prompt, how the reply was read, what had to be repaired."""
    parse_mode: Literal["json", "lines", "fallback"]
    missing: list[str] = Field(default_factory=list, description="keys the reply left out (taken from the best trial)")
    clamped: list[str] = Field(default_factory=list, description="values moved into the space")
    invalid: list[str] = Field(default_factory=list, description="values that were not usable (taken from the best trial)")
    repeated: bool = Field(False, description="the reply repeated an earlier trial's setting and was moved")


class Architecture(BaseModel):
    """What the agent is told about the model being tuned."""
    name: str
    dataset: str
    summary: str = Field("", description="one line: family, layer kinds, size")


# --- reading the reply -----------------------------------------------------------------------------

def _lines(reply: str, names: list[str]) -> dict[str, str]:
    """`lr: 0.01`, `- **batch** = 64`, `"transform": "norm_64",`: one value per known key."""
    alt = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"^[\s>*_\-\d.)\"'`]*({alt})[\s*_\"'`]*[:=]\s*[\"'`]?([^\"'`,;\n]+)", re.I | re.M)
    found: dict[str, str] = {}
    for m in pattern.finditer(reply):
        found.setdefault(m.group(1).lower(), m.group(2).strip())
    return found


def parse_reply(reply: str, space: SearchSpace) -> tuple[dict[str, object], Literal["json", "lines", "fallback"]]:
    """The raw values the reply gives for the space's keys, and how they were found."""
    lower = {n.lower() for n in space.names}
    for data in json_objects(reply):
        if any(str(k).strip().lower() in lower for k in data):
            return data, "json"
    found = _lines(reply, space.names)
    if found:
        return found, "lines"
    return {}, "fallback"


# --- the prompt -------------------------------------------------------------------------------------

def _setting(params: Params) -> str:
    return ", ".join(f"{k} {fmt_value(v)}" for k, v in params.items())


def trials_block(trials: list[Trial]) -> str:
    """The trials in the order they ran: a prompt that only grows at its end lets llama.cpp reuse the
    evaluated prefix from the previous call (best-first order re-evaluated the whole list each time)."""
    if not trials:
        return "(none yet)"
    lines = []
    for i, t in enumerate(trials, 1):
        result = f"accuracy {t.accuracy:.4f}" if t.accuracy is not None else f"failed ({t.status})"
        lines.append(f"{i}. {_setting(t.params)} -> {result}")
    return "\n".join(lines)


def _best_line(trials: list[Trial]) -> str:
    done = [(i, t) for i, t in enumerate(trials, 1) if t.accuracy is not None]
    if not done:
        return ""
    i, t = max(done, key=lambda it: it[1].value)
    return f"Best so far: trial {i}, accuracy {t.accuracy:.4f}.\n"


def _example(space: SearchSpace) -> str:
    """A filled-in example at the middle of the space (log dimensions at their geometric middle, the first
    choice). With placeholders instead (`<number>`), the 0.5B model answered with the range's lower edges."""
    mid: dict[str, object] = {}
    for d in space.dims:
        if isinstance(d, ChoiceDim):
            mid[d.name] = d.choices[0]
        else:
            v = math.sqrt(d.low * d.high) if d.log and d.low > 0 else (d.low + d.high) / 2
            mid[d.name] = int(round(v)) if d.kind == "int" else float(f"{v:.3g}")
    return json.dumps(mid)


def prior_block(prior: Prior | None, space: SearchSpace) -> str:
    """The settings LEMUR's records favour on this dataset (other models' runs), or nothing. A key a
    recorded run lacks is shown filled from a fixed sample of the space."""
    if prior is None or not prior.settings:
        return ""
    return (f"Settings that did best for other models on {prior.dataset} (LEMUR's recorded runs of "
            f"{prior.judges} models):\n{prior.describe(space, space.sample(random.Random(0)))}\n\n")


def _directive(trials: list[Trial], budget: int) -> str:
    """Explore for the first third of the budget, then refine the best: told only "beat the best", the
    0.5B model re-proposed its first setting with the lr changed in the third digit. (Measured: the
    explore directive did not change that for the 0.5B either; see docs/2026-11-27-hpo.md.)"""
    if not trials:
        return "No trial has run yet: propose a sound first setting for this model and dataset."
    left = budget - len(trials)
    if len(trials) < max(2, budget // 3):
        return (f"{left} trial(s) left. Explore: propose a setting unlike every trial above (another order of "
                "magnitude of lr, another batch size, another value of each other key), to learn which region works.")
    return (f"{left} trial(s) left. Refine: propose a new setting near the best trial, changing one or two of its "
            "values in the direction the better trials point, likely to beat it.")


def _best_or_random(space: SearchSpace, trials: list[Trial], rng: random.Random) -> Params:
    done = [t for t in trials if t.accuracy is not None]
    return dict(max(done, key=lambda t: t.value).params) if done else space.sample(rng)


def _nudge(params: Params, space: SearchSpace, rng: random.Random) -> Params:
    """A setting near `params`: each numeric value moved by up to REPEAT_STEP of its range (log scale
    where the dimension is), choices kept."""
    out = dict(params)
    for d in space.dims:
        if isinstance(d, ChoiceDim):
            continue
        u = min(max(d.unit(out[d.name]) + rng.uniform(-REPEAT_STEP, REPEAT_STEP), 0.0), 1.0)
        if d.log:
            v = math.exp(math.log(d.low) + u * (math.log(d.high) - math.log(d.low)))
        else:
            v = d.low + u * (d.high - d.low)
        out[d.name] = int(round(v)) if d.kind == "int" else v
    return out


def propose(llm: BaseChatModel, architecture: Architecture, space: SearchSpace, trials: list[Trial], budget: int,
            rng: random.Random, prior: Prior | None = None) -> tuple[Params, HpoCall]:
    """The next setting to try (inside `space`) and how it was obtained; raises AgentError if the LLM call fails."""
    system = render("hpo_agent.system")
    user = render("hpo_agent.user", architecture=architecture.summary or architecture.name,
                  dataset=parse(architecture.dataset).short_name, space=space.describe(),
                  prior=prior_block(prior, space), done=len(trials), budget=budget,
                  trials=trials_block(trials), best=_best_line(trials), directive=_directive(trials, budget),
                  keys=", ".join(space.names), example=_example(space))
    reply = call(llm, system, user, "hpo_agent")
    raw, mode = parse_reply(reply.text, space)
    fill = _best_or_random(space, trials, rng)
    checked = space.validate(raw, fill) if mode != "fallback" else Validated(params={})
    if mode != "fallback" and len(checked.missing) + len(checked.invalid) == len(space.names):
        mode = "fallback"  # named a key but gave no usable value
    params = checked.params if mode != "fallback" else space.sample(rng)
    repeated = any(space.distance(params, t.params) < REPEAT_DISTANCE for t in trials)
    if repeated:
        params = _nudge(params, space, rng)
    meta = HpoCall(prompt_name=user.name, prompt_sha=pair_sha(system, user), tokens_in=reply.tokens_in,
                   tokens_out=reply.tokens_out, tokens_estimated=reply.estimated, seconds=round(reply.seconds, 3),
                   reply=reply.text, prompt=user.text, parse_mode=mode, missing=checked.missing,
                   clamped=checked.clamped, invalid=checked.invalid, repeated=repeated)
    return params, meta


class LLMSampler(Sampler):
    """The agent as a sampler: each proposal is enqueued into the study as fixed parameters, with how
    it was read as trial attributes. `llm_at(step)` gives the chat model for a step (a per-step seed).
    With a `prior` (tools.hpo.prior), the prompt also shows the settings LEMUR's records favour."""
    name = "llm"

    def __init__(self, llm_at, architecture: Architecture, budget: int, prior: Prior | None = None) -> None:
        self.llm_at = llm_at
        self.architecture = architecture
        self.budget = budget
        self.prior = prior
        self.name = "llm+prior" if prior is not None else "llm"  # type: ignore[misc]
        self.calls: list[HpoCall] = []

    def optuna_sampler(self, seed: int, trials: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)  # never used: every trial is enqueued

    def propose(self, space: SearchSpace, trials: list[Trial], seed: int) -> Proposal:
        step = len(trials)
        rng = random.Random(f"{seed}:{step}")
        params, meta = propose(self.llm_at(seed * 1000 + step), self.architecture, space, trials, self.budget, rng,
                               self.prior)
        self.calls.append(meta)
        attrs = {"parse_mode": meta.parse_mode, "repeated": meta.repeated, "missing": meta.missing,
                 "clamped": meta.clamped, "invalid": meta.invalid, "llm_seconds": meta.seconds,
                 "tokens_out": meta.tokens_out, "reply": meta.reply[:500]}
        return Proposal(params=params, source="fallback" if meta.parse_mode == "fallback" else "llm", attrs=attrs)
