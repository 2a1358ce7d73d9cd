"""Child process for the kill-and-resume test: runs (or resumes) one loop with a scripted LLM whose
designs are all distinct valid models, so every iteration trains for real on `digits`.

With the environment variable EXIT_AT_CHECKPOINT=K the process dies (os._exit, as abrupt as kill -9)
when LangGraph is about to write its K-th checkpoint: the node before it has run, traced and saved
its writes, and the checkpoint that would record them is never written. With EXIT_IN_ATTEMPT=1 it
dies likewise inside the first attempt subgraph, at the checkpoint after its check node (the first
one there to carry an outcome): the checkpoint after generate is on disk. The resumed process prints
how many drafts it asked the LLM for. IN_FLIGHT=K sets loop.in_flight (iterations planned ahead)."""
import itertools
import os
import sys

from nasgraph.config import load_config
from nasgraph.graph.run import run_loop
from tests import candidates as C
from tests.fakes import FakeHandle, ScriptedChatModel


def _exit_at_checkpoint(k: int) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    put, calls = SqliteSaver.put, itertools.count(1)

    def dying_put(self, *args, **kwargs):
        if next(calls) == k:
            os._exit(9)
        return put(self, *args, **kwargs)

    SqliteSaver.put = dying_put


def _exit_in_attempt() -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    put = SqliteSaver.put

    def dying_put(self, config, checkpoint, metadata, new_versions):
        if config["configurable"].get("checkpoint_ns", "").startswith("attempt:") and "outcome" in new_versions:
            os._exit(9)
        return put(self, config, checkpoint, metadata, new_versions)

    SqliteSaver.put = dying_put


def main(home: str, run_id: str, iterations: int, start_width: int) -> None:
    if os.environ.get("EXIT_AT_CHECKPOINT"):
        _exit_at_checkpoint(int(os.environ["EXIT_AT_CHECKPOINT"]))
    if os.environ.get("EXIT_IN_ATTEMPT"):
        _exit_in_attempt()
    cfg = load_config(home=home, evaluator={"threads": 1, "time_budget_s": 60, "batch_size": 32},
                      loop={"dataset": "digits", "max_repairs": 1, "prm": {"lr": 0.1},
                            "in_flight": int(os.environ.get("IN_FLIGHT", "1"))})
    widths = itertools.count(start_width)
    llm = ScriptedChatModel(improver=[], generator=[C.fenced(C.wide(next(widths))) for _ in range(200)])
    summary = run_loop(cfg, FakeHandle(llm), run_id=run_id, iterations=iterations)
    print("SUMMARY", summary["iterations"], flush=True)
    print("DRAFTS", llm.calls.count("generator"), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
