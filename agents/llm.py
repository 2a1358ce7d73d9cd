"""LLM backends behind one interface: a LangChain chat model chosen by `LLMConfig.backend`.

Agents call `make_chat_model(cfg.llm, cfg.models_dir)` and never learn which backend answers.
Every reply carries `usage_metadata` (input/output tokens) for the traces. `release`/`reacquire`
let the LLM and a training child take turns on one GPU.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_ollama import ChatOllama

from nasgraph.agents import adapters, models
from nasgraph.config import LLMConfig
from nasgraph.errors import NasgraphError

log = logging.getLogger(__name__)

OLLAMA_CHECK_TIMEOUT_S = 5.0
# Per read, not per reply: a streamed reply sends a chunk per token, so this only trips on a hung server.
OLLAMA_READ_TIMEOUT_S = 300.0


class LLMError(NasgraphError, RuntimeError):
    """A request to the LLM failed (prompt too long, server error); the message says why."""


class LLMUnavailable(LLMError):
    """The backend cannot serve at all: server down, model not pulled, weights not loadable."""


def make_chat_model(cfg: LLMConfig, models_dir: Path, *,
                    progress: models.Progress | None = None) -> BaseChatModel:
    """The chat model for `cfg.backend`; the embedded GGUF is pulled first if it is missing."""
    if cfg.backend == "llamacpp":
        return _make_llamacpp(cfg, Path(models_dir), progress)
    if cfg.backend == "ollama":
        return _make_ollama(cfg)
    raise LLMUnavailable(f"unknown llm.backend {cfg.backend!r}: use 'llamacpp' or 'ollama'")


def _make_llamacpp(cfg: LLMConfig, models_dir: Path, progress: models.Progress | None) -> BaseChatModel:
    from nasgraph.agents.llamacpp_chat import ChatLlamaCpp  # imports llama_cpp lazily: ollama users need no build

    base, adapter_name = adapters.split(cfg.model)
    try:
        path = models.resolve(base, models_dir, progress=progress)
        lora = adapters.checked(cfg.model, path, models_dir).path if adapter_name else ""
    except (models.ModelError, adapters.AdapterError) as e:
        raise LLMUnavailable(str(e)) from e
    name = cfg.model if base in models.EMBEDDED else path.name
    return ChatLlamaCpp(model_path=str(path), model_name=name, n_ctx=cfg.n_ctx, n_threads=cfg.threads,
                        temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed, lora_path=str(lora))


# --- ollama ------------------------------------------------------------------------------------

def ollama_model_name(name: str) -> str:
    """Embedded names map to the same weights in the Ollama library; other names pass through."""
    model = models.EMBEDDED.get(name)
    return model.ollama if model and model.ollama else name


def _same_model(wanted: str, listed: str) -> bool:
    # Ollama stores an untagged name as `name:latest`.
    def norm(n: str) -> str:
        return n if ":" in n.rsplit("/", 1)[-1] else f"{n}:latest"
    return norm(wanted) == norm(listed)


def check_ollama(host: str, model: str, timeout: float = OLLAMA_CHECK_TIMEOUT_S) -> None:
    """Raise LLMUnavailable unless the server at `host` answers and has `model` pulled."""
    try:
        listed = ollama.Client(host=host, timeout=timeout).list()
    except (ConnectionError, httpx.HTTPError) as e:
        raise LLMUnavailable(
            f"cannot reach the Ollama server at {host} ({type(e).__name__}); start it with "
            f"`ollama serve` or point llm.ollama_host / OLLAMA_HOST at a running one"
        ) from e
    except ollama.ResponseError as e:
        raise LLMUnavailable(f"the Ollama server at {host} answered /api/tags with an error: {e.error}") from e
    names = [m.model for m in listed.models if m.model]
    if not any(_same_model(model, n) for n in names):
        raise LLMUnavailable(
            f"model {model!r} is not pulled on the Ollama server at {host}; run `ollama pull {model}` "
            f"(available: {', '.join(names) or 'none'})"
        )


def _translate(e: Exception, host: str | None) -> LLMError:
    if isinstance(e, ollama.ResponseError):
        return LLMError(f"Ollama at {host} failed the request (HTTP {e.status_code}): {e.error}")
    return LLMUnavailable(f"lost the Ollama server at {host}: {type(e).__name__}: {e}")


_OLLAMA_ERRORS = (ConnectionError, httpx.HTTPError, ollama.ResponseError)


class OllamaChat(ChatOllama):
    """ChatOllama whose transport failures surface as LLMError/LLMUnavailable, not raw httpx errors."""

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        try:
            return super()._generate(messages, stop, run_manager, **kwargs)
        except _OLLAMA_ERRORS as e:
            raise _translate(e, self.base_url) from e

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        try:
            yield from super()._stream(messages, stop, run_manager, **kwargs)
        except _OLLAMA_ERRORS as e:
            raise _translate(e, self.base_url) from e

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        try:
            return await super()._agenerate(messages, stop, run_manager, **kwargs)
        except _OLLAMA_ERRORS as e:
            raise _translate(e, self.base_url) from e

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        try:
            async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
                yield chunk
        except _OLLAMA_ERRORS as e:
            raise _translate(e, self.base_url) from e


def _make_ollama(cfg: LLMConfig) -> BaseChatModel:
    if adapters.split(cfg.model)[1]:
        raise LLMUnavailable(f"{cfg.model} is a base with a LoRA adapter: use the embedded backend, or give it to "
                             f"Ollama with `nasgraph models export-ollama {cfg.model}` and `ollama create`")
    name = ollama_model_name(cfg.model)
    check_ollama(cfg.ollama_host, name)
    return OllamaChat(
        model=name, base_url=cfg.ollama_host, temperature=cfg.temperature, num_predict=cfg.max_tokens,
        num_ctx=cfg.n_ctx, seed=cfg.seed,
        client_kwargs={"timeout": httpx.Timeout(OLLAMA_READ_TIMEOUT_S, connect=OLLAMA_CHECK_TIMEOUT_S)},
    )


# --- GPU sharing -------------------------------------------------------------------------------

# Keeping the LLM on the GPU beside training, measured on an H200 (docs/2026-11-28-gpu-share.md): a loop
# round took 0.81x as long as with the hand-over (0.60x with loop.in_flight 2, which needs it kept),
# training was no slower, and the 1.5B held 2.0 GB of 141. The hand-over pays only where memory is scarce.
AUTO_KEEP_SHARE = 0.10       # "auto" keeps an LLM that needs at most this share of the card
LLAMACPP_OVERHEAD = 2**30    # beside the weights: CUDA context, 4k-token KV cache, buffers (0.95 GiB measured)


def footprint_bytes(chat_model: BaseChatModel) -> int | None:
    """What the LLM holds on the GPU when loaded; None when unknown (an Ollama model not loaded now)."""
    from nasgraph.agents.llamacpp_chat import ChatLlamaCpp

    if isinstance(chat_model, ChatLlamaCpp):
        files = [chat_model.model_path, chat_model.lora_path]
        return sum(Path(f).stat().st_size for f in files if f and Path(f).is_file()) + LLAMACPP_OVERHEAD
    if isinstance(chat_model, ChatOllama):
        try:
            loaded = ollama.Client(host=chat_model.base_url, timeout=OLLAMA_CHECK_TIMEOUT_S).ps().models
        except _OLLAMA_ERRORS:
            return None
        sizes = [m.size_vram for m in loaded if chat_model.model in (m.model, m.name)]
        return int(sizes[0]) if sizes and sizes[0] is not None else None  # 0: Ollama runs it on the CPU
    return None


def share_mode(chat_model: BaseChatModel, mode: str) -> str:
    """`LLMConfig.gpu_share` as it applies now: "auto" keeps the LLM when it needs at most
    AUTO_KEEP_SHARE of the card, else hands the GPU over; unknown sizes hand it over."""
    if mode not in ("auto", "release", "keep"):
        raise ValueError(f"gpu_share must be 'auto', 'release' or 'keep', not {mode!r}")
    if mode != "auto":
        return mode
    from nasgraph.tools.hardware import gpu_memory_mib

    total, need = gpu_memory_mib("memory.total"), footprint_bytes(chat_model)
    return "keep" if total and need is not None and need <= AUTO_KEEP_SHARE * total * 2**20 else "release"


def release(chat_model: BaseChatModel, mode: str = "release", *, force: bool = False) -> bool:
    """Free the memory the LLM holds so a training child can use the GPU; True if something was freed.

    mode is `LLMConfig.gpu_share` (see `share_mode`): "keep" does nothing. An in-process llama.cpp
    model is only freed when it sits on the GPU (on a CPU there is no card to share, and reloading costs
    time) unless `force`. Ollama gets an unload request (keep_alive=0); it reloads on the next chat.
    """
    if share_mode(chat_model, mode) == "keep":
        return False
    from nasgraph.agents.llamacpp_chat import ChatLlamaCpp

    if isinstance(chat_model, ChatLlamaCpp):
        return (force or chat_model.uses_gpu) and chat_model.release()
    if isinstance(chat_model, ChatOllama):
        try:
            client = ollama.Client(host=chat_model.base_url, timeout=OLLAMA_CHECK_TIMEOUT_S)
            reply = client.generate(model=chat_model.model, keep_alive=0)
        except _OLLAMA_ERRORS as e:  # nothing loaded on a server we cannot reach; the run goes on
            log.warning("could not unload %s from Ollama at %s: %s", chat_model.model, chat_model.base_url, e)
            return False
        return bool(reply.done)
    raise TypeError(f"no GPU-sharing hook for {type(chat_model).__name__}")


def reacquire(chat_model: BaseChatModel, *, eager: bool = False) -> None:
    """Undo `release`. Both backends reload lazily on the next call; `eager` loads now instead."""
    if not eager:
        return
    from nasgraph.agents.llamacpp_chat import ChatLlamaCpp

    if isinstance(chat_model, ChatLlamaCpp):
        chat_model.reacquire()
    elif isinstance(chat_model, ChatOllama):
        try:  # an empty prompt only loads the model (Ollama's documented preload request)
            ollama.Client(host=chat_model.base_url, timeout=OLLAMA_READ_TIMEOUT_S).generate(model=chat_model.model)
        except _OLLAMA_ERRORS as e:
            raise _translate(e, chat_model.base_url) from e
    else:
        raise TypeError(f"no GPU-sharing hook for {type(chat_model).__name__}")


def with_options(chat_model: BaseChatModel, *, seed: int | None = None, temperature: float | None = None,
                 max_tokens: int | None = None) -> BaseChatModel:
    """A copy with other sampling settings, the same on every backend (e.g. a fresh seed per sample:
    with one fixed seed, the same prompt gives the same reply). The loaded weights are shared."""
    from nasgraph.agents.llamacpp_chat import ChatLlamaCpp

    if isinstance(chat_model, ChatLlamaCpp):
        names = {"seed": "seed", "temperature": "temperature", "max_tokens": "max_tokens"}
    elif isinstance(chat_model, ChatOllama):
        names = {"seed": "seed", "temperature": "temperature", "max_tokens": "num_predict"}
    else:
        raise TypeError(f"no sampling options for {type(chat_model).__name__}")
    wanted = {"seed": seed, "temperature": temperature, "max_tokens": max_tokens}
    return chat_model.model_copy(update={names[k]: v for k, v in wanted.items() if v is not None})


def model_label(chat_model: BaseChatModel) -> str:
    """The model's name for traces, whatever the backend."""
    label = getattr(chat_model, "label", None) or getattr(chat_model, "model", None)
    return str(label or type(chat_model).__name__)
