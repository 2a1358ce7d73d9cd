"""The hyperparameter search space: typed dimensions, validation into the space, optuna distributions,
and the unit-cube coordinates the tabular oracle measures distances in.

Every sampler (optuna's TPE and random, the LLM agent) proposes inside one `SearchSpace`, so what a
proposal may hold is decided here once: a number outside its range is clamped to the edge, an integer
is rounded (in log space for log dimensions), a choice is matched by its text.
"""
from __future__ import annotations

import difflib
import math
import random
from typing import Annotated, Literal, Union

import optuna
from pydantic import BaseModel, Field

Value = Union[bool, int, float, str]
Params = dict[str, Value]


class FloatDim(BaseModel):
    kind: Literal["float"] = "float"
    name: str
    low: float
    high: float
    log: bool = False
    about: str = ""

    def validate_value(self, raw: object) -> tuple[float, bool]:
        """The value inside [low, high] and whether it had to be clamped; ValueError if not a number."""
        v = _number(raw)
        c = min(max(v, self.low), self.high)
        return c, c != v

    def unit(self, v: Value) -> float:
        lo, hi, x = (math.log(self.low), math.log(self.high), math.log(float(v))) if self.log else \
            (self.low, self.high, float(v))
        return 0.0 if hi == lo else (x - lo) / (hi - lo)

    def sample(self, rng: random.Random) -> float:
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def describe(self) -> str:
        scale = "log scale" if self.log else "linear"
        return f"{self.name}: a number from {_num(self.low)} to {_num(self.high)} ({scale})"


class IntDim(BaseModel):
    kind: Literal["int"] = "int"
    name: str
    low: int
    high: int
    log: bool = False
    about: str = ""

    def validate_value(self, raw: object) -> tuple[int, bool]:
        v = _number(raw)
        c = min(max(int(round(v)), self.low), self.high)
        return c, c != v

    def unit(self, v: Value) -> float:
        lo, hi, x = (math.log2(self.low), math.log2(self.high), math.log2(float(v))) if self.log else \
            (self.low, self.high, float(v))
        return 0.0 if hi == lo else (x - lo) / (hi - lo)

    def sample(self, rng: random.Random) -> int:
        if self.log:
            return int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
        return rng.randint(self.low, self.high)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log)

    def describe(self) -> str:
        scale = "log scale" if self.log else "linear"
        return f"{self.name}: an integer from {self.low} to {self.high} ({scale})"


class ChoiceDim(BaseModel):
    kind: Literal["choice"] = "choice"
    name: str
    choices: list[Value] = Field(min_length=1)
    about: str = ""

    def validate_value(self, raw: object) -> tuple[Value, bool]:
        """The choice the value names (exact, then case-insensitive, then the closest spelling)."""
        if raw in self.choices and type(raw) in {type(c) for c in self.choices}:
            return raw, False  # type: ignore[return-value]
        text = _choice_text(raw)
        by_text = {_choice_text(c): c for c in self.choices}
        if text in by_text:
            return by_text[text], False
        close = difflib.get_close_matches(text, list(by_text), n=1, cutoff=0.6)
        if close:
            return by_text[close[0]], True
        raise ValueError(f"{raw!r} is not one of {self.choices}")

    def unit(self, v: Value) -> float:
        return float(self.choices.index(v))  # used only for equality: see SearchSpace.distance

    def sample(self, rng: random.Random) -> Value:
        return rng.choice(self.choices)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)

    def describe(self) -> str:
        return f"{self.name}: one of {', '.join(_choice_text(c) for c in self.choices)}"


Dim = Annotated[Union[FloatDim, IntDim, ChoiceDim], Field(discriminator="kind")]


class Validated(BaseModel):
    """A proposal made to fit the space: every dimension has a value; what had to change is named."""
    params: Params
    clamped: list[str] = Field(default_factory=list, description="dimensions moved to the space's edge or nearest choice")
    missing: list[str] = Field(default_factory=list, description="dimensions the proposal left out (filled)")
    invalid: list[str] = Field(default_factory=list, description="dimensions whose value was unusable (filled)")
    extra: list[str] = Field(default_factory=list, description="keys the space does not have (ignored)")


class SearchSpace(BaseModel):
    dims: list[Dim] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dims]

    def dim(self, name: str) -> FloatDim | IntDim | ChoiceDim:
        for d in self.dims:
            if d.name == name:
                return d
        raise KeyError(name)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {d.name: d.distribution() for d in self.dims}

    def sample(self, rng: random.Random) -> Params:
        return {d.name: d.sample(rng) for d in self.dims}

    def validate(self, raw: dict[str, object], fill: Params) -> Validated:
        """`raw` made to fit: keys matched case-insensitively, values clamped; a missing or unusable
        value is taken from `fill` (which must cover the space)."""
        by_lower = {str(k).strip().lower(): v for k, v in raw.items()}
        out: Params = {}
        v = Validated(params={})
        for d in self.dims:
            if d.name.lower() not in by_lower or by_lower[d.name.lower()] is None:
                out[d.name] = fill[d.name]
                v.missing.append(d.name)
                continue
            try:
                value, moved = d.validate_value(by_lower[d.name.lower()])
            except (TypeError, ValueError):
                out[d.name] = fill[d.name]
                v.invalid.append(d.name)
                continue
            out[d.name] = value
            if moved:
                v.clamped.append(d.name)
        v.extra = sorted(k for k in by_lower if k not in {n.lower() for n in self.names})
        v.params = out
        return v

    def distance(self, a: Params, b: Params) -> float:
        """Euclidean distance with every numeric dimension scaled to [0, 1] over its range (log
        dimensions in log space) and a choice that differs counting 1, as a full range would."""
        total = 0.0
        for d in self.dims:
            if isinstance(d, ChoiceDim):
                total += 0.0 if a[d.name] == b[d.name] else 1.0
            else:
                total += (d.unit(a[d.name]) - d.unit(b[d.name])) ** 2
        return math.sqrt(total)

    def same(self, a: Params, b: Params, tol: float = 1e-3) -> bool:
        """Whether two points are one trial for practical purposes (within 0.1% of each range)."""
        return self.distance(a, b) <= tol

    def describe(self) -> str:
        return "\n".join(f"- {d.describe()}" + (f": {d.about}" if d.about else "") for d in self.dims)


def _number(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a number here")
    if isinstance(raw, str):
        raw = raw.strip().rstrip(",;").strip()
    v = float(raw)  # type: ignore[arg-type]
    if not math.isfinite(v):
        raise ValueError(f"{raw!r} is not finite")
    return v


def _choice_text(c: object) -> str:
    if isinstance(c, bool):
        return "true" if c else "false"
    return str(c).strip().strip("'\"").lower()


def _num(x: float) -> str:
    return f"{x:.4g}"


def fmt_value(v: Value) -> str:
    """A value as the LLM and the tables see it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)
