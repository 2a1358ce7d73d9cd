"""The project's fixed training recipe: generated code supplies a model, this module trains and tests it.

Data stays as uint8 tensors (on the GPU when there is one); each batch is indexed, augmented as a
whole, converted and normalised in a few tensor ops, so there is no per-image DataLoader work.
Models run channels_last where they allow it, in fp32, with cudnn's autotuner off, on CUDA too: measured
on an H200 (docs/bench/2026-11-27-device-h200*.json), bf16 autocast and cudnn.benchmark made one-epoch
proxies no faster, and NCHW instead of channels_last made the ResNets slower against a plain loop in the
same run (1.3-1.4x its time instead of 0.9-1.2x). `amp=True` opts into bf16. A model's own `learn()` loop
always runs with the numerics it chose: bf16 autocast around it once drove a model that reaches 0.83 in
fp32 to chance.
A budget clock projects the epoch's time from the first batches and stops a model that would be
too slow; a non-finite loss stops training at once. Both surface as typed exceptions that the
caller turns into an Outcome.

Cascade screen: a `Screen` measures test accuracy on the first SCREEN_IMAGES test images once a
fraction of the first epoch has trained, and stops a model below its `min_accuracy` (ScreenedOut).
Measuring changes nothing else: the screen runs in eval mode without gradients and draws no random
numbers itself, so a model that passes ends with the accuracy it would have had unscreened.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasgraph.errors import NasgraphError
from nasgraph.tools.evaluator.datasets import TensorData

DEFAULTS = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.0}
TEST_BATCH = {"cpu": 256, "cuda": 1024}  # measured on CPU: 1024-image batches test 2.5x slower than 256 (cache)
WARMUP_BATCHES = 1      # the first batch pays one-time costs (allocator, cudnn autotune) and is not timed
DENSE_CHECKS = 5        # the budget is checked after each of the next few batches ...
CHECK_EVERY = 10        # ... then every CHECK_EVERY batches on the running average
MIN_TIMED = 3           # one noisy batch stops a model only if it is hopeless (HOPELESS x the budget)
HOPELESS = 3.0


class OverBudget(Exception):
    def __init__(self, projected_s: float, budget_s: float, batches_timed: int, epoch: int = 0):
        self.projected_s, self.budget_s, self.batches_timed, self.epoch = projected_s, budget_s, batches_timed, epoch
        super().__init__(f"projected epoch time {projected_s:.1f}s exceeds the budget of {budget_s:.1f}s "
                         f"(from {batches_timed} timed batches)")


SCREEN_IMAGES = 2000   # test images the screen scores on: about +-1 point at the accuracies that matter


@dataclass
class Screen:
    """Where the screen decides (`fraction` of epoch 0) and the accuracy a model must reach there (None:
    measure only); `probes`: other fractions where it only measures, so the point to decide at can be
    chosen from data. The harness fills in what it saw: accuracy, batch and train seconds so far at the
    decision point, and `curve`, the accuracy at every point measured."""
    fraction: float
    min_accuracy: float | None = None
    probes: tuple[float, ...] = ()
    accuracy: float | None = None
    batch: int | None = None
    seconds: float | None = None
    curve: dict[str, float] = field(default_factory=dict)

    def points(self, batches_per_epoch: int) -> dict[int, float]:
        """Batch after which to measure -> the fraction it stands for (the decision's fraction wins)."""
        at = {max(1, min(batches_per_epoch, round(f * batches_per_epoch))): f for f in self.probes}
        at[max(1, min(batches_per_epoch, round(self.fraction * batches_per_epoch)))] = self.fraction
        return at

    def facts(self) -> dict:
        return {"fraction": self.fraction, "min_accuracy": self.min_accuracy, "accuracy": self.accuracy,
                "batch": self.batch, "seconds": self.seconds, "curve": self.curve}


class ScreenedOut(Exception):
    def __init__(self, screen: Screen, projected_s: float):
        self.screen, self.projected_s = screen, projected_s
        super().__init__(f"screened out after {screen.fraction:.0%} of the epoch: test accuracy "
                         f"{screen.accuracy:.3f} below the bar of {screen.min_accuracy:.3f}")


class NaNLoss(Exception):
    def __init__(self, batch: int, epoch: int):
        self.batch, self.epoch = batch, epoch
        super().__init__(f"loss became NaN or infinite at epoch {epoch}, batch {batch}")


@dataclass
class TrainResult:
    accuracy: float              # test accuracy in [0, 1] after the last epoch
    train_seconds: float
    test_seconds: float
    images_per_s: float          # training throughput
    epochs: list[dict] = field(default_factory=list)  # {"epoch", "loss", "accuracy", "seconds", ...}


class DeviceUnavailable(NasgraphError, RuntimeError):
    """A GPU was asked for on a machine without one (or without a CUDA build of torch)."""


def pick_device(pref: str) -> torch.device:
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable("device 'cuda' was asked for, but this machine has no usable CUDA GPU "
                                    f"(torch {torch.__version__}); use --device cpu or auto")
        return torch.device("cuda")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ValueError(f"unknown device {pref!r}; use 'auto', 'cpu' or 'cuda'")


# ---------------------------------------------------------------- batches

class _Batches:
    """Produces normalised, augmented (x, y) batches on the device from the uint8 tensors."""

    def __init__(self, data: TensorData, device: torch.device, batch: int, augment: bool, gen: torch.Generator,
                 side: int | None = None):
        cuda = device.type == "cuda"
        self.device, self.batch, self.gen = device, batch, gen
        self.side = side  # images upsampled to side x side per batch (models written for larger inputs)
        # Moved to the device once; per batch only indices travel.
        self.x = data.train_x.to(device, non_blocking=cuda)
        self.y = data.train_y.to(device, non_blocking=cuda)
        self.test_x = data.test_x.to(device, non_blocking=cuda)
        self.test_y = data.test_y.to(device, non_blocking=cuda)
        c, h, _ = data.in_shape
        mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
        std = torch.tensor(data.std, dtype=torch.float32, device=device).view(1, c, 1, 1)
        # x/255 normalised = x * scale + shift, one fused multiply-add per pixel
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std
        self.pad = max(1, h // 8) if augment else 0   # translation of ~12%: 3px at 28, 4px at 32, 1px at 8
        self.flip = augment and data.flip
        self.memory_format = torch.contiguous_format  # _choose_memory_format may switch to channels_last

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch)

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        # Explicit strides: with one channel, NCHW and NHWC strides both look "contiguous" to torch,
        # and a permuted crop would silently steer convolutions into channels_last.
        out = torch.empty(xb.shape, dtype=torch.float32, device=xb.device, memory_format=self.memory_format)
        out = out.copy_(xb).mul_(self.scale).add_(self.shift)
        if self.side:
            out = F.interpolate(out, size=(self.side, self.side), mode="bilinear", align_corners=False)
            out = out.contiguous(memory_format=self.memory_format)
        return out

    def _augment(self, xb: torch.Tensor) -> torch.Tensor:
        n, _, h, w = xb.shape
        if self.pad:
            p = self.pad
            padded = F.pad(xb, (p, p, p, p))  # zero (black) border, as RandomCrop(padding=p) does
            dy = torch.randint(0, 2 * p + 1, (n,), device=xb.device, generator=self.gen)
            dx = torch.randint(0, 2 * p + 1, (n,), device=xb.device, generator=self.gen)
            rows = (dy[:, None] + torch.arange(h, device=xb.device))[:, :, None]       # (n, h, 1)
            cols = (dx[:, None] + torch.arange(w, device=xb.device))[:, None, :]       # (n, 1, w)
            idx = torch.arange(n, device=xb.device)[:, None, None]
            xb = padded[idx, :, rows, cols].permute(0, 3, 1, 2)                          # (n, c, h, w)
        if self.flip:
            mask = torch.rand(n, device=xb.device, generator=self.gen) < 0.5
            xb = torch.where(mask[:, None, None, None], xb.flip(3), xb)
        return xb

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.x), device=self.device, generator=self.gen)
        for idx in order.split(self.batch):
            yield self.normalise(self._augment(self.x[idx])), self.y[idx]


# ---------------------------------------------------------------- budget

class _Clock:
    """Projects one epoch's training time from the batches timed so far; raises OverBudget."""

    def __init__(self, budget_s: float, batches_per_epoch: int, device: torch.device, epoch: int):
        self.budget_s, self.n_batches, self.device, self.epoch = budget_s, batches_per_epoch, device, epoch
        self.t0 = time.perf_counter()
        self.t_warm: float | None = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # kernels are async; only a sync makes the time real
        return time.perf_counter()

    def due(self, done: int) -> bool:
        """True when the check after `done` finished batches would look at the clock."""
        timed = done - WARMUP_BATCHES
        return timed == 0 or 0 < timed <= DENSE_CHECKS or (timed > 0 and timed % CHECK_EVERY == 0)

    def tick(self, done: int) -> None:
        """Called after `done` batches of this epoch have finished."""
        if not self.due(done):
            return
        now = self._now()
        timed = done - WARMUP_BATCHES
        if timed == 0:
            self.t_warm = now
            warm = now - self.t0
            if warm > self.budget_s:  # even one batch costs more than the epoch may
                raise OverBudget(warm * self.n_batches, self.budget_s, 0, self.epoch)
            return
        projected = (now - self.t_warm) / timed * self.n_batches
        if projected > self.budget_s * (1.0 if timed >= MIN_TIMED else HOPELESS):
            raise OverBudget(projected, self.budget_s, timed, self.epoch)


# ---------------------------------------------------------------- training

def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if device.type != "cuda" or not amp:
        return None  # plain fp32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _choose_memory_format(model: nn.Module, batches: _Batches, amp: torch.dtype | None) -> None:
    """Use channels_last where the model allows it, else plain NCHW.

    channels_last makes convolutions faster (measured 25-50% per training step on CPU with oneDNN,
    and it is what tensor cores want on CUDA), but it breaks the common `x.view(n, -1)` flatten.
    A probe forward on two images decides; any failure falls back to NCHW, where a real error will
    surface during training with the model's own message.
    """
    was_training = model.training
    model.eval()  # no batch-norm statistics updated, no dropout drawn
    try:
        model.to(memory_format=torch.channels_last)
        batches.memory_format = torch.channels_last
        with torch.no_grad(), _autocast(amp):
            model(batches.normalise(batches.x[:2]))
    except Exception:  # noqa: BLE001 - any failure here means "not channels_last"
        model.to(memory_format=torch.contiguous_format)
        batches.memory_format = torch.contiguous_format
    finally:
        model.train(was_training)


def _setup(model: nn.Module, prm: dict, steps: int, epochs: int) -> tuple[torch.optim.Optimizer, nn.Module, object]:
    """Optimizer, loss and schedule: the model's own (LEMUR train_setup) where it set them, else ours."""
    opt = getattr(model, "optimizer", None)
    criteria = getattr(model, "criteria", None)
    loss_fn = criteria[0] if isinstance(criteria, (tuple, list)) and criteria else None
    if not callable(loss_fn):
        loss_fn = nn.CrossEntropyLoss(label_smoothing=prm["label_smoothing"])
    if isinstance(opt, torch.optim.Optimizer):
        return opt, loss_fn, None  # the model chose its recipe; no schedule is imposed on it
    opt = torch.optim.SGD(model.parameters(), lr=prm["lr"], momentum=prm["momentum"],
                          nesterov=prm["momentum"] > 0, weight_decay=prm["weight_decay"])
    total = max(1, steps * epochs)
    # OneCycleLR divides by (pct_start * total - 1): zero at 4 steps with 0.25 (a small folder of one's
    # own images at a large batch), so that one case warms up over 0.3.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=prm["lr"], total_steps=total,
                                                pct_start=0.25 if total != 4 else 0.3, cycle_momentum=False)
    return opt, loss_fn, sched


def _autocast(amp: torch.dtype | None):
    """Mixed precision on CUDA only; a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=amp) if amp is not None else contextlib.nullcontext()


def _params_finite(model: nn.Module) -> bool:
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    if not flags:
        return True
    # one device-to-host read for all parameters, not one sync per tensor
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())


def _take_screen(model: nn.Module, batches: _Batches, clock: _Clock, amp, screen: Screen, done: int,
                 fraction: float) -> None:
    """Score the model part-way through epoch 0; its minutes, not the screen's, count for the budget."""
    t = time.perf_counter()
    trained_s = t - clock.t0  # earlier screens already moved t0 past themselves
    accuracy = evaluate(model, batches, amp, limit=SCREEN_IMAGES)
    model.train()
    screen.curve[f"{fraction:g}"] = accuracy
    spent = time.perf_counter() - t
    clock.t0 += spent
    if clock.t_warm is not None:
        clock.t_warm += spent
    if fraction != screen.fraction:
        return
    screen.seconds, screen.batch, screen.accuracy = round(trained_s, 4), done, accuracy
    if screen.min_accuracy is not None and screen.accuracy < screen.min_accuracy:
        raise ScreenedOut(screen, screen.seconds * len(batches) / max(done, 1))


def _own_epoch(model, batches: _Batches, opt, loss_fn, sched, clock: _Clock, amp, scaler, epoch: int,
               screen: Screen | None = None) -> dict:
    """One epoch of the project's loop; returns mean loss and train accuracy."""
    cuda = batches.device.type == "cuda"
    loss_sum = torch.zeros((), device=batches.device)
    correct = torch.zeros((), dtype=torch.long, device=batches.device)
    bad = torch.zeros((), dtype=torch.bool, device=batches.device)
    seen = 0
    points = screen.points(len(batches)) if screen is not None and epoch == 0 else {}
    for i, (x, y) in enumerate(batches.epoch()):
        with _autocast(amp):
            out = model(x)
            loss = loss_fn(out, y)
        finite = torch.isfinite(loss.detach())
        # On CPU the check is free; on CUDA the flag is read only when the clock syncs anyway.
        if not cuda and not bool(finite):
            raise NaNLoss(i, epoch)
        bad |= ~finite
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
        loss_sum += loss.detach().float() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        seen += len(y)
        if cuda and clock.due(i + 1) and bool(bad):
            raise NaNLoss(i, epoch)
        clock.tick(i + 1)
        if points and i + 1 in points:
            if bool(bad):
                raise NaNLoss(i, epoch)
            _take_screen(model, batches, clock, amp, screen, i + 1, points[i + 1])
    if bool(bad):
        raise NaNLoss(len(batches) - 1, epoch)
    return {"loss": float(loss_sum) / max(seen, 1), "train_accuracy": float(correct) / max(seen, 1),
            "images": seen}


class _BudgetedIterable:
    """What LEMUR's learn() iterates over: our batches, timed; the budget and NaN checks still apply."""

    def __init__(self, model: nn.Module, batches: _Batches, clock: _Clock, epoch: int):
        self.model, self.batches, self.clock, self.epoch = model, batches, clock, epoch
        self.error: Exception | None = None  # kept so a learn() that swallows exceptions cannot hide it
        self.served = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.batches.epoch():
            if self.error is not None:
                raise self.error
            yield x, y
            self.served += 1
            self._check(self.served)
        self._check(self.served, final=True)

    def _check(self, done: int, final: bool = False) -> None:
        try:
            if (final or self.clock.due(done)) and not _params_finite(self.model):
                raise NaNLoss(done - 1, self.epoch)
            self.clock.tick(done)
        except (OverBudget, NaNLoss) as e:
            self.error = e
            raise


def _hook_epoch(model, batches: _Batches, clock: _Clock, epoch: int) -> dict:
    feed = _BudgetedIterable(model, batches, clock, epoch)
    model.learn(feed)  # never under our autocast: a loop we do not control keeps its own numerics
    if feed.error is not None:
        raise feed.error
    if not _params_finite(model):
        raise NaNLoss(max(feed.served - 1, 0), epoch)
    images = min(feed.served * batches.batch, len(batches.x))
    return {"loss": None, "train_accuracy": None, "images": images}


@torch.no_grad()
def evaluate(model: nn.Module, batches: _Batches, amp, limit: int | None = None) -> float:
    """Test accuracy in eval mode, in big batches (on the first `limit` test images when given)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=batches.device)
    size = TEST_BATCH.get(batches.device.type, 256)
    test_x, test_y = batches.test_x[:limit], batches.test_y[:limit]
    for x, y in zip(test_x.split(size), test_y.split(size)):
        with _autocast(amp):
            out = model(batches.normalise(x))
        correct += (out.argmax(1) == y).sum()
    return float(correct) / max(len(test_y), 1)


def test_accuracy(model: nn.Module, data: TensorData, device: torch.device, side: int | None = None) -> float:
    """Test accuracy of a trained model under the recipe's input pipeline (normalised, resized to `side`)."""
    batches = _Batches(data, device, 1, False, torch.Generator(device=device), side)
    _choose_memory_format(model, batches, None)
    return evaluate(model, batches, None)


def _numbers(prm: dict) -> dict:
    """The recipe's numeric hyperparameters as floats, or a clear error naming the bad one."""
    out = dict(prm)
    for key in DEFAULTS:
        try:
            out[key] = float(prm[key])
        except (TypeError, ValueError):
            raise ValueError(f"hyperparameter {key!r} must be a number, got {prm[key]!r}") from None
        if not math.isfinite(out[key]) or out[key] < 0:
            raise ValueError(f"hyperparameter {key!r} must be a finite non-negative number, got {prm[key]!r}")
    return out


def _batch_size(prm: dict, default: int, n: int) -> int:
    raw = prm.get("batch", default)
    try:
        b = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"hyperparameter 'batch' must be a positive integer, got {raw!r}") from None
    if b < 1:
        raise ValueError(f"hyperparameter 'batch' must be a positive integer, got {raw!r}")
    return min(b, n)


def _prepare(model: nn.Module, data: TensorData, prm: dict, device: torch.device, batch_size: int, augment: bool,
             gen: torch.Generator, amp: torch.dtype | None, epochs: int, side: int | None = None):
    """The recipe's setup, shared by training and the warm parent's rehearsal: numeric hyperparameters,
    the batches, the memory format, the model's own train_setup, and our optimizer, loss and schedule
    unless the model trains itself (then None). Returns (batches, (opt, loss_fn, sched) | None)."""
    prm = _numbers({**DEFAULTS, **(prm or {})})
    prm["batch"] = _batch_size(prm, batch_size, len(data.train_x))
    batches = _Batches(data, device, prm["batch"], augment, gen, side)
    _choose_memory_format(model, batches, amp)
    if callable(getattr(model, "train_setup", None)):
        model.train_setup(prm)
    if callable(getattr(model, "learn", None)):
        return batches, None
    return batches, _setup(model, prm, len(batches), epochs)


@torch.no_grad()
def rehearse(model: nn.Module, data: TensorData, prm: dict, *, batch_size: int = 32) -> None:
    """Walk the recipe's code paths once without autograd: setup, one forward and loss, an optimizer
    and schedule step on zero gradients, a test pass. The warm parent calls this so that the modules
    training imports lazily are loaded before it forks. It must never run backward: autograd's engine
    starts a thread per CUDA device on the first backward, after which no forked child can train
    (nor use CUDA) on a GPU machine."""
    batches, recipe = _prepare(model, data, prm, torch.device("cpu"), batch_size, False,
                               torch.Generator().manual_seed(0), None, 1)
    if recipe is None:
        return  # the model trains itself through learn(), which runs backward: its setup is what can be rehearsed
    opt, loss_fn, sched = recipe
    model.train()
    x, y = next(iter(batches.epoch()))
    loss_fn(model(x), y)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)
    evaluate(model, batches, None)


def _optimizer(model: nn.Module, opt) -> torch.optim.Optimizer | None:
    """The optimizer whose state a checkpoint keeps: ours, or the one a model's train_setup made."""
    own = opt if opt is not None else getattr(model, "optimizer", None)
    return own if isinstance(own, torch.optim.Optimizer) else None


def _checkpoint(model, opt, sched, gen: torch.Generator, epochs: int, history: list, totals: tuple) -> dict:
    """Everything a later process needs to go on after this epoch as if it had never stopped. The
    tensors are the live ones (no copy): `on_epoch` must write the state before training goes on."""
    optimizer = _optimizer(model, opt)
    return {"epochs_total": epochs, "done": len(history), "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer else None,
            "scheduler": sched.state_dict() if sched is not None else None, "generator": gen.get_state(),
            "history": [dict(h) for h in history], "totals": list(totals)}


def _restore(state: dict, model, opt, sched, gen: torch.Generator, epochs: int) -> tuple[list, tuple]:
    if int(state.get("epochs_total", -1)) != epochs:
        raise ValueError(f"the checkpoint is of a {state.get('epochs_total')}-epoch training, not of {epochs} epochs")
    model.load_state_dict(state["model"])
    optimizer = _optimizer(model, opt)
    if optimizer is not None and state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    if sched is not None and state.get("scheduler"):
        sched.load_state_dict(state["scheduler"])  # the schedule goes on where it stopped, over all `epochs`
    gen.set_state(state["generator"])
    return list(state["history"]), tuple(state["totals"])


def train_and_test(model: nn.Module, data: TensorData, prm: dict, *, epochs: int = 1,
                   time_budget_s: float = 180.0, batch_size: int = 128, device: torch.device | None = None,
                   seed: int = 0, augment: bool = True, amp: bool = False, side: int | None = None,
                   resume: dict | None = None, on_epoch: Callable[[dict], None] | None = None,
                   screen: Screen | None = None) -> TrainResult:
    """Train `model` for `epochs` on `data` with the fixed recipe, then measure test accuracy.

    `prm` holds LEMUR-style hyperparameters (lr, momentum, batch, ...); missing ones take DEFAULTS.
    `side`: images are upsampled to side x side (a model written for larger inputs than the data's).
    `on_epoch(state)` is called after each epoch with a checkpoint (model, optimizer, schedule, data
    order, curve); `resume=state` continues from one, so a long training survives being stopped.
    `screen`: score part-way through the first epoch (filled in) and stop below its bar (ScreenedOut);
    models that train themselves through `learn()` are not screened.
    Raises OverBudget when an epoch is projected to exceed `time_budget_s`, NaNLoss on a
    non-finite loss (or parameters, for models that train themselves through `learn`).
    """
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    if len(data.train_x) == 0 or len(data.test_x) == 0:
        raise ValueError(f"dataset {data.name!r} has an empty train or test split")
    device = device or pick_device("auto")
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    if device.type == "cuda":
        # Off: measured on an H200, autotuning doubled the time of a one-epoch proxy (tiny CNN 1.90 -> 4.43 s).
        torch.backends.cudnn.benchmark = False
    model.to(device)
    amp = _amp_dtype(device, amp)
    batches, recipe = _prepare(model, data, prm, device, batch_size, augment, gen, amp, epochs, side)
    hooked = recipe is None
    opt, loss_fn, sched = recipe or (None, None, None)
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 and not hooked else None

    history, train_s, test_s, images, accuracy = [], 0.0, 0.0, 0, 0.0
    if resume is not None:
        history, (train_s, test_s, images) = _restore(resume, model, opt, sched, gen, epochs)
        accuracy = history[-1]["accuracy"] if history else 0.0
    for epoch in range(len(history), epochs):
        model.train()
        clock = _Clock(time_budget_s, len(batches), device, epoch)
        if hooked:
            stats = _hook_epoch(model, batches, clock, epoch)
        else:
            stats = _own_epoch(model, batches, opt, loss_fn, sched, clock, amp, scaler, epoch,
                               screen if resume is None else None)
        seconds = clock._now() - clock.t0
        train_s += seconds
        images += stats["images"]
        t = time.perf_counter()
        accuracy = evaluate(model, batches, amp)
        test_s += time.perf_counter() - t
        history.append({"epoch": epoch, "loss": stats["loss"], "accuracy": accuracy, "seconds": seconds,
                        "train_accuracy": stats["train_accuracy"]})
        if on_epoch is not None:
            on_epoch(_checkpoint(model, opt, sched, gen, epochs, history, (train_s, test_s, images)))
    return TrainResult(accuracy=accuracy, train_seconds=train_s, test_seconds=test_s,
                       images_per_s=images / train_s if train_s > 0 else 0.0, epochs=history)
