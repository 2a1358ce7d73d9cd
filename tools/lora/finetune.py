"""LoRA fine-tuning of the embedded generator on prompt–code pairs, resumable step by step.

The base weights are the GGUF the generator already runs: transformers dequantizes a Qwen2 GGUF to
full precision for training, so nothing is downloaded. Only the attention and MLP projections are
adapted (the small Qwen2.5 models tie the embedding and the output head). Training runs in its own
process (`python -m nasgraph.tools.lora.finetune SPEC.json`, see `run_finetune`): its gigabytes go
away when it ends, and a kill loses at most the steps since the last checkpoint. It prints one JSON
object per line for the caller's progress bar; the adapter is written as GGUF for llama.cpp (and
Ollama) and in peft's own format beside it.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from nasgraph.errors import NasgraphError

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_FILE, META_FILE, CHECKPOINT_FILE, PEFT_DIR = "adapter.gguf", "adapter.json", "checkpoint.pt", "peft"


class FinetuneError(NasgraphError):
    """Fine-tuning could not run or finish; the message says why."""


class FinetuneSpec(BaseModel):
    base_gguf: Path
    base_name: str
    base_sha256: str = ""
    pairs: Path
    out_dir: Path
    rank: int = Field(16, ge=1)
    alpha: float = 32.0
    dropout: float = Field(0.05, ge=0, lt=1)
    lr: float = Field(2e-4, gt=0)
    epochs: int = Field(2, ge=1)
    accumulate: int = Field(2, ge=1, description="pairs per optimizer step")
    max_tokens: int = Field(2048, ge=64, description="longer pairs are left out, not cut")
    seed: int = 0
    threads: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every: int = Field(2, ge=1, description="optimizer steps between checkpoints")

    def key(self) -> str:
        """What a checkpoint must match to be resumed (not the thread count or the device)."""
        fields = self.model_dump(mode="json", exclude={"threads", "device", "checkpoint_every", "out_dir"})
        fields["pairs_sha"] = hashlib.sha256(Path(self.pairs).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _emit(**event) -> None:
    print(json.dumps(event), flush=True)


def _die_with_parent() -> None:
    # A kill -9 of the cycle driver must not leave a training process holding gigabytes and both cores.
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(2)
            if os.getppid() != parent:
                os._exit(3)
    threading.Thread(target=watch, daemon=True).start()


def _atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def load_base(spec: FinetuneSpec, device):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(Path(spec.base_gguf).parent), Path(spec.base_gguf).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype).to(device)
    return model, tokenizer


def train(spec: FinetuneSpec) -> dict:
    """Fine-tune (or resume), write the adapter, and return its metadata (also saved as adapter.json)."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from nasgraph.tools.lora.gguf_adapter import write_adapter
    from nasgraph.tools.lora.pairs import encode, read_pairs

    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    device = torch.device("cuda" if spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    start = time.perf_counter()
    model, tokenizer = load_base(spec, device)
    load_s = time.perf_counter() - start
    pairs = read_pairs(spec.pairs)
    encoded = [e for e in (encode(p, tokenizer, spec.max_tokens) for p in pairs) if e is not None]
    if not encoded:
        raise FinetuneError(f"no training pair fits in {spec.max_tokens} tokens ({len(pairs)} pairs in {spec.pairs})")
    lora = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=list(TARGET_MODULES), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.gradient_checkpointing_enable()  # activations of a 2k-token chat dominate memory otherwise
    model.config.use_cache = False  # a KV cache is for generation; checkpointing recomputes instead
    model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    rng = random.Random(spec.seed)
    order = [i for _ in range(spec.epochs) for i in rng.sample(range(len(encoded)), len(encoded))]
    steps = -(-len(order) // spec.accumulate)
    key = spec.key()
    state = {"step": 0, "losses": [], "tokens": 0, "train_s": 0.0}
    ckpt = out / CHECKPOINT_FILE
    if ckpt.is_file():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        if saved.get("key") == key:
            set_peft_model_state_dict(model, saved["lora"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            _emit(event="resumed", step=state["step"], steps=steps)
    _emit(event="start", steps=steps, pairs=len(encoded), dropped=len(pairs) - len(encoded), load_s=round(load_s, 1),
          device=device.type)
    model.train()
    while state["step"] < steps:
        t0 = time.perf_counter()
        batch = order[state["step"] * spec.accumulate:(state["step"] + 1) * spec.accumulate]
        total = 0.0
        for i in batch:
            ids, labels = encoded[i]
            x = torch.tensor([ids], device=device)
            y = torch.tensor([labels], device=device)
            loss = model(input_ids=x, labels=y).loss / len(batch)
            loss.backward()
            total += loss.item()
            state["tokens"] += len(ids)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["losses"].append(round(total, 4))
        state["train_s"] += time.perf_counter() - t0
        if state["step"] % spec.checkpoint_every == 0 or state["step"] == steps:
            _atomic_save({"key": key, "lora": get_peft_model_state_dict(model),
                          "optimizer": optimizer.state_dict(), "state": state}, ckpt)
        _emit(event="step", step=state["step"], steps=steps, loss=round(total, 4))
    lora_state = get_peft_model_state_dict(model)
    config = model.base_model.model.config
    write_adapter(lora_state, out / ADAPTER_FILE, architecture=config.model_type, n_layers=config.num_hidden_layers,
                  alpha=spec.alpha, rank=spec.rank, base_name=spec.base_name, base_sha256=spec.base_sha256)
    model.save_pretrained(str(out / PEFT_DIR))
    meta = {"base": spec.base_name, "base_sha256": spec.base_sha256, "pairs": len(encoded),
            "dropped_pairs": len(pairs) - len(encoded), "steps": steps, "epochs": spec.epochs, "rank": spec.rank,
            "alpha": spec.alpha, "lr": spec.lr, "tokens": state["tokens"], "losses": state["losses"],
            "train_s": round(state["train_s"], 1), "load_s": round(load_s, 1), "device": device.type, "key": key}
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out / META_FILE)
    ckpt.unlink(missing_ok=True)
    _emit(event="done", **{k: v for k, v in meta.items() if k != "losses"})
    return meta


def run_finetune(spec: FinetuneSpec, progress: Callable[[dict], None] | None = None) -> dict:
    """Train in a child process (see the module doc); returns the adapter's metadata. Already done (the
    adapter and its metadata exist for this very spec) returns at once."""
    out = Path(spec.out_dir)
    meta_path = out / META_FILE
    if meta_path.is_file() and (out / ADAPTER_FILE).is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == spec.key():
            return meta
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=1))
    log = out / "finetune.log"
    cmd = [sys.executable, "-m", "nasgraph.tools.lora.finetune", str(spec_path)]
    with log.open("a") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if progress:
                    progress(event)
        except BaseException:
            proc.kill()
            raise
        finally:
            rc = proc.wait()
    if rc != 0 or not meta_path.is_file():
        tail = log.read_text().strip().splitlines()[-3:] if log.is_file() else []
        raise FinetuneError(f"fine-tuning failed (exit {rc}); see {log}: {' | '.join(tail)}")
    return json.loads(meta_path.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    spec = FinetuneSpec.model_validate_json(Path(argv[0]).read_text())
    train(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
