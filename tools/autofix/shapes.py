"""Rules for layers built for the wrong input size: wrong flatten sizes and channel counts, a layer
shared by inputs of different sizes, `groups` that do not divide the channels, a pool on a too-small map."""
from __future__ import annotations

import ast
import re

from nasgraph.tools.evaluator.diagnosis import Diagnosis

from .edit import Fix, call_name, is_self_attr, layer_calls, span, splice
from .registry import rule

# Layers whose input size can be inferred at the first forward (the harness runs one before training).
_LAZY = {"Linear": "nn.LazyLinear", "Conv2d": "nn.LazyConv2d", "BatchNorm2d": "nn.LazyBatchNorm2d"}
_LAZY_KW = {"Linear": "in_features", "Conv2d": "in_channels", "BatchNorm2d": "num_features",
            "BatchNorm1d": "num_features"}
_POOLS = ("MaxPool2d", "AvgPool2d")
# The norm that takes an input of the rank given (BatchNorm1d takes (N, C) and (N, C, L)).
_NORM_FOR_RANK = {"BatchNorm2d": {2: "nn.LazyBatchNorm1d", 3: "nn.LazyBatchNorm1d"},
                  "BatchNorm1d": {4: "nn.LazyBatchNorm2d"}}
# Where kernel_size and padding sit among the positional arguments.
_PADDED = {"Conv2d": (2, 4), "LazyConv2d": (1, 3), "MaxPool2d": (0, 2), "AvgPool2d": (0, 2)}
_SIZE_ATTRS = {"out_features", "out_channels", "in_features", "in_channels", "num_features"}


@rule("flatten_before_linear", 'linear_size', 20,
      "a Linear given a map: flatten before it (or nn.Flatten() in its Sequential) and infer its input size")
def fix_unflattened(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """A Linear fed a 4-D map: flatten before it, and let the Linear infer its input size."""
    shape = d.shape()
    if d.kind != "linear_size" or d.layer_type != "Linear" or not d.module_path or not shape or len(shape) <= 2:
        return None
    attr = d.module_path.rsplit(".", 1)[-1]
    if attr.isdigit():  # an element of nn.Sequential(..., nn.Linear(...)): a Flatten goes in before it
        return _flatten_in_sequential(code, tree, d.module_path, len(shape))
    line_no = d.line
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
    lazy = fix_lazy_input_size(flattened, ast.parse(flattened), d)
    return Fix(lazy.code if lazy else flattened, "flatten_before_linear",
               f"flatten {var} before self.{attr} (it was called on a {len(shape)}-D tensor)"
               + ("; " + lazy.description if lazy else ""))


@rule("linear_to_conv1x1", 'linear_size', 10,
      "the Linears of a block given a pooled (B, C, 1, 1) map become 1x1 convs (squeeze-excitation)")
def fix_pooled_linear(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """A Linear inside a block applied to a pooled (B, C, 1, 1) map: the squeeze-excitation the model
    wrote with Linears and no flatten (5 iterations of nine 1.5B runs). Every Linear of that block becomes
    the 1x1 Conv2d it stands for, so the excitation keeps the map's rank and scales it by broadcasting;
    flattening instead (fix_unflattened) returned (B, C) to a block that multiplies it with the map."""
    path, shape = d.module_path or "", d.shape() or []
    if d.kind != "linear_size" or d.layer_type != "Linear" or "." not in path:
        return None
    failing = layer_calls(tree, path, "Linear")
    if len(shape) != 4 or shape[2:] != [1, 1] or not failing:
        return None
    blocks = [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name != "Net"
              and any(call in ast.walk(c) for call in failing)]
    if not blocks:
        return None  # Net's own classifier on a pooled map: that one wants the flatten
    linears = [n for c in blocks for n in ast.walk(c) if isinstance(n, ast.Call) and call_name(n) == "Linear"]
    edits = [(n, _as_pointwise_conv(n)) for n in linears]
    return Fix(splice(code, edits), "linear_to_conv1x1",
               f"self.{path} got a pooled {tuple(shape)} map: the {len(edits)} Linear(s) of "
               f"{', '.join(c.name for c in blocks)} -> 1x1 Conv2d (the map keeps its rank)")


def _as_pointwise_conv(call: ast.Call) -> str:
    """nn.Linear(a, b, bias=False) -> nn.Conv2d(a, b, 1, bias=False)."""
    rename = {"in_features": "in_channels", "out_features": "out_channels"}
    keywords = [ast.keyword(arg=rename.get(k.arg, k.arg), value=k.value) for k in call.keywords]
    args = list(call.args[:2])
    if len(call.args) > 2:  # Linear's third positional argument is bias; Conv2d's is kernel_size
        keywords.append(ast.keyword(arg="bias", value=call.args[2]))
    if len(args) == 2:
        args.append(ast.Constant(1))
    else:
        keywords.append(ast.keyword(arg="kernel_size", value=ast.Constant(1)))
    func = call.func
    func = ast.Attribute(value=func.value, attr="Conv2d") if isinstance(func, ast.Attribute) else ast.Name(id="Conv2d")
    return ast.unparse(ast.Call(func=func, args=args, keywords=keywords))


def _flatten_in_sequential(code: str, tree: ast.Module, path: str, rank: int) -> Fix | None:
    """`nn.Sequential(conv, bn, relu, nn.Linear(6272, 10))` given a map (fm15-q iteration 9): the
    Linear is made Lazy and an nn.Flatten() put before it in the Sequential."""
    calls = layer_calls(tree, path, "Linear")
    in_sequential = [c for c in calls if any(call_name(n) == "Sequential" and any(a is c for a in n.args)
                                             for n in ast.walk(tree))]
    if not in_sequential:
        return None
    edits = [(c, "nn.Flatten(), " + lazy_call(c, "Linear")) for c in in_sequential]
    return Fix(splice(code, edits), "flatten_before_linear",
               f"self.{path} is a Linear given a {rank}-D map inside nn.Sequential: nn.Flatten() put before it, "
               "and it infers its input size (nn.LazyLinear)")


@rule("unshare_layer", ('linear_size', 'channels'), 30,
      "one layer applied to inputs of different sizes: each later use gets its own Lazy copy")
def fix_shared_layer(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """One layer applied at several places to inputs of different sizes (self.conv1 on the image, then on
    a 128-channel map): every place after the first gets its own copy, and all infer their input size."""
    if d.kind not in ("linear_size", "channels") or d.layer_type not in _LAZY or not d.module_path:
        return None
    attr, kind = d.module_path.rsplit(".", 1)[-1], d.layer_type
    built = [(cls, n) for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef) for n in ast.walk(cls)
             if isinstance(n, ast.Assign) and len(n.targets) == 1 and is_self_attr(n.targets[0], attr)
             and call_name(n.value) in (kind, _LAZY[kind][3:])]
    if len(built) != 1:
        return None
    cls, assign = built[0]  # the uses in that class only: another class may have its own self.<attr>
    uses = sorted((n for n in ast.walk(cls) if isinstance(n, ast.Call) and is_self_attr(n.func, attr)),
                  key=lambda n: (n.lineno, n.col_offset))
    if len(uses) < 2:
        return None
    layer = ast.unparse(assign.value) if call_name(assign.value).startswith("Lazy") else lazy_call(assign.value, kind)
    names, k = [], 2
    while len(names) < len(uses) - 1:
        if not re.search(rf"\b{attr}_{k}\b", code):
            names.append(f"{attr}_{k}")
        k += 1
    indent = " " * assign.col_offset
    edits = [(assign.value, layer), (span((assign.end_lineno or assign.lineno) + 1, 0),
                                      "".join(f"{indent}self.{name} = {layer}\n" for name in names))]
    edits += [(use.func, f"self.{name}") for use, name in zip(uses[1:], names)]
    return Fix(splice(code, edits), "unshare_layer",
               f"self.{attr} was applied at {len(uses)} places to different input sizes; each later place gets "
               f"its own {layer}: {', '.join('self.' + n for n in names)}")


@rule("lazy_input_size", ('linear_size', 'channels'), 40,
      "a Linear / Conv2d / BatchNorm2d built for the wrong input size infers it (Lazy form)")
def fix_lazy_input_size(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """Linear / Conv2d / BatchNorm2d built for the wrong input size: let it infer the size instead."""
    if d.kind not in ("linear_size", "channels") or d.layer_type not in _LAZY or not d.module_path:
        return None
    path, kind = d.module_path, d.layer_type
    edits = [(call, lazy_call(call, kind)) for call in layer_calls(tree, path, kind)]
    if not edits:
        return None
    return Fix(splice(code, edits), f"lazy_{kind.lower()}",
               f"self.{path}: {kind} -> {_LAZY[kind]} (input size inferred at the first forward)")


@rule("drop_groups", 'groups', 10,
      "groups that do not divide the channels are dropped, from every conv where they visibly cannot")
def fix_groups(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """groups that do not divide the channels: drop `groups` from that conv, from every other conv
    whose literal groups visibly does not divide its literal channels, and from every conv given the
    same non-literal groups (`groups=groups` in each branch of a block). Seen: four in one module, and
    one fix per error spent the fix budget on them."""
    line_no = d.line
    if d.kind != "groups" or line_no is None:
        return None
    at_line = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and any(k.arg == "groups" for k in n.keywords)
               and n.lineno <= line_no <= (n.end_lineno or n.lineno)]
    if len(at_line) != 1:
        return None
    shared = next(ast.unparse(k.value) for k in at_line[0].keywords if k.arg == "groups")
    broken = [n for n in ast.walk(tree) if call_name(n).startswith("Conv") and n not in at_line
              and (_groups_break(n) or _groups_are(n, shared))]
    edits = [(n, ast.unparse(ast.Call(func=n.func, args=n.args, keywords=[k for k in n.keywords if k.arg != "groups"])))
             for n in at_line + broken]
    lines = ", ".join(str(n.lineno) for n in sorted(at_line + broken, key=lambda n: n.lineno))
    return Fix(splice(code, edits), "drop_groups", f"removed groups from the conv(s) on line(s) {lines}")


def _groups_break(call: ast.Call) -> bool:
    """nn.Conv2d(32, 64, 3, groups=64): literal groups that do not divide a literal channel count."""
    groups = next((k.value for k in call.keywords if k.arg == "groups"), None)
    if not (isinstance(groups, ast.Constant) and type(groups.value) is int and groups.value > 1):
        return False
    channels = [*call.args[:2], *(k.value for k in call.keywords if k.arg in ("in_channels", "out_channels"))]
    return any(isinstance(c, ast.Constant) and type(c.value) is int and c.value % groups.value for c in channels)


def _groups_are(call: ast.Call, expr: str) -> bool:
    """The conv's groups is the expression `expr`, when that is a name rather than a number."""
    return not expr.isdigit() and any(k.arg == "groups" and ast.unparse(k.value) == expr for k in call.keywords)


@rule("norm_for_rank", 'rank', 10,
      "a BatchNorm of the wrong rank becomes the Lazy norm of the rank it is given")
def fix_batchnorm_rank(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """BatchNorm2d after the flatten, or BatchNorm1d before it: the norm of the rank it is given."""
    if d.kind != "rank" or d.layer_type not in _NORM_FOR_RANK or not d.module_path or not d.shape():
        return None
    path, layer, got = d.module_path, d.layer_type, len(d.shape())
    lazy = _NORM_FOR_RANK[layer].get(got)
    if lazy is None:
        return None
    edits = [(call, lazy_call(call, layer, lazy)) for call in layer_calls(tree, path, layer)]
    if not edits:
        return None
    return Fix(splice(code, edits), "norm_for_rank",
               f"self.{path}: {layer} was given a {got}-D input -> {lazy} "
               "(size inferred at the first forward)")


@rule("same_padding", 'spatial', 10,
      "branches joined with different spatial sizes: odd kernels get padding kernel // 2")
def fix_branch_padding(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """Branches concatenated or added with different spatial sizes (a 5x5 conv padded by 1 beside a 3x3
    one): every odd-kernel conv and pool of the module's class gets `same` padding, kernel // 2."""
    spatial = d.name == "cat" or d.dim in (2, 3)  # an addition that differs in channels is not padding's
    if d.kind != "spatial" or not spatial or not d.layer_type or not d.got or len(d.got) != 2:
        return None
    small, big = sorted(d.got)
    if big in (2 * small, 2 * small - 1):  # a stride on one branch only: padding cannot fix that
        return None
    cls = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == d.layer_type), None)
    if cls is None:
        return None
    edits = []
    for call in ast.walk(cls):
        at = _PADDED.get(call_name(call))
        if at is None:
            continue
        kernel_at, padding_at = at
        kernel = _arg(call, kernel_at, "kernel_size")
        if not (isinstance(kernel, ast.Constant) and type(kernel.value) is int and kernel.value % 2):
            continue
        padding = _arg(call, padding_at, "padding")
        if (0 if padding is None else getattr(padding, "value", None)) == kernel.value // 2:
            continue
        same = ast.Constant(kernel.value // 2)
        if len(call.args) > padding_at:
            new = ast.Call(func=call.func, args=[*call.args[:padding_at], same, *call.args[padding_at + 1:]],
                           keywords=call.keywords)
        else:
            new = ast.Call(func=call.func, args=call.args,
                           keywords=[k for k in call.keywords if k.arg != "padding"] + [ast.keyword("padding", same)])
        edits.append((call, ast.unparse(new)))
    if not edits:
        return None
    return Fix(splice(code, edits), "same_padding",
               f"{d.layer_type}'s branches had different sizes: padding = kernel // 2 for {len(edits)} "
               "conv/pool layer(s)")


def _arg(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


@rule("drop_pool", 'too_small', 10,
      "a pool on a map smaller than its kernel becomes nn.Identity()")
def fix_pool_too_small(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """A pooling layer applied to a map smaller than its kernel: drop that pooling step."""
    if d.kind != "too_small" or d.layer_type not in _POOLS or not d.module_path:
        return None
    edits = [(call, "nn.Identity()") for call in layer_calls(tree, d.module_path, d.layer_type)]
    if not edits:
        return None
    return Fix(splice(code, edits), "drop_pool", f"self.{d.module_path}: {d.layer_type} on a too-small map -> nn.Identity()")


@rule("lazy_from_attribute", 'no_attribute', 30,
      "an input size read from a layer without it (pool.out_features): the layer infers it")
def fix_lazy_from_attribute(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """A layer's input size read from a layer without that attribute (pool.out_features): infer it instead."""
    line = d.line
    if d.kind != "no_attribute" or d.name not in _SIZE_ATTRS or line is None:
        return None
    edits = []
    for node in ast.walk(tree):
        kind = call_name(node)
        if kind in _LAZY and node.lineno <= line <= (node.end_lineno or node.lineno):
            size = [*node.args[:1], *(k.value for k in node.keywords if k.arg == _LAZY_KW[kind])]
            if any(isinstance(n, ast.Attribute) and n.attr == d.name for arg in size for n in ast.walk(arg)):
                edits.append((node, lazy_call(node, kind)))
    if not edits:
        return None
    return Fix(splice(code, edits), "lazy_from_attribute",
               f"line {line} read .{d.name} of a {d.owner}, which has none: "
               + ", ".join(f"{call_name(n)} -> {_LAZY[call_name(n)]}" for n, _ in edits)
               + " (input size inferred at the first forward)")


@rule("drop_init_of_lazy", 'uninitialized', 10,
      "nn.init calls that reach a Lazy layer become pass")
def fix_init_of_lazy(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """A weight-init loop (`nn.init.kaiming_normal_(m.weight)`) reached a Lazy layer, whose weights exist
    only after the first forward (7 failed evaluations of eight 1.5B runs, after a Lazy fix): the
    function's `nn.init` calls become `pass`, so every layer keeps torch's default initialization."""
    line = d.line if d.kind == "uninitialized" else None
    fn = next((f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and line is not None
               and f.lineno <= line <= (f.end_lineno or f.lineno)
               and not any(isinstance(g, ast.FunctionDef) and g is not f and g.lineno <= line <= (g.end_lineno or 0)
                           for g in ast.walk(f))), None)
    inits = [s for s in ast.walk(fn) if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
             and ".init." in f".{ast.unparse(s.value.func)}"] if fn else []
    if not any(s.lineno <= line <= (s.end_lineno or s.lineno) for s in inits):
        return None
    return Fix(splice(code, [(s, "pass") for s in inits]), "drop_init_of_lazy",
               f"{fn.name} initialized weights a Lazy layer does not have yet: its {len(inits)} nn.init call(s) "
               "dropped (torch's default initialization)")


def lazy_call(call: ast.Call, kind: str, lazy: str | None = None) -> str:
    """nn.Linear(a, b, ...) as nn.LazyLinear(b, ...): the same layer without its input size, as its own
    Lazy form or as `lazy` (a BatchNorm2d given a flat input becomes nn.LazyBatchNorm1d)."""
    keywords = [k for k in call.keywords if k.arg != _LAZY_KW[kind]]
    args = call.args[1:]  # the input size, when given positionally
    return ast.unparse(ast.Call(func=ast.parse(lazy or _LAZY[kind], mode="eval").body, args=args, keywords=keywords))
