"""The cascade's bar: how accurate a new design must be at the screen to be trained to the end.

Every fully trained design of a run carries its screen accuracy (the harness measures it part-way
through the first epoch, see evaluator.harness.Screen). A new design may enter the run's top part
only if, at the screen, it is about as good as the top designs were there: the bar is the lowest
screen accuracy among the `top` most accurate designs, less a `margin`. Until `top` designs carry a
screen accuracy there is no bar, so nothing is cut while the run has no yardstick.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Screened:
    """A fully trained design: its final accuracy and the accuracy the screen saw."""
    accuracy: float
    screen_accuracy: float


def screen_bar(designs: list[Screened], top: int, margin: float) -> float | None:
    """The bar at the screen, or None while fewer than `top` designs carry a screen accuracy."""
    if top < 1 or len(designs) < top:
        return None
    best = sorted(designs, key=lambda d: -d.accuracy)[:top]
    return min(1.0, max(0.0, min(d.screen_accuracy for d in best) - margin))


def trained_screen(record, fraction: float | None = None) -> dict | None:
    """The screen (`detail.screen`) of an evaluation (a store record) that trained to the end and was
    screened, at `fraction` of the epoch when given (a screen taken at another point is not comparable),
    else None. The one test the cascade, its replay and the early-stop predictor share."""
    screen = (record.detail or {}).get("screen") or {}
    if record.status != "ok" or record.accuracy is None or screen.get("accuracy") is None:
        return None
    return screen if fraction is None or screen.get("fraction") == fraction else None


def screened_designs(records, fraction: float) -> list[Screened]:
    """The fully trained designs among a run's evaluations screened at `fraction`."""
    return [Screened(r.accuracy, s["accuracy"]) for r in records if (s := trained_screen(r, fraction))]


@dataclass(frozen=True)
class Replay:
    """What the cascade would have done to a run trained without it."""
    trained: int            # designs trained to the end, with a screen accuracy
    cut: int                # of them, the ones the bar would have stopped at the screen
    train_s: float          # their training seconds in all
    saved_s: float          # seconds the cut designs would not have trained
    top_cut: list[int]      # ranks (1 = best) of the run's final top designs the bar would have cut


def replay(designs: list[tuple[Screened, float, float]], top: int, margin: float, keep: int = 5) -> Replay:
    """Replay the bar over (design, train seconds, seconds at the screen) in the order they were
    trained: each design meets the bar set by those before it. `keep`: how many of the final best
    designs must survive (the check that the cascade cuts no eventual top design)."""
    seen: list[Screened] = []
    cut_ids: set[int] = set()
    train_s = saved_s = 0.0
    for i, (d, seconds, at_screen) in enumerate(designs):
        train_s += seconds
        bar = screen_bar(seen, top, margin)
        if bar is not None and d.screen_accuracy < bar:
            cut_ids.add(i)
            saved_s += max(0.0, seconds - at_screen)
        else:
            seen.append(d)  # a cut design never joins the yardstick: the run would not have its accuracy
    ranked = sorted(range(len(designs)), key=lambda i: -designs[i][0].accuracy)
    top_cut = [rank + 1 for rank, i in enumerate(ranked[:keep]) if i in cut_ids]
    return Replay(len(designs), len(cut_ids), round(train_s, 1), round(saved_s, 1), top_cut)
