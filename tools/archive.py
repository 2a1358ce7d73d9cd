"""The search's archive: a run's valid designs placed in niches, and the choice of the next parent.

Niches are a MAP-Elites grid over model size: log2 bins of parameters × log2 bins of FLOPs per
sample. Each niche keeps its elite (the most accurate design in it). A parent is drawn among the
elites with a weight that rises with accuracy (a sigmoid of the accuracy's distance from the elites'
median, in units of their spread) and falls with the children it already had, 1 / (1 + children):
good designs are built on, and none is built on forever (the weighting ShinkaEvolve describes).
A configured share of iterations draws no parent (a fresh design), so new regions keep being tried.
Diversity is reported as niches filled, never enforced as a ban on similar code.

With the `pareto` objective the pool is the run's Pareto front over accuracy, parameters and batch-1
latency (no other design is at least as accurate, as small and as fast, and better in one), each
member weighted 1 / (1 + children) alone: every trade-off on the front is worth building on.
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
    latency_ms: float | None = None  # batch-1 forward time, measured when the objective is pareto
    unused: tuple[str, ...] = ()     # layers its forward never uses: its children may keep them, not add more
    behaviour: str | None = None     # digest of what it computes (inert.behaviour): a child must differ


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
    # The logistic as tanh: exp() overflowed on a chance-level design in a tight archive (0.10 among 0.90s).
    return [0.5 * (1 + math.tanh(SHARPNESS * (e.design.accuracy - median) / spread / 2)) / (1 + e.children)
            for e in pool]


def _dominates(a: Design, b: Design) -> bool:
    lat_a, lat_b = a.latency_ms or 0.0, b.latency_ms or 0.0  # unmeasured: that axis does not decide
    no_worse = a.accuracy >= b.accuracy and a.params <= b.params and lat_a <= lat_b
    return no_worse and (a.accuracy > b.accuracy or a.params < b.params or lat_a < lat_b)


def front(designs: list[Design]) -> list[Design]:
    """The Pareto front over accuracy (up), parameters and latency (down), most accurate first; of
    equal designs the earliest stays."""
    out = [d for d in designs if not any(_dominates(o, d) for o in designs)]
    unique: dict[tuple, Design] = {}
    for d in sorted(out, key=lambda d: d.iteration):
        unique.setdefault((d.accuracy, d.params, d.latency_ms), d)
    return sorted(unique.values(), key=lambda d: (-d.accuracy, d.params))


def pick_parent(designs: list[Design], children: Counter[str], rng: random.Random,
                fresh_share: float, objective: str = "accuracy", min_archive: int = 0) -> Elite | None:
    """The parent of the next design, or None for a fresh one (an archive smaller than `min_archive`,
    the initial population, or the fresh share)."""
    if len(designs) < min_archive:
        return None
    if objective == "pareto":  # every design on the front is as good as any other: only use spreads them
        pool = [Elite(d, niche(d.params, d.flops), children[d.arch_id]) for d in front(designs)]
        pool_weights = [1 / (1 + e.children) for e in pool]
    else:
        pool = elites(designs, children)
        pool_weights = weights(pool) if pool else []
    if not pool or rng.random() < fresh_share:
        return None
    return rng.choices(pool, weights=pool_weights, k=1)[0]
