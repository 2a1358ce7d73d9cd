"""A model whose forward was never written: Net.__init__ builds every layer and the reply stops there
(11 of the unfixed failures in six 1.5B runs). The layers' order in __init__ is the design the model
meant, so the rule writes the forward that applies them in that order."""
from __future__ import annotations

import ast
import re

from nasgraph.tools.evaluator.diagnosis import Diagnosis

from .edit import Fix, call_name, init_of, is_self_attr, is_self_call, span, splice
from .registry import rule
from .shapes import lazy_call

_LINEAR = ("Linear", "LazyLinear")
# Calls that build no layer: values such as ints and shapes, functions, containers read elsewhere.
_NOT_LAYERS = {"int", "float", "len", "list", "dict", "tuple", "range", "getattr", "Parameter", "ParameterList",
               "ModuleDict", "ParameterDict", "zeros", "ones", "randn", "tensor", "device", "get"}


@rule("write_forward", 'no_forward', 10,
      "a forward never written is written from __init__'s layer order")
def fix_missing_forward(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """forward applies the layers of __init__ in their order of assignment: containers whole, a ModuleList
    one element after another, a flatten before the first Linear (which infers its input size), and
    nothing after the last Linear (a norm or dropout on the logits is not meant). Without any Linear
    (the reply stopped early), a pooled classifier head is added."""
    owner = d.owner if d.kind == "no_forward" else None
    code = code if code.endswith("\n") else code + "\n"  # the forward goes after the class's last line
    cls = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and owner and n.name == owner), None)
    init = init_of(tree, cls.name) if cls else None
    if init is None or any(isinstance(f, ast.FunctionDef) and f.name == "forward" for f in cls.body):
        return None
    made = {f.name: call_name(f.body[-1].value) for f in cls.body if isinstance(f, ast.FunctionDef)
            and isinstance(f.body[-1], ast.Return) and isinstance(f.body[-1].value, ast.Call)}
    built = [s for s in init.body if isinstance(s, ast.Assign) and len(s.targets) == 1
             and isinstance(s.targets[0], ast.Attribute) and is_self_attr(s.targets[0], s.targets[0].attr)
             and isinstance(s.value, ast.Call) and call_name(s.value) not in _NOT_LAYERS and not _is_function(s.value)]
    if not built:
        return None
    # self._make_conv(...) builds what its method returns
    layers = [(s.targets[0].attr, made.get(call_name(s.value), call_name(s.value)) if is_self_call(s.value)
               else call_name(s.value)) for s in built]
    edits = []
    linears = [i for i, (_, kind) in enumerate(layers) if kind in _LINEAR]
    if linears:
        layers = layers[: linears[-1] + 1]
        first = built[linears[0]].value
        if call_name(first) == "Linear" and first.args:  # the flatten size is often computed wrong
            edits.append((first, lazy_call(first, "Linear")))
    else:  # the reply stopped before the classifier: pool, flatten and one Linear to the classes
        out_shape = init.args.args[2].arg if len(init.args.args) > 2 else None
        if out_shape is None:
            return None
        head = "head" if not re.search(r"\bself\.head\b", code) else "head_"
        last = built[-1]
        edits.append((span(last.end_lineno + 1, 0), f"{' ' * last.col_offset}self.{head} = nn.Sequential("
                      f"nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear({out_shape}[0]))\n"))
        layers.append((head, "Sequential"))
        linears = [len(layers)]  # no flatten of its own: the head flattens
    body = []
    for i, (attr, kind) in enumerate(layers):
        if i == linears[0]:
            body.append("x = torch.flatten(x, 1)")
        body.append(f"for layer in self.{attr}:\n            x = layer(x)" if kind == "ModuleList" else
                    f"x = self.{attr}(x)")
    indent = " " * cls.col_offset  # a class nested in a function: the forward keeps its indentation
    edits.append((span(cls.end_lineno + 1, 0), f"\n{indent}    def forward(self, x):\n"
                  + "".join(f"{indent}        " + line.replace("\n", "\n" + indent) + "\n" for line in body)
                  + f"{indent}        return x\n"))
    return Fix(splice(code, edits), "write_forward",
               f"{cls.name} had no forward: wrote one applying its {len(layers)} layers in __init__'s order "
               f"(self.{layers[0][0]} ... self.{layers[-1][0]})" + ("; added a pooled Linear head" if not any(
                   kind in _LINEAR for _, kind in layers) else ""))


def _is_function(call: ast.Call) -> bool:
    """torch.flatten(...), F.relu(...): a function call, not a layer (nn.X(...) and Block(...) are layers)."""
    func = call.func
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("torch", "F")
