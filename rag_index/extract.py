"""Scope-closed blocks: an `nn.Module` class plus every top-level name it needs, as one runnable text.

A block is closed by resolving the class's free names through its module's scope, recursively:
a name defined in the module (class, function, constant, or an `if`/`try` statement that binds it)
is inlined; a name imported from the *same top-level package* (relative imports included, `__init__`
re-exports and star imports followed) is inlined from the module that defines it; a name imported
from anywhere else (torch, typing, the standard library) stays an import. So a torchvision block
needs torch but, where possible, not torchvision. Names are found with `symtable`, which knows
Python's scoping rules; each inlined statement records which names it needs at definition time
(bases, decorators, defaults, annotations, class bodies) so the text is ordered to run top to bottom.

Exceptions, each kept small: telemetry calls (`_log_api_usage_once(...)`) are dropped because they
say nothing about the architecture and reach into `torch._C`; a package module imported as a whole
(`from ..ops import boxes as box_ops`) and a module that loads native code (it names `__file__` or
`load_library`) keep their imports, so the block needs that package (`torch_only` is then False).
One name that would mean two different things in the closed text is an error, not a rename.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import re
import symtable
import sys
import types
from dataclasses import dataclass, field
from functools import lru_cache

DROP_CALLS = frozenset({"_log_api_usage_once"})
_NATIVE = re.compile(r"\b(__file__|load_library)\b")  # code that depends on where its file lies
EXTRACT_VERSION = "1"
_BUILTINS = frozenset(dir(builtins))
_COMPOUND = (ast.If, ast.Try, ast.With, ast.For, ast.While)
try:
    _COMPOUND = (*_COMPOUND, ast.TryStar)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - Python < 3.11
    pass
_OWN_SCOPE = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)


class ClosureError(Exception):
    """The block cannot be closed (no source, unresolvable name, two different things of one name)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """One extraction target: a class in a module (or in a given source text, for stored designs)."""
    module: str
    name: str
    source: str                 # where it comes from: "torchvision", "timm", "store", a package name
    kind: str = "block"         # op | block | model | design
    text: str | None = None     # the module's source when it is not importable (stored designs)
    hint: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Block:
    target: Target
    code: str
    imports: list[str]          # the modules the closed text imports
    inlined: list[str]          # module.name of every statement that was copied in
    torch_only: bool            # needs nothing but torch and the standard library

    @property
    def id(self) -> str:
        return self.target.qualname


# ---------------------------------------------------------------- one module's top-level scope

@dataclass(frozen=True)
class _Import:
    module: str                 # absolute module name
    attr: str | None            # `from module import attr`; None for `import module`
    asname: str                 # the name it binds
    dotted: str = ""            # `import a.b.c` binds `a`, but the statement must name `a.b.c`

    def statement(self) -> str:
        if self.attr is None:
            target = self.dotted or self.module
            return f"import {target}" + (f" as {self.asname}" if self.asname != target.split(".")[0] else "")
        return f"from {self.module} import {self.attr}" + (f" as {self.asname}" if self.asname != self.attr else "")


class _Scope:
    def __init__(self, module: str, source: str, is_package: bool) -> None:
        self.module, self.source = module, source
        self.lines = source.splitlines()
        self.package = module if is_package else module.rpartition(".")[0]
        try:
            self.tree = ast.parse(source)
        except SyntaxError as e:
            raise ClosureError("extract", f"cannot parse {module}: {e}") from None
        self.bindings: dict[str, int] = {}      # name -> index of the statement that binds it
        self.imports: dict[str, _Import] = {}
        self.stars: list[str] = []
        self.future = False
        for i, stmt in enumerate(self.tree.body):
            self._index(i, stmt)

    def _abs(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = "." * node.level + (node.module or "")
        try:
            return importlib.util.resolve_name(base, self.package)
        except ImportError as e:
            raise ClosureError("extract", f"{self.module}: bad relative import {base!r}: {e}") from None

    def _index(self, i: int, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                bound = a.asname or a.name.split(".")[0]
                self.imports[bound] = _Import(a.name if a.asname else bound, None, bound,
                                              dotted="" if a.asname else a.name)
        elif isinstance(stmt, ast.ImportFrom):
            mod = self._abs(stmt)
            if mod == "__future__":
                self.future |= any(a.name == "annotations" for a in stmt.names)
                return
            for a in stmt.names:
                if a.name == "*":
                    self.stars.append(mod)
                else:
                    self.imports[a.asname or a.name] = _Import(mod, a.name, a.asname or a.name)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.bindings[stmt.name] = i
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, *_COMPOUND)):
            for name in _bound_names(stmt):
                self.bindings[name] = i

    def text(self, i: int) -> str:
        stmt = self.tree.body[i]
        first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])
        return _drop_calls("\n".join(self.lines[first - 1: stmt.end_lineno]))


def _bound_names(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds (not looking into function or class bodies)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    names: set[str] = set()
    todo: list[ast.AST] = [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        elif isinstance(node, _OWN_SCOPE):  # comprehension and lambda variables do not leak
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name.split(".")[0]) for a in node.names if a.name != "*")
        todo.extend(ast.iter_child_nodes(node))
    return names


def _drop_calls(text: str) -> str:
    """Remove expression statements that only call a DROP_CALLS function (a lone one becomes `pass`)."""
    if not any(name in text for name in DROP_CALLS):
        return text
    tree = ast.parse(text)
    edits: list[tuple[int, int, str]] = []  # (first line, last line, replacement) 1-based
    for node in ast.walk(tree):
        for attr in ("body", "orelse", "finalbody"):
            stmts = getattr(node, attr, None)
            if not isinstance(stmts, list):
                continue
            dropped = [s for s in stmts if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                       and isinstance(s.value.func, ast.Name) and s.value.func.id in DROP_CALLS]
            for s in dropped:
                keep = len(dropped) == len(stmts) and s is dropped[0]
                edits.append((s.lineno, s.end_lineno or s.lineno, " " * s.col_offset + "pass" if keep else ""))
    lines = text.splitlines()
    for first, last, repl in sorted(edits, reverse=True):
        lines[first - 1: last] = [repl] if repl else []
    return "\n".join(lines)


@lru_cache(maxsize=512)
def _module_scope(module: str) -> _Scope:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:
        raise ClosureError("extract", f"no source for module {module}: {e}") from None
    if spec is None or not spec.origin or not spec.has_location:
        raise ClosureError("extract", f"no source for module {module}")
    try:
        with open(spec.origin, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ClosureError("extract", f"cannot read {spec.origin}: {e}") from None
    return _Scope(module, source, spec.submodule_search_locations is not None)


def _is_submodule(module: str, attr: str) -> bool:
    try:
        return isinstance(getattr(importlib.import_module(module), attr, None), types.ModuleType)
    except ImportError:
        return False


# ---------------------------------------------------------------- free names of a statement

def _free_names(text: str, name: str | None) -> tuple[set[str], set[str]]:
    """(eager, lazy) global names a top-level statement reads: eager at definition time, lazy when called."""
    top = symtable.symtable(text, "<block>", "exec")
    eager = {s.get_name() for s in top.get_symbols()
             if s.is_referenced() and not (s.is_assigned() or s.is_imported())}
    lazy: set[str] = set()

    def walk(table: symtable.SymbolTable, into: set[str]) -> None:
        into.update(s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced())
        for child in table.get_children():
            walk(child, lazy if child.get_type() == "function" else into)

    for child in top.get_children():
        if name is not None and child.get_name() == name and child.get_type() == "class":
            walk(child, eager)
        else:
            walk(child, lazy if name is not None else eager)
    return eager, lazy - eager


# ---------------------------------------------------------------- the closure

@dataclass
class _Unit:
    key: tuple
    names: tuple[str, ...]
    text: str
    eager: set = field(default_factory=set)   # keys of units needed at definition time
    lazy: set = field(default_factory=set)


class _Closure:
    def __init__(self, root_package: str) -> None:
        self.root = root_package
        self.units: dict[tuple, _Unit] = {}
        self.order: list[tuple] = []            # discovery order, a tie-breaker for the final sort
        self.externals: dict[str, _Import] = {}  # bound name -> import
        self.owner: dict[str, tuple] = {}        # bound name -> unit key
        self.future = False
        self.unresolved: set[str] = set()

    def internal(self, module: str) -> bool:
        return bool(self.root) and (module == self.root or module.startswith(self.root + "."))

    # -- bound names must mean one thing in the closed text
    def _claim(self, name: str, what: object) -> None:
        current = self.externals.get(name) or self.owner.get(name)
        if current is not None and current != what and not _same_object(current, what):
            raise ClosureError("collision", f"name {name!r} would mean two things in one block "
                                            f"({_describe(current)} and {_describe(what)})")

    def external(self, imp: _Import) -> None:
        self._claim(imp.asname, imp)
        self.externals[imp.asname] = imp

    def resolve(self, scope: _Scope, name: str) -> tuple | None:
        """Make `name`, as seen from `scope`, available; return the unit key that binds it (None: import/builtin).

        A name that reaches its definition under another name (`from .x import Foo as Bar`, or a
        re-export) gets one alias statement, `Bar = Foo`, placed after Foo."""
        found = self._lookup(scope, name, 0)
        if found is None:
            return None
        key, bound = found
        if bound == name:
            return key
        alias = ("alias", name, key)
        if alias not in self.units:
            self._claim(name, alias)
            self.owner[name] = alias
            self.units[alias] = _Unit(alias, (name,), f"{name} = {bound}", eager={key})
            self.order.append(alias)
        return alias

    def _lookup(self, scope: _Scope, name: str, depth: int) -> tuple[tuple, str] | None:
        """(key of the unit that defines `name`, the name it defines it under), or None for imports/builtins."""
        if depth > 50:
            raise ClosureError("extract", f"import chain too deep resolving {name!r} in {scope.module}")
        if name in scope.bindings:
            return self.add_unit(scope, scope.bindings[name]), name
        if name in scope.imports:
            return self._via_import(scope.imports[name], depth)
        for star in scope.stars:
            if self.internal(star):
                inner = _module_scope(star)
                if name in inner.bindings or name in inner.imports:
                    return self._lookup(inner, name, depth + 1)
            else:
                mod = importlib.import_module(star)
                if hasattr(mod, name):
                    self.external(_Import(star, name, name))
                    return None
        if name not in _BUILTINS and name not in ("__name__", "__file__", "__doc__"):
            self.unresolved.add(f"{scope.module}.{name}")
        return None

    def _via_import(self, imp: _Import, depth: int) -> tuple[tuple, str] | None:
        inner = _module_scope(imp.module) if self.internal(imp.module) and imp.attr is not None else None
        # Keep the import for anything outside the package, for a whole module (`from . import boxes`;
        # a name the package binds wins over a submodule of that name, as it does at run time), and
        # for a module whose code depends on where its file lies (it loads native libraries).
        if inner is None or _NATIVE.search(inner.source) or _is_submodule(imp.module, imp.attr):
            self.external(imp)
            return None
        return self._lookup(inner, imp.attr, depth + 1)

    def add_unit(self, scope: _Scope, index: int) -> tuple:
        key = (scope.module, index)
        if key in self.units:
            return key
        stmt = scope.tree.body[index]
        text = scope.text(index)
        names = tuple(sorted(_bound_names(stmt)))
        for n in names:
            self._claim(n, key)
        unit = _Unit(key, names, text)
        self.units[key] = unit
        for n in names:
            self.owner[n] = key
        self.order.append(key)
        self.future |= scope.future
        is_def = isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        eager, lazy = _free_names(text, stmt.name if is_def else None)
        for names_, into in ((eager, unit.eager), (lazy, unit.lazy)):
            for n in sorted(names_ - set(names)):
                dep = self.resolve(scope, n)
                if dep is not None and dep != key:
                    into.add(dep)
        return key

    def ordered(self) -> list[_Unit]:
        """Definition-time dependencies first; otherwise helpers before their users, as discovered."""
        rank: dict[tuple, int] = {}

        def visit(k: tuple) -> None:  # DFS post-order over all edges gives a natural reading order
            if k in rank or k in seen:
                return
            seen.add(k)
            u = self.units[k]
            for d in sorted(u.eager, key=self.order.index) + sorted(u.lazy - u.eager, key=self.order.index):
                visit(d)
            rank[k] = len(rank)

        seen: set[tuple] = set()
        for k in self.order:
            visit(k)
        out: list[_Unit] = []
        placed: set[tuple] = set()
        pending = sorted(self.units, key=rank.__getitem__)
        while pending:
            ready = next((k for k in pending if self.units[k].eager <= placed), None)
            if ready is None:
                raise ClosureError("extract", "definition-time dependency cycle: "
                                   + ", ".join(".".join(map(str, k)) for k in pending[:4]))
            pending.remove(ready)
            placed.add(ready)
            out.append(self.units[ready])
        return out

    def imports_text(self, body: str) -> str:
        plain = sorted({_plain(i, body).statement() for i in self.externals.values() if i.attr is None})
        froms: dict[str, list[str]] = {}
        for i in self.externals.values():
            if i.attr is not None:
                froms.setdefault(i.module, []).append(i.attr if i.asname == i.attr else f"{i.attr} as {i.asname}")
        lines = ["from __future__ import annotations"] if self.future else []
        lines += plain + [f"from {m} import {', '.join(sorted(set(v)))}" for m, v in sorted(froms.items())]
        return "\n".join(lines)


def _plain(imp: _Import, body: str) -> _Import:
    """`import torch.fx` binds `torch`; if the block never says `torch.fx.`, `import torch` is what it needs."""
    if imp.dotted and f"{imp.dotted}." not in body:
        return _Import(imp.module, None, imp.asname)
    return imp


def _runtime(imp: _Import) -> object:
    mod = importlib.import_module(imp.dotted or imp.module)
    if imp.attr is None:
        return sys.modules[imp.module] if imp.dotted else mod
    return getattr(mod, imp.attr)


def _same_object(a: object, b: object) -> bool:
    """`from torch import nn` and `import torch.nn as nn` bind the same thing under one name."""
    if not (isinstance(a, _Import) and isinstance(b, _Import)):
        return False
    try:
        return _runtime(a) is _runtime(b)
    except (ImportError, AttributeError):
        return False


def _describe(what: object) -> str:
    if isinstance(what, _Import):
        return what.statement()
    if isinstance(what, tuple) and what and what[0] == "alias":
        return f"alias {what[1]}"
    if isinstance(what, tuple):
        return f"a definition in {what[0]}"
    return str(what)


def _top_module(name: str) -> str:
    return name.split(".")[0]


def close(target: Target) -> Block:
    """The scope-closed text of `target`; raises ClosureError when it cannot be built."""
    if target.text is not None:
        scope = _Scope(target.module, target.text, False)
        root = ""  # a stored design is one self-contained module: every import stays an import
    else:
        scope = _module_scope(target.module)
        root = _top_module(target.module)
    index = scope.bindings.get(target.name)
    if index is None or not isinstance(scope.tree.body[index], ast.ClassDef):
        raise ClosureError("extract", f"no top-level class {target.name} in {target.module}")
    closure = _Closure(root)
    closure.add_unit(scope, index)
    if closure.unresolved:
        raise ClosureError("unresolved", "names not found: " + ", ".join(sorted(closure.unresolved)[:6]))
    units = closure.ordered()
    header = f"# {target.qualname}: scope-closed block (nasgraph rag_index)"
    body = "\n".join(u.text for u in units)
    parts = [header, closure.imports_text(body), *(u.text for u in units)]
    code = "\n\n\n".join(p for p in parts if p.strip()) + "\n"
    modules = sorted({(_plain(i, body).dotted or i.module) for i in closure.externals.values()})
    stdlib = sys.stdlib_module_names
    torch_only = all(_top_module(m) == "torch" or _top_module(m) in stdlib for m in modules)
    inlined = [f"{u.key[0]}.{'/'.join(u.names)}" for u in units if u.key[0] != "alias"]
    return Block(target=target, code=code, imports=modules, inlined=inlined, torch_only=torch_only)
