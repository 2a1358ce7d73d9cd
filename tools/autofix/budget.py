"""The rule for a model over its parameter, FLOP or epoch-time budget: scale every channel width by one
factor (cost grows about with width squared)."""
from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable

from nasgraph.tools.evaluator.diagnosis import Diagnosis
from nasgraph.tools.fmt import human

from .edit import Fix, call_name, init_of, splice
from .registry import rule

# Channel widths: the leading positional parameters of torch layers (as torch names them) and of the
# code's own blocks, of which those with a width-like name (and no size-like one) are scaled.
_LAYER_PARAMS = {**dict.fromkeys(("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d"), ("in_channels", "out_channels")),
                 "Linear": ("in_features", "out_features"), "LazyLinear": ("out_features",),
                 "LazyConv2d": ("out_channels",), "LayerNorm": ("normalized_shape",),
                 "GroupNorm": ("num_groups", "num_channels"),
                 **dict.fromkeys(("BatchNorm1d", "BatchNorm2d", "InstanceNorm2d"), ("num_features",))}
_TORCH_WIDTHS = {p for names in _LAYER_PARAMS.values() for p in names} - {"num_groups"}
_WIDTH = re.compile(r"chan|feat|plane|width|dim|filter|hidden|^(c_?)?(in|out)(_|$)|^inp$|^oup$", re.I)
_NOT_WIDTH = re.compile(r"kernel|stride|pad|dilation|group|size|shape|class", re.I)
MIN_WIDTH = 16  # smaller literals are kernel sizes, strides, spatial sizes ... rather than widths


@rule("shrink_widths", 'over_budget', 10,
      "a model over its parameter, FLOP or epoch-time budget: every literal width scaled by one factor")
def fix_shrink_widths(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """Over a parameter / FLOP / epoch-time budget: scale every literal channel width by one factor."""
    excess = d.budgets if d.kind == "over_budget" else {}
    if not excess:
        return None
    what, (measured, budget) = min(excess.items(), key=lambda kv: kv[1][1] / kv[1][0])
    # FLOPs and parameters grow about with width squared; epoch time more slowly, as per-layer overheads
    # stay (fm15-n: 685 s became 267 s at a factor of 0.46, about width^1.2), so it needs a deeper cut.
    f = 0.9 * (budget / measured) ** (0.8 if what == "epoch time" else 0.5)
    if f >= 1:
        return None
    widths, inner = _width_literals(tree)
    mapping = {v: max(8, int(v * f) // 8 * 8) for v in {n.value for n in widths}}
    mapping = {v: w for v, w in mapping.items() if w != v}
    if not mapping:
        return None
    edits = {id(n): (n, str(mapping[n.value])) for n in widths + inner if n.value in mapping}
    over = f"{measured:g}s > {budget:g}s" if what == "epoch time" else f"{human(measured)} > {human(budget)}"
    return Fix(splice(code, list(edits.values())), "shrink_widths",
               f"scaled channel widths by {f:.2f} ({what} {over}): "
               + ", ".join(f"{v}->{w}" for v, w in sorted(mapping.items())))


# ---------------------------------------------------------------- helpers

def _width_literals(tree: ast.Module) -> tuple[list[ast.Constant], list[ast.Constant]]:
    """The int literals >= MIN_WIDTH given as channel widths (arguments of layers and of the code's own
    blocks, their defaults, width lists, width-named variables), and every int literal inside a width
    argument (`64 * 7 * 7`; a depthwise conv's groups), to follow them. A Linear's sizes count only where
    the value is a width elsewhere too: a lone one is the input size (784) or the class count."""
    blocks = {n.name: _params(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name != "__init__"}
    blocks |= {n.name: _params(init) for n in ast.walk(tree)
               if isinstance(n, ast.ClassDef) and (init := init_of(tree, n.name))}
    direct: list[ast.expr] = []
    linear: list[ast.expr] = []
    inner: list[ast.expr] = []
    for node in ast.walk(tree):
        name = call_name(node)
        if isinstance(node, ast.Call) and (name in blocks or name in _LAYER_PARAMS):
            own = name in blocks
            first = ast.dump(node.args[0]) if node.args else None
            for param, arg in [*zip(blocks[name] if own else _LAYER_PARAMS[name], node.args),
                               *((k.arg, k.value) for k in node.keywords)]:
                if param == "groups" and name.startswith("Conv") and ast.dump(arg) == first:
                    inner.append(arg)  # depthwise: stays equal to in_channels
                elif param and (_is_width(param) if own else param in _TORCH_WIDTHS):
                    (linear if param in ("in_features", "out_features") else direct).append(arg)
                    inner.append(arg)
        elif isinstance(node, ast.FunctionDef):
            positional = node.args.posonlyargs + node.args.args
            pairs = [*zip(positional[len(positional) - len(node.args.defaults):], node.args.defaults),
                     *zip(node.args.kwonlyargs, node.args.kw_defaults)]
            direct += [default for a, default in pairs if default is not None and _is_width(a.arg)]
        elif isinstance(node, ast.For) or isinstance(node, ast.Assign) and len(node.targets) == 1:
            loop = isinstance(node, ast.For)
            target, value = (node.target, node.iter) if isinstance(node, ast.For) else (node.targets[0], node.value)
            names = [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(target)
                     if isinstance(n, (ast.Name, ast.Attribute))]
            simple = isinstance(target, (ast.Name, ast.Attribute))
            if any(_NOT_WIDTH.search(n) for n in names):
                continue
            if loop or simple and isinstance(value, (ast.List, ast.Tuple)):  # `channels = [32, 64]`, `for c in (...)`
                direct += [e for n in ast.walk(value) if isinstance(n, (ast.List, ast.Tuple)) for e in n.elts]
            elif simple and _WIDTH.search(names[0]):  # `hidden_dim = 256`
                direct.append(value)
    widths, sizes = _ints(direct), _ints(linear)
    seen = Counter(n.value for n in widths + sizes)
    return widths + [n for n in sizes if seen[n.value] > 1], _ints(n for e in inner for n in ast.walk(e))


def _ints(nodes: Iterable[ast.AST]) -> list[ast.Constant]:
    return [n for n in nodes if isinstance(n, ast.Constant) and type(n.value) is int and n.value >= MIN_WIDTH]


def _is_width(param: str) -> bool:
    return bool(_WIDTH.search(param)) and not _NOT_WIDTH.search(param)


def _params(fn: ast.FunctionDef) -> tuple[str, ...]:
    names = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    return tuple(names[1:] if names[:1] in (["self"], ["cls"]) else names)
