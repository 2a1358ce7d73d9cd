"""`nasgraph chat` as a person uses it, with the real embedded Qwen2.5-Coder-0.5B: run one iteration,
ask a question the records do not answer directly (so the model answers), list the best, quit.

No repair (one generation per iteration): this is about the conversation, not the valid rate. About
3 minutes on 2 idle cores; the waits are generous because a loaded machine makes the 0.5B many times
slower (measured: 700 tokens in 336 s, 9 minutes in all, with other jobs running)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest

from nasgraph.graph.trace import read_events
from tests.chat_driver import Screen

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_chat_with_the_embedded_model(tmp_path):
    models_dir = Path(os.environ.get("NASGRAPH_MODELS_DIR", Path.home() / ".nasgraph" / "models")).expanduser()
    env = {**os.environ, "NASGRAPH_HOME": str(tmp_path), "NASGRAPH_MODELS_DIR": str(models_dir),
           "NASGRAPH_LLM__MAX_TOKENS": "700", "NASGRAPH_EVALUATOR__BATCH_SIZE": "32",
           "NASGRAPH_LOOP__PRM": '{"lr": 0.1}', "NASGRAPH_LOOP__MAX_REPAIRS": "0"}
    child = pexpect.spawn(sys.executable, ["-m", "nasgraph.cli", "chat", "--model", "qwen2.5-coder-0.5b",
                                           "--dataset", "digits", "--epochs", "2", "--session", "real",
                                           "--auto", "0", "--threads", "2", "--time-budget-s", "60"],
                          cwd=str(ROOT), env=env, encoding="utf-8", codec_errors="replace", timeout=60,
                          dimensions=(50, 160))
    screen = Screen(child)
    try:
        screen.prompt()
        child.sendline("/run 1")
        screen.expect(r"run chat-real: iterations 1–1", timeout=900)
        screen.expect("improver's reasoning")
        screen.prompt()
        child.sendline("what should the next design change to get more accurate?")
        screen.expect(r"\(the model's answer from a summary", timeout=400)
        screen.prompt()
        child.sendline("/best")
        screen.expect(r"best designs of session real|no valid design yet")
        screen.prompt()
        child.sendline("/quit")
        screen.expect("resume with: nasgraph chat --session real")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0

    events = list(read_events(tmp_path / "runs" / "chat-real" / "trace.jsonl"))
    assert [e["iteration"] for e in events if e["node"] == "record"] == [1]
    llm_events = [e for e in events if e["node"] in ("improve", "generate", "repair")]
    assert llm_events and all(e["model"] == "qwen2.5-coder-0.5b" and e["tokens_out"] > 0 for e in llm_events)
    saved = json.loads((tmp_path / "runs" / "chat" / "real.json").read_text())
    said = [t["text"] for t in saved["transcript"]]
    assert "what should the next design change to get more accurate?" in said
    answer = said[said.index("what should the next design change to get more accurate?") + 1]
    assert len(answer.strip()) > 10 and answer != "(the model gave no answer)"
