"""nasgraph.agents.llm without a model or a server: config mapping, clear errors, GPU-sharing hooks."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from nasgraph.agents import llm, models
from nasgraph.agents.llamacpp_chat import ChatLlamaCpp, _to_dicts
from nasgraph.agents.llm import LLMError, LLMUnavailable
from nasgraph.config import LLMConfig


@pytest.fixture(autouse=True)
def _no_model_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.MODEL_PATH_ENV, raising=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ollama_server_down_is_llm_unavailable(tmp_path: Path) -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    cfg = LLMConfig(backend="ollama", ollama_host=host)
    with pytest.raises(LLMUnavailable, match=r"cannot reach the Ollama server at .*ollama serve"):
        llm.make_chat_model(cfg, tmp_path)


def test_embedded_names_map_to_ollama_library_names() -> None:
    assert llm.ollama_model_name("qwen2.5-coder-1.5b") == "qwen2.5-coder:1.5b"
    assert llm.ollama_model_name("llama3.2:3b") == "llama3.2:3b"


@pytest.mark.parametrize(("wanted", "listed", "same"), [
    ("qwen2.5-coder:1.5b", "qwen2.5-coder:1.5b", True),
    ("mistral", "mistral:latest", True),
    ("qwen2.5-coder", "qwen2.5-coder:1.5b", False),  # Ollama itself would say "not found"
    ("host:5000/ns/m", "host:5000/ns/m:latest", True),
])
def test_ollama_name_matching(wanted: str, listed: str, same: bool) -> None:
    assert llm._same_model(wanted, listed) is same


def test_llamacpp_missing_or_invalid_gguf_is_llm_unavailable(tmp_path: Path) -> None:
    with pytest.raises(LLMUnavailable, match="GGUF file not found"):
        llm.make_chat_model(LLMConfig(model=str(tmp_path / "absent.gguf")), tmp_path)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(LLMUnavailable, match="not a GGUF"):
        llm.make_chat_model(LLMConfig(model=str(junk)), tmp_path)
    with pytest.raises(LLMUnavailable, match="unknown model"):
        llm.make_chat_model(LLMConfig(model="no-such-model"), tmp_path)


def test_llamacpp_unloadable_weights_are_llm_unavailable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # right magic, nothing llama.cpp can load
    chat = llm.make_chat_model(LLMConfig(model=str(broken)), tmp_path)
    assert isinstance(chat, ChatLlamaCpp)  # loading is lazy: construction is cheap
    with pytest.raises(LLMUnavailable, match="could not load"):
        chat.invoke("hi")


def test_config_reaches_the_llamacpp_model(tmp_path: Path) -> None:
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    cfg = LLMConfig(model=str(own), temperature=0.3, max_tokens=77, n_ctx=1024, threads=1, seed=5)
    chat = llm.make_chat_model(cfg, tmp_path)
    assert (chat.model_path, chat.temperature, chat.max_tokens, chat.n_ctx, chat.n_threads, chat.seed) == \
        (str(own), 0.3, 77, 1024, 1, 5)
    assert llm.model_label(chat) == "own.gguf"
    copy = llm.with_options(chat, seed=9, max_tokens=10)
    assert (copy.seed, copy.max_tokens, copy.temperature, chat.seed) == (9, 10, 0.3, 5)


def test_message_conversion() -> None:
    msgs = [SystemMessage("s"), HumanMessage(content=[{"type": "text", "text": "a"}, "b"]), AIMessage("c")]
    assert _to_dicts(msgs) == [{"role": "system", "content": "s"}, {"role": "user", "content": "ab"},
                              {"role": "assistant", "content": "c"}]
    with pytest.raises(LLMError, match="ToolMessage"):
        _to_dicts([ToolMessage("x", tool_call_id="1")])


def test_release_modes(tmp_path: Path) -> None:
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    chat = llm.make_chat_model(LLMConfig(model=str(own)), tmp_path)
    assert llm.release(chat, "keep") is False
    assert llm.release(chat, force=True) is False  # nothing loaded yet
    with pytest.raises(ValueError, match="gpu_share"):
        llm.release(chat, "sometimes")


def test_auto_keeps_a_model_that_needs_a_tenth_of_the_card_or_less(tmp_path: Path, monkeypatch) -> None:
    from nasgraph.tools import hardware

    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF" + bytes(2**20))
    chat = llm.make_chat_model(LLMConfig(model=str(own)), tmp_path)
    need = llm.footprint_bytes(chat)
    assert need == own.stat().st_size + llm.LLAMACPP_OVERHEAD
    for total_mib, mode in [(143_771, "keep"), (-(-need * 10 // 2**20), "keep"), (need * 10 // 2**20 - 1, "release"),
                            (None, "release")]:  # None: no NVIDIA driver to ask
        monkeypatch.setattr(hardware, "gpu_memory_mib", lambda field="memory.total", t=total_mib: t)
        assert llm.share_mode(chat, "auto") == mode, total_mib
    assert llm.share_mode(chat, "keep") == "keep" and llm.share_mode(chat, "release") == "release"


def test_a_gpu_build_that_would_crash_beside_torch_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    import torch  # noqa: F401 - the probe runs only in a process that has torch loaded

    from nasgraph.agents import llamacpp_chat

    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF")
    # The real probe: this build loads beside torch (here it fails on the fake file, which the real load reports).
    llamacpp_chat.check_beside_torch(str(own))
    assert str(own) in llamacpp_chat._probed
    # A build that crashes there, as a CUDA llama-cpp-python did beside torch 2.11+cu130 on an H200.
    monkeypatch.setattr(llamacpp_chat, "BESIDE_TORCH_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    monkeypatch.setattr(llamacpp_chat, "_probed", set())
    with pytest.raises(LLMUnavailable, match=r"SIGSEGV.*own\.gguf.*static-libstdc\+\+"):
        llamacpp_chat.check_beside_torch(str(own))


def test_release_on_unreachable_ollama_does_not_stop_the_run() -> None:
    from langchain_ollama import ChatOllama

    chat = ChatOllama(model="m", base_url=f"http://127.0.0.1:{_closed_port()}")
    assert llm.release(chat) is False
