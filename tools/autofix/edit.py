"""What the rules share: the Fix they return, and exact-span edits of the source through its AST
(so a fix touches the offending layer and keeps the rest of the text, comments included)."""
from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class Fix:
    code: str
    rule: str          # short name, for the trace
    description: str   # what was changed, for people and for the history


def call_name(node: ast.AST) -> str:
    """`Conv2d` for nn.Conv2d(...) or Conv2d(...), `block` for self.block(...); '' for anything but a call."""
    if not isinstance(node, ast.Call):
        return ""
    return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")


def import_map(tree: ast.Module) -> dict[str, str]:
    """Local name -> the module it is bound to (`F` -> 'torch.nn.functional')."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
    return out


def module_name(expr: ast.expr, imports: dict[str, str]) -> str:
    """The dotted module an expression such as `nn` or `nn.functional` names, through the imports."""
    head, _, rest = ast.unparse(expr).partition(".")
    return imports.get(head, head) + (f".{rest}" if rest else "")


def is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def span(line: int, col: int, end_line: int | None = None, end_col: int | None = None) -> ast.AST:
    """A span for splice (empty without an end: an insertion point)."""
    return ast.Pass(lineno=line, col_offset=col, end_lineno=line if end_line is None else end_line,
                    end_col_offset=col if end_col is None else end_col)


def whole_lines(stmt: ast.stmt) -> ast.AST:
    """A statement's whole lines, line break included."""
    return span(stmt.lineno, 0, (stmt.end_lineno or stmt.lineno) + 1, 0)


def keyword_span(call: ast.Call, keyword: ast.keyword) -> ast.AST:
    """A keyword argument with the comma that joins it to the argument before it."""
    at = (keyword.lineno, keyword.col_offset)
    before = [a for a in [*call.args, *call.keywords] if (a.lineno, a.col_offset) < at]
    if not before:
        return keyword
    last = max(before, key=lambda a: (a.end_lineno or a.lineno, a.end_col_offset or 0))
    return span(last.end_lineno or last.lineno, last.end_col_offset or 0, keyword.end_lineno, keyword.end_col_offset)


def is_self_attr(target: ast.expr, attr: str) -> bool:
    return isinstance(target, ast.Attribute) and target.attr == attr and \
        isinstance(target.value, ast.Name) and target.value.id == "self"


def is_self_call(call: ast.Call) -> bool:
    """self.method(...)"""
    func = call.func
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self"


def layer_calls(tree: ast.Module, path: str, kind: str) -> list[ast.Call]:
    """The calls building the module at `path` as torch names it: `self.conv1 = nn.<kind>(...)` for
    `conv1` or `block.conv1`, and the element of `self.features = nn.Sequential(...)` (or ModuleList) for
    `features.0`, wherever they are, also inside the method that builds them."""
    parts = path.split(".")
    named = [i for i, part in enumerate(parts) if not part.isdigit()]
    if not named:
        return []
    attr, indexes = parts[named[-1]], [int(p) for p in parts[named[-1] + 1:]]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and is_self_attr(node.targets[0], attr) \
                and isinstance(node.value, ast.Call):
            found = [call for built in [node.value, *_returned_by(tree, node.value)]
                     if (call := _element(built, indexes)) is not None and call_name(call) == kind]
            out += [call for call in found or _built_in(tree, node.value, kind) if call not in out]
    return out


def _built_in(tree: ast.Module, call: ast.Call, kind: str) -> list[ast.Call]:
    """Every <kind> call in the builder method behind `self.stage2 = self._make_stage(...)`, when its
    layers cannot be told apart (`layers.append(nn.Conv2d(...))` in a loop, then `nn.Sequential(*layers)`:
    3 drafts of eight 1.5B runs failed on it after every other rule). The method builds every stage, so
    the fix holds for all."""
    if not is_self_call(call):
        return []
    return [n for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == call.func.attr
            for n in ast.walk(f) if isinstance(n, ast.Call) and call_name(n) == kind]


def _returned_by(tree: ast.Module, call: ast.Call) -> list[ast.Call]:
    """The layers a builder method returns, for `self.stage2 = self._make_stage(...)` (seen four times
    in six 1.5B runs): `return nn.Sequential(...)` or `return nn.Conv2d(...)` in `def _make_stage`."""
    if not is_self_call(call):
        return []
    return [r.value for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == call.func.attr
            for r in ast.walk(f) if isinstance(r, ast.Return) and isinstance(r.value, ast.Call)]


def _element(call: ast.Call, indexes: list[int]) -> ast.Call | None:
    """The layer at `indexes` inside nested nn.Sequential(a, b, ...) / nn.ModuleList([a, b, ...])."""
    for i in indexes:
        name = call_name(call)
        items = call.args if name == "Sequential" else \
            call.args[0].elts if name == "ModuleList" and call.args and isinstance(call.args[0], ast.List) else []
        if any(isinstance(item, ast.Starred) for item in items[: i + 1]) or i >= len(items) \
                or not isinstance(items[i], ast.Call):
            return None
        call = items[i]
    return call


def method_of(tree: ast.Module, cls: str, name: str) -> ast.FunctionDef | None:
    for node in ast.walk(tree):  # a block may be defined inside Net.__init__
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    return None


def init_of(tree: ast.Module, cls: str) -> ast.FunctionDef | None:
    return method_of(tree, cls, "__init__")


def is_super_init(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.Expr):
        return False
    text = ast.unparse(stmt)
    return "super(" in text and "__init__" in text


def splice(code: str, edits: list[tuple[ast.AST, str]]) -> str:
    """Replace each node's exact source span with new text, last first so offsets stay valid; insertions
    at one point keep the order they are listed in."""
    starts = [0]
    for line in code.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = sorted(((starts[n.lineno - 1] + _byte_col(code, starts, n.lineno, n.col_offset),
                     starts[n.end_lineno - 1] + _byte_col(code, starts, n.end_lineno, n.end_col_offset), i, text)
                    for i, (n, text) in enumerate(edits)), reverse=True)
    for start, end, _, text in spans:
        code = code[:start] + text + code[end:]
    return code


def _byte_col(code: str, starts: list[int], line: int, col: int) -> int:
    # ast columns count UTF-8 bytes; the string is indexed by characters.
    text = code[starts[line - 1]: starts[line] if line < len(starts) else len(code)]
    return len(text.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
