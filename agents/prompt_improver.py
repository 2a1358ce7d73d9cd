"""Prompt Improver agent: reads the last outcome and the history window, returns a diagnostic triple.

Small local models are unreliable at strict JSON, so the prompt asks for three labelled lines and the
parser accepts those loosely (markdown, synonyms, multi-line values) as well as JSON. When nothing
usable comes back, a deterministic triple derived from the outcome keeps the loop moving: the next
move from a rotating list of architectural changes (after a failure, with the error to avoid). The same
list is offered in the prompt: left to itself, the 1.5B improver proposed layers that do not exist
(nn.GlobalAvgPool2d) or generic advice ("use a different block type") in half of a 30-iteration run.
"""
from __future__ import annotations

import random
import re
from difflib import SequenceMatcher

from langchain_core.language_models import BaseChatModel

from nasgraph.agents.code_generator import layer_kinds, task_values
from nasgraph.agents.extract import json_objects
from nasgraph.agents.feedback import error_hint, history_block, is_near_copy, key_error_line, outcome_text
from nasgraph.agents.llm_call import AgentError, call
from nasgraph.agents.prompts import pair_sha, render
from nasgraph.agents.schemas import BestDesign, HistoryEntry, Improvement, Parent, Task, Triple
from nasgraph.tools.fmt import human

__all__ = ["AgentError", "BestDesign", "HistoryEntry", "Improvement", "Triple", "improve", "window",
           "parse_triple", "fallback_triple", "drawn_triple", "MOVES", "PARENT_MOVES"]

# Architectural moves the fallback rotates through, so a loop whose improver never answers usefully
# still explores different families instead of re-asking for the same network.
MOVES = (
    "add residual blocks: a class ResBlock(nn.Module) with two 3x3 convs that keep the channel count "
    "(padding=1) and BatchNorm, returning relu(out + x); put one after each downsampling conv",
    "replace the 3x3 convs with depthwise-separable convs: a depthwise Conv2d(c, c, 3, padding=1, groups=c) "
    "then a 1x1 Conv2d(c, c_out); use the savings to widen the network",
    "use MobileNetV2 inverted bottlenecks: 1x1 Conv2d from c to 4c, depthwise Conv2d(4c, 4c, 3, padding=1, "
    "groups=4c), 1x1 Conv2d back to c, added to the block's input",
    "add squeeze-and-excitation after each conv stage of c channels: x * torch.sigmoid(b(relu(a(pool(x))))) "
    "with a = Conv2d(c, c // 4, 1), b = Conv2d(c // 4, c, 1), pool = AdaptiveAvgPool2d(1)",
    "use Inception-style blocks: parallel 1x1, 3x3 (padding=1) and 5x5 (padding=2) conv branches on the "
    "same input joined by torch.cat(..., dim=1); the next layer takes the summed channel count",
    "replace max-pooling with stride-2 convolutions and add one more conv stage with doubled channels",
    "use a wide shallow network: two stages of 3x3 convs with 48 and 96 channels, BatchNorm and GELU, "
    "each stage ending in a stride-2 max-pool",
    "use dense connectivity: in a stage, each 3x3 conv takes torch.cat of the stage input and all previous "
    "conv outputs, so its in_channels is the sum of theirs",
)
# Changes to a parent (search = parents): edits that keep its design and spend the budget on what one
# epoch rewards. The family moves above are for fresh designs: offered to a parent, the 1.5B improver
# turned 4 of 6 parents into depthwise-separable or inverted-bottleneck variants; the 6 children averaged
# -0.005 against their parents (docs/2026-11-28-search.md).
PARENT_MOVES = (
    "widen every conv stage by half (e.g. 32 -> 48, 64 -> 96 channels), keeping within the FLOP budget",
    "add one more 3x3 conv (padding=1) with BatchNorm and ReLU to the stage at the lowest resolution",
    "add BatchNorm after every conv that has none",
    "add a residual connection around each pair of 3x3 convs that keep the channel count",
    "move width to the later stages: fewer channels at full resolution, twice as many after the last "
    "downsampling",
    "replace the classifier's large Linear on the flattened map with AdaptiveAvgPool2d(1), a Linear to "
    "128 units with ReLU and Dropout(0.2), then the output Linear",
    "replace ReLU with GELU everywhere",
    "add squeeze-and-excitation to the last conv stage only",
)


def drawn_triple(parent: Parent, rng: random.Random) -> Triple:
    """One of PARENT_MOVES for `parent`, drawn without the LLM (loop.parent_move = drawn)."""
    return Triple(problem=f"parent accuracy {parent.accuracy:.3f} with {human(parent.params)} parameters",
                  modification=rng.choice(PARENT_MOVES),
                  expected_effect="higher accuracy within the parameter and FLOP budget")


EXPLORE = ("Make the architecture structurally different from all earlier designs "
           "(another block type, depth or layout), not a variation of the same network.")

_LABELS = {
    "problem": ("problem", "diagnosis", "issue", "cause"),
    "modification": ("suggested modification", "modification", "proposed change", "change", "fix",
                     "proposal", "suggestion"),
    "expected_effect": ("expected effect", "expected_effect", "expected", "effect", "expected outcome"),
}
_LABEL_ALT = "|".join(sorted((re.escape(s) for v in _LABELS.values() for s in v), key=len, reverse=True))
# A label at the start of a line, allowing markdown decoration: "**PROBLEM:**", "- Problem -", "1. Fix:"
_LABEL_LINE = re.compile(
    rf"^[ \t>*_#\-\d.)]*({_LABEL_ALT})[ \t*_]*[:\-=][ \t*_]*(.*)$", re.I | re.M)


def window(history: list[HistoryEntry], k: int) -> list[HistoryEntry]:
    """The last k entries, oldest first: a constant prompt size however long the run."""
    if k < 0:
        raise ValueError(f"window size must be >= 0, got {k}")
    return list(history[-k:]) if k else []


def _field_of(label: str) -> str:
    label = label.lower().replace("_", " ").strip()
    for field, names in _LABELS.items():
        if label in (n.replace("_", " ") for n in names):
            return field
    raise AssertionError(label)  # unreachable: the regex only matches known labels


def _clean(text: str) -> str:
    return " ".join(text.replace("**", "").split()).strip(" \"'`")


def _meaningful(value: str) -> bool:
    """False for echoed placeholders such as '...' or '<what limited it>'."""
    return bool(re.search(r"[A-Za-z]{2}", value)) and not re.fullmatch(r"<[^>]*>", value)


def _parse_labelled(reply: str) -> dict[str, str]:
    matches = list(_LABEL_LINE.finditer(reply))
    found: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(reply)
        # The value runs on over wrapped lines until the next label, a blank line or a code fence.
        rest = re.split(r"\n\s*\n|```", reply[m.end():end], maxsplit=1)[0]
        value = _clean(m.group(2) + " " + rest)
        field = _field_of(m.group(1))
        if _meaningful(value) and field not in found:
            found[field] = value
    return found


def _parse_json(reply: str) -> dict[str, str]:
    for data in json_objects(reply):
        found: dict[str, str] = {}
        for key, value in data.items():
            label = str(key).lower().replace("_", " ").strip()
            for field, names in _LABELS.items():
                if label in (n.replace("_", " ") for n in names) and field not in found \
                        and _meaningful(_clean(str(value))):
                    found[field] = _clean(str(value))
        if found.get("modification"):
            return found
    return {}


def parse_triple(reply: str) -> tuple[dict[str, str], str]:
    """Fields found in the reply and how ('labelled' / 'json'); a modification is required."""
    for mode, parser in (("labelled", _parse_labelled), ("json", _parse_json)):
        found = parser(reply)
        if found.get("modification"):
            return found, mode
    return {}, "fallback"


def _repeats(modification: str, history: list[HistoryEntry], ratio: float = 0.8) -> bool:
    """The modification is (nearly) one the window already holds: the 1.5B improver asked for the same
    change five iterations in a row, whatever the prompt said."""
    def norm(text: str) -> str:
        return " ".join(text.replace(EXPLORE, "").lower().split())[:200]
    new = norm(modification)
    return any(SequenceMatcher(None, new, norm(e.triple.modification)).ratio() >= ratio for e in history)


def _untried_moves(history: list[HistoryEntry], moves: tuple[str, ...] = MOVES) -> list[str]:
    tried = " ".join(e.triple.modification for e in history).lower()
    return [m for m in moves if m.lower() not in tried]


def _next_move(history: list[HistoryEntry], last: HistoryEntry | None, moves: tuple[str, ...] = MOVES) -> str:
    """The next move in the rotation, skipping moves the window already tried."""
    untried = _untried_moves(history, moves)
    start = (last.iteration + 1) if last else len(history)
    for i in range(len(moves)):
        move = moves[(start + i) % len(moves)]
        if move in untried:
            return move
    return moves[start % len(moves)]


def fallback_triple(last: HistoryEntry | None, history: list[HistoryEntry], best: BestDesign | None,
                    novelty_threshold: float = 0.1, moves: tuple[str, ...] = MOVES) -> Triple:
    """A deterministic triple from the outcome alone, for when the LLM's reply is unusable."""
    if last is None:
        return Triple(problem="no design has been evaluated yet",
                      modification="a small CNN: three conv stages (32, 64, 128 channels) with BatchNorm, "
                                   "ReLU and stride-2 downsampling, then global average pooling and a Linear",
                      expected_effect="a valid, fast baseline to improve on")
    if is_near_copy(last, novelty_threshold):
        what = "a duplicate" if last.status == "duplicate" else f"the same network as #{last.same_as}" \
            if last.same_as is not None else f"a near copy (novelty {last.novelty:.2f})"
        return Triple(problem=f"the last design was {what} of an earlier one",
                      modification=f"{_next_move(history, last, moves)}. {EXPLORE}",
                      expected_effect="a genuinely new design, so the search explores instead of repeating")
    if last.status != "ok":
        first = key_error_line(last.error) or last.status
        hint = error_hint(last.status, last.diagnosis)
        return Triple(problem=f"the last model failed with {last.status}: {first}",
                      modification=f"{_next_move(history, last, moves)}. Avoid the last model's error ({first}). "
                                   f"{hint}".strip(),
                      expected_effect="a model that builds, runs and trains within the budget")
    acc = f"{last.accuracy:.3f}" if last.accuracy is not None else "unknown"
    ref = f"; best so far {best.accuracy:.3f}" if best is not None else ""
    return Triple(problem=f"accuracy {acc} with {human(last.params)} parameters{ref}",
                  modification=_next_move(history, last, moves),
                  expected_effect="higher accuracy within the parameter and FLOP budget")


def _directive(last: HistoryEntry | None, explore: bool) -> str:
    if last is None:
        return "This is the first model: propose a simple, sound starting design for this task."
    if explore:
        return ("The last model repeated an earlier design. Propose a structurally different architecture "
                "(another block type, depth or layout), not a small tweak.")
    if last.status != "ok":
        # Its repairs are spent and the generator never sees its code again: asking to "fix" it made
        # the 1.5B improver repeat one error's fix for many iterations.
        hint = error_hint(last.status, last.diagnosis)
        return ("The last model failed even after repairs and is dropped. Say what caused the error, then "
                "propose the next design to build, one that cannot hit that error."
                + (f" Hint: {hint}" if hint else ""))
    return ("Propose one change likely to raise accuracy within the budget. "
            "Do not repeat a change already listed in the history.")


def _last_text(last: HistoryEntry | None, threshold: float) -> str:
    if last is None:
        return "(none: nothing has been evaluated yet)"
    text = f"#{last.iteration} tried: {last.triple.modification} -> {outcome_text(last, threshold)}"
    if last.status not in ("ok", "duplicate") and last.error.strip():
        lines = [ln for ln in last.error.strip().splitlines() if ln.strip()][-3:]
        text += "\nError (last lines):\n" + "\n".join(ln[:200] for ln in lines)
    return text


def _parent_text(parent: Parent | None, max_flops: int) -> str:
    if parent is None:
        return ""
    kinds = layer_kinds(parent.code)
    return (f"Parent to improve (chosen from this run's archive): accuracy {parent.accuracy:.3f} with "
            f"{human(parent.params)} parameters and {human(parent.flops)} FLOPs"
            + (f" ({parent.flops / max_flops:.0%} of the FLOP budget)" if parent.flops and max_flops else "")
            + (f", {parent.latency_ms:.2f} ms per image" if parent.latency_ms is not None else "")
            + (f", built from {kinds}" if kinds else "")
            + f" ({parent.arch_id}).\n")


PARENT_DIRECTIVE = ("Propose ONE change to the parent design that is likely to raise its accuracy within the "
                    "budget; name the exact layers and widths to add, remove or change.")
PARETO_OBJECTIVE = ("Objective: the trade-off of accuracy, parameters and batch-1 latency. A design counts when no "
                    "other is at least as accurate, as small and as fast; a smaller or faster model at about the "
                    "same accuracy is as welcome as a more accurate one.\n")
PARETO_DIRECTIVE = ("Propose ONE change to the parent design that makes it smaller or faster at about the same "
                    "accuracy, or more accurate at about the same size; name the exact layers and widths.")


def improve(llm: BaseChatModel, task: Task, last: HistoryEntry | None, history: list[HistoryEntry],
            best: BestDesign | None, user_goal: str = "", novelty_threshold: float = 0.1,
            parent: Parent | None = None) -> tuple[Triple, Improvement]:
    """Diagnose the last outcome and propose the next change (to `parent` when one is given); raises
    AgentError if the LLM call fails."""
    explore = last is not None and is_near_copy(last, novelty_threshold)
    values = {k: v for k, v in task_values(task).items() if k not in ("channels", "height", "width")}
    goal = user_goal.strip() or task.goal.strip()
    values["goal"] = f"User's goal: {goal}\n" if goal else ""
    pareto = task.objective == "pareto"
    if pareto:
        values["goal"] += PARETO_OBJECTIVE
    moves = PARENT_MOVES if parent is not None and not pareto else MOVES  # a repeat or a fallback draws from these too
    best_text = (f"accuracy {best.accuracy:.3f} with {human(best.params)} parameters ({best.arch_id})"
                 if best else "(none yet)")
    system = render("prompt_improver.system")
    # The last entry is shown in full under "Last result"; don't spend tokens on it twice.
    earlier = [e for e in history if last is None or e.iteration != last.iteration]
    user = render("prompt_improver.user", **values, history=history_block(earlier, novelty_threshold),
                  best=best_text, parent=_parent_text(parent, task.max_flops), last=_last_text(last, novelty_threshold),
                  directive=(PARETO_DIRECTIVE if pareto else PARENT_DIRECTIVE) if parent else _directive(last, explore),
                  moves="\n".join(f"- {m}" for m in _untried_moves(history, moves)) or "- (all tried: propose your own)")
    reply = call(llm, system, user, "prompt_improver")

    found, mode = parse_triple(reply.text)
    fallback = fallback_triple(last, history, best, novelty_threshold, moves)
    repeated = mode != "fallback" and _repeats(found["modification"], history)
    if mode == "fallback":
        triple = fallback
    else:
        triple = Triple(problem=found.get("problem") or fallback.problem,
                        modification=_next_move(history, last, moves) if repeated else found["modification"],
                        expected_effect=found.get("expected_effect", ""))
        if explore and parent is None and "different" not in triple.modification.lower():
            # The small model tends to propose a tweak of what it just repeated; insist on a new design.
            triple = triple.model_copy(update={"modification": f"{triple.modification}. {EXPLORE}"})
    meta = Improvement(
        prompt_name=user.name, prompt_sha=pair_sha(system, user), tokens_in=reply.tokens_in,
        tokens_out=reply.tokens_out, tokens_estimated=reply.estimated, seconds=round(reply.seconds, 3),
        reply=reply.text, prompt=user.text, parse_mode=mode, explore=explore, repeated=repeated,
    )
    return triple, meta
