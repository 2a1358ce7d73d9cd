"""RAG-retriever agent: validated blocks from the index for the Code Generator's prompt.

The query is the Prompt Improver's suggested modification (what the next design should contain),
plus the user's goal when there is one; the task's shape and class count say nothing about which
block fits, so they stay out of it. Only `prompt_ready` blocks are candidates: they executed,
instantiated, need nothing but torch, pass the evaluator's static policy, and their compact text
(docstrings, comments and annotations stripped) was itself run in the sandbox. Whole networks
(torchvision models, stored `Net` designs) are left out: the generator writes the network, the best
design is already in its prompt, and a second full network invites copying. So are video blocks. Picks are made in rank order within `cfg.rag.k` blocks and
`cfg.rag.max_chars` characters (no block longer than the generator's per-block limit, so nothing
shown is ever cut).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from nasgraph.agents.code_generator import BLOCK_CHARS
from nasgraph.agents.schemas import Task, Triple
from nasgraph.errors import NasgraphError

FETCH_FACTOR = 6        # candidates fetched per block wanted: long blocks are skipped, not cut
# Parts, not whole networks; and no video blocks (5-D input) for an image classifier.
WHERE = {"$and": [{"prompt_ready": True}, {"kind": {"$in": ["block", "op"]}}, {"input_rank": {"$ne": 5}}]}

Retrieve = Callable[[Task, Triple], tuple[list[str], dict]]


class RagUnavailable(NasgraphError, RuntimeError):
    """Retrieval is enabled but there is no usable index."""


def build_query(task: Task, triple: Triple) -> str:
    parts = [triple.modification.strip(), task.goal.strip()]
    return " ".join(p for p in parts if p) or "a compact convolutional building block for image classification"


class RagRetriever:
    def __init__(self, index: Any, k: int, max_chars: int) -> None:
        self.index, self.k, self.max_chars = index, int(k), int(max_chars)

    def __call__(self, task: Task, triple: Triple) -> tuple[list[str], dict]:
        from nasgraph.rag_index.present import present

        query = build_query(task, triple)
        t0 = time.perf_counter()
        hits = self.index.query(query, k=self.k * FETCH_FACTOR, where=WHERE)
        per_block = min(BLOCK_CHARS, self.max_chars)
        blocks: list[str] = []
        picks: list[dict] = []
        used = skipped = 0
        for h in hits:
            text = present(h.code).strip()
            if len(text) > per_block or used + len(text) > self.max_chars:
                skipped += 1
                continue
            blocks.append(text)
            used += len(text)
            picks.append({"id": h.id, "distance": round(h.distance, 4), "chars": len(text),
                          "kind": h.metadata.get("kind"), "params": h.metadata.get("params")})
            if len(blocks) == self.k:
                break
        info = {"query": query, "picks": picks, "chars": used, "candidates": len(hits), "skipped_too_long": skipped,
                "retrieve_s": round(time.perf_counter() - t0, 3)}
        return blocks, info


def make_retriever(cfg: Any) -> Retrieve | None:
    """The retriever for `cfg`, or None when retrieval is off; raises RagUnavailable without a usable index."""
    if not cfg.rag.enabled:
        return None
    from nasgraph.rag_index.index import BlockIndex, IndexUnavailable, index_path

    try:
        index = BlockIndex(index_path(cfg))
        if not index.query("convolution block", k=1, where=WHERE):
            raise RagUnavailable(f"the block index at {index.path} has no prompt-ready blocks; "
                                 f"run `nasgraph index build`")
    except IndexUnavailable as e:
        raise RagUnavailable(f"retrieval is enabled (rag.enabled) but {e}") from e
    return RagRetriever(index, cfg.rag.k, cfg.rag.max_chars)
