"""Replay the rules on a corpus of real failed candidates: does a rule apply, and does the fixed model
then *train*, as "valid" means in the loop?

The corpus is JSON lines, one failed candidate each: `id`, `split` ("seen": failures read while the
rules were written; "held_out": failures from runs nobody read for that), `source` (the run it came
from), the original `status` and `error`, and the `code`. A replay evaluates each code in the real
sandbox, takes its diagnosis, chains up to `max_fixes` rule fixes (re-evaluating after each, as the loop
does) and records the last outcome. `summarize` turns the results into the per-split, per-rule table
that `bench.autofix` prints and the corpus test asserts.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nasgraph.tools.evaluator import Outcome
from nasgraph.tools.evaluator.outcome import VALID

from .registry import find_fix

SPLITS = ("seen", "held_out")


@dataclass(frozen=True)
class Case:
    id: str
    split: str
    source: str
    status: str
    error: str
    code: str


@dataclass
class Result:
    case: Case
    first: Outcome
    final: Outcome
    rules: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.final.status in VALID  # a screened model built, checked and trained: valid


def load_corpus(path: Path) -> list[Case]:
    cases = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if row.get("split") not in SPLITS:
                raise ValueError(f"{path}:{n}: split must be one of {SPLITS}, got {row.get('split')!r}")
            cases.append(Case(**{k: row[k] for k in Case.__dataclass_fields__}))
    return cases


def replay(case: Case, evaluate: Callable[[str], Outcome], max_fixes: int) -> Result:
    """Evaluate the case, then fix and re-evaluate while a rule applies, up to `max_fixes` times."""
    code = case.code
    first = out = evaluate(code)
    rules: list[str] = []
    while out.status not in VALID and len(rules) < max_fixes:
        fix = find_fix(code, out.diagnosis)
        if fix is None:
            break
        rules.append(fix.rule)
        code = fix.code
        out = evaluate(code)
    return Result(case, first, out, rules)


def summarize(results: list[Result]) -> dict:
    """{split: {"failures", "valid_without_fix", "valid_after_fixes", "rules": {id: {"applied", "valid"}}}}."""
    table: dict = {}
    for split in SPLITS:
        mine = [r for r in results if r.case.split == split]
        by_rule: dict[str, Counter] = {}
        for r in mine:
            for rule in set(r.rules):
                by_rule.setdefault(rule, Counter()).update({"applied": 1, "valid": int(r.valid)})
        table[split] = {"failures": len(mine),
                        "valid_without_fix": sum(r.first.ok for r in mine),
                        "valid_after_fixes": sum(r.valid for r in mine),
                        "rules": {rule: dict(sorted(c.items())) for rule, c in sorted(by_rule.items())}}
    return table
