"""Prompt–code pairs: what a self-improvement cycle fine-tunes the generator on.

A pair is the chat the generator was given (system and user messages) and the reply it should have
written: the evaluated module in one ```python block, the form the extractor reads back. Only the
reply's tokens carry loss; the prompt is context.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field


class Pair(BaseModel):
    messages: list[dict[str, str]]   # [{"role": "system", ...}, {"role": "user", ...}]
    code: str
    arch_id: str = ""
    accuracy: float | None = None
    cycle: int = Field(-1, description="the cycle that produced it; -1 for seeds from outside the cycles")
    source: str = "cycle"

    def reply(self) -> str:
        return f"```python\n{self.code.strip()}\n```"


def write_pairs(pairs: Iterable[Pair], path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for p in pairs:
            f.write(p.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def read_pairs(path: Path) -> list[Pair]:
    path = Path(path)
    if not path.is_file():
        return []
    return [Pair.model_validate(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def encode(pair: Pair, tokenizer, max_tokens: int) -> tuple[list[int], list[int]] | None:
    """(input ids, labels) with the prompt masked (-100), or None if the whole chat exceeds `max_tokens`:
    a reply cut short would teach the model to stop mid-module."""
    prompt = tokenizer.apply_chat_template(pair.messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*pair.messages, {"role": "assistant", "content": pair.reply()}],
                                         tokenize=False)
    if not full.startswith(prompt):  # a template that rewrites earlier turns: mask by length would be wrong
        raise ValueError("the chat template does not extend the prompt with the reply")
    # Tokenized apart, as at generation time: the reply's tokens start after the prompt's last token
    # (tokenizing the whole chat could merge the boundary into one token the model never emits).
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    if len(prompt_ids) + len(reply_ids) > max_tokens:
        return None
    return prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids
