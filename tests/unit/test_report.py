"""`nasgraph report` on a real small run: four valid PNGs whose plotted data match the run, and pages that
show them with the top designs."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from nasgraph import cli  # noqa: E402
from nasgraph.report import PLOTS, build_report, plot_accuracy, plot_failures, plot_pareto  # noqa: E402
from nasgraph.trace_data import CHECKPOINT, RunDigest, load_run  # noqa: E402
from tests.trace_run import RUN_ID, make_run  # noqa: E402


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("report-home")
    make_run(home)
    return home


@pytest.fixture(scope="module")
def digest(home) -> RunDigest:
    return load_run(home / "runs", RUN_ID)


def test_pngs_are_real_images_with_content(digest, tmp_path):
    files = build_report(digest, tmp_path, ("md", "html"))
    assert set(files.images) == set(PLOTS)
    for name, path in files.images.items():
        with Image.open(path) as img:
            img.verify()  # a valid PNG, not just a file with the name
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (700, 400)
            colours = img.convert("RGB").getcolors(maxcolors=1 << 16) or []
            assert len(colours) > 50, f"{name} looks blank"  # axes, text, lines and points were drawn


def test_plotted_data_match_the_run(digest):
    ok = [r for r in digest.rows if r.ok]
    fig, ax = plt.subplots()
    plot_accuracy(digest.rows, ax)
    best = next(ln for ln in ax.get_lines() if ln.get_label() == "best so far")
    ys = list(best.get_ydata())
    assert ys == sorted(ys) and ys[-1] == pytest.approx(100 * digest.best.accuracy)
    assert len(ax.collections[0].get_offsets()) == len(ok)
    plt.close(fig)

    fig, ax = plt.subplots()
    plot_pareto(digest.rows, ax)
    front = next(ln for ln in ax.get_lines() if ln.get_label() == "Pareto front")
    xs, ys = list(front.get_xdata()), list(front.get_ydata())
    assert xs == sorted(xs) and ys == sorted(ys)  # bigger models on the front are more accurate
    smallest = min(ok, key=lambda r: r.params)
    assert (smallest.params, pytest.approx(100 * smallest.accuracy)) == (xs[0], ys[0])
    plt.close(fig)

    fig, ax = plt.subplots()
    plot_failures(digest.rows, ax)
    heights = sum(p.get_height() for p in ax.patches)
    assert heights == 3  # two shape errors (first try and repair) and one duplicate
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["duplicate", "shape_error"]
    plt.close(fig)


def test_pages_show_plots_and_top_designs(digest, tmp_path):
    build_report(digest, tmp_path, ("md", "html"), top=2)
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for name in PLOTS:
        assert f"]({name}.png)" in md and f"src='{name}.png'" in page
    top = digest.top(2)
    assert len(top) == 2 and top[0].accuracy >= top[1].accuracy
    for r in top:
        assert f"`{r.arch_id}`" in md and r.arch_id in page
    assert md.count("```python") == 2 and "class Net" in md
    assert "<span" in page and "Net" in page  # highlighted code
    assert re.search(r"\| valid rate \| 75% of new designs \|", md)
    assert "shape_error 1" in md and "stopped by | iterations" in md


def test_cli_writes_into_the_run_folder(capsys, home):
    assert cli.main(["--home", str(home), "report", RUN_ID, "--format", "md"]) == 0
    out = capsys.readouterr().out
    folder = home / "runs" / RUN_ID / "report"
    assert str(folder / "report.md") in out and not (folder / "report.html").exists()
    assert all((folder / f"{n}.png").exists() for n in PLOTS)


@pytest.mark.parametrize("args, words", [(("nope",), ("no run 'nope'",)),
                                         ((RUN_ID, "--top", "0"), ("--top",))])
def test_bad_input(capsys, home, args, words):
    assert cli.main(["--home", str(home), "report", *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words)


def test_empty_run_still_reports(tmp_path):
    root = tmp_path / "runs" / "empty"
    root.mkdir(parents=True)
    (root / CHECKPOINT).write_bytes(b"")
    files = build_report(load_run(tmp_path / "runs", "empty"), tmp_path / "out", ("md",))
    assert len(files.images) == 4 and "No valid design yet." in files.pages[0].read_text()


def _train(store, arch_id: str, dataset: str, proxy, final: list[float]) -> None:
    """A finished 3-epoch final training as `nasgraph train` records it (the training itself is tested
    in test_train_export)."""
    from nasgraph.tools.evaluator.outcome import Outcome

    t = store.start_training(arch_id, dataset, len(final), proxy.prm, checkpoint="/nowhere.pt", proxy=proxy)
    store.finish_training(t.id, Outcome(status="ok", stage="test", accuracy=final[-1], params=proxy.params,
                                        flops=proxy.flops, detail={"latency_ms": {"pytorch": {"1": 0.25, "64": 2.5}}},
                                        epochs=[{"epoch": i, "accuracy": a} for i, a in enumerate(final)]), hardware={})


def test_report_shows_the_winners_final_training(home, tmp_path, capsys):
    import shutil

    from nasgraph.tools.store import Store

    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    with Store(copy / "store.sqlite") as store:
        evals = [e for e in store.evaluations_for_run(RUN_ID) if e.status == "ok"]
        ranked = sorted(evals, key=lambda e: -e.accuracy)
        finals = [0.97, 0.95, 0.99][: len(ranked)]
        for e, final in zip(ranked, finals):
            _train(store, e.arch_id, e.dataset, e, [final - 0.1, final - 0.05, final])
        code = store.code(ranked[0].arch_id)
    out = tmp_path / "rep"
    assert cli.main(["--home", str(copy), "report", RUN_ID, "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    winners = md[md.index("## Winners: final training for 3 epochs"):md.index("## Accuracy over iterations")]
    rows = [ln for ln in winners.splitlines() if ln.startswith("| 1 |") or ln.startswith("| 2 |")]
    assert f"`{ranked[2].arch_id}`" in rows[0] and "99.00%" in rows[0] and "0.25 / 2.50" in rows[0]  # best final first
    assert "Rank correlation (Spearman) between the 1-epoch proxy and the 3-epoch accuracy: -0.50 over 3" in winners
    assert code.strip() in winners
    assert "final.png" in md and "Winners: final training" in (out / "report.html").read_text()
    with Image.open(out / "final.png") as img:
        img.verify()


def test_a_run_known_only_to_the_store_gets_a_report(tmp_path, capsys):
    from nasgraph.tools.candidate import Candidate
    from nasgraph.tools.evaluator.outcome import Outcome
    from nasgraph.tools.store import Store
    from tests.candidates import VALID

    with Store(tmp_path / "store.sqlite") as store:  # as `nasgraph eval FILES --run-id files` leaves it
        for width, acc in ((8, 0.6), (16, 0.8)):
            code = VALID.replace("16", str(width))
            store.evaluate_cached(Candidate.of(code), "digits", 1, {}, lambda acc=acc, width=width: Outcome(
                status="ok", stage="test", accuracy=acc, params=100 * width, flops=1000), origin="file",
                hardware={}, run_id="files")
        best = store.run_candidates("files")[-1]
        _train(store, best.arch_id, "digits", best, [0.85, 0.9, 0.93])
    assert cli.main(["--home", str(tmp_path), "report", "files", "--format", "md"]) == 0
    md = (tmp_path / "runs" / "files" / "report" / "report.md").read_text()
    assert "| iterations | 2 |" in md and "files evaluated with --run-id" in md and "93.00%" in md
    assert "not defined (fewer than 3 designs" in md
