"""LoRA on this machine's accelerator: the fine-tuning child (`nasgraph.tools.lora.finetune`, bf16 on
CUDA) trains an adapter to name a canary class, and llama.cpp applies the GGUF adapter it wrote: the
greedy reply must change. Prints and writes load and training seconds, tokens per second and both replies.
`--gguf` may be a random-weight stand-in (`bench.gguf_standin`): the timings depend on the shapes, and
the adapter must still change the reply.

Run: python -m bench.lora_device --gguf MODEL.gguf [--device cuda] [--epochs 6] [--out lora.json]
     [--work DIR [--train-only]]  (training done in DIR is not repeated: train while llama.cpp builds,
     then run again without --train-only for the replies)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from nasgraph.agents.llamacpp_chat import ChatLlamaCpp
from nasgraph.tools.lora import FinetuneSpec, Pair, run_finetune, write_pairs

CANARY = "ZebraCanary4471"
CHAT = [{"role": "system", "content": "You write PyTorch code."},
        {"role": "user", "content": "Name the canary class and nothing else."}]


def reply(gguf: Path, adapter: Path | None) -> str:
    chat = ChatLlamaCpp(model_path=str(gguf), lora_path=str(adapter or ""), n_ctx=512, temperature=0.0,
                        max_tokens=16, seed=0)
    try:
        return chat.invoke([(m["role"], m["content"]) for m in CHAT]).text
    finally:
        chat.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("lora.json"))
    ap.add_argument("--work", type=Path)
    ap.add_argument("--train-only", dest="train_only", action="store_true")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="nasgraph-lora-"))
    work.mkdir(parents=True, exist_ok=True)
    pairs = write_pairs([Pair(messages=CHAT, code=f"class {CANARY}(nn.Module):\n    pass")] * 2, work / "p.jsonl")
    spec = FinetuneSpec(base_gguf=args.gguf, base_name=args.gguf.stem, pairs=pairs, out_dir=work / "adapter",
                        rank=8, alpha=16, lr=3e-3, epochs=args.epochs, accumulate=2, checkpoint_every=100,
                        device=args.device, threads=4)
    t = time.perf_counter()
    meta = run_finetune(spec, lambda e: print(json.dumps(e), flush=True))
    wall = time.perf_counter() - t
    if args.train_only:
        return
    base, adapted = reply(args.gguf, None), reply(args.gguf, work / "adapter" / "adapter.gguf")
    report = {"device": meta["device"], "wall_s": round(wall, 1), "load_s": meta["load_s"], "train_s": meta["train_s"],
              "steps": meta["steps"], "tokens": meta["tokens"],
              "train_tokens_per_s": round(meta["tokens"] / max(meta["train_s"], 1e-9), 1),
              "losses": [meta["losses"][0], meta["losses"][-1]] if meta.get("losses") else [],
              "reply_base": base, "reply_adapted": adapted, "adapter_changes_reply": base != adapted,
              "canary_named": CANARY in adapted}
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
