"""`nasgraph chat` with a scripted LLM, for the pseudo-terminal tests: the real command line, parser and
REPL, with only the LLM replaced (through nasgraph.chat.LLM_FACTORY, the injection point the chat reads).

Designs, in order: a valid model, two different shape errors (the repair fails too), then distinct valid
models. Questions the chat cannot answer from the records get the answers queued here."""
import sys

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from nasgraph import chat, cli
from tests import candidates as C
from tests.fakes import FakeHandle, ScriptedChatModel


def shape_error(channels: int) -> str:
    return C.wide(channels).replace("nn.Linear(4 *", "nn.Linear(5 *")


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


if __name__ == "__main__":
    handle = scripted_handle()
    chat.LLM_FACTORY = lambda cfg, progress=None: handle
    sys.exit(cli.main(sys.argv[1:]))
