"""Rule-based fixes for the mechanical failures small generators make most, applied without an LLM call.

Each rule handles the failures of one or a few diagnosis kinds (`nasgraph.tools.evaluator.diagnosis`):
it reads the failure's fields (the failing module's path, its class, its input shapes, the line, the
budget figures) and makes one obvious edit: only the offending layers or lines change, the rest of the
text (comments included) is kept. A rule returns None when the code does not have the shape it
expects, so the LLM repair still handles everything else. The rules were found by reading the 1.5B
generator's failures in real runs; `nasgraph autofix rules` prints the catalogue, and
tests/fixtures/autofix/ holds one failing module per rule, replayed through the real evaluator.
`find_fix` is pure: nodes and benches may call it.
"""
from __future__ import annotations

# Importing the rule modules registers their rules.
from . import budget, forward, names, output, residual, shapes  # noqa: F401
from .edit import Fix
from .registry import REGISTRY, Rule, find_fix, rules_for

__all__ = ["REGISTRY", "Fix", "Rule", "find_fix", "rules_for"]
