"""Pure routers: each state goes to the one right node, impossible states raise."""
import pytest

from nasgraph.graph import routing


def st(status=None, repairs=0, code="x", arch_id="a", stage=""):
    return {"outcome": {"status": status, "stage": stage} if status else None, "repairs": repairs, "code": code, "arch_id": arch_id}


@pytest.mark.parametrize("status", sorted(routing.REPAIRABLE))
def test_repairable_failures_go_to_repair_until_the_bound(status):
    assert routing.after_check(st(status, repairs=0), max_repairs=1) == "repair"
    assert routing.after_check(st(status, repairs=1), max_repairs=1) == "done"
    assert routing.after_check(st(status, repairs=0), max_repairs=0) == "done"


def test_passing_check_goes_to_fingerprint():
    assert routing.after_check(st(None), max_repairs=1) == "fingerprint"


def test_check_without_code_is_impossible():
    with pytest.raises(ValueError):
        routing.after_check(st(None, code=None), max_repairs=1)


def test_duplicate_skips_training():
    assert routing.after_fingerprint(st("duplicate"), max_repairs=1) == "done"
    assert routing.after_fingerprint(st(None), max_repairs=1) == "evaluate"
    with pytest.raises(ValueError):
        routing.after_fingerprint(st(None, arch_id=None), max_repairs=1)


def test_repeat_of_a_failed_module_is_repaired_until_the_bound():
    assert routing.after_fingerprint(st("shape_error", repairs=1), max_repairs=2) == "repair"
    assert routing.after_fingerprint(st("shape_error", repairs=2), max_repairs=2) == "done"


@pytest.mark.parametrize("status,expected", [("ok", "done"), ("build_error", "repair"), ("shape_error", "repair"),
                                             ("timeout", "done"), ("nan_loss", "done"), ("over_budget", "repair")])
def test_after_evaluate(status, expected):
    assert routing.after_evaluate(st(status), max_repairs=2) == expected


def test_after_evaluate_needs_an_outcome():
    with pytest.raises(ValueError):
        routing.after_evaluate(st(None), max_repairs=1)


def test_record_ends_only_with_a_stop_reason():
    assert routing.after_record({"stop_reason": None}) == "improve"
    assert routing.after_record({"stop_reason": "iterations"}) == "__end__"


def test_stop_reasons():
    assert routing.stop_reason(5, 5, 0, None, None, None) == "iterations"
    assert routing.stop_reason(1, 5, 100, 50, None, None) == "time_budget"
    assert routing.stop_reason(1, 5, 0, None, 0.9, 0.85) == "target_accuracy"
    assert routing.stop_reason(1, 5, 0, None, 0.8, 0.85) is None


def test_runtime_error_in_the_shape_check_is_repaired_but_not_in_training():
    # Regression: an attribute used in forward but never defined failed the dummy forward as a
    # runtime_error and went unrepaired.
    assert routing.after_evaluate(st("runtime_error", stage="shape"), max_repairs=1) == "repair"
    assert routing.after_evaluate(st("runtime_error", stage="train"), max_repairs=1) == "done"


FIX = {"code": "fixed", "rule": "lazy_input_size", "description": "..."}


def test_a_known_mechanical_failure_goes_to_the_rule_fix_first():
    # The node that set the outcome stored the fix a rule found (pending_fix); the router only reads it.
    state = {"outcome": {"status": "shape_error", "stage": "shape", "error": "mat1 and mat2"}, "code": "x",
             "repairs": 0, "fixes": 0, "pending_fix": FIX}
    assert routing.after_evaluate(state, max_repairs=1, max_fixes=1) == "fix"
    assert routing.after_evaluate({**state, "pending_fix": None}, max_repairs=1, max_fixes=1) == "repair"
    assert routing.after_evaluate({**state, "fixes": 1}, max_repairs=1, max_fixes=1) == "repair"
    assert routing.after_evaluate({**state, "fixes": 1, "repairs": 1}, max_repairs=1, max_fixes=1) == "done"
    assert routing.after_evaluate(state, max_repairs=1, max_fixes=0) == "repair"


def test_a_training_failure_a_rule_knows_is_fixed_but_never_sent_to_the_llm():
    state = {"outcome": {"status": "runtime_error", "stage": "train", "error": "inplace operation"}, "code": "x",
             "repairs": 0, "fixes": 0, "pending_fix": FIX}
    assert routing.after_evaluate(state, max_repairs=1, max_fixes=1) == "fix"
    assert routing.after_evaluate({**state, "fixes": 1}, max_repairs=1, max_fixes=1) == "done"
