"""The search's archive: a run's valid designs placed in niches, and the choice of the next parent.

Niches are a MAP-Elites grid over model size: log2 bins of parameters × log2 bins of FLOPs per
sample. Each niche keeps its elite (the most accurate design in it). A parent is drawn among the
elites with a weight that rises with accuracy (a sigmoid of the accuracy's distance from the elites'
median, in units of their spread) and falls with the children it already had, 1 / (1 + children):
good designs are built on, and none is built on forever (the weighting ShinkaEvolve describes).
A configured share of iterations draws no parent (a fresh design), so new regions keep being tried.
Diversity is reported as niches filled, never enforced as a ban on similar code.
"""
from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass

PARAM_BASE, FLOP_BASE = 1_000, 100_000  # the first bin's upper edge; each bin doubles
BINS = 12                               # per axis: 1k .. 4M parameters, 100k .. 400M FLOPs
SHARPNESS = 4.0                         # how strongly accuracy above the median pulls (sigmoid slope)


@dataclass(frozen=True)
class Design:
    arch_id: str
    accuracy: float
    params: int
    flops: int
    iteration: int


@dataclass(frozen=True)
class Elite:
    design: Design
    niche: tuple[int, int]
    children: int


def _bin(value: int, base: int) -> int:
    return 0 if value <= base else min(BINS - 1, int(math.log2(value / base)) + 1)


def niche(params: int, flops: int) -> tuple[int, int]:
    return _bin(params, PARAM_BASE), _bin(flops, FLOP_BASE)


def elites(designs: list[Design], children: Counter[str] | None = None) -> list[Elite]:
    """The best design of each niche (earliest on ties), with how many children it had."""
    children = children or Counter()
    best: dict[tuple[int, int], Design] = {}
    for d in designs:
        n = niche(d.params, d.flops)
        if n not in best or d.accuracy > best[n].accuracy:
            best[n] = d
    return [Elite(d, n, children[d.arch_id]) for n, d in sorted(best.items())]


def weights(pool: list[Elite]) -> list[float]:
    accs = [e.design.accuracy for e in pool]
    median = statistics.median(accs)
    spread = statistics.median(abs(a - median) for a in accs) or 0.01  # MAD; a floor for a tight archive
    return [1 / (1 + math.exp(-SHARPNESS * (e.design.accuracy - median) / spread)) / (1 + e.children) for e in pool]


def pick_parent(designs: list[Design], children: Counter[str], rng: random.Random,
                fresh_share: float) -> Elite | None:
    """The parent of the next design, or None for a fresh one (empty archive, or the fresh share)."""
    pool = elites(designs, children)
    if not pool or rng.random() < fresh_share:
        return None
    return rng.choices(pool, weights=weights(pool), k=1)[0]
