"""LoRA adapters as models: `<base>+<adapter>` names a base model with one of its adapters applied.

A self-improvement cycle writes its adapter to `<models_dir>/adapters/<adapter>/` (adapter.gguf for
llama.cpp and Ollama, adapter.json with the base, cycle and training facts, peft/ for other tools).
`qwen2.5-coder-0.5b+fmnist-cycle3` then works wherever a model name does. Before llama.cpp sees an
adapter it is checked against the base (see nasgraph.tools.lora.gguf_adapter): llama.cpp aborts on
some mismatches and silently ignores others.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nasgraph.agents import models
from nasgraph.tools.lora.gguf_adapter import AdapterError, check_adapter

ADAPTERS = "adapters"
SEP = "+"


@dataclass(frozen=True)
class Adapter:
    name: str          # the folder name, e.g. "fmnist-cycle3"
    base: str          # the embedded model it was trained on
    path: Path         # adapter.gguf
    meta: dict = field(default_factory=dict)

    @property
    def model(self) -> str:
        return f"{self.base}{SEP}{self.name}"


def adapters_dir(models_dir: Path) -> Path:
    return Path(models_dir).expanduser() / ADAPTERS


def split(name: str) -> tuple[str, str]:
    """('qwen2.5-coder-0.5b', 'fmnist-cycle3') for a '+' name; (name, '') for any other."""
    if SEP in name and not models.looks_like_path(name):
        base, _, adapter = name.partition(SEP)
        return base, adapter
    return name, ""


def _load(folder: Path) -> Adapter | None:
    try:
        meta = json.loads((folder / "adapter.json").read_text())
    except (OSError, ValueError):
        return None
    if not (folder / "adapter.gguf").is_file():
        return None
    return Adapter(name=folder.name, base=str(meta.get("base", "")), path=folder / "adapter.gguf", meta=meta)


def list_adapters(models_dir: Path) -> list[Adapter]:
    root = adapters_dir(models_dir)
    found = (_load(p) for p in sorted(root.iterdir()) if p.is_dir()) if root.is_dir() else ()
    return [a for a in found if a is not None]


def find(model_name: str, models_dir: Path) -> Adapter:
    """The adapter a '+' name asks for, known to be made for the base the name gives."""
    base, name = split(model_name)
    adapter = _load(adapters_dir(models_dir) / name) if name else None
    if adapter is None:
        known = ", ".join(a.model for a in list_adapters(models_dir)) or "none yet (`nasgraph cycles` makes them)"
        raise AdapterError(f"no adapter {name!r} in {adapters_dir(models_dir)}; known: {known}")
    if adapter.base != base:
        raise AdapterError(f"adapter {name} was trained on {adapter.base or 'an unknown base'}, not on {base}: "
                           f"use {adapter.model}")
    return adapter


def checked(model_name: str, base_path: Path, models_dir: Path) -> Adapter:
    """`find`, then the file itself checked against the base GGUF (architecture, base hash, shapes)."""
    adapter = find(model_name, models_dir)
    known = models.EMBEDDED.get(adapter.base)
    check_adapter(adapter.path, base_path, base_name=adapter.base, base_sha256=known.sha256 if known else "")
    return adapter


def modelfile(adapter: Adapter, base_path: Path) -> str:
    """An Ollama Modelfile: the base GGUF with the adapter on top (`ollama create NAME -f Modelfile`)."""
    meta = adapter.meta
    return (f"# {adapter.model}: LoRA adapter from nasgraph cycle {meta.get('cycle', '?')} "
            f"({meta.get('pairs', '?')} training pairs)\n"
            f"FROM {Path(base_path).resolve()}\n"
            f"ADAPTER {adapter.path.resolve()}\n")
