"""One GPU shared by the LLM and training (`llm.gpu_share`, `loop.in_flight`), measured round by round.

A round is what one loop iteration does on a GPU machine: the LLM writes a design, then the evaluator
trains a candidate for one epoch. Three ways to share, each for --rounds rounds on the same prompt:
  release  the LLM's weights are freed before training (`gpu_share = "release"`) and reloaded by the
           next generation: the GPU holds one thing at a time
  keep     the LLM stays on the GPU beside training (`gpu_share = "keep"`)
  overlap  keep, and the next design is written while this one trains (`loop.in_flight = 2`)
Also: the LLM's GPU memory (nvidia-smi, device-wide, so the evaluator's children are counted the same
way), its load time from the page cache, and training and generation each alone as the yardstick.
The LLM is the project's own llama.cpp chat model, the evaluator its own sandbox; `--gguf` may be a
random-weight stand-in of the real file (`bench.gguf_standin`): memory and speed depend on shapes.

Run: python -m bench.gpu_share --gguf MODEL.gguf [--rounds 3] [--tokens 256] [--dataset fashion-mnist]
     [--out share.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench.device import _outcome, _req
from bench.llm_tokens_per_s import measure, prompt
from nasgraph.agents import llm
from nasgraph.agents.llamacpp_chat import ChatLlamaCpp, gpu_offload_supported
from nasgraph.tools.evaluator import Evaluator
from nasgraph.tools.evaluator.reference_models import reference_source
from nasgraph.tools.hardware import gpu_memory_mib


def gpu_used_mib() -> int | None:
    return gpu_memory_mib("memory.used")


def generate(chat: ChatLlamaCpp) -> dict:
    t = time.perf_counter()
    loaded = chat.is_loaded
    chat.llama()
    load_s = time.perf_counter() - t
    n_in, n_out, t_prompt, t_gen = measure(chat, prompt())
    return {"load_s": round(0.0 if loaded else load_s, 3), "prompt_tokens": n_in, "tokens": n_out,
            "gen_s": round(time.perf_counter() - t, 3), "tok_per_s": round((n_out - 1) / t_gen, 1)}


def one_round(mode: str, chat: ChatLlamaCpp, ev: Evaluator, req) -> dict:
    t = time.perf_counter()
    if mode == "overlap":  # this round's design trains while the next one is written
        pending = ev.submit(req)
        gen = generate(chat)
        out = pending.result()
    else:
        gen = generate(chat)
        if mode == "release":
            llm.release(chat, "release")
        out = ev.evaluate(req)
    wall = time.perf_counter() - t
    return {**gen, "train_s": out.seconds.get("train"), "status": out.status, "wall_s": round(wall, 3)}


def summary(rounds: list[dict]) -> dict:
    keys = ("wall_s", "gen_s", "load_s", "tok_per_s", "train_s")
    return {k: round(statistics.mean(r[k] or 0.0 for r in rounds), 3) for k in keys} | {
        "statuses": [r["status"] for r in rounds]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("share.json"))
    args = ap.parse_args()
    report: dict = {"machine": {"python": platform.python_version(), "gpu_offload": gpu_offload_supported()},
                    "gguf": args.gguf.name, "gguf_mib": round(args.gguf.stat().st_size / 2**20), "dataset": args.dataset,
                    "tokens": args.tokens}
    start = time.perf_counter()

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - start, 1)
        args.out.write_text(json.dumps(report, indent=1))

    chat = ChatLlamaCpp(model_path=str(args.gguf), n_ctx=4096, n_threads=args.threads, max_tokens=args.tokens,
                        temperature=0.7, seed=0)
    data_dir = Path(tempfile.mkdtemp(prefix="nasgraph-share-")) / "data"
    req = _req(reference_source("tiny_cnn"), args.dataset, args.device)
    with Evaluator(data_dir, workers=1, policy=False) as ev:
        ev.evaluate(req)  # warm: dataset cache, first fork, the child's CUDA context
        memory = {"idle_mib": gpu_used_mib()}
        loads = []
        for _ in range(2):  # the second load finds the file in the page cache, as every reload does
            t = time.perf_counter()
            chat.llama()
            loads.append(round(time.perf_counter() - t, 3))
            memory.setdefault("llm_loaded_mib", gpu_used_mib())
            chat.release()
        report["llm_load_s"] = loads
        alone_gen = [generate(chat) for _ in range(2)][1:]  # loaded and warm
        memory["llm_after_generation_mib"] = gpu_used_mib()
        chat.release()
        memory["released_mib"] = gpu_used_mib()
        alone_train = [_outcome(ev.evaluate(req), 0.0)["train_s"] for _ in range(2)]
        report["alone"] = {"gen": alone_gen[0], "train_s": alone_train}
        report["memory"] = memory
        save()
        report["modes"] = {}
        for mode in ("release", "keep", "overlap"):
            chat.llama()  # every mode starts with the LLM loaded, as after a generation
            rounds = [one_round(mode, chat, ev, req) for _ in range(args.rounds)]
            report["modes"][mode] = {"rounds": rounds, **summary(rounds)}
            save()
        chat.release()
    base = report["modes"]["release"]["wall_s"]
    report["wall_vs_release"] = {m: round(v["wall_s"] / base, 3) for m, v in report["modes"].items()}
    save()
    print(json.dumps({k: v for k, v in report.items() if k != "modes"}, indent=1))
    for mode, v in report["modes"].items():
        print(f"{mode:8} wall {v['wall_s']:6.2f} s  gen {v['gen_s']:6.2f} s (load {v['load_s']:.2f} s, "
              f"{v['tok_per_s']:.0f} tok/s)  train {v['train_s']:.2f} s  {v['statuses']}")


if __name__ == "__main__":
    main()
