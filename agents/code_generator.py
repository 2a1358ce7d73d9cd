"""Code Generator agent: writes (or repairs) one complete LEMUR-style model module.

No example model is put in the prompt: measured on the 1.5B model, a skeleton example was copied
35% of the time and the requested design ignored. The best design so far is shown as its score and
the kinds of layer it uses, not as code: shown its code, the 1.5B model returned it with a small tweak
(6 of 10 valid designs in a 30-iteration run were near-copies); shown its layers with their widths, it
rebuilt the same network (7 of 8 valid designs in 14 iterations had an earlier one's exact parameter and
FLOP counts). The system prompt gives rules against the measured failure modes instead, and the user
prompt insists on the instruction.
The prompt is kept within a character budget because the model has a 4096-token context and needs
~1200 of it for the reply.
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel

from nasgraph.agents.edits import apply_edits
from nasgraph.agents.extract import ensure_imports, extract
from nasgraph.agents.feedback import error_hint, history_block, key_error_line, offending_line
from nasgraph.agents.llm_call import AgentError, call
from nasgraph.agents.prompts import RenderedPrompt, pair_sha, render
from nasgraph.agents.schemas import BestDesign, Generation, HistoryEntry, Parent, Task
from nasgraph.dataset_ref import parse
from nasgraph.tools.fmt import human

__all__ = ["AgentError", "Generation", "Task", "build_prompt", "compact_code", "generate", "layer_kinds",
           "redraft_instruction", "repair", "shorten", "task_values"]

# ~2.9k tokens are left for the prompt in a 4096 context with a 1200-token reply; the system prompt
# takes ~500, so the user part gets about 6000 characters (code runs ~3 characters per token).
USER_CHAR_BUDGET = 6000
BLOCK_CHARS = 1400  # a retrieved block longer than this is not shown (the retriever skips it)
REPAIR_CODE_CHARS = 5000
ERROR_CHARS = 600
TRUNCATED = "# ... (truncated)"  # the line compact_code ends a cut module with
PARENT_CODE_CHARS = 3500  # a parent longer than this is cut (and the child asked to be shorter)
_DESIGN = re.compile(r"#\s*design\s*:\s*(.+)", re.I)  # the `# Design: ...` line the system prompt asks for


def task_values(task: Task) -> dict[str, object]:
    """The task placeholders shared by the generator's and the improver's templates. A user's dataset is
    named by its folder's or file's name, never its path: the shape and class count come beside it."""
    _, c, h, w = task.in_shape
    return {
        "dataset": parse(task.dataset).short_name,
        "in_shape": tuple(task.in_shape),
        "classes": task.classes,
        "max_params": human(task.max_params),
        "max_flops": human(task.max_flops),
        "epochs": task.epochs,
        "goal": f"User's goal: {task.goal.strip()}\n" if task.goal.strip() else "",
        "channels": c,
        "height": h,
        "width": w,
    }


def _docstring_lines(code: str) -> set[int]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set()
    lines: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def compact_code(code: str, max_chars: int) -> str:
    """Code without comments, docstrings and blank lines, cut at a line boundary to `max_chars`."""
    skip = _docstring_lines(code)
    kept = [ln.rstrip() for i, ln in enumerate(code.splitlines(), 1)
            if i not in skip and ln.strip() and not ln.lstrip().startswith("#")]
    out: list[str] = []
    size = 0
    for ln in kept:
        if size + len(ln) + 1 > max_chars:
            indent = ln[: len(ln) - len(ln.lstrip())]
            out.append(f"{indent}{TRUNCATED}")
            break
        out.append(ln)
        size += len(ln) + 1
    return "\n".join(out)


def layer_kinds(code: str) -> str:
    """'Conv2d x5, BatchNorm2d x5, Linear x2': the torch.nn layers a module builds, by kind and without
    widths; '' when the code does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return ""
    kinds = Counter(n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute) and n.func.attr[:1].isupper()
                    and ast.unparse(n.func.value) in ("nn", "torch.nn"))
    return ", ".join(f"{name} x{count}" for name, count in kinds.most_common())


def _best_section(best: BestDesign | None) -> str:
    if best is None:
        return ""
    kinds = layer_kinds(best.code)
    return (f"Best design so far: accuracy {best.accuracy:.3f}, {human(best.params)} parameters"
            + (f", built from {kinds}" if kinds else "")
            + ". Write the new design as a fresh module of your own, not a rebuild of this one.\n")


def _blocks_section(blocks: Sequence[str], max_blocks: int) -> str:
    chosen = [compact_code(b, BLOCK_CHARS) for b in blocks[:max_blocks] if b.strip()]
    if not chosen:
        return ""
    body = "\n\n".join(chosen)
    return (f"Tested building blocks you may reuse or adapt (define them in your module; import nothing "
            f"but torch and math):\n```python\n{body}\n```\n")


def _generation(llm: BaseChatModel, system: RenderedPrompt, user: RenderedPrompt) -> Generation:
    reply = call(llm, system, user, "code_generator")
    ex = extract(reply.text)
    return Generation(
        code=ex.code, extract_source=ex.source, added_imports=ex.added_imports, reply=reply.text,
        prompt=user.text, prompt_name=user.name, prompt_sha=pair_sha(system, user), tokens_in=reply.tokens_in,
        tokens_out=reply.tokens_out, tokens_estimated=reply.estimated, seconds=round(reply.seconds, 3), cut=reply.cut,
    )


def build_prompt(task: Task, instruction: str, history: list[HistoryEntry], best: BestDesign | None,
                 blocks: Sequence[str] = (), novelty_threshold: float = 0.1) -> RenderedPrompt:
    """The user prompt, shrunk (blocks first, then the history) to fit the budget."""
    instruction = instruction.strip() or "Design a sound, efficient convolutional network for this task."
    n_blocks, n_history = len(blocks), 8
    while True:
        user = render(
            "code_generator.user", **task_values(task), instruction=instruction,
            history=history_block(history, novelty_threshold, limit=n_history),
            best=_best_section(best), blocks=_blocks_section(blocks, n_blocks),
        )
        if len(user.text) <= USER_CHAR_BUDGET:
            return user
        if n_blocks > 0:
            n_blocks -= 1
        elif n_history > 2:
            n_history -= 2
        else:
            return user  # only the instruction or the goal can be this long; send it as is


def child_prompt(task: Task, instruction: str, history: list[HistoryEntry], parent: Parent,
                 novelty_threshold: float = 0.1, template: str = "code_generator.child") -> RenderedPrompt:
    """The user prompt for one change to a parent design: its code, shown compact, and the change.
    Showing a design's code made the 1.5B model return near-copies of it; here a near-copy with the
    named change is exactly what is asked for."""
    code = compact_code(parent.code, PARENT_CODE_CHARS)
    n_history = 8
    while True:
        user = render(template, **task_values(task), history=history_block(history, novelty_threshold,
                                                                           limit=n_history),
                      accuracy=f"{parent.accuracy:.3f}", params=human(parent.params), code=code,
                      instruction=instruction.strip())
        if len(user.text) <= USER_CHAR_BUDGET or n_history <= 2:
            return user
        n_history -= 2


def _edit_generation(llm: BaseChatModel, task: Task, instruction: str, history: list[HistoryEntry],
                     parent: Parent, code: str, novelty_threshold: float) -> Generation:
    """One change to `parent` asked for as SEARCH/REPLACE blocks on its compact `code`. A reply with no
    block is read as a whole module (the model may ignore the format); blocks that match nowhere leave
    the parent unchanged, which the fingerprint node reports as a parent echo (a redraft follows)."""
    user = child_prompt(task, instruction, history, parent, novelty_threshold, template="code_generator.child_edit")
    # Read as a whole module first: the reply may hold no block at all.
    gen = _generation(llm, render("code_generator.edit_system"), user)
    done = apply_edits(code, gen.reply)
    counts = {"edit_blocks": done.blocks, "edits_applied": done.applied}
    if done.blocks == 0:
        return gen.model_copy(update=counts)
    new, added = ensure_imports(done.code) if done.applied else (parent.code, [])
    return gen.model_copy(update={"code": new, "extract_source": "edit", "added_imports": added, **counts})


def generate(llm: BaseChatModel, task: Task, instruction: str, history: list[HistoryEntry],
             best: BestDesign | None, blocks: Sequence[str] = (), novelty_threshold: float = 0.1,
             parent: Parent | None = None, child_format: str = "module") -> Generation:
    """Ask for a new model module implementing `instruction` (as a change to `parent` when one is
    given, written as a whole module or as edits of it); raises AgentError if the LLM call fails."""
    if parent is not None and child_format == "edit":
        code = compact_code(parent.code, PARENT_CODE_CHARS)
        if TRUNCATED not in code:  # edits need every line of the parent to be shown
            return _edit_generation(llm, task, instruction, history, parent, code, novelty_threshold)
    system = render("code_generator.system")
    user = (child_prompt(task, instruction, history, parent, novelty_threshold) if parent is not None
            else build_prompt(task, instruction, history, best, blocks, novelty_threshold))
    return _generation(llm, system, user)


def _short_error(error: str) -> str:
    """The error's last lines (the traceback's end says the most) within ERROR_CHARS."""
    lines = [ln.rstrip() for ln in error.strip().splitlines() if ln.strip()]
    out: list[str] = []
    for ln in reversed(lines):
        if sum(len(x) + 1 for x in out) + len(ln) > ERROR_CHARS:
            break
        out.insert(0, ln)
    return "\n".join(out) or key_error_line(error)[:ERROR_CHARS] or "(no error text)"


def repair(llm: BaseChatModel, task: Task, code: str, error: str, status: str,
           diagnosis: dict | None = None) -> Generation:
    """Ask for the complete module fixed, given the evaluator's status, error text and diagnosis."""
    line = offending_line(code, error)
    hint = error_hint(status, diagnosis) or "Read the error and fix its cause."
    if len(code) > REPAIR_CODE_CHARS:
        code = code[:REPAIR_CODE_CHARS] + "\n# ... (truncated: the module was too long; write a shorter one)"
    system = render("code_generator.system")
    user = render(
        "code_generator.repair", in_shape=tuple(task.in_shape), classes=task.classes, status=status,
        error=_short_error(error), line=f"Offending {line}" if line else "", hint=hint, code=code.rstrip(),
    )
    return _generation(llm, system, user)


def shorten(llm: BaseChatModel, task: Task, code: str) -> Generation:
    """Ask again, much shorter, for a design whose reply was cut at the token limit. Shown the unfinished
    code and its error, the 1.5B model wrote the same long module and was cut again: in fm15-i and fm15-k,
    all 7 iterations whose first reply was cut failed, and 9 of their 14 repairs were cut too. So the prompt
    names the design and its layers, not the code."""
    design = next((m.group(1) for ln in code.splitlines() if (m := _DESIGN.match(ln.strip()))), "")
    kinds = layer_kinds(code)
    system = render("code_generator.system")
    user = render(
        "code_generator.shorten", in_shape=tuple(task.in_shape), classes=task.classes, lines=len(code.splitlines()),
        design=f"Its design: {design}\n" if design else "",
        kinds=f"Its layers so far: {kinds}\n" if kinds else "",
    )
    return _generation(llm, system, user)


def redraft_instruction(instruction: str, error: str, status: str, diagnosis: dict | None = None) -> str:
    """The instruction for a new draft of the same design, told how the last draft failed. Shown its failed
    code to fix, the 1.5B model returned it unchanged in 24 of 38 repairs in fm15-k, and none of the 38
    gave a valid design; fresh drafts, after the rule fixes, were valid in 11 of 30 iterations."""
    hint = error_hint(status, diagnosis)
    return (f"{instruction.strip()}\nThe last draft of this design failed ({status}: {key_error_line(error)})."
            + (f" {hint}" if hint else "") + " Write a new draft that cannot hit that error.")
