"""LEMUR (the ABrain-One `nn-dataset` corpus): PyTorch model files with their recorded training runs.

`pull` fetches the pinned wheel and indexes it under `<home>/lemur/` (see `fetch` and `index`);
`list_models`, `show` and `stats` read that index and return typed data (see `query`). Nothing here
imports or runs a corpus file: what is known about the code comes from `ast` (see `parse`).
"""
from __future__ import annotations

from nasgraph.tools.lemur.fetch import WHEEL, LemurWheel, PullResult, pull
from nasgraph.tools.lemur.index import BuildCounts
from nasgraph.tools.lemur.layout import LemurError, index_path, lemur_dir
from nasgraph.tools.lemur.query import (
    CorpusStats,
    DatasetStats,
    EpochSummary,
    LemurNotPulled,
    ModelDetail,
    ModelListing,
    Run,
    SeriesSummary,
    UnknownLemurName,
    list_models,
    show,
    stats,
)

__all__ = [
    "WHEEL", "BuildCounts", "CorpusStats", "DatasetStats", "EpochSummary", "LemurError", "LemurNotPulled",
    "LemurWheel", "ModelDetail", "ModelListing", "PullResult", "Run", "SeriesSummary", "UnknownLemurName",
    "index_path", "lemur_dir", "list_models", "pull", "show", "stats",
]
