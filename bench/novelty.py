"""Novelty queries against many stored designs: the index's one vectorised scan against the plain
loop over datasketch's `MinHash.jaccard`, on the same signatures and queries, printed as a ratio.

Run: .venv/bin/python -m bench.novelty [--designs 10000] [--queries 50]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from nasgraph.tools.fingerprint import NoveltyIndex, minhash, minhash_from_bytes

QUERY = """import torch.nn as nn
class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 32, 3, padding=1)
        self.fc = nn.Linear(32, out_shape[0])
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--designs", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=50)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    stored = [minhash_from_bytes(rng.integers(0, 2**32, 128, dtype=np.uint64).astype("<u4").tobytes())
              for _ in range(a.designs)]
    idx = NoveltyIndex()
    for i, m in enumerate(stored):
        idx.add_minhash(f"d{i}", m)
    query = minhash(QUERY)

    t = time.perf_counter()
    for _ in range(a.queries):
        fast = idx.novelty_of(query)[0]
    index_s = (time.perf_counter() - t) / a.queries
    t = time.perf_counter()
    for _ in range(a.queries):
        slow = 1.0 - max(query.jaccard(m) for m in stored)
    loop_s = (time.perf_counter() - t) / a.queries
    assert abs(fast - slow) < 1e-9, (fast, slow)
    print(f"{a.designs} stored designs, {a.queries} queries")
    print(f"index scan   {index_s * 1000:8.2f} ms/query")
    print(f"jaccard loop {loop_s * 1000:8.2f} ms/query")
    print(f"ratio        {loop_s / index_s:8.1f}x faster")


if __name__ == "__main__":
    main()
