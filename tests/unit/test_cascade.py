"""The cascade's bar and its replay over a run trained without it (pure functions)."""
from types import SimpleNamespace

import pytest

from nasgraph.tools.cascade import Screened, replay, screen_bar, screened_designs


def test_bar_is_the_lowest_screen_accuracy_of_the_top_less_the_margin():
    designs = [Screened(0.90, 0.70), Screened(0.85, 0.60), Screened(0.80, 0.75), Screened(0.50, 0.20)]
    assert screen_bar(designs, top=3, margin=0.05) == pytest.approx(0.55)
    assert screen_bar(designs, top=1, margin=0.0) == pytest.approx(0.70)
    assert screen_bar(designs[:2], top=3, margin=0.05) is None  # no yardstick yet
    assert screen_bar(designs, top=1, margin=-1.0) == 1.0 and screen_bar(designs, top=4, margin=0.5) == 0.0


def test_only_fully_trained_designs_screened_at_the_same_point_count():
    def rec(status, acc, screen):
        return SimpleNamespace(status=status, accuracy=acc, detail={"screen": screen})

    records = [rec("ok", 0.9, {"fraction": 0.1, "accuracy": 0.7}), rec("ok", 0.8, {"fraction": 0.2, "accuracy": 0.6}),
               rec("screened", None, {"fraction": 0.1, "accuracy": 0.1}), rec("ok", 0.7, None),
               SimpleNamespace(status="ok", accuracy=0.6, detail={})]
    assert screened_designs(records, 0.1) == [Screened(0.9, 0.7)]


def test_replay_counts_savings_and_reports_a_cut_top_design():
    run = [(Screened(0.80, 0.60), 10.0, 1.0), (Screened(0.85, 0.65), 10.0, 1.0),
           (Screened(0.40, 0.30), 20.0, 2.0),   # far behind at the screen: cut, 18 s saved
           (Screened(0.90, 0.50), 10.0, 1.0)]   # a slow starter that ends best: cut too with a tight margin
    loose = replay(run, top=2, margin=0.15, keep=3)
    assert (loose.trained, loose.cut, loose.saved_s, loose.top_cut) == (4, 1, 18.0, [])
    tight = replay(run, top=2, margin=0.0)
    assert tight.cut == 2 and tight.saved_s == 27.0 and tight.top_cut == [1, 4]
    assert replay(run, top=2, margin=0.0, keep=2).top_cut == [1]
