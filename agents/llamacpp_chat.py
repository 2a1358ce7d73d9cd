"""A LangChain chat model over llama-cpp-python, running a local GGUF in this process.

Why not `langchain_community.chat_models.ChatLlamaCpp`: it pulls in langchain-community's large
dependency tree, builds one `Llama` per chat-model object (the generator and the improver would load
the same weights twice) and offers no way to free the memory while a candidate trains. Here every
`ChatLlamaCpp` with the same (file, n_ctx, threads, gpu layers) shares one cached `Llama`; `release()`
frees it and the next call loads it again (llama.cpp mmaps the file, so a reload costs well under a
second once the file is in the page cache).
"""
from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

from nasgraph.agents.llm import LLMError, LLMUnavailable

# One Llama per key, shared by every chat model on that key; one lock because a llama.cpp context
# is not safe to use from two threads and loading/freeing must not race a generation.
_LOCK = threading.RLock()
_INSTANCES: dict[tuple[str, int, int, int, str], Any] = {}

# A llama.cpp built with CUDA beside PyTorch's CUDA wheels crashed the process on an H200 (SIGSEGV in the
# tokenizer's std::regex while loading the vocabulary: two C++ runtimes' locale facets, torch 2.11+cu130).
# A crash cannot be caught, so the first GPU load in a process that imports torch is tried in a child.
BESIDE_TORCH_PROBE = ("import sys, torch\nfrom llama_cpp import Llama\n"
                      "Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)")
CUDA_BUILD = ("CMAKE_ARGS=\"-DGGML_CUDA=on -DCMAKE_SHARED_LINKER_FLAGS='-static-libstdc++ -Wl,--exclude-libs,ALL'\" "
              "pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.16")
_probed: set[str] = set()


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def check_beside_torch(path: str) -> None:
    """Raise a clear error, instead of a crash, when this llama.cpp build cannot load a model on the GPU
    in a process that has PyTorch loaded (the loop trains and scores with torch in this process)."""
    if "torch" not in sys.modules or path in _probed:
        return
    try:
        proc = subprocess.run([sys.executable, "-c", BESIDE_TORCH_PROBE, path], capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        return  # inconclusive: the real load says what is wrong, if anything
    _probed.add(path)
    if proc.returncode < 0:  # killed by a signal; any other failure is left to the real load to explain
        raise LLMUnavailable(
            f"llama.cpp crashed ({signal.Signals(-proc.returncode).name}) loading {Path(path).name} for the GPU "
            f"in a process that has imported PyTorch: this llama-cpp-python build shares a C++ runtime with torch "
            f"that it cannot share. Rebuild it with its own: {CUDA_BUILD}; or run the model in Ollama "
            f"(llm.backend = 'ollama')")


def loaded_keys() -> list[tuple[str, int, int, int, str]]:
    with _LOCK:
        return list(_INSTANCES)


def _load(key: tuple[str, int, int, int, str]) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError as e:  # the dependency is declared; say how to get it if a build failed
        raise LLMUnavailable(
            "llama-cpp-python is not installed; install it (`pip install llama-cpp-python`) or use "
            "the ollama backend (llm.backend = 'ollama')"
        ) from e
    path, n_ctx, n_threads, n_gpu_layers, lora_path = key
    if n_gpu_layers:
        check_beside_torch(path)
    with _native_stderr_captured() as said:
        try:
            return Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                         n_gpu_layers=n_gpu_layers, lora_path=lora_path or None, verbose=False)
        except (ValueError, RuntimeError, OSError) as e:
            detail = " ".join(said()[-2:])
            raise LLMUnavailable(f"llama.cpp could not load {path}{' with ' + lora_path if lora_path else ''}: "
                                 f"{e}{' (' + detail + ')' if detail else ''}") from e


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[Callable[[], list[str]]]:
    """llama.cpp prints from C while loading even with verbose=False (a line per adapted tensor about
    the CPU buffer type, a context-size note), over the Rich views. Its stderr goes to a file while a
    model loads; the last lines are read back only to explain a failure."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        lines: list[str] = []

        def said() -> list[str]:
            if not lines:
                sink.seek(0)
                lines.extend(ln.strip() for ln in sink.read().decode("utf-8", "replace").splitlines() if ln.strip())
            return lines
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _to_dicts(messages: list[BaseMessage]) -> list[dict[str, str]]:
    roles = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}
    out = []
    for m in messages:
        role = m.role if isinstance(m, ChatMessage) else roles.get(type(m))
        if role is None:
            raise LLMError(f"the llama.cpp backend cannot send a {type(m).__name__}")
        out.append({"role": role, "content": str(m.text)})
    return out


def _usage(prompt_tokens: int, completion_tokens: int) -> UsageMetadata:
    return UsageMetadata(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                         total_tokens=prompt_tokens + completion_tokens)


class ChatLlamaCpp(BaseChatModel):
    """Chat completions from a GGUF file through llama-cpp-python (the file's own chat template)."""

    model_path: str
    model_name: str = ""  # shown in traces; defaults to the file name
    n_ctx: int = 4096
    n_threads: int = 2
    n_gpu_layers: int | None = None  # None: all layers on the GPU when the build supports it, else 0
    lora_path: str = ""  # a GGUF LoRA adapter applied on load, checked against the base first by the caller
    temperature: float = 0.7
    max_tokens: int = 1024
    seed: int | None = None
    stop: list[str] | None = Field(default=None)

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.label, "n_ctx": self.n_ctx, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed}

    @property
    def label(self) -> str:
        return self.model_name or Path(self.model_path).name

    @property
    def key(self) -> tuple[str, int, int, int, str]:
        layers = self.n_gpu_layers
        if layers is None:
            layers = -1 if gpu_offload_supported() else 0
        lora = str(Path(self.lora_path).resolve()) if self.lora_path else ""
        return (str(Path(self.model_path).resolve()), self.n_ctx, self.n_threads, layers, lora)

    @property
    def uses_gpu(self) -> bool:
        return self.key[3] != 0

    @property
    def is_loaded(self) -> bool:
        with _LOCK:
            return self.key in _INSTANCES

    def llama(self) -> Any:
        """The shared `Llama` for this configuration, loaded on first use."""
        key = self.key
        with _LOCK:
            if key not in _INSTANCES:
                _INSTANCES[key] = _load(key)
            return _INSTANCES[key]

    def release(self) -> bool:
        """Free the weights (RAM and GPU memory); the next call reloads them. True if one was loaded."""
        with _LOCK:
            llm = _INSTANCES.pop(self.key, None)
            if llm is None:
                return False
            llm.close()
            del llm
            gc.collect()
            return True

    def reacquire(self) -> None:
        self.llama()

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        stops = [*(self.stop or []), *(stop or [])]
        return {
            "temperature": kwargs.get("temperature", self.temperature),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "seed": kwargs.get("seed", self.seed),
            "stop": stops or None,
        }

    def _call(self, messages: list[BaseMessage], stream: bool, params: dict[str, Any]) -> Any:
        try:
            return self.llama().create_chat_completion(messages=_to_dicts(messages), stream=stream, **params)
        except ValueError as e:  # llama.cpp reports a prompt longer than n_ctx this way
            raise LLMError(f"llama.cpp rejected the request: {e} (raise llm.n_ctx or shorten the prompt)") from e

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        with _LOCK:
            reply = self._call(messages, False, self._params(stop, kwargs))
        choice = reply["choices"][0]
        usage = reply["usage"]
        message = AIMessage(
            content=choice["message"]["content"] or "",
            usage_metadata=_usage(usage["prompt_tokens"], usage["completion_tokens"]),
            response_metadata={"model_name": self.label, "finish_reason": choice["finish_reason"],
                               "model_provider": "llamacpp"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        # llama-cpp-python streams no usage, so count from the context: when the first text chunk
        # arrives the context holds exactly the prompt; at the end it holds prompt + reply, less the
        # last token when the reply was cut at max_tokens (sampled, never evaluated).
        with _LOCK:
            llm = self.llama()
            prompt_tokens: int | None = None
            finish: str | None = None
            for part in self._call(messages, True, self._params(stop, kwargs)):
                choice = part["choices"][0]
                text = choice["delta"].get("content") or ""
                finish = choice.get("finish_reason") or finish
                if text:
                    if prompt_tokens is None:
                        prompt_tokens = llm.n_tokens
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager:
                        run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
            if prompt_tokens is None:
                prompt_tokens = llm.n_tokens
            completion = llm.n_tokens - prompt_tokens + (1 if finish == "length" else 0)
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=_usage(prompt_tokens, completion),
            response_metadata={"model_name": self.label, "finish_reason": finish,
                               "model_provider": "llamacpp"},
            chunk_position="last",
        ))
