"""The whole graph on real parts: the embedded Qwen2.5-Coder-0.5B (llama.cpp), the sandboxed evaluator
on a real dataset, the SQLite store, LangGraph's SQLite checkpointer and the JSONL trace."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nasgraph.agents.handle import open_llm
from nasgraph.config import load_config
from nasgraph.graph.run import RunPaths, run_loop
from nasgraph.graph.trace import read_events
from nasgraph.tools.store import Store

pytestmark = pytest.mark.integration

TYPED = {"ok", "syntax", "forbidden", "build_error", "shape_error", "runtime_error", "nan_loss",
         "over_budget", "timeout", "memory", "killed", "duplicate"}


def test_real_model_drives_the_loop(tmp_path, monkeypatch):
    models_dir = Path(os.environ.get("NASGRAPH_MODELS_DIR", Path.home() / ".nasgraph" / "models")).expanduser()
    monkeypatch.setenv("NASGRAPH_HOME", str(tmp_path))
    cfg = load_config(home=tmp_path, models_dir=models_dir,
                      llm={"model": "qwen2.5-coder-0.5b", "max_tokens": 900},
                      evaluator={"threads": 2, "time_budget_s": 60, "batch_size": 32},
                      loop={"dataset": "digits", "epochs": 2, "prm": {"lr": 0.1}, "max_repairs": 1,
                            "search": "improver"})  # the improver's second call must see the first outcome
    llm = open_llm(cfg)
    # Two iterations are enough to show the second improver call seeing the first outcome.
    summary = run_loop(cfg, llm, run_id="real", iterations=2)

    assert summary["iterations"] == 2
    assert summary["stop_reason"] == "iterations"
    events = list(read_events(RunPaths(cfg.runs_dir / "real").trace))
    records = [e for e in events if e["node"] == "record"]
    assert [e["iteration"] for e in records] == [1, 2]
    assert all(e["status"] in TYPED for e in records)
    # Real replies with real token counts, from the model the config named.
    llm_events = [e for e in events if e["node"] in ("improve", "generate", "repair")]
    assert all(e["model"] == "qwen2.5-coder-0.5b" and e["backend"] == "llamacpp" for e in llm_events)
    assert all(e["tokens_in"] > 100 and e["tokens_out"] > 0 for e in llm_events)
    gens = [e for e in events if e["node"] == "generate"]
    assert len(gens) == 2 and all("class Net" in e["reply"] or e["code"] for e in gens)
    # The second improver call saw the first outcome: the history window reached the prompt.
    improves = [e for e in events if e["node"] == "improve"]
    assert records[0]["status"] in improves[1]["prompt_text"] or "iteration 1" in improves[1]["prompt_text"].lower()

    # Every trained candidate is in the store, linked to its iteration.
    with Store(cfg.store_path) as store:
        evals = store.evaluations_for_run("real")
    trained = [e for e in events if e["node"] == "evaluate" and not e.get("reused")]
    assert len(evals) == len(trained)
    assert {e.iteration for e in evals} <= {1, 2}
    valid = [e for e in evals if e.status == "ok"]
    for e in valid:
        assert e.accuracy is not None and e.params and e.params > 0
