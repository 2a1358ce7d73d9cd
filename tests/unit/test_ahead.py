"""Planning ahead (loop.in_flight > 1): the next iterations are drafted while a design trains, and a plan
made ahead is exactly the plan the loop makes for itself when none was made (a resumed run), because
iteration m is planned from the view after iteration m - in_flight and seeded by iteration and node."""
import pytest

from nasgraph.config import load_config
from nasgraph.graph.ahead import Ahead
from nasgraph.graph.run import RunPaths, run_loop
from nasgraph.graph.trace import read_events
from nasgraph.tools.store import Store
from tests.fakes import SeededHandle


def _cfg(home, **loop):
    return load_config(home=home, evaluator={"threads": 1, "time_budget_s": 60, "batch_size": 32},
                       loop={"dataset": "digits", "max_repairs": 0, "max_fixes": 0, "prm": {"lr": 0.1},
                             "search": "improver", "in_flight": 2, **loop})


def _plans(home, run_id="r"):
    """Per iteration: the improver's triple, the first draft's code hash, whether both came from a plan."""
    events = list(read_events(RunPaths(home / "runs" / run_id).trace))
    out = {}
    for e in events:
        if e["node"] == "improve":
            out[e["iteration"]] = {"triple": e["triple"], "improve_ahead": bool(e.get("ahead"))}
        elif e["node"] == "generate":
            out[e["iteration"]].update(code=e["code_hash"], generate_ahead=bool(e.get("ahead")))
    return out, events


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    home = tmp_path_factory.mktemp("planned")
    summary = run_loop(_cfg(home), SeededHandle(), run_id="r", iterations=5, seed_key="s")
    return home, summary


def test_later_iterations_are_drafted_ahead_and_see_the_lagged_history(planned):
    home, summary = planned
    plans, events = _plans(home)
    assert summary["iterations"] == 5
    assert not plans[1]["improve_ahead"]  # nothing was planned before the run began
    assert all(plans[m]["improve_ahead"] and plans[m]["generate_ahead"] for m in range(2, 6))
    prompt = next(e["prompt_text"] for e in events if e["node"] == "improve" and e["iteration"] == 3)
    assert "#1 tried:" in prompt and "#2 tried:" not in prompt  # planned while iteration 2 trained
    with Store(home / "store.sqlite") as store:  # nothing is evaluated ahead: one evaluation per iteration
        assert sorted(e.iteration for e in store.evaluations_for_run("r")) == [1, 2, 3, 4, 5]


def test_a_plan_made_ahead_is_the_plan_the_loop_makes_itself(planned, tmp_path, monkeypatch):
    home, _ = planned
    monkeypatch.setattr(Ahead, "schedule", lambda self, iteration, make: None)  # nothing planned ahead
    run_loop(_cfg(tmp_path), SeededHandle(), run_id="r", iterations=5, seed_key="s")
    ahead, _ = _plans(home)
    inline, _ = _plans(tmp_path)
    assert not any(p["improve_ahead"] for p in inline.values())
    assert [(p["triple"], p["code"]) for p in inline.values()] == [(p["triple"], p["code"]) for p in ahead.values()]


def test_a_resumed_run_replays_the_plans(planned, tmp_path):
    home, _ = planned
    run_loop(_cfg(tmp_path), SeededHandle(), run_id="r", iterations=3, seed_key="s")
    run_loop(_cfg(tmp_path), SeededHandle(), run_id="r", iterations=5, seed_key="s")  # extends the finished run
    resumed, _ = _plans(tmp_path)
    ahead, _ = _plans(home)
    assert not resumed[4]["improve_ahead"] and resumed[5]["improve_ahead"]
    assert [(p["triple"], p["code"]) for p in resumed.values()] == [(p["triple"], p["code"]) for p in ahead.values()]


def test_in_flight_one_plans_nothing_ahead(tmp_path):
    run_loop(_cfg(tmp_path, in_flight=1), SeededHandle(), run_id="r", iterations=2, seed_key="s")
    plans, _ = _plans(tmp_path)
    assert not any(p["improve_ahead"] or p["generate_ahead"] for p in plans.values())
