"""Every hyperparameter a model declares reaches it: the keys `supported_hyperparameters()` names.

LEMUR models read `prm['dropout']` (and `prm['stochastic_depth_prob']`, `prm['patch_size']`, ...)
in `__init__`, and the framework that runs them is expected to supply every key the model
declares. The child calls the declaration after executing the module and fills what the request
and the harness recipe leave out, in this order (first wins):

1. the request's `prm` (what a person or the loop asked for);
2. the recipe (`harness.DEFAULTS`: lr, momentum, weight_decay, label_smoothing) and the run's own
   facts (`RUN_KEYS`: the batch size, epoch count and class count it really uses). A model's
   own defaults never replace these: every candidate trains under one recipe, and the recipe the
   store records (`training_recipe`) stays the one that was used;
3. the model's own defaults, when `supported_hyperparameters()` returns a dict;
4. `TABLE` below, for the keys the LEMUR corpus declares;
5. `FALLBACK` for any other declared key.

A key the model subscripts without declaring it is filled the same way on its first read
(`Hyperparameters.__missing__`). The outcome's detail records every filled key and its source.

This module imports nothing heavy: the child uses it, and tests read it without torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The keys the LEMUR image-classification files declare (7,774 files, `nasgraph lemur` index),
# with a value each. The count is how many files declare it; lr and momentum (7,771 and 7,746)
# and weight_decay (14) come from harness.DEFAULTS, batch/epoch/batch_size/num_classes from the run.
TABLE: dict[str, Any] = {
    # 6,663 files. torchvision's classifiers use 0.2 (MobileNetV2/V3, EfficientNet-B0, MNASNet) and
    # LEMUR's recorded runs average 0.24; AlexNet/VGG use 0.5, but a one-epoch proxy learns worst
    # under heavy regularisation, and 0.0 would turn the author's dropout layers into no-ops.
    "dropout": 0.2,
    "attention_dropout": 0.0,       # 5: torchvision ViT / Swin default
    "stochastic_depth_prob": 0.1,   # 6: torchvision ConvNeXt-T (Swin-T, EfficientNet use 0.2); short proxy: the lower
    "dropout_aux": 0.7,             # 1: torchvision GoogLeNet's auxiliary classifiers
    "norm_eps": 1e-5,               # 4: the eps of torch's BatchNorm / LayerNorm
    "norm_momentum": 0.1,           # 1: BatchNorm's default
    "norm_std": 0.02,               # 3: truncated-normal init std of torchvision ConvNeXt / ViT
    # 2: LEMUR's ViTs read it as a fraction of the image side (int(side * patch_size)): 0.25 gives
    # 7-pixel patches on 28-pixel images, 8 on 32 (16 tokens), a size a CPU proxy can train.
    "patch_size": 0.25,
    "kernel_size": 3,               # 4: the commonest convolution kernel
    "act_type": "relu",             # 3: what the declaring files fall back to themselves
    "mixup_alpha": 0.2,             # 2: the declaring files' own fallback (and mixup's usual ImageNet value)
    "warmup_epochs": 1,             # 2: no longer than the proxy itself, or the lr never reaches its peak
    "alpha": 0.75,                  # 1: the declaring file's own fallback
    "growth_rate": 32,              # 1: DenseNet's; the declaring file's own fallback
    "num_blocks": 5,                # 1: the declaring file's own fallback
    "transform": None,              # 10: the harness normalises the data itself; there is no LEMUR transform name
    "pretrained": 0,                # no weights are downloaded: the child has no network, and hub loads are refused
}

# LEMUR tunes every other hyperparameter by sampling it uniformly in [0, 1] (the recorded values of
# such keys have medians near 0.5), so a LEMUR model must build and train at the middle of that range.
FALLBACK = 0.5

# Facts of the run, not settings: filled from what the harness really uses.
RUN_KEYS = ("batch", "batch_size", "epoch", "num_classes")


def declared(fn: Any) -> tuple[list[str], dict[str, Any], str | None]:
    """Call a module's `supported_hyperparameters` (None: absent). Returns the declared names, the
    model's own defaults (when it returned a dict) and, when the declaration is unusable, why: a
    model whose declaration fails still runs, it is only given no extra keys."""
    if not callable(fn):
        return [], {}, None
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - the model's own function; its failure is reported, not raised
        return [], {}, f"supported_hyperparameters() raised {type(e).__name__}: {e}"[:200]
    if isinstance(value, Mapping):
        names = list(value)
    elif isinstance(value, (set, frozenset, list, tuple)):
        names = list(value)
    else:
        return [], {}, f"supported_hyperparameters() returned {type(value).__name__}, not names or a dict"
    if not all(isinstance(n, str) for n in names):
        return [], {}, "supported_hyperparameters() returned names that are not all strings"
    own = {k: v for k, v in value.items()} if isinstance(value, Mapping) else {}
    return sorted(set(names)), own, None


def _default(key: str, own: Mapping[str, Any], run: Mapping[str, Any]) -> tuple[Any, str]:
    if key in run:
        return run[key], "run"
    if key in own:
        return own[key], "model"
    if key in TABLE:
        return TABLE[key], "table"
    return FALLBACK, "fallback"


class Hyperparameters(dict):
    """The prm a model is given. A key it subscripts that nobody gave and it never declared is filled
    on that first read, like a declared one, and recorded with "undeclared": LEMUR's own runner
    always passes dropout, batch, transform and epoch, and about 3% of its torch-only image
    classifiers read one of them without declaring it. `key in prm` and `prm.get(key, default)` are
    untouched, so a model that checks for a key keeps its own default.

    `filled` (shared by copies) holds {key: {"value", "source", "undeclared"?}} for every key filled."""

    def __init__(self, prm: Mapping[str, Any], run: Mapping[str, Any],
                 filled: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(prm)
        self.run = dict(run)
        self.filled = {} if filled is None else filled

    def __missing__(self, key: Any) -> Any:
        if not isinstance(key, str):
            raise KeyError(key)
        value, source = _default(key, {}, self.run)
        self[key] = value
        self.filled[key] = {"value": value, "source": source, "undeclared": True}
        return value

    def copy(self) -> "Hyperparameters":
        """A copy the model may change freely; what it fills is still recorded here."""
        return Hyperparameters(self, self.run, self.filled)

    def __reduce__(self):  # plain-dict data for pickle and deepcopy; the record stays with the original
        return dict, (dict(self),)


def complete(prm: Mapping[str, Any], names: list[str], own: Mapping[str, Any],
             run: Mapping[str, Any]) -> Hyperparameters:
    """`prm` (the request's keys over the recipe) with every declared name that is missing filled.

    `run` holds the run's facts by key (batch, epoch, ...). The result's `filled` says, for each
    filled key, {"value", "source"} with source "run", "model", "table" or "fallback"."""
    full = Hyperparameters(prm, run)
    for key in names:
        if key in full:
            continue  # the request's, or the recipe's (harness.DEFAULTS)
        value, source = _default(key, own, run)
        full[key] = value
        full.filled[key] = {"value": value, "source": source}
    return full
