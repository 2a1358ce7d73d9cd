"""Rules for a forward that does not end in logits: no classifier head (it returns the flattened or
pooled features, or a map of class channels), no `return` at all, or a layer used that was never built.
Seen in 8 of the drafts no earlier rule fixed in the last two 1.5B runs (fm15-o, fm15-p): the model
wrote every stage and stopped before the head, or named a stage it never wrote."""
from __future__ import annotations

import ast
import re

from nasgraph.tools.evaluator.diagnosis import Diagnosis

from .edit import Fix, init_of, is_self_attr, is_self_call, method_of, span, splice, whole_lines
from .registry import rule

# What turns an output of this rank into (batch, classes); the Linear infers its input size.
_HEADS = {2: "nn.LazyLinear({k})", 3: "nn.Sequential(nn.Flatten(), nn.LazyLinear({k}))",
          4: "nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LazyLinear({k}))"}


@rule("add_output_head", 'output_shape', 10,
      "a forward that returns features or a map gets a pooled / flattened LazyLinear head")
def fix_output_head(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """forward returned (batch, features) or a map instead of logits: every return of Net.forward goes
    through a classifier head built in __init__ (pool and flatten as its rank needs, then a LazyLinear)."""
    if d.kind != "output_shape" or not d.got or not d.expected:
        return None
    got = d.got
    head = _HEADS.get(len(got))
    init, forward = init_of(tree, "Net"), method_of(tree, "Net", "forward")
    if head is None or got[0] != d.expected[0] or init is None or forward is None or len(init.args.args) < 3:
        return None
    returns = [r for r in _walk_own(forward) if isinstance(r, ast.Return)]
    if not returns or any(r.value is None or isinstance(r.value, ast.Tuple) for r in returns):
        return None
    name = next(n for n in ("head", "out_head", "classifier_head") if not re.search(rf"\bself\.{n}\b", code))
    layer = head.format(k=f"{init.args.args[2].arg}[0]")
    edits = [(_before_to_device(init), f"{' ' * init.body[-1].col_offset}self.{name} = {layer}\n")]
    edits += [(r.value, f"self.{name}({ast.unparse(r.value)})") for r in returns]
    return Fix(splice(code, edits), "add_output_head",
               f"forward returned shape {tuple(got)}, not (batch, classes): its output now goes through "
               f"self.{name} = {layer}")


@rule("add_return", 'not_tensor', 10,
      "a forward that never returns returns its last variable")
def fix_missing_return(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """forward computes x and never returns it: return the variable its last statement assigns."""
    forward = method_of(tree, "Net", "forward") if d.kind == "not_tensor" and d.owner == "NoneType" else None
    if forward is None or any(isinstance(r, ast.Return) for r in _walk_own(forward)):
        return None
    last = forward.body[-1]
    if not (isinstance(last, ast.Assign) and len(last.targets) == 1 and isinstance(last.targets[0], ast.Name)
            and isinstance(last.value, ast.Call)):
        return None  # `x = self` / `x = self.bn2`: a forward cut short, not one that forgot its return
    var = last.targets[0].id
    after = span((last.end_lineno or last.lineno) + 1, 0)
    return Fix(splice(code, [(after, f"{' ' * last.col_offset}return {var}\n")]),
               "add_return", f"Net.forward never returned: added `return {var}` after its last line")


@rule("drop_unbuilt_layer", 'no_attribute', 40,
      "layers forward applies but __init__ never built are skipped")
def fix_unbuilt_layer(code: str, tree: ast.Module, d: Diagnosis) -> Fix | None:
    """forward applies self.<name> that __init__ never built (`x = self.relu(self.bn7(self.conv7(x)))` after
    six convs): skip it, `self.conv7(x)` -> `x`, and every other layer forward applies and never built
    (the reply that forgot conv7 also forgot bn7 and conv8). A line left as `x = x` goes."""
    found = d.kind == "no_attribute" and d.owner and d.name
    forward = method_of(tree, d.owner, "forward") if found else None
    if forward is None or not _unbuilt(tree, code, d.name):
        return None
    uses = [n for n in _walk_own(forward) if isinstance(n, ast.Attribute) and is_self_attr(n, n.attr)
            and _unbuilt(tree, code, n.attr)]
    calls = [n for n in _walk_own(forward) if isinstance(n, ast.Call) and n.func in uses]
    if len(calls) != len(uses) or any(len(c.args) != 1 or c.keywords or isinstance(c.args[0], ast.Starred)
                                      for c in calls):
        return None  # read some other way than applied to one input: not a layer to skip
    outer = [c for c in calls if not any(c is not o and c in ast.walk(o) for o in calls)]
    idle = [s for s in forward.body if isinstance(s, ast.Assign) and len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name) and s.value in outer
            and _innermost(s.value, calls) == s.targets[0].id]
    edits = [(whole_lines(s), "") for s in idle] + [(c, _innermost(c, calls)) for c in outer
                                                    if not any(c is s.value for s in idle)]
    names = sorted({c.func.attr for c in calls})
    return Fix(splice(code, edits), "drop_unbuilt_layer",
               f"{d.owner}.forward applied layers never built ({', '.join('self.' + a for a in names)}): "
               "each now passes its input through")


def _innermost(call: ast.Call, skipped: list[ast.Call]) -> str:
    """The source of what a chain of skipped layers is applied to: self.bn7(self.conv7(x)) -> x."""
    while call in skipped:
        arg = call.args[0]
        if not (isinstance(arg, ast.Call) and arg in skipped):
            return ast.unparse(arg)
        call = arg
    return ast.unparse(call)


def _unbuilt(tree: ast.Module, code: str, attr: str) -> bool:
    """No `self.<attr> = ...` anywhere, nor a setattr/getattr by name: a layer the model never built."""
    methods = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    return attr not in methods and f"'{attr}'" not in code and f'"{attr}"' not in code and not any(
        isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and any(
            is_self_attr(t, attr) for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))
        for n in ast.walk(tree))


def _walk_own(fn: ast.FunctionDef):
    """The nodes of a function, without those of functions or classes defined inside it."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _before_to_device(init: ast.FunctionDef) -> ast.AST:
    """Where a new layer goes in __init__: before `self.to(device)`, so the move includes it."""
    for stmt in init.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and is_self_call(stmt.value) \
                and stmt.value.func.attr == "to":
            return span(stmt.lineno, 0)
    last = init.body[-1]
    return span((last.end_lineno or last.lineno) + 1, 0)
