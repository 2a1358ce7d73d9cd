"""The loop's view of its LLM: the chat model, the names the trace records, a per-step seed, and the
GPU hand-over before training."""
from __future__ import annotations

from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel

from nasgraph.agents import llm as backends
from nasgraph.config import Config


@dataclass
class LLMHandle:
    base: BaseChatModel
    backend: str
    model: str
    seed: int = 0
    gpu_share: str = "auto"
    training_on_gpu: bool = False

    def at_step(self, step: int, temperature: float | None = None) -> BaseChatModel:
        # One fixed seed would give the same reply to the same prompt forever; seed + step varies the
        # samples yet replays exactly when a killed run re-runs a step.
        return backends.with_options(self.base, seed=self.seed + step, temperature=temperature)

    def release_for_training(self) -> None:
        # Only a GPU is worth handing over; on a CPU a reload would just cost seconds.
        if self.training_on_gpu:
            backends.release(self.base, self.gpu_share)


def open_llm(cfg: Config, progress=None) -> LLMHandle:
    from nasgraph.tools.evaluator.harness import pick_device

    chat = backends.make_chat_model(cfg.llm, cfg.models_dir, progress=progress)
    return LLMHandle(base=chat, backend=cfg.llm.backend, model=backends.model_label(chat), seed=cfg.llm.seed,
                     gpu_share=cfg.llm.gpu_share,
                     training_on_gpu=pick_device(cfg.evaluator.device).type == "cuda")
