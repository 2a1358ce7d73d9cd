"""Pull a Python module out of a chat reply, tolerating what small models actually write.

Handled: ```python / ```py / bare ``` fences, an unclosed fence (reply cut at max_tokens), several
fences (the one defining `class Net` wins, else the longest), prose around the code, no fences at all,
`<think>` sections, imports dropped by the model while the names are still used, and an "example
usage" script after the module (data loading, training, `if __name__ == ...`), which the harness
does itself and the policy forbids.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel

from nasgraph.tools.autofix.edit import parses

_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+\-.]*)\s*$")
_DEFINES_NET = re.compile(r"^\s*class\s+Net\b", re.M)
_CODE_START = re.compile(r"^(import\s+\w|from\s+[\w.]+\s+import\s|class\s+\w|def\s+\w|@\w)")
# Unindented lines that are plainly Python; anything else unindented at the end is treated as prose.
_CODE_LINE = re.compile(r"^(import |from |class |def |@|#|if |for |while |try:|except|return |\w[\w.\[\]]*\s*[=(])")
_PY_LANGS = {"", "python", "py", "python3", "py3", "pytorch"}

# name used in code -> the import line that binds it (the contract allows only these modules)
_IMPORTS = {
    "torch": "import torch",
    "nn": "import torch.nn as nn",
    "F": "import torch.nn.functional as F",
    "math": "import math",
}

Source = Literal["fence", "unclosed_fence", "bare", "empty"]


class Extracted(BaseModel):
    code: str
    source: Source
    added_imports: list[str] = []


def _fenced_blocks(text: str) -> list[tuple[str, str, bool]]:
    """(language, body, closed) for every fenced block, in order."""
    blocks: list[tuple[str, str, bool]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, body, i = m.group(2).lower(), [], i + 1
        closed = False
        while i < len(lines) and not _FENCE.match(lines[i]):
            if lines[i].rstrip().endswith("```"):  # closing fence glued to the last code line
                body.append(lines[i].rstrip()[:-3])
                closed = True
                break
            body.append(lines[i])
            i += 1
        closed = closed or i < len(lines)
        blocks.append((lang, "\n".join(body), closed))
        i += 1  # skip the closing fence
    return blocks


def _pick(blocks: list[tuple[str, str, bool]]) -> tuple[str, bool]:
    py = [b for b in blocks if b[0] in _PY_LANGS and b[1].strip()] or [b for b in blocks if b[1].strip()]
    if not py:
        return "", True
    with_net = [b for b in py if _DEFINES_NET.search(b[1])]
    if with_net:
        # When a reply shows a module twice (before/after a fix), the later one is the answer,
        # unless only an earlier one is valid Python (the later one may be cut off).
        parsing = [b for b in with_net if parses(b[1])]
        lang, body, closed = (parsing or with_net)[-1]
    else:
        lang, body, closed = max(py, key=lambda b: len(b[1]))
    return body, closed


def _indented_code(lines: list[str]) -> str:
    """A Markdown indented code block (or a fenced one nested in a list item), dedented."""
    start = next((i for i, ln in enumerate(lines) if ln[:1].isspace() and _CODE_START.match(ln.lstrip())), None)
    if start is None:
        return ""
    first = lines[start]
    indent = first[: len(first) - len(first.lstrip())]
    body: list[str] = []
    for ln in lines[start:]:
        if ln.strip() and not ln.startswith(indent):
            break  # back to the surrounding prose
        body.append(ln[len(indent):])
    return "\n".join(body)


def _strip_prose(text: str) -> str:
    """Code from the first import/class/def line, minus trailing unindented prose lines."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if _CODE_START.match(ln)), None)
    if start is None:
        return _indented_code(lines)
    lines = lines[start:]
    while lines and not parses("\n".join(lines)):
        last = lines[-1]
        if last.strip() and (last[0].isspace() or _CODE_LINE.match(last)):
            break  # broken code, not prose: leave it for the evaluator to report
        lines.pop()
    return "\n".join(lines)


def _bound_names(tree: ast.Module) -> set[str]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            bound.update(a.asname or a.name for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
    return bound


def _used_unbound(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        # Unparseable: judge by text, so a repair prompt at least sees the imports it needs.
        used = {n for n in _IMPORTS if re.search(rf"(?<![\w.]){n}\.", code)}
        bound = {n for n in _IMPORTS if re.search(rf"^\s*(import|from)\b.*\b{n}\b", code, re.M)}
        return [n for n in _IMPORTS if n in used - bound]
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return [n for n in _IMPORTS if n in used and n not in _bound_names(tree)]


def ensure_imports(code: str) -> tuple[str, list[str]]:
    """Add `import torch` / `import torch.nn as nn` / ... for names used but never imported."""
    missing = [_IMPORTS[n] for n in _used_unbound(code)]
    if not missing:
        return code, []
    lines = code.splitlines()
    # Go after the leading imports (so `import torch` stays before `import torch.nn as nn` and
    # `from __future__` stays first), or at the top when the module starts with something else.
    at, i = 0, 0
    while i < len(lines):
        stripped = lines[i].strip()
        if re.match(r"(import|from)\s", lines[i]):
            at = i + 1
        elif stripped and not stripped.startswith("#"):
            break
        i += 1
    return "\n".join(lines[:at] + missing + lines[at:]), missing


def drop_usage_script(code: str) -> str:
    """The module without the top-level statements that follow `class Net` (other than classes,
    functions and comments): seen from the 1.5B model as a torchvision training script, often cut off
    at max_tokens, which failed a module that was complete without it."""
    lines = code.splitlines()
    net = next((i for i, ln in enumerate(lines) if _DEFINES_NET.match(ln) and not ln[:1].isspace()), None)
    if net is None:
        return code
    for i in range(net + 1, len(lines)):
        ln = lines[i]
        if ln.strip() and not ln[:1].isspace() and not re.match(r"(class|def)\s|@|#|\)|\]|\}", ln):
            return "\n".join(lines[:i]).rstrip() + "\n"
    return code


def extract(reply: str) -> Extracted:
    text = _THINK.sub("", reply or "")
    blocks = _fenced_blocks(text)
    body, closed = _pick(blocks) if blocks else ("", True)
    if blocks and not _DEFINES_NET.search(body):
        # Bare code ended by a stray closing fence (then maybe prose): the module precedes the fence.
        fence = next(m.group(1) for ln in text.splitlines() if (m := _FENCE.match(ln)))
        prefix = text[: text.find(fence)]
        if _DEFINES_NET.search(prefix):
            text, blocks = prefix, []
    if blocks:
        source: Source = "fence" if closed else "unclosed_fence"
        # A fence holding prose plus code (rare) is cleaned the same way as an unfenced reply.
        code = body if parses(body) or not _strip_prose(body) else _strip_prose(body)
    else:
        code, source = _strip_prose(text), "bare"
    code = drop_usage_script(code.strip("\n")).strip("\n")
    if not code.strip():
        return Extracted(code="", source="empty")
    code, added = ensure_imports(code)
    return Extracted(code=code.rstrip() + "\n", source=source, added_imports=added)


def extract_code(reply: str) -> str:
    return extract(reply).code


def json_objects(reply: str) -> Iterator[dict]:
    """Every JSON object embedded in the reply, outer ones first (nested ones are found too)."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", reply):
        try:
            data, _ = decoder.raw_decode(reply, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            yield data
