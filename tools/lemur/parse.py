"""What can be learnt about a LEMUR model file without running it: names, imports, layer types.

Everything here reads the source with `ast`; nothing is imported or executed, because the corpus is
untrusted code and the pull runs outside the sandbox.
"""
from __future__ import annotations

import ast
import hashlib
import re
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Literal

# LEMUR names generated variants `<stem>-<md5>`, `<stem>-<uuid>` or `<stem>-<n>`; the stem says where
# a model comes from (`ga-mut`, `alt-nn1`, `ast-dimension-AlexNet`) or which classic net it is.
_SUFFIX = re.compile(r"-(?:[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){1,3}(?:-[0-9a-f]{12})?|\d+)$")
_BARE_HASH = re.compile(r"[0-9a-f]{32}")

# torch.nn layer types that name a model's main kind of block; a file is described by those it builds.
_ATTENTION = {"MultiheadAttention", "Transformer", "TransformerEncoder", "TransformerEncoderLayer",
              "TransformerDecoder", "TransformerDecoderLayer"}
_RECURRENT = {"RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"}
_LINEAR = {"Linear", "LazyLinear", "Bilinear"}
# What a model may import and still run with nothing but torch installed.
_TORCH = {"torch", "torchvision"}
_STDLIB = set(sys.stdlib_module_names) | {"__future__"}

HpSource = Literal["literal", "computed", "absent"]


@dataclass(frozen=True)
class CodeFacts:
    sha256: str
    n_lines: int
    hyperparameters: tuple[str, ...] | None  # None unless supported_hyperparameters() returns a literal
    hp_source: HpSource
    imports: tuple[str, ...]  # top-level module names, "." for a relative import
    torch_only: bool | None  # imports nothing but torch, torchvision and the standard library
    layers: dict[str, int]  # torch.nn layer type -> constructor calls in the source
    kind: str  # "conv", "conv+attention", "mlp", ... from `layers`; "other" when none is known
    parse_error: str | None = None


def family(name: str) -> str:
    """The model's name without the generated suffixes: its origin or its classic architecture."""
    if _BARE_HASH.fullmatch(name):
        return ""
    stem = name
    while (shorter := _SUFFIX.sub("", stem)) != stem:
        stem = shorter
    return stem


def analyse(source: bytes) -> CodeFacts:
    digest = hashlib.sha256(source).hexdigest()
    n_lines = len(source.splitlines())
    try:
        with warnings.catch_warnings():
            # Invalid escapes and the like in corpus files are theirs to fix; under `-W error` they
            # would otherwise turn into parse failures.
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes in the source
        return CodeFacts(digest, n_lines, None, "absent", (), None, {}, "other", f"{type(exc).__name__}: {exc}")
    imports = _imports(tree)
    layers = _layers(tree)
    hyperparameters, hp_source = _hyperparameters(tree)
    return CodeFacts(
        sha256=digest, n_lines=n_lines, hyperparameters=hyperparameters, hp_source=hp_source,
        imports=imports, torch_only=all(m in _TORCH or m in _STDLIB for m in imports),
        layers=layers, kind=_kind(layers),
    )


def _imports(tree: ast.Module) -> tuple[str, ...]:
    # Every import counts, also those inside functions: they run when the model is built or trained.
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module.split(".")[0] if node.level == 0 and node.module else ".")
    return tuple(sorted(found))


def _hyperparameters(tree: ast.Module) -> tuple[tuple[str, ...] | None, HpSource]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "supported_hyperparameters":
            body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            if len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value is not None:
                try:
                    value = ast.literal_eval(body[0].value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    return None, "computed"
                if isinstance(value, set | frozenset | list | tuple | dict) and all(isinstance(k, str) for k in value):
                    return tuple(sorted(value)), "literal"
            return None, "computed"
    return None, "absent"


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted torch name it stands for (`nn` -> `torch.nn`, `GELU` -> `torch.nn.GELU`)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in _TORCH:
                    names[a.asname or top] = a.name if a.asname else top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in _TORCH:
                for a in node.names:
                    names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _layers(tree: ast.Module) -> dict[str, int]:
    aliases = _aliases(tree)
    counts: Counter[str] = Counter()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or (name := _dotted(node.func)) is None:
            continue
        head, _, rest = name.partition(".")
        if head not in aliases:
            continue
        full = f"{aliases[head]}.{rest}" if rest else aliases[head]
        module, _, layer = full.rpartition(".")
        # Layer classes are capitalised and sit in torch.nn (torch.nn.functional and torch.nn.utils hold
        # functions) or in torchvision.ops, whose Conv2dNormActivation builds the convs of the
        # torchvision-derived models (EfficientNet, RegNet, ...).
        if layer[:1].isupper() and (module == "torch.nn" or module.startswith("torchvision.ops")):
            counts[layer] += 1
    return dict(sorted(counts.items()))


def _kind(layers: dict[str, int]) -> str:
    parts = [label for label, present in (
        ("conv", any(k.startswith(("Conv", "LazyConv")) for k in layers)),
        ("attention", any(k in _ATTENTION for k in layers)),
        ("recurrent", any(k in _RECURRENT for k in layers)),
    ) if present]
    if parts:
        return "+".join(parts)
    return "mlp" if any(k in _LINEAR for k in layers) else "other"
