"""Every user-facing error shares one base, which the CLI and chat catch once."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import nasgraph
from nasgraph.cli import main
from nasgraph.errors import NasgraphError

# Exceptions that never reach a user: the sandboxed child turns them into a typed Outcome, or the
# block extractor into a skipped block.
INTERNAL = {"Failure", "OverBudget", "NaNLoss", "ScreenedOut", "ClosureError"}


def _project_exceptions() -> dict[str, type[BaseException]]:
    found = {}
    names = [info.name for info in pkgutil.walk_packages(nasgraph.__path__, "nasgraph.")]
    for pkg in ("nasgraph.agents", "nasgraph.graph", "nasgraph.tools", "nasgraph.rag_index"):
        root = importlib.import_module(pkg)
        names += [pkg] + [info.name for info in pkgutil.walk_packages(root.__path__, pkg + ".")]
    for name in names:
        if name.endswith(("__main__", ".zygote", ".worker")):
            continue  # entry points of child processes
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found[f"{name}.{cls_name}"] = cls
    return found


def test_every_user_facing_error_is_a_nasgraph_error():
    found = _project_exceptions()
    assert len(found) >= 15  # the walk reached every package
    stray = sorted(name for name, cls in found.items()
                   if cls.__name__ not in INTERNAL and not issubclass(cls, NasgraphError))
    assert stray == []


def test_the_cli_prints_one_line_for_any_nasgraph_error(tmp_path, capsys):
    rc = main(["--home", str(tmp_path), "eval", str(tmp_path / "missing.py"), "--dataset", "no-such-set"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("nasgraph: error: ") and err.count("\n") == 1
