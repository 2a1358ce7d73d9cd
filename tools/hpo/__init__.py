"""Hyperparameter search: one search space, samplers behind one interface (optuna's TPE and random
here, the LLM agent in `nasgraph.agents.hpo_agent`), a study runner on optuna's storage (resumable
from SQLite), LEMUR's recorded runs as a tabular benchmark, and the Evaluator as a live objective.
"""
from __future__ import annotations

from nasgraph.tools.hpo.space import ChoiceDim, FloatDim, IntDim, Params, SearchSpace, Validated, fmt_value
from nasgraph.tools.hpo.study import (
    TPE,
    HpoError,
    Objective,
    Proposal,
    Random,
    Result,
    Sampler,
    StudyResult,
    Trial,
    run_study,
    sqlite_storage,
)

__all__ = [
    "TPE", "ChoiceDim", "FloatDim", "HpoError", "IntDim", "Objective", "Params", "Proposal", "Random", "Result",
    "Sampler", "SearchSpace", "StudyResult", "Trial", "Validated", "fmt_value", "run_study", "sqlite_storage",
]
