"""One typed config tree: defaults < TOML file < NASGRAPH_* environment < CLI flags.

Environment keys use `__` between levels, e.g. NASGRAPH_EVALUATOR__THREADS=1.
The file is $NASGRAPH_HOME/config.toml unless NASGRAPH_CONFIG names another.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from nasgraph.dataset_ref import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, canonical


def default_home() -> Path:
    return Path(os.environ.get("NASGRAPH_HOME", Path.home() / ".nasgraph")).expanduser()


class EvaluatorConfig(BaseModel):
    threads: int = Field(2, ge=1, description="torch.set_num_threads in the training child")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    batch_size: int = Field(128, ge=1)
    # One-epoch proxy: light augmentation cost ~3 points of accuracy after one Fashion-MNIST epoch.
    augment: bool = False
    time_budget_s: float = Field(180.0, gt=0, description="projected training seconds per epoch allowed")
    max_params: int = Field(5_000_000, ge=1)
    # Cascade screen: test accuracy measured once this share of the first epoch has trained (0: never).
    # Measuring costs one pass over 2,000 test images; cutting below a bar is the loop's `cascade`.
    screen_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of epoch 0 after which the screen "
                                                                    "scores the model (0: no screen)")
    screen_probes: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        [0.2, 0.3], description="other shares of epoch 0 where the screen only measures: data for choosing "
                                "screen_fraction")
    # Measured on this project's 2-thread CPU: one Fashion-MNIST epoch trains at ~85 GFLOP/s, so the
    # default 180 s epoch budget fits ~80 MFLOPs per sample; the LLM is told this figure, and a budget
    # it can meet steers it better than one ten times too loose. Raise it with a GPU.
    max_flops: int = Field(60_000_000, ge=1, description="forward FLOPs per sample")
    memory_limit_mb: int = Field(6144, ge=256)
    timeout_grace_s: float = Field(60.0, ge=1, description="wall-clock slack beyond the training budget")
    max_output_mb: int = Field(16, ge=1, description="cap on what a candidate may print or write")
    setup_timeout_s: float = Field(60.0, gt=0, description="wall-clock limit for build + shape check + measure")
    workers: int = Field(0, ge=0, description="candidates evaluated at once; 0: from the hardware "
                                              "(CPU: cores // threads, GPU: 4 per card)")
    gpu_memory_fraction: float = Field(0.0, ge=0.0, le=1.0,
                                       description="share of the GPU's memory one candidate may hold; 0: 1/workers")
    backend: Literal["local", "ray"] = Field("local", description="where candidates run: warm parents on this "
                                                                  "machine, or Ray actors on a cluster")
    ray_address: str = Field("", description="Ray cluster to join (host:port); empty: RAY_ADDRESS, else a local instance")


class LLMConfig(BaseModel):
    backend: Literal["llamacpp", "ollama"] = "llamacpp"
    model: str = "qwen2.5-coder-1.5b"
    temperature: float = 0.7
    max_tokens: int = 1200
    n_ctx: int = 4096
    threads: int = 2
    seed: int = 0
    ollama_host: str = Field(default_factory=lambda: os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434"))
    # release: free the GPU memory the LLM holds while a candidate trains (keep_alive=0 / unload);
    # keep: leave it loaded; auto: keep it when it needs at most 10% of the card (agents.llm.share_mode)
    gpu_share: Literal["auto", "release", "keep"] = "auto"


class LoopConfig(BaseModel):
    dataset: str = Field("fashion-mnist", description="a built-in name, an image folder (train/<class>/*.jpg|png, "
                                                      "optional test/) or an .npz (x_train, y_train, x_test, y_test)")
    image_size: int | None = Field(None, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE,
                                   description="square side an image folder is resized to (default 32)")
    epochs: int = Field(1, ge=1)
    iterations: int = Field(30, ge=1)
    history_k: int = Field(5, ge=1)
    max_repairs: int = Field(3, ge=0, description="LLM repairs (new drafts) per iteration after the first draft fails")
    repair: Literal["redraft", "edit"] = Field(
        "redraft", description="how an LLM repair asks: a new draft of the same design, told the error (redraft), "
                               "or the failed code with the error to fix (edit)")
    max_fixes: int = Field(8, ge=0, description="rule-based fixes per draft (nasgraph.tools.autofix); 0 turns them off")
    novelty_threshold: float = Field(0.1, ge=0, le=1, description="min 1-Jaccard to count as novel")
    prm: dict[str, float | int | str] = Field(default_factory=dict, description="hyperparameters for every candidate")
    # parents is the default since bench.search at 60 iterations (docs/2026-11-28-search.md): +0.12 over the
    # no-feedback baseline on the mean of the last half at equal LLM calls, valid 0.98, its best still rising.
    search: Literal["improver", "parents", "independent"] = Field(
        "parents", description="improver: the Prompt Improver steers fresh designs from the history window; "
                                "parents: each design is one change to a parent drawn from the run's archive; "
                                "independent: no feedback at all (the baseline a search must beat)")
    # Measured with the 1.5B model on 12 parents (bench.child_format): valid 8/12 either way, edits at 0.6x
    # the LLM seconds.
    child_format: Literal["module", "edit"] = Field(
        "edit", description="with search=parents, how the Code Generator writes a child: SEARCH/REPLACE edits of "
                            "the parent, or the whole module")
    fresh_share: float = Field(0.2, ge=0, le=1, description="with search=parents, the share of fresh designs")
    parent_move: Literal["improver", "drawn"] = Field(
        "improver", description="with search=parents, who names the change to a parent: the Prompt Improver (an "
                                "LLM call reading the history window) or a draw from its list of parent edits (no "
                                "call: the control that tells whether the improver's choice is worth its call)")
    population_init: int = Field(3, ge=0, description="with search=parents, designs stay fresh until the archive "
                                                      "holds this many valid ones")
    objective: Literal["accuracy", "pareto"] = Field(
        "accuracy", description="accuracy: the most accurate design wins; pareto: the front of accuracy, parameters "
                                "and batch-1 latency is kept, parents are drawn from it and the report shows it")
    target_accuracy: float | None = None
    time_budget_s: float | None = Field(None, description="stop the run after this many active seconds, resumes included")
    cascade: bool = Field(False, description="stop a design at the screen (evaluator.screen_fraction) when it is "
                                             "behind the run's top designs there (nasgraph.tools.cascade)")
    cascade_top: int = Field(5, ge=1, description="the top designs whose screen accuracies set the bar")
    cascade_margin: float = Field(0.05, ge=-1, le=1, description="how far below the top designs' lowest screen "
                                                                 "accuracy the bar sits")
    in_flight: int = Field(1, ge=1, le=4, description="iterations planned at once: while one design trains, the agents "
                                                      "draft the next in_flight - 1 (graph.ahead); iteration m is then "
                                                      "planned from what was known after iteration m - in_flight")

    @model_validator(mode="after")
    def _canonical_dataset(self) -> "LoopConfig":
        # A folder or .npz becomes an absolute path (with the folder's image size) here, in the
        # process the user started: everything downstream carries this one string.
        self.dataset = canonical(self.dataset, self.image_size)
        return self


class RagConfig(BaseModel):
    enabled: bool = Field(False, description="retrieve validated blocks for the Code Generator")
    k: int = Field(3, ge=1, description="blocks handed to the generator per iteration")
    max_chars: int = Field(2500, ge=200, description="prompt budget for retrieved blocks")


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NASGRAPH_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(default_factory=default_home)
    # Shared caches may live outside the home (NASGRAPH_MODELS_DIR, NASGRAPH_DATA_DIR): one copy of
    # a gigabyte model or a dataset serves every home, test homes included.
    models_dir: Path = Field(None, validate_default=False)  # type: ignore[assignment]
    data_dir: Path = Field(None, validate_default=False)  # type: ignore[assignment]
    evaluator: EvaluatorConfig = EvaluatorConfig()
    llm: LLMConfig = LLMConfig()
    loop: LoopConfig = LoopConfig()
    rag: RagConfig = RagConfig()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("NASGRAPH_CONFIG", default_home() / "config.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))

    def model_post_init(self, _context: Any) -> None:
        self.models_dir = Path(self.models_dir or self.home / "models").expanduser()
        self.data_dir = Path(self.data_dir or self.home / "data").expanduser()

    # Derived locations; one home folder holds everything a user's runs produce.
    @property
    def store_path(self) -> Path:
        return self.home / "store.sqlite"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"


def load_config(**overrides: Any) -> Config:
    """Build the config; `overrides` are nested dicts from CLI flags (highest precedence)."""
    return Config(**overrides)
