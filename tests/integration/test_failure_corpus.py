"""The committed corpus of real failed candidates, replayed through the real sandbox and the rules: how
many become valid (they train) per split and per rule is a test, not a sentence.

tests/fixtures/failures.expected.json holds the table `python -m bench.autofix` printed when the corpus
or the rules last changed; a change that makes fewer failures valid fails here. Regenerate it with
`python -m bench.autofix > /tmp/t.json` and copy the split tables over when the rules get better.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.autofix import CORPUS, REPLAY
from nasgraph.tools.autofix.replay import SPLITS, load_corpus, replay, summarize
from nasgraph.tools.evaluator import EvalRequest, Evaluator

pytestmark = pytest.mark.integration

EXPECTED = Path(__file__).resolve().parents[1] / "fixtures" / "failures.expected.json"
MAX_FIXES = 8  # the loop's default (loop.max_fixes)
# Valid means the model trains, which the cascade's screen shows after a tenth of the epoch: a bar no
# model reaches stops each valid one there (`screened`, valid). Every corpus failure happens before
# training (build, check, the budgets' projections), so the table is the full epoch's at a fifth of the cost.
SCREEN = {**REPLAY, "screen_fraction": 0.1, "screen_min_accuracy": 1.0}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    cases = load_corpus(CORPUS)
    with Evaluator(tmp_path_factory.mktemp("data")) as ev:
        results = [replay(c, lambda code: ev.evaluate(EvalRequest(code=code, **SCREEN)), MAX_FIXES)
                   for c in cases]
    return summarize(results)


def test_the_corpus_has_both_splits():
    cases = load_corpus(CORPUS)
    assert {c.split for c in cases} == set(SPLITS)
    assert len({c.id for c in cases}) == len(cases)
    assert all(c.status != "ok" and c.code for c in cases)


@pytest.mark.parametrize("split", SPLITS)
def test_no_fewer_failures_become_valid_than_recorded(table, split):
    expected = json.loads(EXPECTED.read_text())[split]
    got = table[split]
    assert got["failures"] == expected["failures"]
    assert got["valid_without_fix"] == expected["valid_without_fix"] == 0  # every case fails as it is
    assert got["valid_after_fixes"] >= expected["valid_after_fixes"], got
    for rule, counts in expected["rules"].items():
        assert got["rules"].get(rule, {}).get("valid", 0) >= counts["valid"], (rule, got["rules"].get(rule))
