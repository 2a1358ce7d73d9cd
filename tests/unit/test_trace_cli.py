"""`nasgraph trace` on a real small run (scripted LLM, real evaluator on digits): ls, show, filters,
search, export, tail, and following a trace while it is written."""
from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from nasgraph import cli, trace_cli
from nasgraph.config import load_config
from nasgraph.graph.run import RunPaths
from nasgraph.graph.trace import TraceWriter, read_events
from nasgraph.tools.store import Store
from nasgraph.trace_data import CHECKPOINT, META, TRACE, iteration_rows, load_run, matches, moving_rate, pareto_front
from tests.trace_run import RUN_ID, SEARCH_WORD, make_run


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("trace-home")
    make_run(home)
    return home


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # Rich wraps at 80 columns when not on a terminal


def nasgraph(capsys, home: Path, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["--home", str(home), *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def events(home: Path) -> list[dict]:
    return list(read_events(RunPaths(home / "runs" / RUN_ID).trace))


def test_file_names_match_graph_run(tmp_path):
    p = RunPaths(tmp_path)
    assert (p.trace.name, p.meta.name, p.checkpoint.name) == (TRACE, META, CHECKPOINT)


def test_rows_fold_each_iteration(home):
    d = load_run(home / "runs", RUN_ID)
    assert [r.status for r in d.rows] == ["ok", "shape_error", "ok", "duplicate", "ok"]
    assert d.rows[1].first_status == "shape_error" and d.rows[1].repairs == 1
    assert d.rows[1].attempts == ["shape_error", "shape_error"]
    assert SEARCH_WORD in d.rows[2].triple["modification"]
    assert "nn.Linear(5 * 7" in d.rows[1].code  # the final (repaired) code of the iteration
    # The trace agrees with the store on what was trained and how well.
    with Store(home / "store.sqlite") as store:
        ok = {e.arch_id: e.accuracy for e in store.evaluations_for_run(RUN_ID) if e.status == "ok"}
    assert {r.arch_id: r.accuracy for r in d.rows if r.ok} == ok
    assert d.best.accuracy == max(ok.values())
    assert d.valid_rate == pytest.approx(3 / 4)  # 4 new designs (the duplicate aside), 3 valid
    assert d.failures() == {"shape_error": 1, "duplicate": 1}


def test_ls(capsys, home):
    rc, out, _ = nasgraph(capsys, home, "trace", "ls", "--json")
    assert rc == 0
    [run] = json.loads(out)
    assert run["run_id"] == RUN_ID and run["iterations"] == 5 and run["dataset"] == "digits"
    assert run["valid_rate"] == pytest.approx(0.75) and run["best_accuracy"] > 0.3
    assert run["size_bytes"] == (home / "runs" / RUN_ID / TRACE).stat().st_size
    rc, out, _ = nasgraph(capsys, home, "trace", "ls")
    assert RUN_ID in out and "75%" in out and f"{100 * run['best_accuracy']:.2f}%" in out


# A run as a real one is named: a default run id, an adapter model, an image folder.
LONG_RUN, LONG_MODEL = "20260102-030405-beef", "qwen2.5-coder-1.5b-instruct+fm16-cycle3"


def _two_runs(home: Path, tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    shutil.copytree(home / "runs" / RUN_ID, runs / RUN_ID)
    shutil.copytree(home / "runs" / RUN_ID, runs / LONG_RUN)
    trace = runs / LONG_RUN / TRACE
    trace.write_text("".join(json.dumps({**e, "model": LONG_MODEL} if e.get("model") else e) + "\n"
                             for e in read_events(trace)))
    meta = json.loads((runs / LONG_RUN / META).read_text())
    meta["config"]["loop"]["dataset"] = "/home/someone/pictures/flowers@64"
    (runs / LONG_RUN / META).write_text(json.dumps(meta))
    return tmp_path


def _ls_at(home: Path, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    assert trace_cli.cmd_ls(argparse.Namespace(json=False), load_config(home=home), console) == 0
    return console.file.getvalue()


@pytest.mark.parametrize("width", [80, 100, 160])
def test_ls_is_readable_in_a_narrow_terminal(home, tmp_path, width):
    """Regression: at 80 columns most columns were cut to one letter. Run, iterations, best accuracy and
    valid rate are never cut; the rest are cut or dropped only when they do not fit."""
    out = _ls_at(_two_runs(home, tmp_path), width)
    lines = out.splitlines()
    assert max(len(ln) for ln in lines) <= width
    header = next(ln for ln in lines if "┃ run" in ln)
    heads = [h.strip() for h in header.strip("┃").split("┃")]
    best = f"{100 * load_run(home / 'runs', RUN_ID).best.accuracy:.2f}%"
    for run in (RUN_ID, LONG_RUN):
        row = next(ln for ln in lines if f"│ {run} " in ln)  # the whole id, in its own cell
        cells = dict(zip(heads, (c.strip() for c in row.strip("│").split("│"))))
        assert (cells["iters"], cells["best"], cells["valid"]) == ("5", best, "75%")
        assert "…" not in cells["run"] + cells["iters"] + cells["best"] + cells["valid"]
        assert not [c for c in cells.values() if c.endswith("…") and len(c) < 8]  # nothing cut to a letter or two
    if width == 160:  # wide: everything, in full
        assert heads == ["run", "dataset", "model", "iters", "size", "best", "valid", "stopped", "created"]
        assert LONG_MODEL in out and "flowers@64" in out and "iterations" in out and "…" not in out
    if width == 80:
        assert heads[:1] == ["run"] and {"iters", "best", "valid", "dataset"} <= set(heads) and "size" not in heads
        assert "flowers@64" in out  # the dataset's short name, never its folder's path


def test_show_iteration_is_readable(capsys, home):
    rc, out, _ = nasgraph(capsys, home, "trace", "show", RUN_ID, "--iter", "2")
    assert rc == 0
    for text in ("iteration 2 · improve", "prompt_improver.user", "fix the flatten size", "code_generator.user",
                 "code_generator.repair", "repairing", "shape_error", "mat1 and mat2 shapes", "class Net",
                 "tokens in", "stages"):
        assert text in out, text
    n = sum(1 for e in events(home) if e["iteration"] == 2)
    assert f"{n} of {len(events(home))} events" in out
    assert "iteration 3" not in out


def test_filter_by_status_and_node(capsys, home):
    rc, out, _ = nasgraph(capsys, home, "trace", "show", RUN_ID, "--status", "shape_error", "--node", "evaluate")
    assert rc == 0
    assert out.count("· evaluate ·") == 2 and "2 of" in out  # the first attempt and the failed repair
    rc, out, _ = nasgraph(capsys, home, "trace", "show", RUN_ID, "--status", "duplicate")
    assert "· fingerprint ·" in out and "· record ·" in out and "· evaluate ·" not in out


def test_search_by_text(capsys, home):
    rc, out, _ = nasgraph(capsys, home, "trace", "show", RUN_ID, "--grep", SEARCH_WORD.upper(), "--node", "improve")
    # first asked for in iteration 3 (later improver prompts may quote it from the history)
    assert rc == 0 and "iteration 3 · improve" in out
    assert "iteration 1 · improve" not in out and "iteration 2 · improve" not in out
    rc, out, _ = nasgraph(capsys, home, "trace", "search", "mat1 and mat2", "--node", "evaluate")
    assert rc == 0 and out.count(RUN_ID) == 2  # both attempts of iteration 2
    rc, out, _ = nasgraph(capsys, home, "trace", "search", "mat1 and mat2")
    assert "record" in out and "repair" in out  # the error was fed back to the repair prompt
    rc, out, _ = nasgraph(capsys, home, "trace", "search", "no such words anywhere")
    assert rc == 0 and "no event" in out


@pytest.mark.parametrize("args, words", [
    (("show", "nope"), ("no run 'nope'", "trace ls")),
    (("show", RUN_ID, "--status", "shape"), ("unknown status 'shape'", "shape_error")),
    (("show", RUN_ID, "--node", "gen"), ("no node 'gen'", "generate")),
    (("show", RUN_ID, "--iter", "9"), ("no iteration 9",)),
    (("export", RUN_ID, "--format", "pdf"), ("invalid choice",)),
])
def test_bad_input_gives_one_clear_line(capsys, home, args, words):
    try:
        rc, _, err = nasgraph(capsys, home, "trace", *args)
    except SystemExit as e:  # argparse's own usage errors
        rc, err = e.code, capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err
    for w in words:
        assert w in err


def test_run_prefix_and_last(capsys, home):
    rc, out, _ = nasgraph(capsys, home, "trace", "show", "trace-r", "--iter", "1", "--node", "record")
    assert rc == 0 and "· record ·" in out
    rc, out, _ = nasgraph(capsys, home, "trace", "tail", "last", "--no-follow", "-n", "1")
    assert rc == 0 and "record" in out and "stopped: iterations" in out


def test_export_jsonl_and_markdown(capsys, home, tmp_path):
    out_file = tmp_path / "x" / "shape.jsonl"
    rc, out, _ = nasgraph(capsys, home, "trace", "export", RUN_ID, "--status", "shape_error", "--out", str(out_file))
    assert rc == 0 and "wrote" in out
    exported = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert exported == [e for e in events(home) if matches(e, status="shape_error")] and exported
    rc, md, _ = nasgraph(capsys, home, "trace", "export", RUN_ID, "--format", "md", "--iter", "2")
    assert rc == 0
    assert md.startswith(f"# Trace of run {RUN_ID}") and "## Iteration 2" in md and "## Iteration 3" not in md
    assert "```python" in md and "- status: shape_error" in md and "mat1 and mat2" in md
    assert _blocks_closed(md)  # prompts quote fences of their own: each block's fence is longer


def _blocks_closed(md: str) -> bool:
    fence = None
    for line in md.splitlines():
        if fence is None and line.startswith("```"):
            fence = re.match(r"`+", line).group(0)
        elif fence is not None and line == fence:
            fence = None
    return fence is None


def test_tail_finished_run_prints_and_exits(capsys, home):
    rc, out, _ = nasgraph(capsys, home, "trace", "tail", RUN_ID, "-n", "3")
    lines = [ln for ln in out.splitlines() if ln.startswith("#")]
    assert rc == 0 and len(lines) == 3
    assert "fingerprint" in lines[0] or "evaluate" in lines[0] or "check" in lines[0]
    assert "[stopped: iterations]" in lines[-1] and "stopped: iterations" in out.splitlines()[-1]


def _live_run(runs: Path, run_id: str) -> TraceWriter:
    root = runs / run_id
    root.mkdir(parents=True)
    (root / CHECKPOINT).write_bytes(b"")
    return TraceWriter(root / TRACE)


def test_tail_follows_a_live_run_through_a_resume(capsys, tmp_path):
    """Events appear as written, a torn line waits for its end, a rewound trace (resume) re-shows the
    re-run steps, and the record that stops the run ends the tail."""
    writer = _live_run(tmp_path / "runs", "live")
    writer.emit(step=0, iteration=1, node="improve", triple={"modification": "first idea"})

    def write() -> None:
        time.sleep(0.3)
        writer.emit(step=1, iteration=1, node="evaluate", status="shape_error", error="mat1 and mat2")
        writer.emit(step=2, iteration=1, node="record", status="shape_error", error="mat1 and mat2")
        time.sleep(0.3)
        writer.truncate_from(2)  # a resume drops the orphan record ...
        time.sleep(0.3)
        line = json.dumps({"step": 2, "iteration": 1, "node": "record", "status": "ok", "accuracy": 0.5,
                           "stop_reason": "iterations"})
        with open(writer.path, "a") as f:  # ... and re-runs it, written in two pieces
            f.write(line[:20])
            f.flush()
            time.sleep(0.3)
            f.write(line[20:] + "\n")

    t = threading.Thread(target=write)
    t.start()
    rc, out, _ = nasgraph(capsys, tmp_path, "trace", "tail", "live", "--interval", "0.05")
    t.join()
    assert rc == 0
    assert out.index("first idea") < out.index("following") < out.index("mat1 and mat2")
    assert "rewound" in out
    assert "acc 50.00%" in out and out.rstrip().endswith("stopped: iterations")
    assert out.count("#   2") == 2  # the orphan record and its re-run


def test_pure_helpers():
    assert moving_rate([True, False, None, True], 2) == [1.0, 0.5, 0.0, 1.0]
    assert moving_rate([None, None], 3) == [None, None]
    pts = [(100, 0.5), (200, 0.4), (300, 0.7), (300, 0.6), (50, 0.3)]
    assert pareto_front(pts) == [(50, 0.3), (100, 0.5), (300, 0.7)]
    rows = iteration_rows([{"node": "improve", "triple": {"modification": "m"}, "seconds": 1},
                           {"node": "generate", "code": "X", "seconds": 2},
                           {"node": "check", "status": "syntax", "seconds": 0.5},
                           {"node": "record", "iteration": 1, "status": "syntax"},
                           {"node": "improve", "triple": {}}])  # iteration 2 still in flight
    assert len(rows) == 1 and rows[0].attempts == ["syntax"] and rows[0].seconds == 3.5 and rows[0].code == "X"


def test_an_iteration_recorded_twice_is_one_row_the_last_winning():
    # A record event that outlived its unsaved checkpoint, then the rerun of the same iteration.
    rows = iteration_rows([{"node": "record", "iteration": 1, "status": "ok", "accuracy": 0.5},
                           {"node": "record", "iteration": 2, "status": "runtime_error"},
                           {"node": "record", "iteration": 2, "status": "ok", "accuracy": 0.6},
                           {"node": "record", "iteration": 3, "status": "ok", "accuracy": 0.7}])
    assert [(r.iteration, r.status) for r in rows] == [(1, "ok"), (2, "ok"), (3, "ok")]
