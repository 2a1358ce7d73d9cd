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
