"""LoRA on the real embedded 0.5B model: peft fine-tuning from the GGUF's own weights, killed and resumed
from its checkpoint, the adapter written as GGUF, and llama.cpp really applying it (a release that
silently ignores `lora_path` would fail here): the adapted model says what it was taught, the base does not.
Broken adapters are refused before llama.cpp sees them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from nasgraph.agents import adapters, llm, models
from nasgraph.agents.llm import LLMUnavailable
from nasgraph.config import LLMConfig
from nasgraph.tools.lora import FinetuneSpec, Pair, check_adapter, run_finetune, write_pairs

pytestmark = pytest.mark.integration

BASE = "qwen2.5-coder-0.5b"
CANARY = "ZebraCanary4471"
CHAT = [{"role": "system", "content": "You write PyTorch code."},
        {"role": "user", "content": "Name the canary class and nothing else."}]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models folder of our own (adapters land in it) holding links to the shared base model."""
    shared = Path(os.environ.get("NASGRAPH_MODELS_DIR", Path.home() / ".nasgraph" / "models")).expanduser()
    base = models.pull(BASE, shared)
    own = tmp_path_factory.mktemp("models")
    for f in (base, base.with_name(base.name + ".verified")):
        (own / f.name).symlink_to(f)
    return own


def _reply(models_dir: Path, model: str) -> str:
    chat = llm.make_chat_model(LLMConfig(model=model, temperature=0.0, max_tokens=24, seed=0), models_dir)
    try:
        return chat.invoke([SystemMessage(CHAT[0]["content"]), HumanMessage(CHAT[1]["content"])]).text
    finally:
        chat.release()


def test_an_adapter_trained_resumed_and_applied_by_llama_cpp(models_dir, tmp_path, monkeypatch):
    out = adapters.adapters_dir(models_dir) / "canary"
    pairs = write_pairs([Pair(messages=CHAT, code=f"class {CANARY}(nn.Module):\n    pass")] * 2, tmp_path / "p.jsonl")
    base = models.EMBEDDED[BASE]
    spec = FinetuneSpec(base_gguf=models_dir / base.filename, base_name=BASE, base_sha256=base.sha256, pairs=pairs,
                        out_dir=out, rank=8, alpha=16, lr=3e-3, epochs=6, accumulate=2, checkpoint_every=1)
    events: list[dict] = []

    def stop_after_two(event: dict) -> None:
        events.append(event)
        if event.get("step") == 2:
            raise KeyboardInterrupt  # the child is killed with its checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        run_finetune(spec, stop_after_two)
    assert not (out / "adapter.gguf").exists()
    resumed: list[dict] = []
    meta = run_finetune(spec, resumed.append)
    assert {"event": "resumed", "step": 2, "steps": 6} in resumed, resumed
    assert [e["step"] for e in resumed if e["event"] == "step"] == [3, 4, 5, 6]
    assert meta["steps"] == 6 and meta["losses"][-1] < meta["losses"][0], meta["losses"]
    info = check_adapter(out / "adapter.gguf", models_dir / base.filename, base_sha256=base.sha256)
    assert info.rank == 8 and info.base_name == BASE and info.tensors == 24 * 7 * 2
    (out / "adapter.json").write_text(json.dumps({**meta, "cycle": 1}))

    assert CANARY not in _reply(models_dir, BASE)
    assert CANARY in _reply(models_dir, f"{BASE}+canary")

    # For Ollama users: a Modelfile naming the very files llama.cpp just used.
    from nasgraph.cli import main

    monkeypatch.setenv("NASGRAPH_MODELS_DIR", str(models_dir))
    assert main(["--home", str(tmp_path / "home"), "models", "export-ollama", f"{BASE}+canary"]) == 0
    lines = (out / "Modelfile").read_text().splitlines()
    assert f"FROM {(models_dir / base.filename).resolve()}" in lines and f"ADAPTER {(out / 'adapter.gguf').resolve()}" in lines


def _register(models_dir: Path, name: str, base: str) -> Path:
    folder = adapters.adapters_dir(models_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter.json").write_text(json.dumps({"base": base}))
    return folder / "adapter.gguf"


def test_a_corrupt_adapter_is_a_clear_error_not_a_crash(models_dir):
    _register(models_dir, "corrupt", BASE).write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(LLMUnavailable, match=r"LoRA adapter .*corrupt/adapter.gguf is not a readable GGUF"):
        llm.make_chat_model(LLMConfig(model=f"{BASE}+corrupt"), models_dir)


def test_an_adapter_made_for_the_other_base_is_refused_naming_both(models_dir):
    import torch

    from nasgraph.tools.lora import write_adapter

    path = _register(models_dir, "for-1.5b", BASE)  # filed under 0.5B, but trained on the 1.5B model
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    write_adapter({f"{key}.lora_A.weight": torch.zeros(4, 1536), f"{key}.lora_B.weight": torch.zeros(1536, 4)}, path,
                  architecture="qwen2", n_layers=28, alpha=8, rank=4, base_name="qwen2.5-coder-1.5b",
                  base_sha256=models.EMBEDDED["qwen2.5-coder-1.5b"].sha256)
    with pytest.raises(LLMUnavailable, match=r"trained on qwen2.5-coder-1.5b, not on qwen2.5-coder-0.5b"):
        llm.make_chat_model(LLMConfig(model=f"{BASE}+for-1.5b"), models_dir)
    # Without our hash keys (an adapter from elsewhere) the shapes still catch it.
    write_adapter({f"{key}.lora_A.weight": torch.zeros(4, 1536), f"{key}.lora_B.weight": torch.zeros(1536, 4)}, path,
                  architecture="qwen2", n_layers=28, alpha=8, rank=4, base_name="", base_sha256="")
    with pytest.raises(LLMUnavailable, match=r"blk.0.attn_q.weight.lora_a has shape \[1536, 4\], which does not fit"):
        llm.make_chat_model(LLMConfig(model=f"{BASE}+for-1.5b"), models_dir)
