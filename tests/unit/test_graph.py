"""The whole graph with a scripted LLM and the real evaluator, store, checkpointer and trace on `digits`."""
import json

import pytest

from nasgraph.config import load_config
from nasgraph.graph.run import RunPaths, run_loop
from nasgraph.graph.trace import read_events
from nasgraph.tools.store import Store
from tests import candidates as C
from tests.fakes import CUT, FakeHandle, ScriptedChatModel


@pytest.fixture()
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("NASGRAPH_HOME", str(tmp_path))
    return load_config(home=tmp_path, evaluator={"threads": 1, "time_budget_s": 60, "batch_size": 32},
                       loop={"dataset": "digits", "iterations": 4, "max_repairs": 1, "max_fixes": 0, "epochs": 2,
                             "prm": {"lr": 0.1}, "search": "improver"})  # the scripts follow the improver path


def test_routes_duplicates_repairs_and_failures(cfg):
    llm = ScriptedChatModel(
        improver=[C.TRIPLE] * 4,
        generator=[C.fenced(C.VALID),                 # 1: ok at first try
                   C.fenced(C.VALID_DUPLICATE),       # 2: duplicate, never trained
                   C.fenced(C.BUILD_ERROR),           # 3: build error ...
                   C.fenced(C.wide(12)),              #    ... repaired
                   C.fenced(C.FORBIDDEN),             # 4: forbidden ...
                   C.fenced(C.FORBIDDEN)])            #    ... repair fails too
    summary = run_loop(cfg, FakeHandle(llm), run_id="r1")

    assert summary["iterations"] == 4
    assert summary["duplicates"] == 1
    assert summary["failures"] == {"duplicate": 1, "forbidden": 1}
    # 3 fresh iterations: 1 valid at first try, 2 valid after repair
    assert summary["valid_first_attempt"] == pytest.approx(1 / 3, abs=1e-3)
    assert summary["valid_after_repair"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["best_accuracy"] > 0.3  # trained for real on digits: well above 10% chance
    assert summary["stop_reason"] == "iterations"
    assert llm.calls.count("generator") == 6 and llm.calls.count("improver") == 4

    store = Store(cfg.store_path)
    evals = store.evaluations_for_run("r1")
    store.close()
    # trained: VALID (it 1), BUILD_ERROR and its repair (it 3); the duplicate and forbidden code never ran
    assert sorted((e.iteration, e.status) for e in evals) == [(1, "ok"), (3, "build_error"), (3, "ok")]

    events = list(read_events(RunPaths(cfg.runs_dir / "r1").trace))
    records = [e for e in events if e["node"] == "record"]
    assert [e["iteration"] for e in records] == [1, 2, 3, 4]
    assert [e["status"] for e in records] == ["ok", "duplicate", "ok", "forbidden"]
    assert [e["step"] for e in events] == list(range(len(events)))
    gen = next(e for e in events if e["node"] == "generate")
    assert gen["prompt"] and gen["prompt_sha"] and gen["tokens_in"] > 0 and gen["code_hash"]


def test_history_window_feeds_failures_back(cfg):
    llm = ScriptedChatModel(improver=[C.TRIPLE] * 2, generator=[C.fenced(C.FORBIDDEN)] * 4)
    run_loop(cfg, FakeHandle(llm), run_id="r2", iterations=2)
    events = list(read_events(RunPaths(cfg.runs_dir / "r2").trace))
    improver_prompts = [e for e in events if e["node"] == "improve"]
    assert len(improver_prompts) == 2


def test_finished_run_extends_when_asked_for_more(cfg):
    llm = ScriptedChatModel(improver=[], generator=[C.fenced(C.wide(c)) for c in (4, 5, 6)])
    assert run_loop(cfg, FakeHandle(llm), run_id="r3", iterations=2)["iterations"] == 2
    again = run_loop(cfg, FakeHandle(llm), run_id="r3")
    assert again["iterations"] == 2  # nothing more asked: nothing more done
    more = run_loop(cfg, FakeHandle(llm), run_id="r3", iterations=3)
    assert more["iterations"] == 3
    meta = json.loads(RunPaths(cfg.runs_dir / "r3").meta.read_text())
    assert meta["run_id"] == "r3"


def test_regression_prose_only_reply_is_repaired_not_a_duplicate(cfg):
    # Seen from the 1.5B model: a repair reply with only a design comment extracted to empty code,
    # which then counted as a "duplicate" of the empty module on every later occurrence.
    prose = "# Design: a few convolutions with batch norm and dropout."
    llm = ScriptedChatModel(improver=[C.TRIPLE] * 2,
                            generator=[prose, C.fenced(C.wide(6)), prose, prose])
    summary = run_loop(cfg, FakeHandle(llm), run_id="r4", iterations=2)
    assert summary["duplicates"] == 0
    assert summary["failures"] == {"build_error": 1}
    events = list(read_events(RunPaths(cfg.runs_dir / "r4").trace))
    assert [e["status"] for e in events if e["node"] == "record"] == ["ok", "build_error"]
    assert not any(e["node"] == "fingerprint" and e["code_hash"] == "e3b0c44298fc1c14" for e in events)


def test_a_reply_cut_at_the_token_limit_is_asked_again_shorter(cfg):
    # Seen from the 1.5B model: a reply cut at the token limit, repaired from its unfinished code, was
    # written out as long again and cut again.
    reply = C.fenced(C.VALID)
    llm = ScriptedChatModel(improver=[C.TRIPLE], generator=[CUT + reply[: len(reply) * 2 // 3], C.fenced(C.wide(6))])
    summary = run_loop(cfg, FakeHandle(llm), run_id="r-cut", iterations=1)
    assert summary["valid_after_repair"] == 1.0
    events = list(read_events(RunPaths(cfg.runs_dir / "r-cut").trace))
    gen = next(e for e in events if e["node"] == "generate")
    again = next(e for e in events if e["node"] == "repair")
    assert gen["cut"] is True and again["cut"] is False
    assert again["prompt"] == "code_generator.shorten" and again["mode"] == "shorten"
    assert "cut off at the length limit" in again["prompt_text"] and "class Net" not in again["prompt_text"]


def test_a_redraft_is_told_the_error_and_not_shown_the_failed_code(cfg):
    llm = ScriptedChatModel(improver=[C.TRIPLE], generator=[C.fenced(C.BUILD_ERROR), C.fenced(C.wide(6))])
    summary = run_loop(cfg, FakeHandle(llm), run_id="r-redraft", iterations=1)
    assert summary["valid_after_repair"] == 1.0
    events = list(read_events(RunPaths(cfg.runs_dir / "r-redraft").trace))
    again = next(e for e in events if e["node"] == "repair")
    assert again["mode"] == "redraft" and again["prompt"] == "code_generator.user"
    assert "The last draft of this design failed (build_error: " in again["prompt_text"]
    assert "class Net" not in again["prompt_text"]


def test_regression_repair_echoing_failed_code_is_repaired_again_not_a_duplicate(cfg):
    # Seen from the 1.5B model: a repair returned its failing input unchanged; the cache then called
    # it a "duplicate" and the iteration ended without a second try.
    cfg.loop.max_repairs, cfg.loop.repair = 2, "edit"
    handle = FakeHandle(ScriptedChatModel(
        improver=[C.TRIPLE] * 2,
        generator=[C.fenced(C.BUILD_ERROR), C.fenced(C.BUILD_ERROR), C.fenced(C.wide(7)),   # 1: fixed at last
                   C.fenced(C.BUILD_ERROR), C.fenced(C.BUILD_ERROR), C.fenced(C.BUILD_ERROR)]))  # 2: never fixed
    summary = run_loop(cfg, handle, run_id="r5", iterations=2)
    assert summary["duplicates"] == 0
    assert summary["failures"] == {"build_error": 1}
    events = list(read_events(RunPaths(cfg.runs_dir / "r5").trace))
    assert [e["status"] for e in events if e["node"] == "record"] == ["ok", "build_error"]
    assert [e["status"] for e in events if e["node"] == "fingerprint"] == ["new", "repeat", "new"] + ["repeat"] * 3
    repairs = [e for e in events if e["node"] == "repair"]
    assert len(repairs) == 4
    assert all(e["temperature"] > cfg.llm.temperature for e in repairs if "UNCHANGED" in e["prompt_text"])
    assert sum("UNCHANGED" in e["prompt_text"] for e in repairs) == 3
    store = Store(cfg.store_path)
    # each distinct module trained once: the repeats never reached the evaluator again
    assert sorted(e.status for e in store.evaluations_for_run("r5")) == ["build_error", "ok"]
    store.close()


def test_each_draft_gets_its_own_rule_fixes(cfg):
    # Seen in fm15-m: the first draft spent the iteration's fixes, and the redrafts, which needed a rule
    # fix as much, failed on errors a rule knew.
    cfg.loop.max_repairs, cfg.loop.max_fixes = 1, 1
    wrong = C.VALID.replace("nn.Linear(64, out_shape[0])", "nn.Linear(16 * 7 * 7, out_shape[0])")
    both = C.BUILD_ERROR.replace("nn.Linear(64, out_shape[0])", "nn.Linear(16 * 7 * 7, out_shape[0])")
    llm = ScriptedChatModel(improver=[C.TRIPLE], generator=[C.fenced(both), C.fenced(wrong)])
    summary = run_loop(cfg, FakeHandle(llm), run_id="r-fixes", iterations=1)
    assert summary["valid_after_repair"] == 1.0 and summary["rule_fixes"] == 2
    events = list(read_events(RunPaths(cfg.runs_dir / "r-fixes").trace))
    assert [e["node"] for e in events if e["node"] in ("generate", "fix", "repair")] == ["generate", "fix", "repair", "fix"]


def test_time_budget_counts_the_seconds_before_a_resume(cfg):
    llm = ScriptedChatModel(improver=[], generator=[C.fenced(C.wide(c)) for c in range(4, 12)])
    first = run_loop(cfg, FakeHandle(llm), run_id="r6", iterations=3)
    spent = sum(first["seconds"].values())
    cfg.loop.time_budget_s = spent * 0.5  # already spent before the resume: one more iteration, then stop
    again = run_loop(cfg, FakeHandle(llm), run_id="r6", iterations=10)
    assert again["iterations"] == 4 and again["stop_reason"] == "time_budget"


def test_rule_fix_repairs_a_wrong_flatten_size_without_an_llm_call(cfg):
    cfg.loop.max_repairs = 0  # only the rule-based fix can save this iteration
    cfg.loop.max_fixes = 3
    wrong = C.VALID.replace("nn.Linear(64, out_shape[0])", "nn.Linear(16 * 7 * 7, out_shape[0])")
    llm = ScriptedChatModel(improver=[C.TRIPLE], generator=[C.fenced(wrong)])
    summary = run_loop(cfg, FakeHandle(llm), run_id="r7", iterations=1)
    assert summary["valid_after_repair"] == 1.0 and summary["valid_first_attempt"] == 0.0
    assert summary["rule_fixes"] == 1
    assert llm.calls.count("generator") == 1  # no LLM repair was asked for
    events = list(read_events(RunPaths(cfg.runs_dir / "r7").trace))
    fix = next(e for e in events if e["node"] == "fix")
    assert fix["rule"] == "lazy_input_size" and "nn.LazyLinear(out_shape[0])" in fix["code"]
    assert [e["node"] for e in events].count("evaluate") == 2
    # its novelty is against earlier designs (none in this store), not against its own unfixed draft
    assert [e["novelty"] for e in events if e["node"] == "fingerprint"] == [1.0, 1.0]


def test_the_same_network_in_other_code_is_told_to_the_improver_and_not_novel(cfg):
    # Seen from the 1.5B model: one network rebuilt with other attribute names, iteration after iteration.
    renamed = C.VALID.replace("self.conv", "self.stem").replace("self.bn", "self.norm").replace("self.fc", "self.head")
    llm = ScriptedChatModel(improver=[C.TRIPLE] * 3, generator=[C.fenced(C.VALID), C.fenced(renamed), C.fenced(C.wide(5))])
    summary = run_loop(cfg, FakeHandle(llm), run_id="r8", iterations=3)
    events = list(read_events(RunPaths(cfg.runs_dir / "r8").trace))
    assert [e["same_as"] for e in events if e["node"] == "record"] == [None, 1, None]
    assert summary["near_copies"] == 1
    third = [e for e in events if e["node"] == "improve"][2]
    assert "SAME NETWORK AS #1" in third["prompt_text"] and "repeated an earlier design" in third["prompt_text"]


def test_rule_fixes_are_off_at_zero(cfg):
    cfg.loop.max_repairs, cfg.loop.max_fixes = 0, 0
    wrong = C.VALID.replace("nn.Linear(64, out_shape[0])", "nn.Linear(16 * 7 * 7, out_shape[0])")
    llm = ScriptedChatModel(improver=[C.TRIPLE], generator=[C.fenced(wrong)])
    summary = run_loop(cfg, FakeHandle(llm), run_id="r8", iterations=1)
    assert summary["valid_after_repair"] == 0.0 and summary["rule_fixes"] == 0


def test_cascade_stops_designs_behind_the_top_at_the_screen(cfg):
    # top 1 and a bar above any accuracy (margin -1): once one design carries a screen accuracy, every
    # later one is stopped at the screen; a valid design all the same, with the seconds it saved.
    cfg = cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"cascade": True, "cascade_top": 1,
                                                                     "cascade_margin": -1.0, "epochs": 1})})
    llm = ScriptedChatModel(improver=[C.TRIPLE] * 3, generator=[C.fenced(C.wide(w)) for w in (8, 9, 10)])
    summary = run_loop(cfg, FakeHandle(llm), run_id="rc", iterations=3)
    with Store(cfg.store_path) as store:
        evals = store.evaluations_for_run("rc")
    assert [e.status for e in evals] == ["ok", "screened", "screened"]
    first = evals[0].detail["screen"]
    assert first["fraction"] == cfg.evaluator.screen_fraction and 0 <= first["accuracy"] <= 1
    assert first["min_accuracy"] is None  # no yardstick yet: measured, never cut
    cut = evals[1].detail["screen"]
    assert cut["min_accuracy"] == pytest.approx(min(1.0, first["accuracy"] + 1.0)) and evals[1].accuracy is None
    assert summary["valid_after_repair"] == 1.0 and summary["screened"] == 2
    assert summary["mean_accuracy"] == pytest.approx(evals[0].accuracy, abs=1e-4)  # over designs trained to the end
    assert summary["screen_saved_s"] > 0
    records = [e for e in read_events(RunPaths(cfg.runs_dir / "rc").trace) if e["node"] == "record"]
    assert [e["status"] for e in records] == ["ok", "screened", "screened"]
