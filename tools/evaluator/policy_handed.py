"""The static policy for code a person hands in (a file given to `nasgraph eval`, the LEMUR corpus).

Generated code is held to `policy.py`'s allow-list: an LLM needs no more than torch and a little
of the standard library, and anything beyond is more likely a mistake than a need. Real model
files are different: they copy torchvision's private helpers, compile regular expressions, read
`self.__dict__` in an `extra_repr`, import `torch.amp`, numpy, `warnings`, `inspect`, ... This
policy was calibrated on the LEMUR image-classification files (`python -m bench.lemur_compat
--static`): it allows what they do, and refuses by name what a model never needs and hostile code
always does:

- starting processes (subprocess, multiprocessing, os.system / fork / exec* / spawn* / kill);
- reaching the network or downloading (socket, http, urllib, requests, torch.hub, torch.distributed);
- loading or compiling native code (ctypes, cpp_extension, load_library, torch.compile);
- loading code by name or by unpickling (importlib, pickle, torch.load, eval / exec / compile of
  strings, `__import__`, sys.modules, frames and `__globals__` / `__subclasses__` / `__builtins__`);
- deleting files, and writing them anywhere but a relative path inside the working folder
  (os.remove, shutil, torch.save, `open(path, 'w')` unless `path` is a literal such as 'out.txt').

Imports of anything else pass: a module this environment lacks fails in the child as a typed
`missing_module`, not here. Like the strict policy, this one cannot prove a program harmless, and
the sandboxed child behind it stays the second line.
"""
from __future__ import annotations

import ast
import re

from .policy import ATTR_BUILTINS, SAFE_TORCH, Checker

# How a handed-in file is evaluated beyond this policy (`nasgraph eval`, `nasgraph hpo`): the square
# image sides it may be rebuilt for when it cannot take the dataset's own size (LEMUR's models were
# written for inputs resized to 32-299 pixels), and parameter and FLOP budgets set out of reach (a
# person's file is measured, not refused for its size).
HANDED_SIDES = [32, 64, 128, 256, 299]
NO_BUDGET = 10**15

# (pattern over a resolved dotted name, why it is refused). A module pattern covers its submodules
# and members; a name is also tried from each of its components on (`torch.os.system` is `os.system`).
_MOD = r"(?:\..*)?"
REFUSED: list[tuple[re.Pattern[str], str]] = [(re.compile(p), why) for p, why in [
    (rf"(?:subprocess|multiprocessing|pty|pexpect|torch\.multiprocessing){_MOD}"
     r"|os\.(?:system|popen|fork|forkpty|kill|killpg|exec\w*|spawn\w*|posix_spawn\w*)"
     r"|concurrent\.futures\.(?:process.*|ProcessPoolExecutor)", "starts processes"),
    (rf"(?:socket|socketserver|ssl|http|urllib|urllib3|requests|httpx|aiohttp|ftplib|smtplib|poplib|imaplib"
     rf"|telnetlib|xmlrpc|webbrowser|asyncio|torch\.distributed|torch\.hub|torch\.utils\.model_zoo){_MOD}",
     "reaches the network"),
    (rf"(?:ctypes|cffi|torch\.utils\.cpp_extension|numpy\.ctypeslib|numpy\.f2py|torch\._inductor){_MOD}"
     r"|torch\.(?:ops|classes)\.load_library|torch\.compile|torch\._dynamo\.optimize",
     "loads or compiles native code"),
    (rf"(?:importlib|runpy|zipimport|pkgutil|code|codeop|builtins|bltns|pickle|_pickle|dill|marshal|shelve|joblib"
     rf"|torch\.package|torch\.serialization){_MOD}"
     r"|torch\.load|torch\.jit\.load|numpy\.load|sys\.(?:modules|_getframe|settrace|setprofile)"
     r"|gc\.get_(?:objects|referrers|referents)|inspect\.(?:currentframe|stack|getouterframes)",
     "loads code by name or by unpickling"),
    (rf"shutil{_MOD}|os\.(?:remove|unlink|rmdir|removedirs|rename|renames|replace|chmod|chown|lchown|link|symlink"
     r"|truncate|chroot|mkfifo|mknod|open|write|dup2?)"
     r"|torch\.(?:save|from_file|jit\.save|onnx\.export|export\.save)"
     r"|numpy\.(?:save|savez|savez_compressed|savetxt|memmap|fromfile)|io\.(?:open|FileIO)",
     "writes or deletes files outside the policy's view"),
    (rf"(?:pdb|bdb){_MOD}", "starts a debugger"),
]]
# Attribute names refused on any object: frames and code objects, the dunders that lead from any
# object to every class or a module's globals, and methods that only ever do what REFUSED names.
ESCAPE_ATTRS = {
    "__subclasses__", "__globals__", "__builtins__", "__code__", "__import__", "__loader__",
    "tb_frame", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code",
    "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "func_globals",
    "system", "popen", "exec", "load_library", "load_inline", "tofile", "savetxt", "_getframe",
    "get_referrers", "get_referents", "write_text", "write_bytes", "unlink", "rmdir", "symlink_to",
    "hardlink_to", "bltns",
}
REFUSED_BUILTINS = {"eval": "runs a string as code", "exec": "runs a string as code",
                    "compile": "builds code from a string", "__import__": "imports a module by a computed name",
                    "globals": "reaches the module's builtins", "locals": "reaches the module's builtins",
                    "breakpoint": "starts a debugger"}
ESCAPE_NAMES = {"__builtins__", "__loader__"}
# Star imports from modules whose members are checked by name would hide those names.
STAR_REFUSED = {"os", "sys", "gc", "inspect", "io", "torch", "numpy", "torch.jit", "torch.onnx", "shutil"}
WRITE_MODES = set("wax+")


def refused(dotted: str) -> str | None:
    """Why a resolved dotted name is refused, or None; tried from each component on, with a leading
    underscore dropped (`random._os.system`, `torch.os.system` are `os.system`)."""
    parts = dotted.split(".")
    for i in range(len(parts)):
        for tail in {".".join(parts[i:]), ".".join([parts[i].lstrip("_"), *parts[i + 1:]])}:
            for pattern, why in REFUSED:
                if pattern.fullmatch(tail):
                    return why
    return None


def _path_inside(node: ast.expr | None) -> bool:
    """A literal relative path with no '..': it stays inside the child's working folder."""
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    path = node.value
    return bool(path) and not path.startswith(("/", "~", "\\")) and ".." not in re.split(r"[/\\]", path)


def _arg(node: ast.Call, pos: int, name: str) -> ast.expr | None:
    if len(node.args) > pos:
        return node.args[pos]
    return next((k.value for k in node.keywords if k.arg == name), None)


class HandedChecker(Checker):
    """The strict checker's alias resolution and reporting, with the rules above."""

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._check_module(node, a.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            return  # a file taken out of its package: the child reports the module as missing
        mod = node.module or ""
        if not self._check_module(node, mod):
            return
        for a in node.names:
            if a.name == "*":
                if mod in STAR_REFUSED:
                    self.add(node, f"from {mod} import *", "a star import would hide names the policy checks")
                continue
            full = f"{mod}.{a.name}"
            why = refused(full) or (f"importing '{a.name}' is not allowed" if a.name in ESCAPE_ATTRS else None)
            if why:
                self.add(node, full, why)

    def _check_module(self, node: ast.AST, mod: str) -> bool:
        why = refused(mod)
        if why:
            self.add(node, mod, f"module '{mod}' {why}", module=True)
            return False
        return True

    def visit_Name(self, node: ast.Name) -> None:
        n = node.id
        if isinstance(node.ctx, ast.Load):
            if n in REFUSED_BUILTINS:
                self.add(node, n, f"the builtin '{n}' {REFUSED_BUILTINS[n]}")
            elif n in ATTR_BUILTINS or n == "open":
                # direct calls are checked in visit_Call; a bare reference would escape those checks
                self.add(node, n, f"'{n}' may only be called directly")
        if n in ESCAPE_NAMES:
            self.add(node, n, f"the name '{n}' is not allowed")

    def _attribute_ok(self, node: ast.Attribute) -> bool:
        dotted = self._resolve(node)
        why = refused(dotted) if dotted and dotted not in SAFE_TORCH else None
        if why:
            self.add(node, dotted, why)
            return False
        if node.attr in ESCAPE_ATTRS:
            self.add(node, node.attr, f"attribute '{node.attr}' is not allowed")
            return False
        return True

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in ATTR_BUILTINS:
            self._check_attr_builtin(node, f.id)
        elif isinstance(f, ast.Name) and f.id == "open":
            self._check_open(node)
        elif isinstance(f, ast.Name) and f.id == "vars" and (not node.args or self._module_arg(node.args[0])):
            self.add(node, "vars", "vars() without an object, or of a module, reaches builtins and module globals")
        else:
            if (isinstance(f, ast.Attribute) and f.attr in ("format", "format_map")
                    and isinstance(f.value, ast.Constant) and isinstance(f.value.value, str)
                    and any(a in f.value.value for a in ESCAPE_ATTRS if a.startswith("__"))):
                self.add(node, "str.format", "format strings may not reach escape dunders")
            self.generic_visit(node)
            return
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            self.visit(arg)

    def _module_arg(self, node: ast.expr) -> bool:
        return isinstance(node, (ast.Name, ast.Attribute)) and self._resolve(node) is not None

    def _check_open(self, node: ast.Call) -> None:
        mode = _arg(node, 1, "mode")
        literal = isinstance(mode, ast.Constant) and isinstance(mode.value, str)
        writes = mode is not None and (not literal or bool(WRITE_MODES & set(mode.value)))
        if writes and not _path_inside(_arg(node, 0, "file")):
            self.add(node, "open", "writing a file is allowed only to a literal relative path (e.g. 'log.txt') "
                                   "inside the working folder")

    def _check_attr_builtin(self, node: ast.Call, fn: str) -> None:
        if len(node.args) < 2:
            return
        target, name = node.args[0], node.args[1]
        base = self._resolve(target) if isinstance(target, (ast.Name, ast.Attribute)) else None
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            why = refused(f"{base}.{name.value}") if base else None
            if why:
                self.add(node, f"{base}.{name.value}", why)
            elif name.value in ESCAPE_ATTRS:
                self.add(node, f"{fn}(..., {name.value!r})", f"attribute '{name.value}' is not allowed")
        elif base:
            self.add(node, f"{fn}({base}, ...)", f"{fn} on a module needs a literal attribute name")
