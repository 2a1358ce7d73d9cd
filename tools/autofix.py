"""Rule-based fixes for the mechanical failures small generators make most, applied without an LLM call.

Measured on the 1.5B generator (Fashion-MNIST runs): most failures were a wrong flatten size, a
forward that never flattened, a conv or BatchNorm given the wrong channel count, a `self.flatten` never
defined (or assigned a function), `groups` that does not divide the channels, and a pooling layer on a
1x1 map. The LLM, shown the error, often returned its code unchanged; each of these has one obvious
edit. A fix touches only the offending layer or line (the rest of the text, comments included, is kept)
and returns None when the error is not one it knows or the code does not have the expected shape, so
the LLM repair still handles everything else. `find_fix` is pure: routers may call it.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_MODULE = re.compile(r"in module '([\w.]+)' = (\w+)\(.*called with input shape \(([\d, ]+)\)")
_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied")
_CHANNELS = re.compile(r"to have \d+ channels, but got \d+ channels|running_mean should contain \d+ elements")
_NO_ATTR = re.compile(r"'(\w+)' object has no attribute '(\w+)'")
_ASSIGN_FN = re.compile(r"cannot assign '[\w.]*?(\w+)' as child module '(\w+)'")
_GROUPS = re.compile(r"(in|out)_channels must be divisible by groups")
_TOO_SMALL = re.compile(r"Output size is too small|Kernel size can't be greater than actual input size", re.I)
_LINE = re.compile(r'File "<candidate>", line (\d+)')

# Layers that stand in for a function or name the generator forgot to define.
_LAYER_FOR = {"flatten": "nn.Flatten()", "relu": "nn.ReLU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()",
              "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()", "softmax": "nn.Softmax(dim=1)",
              "dropout": "nn.Dropout(0.2)", "identity": "nn.Identity()"}
# Layers whose input size can be inferred at the first forward (the harness runs one before training).
_LAZY = {"Linear": "nn.LazyLinear", "Conv2d": "nn.LazyConv2d", "BatchNorm2d": "nn.LazyBatchNorm2d"}
_LAZY_KW = {"Linear": "in_features", "Conv2d": "in_channels", "BatchNorm2d": "num_features"}
_POOLS = ("MaxPool2d", "AvgPool2d")


@dataclass(frozen=True)
class Fix:
    code: str
    rule: str          # short name, for the trace
    description: str   # what was changed, for people and for the history


def find_fix(code: str, error: str) -> Fix | None:
    """The first rule that applies to this code and error, or None."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    for rule in (_unflattened, _lazy_input_size, _missing_layer, _function_as_layer, _groups, _pool_too_small):
        fix = rule(code, tree, error)
        if fix is not None and fix.code != code:
            return fix
    return None


# ---------------------------------------------------------------- rules

def _lazy_input_size(code: str, tree: ast.Module, error: str) -> Fix | None:
    """Linear / Conv2d / BatchNorm2d built for the wrong input size: let it infer the size instead."""
    m = _MODULE.search(error)
    if not m or m.group(2) not in _LAZY or not (_MATMUL.search(error) or _CHANNELS.search(error)):
        return None
    attr, kind = m.group(1).rsplit(".", 1)[-1], m.group(2)
    lazy = _LAZY[kind]
    edits = []
    for call in _layer_calls(tree, attr, kind):
        args = call.args[1:]  # the input size, when given positionally
        keywords = [k for k in call.keywords if k.arg != _LAZY_KW[kind]]
        new = ast.Call(func=ast.parse(lazy, mode="eval").body, args=args, keywords=keywords)
        edits.append((call, ast.unparse(new)))
    if not edits:
        return None
    return Fix(_splice(code, edits), f"lazy_{kind.lower()}",
               f"self.{attr}: {kind} -> {lazy} (input size inferred at the first forward)")


def _unflattened(code: str, tree: ast.Module, error: str) -> Fix | None:
    """A Linear fed a 4-D map: flatten before it, and let the Linear infer its input size."""
    m = _MODULE.search(error)
    if not m or m.group(2) != "Linear" or not _MATMUL.search(error):
        return None
    shape = [int(s) for s in m.group(3).split(",") if s.strip()]
    if len(shape) <= 2:
        return None
    attr = m.group(1).rsplit(".", 1)[-1]
    line_no = _candidate_line(error)
    lines = code.splitlines(keepends=True)
    if line_no is None or not (1 <= line_no <= len(lines)):
        return None
    line = lines[line_no - 1]
    call = re.search(rf"self\.{re.escape(attr)}\((\w+)\)", line)
    if not call:
        return None
    var = call.group(1)
    indent = line[: len(line) - len(line.lstrip())]
    lines.insert(line_no - 1, f"{indent}{var} = torch.flatten({var}, 1)\n")
    flattened = "".join(lines)
    lazy = _lazy_input_size(flattened, ast.parse(flattened), error)
    return Fix(lazy.code if lazy else flattened, "flatten_before_linear",
               f"flatten {var} before self.{attr} (it was called on a {len(shape)}-D tensor)"
               + ("; " + lazy.description if lazy else ""))


def _missing_layer(code: str, tree: ast.Module, error: str) -> Fix | None:
    """self.flatten / self.relu / ... used but never defined: define the layer; self.in_shape (or
    another __init__ argument) used but never stored: store it."""
    m = _NO_ATTR.search(error)
    if not m:
        return None
    cls, attr = m.group(1), m.group(2)
    init = _init_of(tree, cls)
    if init is None or not init.body:
        return None
    if attr in {a.arg for a in init.args.args[1:]}:
        value = attr
    elif attr.lower() in _LAYER_FOR:
        value = _LAYER_FOR[attr.lower()]
    else:
        return None
    first = init.body[0]
    anchor = first if _is_super_init(first) else None
    lines = code.splitlines(keepends=True)
    at = (anchor.end_lineno if anchor else first.lineno - 1)
    indent = " " * (first.col_offset)
    lines.insert(at, f"{indent}self.{attr} = {value}\n")
    return Fix("".join(lines), "define_attribute", f"defined self.{attr} = {value} in {cls}.__init__")


def _function_as_layer(code: str, tree: ast.Module, error: str) -> Fix | None:
    """self.flatten = torch.flatten (a function) where a module is required: use the layer."""
    m = _ASSIGN_FN.search(error)
    if not m or m.group(1).lower() not in _LAYER_FOR:
        return None
    fn, attr = m.group(1).lower(), m.group(2)
    edits = [(node.value, _LAYER_FOR[fn]) for node in ast.walk(tree)
             if isinstance(node, ast.Assign) and _is_self_attr(node.targets[0], attr)
             and isinstance(node.value, (ast.Attribute, ast.Name))]
    if not edits:
        return None
    return Fix(_splice(code, edits), "function_to_layer", f"self.{attr}: function {fn} -> {_LAYER_FOR[fn]}")


def _groups(code: str, tree: ast.Module, error: str) -> Fix | None:
    """groups that do not divide the channels: drop `groups` from that conv."""
    line_no = _candidate_line(error)
    if not _GROUPS.search(error) or line_no is None:
        return None
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.lineno <= line_no <= (node.end_lineno or node.lineno) \
                and any(k.arg == "groups" for k in node.keywords):
            new = ast.Call(func=node.func, args=node.args, keywords=[k for k in node.keywords if k.arg != "groups"])
            edits.append((node, ast.unparse(new)))
    if len(edits) != 1:
        return None
    return Fix(_splice(code, edits), "drop_groups", f"removed groups from the conv on line {line_no}")


def _pool_too_small(code: str, tree: ast.Module, error: str) -> Fix | None:
    """A pooling layer applied to a map smaller than its kernel: drop that pooling step."""
    m = _MODULE.search(error)
    if not _TOO_SMALL.search(error) or not m or m.group(2) not in _POOLS:
        return None
    attr = m.group(1).rsplit(".", 1)[-1]
    edits = [(call, "nn.Identity()") for call in _layer_calls(tree, attr, m.group(2))]
    if not edits:
        return None
    return Fix(_splice(code, edits), "drop_pool", f"self.{attr}: {m.group(2)} on a too-small map -> nn.Identity()")


# ---------------------------------------------------------------- helpers

def _candidate_line(error: str) -> int | None:
    found = _LINE.findall(error)
    return int(found[-1]) if found else None


def _is_self_attr(target: ast.expr, attr: str) -> bool:
    return isinstance(target, ast.Attribute) and target.attr == attr and \
        isinstance(target.value, ast.Name) and target.value.id == "self"


def _layer_calls(tree: ast.Module, attr: str, kind: str) -> list[ast.Call]:
    """The calls building `self.<attr> = nn.<kind>(...)`, wherever they are."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and _is_self_attr(node.targets[0], attr) \
                and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == kind:
                out.append(node.value)
    return out


def _init_of(tree: ast.Module, cls: str) -> ast.FunctionDef | None:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return item
    return None


def _is_super_init(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.Expr):
        return False
    text = ast.unparse(stmt)
    return "super(" in text and "__init__" in text


def _splice(code: str, edits: list[tuple[ast.AST, str]]) -> str:
    """Replace each node's exact source span with new text, last first so offsets stay valid."""
    starts = [0]
    for line in code.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = sorted(((starts[n.lineno - 1] + _byte_col(code, starts, n.lineno, n.col_offset),
                     starts[n.end_lineno - 1] + _byte_col(code, starts, n.end_lineno, n.end_col_offset), text)
                    for n, text in edits), reverse=True)
    for start, end, text in spans:
        code = code[:start] + text + code[end:]
    return code


def _byte_col(code: str, starts: list[int], line: int, col: int) -> int:
    # ast columns count UTF-8 bytes; the string is indexed by characters.
    text = code[starts[line - 1]: starts[line] if line < len(starts) else len(code)]
    return len(text.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
