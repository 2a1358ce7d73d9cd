"""Training harness on the tiny real `digits` set: learning, budget, NaN, LEMUR hooks, batch, seed."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from nasgraph.tools.evaluator import harness
from nasgraph.tools.evaluator.datasets import TensorData, load_dataset
from nasgraph.tools.evaluator.harness import (
    NaNLoss,
    OverBudget,
    Screen,
    ScreenedOut,
    TrainResult,
    pick_device,
    train_and_test,
)
from nasgraph.tools.evaluator.reference_models import reference_names, reference_path, reference_source

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> TensorData:
    return load_dataset("digits", tmp_path_factory.mktemp("data"))


class Small(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        # flatten -> Linear (no global pool) learns 8x8 digits in a few dozen steps
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Flatten(), nn.Linear(16 * 8 * 8, classes))

    def forward(self, x):
        return self.body(x)


def _small(seed: int = 0) -> Small:
    torch.manual_seed(seed)
    return Small()


def test_small_model_learns_digits(digits):
    r = train_and_test(_small(), digits, {"lr": 0.05, "batch": 64}, epochs=2, device=CPU)
    assert isinstance(r, TrainResult)
    assert r.accuracy > 0.7, r  # chance is 0.1; measured 0.90
    assert len(r.epochs) == 2 and [e["epoch"] for e in r.epochs] == [0, 1]
    assert r.epochs[-1]["loss"] < r.epochs[0]["loss"]
    assert r.train_seconds > 0 and r.test_seconds > 0 and r.images_per_s > 0
    assert math.isclose(r.epochs[-1]["accuracy"], r.accuracy)


def test_same_seed_same_result(digits):
    a = train_and_test(_small(), digits, {}, epochs=1, device=CPU, seed=3)
    b = train_and_test(_small(), digits, {}, epochs=1, device=CPU, seed=3)
    assert a.accuracy == b.accuracy and a.epochs[0]["loss"] == b.epochs[0]["loss"]
    c = train_and_test(_small(), digits, {}, epochs=1, device=CPU, seed=4)
    assert c.epochs[0]["loss"] != a.epochs[0]["loss"]  # the seed really drives shuffling/augmentation


def test_the_screen_measures_without_changing_the_result_and_cuts_below_its_bar(digits):
    plain = train_and_test(_small(), digits, {"batch": 32}, epochs=2, device=CPU, seed=1, augment=True)
    seen = Screen(0.25, probes=(0.1, 0.5))
    screened = train_and_test(_small(), digits, {"batch": 32}, epochs=2, device=CPU, seed=1, augment=True, screen=seen)
    assert screened.accuracy == plain.accuracy and screened.epochs[1]["loss"] == plain.epochs[1]["loss"]
    batches = math.ceil(len(digits.train_x) / 32)
    assert seen.batch == round(0.25 * batches) and 0.0 < seen.seconds < screened.epochs[0]["seconds"]
    assert list(seen.curve) == ["0.1", "0.25", "0.5"] and seen.curve["0.25"] == seen.accuracy
    assert 0.0 <= seen.accuracy < plain.epochs[0]["accuracy"]  # a quarter-trained model, on the first test images
    with pytest.raises(ScreenedOut) as e:
        train_and_test(_small(), digits, {"batch": 32}, epochs=2, device=CPU, seed=1,
                       screen=Screen(0.25, seen.accuracy + 0.01))
    assert e.value.screen.accuracy == seen.accuracy and e.value.projected_s > e.value.screen.seconds
    assert "below the bar of" in str(e.value)
    # At the bar exactly, the model goes on.
    train_and_test(_small(), digits, {"batch": 32}, epochs=2, device=CPU, seed=1, screen=Screen(0.25, seen.accuracy))


def test_over_budget_fires_with_projection(digits):
    with pytest.raises(OverBudget) as e:
        train_and_test(_small(), digits, {}, time_budget_s=1e-4, device=CPU)
    assert e.value.projected_s > e.value.budget_s == 1e-4
    assert e.value.batches_timed >= 0 and "budget" in str(e.value)


class FakeTime:
    """Stands in for the harness's clock so that budget tests do not depend on machine load."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class Costs(Small):
    """Each training forward advances the fake clock by cost(call number), in seconds."""

    def __init__(self, clock: FakeTime, cost):
        torch.manual_seed(0)
        super().__init__()
        self.clock, self.cost, self.calls = clock, cost, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            self.clock.now += self.cost(self.calls)
        return super().forward(x)


def test_over_budget_catches_a_model_that_slows_down(digits, monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(harness, "time", clock)
    # batch 16 -> 90 batches; 1 ms per batch at first (0.09 s per epoch), then 1 s per batch.
    model = Costs(clock, lambda call: 0.001 if call <= 10 else 1.0)
    with pytest.raises(OverBudget) as e:
        train_and_test(model, digits, {"batch": 16}, time_budget_s=30.0, device=CPU)
    # checks at 1..5, 10, 20 timed batches: at 10 the average is still low (9.1 s projected),
    # at 20 it is (9 * 0.001 + 11 * 1) / 20 * 90 = 49.5 s
    assert e.value.batches_timed == 20 and e.value.projected_s == pytest.approx(49.5, rel=1e-3)
    assert model.calls == 21  # stopped right there, not at the end of the epoch


def test_one_slow_batch_is_tolerated_but_a_hopeless_one_is_not(digits, monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(harness, "time", clock)
    # The first timed batch (call 2) takes 1 s: 90 s projected against 60 s, but from one batch only.
    r = train_and_test(Costs(clock, lambda call: 1.0 if call == 2 else 0.001), digits, {"batch": 16},
                       time_budget_s=60.0, device=CPU)
    assert r.accuracy > 0
    with pytest.raises(OverBudget) as e:  # 10 s -> 900 s projected, beyond HOPELESS x 60 s
        train_and_test(Costs(clock, lambda call: 10.0 if call == 2 else 0.001), digits, {"batch": 16},
                       time_budget_s=60.0, device=CPU)
    assert e.value.batches_timed == 1


class NaNOut(Small):
    def forward(self, x):
        return super().forward(x) * float("nan")


def test_nan_loss_fires_at_once(digits):
    with pytest.raises(NaNLoss) as e:
        train_and_test(NaNOut(), digits, {}, device=CPU)
    assert e.value.batch == 0 and e.value.epoch == 0


class Hooked(Small):
    """LEMUR-style model that records how the harness drives it."""

    def __init__(self, swallow: bool = False, poison: bool = False):
        torch.manual_seed(0)
        super().__init__()
        self.setup_prm, self.learn_calls, self.batch_shapes = None, 0, []
        self.swallow, self.poison = swallow, poison

    def train_setup(self, prm):
        self.setup_prm = dict(prm)
        self.criteria = (nn.CrossEntropyLoss(),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"], momentum=prm["momentum"])

    def learn(self, train_data):
        self.learn_calls += 1
        try:
            for x, y in train_data:
                self.batch_shapes.append((tuple(x.shape), x.dtype, y.dtype, float(x.mean())))
                self.optimizer.zero_grad()
                self.criteria[0](self(x), y).backward()
                self.optimizer.step()
                if self.poison:
                    with torch.no_grad():
                        next(self.parameters()).fill_(float("inf"))
        except Exception:  # noqa: BLE001 - a careless learn() must not hide the harness's stop
            if not self.swallow:
                raise


def test_lemur_hooks_are_honoured(digits):
    m = Hooked()
    r = train_and_test(m, digits, {"lr": 0.05, "batch": 64, "dropout": 0.2}, epochs=2, device=CPU)
    assert m.setup_prm["lr"] == 0.05 and m.setup_prm["momentum"] == 0.9 and m.setup_prm["dropout"] == 0.2
    assert m.learn_calls == 2
    n_batches = math.ceil(len(digits.train_x) / 64)
    assert len(m.batch_shapes) == 2 * n_batches
    shape, xdt, ydt, _ = m.batch_shapes[0]
    assert shape == (64, 1, 8, 8) and xdt == torch.float32 and ydt == torch.int64
    assert abs(sum(s[3] for s in m.batch_shapes) / len(m.batch_shapes)) < 0.5  # normalised, not 0..255
    assert r.accuracy > 0.6 and r.epochs[0]["loss"] is None  # measured 0.86


def test_budget_holds_inside_learn_even_if_it_swallows_errors(digits):
    with pytest.raises(OverBudget):
        train_and_test(Hooked(swallow=True), digits, {}, time_budget_s=1e-4, device=CPU)


def test_nan_parameters_inside_learn_stop_training(digits):
    with pytest.raises(NaNLoss):
        train_and_test(Hooked(poison=True), digits, {}, device=CPU)


class SetupOnly(Small):
    """train_setup without learn: the harness's loop must use the model's optimizer and loss."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__()
        self.loss_calls = 0

    def train_setup(self, prm):
        base = nn.CrossEntropyLoss()

        def counted(out, y):
            self.loss_calls += 1
            return base(out, y)

        self.criteria = [counted]
        self.optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)


def test_setup_without_learn_uses_models_optimizer_and_loss(digits):
    m = SetupOnly()
    train_and_test(m, digits, {}, device=CPU)
    assert m.loss_calls == math.ceil(len(digits.train_x) / 128)
    assert all("exp_avg" in s for s in m.optimizer.state.values())  # Adam actually stepped


class CountsBatches(Small):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__()
        self.sizes = []

    def forward(self, x):
        if self.training:
            self.sizes.append(x.shape[0])
        return super().forward(x)


def test_batch_in_prm_overrides_batch_size(digits):
    m = CountsBatches()
    train_and_test(m, digits, {"batch": 50}, batch_size=128, device=CPU)
    assert m.sizes[0] == 50 and len(m.sizes) == math.ceil(len(digits.train_x) / 50)
    assert sum(m.sizes) == len(digits.train_x)


@pytest.mark.parametrize("bad", [0, -3, "many", None])
def test_bad_batch_is_a_clear_error(digits, bad):
    with pytest.raises(ValueError, match="batch"):
        train_and_test(_small(), digits, {"batch": bad}, device=CPU)


def test_augmentation_shifts_within_pad_and_keeps_shape():
    x = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    x[:, 0, 8, 8] = 255
    y = torch.zeros(64, dtype=torch.int64)
    data = TensorData("dot", x, y, x[:4], y[:4], 10, (0.5,), (0.5,), flip=True)
    b = harness._Batches(data, CPU, 64, True, torch.Generator().manual_seed(0))
    aug = b._augment(b.x)
    assert aug.shape == x.shape and aug.dtype == torch.uint8
    moved = 0
    for img in aug[:, 0]:
        ys, xs = torch.nonzero(img, as_tuple=True)
        assert len(ys) <= 1  # the dot moved (or left the frame); nothing was smeared
        if len(ys):
            # a flip maps column 8 of 16 to column 7, hence the extra 1
            assert abs(int(ys[0]) - 8) <= b.pad and abs(int(xs[0]) - 8) <= b.pad + 1
            moved += (int(ys[0]), int(xs[0])) != (8, 8)
    assert moved > 32
    plain = harness._Batches(data, CPU, 64, False, torch.Generator().manual_seed(0))
    assert plain.pad == 0 and not plain.flip and torch.equal(plain._augment(plain.x), x)


def test_normalised_batches_are_centred(digits):
    b = harness._Batches(digits, CPU, 10_000, False, torch.Generator().manual_seed(0))
    x, _ = next(b.epoch())
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            pick_device("cuda")


@pytest.mark.parametrize("name", ["tiny_cnn", "small_resnet", "lemur_hooks"])
def test_reference_models_fit_the_contract(name):
    assert name in reference_names()
    ns: dict = {}
    exec(compile(reference_source(name), str(reference_path(name)), "exec"), ns)  # as the sandbox would
    for shape in [(2, 1, 8, 8), (2, 1, 28, 28), (2, 3, 32, 32)]:
        net = ns["Net"](shape, (10,), {"lr": 0.01, "momentum": 0.9, "dropout": 0.1}, CPU)
        assert net(torch.randn(*shape)).shape == (2, 10)
        assert sum(p.numel() for p in net.parameters()) < 100_000
    assert ns["supported_hyperparameters"]() >= {"lr", "momentum"}
    with pytest.raises(ValueError, match="known"):
        reference_path("nope")


@pytest.mark.parametrize("prm", [{"lr": "fast"}, {"momentum": None}, {"lr": float("nan")}, {"weight_decay": -1}])
def test_bad_recipe_numbers_are_clear_errors(digits, prm):
    key = next(iter(prm))
    with pytest.raises(ValueError, match=key):
        train_and_test(_small(), digits, prm, device=CPU)


class ViewFlatten(nn.Module):
    """The common `x.view(n, -1)` flatten, which channels_last tensors do not allow."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)
        self.layouts = []

    def forward(self, x):
        x = torch.relu(self.conv(x))
        if self.training:
            self.layouts.append(x.is_contiguous())
        return self.fc(x.view(x.size(0), -1))


def test_channels_last_where_possible_plain_layout_otherwise(digits):
    conv = CountsBatches()
    seen = []
    conv.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    train_and_test(conv, digits, {}, device=CPU)
    assert seen and all(seen)  # a model that allows it trains on channels_last batches
    m = ViewFlatten()
    r = train_and_test(m, digits, {"lr": 0.05, "batch": 64}, epochs=2, device=CPU)
    assert m.layouts and all(m.layouts)  # fell back to NCHW, so view() works
    assert r.accuracy > 0.5
