"""A scripted chat model for routing tests: it answers the Prompt Improver and the Code Generator from
separate queues (told apart by their system prompts). It never stands in for a claim about what the
real system does; those are made by integration tests on the embedded model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

CUT = "<<cut>>"  # a scripted reply that starts with this stops at the token limit, as a backend reports it


class ScriptedChatModel(BaseChatModel):
    improver: list[str] = []
    generator: list[str] = []
    calls: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kw: Any) -> ChatResult:
        system = str(messages[0].content)
        role = "improver" if "PROBLEM:" in system else "generator"
        queue = self.improver if role == "improver" else self.generator
        self.calls.append(role)
        text = queue.pop(0) if queue else (
            "PROBLEM: none\nMODIFICATION: widen the first conv\nEXPECTED: better" if role == "improver" else "")
        cut = text.startswith(CUT)
        text = text.removeprefix(CUT)
        msg = AIMessage(content=text, usage_metadata={"input_tokens": 10, "output_tokens": len(text) // 4,
                                                      "total_tokens": 10 + len(text) // 4},
                        response_metadata={"finish_reason": "length" if cut else "stop"})
        return ChatResult(generations=[ChatGeneration(message=msg)])


@dataclass
class FakeHandle:
    """Stands in for nasgraph.agents.llm's handle: the chat model plus the names the trace records."""
    chat: BaseChatModel
    backend: str = "scripted"
    model: str = "scripted"
    releases: list[int] = field(default_factory=list)

    temperatures: list[float | None] = field(default_factory=list)

    def at_step(self, step: int, temperature: float | None = None) -> BaseChatModel:
        self.temperatures.append(temperature)
        return self.chat

    def release_for_training(self) -> None:
        self.releases.append(1)


class SeededChatModel(BaseChatModel):
    """Replies that depend only on the seed and the prompt, like a real model sampling at a fixed seed:
    the same step asked the same thing gives the same answer, in any thread and any order."""
    seed: int = 0

    @property
    def _llm_type(self) -> str:
        return "seeded"

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kw: Any) -> ChatResult:
        import zlib

        from tests import candidates as C

        h = zlib.crc32("\n".join(str(m.content) for m in messages).encode()) + self.seed
        if "PROBLEM:" in str(messages[0].content):
            text = f"PROBLEM: p{h % 97}\nMODIFICATION: use {8 + h % 9} channels in the first conv\nEXPECTED: better"
        else:
            text = C.fenced(C.wide(4 + h % 29))
        msg = AIMessage(content=text, usage_metadata={"input_tokens": 10, "output_tokens": len(text) // 4,
                                                      "total_tokens": 10 + len(text) // 4},
                        response_metadata={"finish_reason": "stop"})
        return ChatResult(generations=[ChatGeneration(message=msg)])


@dataclass
class SeededHandle:
    """A handle whose chat model is seeded per step, as the real handle's is."""
    backend: str = "seeded"
    model: str = "seeded"

    def at_step(self, step: int, temperature: float | None = None) -> BaseChatModel:
        return SeededChatModel(seed=step)

    def release_for_training(self) -> None:
        pass
