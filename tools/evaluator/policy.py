"""Parse and static policy for candidate code, run in the parent before anything executes.

This is the policy for generated code; code a person hands in (`origin="handed"`) is judged by
`policy_handed.py`, which allows what real model files do. The generated-code policy is an allow-list of imports plus deny rules on names, calls and attributes that lead
out of "define a PyTorch model": file, process and network access, dynamic code execution,
reflection through dunder attributes and frames, and torch's own escape hatches (hub downloads,
pickled loads, compilers, custom-op libraries). It catches what an LLM writes by accident or
copies from elsewhere and what the simple hostile tricks try; it cannot prove a program harmless —
the child-process sandbox behind it is the second line and neither is a security boundary.

Allowed imports (module or any submodule of): torch, torch.nn, torch.nn.functional, torch.nn.init
(all of torch.nn.*), torch.optim, torch.autograd, torch.fft, torch.linalg, torch.utils.checkpoint,
torchvision.ops (layers such as StochasticDepth), math, random, typing, collections, functools,
itertools, dataclasses, numbers, operator, copy, enum, abc, __future__.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal

from .diagnosis import Diagnosis
from .outcome import Outcome

# Who wrote the code: the LLM ("generated", this module's allow-list) or a person ("handed": a file
# given to `nasgraph eval`, the LEMUR corpus; the policy in policy_handed.py, calibrated on real models).
Origin = Literal["generated", "handed"]

ALLOWED_MODULES = (
    "torch", "torch.nn", "torch.optim", "torch.autograd", "torch.fft", "torch.linalg",
    "torch.utils.checkpoint", "torchvision.ops", "math", "random", "typing", "collections",
    "functools", "itertools", "dataclasses", "numbers", "operator", "copy", "enum", "abc", "__future__",
)
# Exact modules (not their submodules): `import torch` must not admit `import torch.hub`.
EXACT_ONLY = {"torch"}
STAR_OK = {"torch.nn", "torch.nn.functional", "torch.nn.init", "math", "typing"}

# Dotted names under torch that reach files, processes, the network or native code.
DANGEROUS_TORCH = (
    "torch.hub", "torch.load", "torch.save", "torch.from_file", "torch.serialization", "torch.package",
    "torch.utils.cpp_extension", "torch.utils.model_zoo", "torch.utils.tensorboard",
    "torch.multiprocessing", "torch.distributed", "torch.ops", "torch.classes", "torch.library",
    "torch.compile", "torch.jit", "torch.onnx", "torch.export", "torch.profiler", "torch.testing",
    "torch.utils.collect_env", "torch.utils.bundled_inputs", "torch.utils.file_baton",
    "torch.cuda.memory._record_memory_history",
)
PRIVATE_TORCH_OK = {"_assert"}  # torchvision-style code uses torch._assert; other private module names are refused
# Harmless markers that torchvision-derived (LEMUR) models carry; the rest of torch.jit stays refused.
SAFE_TORCH = {"torch.jit.is_scripting", "torch.jit.is_tracing", "torch.jit.unused", "torch.jit.ignore",
              "torch.jit.annotate", "torch.jit.Final", "torch._assert"}

# Attribute names refused on any object: module escapes and loaders reachable through allowed modules
# (torch.os, F.torch.hub, nn.modules.module.sys ...), frame/code introspection, eval-in-disguise.
FORBIDDEN_ATTRS = {
    "os", "sys", "subprocess", "socket", "shutil", "ctypes", "importlib", "pathlib", "multiprocessing",
    "threading", "_thread", "signal", "pickle", "builtins", "io", "marshal", "inspect", "gc", "mmap",
    "pty", "resource", "runpy", "urllib", "http", "tempfile", "glob", "posix", "select", "selectors",
    "asyncio", "shelve", "platform", "sysconfig", "site", "zipimport", "fcntl", "pwd", "linecache",
    "faulthandler", "tracemalloc", "sqlite3", "zipfile", "tarfile", "requests",
    "hub", "load", "save", "from_file", "load_library", "load_inline", "cpp_extension", "jit", "compile",
    "distributed", "serialization", "model_zoo", "_C", "_dynamo", "_inductor", "_ops", "_classes",
    "get_type_hints", "ForwardRef", "_evaluate", "attrgetter", "methodcaller", "types", "tofile", "fromfile",
    "dump", "collect_env",
    "tb_frame", "tb_next", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame",
    "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "co_consts", "func_globals",
}
# Dunder attributes a model legitimately touches; every other dunder attribute is refused.
DUNDER_ATTRS_OK = {"__init__", "__name__", "__class__", "__call__", "__len__", "__getitem__", "__iter__",
                   "__repr__", "__str__", "__doc__", "__qualname__", "__setstate__"}
DUNDER_NAMES_OK = {"__name__", "__file__", "__doc__", "__all__", "__constants__", "__annotations__",
                   "__version__", "__author__", "__slots__", "__class__", "__module__", "__qualname__"}
FORBIDDEN_CALLS = {"eval", "exec", "open", "compile", "__import__", "globals", "locals", "vars",
                   "breakpoint", "exit", "quit", "help"}
SOFT_FORBIDDEN = {"input"}       # refused only when the module never binds the name (forward(self, input))
ATTR_BUILTINS = {"getattr", "setattr", "delattr", "hasattr"}
MAX_VIOLATIONS = 5
STDLIB_ALLOWED = ("math", "random", "typing", "collections", "functools", "itertools", "dataclasses", "numbers",
                  "operator", "copy", "enum", "abc")


def _stdlib_escapes() -> frozenset[str]:
    """'enum.bltns', 'random._os', 'copy.types'...: attributes of the allowed stdlib modules that are
    themselves modules outside the allow-list. Computed from the real modules (cheap: all stdlib)."""
    import importlib
    import types

    found = set()
    for name in STDLIB_ALLOWED:
        mod = importlib.import_module(name)
        for attr, value in vars(mod).items():
            if isinstance(value, types.ModuleType) and not _module_allowed(value.__name__):
                found.add(f"{name}.{attr}")
    return frozenset(found)


@dataclass(frozen=True)
class Violation:
    line: int
    name: str
    reason: str
    module: bool = False  # an import of a module outside the allow-list (a rule can drop an unused one)


def _module_allowed(mod: str) -> bool:
    for ok in ALLOWED_MODULES:
        if mod == ok or (ok not in EXACT_ONLY and mod.startswith(ok + ".")):
            return True
    return False


STDLIB_ESCAPES = _stdlib_escapes()


def _module_reason(dotted: str) -> str | None:
    """Why a fully resolved dotted name (rooted at an imported module) is refused, or None."""
    for bad in DANGEROUS_TORCH:
        if dotted == bad or dotted.startswith(bad + "."):
            return f"'{bad}' reaches files, processes or native code"
    parts = dotted.split(".")
    for i in range(2, len(parts) + 1):
        if ".".join(parts[:i]) in STDLIB_ESCAPES:
            return f"'{'.'.join(parts[:i])}' is a module outside the allow-list"
    private_ok = dotted.startswith("torch.nn.")  # torch.nn.modules.utils._pair and friends are plain helpers
    for part in parts[1:]:
        if part.startswith("_") and not part.startswith("__") and part not in PRIVATE_TORCH_OK and not private_ok:
            return f"private module internals ('{part}') are not allowed"
    return None


def _literal_prefix_safe(node: ast.expr) -> bool:
    """A computed attribute name is acceptable only if it starts with a literal letter (f'conv{i}'),
    so it can never become a dunder or private name."""
    first: ast.expr | None = node
    if isinstance(node, ast.JoinedStr):
        first = node.values[0] if node.values else None
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        while isinstance(first, ast.BinOp) and isinstance(first.op, (ast.Add, ast.Mod)):
            first = first.left
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        first = node.func.value
    else:
        return False
    return (isinstance(first, ast.Constant) and isinstance(first.value, str)
            and first.value[:1].isalpha() and "__" not in first.value)


def _bound_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.alias):
            names.add((n.asname or n.name).split(".")[0])
    return names


class Checker(ast.NodeVisitor):
    """The strict policy, for generated code; `policy_handed.HandedChecker` overrides its rules."""

    def __init__(self, tree: ast.Module) -> None:
        self.violations: list[Violation] = []
        self.aliases: dict[str, str] = {}  # local name -> module dotted path it stands for
        self.bound = _bound_names(tree)
        self._collect_aliases(tree)

    def _collect_aliases(self, tree: ast.Module) -> None:
        """Flow-insensitive: every import alias, and `x = <alias>.attr` re-bindings, anywhere."""
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                for a in n.names:
                    if a.asname:
                        self.aliases[a.asname] = a.name
                    else:
                        root = a.name.split(".")[0]
                        self.aliases[root] = root
            elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
                for a in n.names:
                    if a.name != "*":
                        self.aliases[a.asname or a.name] = f"{n.module}.{a.name}"
        for _ in range(3):  # a few rounds resolve chains like t = torch; u = t.nn
            for n in ast.walk(tree):
                if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                    dotted = self._resolve(n.value)
                    if dotted:
                        self.aliases[n.targets[0].id] = dotted

    def _resolve(self, node: ast.expr) -> str | None:
        """`nn.functional.relu` -> 'torch.nn.functional.relu' when the root is a module alias."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in self.aliases:
            return ".".join([self.aliases[node.id], *reversed(parts)])
        return None

    def add(self, node: ast.AST, name: str, reason: str, module: bool = False) -> None:
        self.violations.append(Violation(getattr(node, "lineno", 0), name, reason, module))

    # ---- imports
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._check_module(node, a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.add(node, "." * node.level + (node.module or ""), "relative imports are not allowed")
            return
        mod = node.module or ""
        if not self._check_module(node, mod):
            return
        for a in node.names:
            if a.name == "*":
                if mod not in STAR_OK:
                    self.add(node, f"from {mod} import *", f"star import only from {', '.join(sorted(STAR_OK))}")
                continue
            full = f"{mod}.{a.name}"
            why = _module_reason(full)
            if why:
                self.add(node, full, why)
            elif a.name in FORBIDDEN_ATTRS or (a.name.startswith("__") and a.name not in DUNDER_NAMES_OK):
                self.add(node, full, f"importing '{a.name}' is not allowed")
            elif a.name.startswith("_") and not a.name.startswith("__") and not mod.startswith("torch.nn"):
                self.add(node, full, "private names may be imported only from torch.nn modules (e.g. _pair)")

    def _check_module(self, node: ast.AST, mod: str) -> bool:
        why = _module_reason(mod)
        if why:
            self.add(node, mod, why)
            return False
        if not _module_allowed(mod):
            self.add(node, mod, f"module '{mod}' is not allowed; allowed: {', '.join(ALLOWED_MODULES)}", module=True)
            return False
        return True

    # ---- names, attributes, calls
    def visit_Name(self, node: ast.Name) -> None:
        n = node.id
        if isinstance(node.ctx, ast.Load):
            if n in FORBIDDEN_CALLS:
                self.add(node, n, f"the builtin '{n}' is not allowed")
            elif n in SOFT_FORBIDDEN and n not in self.bound:
                self.add(node, n, f"the builtin '{n}' is not allowed")
            elif n in ATTR_BUILTINS:
                self.add(node, n, f"'{n}' may only be called directly, e.g. {n}(self, 'conv1')")
        if n.startswith("__") and n.endswith("__") and n not in DUNDER_NAMES_OK:
            self.add(node, n, f"the name '{n}' is not allowed")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if self._resolve(node) in SAFE_TORCH:
            return  # the whole chain is a known-harmless name (its prefix alone would be refused)
        if not self._attribute_ok(node):
            # One complaint per chain: skip the inner attributes, still check what the chain hangs on.
            base: ast.expr = node
            while isinstance(base, ast.Attribute):
                base = base.value
            self.visit(base)
            return
        self.visit(node.value)

    def _attribute_ok(self, node: ast.Attribute) -> bool:
        a = node.attr
        if a.startswith("__") and a.endswith("__"):
            if a not in DUNDER_ATTRS_OK:
                self.add(node, a, f"dunder attribute '{a}' is not allowed")
                return False
            return True
        dotted = self._resolve(node)
        why = _module_reason(dotted) if dotted else None
        if why:
            self.add(node, dotted, why)
            return False
        if a in FORBIDDEN_ATTRS:
            self.add(node, a, f"attribute '{a}' is not allowed")
            return False
        return True

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in ATTR_BUILTINS:
            self._check_attr_builtin(node, f.id)
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self.visit(arg)
            return
        if (isinstance(f, ast.Attribute) and f.attr in ("format", "format_map")
                and isinstance(f.value, ast.Constant) and isinstance(f.value.value, str) and "__" in f.value.value):
            self.add(node, "str.format", "format strings may not reach dunder attributes")
        self.generic_visit(node)

    def _check_attr_builtin(self, node: ast.Call, fn: str) -> None:
        if len(node.args) < 2:
            return
        target, name = node.args[0], node.args[1]
        base = self._resolve(target) if isinstance(target, (ast.Name, ast.Attribute)) else None
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            attr = name.value
            why = _module_reason(f"{base}.{attr}") if base else None
            if why:
                self.add(node, f"{base}.{attr}", why)
            elif attr.startswith("__") and attr not in DUNDER_ATTRS_OK:
                self.add(node, f"{fn}(..., {attr!r})", f"{fn} with a dunder name is not allowed")
            elif attr in FORBIDDEN_ATTRS:
                self.add(node, f"{fn}(..., {attr!r})", f"attribute '{attr}' is not allowed")
        elif base:
            self.add(node, f"{fn}({base}, ...)", f"{fn} on a module needs a literal attribute name")
        elif not _literal_prefix_safe(name):
            self.add(node, f"{fn}(..., <computed>)",
                     f"{fn} with a computed name must start with a literal letter, e.g. {fn}(self, f'conv{{i}}')")


def _line(code: str, lineno: int) -> str:
    lines = code.splitlines()
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""


def check_syntax(code: str) -> tuple[ast.Module | None, Outcome | None]:
    """Parse the candidate; a failure becomes a `syntax` Outcome naming the line."""
    try:
        return ast.parse(code, filename="<candidate>"), None
    except SyntaxError as e:
        lineno = e.lineno or 0
        text = f"SyntaxError: {e.msg} (line {lineno}"
        text += f", column {e.offset})" if e.offset else ")"
        src = _line(code, lineno)
        if src:
            text += f"\n  line {lineno}: {src}"
        return None, Outcome(status="syntax", stage="parse", error=text, detail={"line": lineno},
                             diagnosis=Diagnosis(kind="syntax", exc_type=type(e).__name__, line=lineno or None))
    except (ValueError, MemoryError, RecursionError) as e:  # null bytes, absurd nesting
        return None, Outcome(status="syntax", stage="parse", error=f"{type(e).__name__}: {e}",
                             diagnosis=Diagnosis(kind="syntax", exc_type=type(e).__name__))


def check_policy(tree: ast.Module, code: str, origin: Origin = "generated") -> Outcome | None:
    """Apply the static policy for code of this origin to a parsed module; None when it passes.
    Generated code gets the allow-list above; code a person handed in gets `policy_handed.py`."""
    if origin == "handed":
        from .policy_handed import HandedChecker  # built on Checker above: imported here, not at the top

        checker: Checker = HandedChecker(tree)
    else:
        checker = Checker(tree)
    checker.visit(tree)
    seen: set[tuple[int, str]] = set()
    found: list[Violation] = []
    for v in sorted(checker.violations, key=lambda v: v.line):
        if (v.line, v.name) not in seen:
            seen.add((v.line, v.name))
            found.append(v)
    if not found:
        return None
    lines = [f"forbidden: line {v.line}: {v.name}: {v.reason}\n  line {v.line}: {_line(code, v.line)}"
             for v in found[:MAX_VIOLATIONS]]
    if len(found) > MAX_VIOLATIONS:
        lines.append(f"... and {len(found) - MAX_VIOLATIONS} more")
    # A refused module import is a kind of its own (an unused one is dropped by a rule); `lines` lists them.
    imports = sorted({v.line for v in found if v.module})
    return Outcome(status="forbidden", stage="policy", error="\n".join(lines),
                   detail={"violations": [v.__dict__ for v in found]},
                   diagnosis=Diagnosis(kind="forbidden_import" if imports else "forbidden", line=found[0].line,
                                       lines=imports or sorted({v.line for v in found}), name=found[0].name))


def static_check(code: str, origin: Origin = "generated") -> Outcome | None:
    """Parse + policy; None when the candidate may run, else a `syntax` or `forbidden` Outcome."""
    tree, bad = check_syntax(code)
    if bad is not None:
        return bad
    assert tree is not None
    return check_policy(tree, code, origin)
