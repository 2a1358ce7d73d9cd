"""Tokens per second of the embedded models through the llamacpp backend, side by side in one run.

    .venv/bin/python bench/llm_tokens_per_s.py [--threads 2] [--new-tokens 200] [--repeats 2]

Prompt processing and generation are timed apart (time to first token, then the rest), on a
~300-token prompt that asks for a long answer so the reply runs to --new-tokens.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from langchain_core.messages import HumanMessage, SystemMessage

from nasgraph.agents import llm, models
from nasgraph.config import Config

CONTEXT = (
    "The model receives images of shape (B, 3, 32, 32) and must output logits for 10 classes. "
    "It is trained for one epoch with SGD, lr 0.01, momentum 0.9, batch 128, and evaluated on a "
    "held-out test split. Budgets: at most 5 million parameters and 1 GFLOP per sample. "
)


def prompt() -> list:
    system = "You are an expert PyTorch engineer who writes complete, runnable model modules. " * 3
    task = (CONTEXT * 2 + "Write a class Net(nn.Module) with __init__(self, in_shape, out_shape, prm, device) "
            "and forward(self, x): six convolutional blocks with batch norm and residual connections, "
            "then global average pooling and a linear classifier. Comment every layer in detail.")
    return [SystemMessage(system), HumanMessage(task)]


def measure(chat, messages: list) -> tuple[int, int, float, float]:
    t0 = time.perf_counter()
    t_first = None
    usage = None
    for chunk in chat.stream(messages):
        if t_first is None and chunk.content:
            t_first = time.perf_counter()
        usage = chunk.usage_metadata or usage
    t_end = time.perf_counter()
    return usage["input_tokens"], usage["output_tokens"], t_first - t0, t_end - t_first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=list(models.EMBEDDED))
    args = ap.parse_args()
    cfg = Config()
    print(f"{'model':22} {'prompt':>6} {'new':>4} {'prompt tok/s':>12} {'gen tok/s':>10}")
    for name in args.models:
        base = cfg.llm.model_copy(update={"backend": "llamacpp", "model": name, "threads": args.threads,
                                          "max_tokens": args.new_tokens, "temperature": 0.0, "n_ctx": 2048})
        chat = llm.make_chat_model(base, Path(cfg.models_dir), progress=print)
        chat.invoke("hi", max_tokens=1)  # load outside the timing
        for _ in range(args.repeats):
            n_in, n_out, t_prompt, t_gen = measure(chat, prompt())
            print(f"{name:22} {n_in:6d} {n_out:4d} {n_in / t_prompt:12.1f} {(n_out - 1) / t_gen:10.1f}")
        llm.release(chat, force=True)


if __name__ == "__main__":
    main()
