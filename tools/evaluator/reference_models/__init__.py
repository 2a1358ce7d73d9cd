"""Built-in reference models: small, known-good LEMUR-contract modules.

Each file is a complete, self-contained model module (the same form the Code Generator writes),
so it can be read as text and sent through the sandbox like any candidate.
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent


def reference_names() -> list[str]:
    return sorted(p.stem for p in _HERE.glob("*.py") if p.stem != "__init__")


def reference_path(name: str) -> Path:
    path = _HERE / f"{name}.py"
    if name == "__init__" or not path.is_file():
        raise ValueError(f"unknown reference model {name!r}; known: {', '.join(reference_names())}")
    return path


def reference_source(name: str) -> str:
    return reference_path(name).read_text()
