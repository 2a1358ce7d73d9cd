"""Rule-based fixes for the mechanical failures small generators make most, applied without an LLM call.

Measured on the 1.5B generator (Fashion-MNIST runs): most failures were a wrong flatten size, a
forward that never flattened, a conv or BatchNorm given the wrong channel count, a `self.flatten` never
defined (or assigned a function), `groups` that does not divide the channels, and a pooling layer on a
1x1 map; then a layer torch does not have (nn.GlobalAvgPool2d, F.swish) or one named without `nn.`
(`Identity()`), a forbidden import nothing uses (`import torchvision`), `device=` given to a layer that
takes none (`nn.ReLU(device=device)`), `self.device` read in a helper block that never stored one, a
layer's input size read from a layer without that attribute (pool.out_features), an in-place op
autograd still needed, and a model too wide for its parameter, FLOP or epoch-time budget. The LLM,
shown the error, often returned its code unchanged; each of these has one obvious edit. A fix touches
only the offending layers or lines (the rest of the text, comments included, is kept) and returns None
when the error is not one it knows or the code does not have the expected shape, so the LLM repair
still handles everything else. `find_fix` is pure: routers may call it.
"""
from __future__ import annotations

import ast
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

_MODULE = re.compile(r"in module '([\w.]+)' = (\w+)\(.*called with input shape \(([\d, ]+)\)")
_MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied")
_CHANNELS = re.compile(r"to have \d+ channels, but got \d+ channels|running_mean should contain \d+ elements")
_NO_ATTR = re.compile(r"'(\w+)' object has no attribute '(\w+)'")
_ASSIGN_FN = re.compile(r"cannot assign '[\w.]*?(\w+)' as child module '(\w+)'")
_GROUPS = re.compile(r"(in|out)_channels must be divisible by groups")
_TOO_SMALL = re.compile(r"Output size is too small|Kernel size can't be greater than actual input size", re.I)
_LINE = re.compile(r'File "<candidate>", line (\d+)')
_NO_MODULE_ATTR = re.compile(r"module '(torch\.nn(?:\.functional)?)' has no attribute '(\w+)'")
_INPLACE = re.compile(r"modified by an inplace operation")
_FORBIDDEN_MODULE = re.compile(r"forbidden: line (\d+): [\w.]+: module '[\w.]+' is not allowed")
_DEVICE_KW = re.compile(r"got an unexpected keyword argument 'device'")
_UNDEFINED = re.compile(r"NameError: name '(\w+)' is not defined")
_OVER = re.compile(r"([\d,]+) (parameters|FLOPs) (?:per sample )?exceed the budget of ([\d,]+)")
_FORMAT_ATTR = re.compile(r"self\.(\w*\{\w+\}\w*)")
_FORMAT_ASSIGN = re.compile(r"^(\s*)self\.(\w*\{\w+\}\w*)\s*=\s*(.+?)\s*$")
_SLOW = re.compile(r"projected epoch time ([\d.]+)s exceeds the budget of ([\d.]+)s")

# Layers that stand in for a function or name the generator forgot to define.
_LAYER_FOR = {"flatten": "nn.Flatten()", "relu": "nn.ReLU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()",
              "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()", "softmax": "nn.Softmax(dim=1)",
              "dropout": "nn.Dropout(0.2)", "identity": "nn.Identity()"}
# Layers whose input size can be inferred at the first forward (the harness runs one before training).
_LAZY = {"Linear": "nn.LazyLinear", "Conv2d": "nn.LazyConv2d", "BatchNorm2d": "nn.LazyBatchNorm2d"}
_LAZY_KW = {"Linear": "in_features", "Conv2d": "in_channels", "BatchNorm2d": "num_features"}
_POOLS = ("MaxPool2d", "AvgPool2d")
# torch layers with weights, whose constructors take device= (activations, pools and dropout do not)
_WEIGHTED = ("Conv", "Linear", "Lazy", "BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "Embedding", "PReLU")
# Names the generator invents, none of them in torch (checked against torch 2.x), and what to write
# instead: a bare name renames the attribute (arguments kept); a call replaces the whole call, with {m}
# the module as the code spells it and {0} the call's first argument.
_ALIASES = {
    "torch.nn": {"GlobalAvgPool2d": "{m}.AdaptiveAvgPool2d(1)", "GlobalAveragePooling2D": "{m}.AdaptiveAvgPool2d(1)",
                 "GlobalMaxPool2d": "{m}.AdaptiveMaxPool2d(1)", "BatchNorm2": "BatchNorm2d", "BatchNorm": "BatchNorm2d",
                 "BatchNorm2D": "BatchNorm2d", "Conv2D": "Conv2d", "MaxPool2D": "MaxPool2d", "AvgPool2D": "AvgPool2d",
                 "Swish": "SiLU", "HardSwish": "Hardswish", "Relu": "ReLU", "LeakyRelu": "LeakyReLU", "Gelu": "GELU"},
    # global pooling as Keras means it: (batch, channels)
    "torch.nn.functional": {"flatten": "torch.flatten({0}, 1)", "swish": "silu",
                            "global_avg_pool2d": "{m}.adaptive_avg_pool2d({0}, 1).flatten(1)",
                            "global_max_pool2d": "{m}.adaptive_max_pool2d({0}, 1).flatten(1)"},
}
# torch.nn layers the generator names without `nn.` (checked against torch by a unit test).
_NN_LAYERS = frozenset({
    "Identity", "Conv1d", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm",
    "ReLU", "ReLU6", "GELU", "SiLU", "ELU", "PReLU", "LeakyReLU", "Mish", "Hardswish", "Sigmoid", "Tanh",
    "Softmax", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Dropout", "Dropout2d",
    "Linear", "LazyLinear", "Flatten", "Sequential", "ModuleList", "Upsample"})
_SIZE_ATTRS = {"out_features", "out_channels", "in_features", "in_channels", "num_features"}
_INPLACE_FIRST = {"ReLU", "ReLU6", "SiLU", "Hardswish", "Hardsigmoid", "Mish", "SELU"}  # inplace: 1st argument
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
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
        fix = _format_attribute(code, error)  # the only rule for code that does not parse
        return fix if fix is not None and _parses(fix.code) else None
    for rule in (_unflattened, _shared_layer, _lazy_input_size, _missing_layer, _function_as_layer, _groups, _pool_too_small,
                 _unknown_layer, _bare_torch_name, _unused_forbidden_import, _helper_device, _lazy_from_attribute,
                 _inplace, _shrink_widths, _device_keyword):
        fix = rule(code, tree, error)
        if fix is not None and fix.code != code and _parses(fix.code):
            return fix
    return None


def budget_excess(error: str) -> dict[str, tuple[float, float]]:
    """{'parameters' | 'FLOPs' | 'epoch time': (measured, budget)} for each budget the error says was exceeded."""
    found = {what: (float(a.replace(",", "")), float(b.replace(",", ""))) for a, what, b in _OVER.findall(error)}
    found.update({"epoch time": (float(a), float(b)) for a, b in _SLOW.findall(error)})
    return found


# ---------------------------------------------------------------- rules

def _lazy_input_size(code: str, tree: ast.Module, error: str) -> Fix | None:
    """Linear / Conv2d / BatchNorm2d built for the wrong input size: let it infer the size instead."""
    m = _MODULE.search(error)
    if not m or m.group(2) not in _LAZY or not (_MATMUL.search(error) or _CHANNELS.search(error)):
        return None
    path, kind = m.group(1), m.group(2)
    edits = [(call, _lazy_call(call, kind)) for call in _layer_calls(tree, path, kind)]
    if not edits:
        return None
    return Fix(_splice(code, edits), f"lazy_{kind.lower()}",
               f"self.{path}: {kind} -> {_LAZY[kind]} (input size inferred at the first forward)")


def _shared_layer(code: str, tree: ast.Module, error: str) -> Fix | None:
    """One layer applied at several places to inputs of different sizes (self.conv1 on the image, then on
    a 128-channel map): every place after the first gets its own copy, and all infer their input size."""
    m = _MODULE.search(error)
    if not m or m.group(2) not in _LAZY or not (_MATMUL.search(error) or _CHANNELS.search(error)):
        return None
    attr, kind = m.group(1).rsplit(".", 1)[-1], m.group(2)
    built = [(cls, n) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for n in ast.walk(cls)
             if isinstance(n, ast.Assign) and len(n.targets) == 1 and _is_self_attr(n.targets[0], attr)
             and _call_name(n.value) in (kind, _LAZY[kind][3:])]
    if len(built) != 1:
        return None
    cls, assign = built[0]  # the uses in that class only: another class may have its own self.<attr>
    uses = sorted((n for n in ast.walk(cls) if isinstance(n, ast.Call) and _is_self_attr(n.func, attr)),
                  key=lambda n: (n.lineno, n.col_offset))
    if len(uses) < 2:
        return None
    layer = ast.unparse(assign.value) if _call_name(assign.value).startswith("Lazy") else _lazy_call(assign.value, kind)
    names, k = [], 2
    while len(names) < len(uses) - 1:
        if not re.search(rf"\b{attr}_{k}\b", code):
            names.append(f"{attr}_{k}")
        k += 1
    indent = " " * assign.col_offset
    edits = [(assign.value, layer), (_at((assign.end_lineno or assign.lineno) + 1, 0),
                                      "".join(f"{indent}self.{name} = {layer}\n" for name in names))]
    edits += [(use.func, f"self.{name}") for use, name in zip(uses[1:], names)]
    return Fix(_splice(code, edits), "unshare_layer",
               f"self.{attr} was applied at {len(uses)} places to different input sizes; each later place gets "
               f"its own {layer}: {', '.join('self.' + n for n in names)}")


def _format_attribute(code: str, error: str) -> Fix | None:
    """`self.conv{i} = ...` (an attribute name written like an f-string, a syntax error): setattr/getattr."""
    if "SyntaxError" not in error or not _FORMAT_ATTR.search(code):
        return None
    lines = []
    for line in code.splitlines():
        line = _FORMAT_ASSIGN.sub(lambda a: f'{a[1]}setattr(self, f"{a[2]}", {a[3]})', line)
        lines.append(_FORMAT_ATTR.sub(lambda a: f'getattr(self, f"{a[1]}")', line) + "\n")
    return Fix("".join(lines), "format_attribute", "self.name{i} -> setattr(self, f\"name{i}\", ...) / getattr(self, f\"name{i}\")")


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
    """groups that do not divide the channels: drop `groups` from that conv, and from every other conv
    whose literal groups visibly does not divide its literal channels (seen: four in one module, and
    one fix per error would spend the fix budget on them)."""
    line_no = _candidate_line(error)
    if not _GROUPS.search(error) or line_no is None:
        return None
    at_line = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and any(k.arg == "groups" for k in n.keywords)
               and n.lineno <= line_no <= (n.end_lineno or n.lineno)]
    if len(at_line) != 1:
        return None
    broken = [n for n in ast.walk(tree) if _call_name(n).startswith("Conv") and _groups_break(n) and n not in at_line]
    edits = [(n, ast.unparse(ast.Call(func=n.func, args=n.args, keywords=[k for k in n.keywords if k.arg != "groups"])))
             for n in at_line + broken]
    lines = ", ".join(str(n.lineno) for n in sorted(at_line + broken, key=lambda n: n.lineno))
    return Fix(_splice(code, edits), "drop_groups", f"removed groups from the conv(s) on line(s) {lines}")


def _groups_break(call: ast.Call) -> bool:
    """nn.Conv2d(32, 64, 3, groups=64): literal groups that do not divide a literal channel count."""
    groups = next((k.value for k in call.keywords if k.arg == "groups"), None)
    if not (isinstance(groups, ast.Constant) and type(groups.value) is int and groups.value > 1):
        return False
    channels = [*call.args[:2], *(k.value for k in call.keywords if k.arg in ("in_channels", "out_channels"))]
    return any(isinstance(c, ast.Constant) and type(c.value) is int and c.value % groups.value for c in channels)


def _bare_torch_name(code: str, tree: ast.Module, error: str) -> Fix | None:
    """A torch.nn layer named without its module (`Identity()`, NameError): `nn.Identity()`."""
    m = _UNDEFINED.search(error)
    alias = next((local for local, module in _imports(tree).items() if module == "torch.nn"), None)
    if not m or m.group(1) not in _NN_LAYERS or alias is None:
        return None
    name = m.group(1)
    edits = [(n, f"{alias}.{name}") for n in ast.walk(tree)
             if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)]
    if not edits:
        return None
    return Fix(_splice(code, edits), "bare_torch_name", f"{name} -> {alias}.{name} ({len(edits)}x)")


def _pool_too_small(code: str, tree: ast.Module, error: str) -> Fix | None:
    """A pooling layer applied to a map smaller than its kernel: drop that pooling step."""
    m = _MODULE.search(error)
    if not _TOO_SMALL.search(error) or not m or m.group(2) not in _POOLS:
        return None
    edits = [(call, "nn.Identity()") for call in _layer_calls(tree, m.group(1), m.group(2))]
    if not edits:
        return None
    return Fix(_splice(code, edits), "drop_pool", f"self.{m.group(1)}: {m.group(2)} on a too-small map -> nn.Identity()")


def _unknown_layer(code: str, tree: ast.Module, error: str) -> Fix | None:
    """A layer or function torch does not have (nn.GlobalAvgPool2d, F.swish): the real one, everywhere."""
    m = _NO_MODULE_ATTR.search(error)
    if not m or m.group(2) not in _ALIASES[m.group(1)]:
        return None
    module, name = m.groups()
    new = _ALIASES[module][name]
    imports = _imports(tree)
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    edits: list[tuple[ast.AST, str]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == name and _module(node.value, imports) == module):
            continue
        spelling, call = ast.get_source_segment(code, node.value), calls.get(id(node))
        if "(" not in new:
            edits.append((node, f"{spelling}.{new}"))
        elif call is not None and (call.args or "{0}" not in new):
            first = ast.get_source_segment(code, call.args[0]) if call.args else ""
            edits.append((call, new.format(first, m=spelling)))
    if not edits:
        return None
    return Fix(_splice(code, edits), "unknown_layer",
               f"{module} has no {name}: -> {edits[0][1]} ({len(edits)} place{'s' * (len(edits) > 1)})")


def _unused_forbidden_import(code: str, tree: ast.Module, error: str) -> Fix | None:
    """`import torchvision` / `import torch.utils.data as td` that nothing in the module uses (left from a
    data-loading script): drop the import. Any forbidden module actually used keeps the LLM repair."""
    lines = {int(n) for n in _FORBIDDEN_MODULE.findall(error)}
    if not lines:
        return None
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and n.lineno in lines]
    if len(imports) != len(lines):
        return None
    bound = {(a.asname or a.name).split(".")[0] for n in imports for a in n.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if bound & used:
        return None
    return Fix(_splice(code, [(_lines(n), "") for n in imports]), "drop_unused_import",
               "dropped unused forbidden import(s): " + "; ".join(ast.unparse(n) for n in imports))


def _helper_device(code: str, tree: ast.Module, error: str) -> Fix | None:
    """self.device read in a block never given a device: its __init__ drops it, forward uses its input's."""
    m = _NO_ATTR.search(error)
    if not m or m.group(2) != "device":
        return None
    init = _init_of(tree, m.group(1))
    if init is None or "device" in {a.arg for a in init.args.args}:
        return None  # an __init__ argument read as an attribute is _missing_layer's
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == m.group(1))
    edits: list[tuple[ast.AST, str]] = []
    notes: set[str] = set()
    for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
        args = [a.arg for a in method.args.args[1:]]
        if method is not init and args:
            found = [(n, f"{args[0]}.device") for n in ast.walk(method) if _is_self_attr(n, "device")]
            edits += found
            notes |= {f"self.device -> {args[0]}.device in {method.name}"} if found else set()
            continue
        dropped = set()
        for node in ast.walk(method):  # breadth first: a statement before its call
            if isinstance(node, ast.Expr) and _to_device(node.value) and isinstance(node.value.func.value, ast.Name):
                edits.append((_lines(node), ""))  # `self.to(self.device)` does nothing without it
                dropped.add(id(node.value))
                notes.add(f"dropped {ast.get_source_segment(code, node)}")
            elif _to_device(node) and id(node) not in dropped:
                edits.append((node, ast.get_source_segment(code, node.func.value)))
                notes.add("dropped .to(self.device)")
            elif isinstance(node, ast.Call) and any(_is_self_attr(k.value, "device") for k in node.keywords):
                edits += [(_keyword_span(node, k), "") for k in node.keywords if _is_self_attr(k.value, "device")]
                notes.add("dropped device=self.device")
    if not edits or len(edits) != sum(_is_self_attr(n, "device") for n in ast.walk(cls)):
        return None  # self.device also read some other way
    return Fix(_splice(code, edits), "helper_device", f"{cls.name} never stores a device: " + "; ".join(sorted(notes)))


def _lazy_from_attribute(code: str, tree: ast.Module, error: str) -> Fix | None:
    """A layer's input size read from a layer without that attribute (pool.out_features): infer it instead."""
    m, line = _NO_ATTR.search(error), _candidate_line(error)
    if not m or m.group(2) not in _SIZE_ATTRS or line is None:
        return None
    edits = []
    for node in ast.walk(tree):
        kind = _call_name(node)
        if kind in _LAZY and node.lineno <= line <= (node.end_lineno or node.lineno):
            size = [*node.args[:1], *(k.value for k in node.keywords if k.arg == _LAZY_KW[kind])]
            if any(isinstance(n, ast.Attribute) and n.attr == m.group(2) for arg in size for n in ast.walk(arg)):
                edits.append((node, _lazy_call(node, kind)))
    if not edits:
        return None
    return Fix(_splice(code, edits), "lazy_from_attribute",
               f"line {line} read .{m.group(2)} of a {m.group(1)}, which has none: "
               + ", ".join(f"{_call_name(n)} -> {_LAZY[_call_name(n)]}" for n, _ in edits)
               + " (input size inferred at the first forward)")


def _inplace(code: str, tree: ast.Module, error: str) -> Fix | None:
    """An in-place op overwrote a tensor autograd needed: inplace=False, F.relu_ -> F.relu, x += y -> x = x + y."""
    if not _INPLACE.search(error):
        return None
    edits: list[tuple[ast.AST, str]] = []
    done: Counter[str] = Counter()
    for node in ast.walk(tree):  # nn.ReLU(inplace=True), nn.ReLU(True)
        flags = [node.value] if isinstance(node, ast.keyword) and node.arg == "inplace" else \
            node.args[:1] if isinstance(node, ast.Call) and _call_name(node) in _INPLACE_FIRST else []
        for flag in filter(_is_true, flags):
            edits.append((flag, "False"))
            done["inplace=True -> False"] += 1
    imports = _imports(tree)
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "forward"):
        statements = {id(n.value) for n in ast.walk(fn) if isinstance(n, ast.Expr)}
        for node in ast.walk(fn):
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and type(node.op) in _OPS:
                name, value = node.target.id, node.value
                wrap = not isinstance(value, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant))
                edits.append((_at(node.lineno, node.col_offset, value.lineno, value.col_offset),
                              f"{name} = {name} {_OPS[type(node.op)]} " + "(" * wrap))
                edits += [(_at(value.end_lineno or value.lineno, value.end_col_offset or 0), ")")] * wrap
                done["x += y -> x = x + y"] += 1
            elif _underscore_call(node):
                module = _module(node.func.value, imports)
                if module.startswith("torch.") and module != "torch.nn.functional":
                    continue  # nn.init.*_ and the like
                result = node.args[0] if module in ("torch", "torch.nn.functional") and node.args else node.func.value
                if id(node) in statements:  # `F.relu_(x)` alone: keep its result, `x = F.relu(x)`
                    if not isinstance(result, ast.Name):
                        continue
                    edits.append((_at(node.lineno, node.col_offset), f"{result.id} = "))
                edits.append((node.func, ast.get_source_segment(code, node.func)[:-1]))
                done["op_() -> op()"] += 1
    if not edits:
        return None
    return Fix(_splice(code, edits), "inplace", "made in-place operations out-of-place: "
               + ", ".join(f"{what} ({n}x)" for what, n in done.items()))


def _shrink_widths(code: str, tree: ast.Module, error: str) -> Fix | None:
    """Over a parameter / FLOP / epoch-time budget: scale every literal channel width by one factor."""
    excess = budget_excess(error)
    if not excess:
        return None
    what, (measured, budget) = min(excess.items(), key=lambda kv: kv[1][1] / kv[1][0])
    f = 0.9 * math.sqrt(budget / measured)  # cost grows about with width squared
    if f >= 1:
        return None
    widths, inner = _width_literals(tree)
    mapping = {v: max(8, int(v * f) // 8 * 8) for v in {n.value for n in widths}}
    mapping = {v: w for v, w in mapping.items() if w != v}
    if not mapping:
        return None
    edits = {id(n): (n, str(mapping[n.value])) for n in widths + inner if n.value in mapping}
    over = f"{measured:g}s > {budget:g}s" if what == "epoch time" else f"{_short(measured)} > {_short(budget)}"
    return Fix(_splice(code, list(edits.values())), "shrink_widths",
               f"scaled channel widths by {f:.2f} ({what} {over}): "
               + ", ".join(f"{v}->{w}" for v, w in sorted(mapping.items())))


def _device_keyword(code: str, tree: ast.Module, error: str) -> Fix | None:
    """`nn.ReLU(device=device)`, `self.block(c, device=device)`: drop `device=` wherever the callee takes
    none (every torch layer but those with weights; the module's own functions and classes without a
    `device` parameter). Seen six times in one 30-iteration run, on several lines of each module."""
    if not _DEVICE_KW.search(error):
        return None
    own = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    own |= {n.name: init for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and (init := _init_of(tree, n.name))}

    def takes_device(call: ast.Call) -> bool:
        name = _call_name(call)
        if name in own:
            args = own[name].args
            return args.kwarg is not None or "device" in {a.arg for a in args.args + args.kwonlyargs}
        return name.startswith(_WEIGHTED) or not name[:1].isupper()  # tensors' .to(device=...) etc.

    edits = [(_keyword_span(n, k), "") for n in ast.walk(tree) if isinstance(n, ast.Call) and not takes_device(n)
             for k in n.keywords if k.arg == "device"]
    if not edits:
        return None
    return Fix(_splice(code, edits), "drop_device_keyword", f"dropped device= from {len(edits)} call(s) that take none")


# ---------------------------------------------------------------- helpers

def _width_literals(tree: ast.Module) -> tuple[list[ast.Constant], list[ast.Constant]]:
    """The int literals >= MIN_WIDTH given as channel widths (arguments of layers and of the code's own
    blocks, their defaults, width lists, width-named variables), and every int literal inside a width
    argument (`64 * 7 * 7`; a depthwise conv's groups), to follow them. A Linear's sizes count only where
    the value is a width elsewhere too: a lone one is the input size (784) or the class count."""
    blocks = {n.name: _params(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name != "__init__"}
    blocks |= {n.name: _params(init) for n in ast.walk(tree)
               if isinstance(n, ast.ClassDef) and (init := _init_of(tree, n.name))}
    direct: list[ast.expr] = []
    linear: list[ast.expr] = []
    inner: list[ast.expr] = []
    for node in ast.walk(tree):
        name = _call_name(node)
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


def _short(n: float) -> str:
    """2325256192 -> '2.3G'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + unit
    return f"{n:g}"


def _lazy_call(call: ast.Call, kind: str) -> str:
    """nn.Linear(a, b, ...) as nn.LazyLinear(b, ...): the same layer without its input size."""
    keywords = [k for k in call.keywords if k.arg != _LAZY_KW[kind]]
    args = call.args[1:]  # the input size, when given positionally
    return ast.unparse(ast.Call(func=ast.parse(_LAZY[kind], mode="eval").body, args=args, keywords=keywords))


def _call_name(node: ast.AST) -> str:
    """`Conv2d` for nn.Conv2d(...) or Conv2d(...), `block` for self.block(...); '' for anything but a call."""
    if not isinstance(node, ast.Call):
        return ""
    return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the module it is bound to (`F` -> 'torch.nn.functional')."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
    return out


def _module(expr: ast.expr, imports: dict[str, str]) -> str:
    """The dotted module an expression such as `nn` or `nn.functional` names, through the imports."""
    head, _, rest = ast.unparse(expr).partition(".")
    return imports.get(head, head) + (f".{rest}" if rest else "")


def _to_device(node: ast.AST) -> bool:
    """`<x>.to(self.device)`."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "to" \
        and len(node.args) == 1 and _is_self_attr(node.args[0], "device")


def _underscore_call(node: ast.AST) -> bool:
    """`F.relu_(x)`, `x.add_(y)`: an in-place op."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr.endswith("_") and not node.func.attr.startswith("_")


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _at(line: int, col: int, end_line: int | None = None, end_col: int | None = None) -> ast.AST:
    """A span for _splice (empty without an end: an insertion point)."""
    return ast.Pass(lineno=line, col_offset=col, end_lineno=line if end_line is None else end_line,
                    end_col_offset=col if end_col is None else end_col)


def _lines(stmt: ast.stmt) -> ast.AST:
    """A statement's whole lines, line break included."""
    return _at(stmt.lineno, 0, (stmt.end_lineno or stmt.lineno) + 1, 0)


def _keyword_span(call: ast.Call, keyword: ast.keyword) -> ast.AST:
    """A keyword argument with the comma that joins it to the argument before it."""
    at = (keyword.lineno, keyword.col_offset)
    before = [a for a in [*call.args, *call.keywords] if (a.lineno, a.col_offset) < at]
    if not before:
        return keyword
    last = max(before, key=lambda a: (a.end_lineno or a.lineno, a.end_col_offset or 0))
    return _at(last.end_lineno or last.lineno, last.end_col_offset or 0, keyword.end_lineno, keyword.end_col_offset)


def _candidate_line(error: str) -> int | None:
    found = _LINE.findall(error)
    return int(found[-1]) if found else None


def _is_self_attr(target: ast.expr, attr: str) -> bool:
    return isinstance(target, ast.Attribute) and target.attr == attr and \
        isinstance(target.value, ast.Name) and target.value.id == "self"


def _layer_calls(tree: ast.Module, path: str, kind: str) -> list[ast.Call]:
    """The calls building the module at `path` as torch names it: `self.conv1 = nn.<kind>(...)` for
    `conv1` or `block.conv1`, and the element of `self.features = nn.Sequential(...)` (or ModuleList) for
    `features.0`, wherever they are."""
    parts = path.split(".")
    named = [i for i, part in enumerate(parts) if not part.isdigit()]
    if not named:
        return []
    attr, indexes = parts[named[-1]], [int(p) for p in parts[named[-1] + 1:]]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and _is_self_attr(node.targets[0], attr) \
                and isinstance(node.value, ast.Call):
            call = _element(node.value, indexes)
            if call is not None and _call_name(call) == kind:
                out.append(call)
    return out


def _element(call: ast.Call, indexes: list[int]) -> ast.Call | None:
    """The layer at `indexes` inside nested nn.Sequential(a, b, ...) / nn.ModuleList([a, b, ...])."""
    for i in indexes:
        name = _call_name(call)
        items = call.args if name == "Sequential" else \
            call.args[0].elts if name == "ModuleList" and call.args and isinstance(call.args[0], ast.List) else []
        if any(isinstance(item, ast.Starred) for item in items[: i + 1]) or i >= len(items) \
                or not isinstance(items[i], ast.Call):
            return None
        call = items[i]
    return call


def _init_of(tree: ast.Module, cls: str) -> ast.FunctionDef | None:
    for node in ast.walk(tree):  # a block may be defined inside Net.__init__
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
