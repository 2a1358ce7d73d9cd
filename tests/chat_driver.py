"""`nasgraph chat` with a scripted LLM, for the pseudo-terminal tests: the real command line, parser and
REPL, with only the LLM replaced (through nasgraph.chat.LLM_FACTORY, the injection point the chat reads).

Also `Screen`, which reads a pseudo-terminal the way a person reads the screen (escape codes removed).

Designs, in order: a valid model, two different shape errors (the repair fails too), then distinct valid
models. Questions the chat cannot answer from the records get the answers queued here."""
import re
import sys
import time

import pexpect
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from nasgraph import chat, cli
from tests import candidates as C
from tests.fakes import FakeHandle, ScriptedChatModel
from tests.trace_run import shape_error


def designs() -> list[str]:
    return [C.fenced(c) for c in [C.wide(5), shape_error(6), shape_error(7)] + [C.wide(w) for w in range(9, 60)]]


class ChatScriptedModel(ScriptedChatModel):
    """Also answers the chat's own questions (told apart by its system prompt)."""
    answers: list[str] = []
    prompts: list[str] = []  # every user message, to check what the agents were told

    def _generate(self, messages, stop=None, run_manager=None, **kw) -> ChatResult:
        self.prompts.append(str(messages[-1].content))
        if "assistant of nasgraph" in str(messages[0].content):
            self.calls.append("chat")
            text = self.answers.pop(0) if self.answers else "I cannot tell from the records."
            return ChatResult(generations=[ChatGeneration(message=AIMessage(
                content=text, usage_metadata={"input_tokens": 50, "output_tokens": 9, "total_tokens": 59}))])
        return super()._generate(messages, stop, run_manager, **kw)


def scripted_handle(answers: list[str] | None = None) -> FakeHandle:
    return FakeHandle(ChatScriptedModel(improver=[], generator=designs(), calls=[], prompts=[],
                                        answers=list(answers or ["The scripted model says: add more channels."])))


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Screen:
    """What the terminal shows, escape codes removed; expect() moves forward through it like a reader."""

    def __init__(self, child: pexpect.spawn):
        self.child, self.raw, self.text, self.pos = child, "", "", 0

    def expect(self, pattern: str, timeout: float = 90) -> re.Match:
        rx, end = re.compile(pattern), time.time() + timeout
        while True:
            m = rx.search(self.text, self.pos)
            if m:
                self.pos = m.end()
                return m
            if time.time() > end or not self.child.isalive() and not self._read():
                raise AssertionError(f"{pattern!r} not on screen; it shows:\n{self.text[-2000:]}")
            self._read()

    def _read(self) -> bool:
        try:
            self.raw += self.child.read_nonblocking(4096, timeout=0.2)
        except (pexpect.TIMEOUT, pexpect.EOF):
            return False
        # The whole output is cleaned again: an escape code may be split across two reads.
        self.text = ANSI.sub("", self.raw)
        return True

    def prompt(self) -> None:
        self.expect("you›")


if __name__ == "__main__":
    handle = scripted_handle()
    chat.LLM_FACTORY = lambda cfg, progress=None: handle
    sys.exit(cli.main(sys.argv[1:]))
