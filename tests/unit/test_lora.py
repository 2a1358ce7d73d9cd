"""LoRA adapters without the LLM: GGUF adapters written and checked against a small base GGUF made here,
the adapter registry and its names, prompt–code pairs, and the cycles' selection and resume bookkeeping."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nasgraph.agents import adapters
from nasgraph.config import Config
from nasgraph.graph import cycles
from nasgraph.tools.fingerprint import NoveltyIndex
from nasgraph.tools.lora import AdapterError, Pair, check_adapter, read_pairs, write_adapter, write_pairs

HIDDEN, FFN, LAYERS, RANK = 8, 16, 2, 4
SHAPES = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (4, HIDDEN), "v_proj": (4, HIDDEN), "o_proj": (HIDDEN, HIDDEN),
          "gate_proj": (FFN, HIDDEN), "up_proj": (FFN, HIDDEN), "down_proj": (HIDDEN, FFN)}  # (out, in)
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def _base(path: Path, arch: str = "qwen2", hidden: int = HIDDEN) -> Path:
    """A GGUF 'base model' with the projection weights a qwen2 adapter targets, at toy sizes."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    scale = hidden / HIDDEN
    for layer in range(LAYERS):
        for module, (out, inp) in SHAPES.items():
            shape = (int(out * scale), int(inp * scale))
            w.add_tensor(f"blk.{layer}.{GGUF_NAMES[module]}.weight", np.zeros(shape, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _lora_state(hidden: int = HIDDEN) -> dict:
    scale = hidden / HIDDEN
    state = {}
    for layer in range(LAYERS):
        for module, (out, inp) in SHAPES.items():
            part = "self_attn" if module.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            key = f"base_model.model.model.layers.{layer}.{part}.{module}"
            state[f"{key}.lora_A.weight"] = torch.randn(RANK, int(inp * scale))
            state[f"{key}.lora_B.weight"] = torch.randn(int(out * scale), RANK)
    return state


def _adapter(path: Path, hidden: int = HIDDEN, sha: str = "abc", arch: str = "qwen2") -> Path:
    return write_adapter(_lora_state(hidden), path, architecture=arch, n_layers=LAYERS, alpha=8.0, rank=RANK,
                         base_name="toy-base", base_sha256=sha)


def test_an_adapter_written_for_a_base_passes_its_check(tmp_path):
    base = _base(tmp_path / "base.gguf")
    info = check_adapter(_adapter(tmp_path / "a.gguf"), base, base_sha256="abc")
    assert (info.rank, info.alpha, info.tensors, info.architecture) == (RANK, 8.0, 2 * LAYERS * len(SHAPES), "qwen2")
    assert info.base_name == "toy-base"
    assert not (tmp_path / "a.gguf.tmp").exists()


def test_an_adapter_for_another_size_is_refused_naming_both(tmp_path):
    base = _base(tmp_path / "base.gguf")
    bigger = _adapter(tmp_path / "big.gguf", hidden=2 * HIDDEN)
    with pytest.raises(AdapterError, match=r"big\.gguf.*does not fit base\.gguf.*toy-base"):
        check_adapter(bigger, base)


def test_an_adapter_trained_on_another_base_is_refused(tmp_path):
    base = _base(tmp_path / "base.gguf")
    with pytest.raises(AdapterError, match="was trained on toy-base, not on my-base"):
        check_adapter(_adapter(tmp_path / "a.gguf", sha="abc"), base, base_name="my-base", base_sha256="def")


def test_an_adapter_for_another_architecture_is_refused(tmp_path):
    base = _base(tmp_path / "base.gguf", arch="llama")
    with pytest.raises(AdapterError, match="is for a qwen2 model.*base.gguf is llama"):
        check_adapter(_adapter(tmp_path / "a.gguf"), base)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "model"])
def test_a_corrupt_or_non_adapter_file_is_refused(tmp_path, damage):
    base = _base(tmp_path / "base.gguf")
    bad = tmp_path / "bad.gguf"
    if damage == "garbage":
        bad.write_bytes(b"not a gguf file at all" * 10)
    elif damage == "truncated":
        good = _adapter(tmp_path / "a.gguf").read_bytes()
        bad.write_bytes(good[: len(good) // 3])
    else:
        _base(bad)  # a model, not an adapter
    with pytest.raises(AdapterError, match="bad.gguf"):
        check_adapter(bad, base)


def test_a_missing_adapter_is_named(tmp_path):
    with pytest.raises(AdapterError, match="not found"):
        check_adapter(tmp_path / "none.gguf", _base(tmp_path / "base.gguf"))


def _registered(models_dir: Path, name: str, base: str) -> Path:
    folder = adapters.adapters_dir(models_dir) / name
    folder.mkdir(parents=True)
    _adapter(folder / "adapter.gguf")
    (folder / "adapter.json").write_text(json.dumps({"base": base, "cycle": 2, "pairs": 7, "steps": 4}))
    return folder


def test_plus_names_select_an_adapter_of_that_base(tmp_path):
    _registered(tmp_path, "run1-cycle2", "toy-base")
    assert adapters.split("toy-base+run1-cycle2") == ("toy-base", "run1-cycle2")
    assert adapters.split("/models/a+b.gguf") == ("/models/a+b.gguf", "")  # a path is never split
    found = adapters.find("toy-base+run1-cycle2", tmp_path)
    assert found.model == "toy-base+run1-cycle2" and found.meta["cycle"] == 2
    assert [a.model for a in adapters.list_adapters(tmp_path)] == ["toy-base+run1-cycle2"]
    with pytest.raises(AdapterError, match="trained on toy-base, not on other-base"):
        adapters.find("other-base+run1-cycle2", tmp_path)
    with pytest.raises(AdapterError, match="no adapter 'nope'.*known: toy-base\\+run1-cycle2"):
        adapters.find("toy-base+nope", tmp_path)


def test_the_ollama_modelfile_names_base_and_adapter(tmp_path):
    folder = _registered(tmp_path, "run1-cycle2", "toy-base")
    text = adapters.modelfile(adapters.find("toy-base+run1-cycle2", tmp_path), tmp_path / "base.gguf")
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == [f"FROM {(tmp_path / 'base.gguf').resolve()}", f"ADAPTER {(folder / 'adapter.gguf').resolve()}"]


def test_pairs_round_trip_and_reply_as_one_code_block(tmp_path):
    pairs = [Pair(messages=[{"role": "user", "content": "x"}], code="import torch\n", arch_id="a", accuracy=0.9,
                  cycle=1)]
    path = write_pairs(pairs, tmp_path / "p.jsonl")
    assert read_pairs(path) == pairs
    assert pairs[0].reply() == "```python\nimport torch\n```"
    assert read_pairs(tmp_path / "missing.jsonl") == []


CONV = "import torch.nn as nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"


def _design(i: int, width: int) -> str:
    layers = "\n".join(f"        self.c{k} = nn.Conv2d({width * k}, {width * (k + 1)}, {3 + i % 2})" for k in range(1, 30))
    return CONV + layers + f"\n        self.head_{i} = nn.Linear({width}, {i})\n"


def test_selection_keeps_good_novel_designs_and_the_best_of_near_twins():
    a, twin, other, weak = _design(1, 8), _design(1, 8) + "        self.extra = nn.ReLU()\n", _design(2, 64), _design(3, 16)
    designs = [("twin", 0.91, twin), ("a", 0.93, a), ("other", 0.90, other), ("weak", 0.50, weak)]
    kept, novel_corpus = cycles.select(designs, threshold=0.85, novelty=0.1, earlier=NoveltyIndex(), corpus=None)
    assert [k[0] for k in kept] == ["a", "other"] and novel_corpus == 3
    earlier = NoveltyIndex()
    earlier.add("old", other)
    corpus = NoveltyIndex()
    corpus.add("lemur:x", a)
    kept, novel_corpus = cycles.select(designs, threshold=0.85, novelty=0.1, earlier=earlier, corpus=corpus)
    assert [k[0] for k in kept] == [] and novel_corpus == 1  # `a` and its twin are in the corpus, `other` is old


def test_a_cycles_run_resumes_where_it_stopped_and_refuses_changed_settings(tmp_path, monkeypatch):
    cfg = Config(home=tmp_path)
    calls: list[str] = []
    crash_at = {"finetune 1"}

    def generate(cfg_, state, c, store, corpus, evaluator, progress):
        calls.append(f"generate {c}")
        return cycles.Row(cycle=c, model=state.model(c), run_id=f"g{c}", pairs_new=1)

    def finetune(cfg_, state, c, progress):
        calls.append(f"finetune {c}")
        if f"finetune {c}" in crash_at:
            crash_at.clear()
            raise KeyboardInterrupt  # a kill in the middle of the second fine-tuning
        if c == 0:
            return None  # generation 0 left nothing to learn from: generation 1 keeps the base
        return {"pairs": 3, "train_s": 60.0, "load_s": 6.0, "losses": [1.0, 0.5]}

    monkeypatch.setattr(cycles, "_generate", generate)
    monkeypatch.setattr(cycles, "_finetune", finetune)
    spec = cycles.CyclesSpec(cycles_id="t", base="qwen2.5-coder-0.5b", cycles=2, per_cycle=2)

    class NoEvaluator:
        def close(self):
            pass
    with pytest.raises(KeyboardInterrupt):
        cycles.run_cycles(cfg, spec, evaluator=NoEvaluator())
    state = cycles.run_cycles(cfg, spec, evaluator=NoEvaluator())
    assert calls == ["generate 0", "finetune 0", "generate 1", "finetune 1", "finetune 1", "generate 2"]
    assert [r.model for r in state.rows] == ["qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b",
                                             "qwen2.5-coder-0.5b+t-cycle2"]
    assert state.rows[0].finetune_s is None and state.rows[1].finetune_s == 66.0 and state.rows[1].loss_last == 0.5
    saved = cycles.load_state(cfg, "t")
    assert saved.finetuned == [0, 1] and saved.adapters == [2]
    with pytest.raises(cycles.CyclesError, match="other settings \\(threshold\\)"):
        cycles.run_cycles(cfg, spec.model_copy(update={"threshold": 0.5}), evaluator=NoEvaluator())


def test_models_ls_lists_adapters_with_their_cycle(tmp_path, capsys):
    from nasgraph.cli import main

    _registered(tmp_path / "models", "run1-cycle2", "qwen2.5-coder-0.5b")
    assert main(["--home", str(tmp_path), "models", "ls", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows["qwen2.5-coder-0.5b+run1-cycle2"]
    assert row["description"] == "LoRA adapter of cycle 2: 7 pairs, 4 steps" and row["embedded"] is False
