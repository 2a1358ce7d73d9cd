"""Code Generator and Prompt Improver as plain functions, driven by LangChain's fake chat models."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import ValidationError

from nasgraph.agents import code_generator as cg
from nasgraph.agents import prompt_improver as pi
from nasgraph.agents.feedback import error_hint, key_error_line, offending_line
from nasgraph.agents.prompts import pair_sha, render
from nasgraph.agents.schemas import BestDesign, HistoryEntry, Task, Triple
from nasgraph.tools.evaluator.diagnosis import Diagnosis, classify_message

GOOD = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, out_shape[0])
        self.to(device)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))
"""
SHAPE_ERROR = (
    "Traceback (most recent call last):\n"
    '  File "/usr/lib/python3/site-packages/torch/nn/modules/module.py", line 1751, in _call_impl\n'
    '  File "<candidate>", line 16, in forward\n'
    "RuntimeError: mat1 and mat2 shapes cannot be multiplied (128x3136 and 512x10)"
)
TASK = Task(dataset="fashion-mnist", in_shape=(128, 1, 28, 28), classes=10, max_params=2_000_000,
            max_flops=300_000_000, epochs=1, goal="keep it under a minute per epoch")


class Recording(GenericFakeChatModel):
    """Replays scripted replies and keeps the messages it was sent."""
    seen: list[list[BaseMessage]] = []

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(messages)
        return super()._generate(messages, *args, **kwargs)


def recording(*replies: str | AIMessage) -> Recording:
    return Recording(messages=iter(replies), seen=[])


class Broken(FakeListChatModel):
    def _call(self, *args: Any, **kwargs: Any) -> str:
        raise ConnectionError("connection refused")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NASGRAPH_HOME", str(tmp_path))


def entry(i: int, status: str = "ok", acc: float | None = 0.85, error: str = "",
          novelty: float | None = 0.6, mod: str = "add a conv stage") -> HistoryEntry:
    return HistoryEntry(iteration=i, triple=Triple(problem="p", modification=mod, expected_effect="e"),
                        status=status, accuracy=acc if status == "ok" else None,
                        params=120_000 if status == "ok" else None, error=error, novelty=novelty)


# ---- Code Generator -------------------------------------------------------------------------------

def test_generate_extracts_code_and_carries_prompt_and_tokens() -> None:
    msg = AIMessage(content=f"Here it is:\n```python\n{GOOD}```",
                    usage_metadata={"input_tokens": 900, "output_tokens": 150, "total_tokens": 1050})
    llm = recording(msg)
    gen = cg.generate(llm, TASK, "use residual blocks with 32 channels", [entry(1)], None)
    assert gen.code == GOOD and gen.extract_source == "fence"
    assert gen.prompt_name == "code_generator.user"
    assert gen.prompt_sha == pair_sha(render("code_generator.system"), cg.build_prompt(TASK, "x", [], None))
    assert (gen.tokens_in, gen.tokens_out, gen.tokens_estimated) == (900, 150, False)
    assert gen.seconds >= 0 and gen.reply.startswith("Here it is")

    system, user = (m.content for m in llm.seen[0])
    # The contract, stated precisely, and the rules against the measured failures.
    for needle in ("class Net(nn.Module)", "__init__(self, in_shape, out_shape, prm, device)",
                   "(B, C, H, W)", "out_shape[0]", "nn.AdaptiveAvgPool2d(1)", "torch.flatten(x, 1)",
                   "groups", "nn.SeparableConv2d", "import torch.nn as nn", "no training loop", "# Design:"):
        assert needle in system, needle
    assert "```python\n" not in system  # no example model to copy
    for needle in ("(128, 1, 28, 28)", "Classes: 10", "2M parameters", "300M FLOPs",
                   "use residual blocks with 32 channels", "keep it under a minute per epoch",
                   "#1 tried: add a conv stage -> ok acc=0.850 params=120k", "must visibly contain this change"):
        assert needle in user, needle


def test_generate_estimates_tokens_when_backend_reports_none() -> None:
    gen = cg.generate(FakeListChatModel(responses=[GOOD]), TASK, "x", [], None)
    assert gen.tokens_estimated and gen.tokens_in > 100 and gen.tokens_out > 10
    assert gen.code == GOOD and gen.extract_source == "bare"


def test_generate_shows_best_design_and_blocks_within_budget() -> None:
    big_best = GOOD + "".join(f"\n\nclass Block{i}(nn.Module):\n    '''doc'''\n    # comment\n"
                              f"    def forward(self, x):\n        return x * {i}\n" for i in range(200))
    best = BestDesign(arch_id="a1", code=big_best, accuracy=0.9012, params=345_678)
    blocks = [f"class B{i}(nn.Module):\n" + "    pass\n" * 300 for i in range(5)]
    history = [entry(i, mod="m" * 500) for i in range(20)]
    user = cg.build_prompt(TASK, "add squeeze-excitation", history, best, blocks)
    assert len(user.text) <= cg.USER_CHAR_BUDGET
    assert "accuracy 0.901, 345.7k parameters" in user.text
    # the best design appears as the kinds of layer it uses: no code or widths to hand back with a tweak
    assert "built from Conv2d x1, AdaptiveAvgPool2d x1, Linear x1." in user.text
    assert "def forward" not in user.text and "'''doc'''" not in user.text and "(16" not in user.text
    assert "add squeeze-excitation" in user.text
    # A small prompt keeps one block.
    small = cg.build_prompt(TASK, "x", [], None, ["class B(nn.Module):\n    pass\n"])
    assert "Tested building blocks" in small.text and "class B(nn.Module)" in small.text


def test_layer_kinds_count_torch_layers_without_widths() -> None:
    block = ("class Block(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
             "        self.dw = nn.Sequential(nn.Conv2d(c, c, 3, groups=c), nn.Conv2d(c, 2 * c, 1))\n\n\nclass Net(")
    assert cg.layer_kinds(GOOD.replace("class Net(", block)) == \
        "Conv2d x3, Sequential x1, AdaptiveAvgPool2d x1, Linear x1"
    assert cg.layer_kinds("def broken(:") == ""


def test_compact_code_keeps_code_drops_noise() -> None:
    code = '"""Module doc."""\nimport torch\n\n# note\nclass A:\n    """Doc."""\n    x = 1\n'
    assert cg.compact_code(code, 1000) == "import torch\nclass A:\n    x = 1"
    assert cg.compact_code(code, 20).endswith("# ... (truncated)")


def test_empty_instruction_gets_a_default() -> None:
    assert "Design a sound, efficient convolutional network" in cg.build_prompt(TASK, "  ", [], None).text


def test_repair_puts_error_line_and_hint_in_prompt_and_restores_imports() -> None:
    broken = GOOD.replace("return self.fc(torch.flatten(x, 1))", "return self.fc(x.view(x.size(0), -1))")
    fixed_without_imports = GOOD.replace("import torch.nn as nn\n", "").replace("import torch.nn.functional as F\n", "")
    llm = recording(f"```python\n{fixed_without_imports}```")
    gen = cg.repair(llm, TASK, broken, SHAPE_ERROR, "shape_error")
    assert gen.prompt_name == "code_generator.repair"
    assert gen.added_imports == ["import torch.nn as nn", "import torch.nn.functional as F"]
    compile(gen.code, "<candidate>", "exec")
    user = llm.seen[0][1].content
    assert "Status: shape_error" in user
    assert "mat1 and mat2 shapes cannot be multiplied" in user
    assert "Offending line 16: return self.fc(x.view(x.size(0), -1))" in user
    assert "nn.AdaptiveAvgPool2d(1)" in user  # the hint for this failure
    assert broken.strip() in user


def test_a_cut_reply_is_flagged_and_asked_again_by_design_not_code() -> None:
    cut = AIMessage(content="```python\n# Design: six conv stages\n" + GOOD.split("def forward")[0],
                    response_metadata={"finish_reason": "length"})
    gen = cg.generate(recording(cut), TASK, "six conv stages", [], None)
    assert gen.cut and not cg.generate(recording(f"```python\n{GOOD}```"), TASK, "x", [], None).cut
    llm = recording(f"```python\n{GOOD}```")
    again = cg.shorten(llm, TASK, gen.code)
    assert again.prompt_name == "code_generator.shorten" and not again.cut
    user = llm.seen[0][1].content
    assert "Its design: Design: six conv stages" not in user and "Its design: six conv stages" in user
    assert "Its layers so far: Conv2d x1, AdaptiveAvgPool2d x1, Linear x1" in user
    assert "self.conv" not in user  # the design is named, not shown: shown, it came back as long


def test_llm_failure_is_a_clear_agent_error() -> None:
    with pytest.raises(cg.AgentError, match="code_generator: the LLM call failed: ConnectionError"):
        cg.generate(Broken(responses=["x"]), TASK, "x", [], None)
    with pytest.raises(pi.AgentError, match="prompt_improver"):
        pi.improve(Broken(responses=["x"]), TASK, None, [], None)


def test_task_rejects_bad_shapes() -> None:
    with pytest.raises(ValidationError, match="in_shape"):
        Task(dataset="x", in_shape=(0, 1, 28, 28), classes=10, max_params=1, max_flops=1)
    with pytest.raises(ValidationError):
        Task(dataset="x", in_shape=(1, 28, 28), classes=10, max_params=1, max_flops=1)


# ---- Prompt Improver ------------------------------------------------------------------------------

def test_improve_parses_labelled_format_with_markdown_and_wrapping() -> None:
    reply = ("Here is my analysis.\n**PROBLEM:** the network is too shallow\n"
             "**Suggested modification:** add two residual blocks\nwith 64 channels each\n"
             "- Expected effect: +2% accuracy\n\nGood luck!")
    llm = recording(reply)
    triple, meta = pi.improve(llm, TASK, entry(3), [entry(2), entry(3)], None)
    assert triple == Triple(problem="the network is too shallow",
                            modification="add two residual blocks with 64 channels each",
                            expected_effect="+2% accuracy")
    assert meta.parse_mode == "labelled" and meta.parsed and not meta.explore
    assert meta.prompt_name == "prompt_improver.user" and meta.reply == reply and meta.tokens_in > 0
    user = llm.seen[0][1].content
    assert "Last result: #3 tried: add a conv stage -> ok acc=0.850" in user
    assert "raise accuracy" in user


def test_improve_parses_json() -> None:
    reply = 'Sure:\n```json\n{"problem": "overfits", "modification": "add dropout 0.3", "expected_effect": "better test acc"}\n```'
    triple, meta = pi.improve(FakeListChatModel(responses=[reply]), TASK, entry(1), [entry(1)], None)
    assert (triple.problem, triple.modification, triple.expected_effect) == ("overfits", "add dropout 0.3", "better test acc")
    assert meta.parse_mode == "json"


def test_improve_falls_back_on_garbage_after_a_failure() -> None:
    last = entry(4, status="shape_error", error=SHAPE_ERROR).model_copy(update={"diagnosis": {
        "kind": "linear_size", "got": [3136], "expected": [512], "input_shapes": [[128, 3136]]}})
    llm = recording("I think the model could be improved in many ways.")
    triple, meta = pi.improve(llm, TASK, last, [last], None)
    assert meta.parse_mode == "fallback" and not meta.parsed
    assert triple.modification.startswith(pi.MOVES[5])  # the next design, not a fix of dropped code
    assert "Avoid the last model's error (RuntimeError: mat1 and mat2" in triple.modification
    assert "AdaptiveAvgPool2d(1)" in triple.modification
    user = llm.seen[0][1].content
    assert "Error (last lines):" in user and "cannot hit that error" in user
    assert pi.MOVES[0] in user  # the untried moves are offered


def test_a_repeated_modification_gives_way_to_the_next_untried_move() -> None:
    # Seen from the 1.5B improver: "Replace the Flatten layer with a Sequential ..." five times running.
    asked = "Replace the `Flatten` layer with a `Sequential` layer that only contains `nn.Flatten`."
    history = [entry(3, mod=asked), entry(4, mod="add a conv stage")]
    reply = "PROBLEM: flatten\nMODIFICATION: Replace the Flatten layer with a Sequential layer containing only nn.Flatten\n"
    triple, meta = pi.improve(recording(reply + "EXPECTED: ok"), TASK, history[-1], history, None)
    assert meta.repeated and meta.parsed and triple.modification in pi.MOVES
    fresh = "MODIFICATION: add squeeze-excitation to every stage, reduction 4\n"
    triple, meta = pi.improve(recording(fresh), TASK, history[-1], history, None)
    assert not meta.repeated and triple.modification == "add squeeze-excitation to every stage, reduction 4"


def test_fallback_after_success_rotates_and_skips_tried_moves() -> None:
    seen = {pi.fallback_triple(entry(i), [entry(i)], None).modification for i in range(len(pi.MOVES))}
    assert seen == set(pi.MOVES)
    tried = [entry(0, mod=pi.MOVES[1])]
    assert pi.fallback_triple(entry(0, mod=pi.MOVES[1]), tried, None).modification == pi.MOVES[2]
    best = BestDesign(arch_id="b", code=GOOD, accuracy=0.88, params=1000)
    assert "best so far 0.880" in pi.fallback_triple(entry(0), [], best).problem
    assert "no design" in pi.fallback_triple(None, [], None).problem
    # A parent's fallback is one of the edits a parent is offered, not a fresh design's family move.
    assert pi.fallback_triple(entry(0), [], None, moves=pi.PARENT_MOVES).modification in pi.PARENT_MOVES


@pytest.mark.parametrize("last", [entry(5, status="duplicate", novelty=0.0), entry(5, novelty=0.03)])
def test_duplicate_or_near_copy_forces_exploration(last: HistoryEntry) -> None:
    # Parsed reply that proposes only a tweak: the explore demand is appended.
    llm = recording("PROBLEM: ok\nMODIFICATION: widen the convs to 48 channels\nEXPECTED: small gain")
    triple, meta = pi.improve(llm, TASK, last, [last], None, novelty_threshold=0.1)
    assert meta.explore and triple.modification.endswith(pi.EXPLORE)
    assert "structurally different architecture" in llm.seen[0][1].content
    # Garbage reply: the fallback asks for a different design too.
    triple, meta = pi.improve(FakeListChatModel(responses=["??"]), TASK, last, [last], None)
    assert meta.parse_mode == "fallback" and pi.EXPLORE in triple.modification


def test_user_goal_reaches_the_improver_prompt() -> None:
    llm = recording("MODIFICATION: widen it")
    triple, _ = pi.improve(llm, TASK, None, [], None, user_goal="prefer depthwise convs")
    assert "User's goal: prefer depthwise convs" in llm.seen[0][1].content
    assert triple.modification == "widen it" and triple.problem == "no design has been evaluated yet"


def test_window_keeps_last_k() -> None:
    h = [entry(i) for i in range(7)]
    assert [e.iteration for e in pi.window(h, 5)] == [2, 3, 4, 5, 6]
    assert pi.window(h, 10) == h and pi.window(h, 0) == [] and pi.window([], 3) == []
    with pytest.raises(ValueError):
        pi.window(h, -1)


def test_triple_as_instruction() -> None:
    t = Triple(problem="too slow", modification="use stride 2 early", expected_effect="2x faster")
    assert t.as_instruction() == "use stride 2 early (Problem: too slow) (Expected: 2x faster)"


# ---- feedback helpers -----------------------------------------------------------------------------

def test_offending_line_by_traceback_or_name() -> None:
    assert offending_line(GOOD, SHAPE_ERROR) == "line 16: return self.fc(torch.flatten(x, 1))"
    err = "AttributeError: 'Net' object has no attribute 'bn9'"
    code = GOOD.replace("x = self.pool(", "x = self.bn9(x)\n        x = self.pool(")
    assert offending_line(code, err) == "line 15: x = self.bn9(x)"
    assert offending_line(GOOD, "SyntaxError: invalid syntax (<unknown>, line 9)").startswith("line 9: self.conv")
    assert offending_line(GOOD, "boom") == ""


def _diag(error: str) -> Diagnosis:
    """The diagnosis the evaluator's child gives an exception with this type and torch message."""
    exc_type, _, message = error.partition(": ")
    return classify_message(exc_type, message)


def test_error_hints_pick_the_right_failure() -> None:
    chan = ("RuntimeError: Given groups=1, weight of size [64, 32, 3, 3], expected input[128, 16, 28, 28] "
            "to have 32 channels, but got 16 channels instead")
    assert "Channel counts disagree" in error_hint("shape_error", _diag(chan))
    assert "divide" in error_hint("build_error", _diag("ValueError: in_channels must be divisible by groups"))
    assert "flattened (2-D)" in error_hint("shape_error", _diag(
        "ValueError: expected 4D input (got 2D input)"))
    assert "flattened (2-D)" in error_hint("shape_error", _diag(
        "RuntimeError: Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [128, 3136]"))
    assert "flattened (2-D)" not in error_hint("shape_error", _diag("ValueError: expected 2D or 3D input (got 4D input)"))
    assert "exact signatures" in error_hint("build_error", _diag(
        "TypeError: Block.forward() takes 2 positional arguments but 3 were given"))
    assert "does not exist" in error_hint("build_error", _diag(
        "AttributeError: module 'torch.nn' has no attribute 'SeparableConv2d'"))
    assert "smaller" in error_hint("over_budget", Diagnosis(kind="over_budget"))
    assert "smaller" in error_hint("over_budget", None)  # no diagnosis (an old record): the status's hint
    assert key_error_line(SHAPE_ERROR).startswith("RuntimeError: mat1")


def test_hints_carry_the_numbers_to_fix() -> None:
    # Seen from the 1.5B model: told only "match the flattened size", it returned its code unchanged.
    flat = error_hint("shape_error", _diag("RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x1152 and 3136x128)"))
    assert "has 1152 features" in flat and "expects 3136" in flat
    slow = error_hint("over_budget", Diagnosis(kind="over_budget", budgets={"epoch time": [613.1, 180.0]}))
    assert "3.4x over" in slow and "by about 1.8" in slow
    big = error_hint("over_budget", {"kind": "over_budget", "budgets": {"parameters": [13_318_154, 5_000_000],
                                                                        "FLOPs": [5_212_805_120, 1_000_000_000]}})
    assert "5.2x over" in big  # the worse of the two overruns
    unflat = _diag("RuntimeError: mat1 and mat2 shapes cannot be multiplied (896x7 and 576x1024)")
    unflat = unflat.model_copy(update={"input_shapes": [[128, 64, 14, 7]]})  # the Linear's input, as the child saw it
    assert "x was never flattened" in error_hint("shape_error", unflat)


def test_flatten_misuse_hints() -> None:
    assert "x = torch.flatten(x, 1)" in error_hint("runtime_error", _diag(
        "AttributeError: 'Net' object has no attribute 'flatten'"))
    assert "Only nn.Module layers" in error_hint("build_error", _diag(
        "TypeError: cannot assign 'torch._VariableFunctionsClass.flatten' as child module 'flatten' "
        "(torch.nn.Module or None expected)"))


def test_json_parse_finds_nested_object_and_skips_broken_ones() -> None:
    reply = 'Note {not json}. {"answer": {"Problem": "slow", "Modification": "use stride 2", "Expected": "faster"}}'
    found, mode = pi.parse_triple(reply)
    assert mode == "json" and found == {"problem": "slow", "modification": "use stride 2", "expected_effect": "faster"}
    assert pi.parse_triple('{"problem": "only a problem"}') == ({}, "fallback")


def test_echoed_format_placeholders_are_not_a_triple() -> None:
    assert pi.parse_triple("PROBLEM: ...\nMODIFICATION: ...\nEXPECTED: ...")[1] == "fallback"
    assert pi.parse_triple("PROBLEM: <what>\nMODIFICATION: <one concrete change>\nEXPECTED: <x>")[1] == "fallback"
