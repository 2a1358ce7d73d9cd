"""Self-improvement of the generator: prompt–code pairs, LoRA fine-tuning (peft) on the embedded GGUF's
own weights, and the adapter written and checked as GGUF for llama.cpp and Ollama."""
from nasgraph.tools.lora.finetune import FinetuneError, FinetuneSpec, run_finetune
from nasgraph.tools.lora.gguf_adapter import AdapterError, AdapterInfo, check_adapter, write_adapter
from nasgraph.tools.lora.pairs import Pair, read_pairs, write_pairs

__all__ = ["AdapterError", "AdapterInfo", "FinetuneError", "FinetuneSpec", "Pair", "check_adapter", "read_pairs",
           "run_finetune", "write_adapter", "write_pairs"]
