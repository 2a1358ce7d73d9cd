"""One timed chat call with token accounting, the same for every backend."""
from __future__ import annotations

import time
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from nasgraph.agents.prompts import RenderedPrompt
from nasgraph.errors import NasgraphError


class AgentError(NasgraphError, RuntimeError):
    """The LLM backend failed (unreachable server, model not loaded, ...)."""


@dataclass(frozen=True)
class Reply:
    text: str
    tokens_in: int
    tokens_out: int
    estimated: bool
    seconds: float
    cut: bool = False  # stopped at the token limit, not at its end


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    # Some backends return content blocks; keep the text ones.
    return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)


def _usage(message: BaseMessage) -> tuple[int, int] | None:
    """Token counts from whichever field the backend fills (LangChain standard first)."""
    if isinstance(message, AIMessage) and message.usage_metadata:
        u = message.usage_metadata
        return int(u.get("input_tokens", 0)), int(u.get("output_tokens", 0))
    meta = getattr(message, "response_metadata", None) or {}
    tu = meta.get("token_usage") or meta.get("usage")
    if isinstance(tu, dict) and ("prompt_tokens" in tu or "completion_tokens" in tu):
        return int(tu.get("prompt_tokens") or 0), int(tu.get("completion_tokens") or 0)
    if "prompt_eval_count" in meta or "eval_count" in meta:  # Ollama's native fields
        return int(meta.get("prompt_eval_count") or 0), int(meta.get("eval_count") or 0)
    return None


def _cut(message: BaseMessage) -> bool:
    """Whether the backend stopped the reply at its token limit (OpenAI-style finish_reason, Ollama's done_reason)."""
    meta = getattr(message, "response_metadata", None) or {}
    return "length" in (meta.get("finish_reason"), meta.get("done_reason"))


def estimate_tokens(text: str) -> int:
    # ~4 characters per token for English and Python with a BPE vocabulary; only used for traces
    # when the backend reports nothing (LangChain's own counter would download a tokenizer).
    return max(1, len(text) // 4) if text else 0


def call(llm: BaseChatModel, system: RenderedPrompt, user: RenderedPrompt, agent: str) -> Reply:
    messages = [SystemMessage(content=system.text), HumanMessage(content=user.text)]
    start = time.perf_counter()
    try:
        message = llm.invoke(messages)
    except Exception as exc:  # backend errors come in many types; the graph needs one
        raise AgentError(f"{agent}: the LLM call failed: {type(exc).__name__}: {exc}") from exc
    seconds = time.perf_counter() - start
    text = _text(message)
    usage = _usage(message)
    if usage is None:
        return Reply(text, estimate_tokens(system.text + user.text), estimate_tokens(text), True, seconds,
                     _cut(message))
    return Reply(text, usage[0], usage[1], False, seconds, _cut(message))
