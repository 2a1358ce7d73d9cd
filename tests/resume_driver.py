"""Child process for the kill-and-resume test: runs (or resumes) one loop with a scripted LLM whose
designs are all distinct valid models, so every iteration trains for real on `digits`."""
import itertools
import sys

from graph.run import run_loop
from nasgraph.config import load_config
from tests import candidates as C
from tests.fakes import FakeHandle, ScriptedChatModel


def main(home: str, run_id: str, iterations: int, start_width: int) -> None:
    cfg = load_config(home=home, evaluator={"threads": 1, "time_budget_s": 60, "batch_size": 32},
                      loop={"dataset": "digits", "max_repairs": 1, "prm": {"lr": 0.1}})
    widths = itertools.count(start_width)
    llm = ScriptedChatModel(improver=[], generator=[C.fenced(C.wide(next(widths))) for _ in range(200)])
    summary = run_loop(cfg, FakeHandle(llm), run_id=run_id, iterations=iterations)
    print("SUMMARY", summary["iterations"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
