"""Imports point down: nothing imports the CLI module but the entry point (plugins, lower layers and the
benches take what they share from the module that owns it)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("nasgraph", "tools", "agents", "graph", "rag_index", "bench")
ENTRY_POINT = ROOT / "nasgraph" / "cli.py"


def _imports_cli(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "nasgraph.cli" for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module == "nasgraph.cli" or (node.module == "nasgraph" and any(a.name == "cli" for a in node.names))):
            lines.append(node.lineno)
    return lines


def test_no_module_imports_the_cli_but_the_entry_point():
    found = [f"{path.relative_to(ROOT)}:{line}"
             for folder in FOLDERS for path in sorted((ROOT / folder).rglob("*.py")) if path != ENTRY_POINT
             for line in _imports_cli(ast.parse(path.read_text(encoding="utf-8")))]
    assert not found, found


def test_the_check_sees_each_form_of_import():
    for text in ("import nasgraph.cli", "from nasgraph.cli import main", "from nasgraph import cli, config",
                 "def f():\n    from nasgraph.cli import X"):
        assert _imports_cli(ast.parse(text)), text
    assert not _imports_cli(ast.parse("from nasgraph import config\nfrom .cli import register"))
