"""The run view: what it shows comes from the run's state, so a resumed run starts right; piped, it
prints one plain line per iteration."""
import io

from rich.console import Console

from nasgraph.views import RunView


def _state(statuses: list[str], total: int = 30) -> dict:
    history = [{"iteration": i + 1, "status": s, "accuracy": 0.8 if s == "ok" else None} for i, s in enumerate(statuses)]
    return {"iteration": len(statuses), "max_iterations": total, "history": history, "stats": {},
            "best": {"accuracy": 0.8, "params": 1000, "arch_id": "abc"} if "ok" in statuses else None}


def test_piped_output_prints_one_line_per_iteration():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with RunView(console, "r", 30) as view:
        view.update("start", {}, _state(["ok", "shape_error"]))
        view.update("generate", {}, _state(["ok", "shape_error"]))
        view.update("record", {}, _state(["ok", "shape_error", "ok"]))
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("iteration 3/30  ok  acc 80.00%  best 80.00%  valid 67% of last 3")


def test_a_resumed_run_shows_its_iterations_and_valid_rate_before_the_first_node_ends():
    # Regression: after a resume the panel showed "iteration 0/30" and counted only iterations since
    # the resume ("100% of last 1" when 2 of 3 were valid).
    console = Console(file=io.StringIO(), force_terminal=True, width=200)
    view = RunView(console, "r", 30)
    view.update("start", {}, _state(["ok", "timeout"]))
    text = "".join(seg.text for seg in console.render(view._render()))
    assert "2/30" in text and "50% of last 2" in text and "timeout" in text
    view.update("record", {}, _state(["ok", "timeout", "ok"]))
    text = "".join(seg.text for seg in console.render(view._render()))
    assert "3/30" in text and "67% of last 3" in text
