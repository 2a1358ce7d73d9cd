"""A small real run for the trace, report and chat tests: the scripted LLM, the real evaluator, store,
checkpoint and trace on `digits` (~5 s). Five iterations, one of each kind the viewers must show:

  1 ok            VALID
  2 shape_error   a wrong Linear size, and a repair with another wrong size (so the repair fails too)
  3 ok            two convolutions, 8 channels (asked for "depthwise separable convolutions")
  4 duplicate     VALID again, renamed: never trained twice
  5 ok            two convolutions, 3 channels (the smallest model)
"""
from __future__ import annotations

from pathlib import Path

from nasgraph.config import Config, load_config
from tests import candidates as C
from tests.fakes import FakeHandle, ScriptedChatModel

RUN_ID = "trace-run"
SEARCH_WORD = "octave"  # in no built-in prompt text, so a search finds only the triple


def shape_error(channels: int) -> str:
    return C.wide(channels).replace("nn.Linear(4 *", "nn.Linear(5 *")


def triple(modification: str) -> str:
    return f"PROBLEM: accuracy is limited\nMODIFICATION: {modification}\nEXPECTED: higher accuracy"


def config(home: Path) -> Config:
    return load_config(home=home, evaluator={"threads": 1, "time_budget_s": 60, "batch_size": 32},
                       loop={"dataset": "digits", "iterations": 5, "max_repairs": 1, "max_fixes": 0, "epochs": 2,
                             "repair": "edit", "prm": {"lr": 0.1},  # the viewers show the failed code handed back
                             "search": "improver"})  # and the improver's triples


def make_run(home: Path) -> dict:
    from nasgraph.graph.run import run_loop

    llm = ScriptedChatModel(
        improver=[triple("start with one convolution"), triple("fix the flatten size"),
                  triple(f"use {SEARCH_WORD} convolutions"), triple("go back to the first design"),
                  triple("make it smaller")],
        generator=[C.fenced(C.VALID), C.fenced(shape_error(6)), C.fenced(shape_error(7)), C.fenced(C.wide(8)),
                   C.fenced(C.VALID_DUPLICATE), C.fenced(C.wide(3))])
    return run_loop(config(home), FakeHandle(llm), run_id=RUN_ID)
