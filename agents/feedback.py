"""Turn evaluation results into the short text a small model can act on.

The hints target the failure modes measured with the 1.5B generator (DESIGN.md): wrong flatten size,
conv after flatten, `groups` not dividing channels, undefined attributes, invented layers, dropped
imports, plus the budget statuses the evaluator reports.
"""
from __future__ import annotations

import re

from nasgraph.agents.schemas import HistoryEntry
from nasgraph.tools.evaluator.diagnosis import Diagnosis
from nasgraph.tools.fmt import human

# One hint per diagnosis kind (the evaluator's typed facts about a failure).
_KIND_HINTS = {
    "assign_function": "Only nn.Module layers can be attributes: assign modules (nn.Flatten(), nn.ReLU()), and call "
                       "plain functions such as torch.flatten or F.relu directly in forward.",
    "linear_size": "The Linear's in_features does not match the flattened size: put nn.AdaptiveAvgPool2d(1) and "
                   "torch.flatten(x, 1) before the final nn.Linear and set in_features to the last conv's out_channels.",
    "rank": "A conv, pool or BatchNorm2d is applied to a flattened (2-D) tensor: keep every conv/pool before the "
            "flatten; after it use only nn.Linear, nn.Dropout and activations.",
    "channels": "Channel counts disagree: each layer's in_channels (or BatchNorm2d num_features) must equal the "
                "previous layer's out_channels; the first conv takes in_shape[1] channels.",
    "groups": "Every groups=g must divide both in_channels and out_channels (depthwise: groups=in_channels="
              "out_channels).",
    "no_torch_attribute": "That layer does not exist in torch.nn. Use real ones: Conv2d, BatchNorm2d, ReLU, GELU, "
                          "SiLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Linear, Sequential, Identity; a "
                          "separable conv is a depthwise Conv2d(groups=channels) followed by a 1x1 Conv2d.",
    "no_attribute": "forward uses an attribute that __init__ never defines: create every layer as self.name = ... "
                    "in __init__ (after super().__init__()).",
    "undefined_name": "A name is used but not defined or imported: keep `import torch`, `import torch.nn as nn`, "
                      "`import torch.nn.functional as F` at the top and define every helper you call.",
    "signature": "Keep the exact signatures: __init__(self, in_shape, out_shape, prm, device) and forward(self, x).",
    "too_small": "The feature map shrinks below the kernel size: use fewer stride-2/pooling steps for this input "
                 "size, or padding=kernel_size//2.",
    "output_shape": "forward must end in logits of shape (batch, out_shape[0]): pool, flatten, then one nn.Linear.",
    "not_tensor": "forward must return the logits tensor: end it with `return x`.",
    "missing_module": "That module does not exist here: import only torch, torch.nn, torch.nn.functional and math, "
                      "and write any helper you need in the file itself.",
}
_FLATTEN_HINT = ("torch.flatten is a function, not a layer: in forward write x = torch.flatten(x, 1), or define "
                 "self.flatten = nn.Flatten() in __init__.")

_STATUS_HINTS = {
    "syntax": "Write valid, complete Python: close every bracket and finish every block.",
    "forbidden": "Import only torch, torch.nn, torch.nn.functional and math; no file, network, process "
                 "or eval/exec access.",
    "over_budget": "Make the model smaller and cheaper: fewer channels or layers, downsample earlier.",
    "timeout": "Make the model much faster: fewer channels, fewer layers at full resolution, downsample early.",
    "memory": "Use far fewer channels and downsample early so activations fit in memory.",
    "nan_loss": "Stabilise training: add BatchNorm after convs, avoid exp/log/division in forward.",
    "build_error": "Define class Net(nn.Module) with __init__(self, in_shape, out_shape, prm, device) "
                   "that builds without errors.",
    "shape_error": "forward must return logits of shape (B, out_shape[0]).",
    "killed": "The process died: make the model smaller.",
    "screened": "It trained, but early in the epoch it was far behind the best designs: build on what they do.",
}

_EXC_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Warning)|AssertionError|KeyboardInterrupt)\b.*")
_FILE_LINE = re.compile(r'File "([^"]+)", line (\d+)')
_ANY_LINE = re.compile(r"\bline (\d+)\b")


def key_error_line(error: str) -> str:
    """The line that says what went wrong: the last `XxxError: ...` line, else the first line."""
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()]
    if not lines:
        return ""
    exc = [ln for ln in lines if _EXC_LINE.match(ln)]
    return (exc[-1] if exc else lines[0])[:300]


def _budget_hint(budgets: dict[str, list[float]]) -> str:
    """How far over budget, and the width cut that fixes it (cost grows with width squared)."""
    ratios = [measured / budget for measured, budget in budgets.values() if budget > 0]
    if not ratios:
        return ""
    r = max(ratios)
    return (f"The model is {r:.1f}x over its budget: divide every channel width by about {max(1.5, r ** 0.5):.1f} "
            f"(cost grows with width squared), downsample (stride 2 or pooling) right after the first conv, and "
            f"keep the classifier one small nn.Linear after nn.AdaptiveAvgPool2d(1).")


def error_hint(status: str, diagnosis: Diagnosis | dict | None) -> str:
    """The hint for a failure, from its typed diagnosis; the status's general hint when it has none."""
    d = Diagnosis(**diagnosis) if isinstance(diagnosis, dict) else diagnosis
    if d is not None and d.kind == "linear_size" and d.got and d.expected:
        got, want = d.got[0], d.expected[0]
        shape = d.shape()
        if shape is not None and len(shape) > 2:
            return (f"The nn.Linear after the flatten was given a {len(shape)}-D map {tuple(shape)}: x was never "
                    f"flattened. Call x = torch.flatten(x, 1) before that Linear (after nn.AdaptiveAvgPool2d(1)), "
                    f"with in_features = the last conv's out_channels.")
        return (f"The flattened tensor has {got} features but the nn.Linear after the flatten expects {want}. "
                f"Best fix: nn.AdaptiveAvgPool2d(1) then torch.flatten(x, 1) before that Linear, with in_features "
                f"= the last conv's out_channels. Else set that Linear's in_features to {got}.")
    if d is not None and d.kind == "over_budget" and (hint := _budget_hint(d.budgets)):
        return hint
    if d is not None and d.kind == "no_attribute" and d.name == "flatten":
        return _FLATTEN_HINT
    if d is not None and d.kind == "rank" and d.got != [2]:
        return _STATUS_HINTS.get(status, "")  # the rank hint is about a flattened (2-D) tensor only
    if d is not None and d.kind in _KIND_HINTS:
        return _KIND_HINTS[d.kind]
    return _STATUS_HINTS.get(status, "")


def _line_no(error: str, n_lines: int) -> int | None:
    """1-based line of the candidate named in a traceback, skipping frames inside libraries."""
    frames = [(path, int(n)) for path, n in _FILE_LINE.findall(error)]
    ours = [n for path, n in frames if not re.search(r"site-packages|dist-packages|/torch/|/lib/python", path)]
    for n in reversed(ours):
        if 1 <= n <= n_lines:
            return n
    if not frames:
        for n in map(int, reversed(_ANY_LINE.findall(error))):
            if 1 <= n <= n_lines:
                return n
    return None


def offending_line(code: str, error: str) -> str:
    """The source line the error points at, by traceback line number or by the name it mentions."""
    lines = code.splitlines()
    n = _line_no(error, len(lines))
    if n is not None:
        return f"line {n}: {lines[n - 1].strip()}"
    # No usable line number: look for the attribute or name the message complains about.
    m = re.search(r"has no attribute '(\w+)'|name '(\w+)' is not defined", error)
    if m:
        ident = m.group(1) or m.group(2)
        for i, ln in enumerate(lines, 1):
            if re.search(rf"(?<![\w]){re.escape(ident)}\b", ln) and not ln.lstrip().startswith("#"):
                return f"line {i}: {ln.strip()}"
    return ""


def is_near_copy(entry: HistoryEntry, threshold: float) -> bool:
    return entry.status == "duplicate" or entry.same_as is not None or (
        entry.novelty is not None and entry.novelty < threshold)


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def outcome_text(e: HistoryEntry, threshold: float = 0.1) -> str:
    """'ok acc=0.871 params=120.3k' / 'shape_error: RuntimeError: mat1 ...' / 'duplicate'."""
    if e.status == "ok":
        text = f"ok acc={e.accuracy:.3f}" if e.accuracy is not None else "ok"
        text += f" params={human(e.params)}"
        if e.accuracy is not None and e.parent_accuracy is not None:
            # The change's own effect: without it the 1.5B improver read a small loss as progress.
            text += f" ({e.accuracy - e.parent_accuracy:+.3f} vs its parent)"
        if e.same_as is not None:
            text += f" SAME NETWORK AS #{e.same_as}"
        elif e.novelty is not None and e.novelty < threshold:
            text += f" NEAR-COPY(novelty={e.novelty:.2f})"
        return text
    if e.status == "duplicate":
        return "duplicate of an earlier design (not trained again)"
    return f"{e.status}: {_clip(key_error_line(e.error), 160)}" if e.error else e.status


def history_line(e: HistoryEntry, threshold: float = 0.1) -> str:
    return f"#{e.iteration} tried: {_clip(e.triple.modification, 140)} -> {outcome_text(e, threshold)}"


def history_block(history: list[HistoryEntry], threshold: float = 0.1, limit: int = 8) -> str:
    if not history:
        return "(none yet)"
    return "\n".join(f"- {history_line(e, threshold)}" for e in history[-limit:])
