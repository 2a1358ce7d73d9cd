"""The rule registry: each rule is one entry (id, the diagnosis kinds it handles, priority, summary),
declared with `@rule(...)` beside its code, and proved by its fixture in tests/fixtures/autofix/<id>.py.

`find_fix` asks only the rules registered for the failure's diagnosis kind, lowest priority first; the
order matters only among rules of one kind (a layer shared by two inputs is tried before the plain
input-size rule, which would only move its error)."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable

from nasgraph.tools.evaluator.diagnosis import Diagnosis

from .edit import Fix, parses

Apply = Callable[[str, "ast.Module | None", Diagnosis], "Fix | None"]


@dataclass(frozen=True)
class Rule:
    id: str                  # what the trace and the replay table show
    kinds: tuple[str, ...]   # the Diagnosis kinds it handles
    priority: int            # lower first, among the rules of one kind
    summary: str             # one line for the catalogue (`nasgraph autofix rules`)
    apply: Apply


REGISTRY: dict[str, Rule] = {}


def rule(id: str, kinds: tuple[str, ...] | str, priority: int, summary: str) -> Callable[[Apply], Apply]:
    """Register the decorated function as a rule; its Fix is reported under `id`."""
    def register(fn: Apply) -> Apply:
        if id in REGISTRY:
            raise ValueError(f"rule id {id!r} registered twice")
        REGISTRY[id] = Rule(id, (kinds,) if isinstance(kinds, str) else tuple(kinds), priority, summary, fn)
        return fn
    return register


def rules_for(kind: str) -> list[Rule]:
    return sorted((r for r in REGISTRY.values() if kind in r.kinds), key=lambda r: (r.priority, r.id))


def find_fix(code: str, d: Diagnosis | None) -> Fix | None:
    """The first rule of the diagnosis's kind that applies to this code, or None. Pure: no I/O."""
    if d is None:
        return None
    try:
        tree: ast.Module | None = ast.parse(code)
    except (SyntaxError, ValueError):
        tree = None
    if (tree is None) != (d.kind == "syntax"):
        return None  # a parse failure is a syntax diagnosis, and only syntax rules take code that does not parse
    for r in rules_for(d.kind):
        fix = r.apply(code, tree, d)
        if fix is not None and fix.code != code and parses(fix.code):
            return Fix(fix.code, r.id, fix.description)
    return None
