"""Rules for names and calls torch or the contract lacks: undefined or invented layers, layers named
without `nn.`, forbidden imports nothing uses, `device` where there is none, `self.name{i}`, in-place ops."""
from __future__ import annotations

import ast
import re
from collections import Counter

from nasgraph.tools.evaluator.diagnosis import Diagnosis

from .edit import (
    Fix,
    call_name,
    import_map,
    init_of,
    is_self_attr,
    is_super_init,
    is_true,
    keyword_span,
    module_name,
    span,
    splice,
    whole_lines,
)
from .registry import rule

# Layers that stand in for a function or name the generator forgot to define: only layers without
# widths, so the guess cannot break a shape. Global pools are named as torchvision names them (avgpool).
_LAYER_FOR = {"flatten": "nn.Flatten()", "relu": "nn.ReLU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()",
              "sigmoid": "nn.Sigmoid()", "tanh": "nn.Tanh()", "softmax": "nn.Softmax(dim=1)",
              "dropout": "nn.Dropout(0.2)", "identity": "nn.Identity()",
              **dict.fromkeys(("pool", "maxpool", "max_pool"), "nn.MaxPool2d(2)"),
              **dict.fromkeys(("avgpool", "avg_pool", "gap", "global_pool", "global_avg_pool", "adaptive_pool",
                               "adaptive_avg_pool"), "nn.AdaptiveAvgPool2d(1)")}
_NUMBERED = re.compile(r"_?\d+$")  # pool2, relu_1: numbered copies of the same layer
# torch layers with weights, whose constructors take device= (activations, pools and dropout do not)
_WEIGHTED = ("Conv", "Linear", "Lazy", "BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "Embedding", "PReLU")
# Names the generator invents, none of them in torch (checked against torch 2.x), and what to write
# instead: a bare name renames the attribute (arguments kept); a call replaces the whole call, with {m}
# the module as the code spells it and {0} the call's first argument.
ALIASES = {
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
NN_LAYERS = frozenset({
    "Identity", "Conv1d", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm",
    "ReLU", "ReLU6", "GELU", "SiLU", "ELU", "PReLU", "LeakyReLU", "Mish", "Hardswish", "Sigmoid", "Tanh",
    "Softmax", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Dropout", "Dropout2d",
    "Linear", "LazyLinear", "Flatten", "Sequential", "ModuleList", "Upsample"})
# Names models read in Net.__init__ without defining them, and where the contract's arguments hold them.
_FROM_CONTRACT = {**dict.fromkeys(("in_channels", "input_channels", "in_ch", "in_chans", "num_channels", "channels"),
                                  ("in_shape", "[1]")),
                  **dict.fromkeys(("num_classes", "n_classes", "classes", "num_outputs"), ("out_shape", "[0]"))}
# torch.nn.functional's activations and the layer for each (F.relu(inplace=True) -> nn.ReLU(inplace=True)).
_LAYER_OF = {"relu": "ReLU", "relu6": "ReLU6", "gelu": "GELU", "silu": "SiLU", "elu": "ELU", "leaky_relu": "LeakyReLU",
             "sigmoid": "Sigmoid", "tanh": "Tanh", "hardswish": "Hardswish", "mish": "Mish", "softmax": "Softmax",
             "dropout": "Dropout"}
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_INPLACE_FIRST = {"ReLU", "ReLU6", "SiLU", "Hardswish", "Hardsigmoid", "Mish", "SELU"}  # inplace: 1st argument
_FORMAT_ATTR = re.compile(r"self\.(\w*\{\w+\}\w*)")
_FORMAT_ASSIGN = re.compile(r"^(\s*)self\.(\w*\{\w+\}\w*)\s*=\s*(.+?)\s*$")


@rule("define_attribute", 'no_attribute', 10,
      "a common layer (self.flatten, self.pool2) or an __init__ argument used but never stored is defined")
def fix_missing_layer(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """self.flatten / self.relu / self.pool2 ... used but never defined: define the layer; self.in_shape (or
    another __init__ argument) used but never stored: store it."""
    if d.kind != "no_attribute" or not d.owner or not d.name:
        return None
    cls, attr = d.owner, d.name
    init = init_of(tree, cls)
    if init is None or not init.body:
        return None
    if attr in {a.arg for a in init.args.args[1:]}:
        value = attr
    elif _NUMBERED.sub("", attr.lower()) in _LAYER_FOR:
        value = _LAYER_FOR[_NUMBERED.sub("", attr.lower())]
    else:
        return None
    first = init.body[0]
    anchor = first if is_super_init(first) else None
    lines = code.splitlines(keepends=True)
    at = (anchor.end_lineno if anchor else first.lineno - 1)
    indent = " " * (first.col_offset)
    lines.insert(at, f"{indent}self.{attr} = {value}\n")
    return Fix("".join(lines), "define_attribute", f"defined self.{attr} = {value} in {cls}.__init__")


@rule("define_from_contract", 'undefined_name', 20,
      "in_channels / num_classes read but never defined come from in_shape / out_shape")
def fix_contract_name(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """`in_channels` or `num_classes` read in a function that takes in_shape / out_shape and never defined
    there (seen three times in one 1.5B run): define it from the argument."""
    line = d.line
    if d.kind != "undefined_name" or d.name not in _FROM_CONTRACT or line is None:
        return None
    name, (arg, index) = d.name, _FROM_CONTRACT[d.name]
    fns = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
           and f.lineno <= line <= (f.end_lineno or f.lineno) and arg in {a.arg for a in f.args.args}]
    if not fns:
        return None
    fn = max(fns, key=lambda f: f.lineno)  # the innermost
    first = fn.body[0]
    at = span(first.end_lineno + 1, 0) if is_super_init(first) else span(first.lineno, 0)
    return Fix(splice(code, [(at, f"{' ' * first.col_offset}{name} = {arg}{index}\n")]), "define_from_contract",
               f"defined {name} = {arg}{index} in {fn.name}")


@rule("function_to_layer", 'assign_function', 10,
      "a function assigned where a module goes (self.flatten = torch.flatten) becomes the layer")
def fix_function_as_layer(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """self.flatten = torch.flatten (a function) where a module is required: use the layer."""
    if d.kind != "assign_function" or not d.owner or d.owner.lower() not in _LAYER_FOR or not d.name:
        return None
    fn, attr = d.owner.lower(), d.name
    edits = [(node.value, _LAYER_FOR[fn]) for node in ast.walk(tree)
             if isinstance(node, ast.Assign) and is_self_attr(node.targets[0], attr)
             and isinstance(node.value, (ast.Attribute, ast.Name))]
    if not edits:
        return None
    return Fix(splice(code, edits), "function_to_layer", f"self.{attr}: function {fn} -> {_LAYER_FOR[fn]}")


@rule("functional_to_layer", 'missing_input', 10,
      "F.relu(inplace=True) used as a layer becomes nn.ReLU(inplace=True)")
def fix_functional_as_layer(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """F.relu(inplace=True) where a layer is meant (in nn.Sequential, add_module), called without the input
    it needs (seen twice from the 1.5B model): every such call becomes its layer, nn.ReLU(inplace=True)."""
    fname = d.name if d.kind == "missing_input" else None
    layer = _LAYER_OF.get(fname) if fname else None
    imports = import_map(tree)
    nn_alias = next((local for local, module in imports.items() if module == "torch.nn"), None)
    if layer is None or nn_alias is None:
        return None
    edits = [(n, ast.unparse(ast.Call(func=ast.Attribute(ast.Name(nn_alias), layer), args=[], keywords=n.keywords)))
             for n in ast.walk(tree) if isinstance(n, ast.Call) and not n.args and isinstance(n.func, ast.Attribute)
             and n.func.attr == fname and module_name(n.func.value, imports) == "torch.nn.functional"]
    if not edits:
        return None
    return Fix(splice(code, edits), "functional_to_layer",
               f"{len(edits)} call(s) of {fname}() without an input -> {nn_alias}.{layer}(...)")


@rule("bare_torch_name", 'undefined_name', 10,
      "a torch layer named without nn. gets it")
def fix_bare_torch_name(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """A torch.nn layer named without its module (`Identity()`, NameError): `nn.Identity()`."""
    alias = next((local for local, module in import_map(tree).items() if module == "torch.nn"), None)
    if d.kind != "undefined_name" or d.name not in NN_LAYERS or alias is None:
        return None
    name = d.name
    edits = [(n, f"{alias}.{name}") for n in ast.walk(tree)
             if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)]
    if not edits:
        return None
    return Fix(splice(code, edits), "bare_torch_name", f"{name} -> {alias}.{name} ({len(edits)}x)")


@rule("unknown_layer", 'no_torch_attribute', 10,
      "a layer torch does not have (nn.GlobalAvgPool2d, F.swish) becomes the real one")
def fix_unknown_layer(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """A layer or function torch does not have (nn.GlobalAvgPool2d, F.swish): the real one, everywhere."""
    if d.kind != "no_torch_attribute" or d.owner not in ALIASES or d.name not in ALIASES[d.owner]:
        return None
    module, name = d.owner, d.name
    new = ALIASES[module][name]
    imports = import_map(tree)
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    edits: list[tuple[ast.AST, str]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == name and module_name(node.value, imports) == module):
            continue
        spelling, call = ast.get_source_segment(code, node.value), calls.get(id(node))
        if "(" not in new:
            edits.append((node, f"{spelling}.{new}"))
        elif call is not None and (call.args or "{0}" not in new):
            first = ast.get_source_segment(code, call.args[0]) if call.args else ""
            edits.append((call, new.format(first, m=spelling)))
    if not edits:
        return None
    return Fix(splice(code, edits), "unknown_layer",
               f"{module} has no {name}: -> {edits[0][1]} ({len(edits)} place{'s' * (len(edits) > 1)})")


@rule("drop_unused_import", 'forbidden_import', 10,
      "a refused import that nothing uses is dropped")
def fix_unused_forbidden_import(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """`import torchvision` / `import torch.utils.data as td` that nothing in the module uses (left from a
    data-loading script): drop the import. Any forbidden module actually used keeps the LLM repair."""
    lines = set(d.lines) if d.kind == "forbidden_import" else set()
    if not lines:
        return None
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and n.lineno in lines]
    if len(imports) != len(lines):
        return None
    bound = {(a.asname or a.name).split(".")[0] for n in imports for a in n.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if bound & used:
        return None
    return Fix(splice(code, [(whole_lines(n), "") for n in imports]), "drop_unused_import",
               "dropped unused forbidden import(s): " + "; ".join(ast.unparse(n) for n in imports))


@rule("helper_device", 'no_attribute', 20,
      "self.device in a block that never stores one: dropped, or its input's device")
def fix_helper_device(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """self.device read in a block never given a device: its __init__ drops it, forward uses its input's."""
    if d.kind != "no_attribute" or d.name != "device" or not d.owner:
        return None
    init = init_of(tree, d.owner)
    if init is None or "device" in {a.arg for a in init.args.args}:
        return None  # an __init__ argument read as an attribute is fix_missing_layer's
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == d.owner)
    edits: list[tuple[ast.AST, str]] = []
    notes: set[str] = set()
    for method in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
        args = [a.arg for a in method.args.args[1:]]
        if method is not init and args:
            found = [(n, f"{args[0]}.device") for n in ast.walk(method) if is_self_attr(n, "device")]
            edits += found
            notes |= {f"self.device -> {args[0]}.device in {method.name}"} if found else set()
            continue
        dropped = set()
        for node in ast.walk(method):  # breadth first: a statement before its call
            if isinstance(node, ast.Expr) and _to_device(node.value) and isinstance(node.value.func.value, ast.Name):
                edits.append((whole_lines(node), ""))  # `self.to(self.device)` does nothing without it
                dropped.add(id(node.value))
                notes.add(f"dropped {ast.get_source_segment(code, node)}")
            elif _to_device(node) and id(node) not in dropped:
                edits.append((node, ast.get_source_segment(code, node.func.value)))
                notes.add("dropped .to(self.device)")
            elif isinstance(node, ast.Call) and any(is_self_attr(k.value, "device") for k in node.keywords):
                edits += [(keyword_span(node, k), "") for k in node.keywords if is_self_attr(k.value, "device")]
                notes.add("dropped device=self.device")
    if not edits or len(edits) != sum(is_self_attr(n, "device") for n in ast.walk(cls)):
        return None  # self.device also read some other way
    return Fix(splice(code, edits), "helper_device", f"{cls.name} never stores a device: " + "; ".join(sorted(notes)))


@rule("drop_device_keyword", 'unexpected_keyword', 10,
      "device= dropped wherever the callee takes none")
def fix_device_keyword(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """`nn.ReLU(device=device)`, `self.block(c, device=device)`: drop `device=` wherever the callee takes
    none (every torch layer but those with weights; the module's own functions and classes without a
    `device` parameter). Seen six times in one 30-iteration run, on several lines of each module."""
    if d.kind != "unexpected_keyword" or d.name != "device":
        return None
    own = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    own |= {n.name: init for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and (init := init_of(tree, n.name))}

    def takes_device(call: ast.Call) -> bool:
        name = call_name(call)
        if name in own:
            args = own[name].args
            return args.kwarg is not None or "device" in {a.arg for a in args.args + args.kwonlyargs}
        return name.startswith(_WEIGHTED) or not name[:1].isupper()  # tensors' .to(device=...) etc.

    edits = [(keyword_span(n, k), "") for n in ast.walk(tree) if isinstance(n, ast.Call) and not takes_device(n)
             for k in n.keywords if k.arg == "device"]
    if not edits:
        return None
    return Fix(splice(code, edits), "drop_device_keyword", f"dropped device= from {len(edits)} call(s) that take none")


@rule("drop_splat_keywords", 'unexpected_keyword', 20,
      "**prm splatted into a torch layer is dropped")
def fix_splat_keywords(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """`nn.Conv2d(c, 64, 3, **prm)`: the hyperparameters (lr, momentum ...) splatted into a torch layer that
    takes none of them (seen in fm15-o). Every `**` is dropped from the torch layers' calls."""
    if d.kind != "unexpected_keyword" or d.name == "device" or not d.owner:
        return None
    edits = [(keyword_span(n, k), "") for n in ast.walk(tree) if isinstance(n, ast.Call) and call_name(n) in NN_LAYERS
             | {d.owner} for k in n.keywords if k.arg is None]
    if not edits:
        return None
    return Fix(splice(code, edits), "drop_splat_keywords",
               f"dropped ** keywords from {len(edits)} torch layer call(s) ({d.owner} takes no '{d.name}')")


@rule("format_attribute", 'syntax', 10,
      "self.conv{i} = ... becomes setattr / getattr with an f-string")
def fix_format_attribute(code: str, tree: ast.Module | None, d: Diagnosis) -> Fix | None:
    """`self.conv{i} = ...` (an attribute name written like an f-string, a syntax error): setattr/getattr."""
    if d.kind != "syntax" or not _FORMAT_ATTR.search(code):
        return None
    lines = []
    for line in code.splitlines():
        line = _FORMAT_ASSIGN.sub(lambda a: f'{a[1]}setattr(self, f"{a[2]}", {a[3]})', line)
        lines.append(_FORMAT_ATTR.sub(lambda a: f'getattr(self, f"{a[1]}")', line) + "\n")
    return Fix("".join(lines), "format_attribute", "self.name{i} -> setattr(self, f\"name{i}\", ...) / getattr(self, f\"name{i}\")")


@rule("inplace", 'inplace', 10,
      "in-place ops autograd still needed become out-of-place")
def fix_inplace(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """An in-place op overwrote a tensor autograd needed: inplace=False, F.relu_ -> F.relu, x += y -> x = x + y."""
    if d.kind != "inplace":
        return None
    edits: list[tuple[ast.AST, str]] = []
    done: Counter[str] = Counter()
    for node in ast.walk(tree):  # nn.ReLU(inplace=True), nn.ReLU(True)
        flags = [node.value] if isinstance(node, ast.keyword) and node.arg == "inplace" else \
            node.args[:1] if isinstance(node, ast.Call) and call_name(node) in _INPLACE_FIRST else []
        for flag in filter(is_true, flags):
            edits.append((flag, "False"))
            done["inplace=True -> False"] += 1
    imports = import_map(tree)
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "forward"):
        statements = {id(n.value) for n in ast.walk(fn) if isinstance(n, ast.Expr)}
        for node in ast.walk(fn):
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and type(node.op) in _OPS:
                name, value = node.target.id, node.value
                wrap = not isinstance(value, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant))
                edits.append((span(node.lineno, node.col_offset, value.lineno, value.col_offset),
                              f"{name} = {name} {_OPS[type(node.op)]} " + "(" * wrap))
                edits += [(span(value.end_lineno or value.lineno, value.end_col_offset or 0), ")")] * wrap
                done["x += y -> x = x + y"] += 1
            elif _underscore_call(node):
                module = module_name(node.func.value, imports)
                if module.startswith("torch.") and module != "torch.nn.functional":
                    continue  # nn.init.*_ and the like
                result = node.args[0] if module in ("torch", "torch.nn.functional") and node.args else node.func.value
                if id(node) in statements:  # `F.relu_(x)` alone: keep its result, `x = F.relu(x)`
                    if not isinstance(result, ast.Name):
                        continue
                    edits.append((span(node.lineno, node.col_offset), f"{result.id} = "))
                edits.append((node.func, ast.get_source_segment(code, node.func)[:-1]))
                done["op_() -> op()"] += 1
    if not edits:
        return None
    return Fix(splice(code, edits), "inplace", "made in-place operations out-of-place: "
               + ", ".join(f"{what} ({n}x)" for what, n in done.items()))


def _to_device(node: ast.AST) -> bool:
    """`<x>.to(self.device)`."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "to" \
        and len(node.args) == 1 and is_self_attr(node.args[0], "device")


def _underscore_call(node: ast.AST) -> bool:
    """`F.relu_(x)`, `x.add_(y)`: an in-place op."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr.endswith("_") and not node.func.attr.startswith("_")
