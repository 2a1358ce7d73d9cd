"""How a block is shown: to the generator (compact, torch-only text) and to the embedding model.

`present` strips docstrings, comments, blank lines, type annotations, `warnings.warn(...)` calls and
argument checks (`if <bad>: raise ...`), and the imports only they needed: the generator gets the
architecture in the fewest characters, and a 1.5B model is not tempted to copy
`Optional[Callable[..., nn.Module]]`. `describe` is the text that gets embedded:
the class name in words, its docstring's first lines, the layers it uses, and the start of the code
(the embedding model reads only its first 256 word pieces, so what matters comes first).
"""
from __future__ import annotations

import ast
import re

VERSION = "2"  # part of the index key: blocks are re-validated when what is shown changes

def _strip_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body or [ast.Pass()]


def _is_diagnostic(stmt: ast.stmt) -> bool:
    """`warnings.warn(...)`, or `if <bad argument>: raise ...`: checks of the caller, no part of the architecture."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        return ast.unparse(stmt.value.func) in ("warnings.warn", "warn")
    return isinstance(stmt, ast.If) and not stmt.orelse and all(isinstance(s, ast.Raise) for s in stmt.body)


class _Strip(ast.NodeTransformer):
    def _body(self, node):
        node.body = _strip_docstring(node.body)
        self.generic_visit(node)
        node.body = [s for s in node.body if s is not None] or [ast.Pass()]
        return node

    def generic_visit(self, node):
        super().generic_visit(node)
        for attr in ("body", "orelse", "finalbody"):
            stmts = getattr(node, attr, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                kept = [s for s in stmts if not _is_diagnostic(s)]
                setattr(node, attr, kept or ([ast.Pass()] if attr == "body" else []))
        return node

    def visit_Module(self, node):
        return self._body(node)

    def visit_ClassDef(self, node):
        return self._body(node)

    def visit_FunctionDef(self, node):
        node.returns = None
        for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg):
            if a is not None:
                a.annotation = None
        return self._body(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node):
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)


def _used_names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def present(code: str) -> str:
    """The block without docstrings, comments and annotations (valid Python, same behaviour)."""
    tree = _Strip().visit(ast.parse(code))
    used = _used_names(tree)
    kept: list[ast.stmt] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):  # imports only annotations or warnings needed go
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                continue
            stmt.names = [a for a in stmt.names if (a.asname or a.name.split(".")[0]) in used]
            if not stmt.names:
                continue
        kept.append(stmt)
    tree.body = kept
    text = ast.unparse(ast.fix_missing_locations(tree))
    return "\n".join(line for line in text.splitlines() if line.strip()) + "\n"


def _words(name: str) -> str:
    """'SqueezeExcitation' -> 'Squeeze Excitation', '_DenseLayer' -> 'Dense Layer', 'ConvBNAct' -> 'Conv BN Act'."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(spaced.replace("_", " ").split())


def _class_doc(code: str, name: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return ""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            doc = ast.get_docstring(node) or ""
            return " ".join(doc.split("\n\n")[0].split())[:300]
    return ""


def layers_used(code: str) -> list[str]:
    """torch.nn layer names the block builds (nn.Conv2d(...), torch.nn.LayerNorm(...))."""
    found = re.findall(r"\bnn\.([A-Z]\w+)\(", code)
    return sorted(set(found), key=found.index)


def describe(name: str, module: str, code: str, design: str = "") -> str:
    """The text embedded for retrieval."""
    parts = [f"{_words(name)} ({name}), from {module.replace('.', ' ')}."]
    doc = _class_doc(code, name)
    if design:
        parts.append(design)
    if doc:
        parts.append(doc)
    layers = layers_used(code)
    if layers:
        parts.append("Layers: " + ", ".join(layers[:16]) + ".")
    parts.append(present(code)[:800])
    return " ".join(parts)
