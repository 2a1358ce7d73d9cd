"""The search: the archive's niches and parent draw, the loop building on parents, and the
no-feedback baseline (the arm a search must beat)."""
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from nasgraph.agents.prompt_improver import MOVES, PARENT_MOVES
from nasgraph.config import load_config
from nasgraph.graph.run import RunPaths, run_loop
from nasgraph.graph.trace import read_events
from nasgraph.tools import archive
from nasgraph.tools.archive import Design
from tests import candidates as C
from tests.fakes import FakeHandle, ScriptedChatModel


def test_niches_are_log2_bins_of_parameters_and_flops():
    assert archive.niche(500, 50_000) == (0, 0)
    assert archive.niche(1_500, 150_000) == (1, 1)
    assert archive.niche(3_000, 100_000) == (2, 0)
    assert archive.niche(10**12, 10**15) == (archive.BINS - 1, archive.BINS - 1)


def test_each_niche_keeps_its_most_accurate_design():
    designs = [Design("a", 0.80, 2_000, 200_000, 1), Design("b", 0.85, 2_100, 210_000, 2),
               Design("c", 0.70, 900_000, 50_000_000, 3)]
    elites = archive.elites(designs, Counter({"b": 2}))
    assert [(e.design.arch_id, e.children) for e in elites] == [("b", 2), ("c", 0)]


def test_parents_favour_accuracy_and_spread_over_children():
    designs = [Design(f"d{i}", 0.60 + 0.03 * i, 1_000 * 2 ** i, 100_000 * 2 ** i, i) for i in range(10)]
    rng = random.Random(0)
    drawn = Counter(archive.pick_parent(designs, Counter(), rng, 0.0).design.arch_id for _ in range(2000))
    assert drawn["d9"] > drawn["d5"] > drawn["d0"]
    # the best design, already built on 20 times, is drawn less than a slightly worse one never used
    tired = Counter(archive.pick_parent(designs, Counter({"d9": 20}), rng, 0.0).design.arch_id for _ in range(2000))
    assert tired["d8"] > tired["d9"]


def test_a_chance_level_design_in_a_tight_archive_gets_no_weight_and_no_overflow():
    # A tight archive (MAD 0.0001) and one design at chance: the logistic's argument is about -3e4.
    designs = [Design(f"d{i}", 0.9 + 0.0001 * i, 1_000 * 2 ** i, 100_000 * 2 ** i, i) for i in range(5)]
    pool = archive.elites([*designs, Design("chance", 0.10, 2_000_000, 90_000_000, 6)])
    w = dict(zip((e.design.arch_id for e in pool), archive.weights(pool)))
    assert w["chance"] == 0.0 and w["d4"] > w["d2"] > w["d0"] > 0.0  # math.exp overflowed here
    assert archive.pick_parent([*designs, Design("chance", 0.10, 2_000_000, 90_000_000, 6)], Counter(),
                               random.Random(0), fresh_share=0.0).design.arch_id != "chance"


def test_fresh_share_and_empty_archive_draw_no_parent():
    rng = random.Random(1)
    assert archive.pick_parent([], Counter(), rng, 0.0) is None
    designs = [Design("a", 0.8, 2_000, 200_000, 1)]
    fresh = sum(archive.pick_parent(designs, Counter(), rng, 0.3) is None for _ in range(1000))
    assert 240 < fresh < 360


@pytest.fixture()
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("NASGRAPH_HOME", str(tmp_path))
    return load_config(home=tmp_path, evaluator={"threads": 1, "time_budget_s": 60, "batch_size": 32},
                       loop={"dataset": "digits", "max_repairs": 0, "max_fixes": 0, "prm": {"lr": 0.1}})


def test_parents_search_shows_the_parent_to_both_agents_and_counts_its_children(cfg):
    cfg.loop.search, cfg.loop.fresh_share, cfg.loop.population_init = "parents", 0.0, 1
    llm = ScriptedChatModel(improver=[C.TRIPLE] * 3, generator=[C.fenced(C.wide(c)) for c in (5, 6, 7)])
    run_loop(cfg, FakeHandle(llm), run_id="p1", iterations=3)
    events = list(read_events(RunPaths(cfg.runs_dir / "p1").trace))
    improves = [e for e in events if e["node"] == "improve"]
    gens = [e for e in events if e["node"] == "generate"]
    records = [e for e in events if e["node"] == "record"]
    assert improves[0]["parent"] is None  # an empty archive: the first design is fresh
    first = records[0]["code_hash"]
    assert improves[1]["parent"] == first and improves[1]["niches"] == 1
    assert "Parent to improve" in improves[1]["prompt_text"] and "of the FLOP budget" in improves[1]["prompt_text"]
    # A parent is offered edits that keep its design, not the fresh designs' family moves...
    assert PARENT_MOVES[0] in improves[1]["prompt_text"] and MOVES[1] not in improves[1]["prompt_text"]
    # ...and the improver reads each change's effect against its parent.
    assert records[1]["status"] == "ok" and "vs its parent)" in improves[2]["prompt_text"]
    assert gens[1]["prompt"] == "code_generator.child_edit" and "nn.Conv2d(in_shape[1], 5" in gens[1]["prompt_text"]
    assert gens[0]["prompt"] == "code_generator.user"
    assert [r["parent"] for r in records] == [None, first, improves[2]["parent"]]
    assert improves[2]["parent"] in {r["code_hash"] for r in records[:2]}


def test_independent_search_is_the_no_feedback_baseline(cfg):
    cfg.loop.search = "independent"
    llm = ScriptedChatModel(improver=[], generator=[C.fenced(C.wide(c)) for c in (5, 6, 7)])
    summary = run_loop(cfg, FakeHandle(llm), run_id="b1", iterations=3)
    assert summary["iterations"] == 3 and llm.calls.count("improver") == 0
    events = list(read_events(RunPaths(cfg.runs_dir / "b1").trace))
    gens = [e for e in events if e["node"] == "generate"]
    assert len({g["prompt_text"] for g in gens}) == 1  # the same prompt every time: no history, no best
    assert "(none yet)" in gens[-1]["prompt_text"] and "Best design so far" not in gens[-1]["prompt_text"]


def test_the_front_keeps_every_trade_off_and_drops_what_is_beaten_on_all_three():
    designs = [Design("big", 0.90, 100_000, 1, 1, 2.0), Design("small", 0.80, 5_000, 1, 2, 0.3),
               Design("fast", 0.85, 50_000, 1, 3, 0.2), Design("beaten", 0.79, 6_000, 1, 4, 0.5),
               Design("same-as-small", 0.80, 5_000, 1, 5, 0.3)]
    assert [d.arch_id for d in archive.front(designs)] == ["big", "fast", "small"]
    rng = random.Random(0)
    drawn = Counter(archive.pick_parent(designs, Counter({"big": 3}), rng, 0.0, "pareto").design.arch_id
                    for _ in range(1200))
    assert set(drawn) == {"big", "fast", "small"} and drawn["fast"] > 2 * drawn["big"]  # 1/(1+children)


def test_pareto_objective_measures_latency_builds_on_the_front_and_reports_it(cfg, tmp_path):
    from nasgraph.report import build_report
    from nasgraph.trace_data import load_run

    cfg.loop.search, cfg.loop.fresh_share, cfg.loop.objective, cfg.loop.population_init = "parents", 0.0, "pareto", 1
    llm = ScriptedChatModel(improver=[C.TRIPLE] * 3, generator=[C.fenced(C.wide(c)) for c in (5, 12, 7)])
    summary = run_loop(cfg, FakeHandle(llm), run_id="pf", iterations=3)
    events = list(read_events(RunPaths(cfg.runs_dir / "pf").trace))
    evals = [e for e in events if e["node"] == "evaluate"]
    assert all(e["latency_ms"] > 0 for e in evals)
    front = summary["front"]
    assert front and all(d["latency_ms"] > 0 for d in front)
    assert {d["arch_id"] for d in front} <= {e["code_hash"] for e in evals}
    improves = [e for e in events if e["node"] == "improve"]
    assert "ms per image" in improves[1]["prompt_text"] and "Objective: the trade-off" in improves[1]["prompt_text"]
    page = build_report(load_run(cfg.runs_dir, "pf"), tmp_path / "rep", formats=("md",)).pages[0].read_text()
    assert "Pareto front: accuracy, parameters, batch-1 latency" in page and front[0]["arch_id"] in page


def test_a_child_that_echoes_its_parent_is_redrafted_not_recorded_as_a_duplicate(cfg):
    cfg.loop.search, cfg.loop.fresh_share, cfg.loop.max_repairs, cfg.loop.population_init = "parents", 0.0, 1, 1
    cfg.loop.child_format = "module"  # the child written whole
    llm = ScriptedChatModel(improver=[C.TRIPLE] * 2,
                            generator=[C.fenced(C.wide(5)), C.fenced(C.wide(5)),  # 2: the parent, unchanged ...
                                       C.fenced(C.wide(9))])                       # ... then the change
    summary = run_loop(cfg, FakeHandle(llm), run_id="echo", iterations=2)
    events = list(read_events(RunPaths(cfg.runs_dir / "echo").trace))
    fp = [e for e in events if e["node"] == "fingerprint"]
    repair = next(e for e in events if e["node"] == "repair")
    assert fp[1]["status"] == "duplicate" and repair["repairing"] == "duplicate"
    assert "UNCHANGED: this is the parent design itself" in repair["prompt_text"]
    assert repair["prompt"] == "code_generator.child" and "Write the complete new module" in repair["prompt_text"]
    assert [e["status"] for e in events if e["node"] == "record"] == ["ok", "ok"] and summary["duplicates"] == 0


def test_parents_search_starts_from_a_fresh_population_sampled_without_the_improver(cfg):
    cfg.loop.search, cfg.loop.fresh_share, cfg.loop.population_init = "parents", 0.0, 2
    llm = ScriptedChatModel(improver=[C.TRIPLE], generator=[C.fenced(C.wide(c)) for c in (5, 6, 7)])
    run_loop(cfg, FakeHandle(llm), run_id="pop", iterations=3)
    improves = [e for e in read_events(RunPaths(cfg.runs_dir / "pop").trace) if e["node"] == "improve"]
    assert [e.get("fresh") for e in improves] == [True, True, None] and llm.calls.count("improver") == 1
    assert improves[0]["triple"]["modification"].startswith("Design a sound, efficient")
    assert improves[2]["parent"] is not None


def test_a_child_written_as_edits_is_the_parent_with_the_edits_and_unmatched_edits_echo_the_parent(cfg):
    cfg.loop.search, cfg.loop.fresh_share, cfg.loop.population_init = "parents", 0.0, 1
    cfg.loop.child_format, cfg.loop.max_repairs = "edit", 1
    widen = ("<<<<<<< SEARCH\nself.c2 = nn.Conv2d(5, 5, 3, padding=1)\n=======\n"
             "self.c2 = nn.Conv2d(5, 5, 3, padding=1)\nself.c3 = nn.Conv2d(5, 5, 3, padding=1)\n>>>>>>> REPLACE\n"
             "<<<<<<< SEARCH\n        x = torch.relu(self.c2(torch.relu(self.c1(x))))\n=======\n"
             "        x = torch.relu(self.c3(torch.relu(self.c2(torch.relu(self.c1(x))))))\n>>>>>>> REPLACE")
    nowhere = "<<<<<<< SEARCH\nself.c9 = nn.Conv2d(5, 5, 3)\n=======\nself.c9 = nn.Conv2d(5, 8, 3)\n>>>>>>> REPLACE"
    llm = ScriptedChatModel(improver=[C.TRIPLE] * 2, generator=[C.fenced(C.wide(5)), widen, nowhere, C.fenced(C.wide(9))])
    run_loop(cfg, FakeHandle(llm), run_id="ed", iterations=3)
    events = list(read_events(RunPaths(cfg.runs_dir / "ed").trace))
    gens = [e for e in events if e["node"] in ("generate", "repair")]
    records = [e for e in events if e["node"] == "record"]
    assert gens[1]["prompt"] == "code_generator.child_edit" and gens[1]["edits"] == [2, 2]
    assert "self.c3 = nn.Conv2d(5, 5, 3, padding=1)" in gens[1]["code"] and "self.c3(torch.relu(self.c2(" in gens[1]["code"]
    assert records[1]["status"] == "ok" and records[1]["parent"] == records[0]["code_hash"]
    # Edits that match nothing leave the parent as it was: a parent echo, which gets a redraft, written
    # whole (redrafts as edits came back as the parent again).
    assert gens[2]["edits"] == [1, 0]
    fp = [e for e in events if e["node"] == "fingerprint" and e["iteration"] == 3]
    assert fp[0]["status"] == "duplicate" and gens[3]["node"] == "repair"
    assert gens[3]["prompt"] == "code_generator.child" and "edits" not in gens[3]
    assert records[2]["status"] == "ok"


def test_the_benchmark_scores_children_against_their_own_parents():
    from bench.search import lineage

    def rec(h, acc, parent=None, status="ok"):
        return {"node": "record", "code_hash": h, "accuracy": acc, "parent": parent, "status": status}
    events = [rec("a", 0.90), rec("b", 0.80), rec("c", 0.92, "a"), rec("d", 0.78, "b"), rec("e", None, "a", "shape_error"),
              rec("f", 0.70, "gone")]  # a parent not in this run's records is not scored
    lin = lineage(events)
    assert (lin["children"], lin["better"]) == (2, 1)
    assert lin["delta"][0] == pytest.approx(0.0)


def test_the_benchmark_splits_valid_designs_into_fresh_ones_and_children():
    from bench.search import origins

    events = [{"node": "record", "status": "ok", "accuracy": a, "parent": p}
              for a, p in [(0.90, None), (0.80, None), (0.92, "x"), (0.88, "x")]]
    events += [{"node": "record", "status": "shape_error", "accuracy": None, "parent": "x"},
               {"node": "evaluate", "status": "ok", "accuracy": 0.99, "parent": None}]  # only records count
    got = origins(events)
    assert (got["fresh"]["n"], got["fresh"]["best"], got["child"]["n"], got["child"]["best"]) == (2, 0.90, 2, 0.92)
    assert got["fresh"]["mean"][0] == pytest.approx(0.85) and got["child"]["mean"][0] == pytest.approx(0.90)


def test_the_benchmark_state_travels_to_a_fresh_root_and_never_overwrites_an_arm(tmp_path):
    from bench.search import restore, snapshot

    root, state = tmp_path / "root", tmp_path / "search-state.tgz"
    for arm, text in [("parents", "p"), ("independent", "i"), ("drawn", "d")]:
        (root / arm / "runs" / arm).mkdir(parents=True)
        (root / arm / "runs" / arm / "trace.jsonl").write_text(text)
    (root / "search.json").write_text("{}")  # the report is rebuilt, not saved
    snapshot(root, state, ["parents", "independent"])
    fresh = tmp_path / "fresh"
    assert restore(fresh, state)
    assert (fresh / "independent" / "runs" / "independent" / "trace.jsonl").read_text() == "i"
    # an arm not being advanced is saved too, so a run of one arm keeps the others in the state
    assert (fresh / "drawn" / "runs" / "drawn" / "trace.jsonl").read_text() == "d"
    assert not (fresh / "search.json").exists()
    (fresh / "parents" / "runs" / "parents" / "trace.jsonl").write_text("newer")
    assert not restore(fresh, state)  # an arm is here: the saved one never replaces it
    assert (fresh / "parents" / "runs" / "parents" / "trace.jsonl").read_text() == "newer"
    # arms saved by another process (own root, own state file) unpack beside them for one report
    other_root, other = tmp_path / "other", tmp_path / "other.tgz"
    (other_root / "improver" / "runs" / "improver").mkdir(parents=True)
    (other_root / "improver" / "runs" / "improver" / "trace.jsonl").write_text("m")
    snapshot(other_root, other, ["improver"])
    assert restore(fresh, other)
    assert (fresh / "improver" / "runs" / "improver" / "trace.jsonl").read_text() == "m"
    assert (fresh / "parents" / "runs" / "parents" / "trace.jsonl").read_text() == "newer"


# Children that change nothing, stopped before training and redrafted: a layer with weights forward never
# calls; a GELU built and never called plus a comment (no weights for the unused-layer check to see, and the
# code differs, so only the behaviour digest tells it is the parent).
DEAD = C.wide(5).replace("self.pool =", "self.c3 = nn.Conv2d(5, 5, 3, padding=1)\n        self.pool =")
INERT = C.wide(5).replace("self.pool =", "self.act = nn.GELU()  # smoother\n        self.pool =")


@pytest.mark.parametrize("child, kind, says", [(DEAD, "unused_layers", "never used by forward: c3"),
                                               (INERT, "same_as_parent", "computes exactly what its parent computes")],
                         ids=["unused-layer", "same-function"])
def test_a_child_that_changes_nothing_is_redrafted_before_training(cfg, child, kind, says):
    cfg.loop.search, cfg.loop.fresh_share, cfg.loop.max_repairs, cfg.loop.population_init = "parents", 0.0, 1, 1
    cfg.loop.child_format = "module"
    llm = ScriptedChatModel(improver=[C.TRIPLE], generator=[C.fenced(C.wide(5)), C.fenced(child), C.fenced(C.wide(9))])
    run_loop(cfg, FakeHandle(llm), run_id="same", iterations=2)
    events = list(read_events(RunPaths(cfg.runs_dir / "same").trace))
    evals = [e for e in events if e["node"] == "evaluate"]
    repair = next(e for e in events if e["node"] == "repair")
    assert evals[1]["status"] == "build_error" and evals[1]["diagnosis"] == kind and says in repair["prompt_text"]
    assert [e["status"] for e in events if e["node"] == "record"] == ["ok", "ok"]


def test_a_fresh_design_with_an_unused_layer_is_trained_and_its_children_may_keep_it(cfg):
    cfg.loop.search, cfg.loop.fresh_share, cfg.loop.population_init = "parents", 0.0, 1
    cfg.loop.child_format = "module"
    wider = DEAD.replace("(5,", "(6,").replace(", 5,", ", 6,").replace("4 * 5", "4 * 6")  # keeps c3 unused
    llm = ScriptedChatModel(improver=[C.TRIPLE], generator=[C.fenced(DEAD), C.fenced(wider)])
    run_loop(cfg, FakeHandle(llm), run_id="keep", iterations=2)
    records = [e for e in read_events(RunPaths(cfg.runs_dir / "keep").trace) if e["node"] == "record"]
    assert [r["status"] for r in records] == ["ok", "ok"] and records[1]["parent"] == records[0]["code_hash"]


def test_drawn_parent_moves_build_children_without_calling_the_improver(cfg):
    cfg.loop.search, cfg.loop.parent_move, cfg.loop.fresh_share, cfg.loop.population_init = "parents", "drawn", 0.0, 1
    llm = ScriptedChatModel(improver=[], generator=[C.fenced(C.wide(c)) for c in (5, 6, 7)])
    run_loop(cfg, FakeHandle(llm), run_id="drawn", iterations=3)
    assert llm.calls.count("improver") == 0
    events = list(read_events(RunPaths(cfg.runs_dir / "drawn").trace))
    improves = [e for e in events if e["node"] == "improve"]
    gens = [e for e in events if e["node"] == "generate"]
    records = [e for e in events if e["node"] == "record"]
    assert improves[1]["drawn"] and improves[1]["parent"] == records[0]["code_hash"]
    assert all(i["triple"]["modification"] in PARENT_MOVES for i in improves[1:])
    assert improves[1]["triple"]["modification"] in gens[1]["prompt_text"]
    assert gens[1]["prompt"] == "code_generator.child_edit" and "nn.Conv2d(in_shape[1], 5" in gens[1]["prompt_text"]
    assert [r["status"] for r in records] == ["ok", "ok", "ok"]


def test_the_benchmark_says_when_a_difference_is_inside_the_noise():
    from bench.search import difference

    m, lo, hi = difference([0.90, 0.91, 0.89, 0.92], [0.80, 0.82, 0.78, 0.81])
    assert m == pytest.approx(0.1025) and 0 < lo < m < hi
    m, lo, hi = difference([0.90, 0.80, 0.85], [0.86, 0.84, 0.83])
    assert lo < 0 < hi  # spread wider than the gap
    assert difference([0.9], [0.8, 0.7]) == (None, None, None)


def test_plateau_variants_apply_to_the_committed_best_designs(tmp_path):
    from bench.plateau import BASES, VARIANTS, apply, base_design
    from bench.search import _config, restore

    docs = Path(__file__).resolve().parents[2] / "docs" / "bench"
    for state in ("search-state-parents.tgz", "search-state-drawn-independent.tgz"):
        assert restore(tmp_path, docs / state)
    args = SimpleNamespace(model="qwen2.5-coder-1.5b", llm_threads=2, threads=2, dataset="fashion-mnist")
    for arm, variants in VARIANTS.items():
        accuracy, prm, code = base_design(_config(tmp_path, arm, args), arm)
        assert accuracy > 0.92 - 0.005 and prm["lr"] > 0, (arm, BASES[arm])
        for name, _, subs, _ in variants:
            variant = apply(code, subs)
            assert variant != code, name
            compile(variant, name, "exec")
    with pytest.raises(ValueError, match="is not in the design"):
        apply("x = 1", [("y", "z")])
