"""Turn evaluation results into the short text a small model can act on.

The hints target the failure modes measured with the 1.5B generator (DESIGN.md): wrong flatten size,
conv after flatten, `groups` not dividing channels, undefined attributes, invented layers, dropped
imports, plus the budget statuses the evaluator reports.
"""
from __future__ import annotations

import re

from nasgraph.agents.schemas import HistoryEntry
from nasgraph.tools.evaluator.messages import MATMUL, budget_excess
from nasgraph.tools.fmt import human

_HINTS: list[tuple[re.Pattern[str], str]] = [(re.compile(p, re.I), h) for p, h in [
    (r"has no attribute 'flatten'",
     "torch.flatten is a function, not a layer: in forward write x = torch.flatten(x, 1), or define "
     "self.flatten = nn.Flatten() in __init__."),
    (r"cannot assign .* as child module",
     "Only nn.Module layers can be attributes: assign modules (nn.Flatten(), nn.ReLU()), and call plain "
     "functions such as torch.flatten or F.relu directly in forward."),
    (r"mat1 and mat2 shapes cannot be multiplied",
     "The Linear's in_features does not match the flattened size: put nn.AdaptiveAvgPool2d(1) and "
     "torch.flatten(x, 1) before the final nn.Linear and set in_features to the last conv's out_channels."),
    (r"got input of size: \[\d+, \d+\]|\(got 2D input\)",
     "A conv, pool or BatchNorm2d is applied to a flattened (2-D) tensor: keep every conv/pool before "
     "the flatten; after it use only nn.Linear, nn.Dropout and activations."),
    # Checked before the groups rule: PyTorch's channel-mismatch message also says "groups=1".
    (r"expected input\[.*\] to have \d+ channels|running_mean should contain",
     "Channel counts disagree: each layer's in_channels (or BatchNorm2d num_features) must equal the "
     "previous layer's out_channels; the first conv takes in_shape[1] channels."),
    (r"divisible by groups|groups",
     "Every groups=g must divide both in_channels and out_channels (depthwise: groups=in_channels="
     "out_channels)."),
    (r"module 'torch(\.nn(\.functional)?)?' has no attribute",
     "That layer does not exist in torch.nn. Use real ones: Conv2d, BatchNorm2d, ReLU, GELU, SiLU, "
     "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Linear, Sequential, Identity; a separable conv "
     "is a depthwise Conv2d(groups=channels) followed by a 1x1 Conv2d."),
    (r"object has no attribute",
     "forward uses an attribute that __init__ never defines: create every layer as self.name = ... "
     "in __init__ (after super().__init__())."),
    (r"name '\w+' is not defined",
     "A name is used but not defined or imported: keep `import torch`, `import torch.nn as nn`, "
     "`import torch.nn.functional as F` at the top and define every helper you call."),
    (r"output size is too small|kernel size can't be greater|calculated padded input size",
     "The feature map shrinks below the kernel size: use fewer stride-2/pooling steps for this input "
     "size, or padding=kernel_size//2."),
    (r"takes \d+ positional arguments? but \d+ (were|was) given|missing \d+ required positional",
     "Keep the exact signatures: __init__(self, in_shape, out_shape, prm, device) and forward(self, x)."),
]]

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


def _budget_hint(error: str) -> str:
    """How far over budget, and the width cut that fixes it (cost grows with width squared)."""
    ratios = [measured / budget for measured, budget in budget_excess(error).values() if budget > 0]
    if not ratios:
        return ""
    r = max(ratios)
    return (f"The model is {r:.1f}x over its budget: divide every channel width by about {max(1.5, r ** 0.5):.1f} "
            f"(cost grows with width squared), downsample (stride 2 or pooling) right after the first conv, and "
            f"keep the classifier one small nn.Linear after nn.AdaptiveAvgPool2d(1).")


def error_hint(status: str, error: str) -> str:
    m = MATMUL.search(error)
    if m:
        rows, got, want = m.groups()
        return (f"The flattened tensor has {got} features but the nn.Linear after the flatten expects {want}. "
                f"Best fix: nn.AdaptiveAvgPool2d(1) then torch.flatten(x, 1) before that Linear, with in_features "
                f"= the last conv's out_channels. Else set that Linear's in_features to {got}. If {rows} is not "
                f"the batch size, x was never flattened: call x = torch.flatten(x, 1) before that Linear.")
    if status == "over_budget" and (hint := _budget_hint(error)):
        return hint
    for pattern, hint in _HINTS:
        if pattern.search(error):
            return hint
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
