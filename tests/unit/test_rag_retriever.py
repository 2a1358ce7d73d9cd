"""The RAG-retriever's choice of blocks within the prompt budget (an in-memory index stands in for Chroma)."""
from __future__ import annotations

import pytest

from nasgraph.agents.code_generator import BLOCK_CHARS, build_prompt
from nasgraph.agents.rag_retriever import WHERE, RagRetriever, RagUnavailable, build_query, make_retriever
from nasgraph.agents.schemas import Task, Triple
from nasgraph.config import load_config
from nasgraph.rag_index.index import Hit

TASK = Task(dataset="digits", in_shape=(32, 1, 8, 8), classes=10, max_params=10**6, max_flops=10**8)
TRIPLE = Triple(problem="flat features", modification="add squeeze-and-excitation channel attention",
                expected_effect="better accuracy")


def block(name: str, lines: int) -> str:
    body = "\n".join(f"        self.l{i} = nn.Conv2d(8, 8, 3, padding=1)" for i in range(lines))
    return (f'import torch.nn as nn\nfrom typing import Optional\n\n\nclass {name}(nn.Module):\n    """Doc."""\n\n'
            f"    def __init__(self, c: int, act: Optional[nn.Module] = None) -> None:\n"
            f"        super().__init__()\n{body}\n")


class FakeIndex:
    def __init__(self, hits: list[Hit]) -> None:
        self.hits, self.calls = hits, []

    def query(self, text: str, k: int = 5, where: dict | None = None) -> list[Hit]:
        self.calls.append((text, k, where))
        return self.hits[:k]


def hits(*specs: tuple[str, int]) -> list[Hit]:
    return [Hit(f"lib.{n}", 0.1 * i, block(n, lines), {"kind": "op", "params": 10}) for i, (n, lines) in enumerate(specs)]


def test_query_is_the_modification_plus_the_goal():
    assert build_query(TASK, TRIPLE) == "add squeeze-and-excitation channel attention"
    goal = TASK.model_copy(update={"goal": "keep it tiny"})
    assert build_query(goal, TRIPLE) == "add squeeze-and-excitation channel attention keep it tiny"
    assert build_query(TASK, Triple(problem="", modification=" ", expected_effect="")).strip()


def test_picks_in_rank_order_within_k_and_the_char_budget():
    index = FakeIndex(hits(("SE", 2), ("Huge", 60), ("Gate", 2), ("Mix", 2), ("Extra", 2)))
    blocks, info = RagRetriever(index, k=3, max_chars=1000)(TASK, TRIPLE)
    assert [p["id"] for p in info["picks"]] == ["lib.SE", "lib.Gate", "lib.Mix"]  # Huge skipped, not cut
    assert info["skipped_too_long"] == 1 and info["chars"] == sum(len(b) for b in blocks) <= 1000
    assert all(len(b) <= BLOCK_CHARS for b in blocks)
    assert "Doc." not in blocks[0] and "Optional" not in blocks[0] and "class SE(nn.Module)" in blocks[0]
    assert index.calls[0][2] == WHERE and info["query"] == build_query(TASK, TRIPLE)


def test_budget_smaller_than_one_block_gives_no_blocks():
    blocks, info = RagRetriever(FakeIndex(hits(("SE", 4))), k=3, max_chars=200)(TASK, TRIPLE)
    assert blocks == [] and info["picks"] == [] and info["chars"] == 0


def test_retrieved_blocks_reach_the_generator_prompt_uncut():
    blocks, _ = RagRetriever(FakeIndex(hits(("SE", 3), ("Gate", 3))), k=2, max_chars=2500)(TASK, TRIPLE)
    prompt = build_prompt(TASK, TRIPLE.as_instruction(), [], None, blocks).text
    assert "class SE(nn.Module)" in prompt and "class Gate(nn.Module)" in prompt and "(truncated)" not in prompt
    assert "import nothing but torch and math" in prompt


def test_make_retriever_is_none_when_disabled_and_clear_without_an_index(tmp_path):
    assert make_retriever(load_config(home=tmp_path)) is None
    with pytest.raises(RagUnavailable, match="nasgraph index build"):
        make_retriever(load_config(home=tmp_path, rag={"enabled": True}))
