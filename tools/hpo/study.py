"""One hyperparameter search: a sampler proposes, an objective answers, an optuna study records.

Every sampler runs on an optuna `Study` (direction maximize) in the storage it is given, so a run
in a SQLite file resumes where it stopped, whatever the sampler: optuna's TPE and random samplers
pick through `study.ask`; a sampler that decides outside optuna (the LLM agent) enqueues its
proposal as fixed parameters first, with its own facts as trial user attributes.

A trial whose training failed (diverged, over its time budget) is told as accuracy 0.0: a bad
setting is exactly what a sampler must learn to avoid, and a failed state would hide it from TPE.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import optuna
from pydantic import BaseModel, Field

from nasgraph.errors import NasgraphError
from nasgraph.tools.hpo.space import Params, SearchSpace

FAILED_VALUE = 0.0


class HpoError(NasgraphError):
    """A search cannot run or resume (another sampler or space in the storage, a model that never trains)."""


class Result(BaseModel):
    """What the objective says about one setting."""
    accuracy: float | None = Field(description="None: the training failed")
    status: str = "ok"
    note: str = Field("", description="for people: the recorded run that answered, or the error's line")


class Trial(BaseModel):
    number: int
    params: Params
    accuracy: float | None
    status: str = "ok"
    source: str = Field(description="who chose the params: tpe, random, llm, or fallback (the LLM's reply was unusable)")
    seconds: float = 0.0
    note: str = ""
    attrs: dict[str, Any] = Field(default_factory=dict, description="the sampler's facts (LLM: parse mode, repairs)")

    @property
    def value(self) -> float:
        return FAILED_VALUE if self.accuracy is None else self.accuracy


class Proposal(BaseModel):
    params: Params
    source: str
    attrs: dict[str, Any] = Field(default_factory=dict)


class Objective(Protocol):
    def __call__(self, params: Params) -> Result: ...


class Sampler(ABC):
    """A way to choose the next trial. `optuna_sampler` is the study's own sampler; `propose` returns
    a proposal made outside optuna, or None to let the study's sampler choose."""
    name: ClassVar[str]

    @abstractmethod
    def optuna_sampler(self, seed: int, trials: int) -> optuna.samplers.BaseSampler: ...

    def propose(self, space: SearchSpace, trials: list[Trial], seed: int) -> Proposal | None:
        return None


class TPE(Sampler):
    name = "tpe"

    def optuna_sampler(self, seed: int, trials: int) -> optuna.samplers.BaseSampler:
        # Optuna's default of 10 random startup trials would leave a 12-trial search almost all random;
        # a third of the budget (3..10) lets TPE model most of it, the stronger baseline to compare with.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(trials))


class Random(Sampler):
    name = "random"

    def optuna_sampler(self, seed: int, trials: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)


def startup_trials(trials: int) -> int:
    return max(3, min(10, trials // 3))


class StudyResult(BaseModel):
    sampler: str
    trials: list[Trial]
    resumed: int = Field(0, description="trials that were already in the storage")

    @property
    def best(self) -> Trial | None:
        done = [t for t in self.trials if t.accuracy is not None]
        return max(done, key=lambda t: t.accuracy) if done else None  # type: ignore[arg-type, return-value]

    @property
    def best_accuracy(self) -> float:
        return max((t.value for t in self.trials), default=FAILED_VALUE)


def _record(t: optuna.trial.FrozenTrial) -> Trial:
    a = dict(t.user_attrs)
    return Trial(number=t.number, params=dict(t.params), accuracy=a.pop("accuracy", t.value),
                 status=a.pop("status", "ok"), source=a.pop("source", "?"), seconds=a.pop("seconds", 0.0),
                 note=a.pop("note", ""), attrs=a)


def open_study(sampler: Sampler, space: SearchSpace, *, name: str, storage: str | optuna.storages.BaseStorage | None,
               seed: int, trials: int) -> optuna.Study:
    """The study `name` in `storage`, created or loaded; a stored study of another sampler or space is refused."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                sampler=sampler.optuna_sampler(seed, trials))
    stored = study.user_attrs
    if stored.get("sampler", sampler.name) != sampler.name:
        raise HpoError(f"study {name!r} was run with sampler {stored['sampler']!r}, not {sampler.name!r}; "
                       "use another run folder or the same sampler")
    if stored.get("space", space.model_dump()) != space.model_dump():
        raise HpoError(f"study {name!r} was run over another search space; use another run folder")
    study.set_user_attr("sampler", sampler.name)
    study.set_user_attr("space", space.model_dump())
    return study


def run_study(objective: Objective, space: SearchSpace, sampler: Sampler, trials: int, *, name: str = "hpo",
              storage: str | optuna.storages.BaseStorage | None = None, seed: int = 0,
              on_trial: Callable[[Trial], None] | None = None) -> StudyResult:
    """Run until the study holds `trials` finished trials; trials already stored count (resume)."""
    study = open_study(sampler, space, name=name, storage=storage, seed=seed, trials=trials)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # killed mid-trial: it will be run again
    done = [_record(t) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    resumed = len(done)
    distributions = space.distributions()
    while len(done) < trials:
        proposal = sampler.propose(space, done, seed)
        if proposal is not None:
            study.enqueue_trial(proposal.params, user_attrs={**proposal.attrs, "source": proposal.source})
        trial = study.ask(distributions)
        params = dict(trial.params)
        start = time.perf_counter()
        result = objective(params)
        seconds = round(time.perf_counter() - start, 3)
        source = trial.user_attrs.get("source", sampler.name)
        for key, value in (("accuracy", result.accuracy), ("status", result.status), ("source", source),
                           ("seconds", seconds), ("note", result.note)):
            trial.set_user_attr(key, value)
        study.tell(trial, FAILED_VALUE if result.accuracy is None else result.accuracy)
        record = Trial(number=trial.number, params=params, accuracy=result.accuracy, status=result.status,
                       source=source, seconds=seconds, note=result.note,
                       attrs={k: v for k, v in trial.user_attrs.items()
                              if k not in ("accuracy", "status", "source", "seconds", "note")})
        done.append(record)
        if on_trial is not None:
            on_trial(record)
    return StudyResult(sampler=sampler.name, trials=done, resumed=resumed)


def sqlite_storage(path: Path) -> optuna.storages.RDBStorage:
    """Optuna's SQLite storage in `path` (created with its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path}")
