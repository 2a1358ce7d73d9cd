"""The model store: every architecture and every evaluation, in one SQLite file (WAL mode).

One writer and any number of readers (other processes included) may use a store at once: writes
take ``BEGIN IMMEDIATE`` and wait up to ``busy_timeout`` for the lock; readers never block in WAL.
An architecture is inserted together with its first evaluation in one transaction, so a crash
(``kill -9``) or an exception mid-write leaves no half record.

Cacheable results: an evaluation is reused for the same (architecture, dataset, epochs, prm) unless
its status depends on the machine or on limits that may change between runs: ``timeout``,
``memory``, ``killed`` and ``over_budget`` (the epoch-time projection depends on load, and budgets are
configuration). Everything else — ``ok`` and the failures that follow from the code itself — is
reused. ``duplicate`` is never stored as an evaluation; a reuse is a row in ``cache_hits``.

Datasets are keyed as ``own_data.dataset_key`` says, whatever string a caller passes: a built-in name as
it is, a user's image folder or .npz by its contents (``own:<digest>``), never by its path — the same
images at another path reuse their results, changed images at the same path are another dataset.

Final trainings (schema 3): a winner re-trained for N epochs is one row in ``trainings`` (unique per
architecture, dataset, epochs and recipe, so a resumed training continues its row), its curve one row
per finished epoch in ``training_epochs`` (written as each epoch ends), and each export of its
weights a row in ``exports`` (format, file, ONNX-vs-PyTorch difference, latency on this machine).
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from nasgraph.errors import NasgraphError
from nasgraph.tools import fingerprint as fp
from nasgraph.tools.candidate import Candidate
from nasgraph.tools.evaluator.outcome import Outcome
from nasgraph.tools.evaluator.own_data import dataset_key

SCHEMA_VERSION = 3
APPLICATION_ID = 0x4E534752  # "NSGR": marks the file as a nasgraph store (PRAGMA application_id)
UNCACHEABLE = frozenset({"timeout", "memory", "killed", "over_budget", "screened"})  # screened: the bar moves
BUSY_TIMEOUT_MS = 30_000


class StoreError(NasgraphError):
    """A store that cannot be opened or used, or a request it cannot answer (unknown id, …)."""


@dataclass(frozen=True)
class EvaluationRecord:
    id: int
    arch_id: str
    dataset: str
    epochs: int
    prm: dict
    status: str
    stage: str
    accuracy: float | None
    params: int | None
    flops: int | None
    seconds: dict
    error: str
    detail: dict
    epoch_stats: list
    hardware: dict
    created: str
    run_id: str | None
    iteration: int | None
    diagnosis: dict | None = None  # a failure's typed facts (Outcome.diagnosis); None before schema 2

    @property
    def cacheable(self) -> bool:
        return self.status not in UNCACHEABLE

    def to_outcome(self) -> Outcome:
        return Outcome(status=self.status, stage=self.stage, accuracy=self.accuracy, params=self.params,
                       flops=self.flops, seconds=dict(self.seconds), error=self.error,
                       detail=dict(self.detail), epochs=list(self.epoch_stats), diagnosis=self.diagnosis)


@dataclass(frozen=True)
class TrainingRecord:
    """A final training: the proxy it was chosen by, its curve so far, its latency and exports."""
    id: int
    arch_id: str
    dataset: str
    epochs: int
    prm: dict
    status: str                  # 'running' until it ends (or was interrupted), then the Outcome's status
    accuracy: float | None       # test accuracy after the last finished epoch
    proxy_accuracy: float | None
    proxy_evaluation_id: int | None
    params: int | None
    flops: int | None
    latency: dict                # {"pytorch": {"1": ms, "64": ms}}: forward latency on this machine
    checkpoint: str | None       # the last epoch's checkpoint (weights, optimizer, schedule): resume and export
    error: str
    detail: dict
    hardware: dict
    run_id: str | None
    created: str
    updated: str
    curve: list[dict] = field(default_factory=list)  # {"epoch", "accuracy", "loss", "train_accuracy", "seconds"}

    @property
    def epochs_done(self) -> int:
        return len(self.curve)


@dataclass(frozen=True)
class ExportRecord:
    id: int
    training_id: int
    format: str                  # 'pytorch' | 'onnx'
    path: str
    max_abs_diff: float | None   # ONNX Runtime vs PyTorch logits on the same inputs
    latency: dict                # {"1": ms, "64": ms}
    detail: dict
    hardware: dict
    created: str


@dataclass(frozen=True)
class ArchitectureSummary:
    id: str
    origin: str
    created: str
    novelty: float | None
    nearest_id: str | None
    evaluations: int
    best_accuracy: float | None
    last_status: str | None


@dataclass(frozen=True)
class ArchitectureDetail:
    id: str
    code: str
    origin: str
    created: str
    novelty: float | None
    nearest_id: str | None
    evaluations: list[EvaluationRecord] = field(default_factory=list)
    cache_hits: int = 0


_SCHEMA_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE architectures (
    id          TEXT PRIMARY KEY,               -- canonical id (fingerprint.canonical_id) or raw hash
    code        TEXT NOT NULL,                  -- the first source text seen for this id
    origin      TEXT NOT NULL,                  -- 'reference', 'llm:<model>', 'import', ...
    created     TEXT NOT NULL,                  -- UTC ISO 8601
    minhash     BLOB NOT NULL,                  -- little-endian uint32 hash values
    novelty     REAL,                           -- 1 - max Jaccard against the store at insert time
    nearest_id  TEXT REFERENCES architectures(id)
);
CREATE TABLE evaluations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    arch_id     TEXT NOT NULL REFERENCES architectures(id),
    dataset     TEXT NOT NULL,
    epochs      INTEGER NOT NULL,
    prm         TEXT NOT NULL,                  -- canonical JSON, sorted keys
    status      TEXT NOT NULL,
    stage       TEXT NOT NULL DEFAULT '',
    accuracy    REAL,
    params      INTEGER,
    flops       INTEGER,
    seconds     TEXT NOT NULL DEFAULT '{}',     -- JSON: wall seconds per stage
    error       TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '{}',     -- JSON
    epoch_stats TEXT NOT NULL DEFAULT '[]',     -- JSON list, one object per epoch
    hardware    TEXT NOT NULL DEFAULT '{}',     -- JSON: cpu/gpu, threads, torch version
    created     TEXT NOT NULL,
    run_id      TEXT,
    iteration   INTEGER
);
CREATE INDEX evaluations_by_key ON evaluations(arch_id, dataset, epochs, prm);
CREATE INDEX evaluations_by_run ON evaluations(run_id, iteration);
CREATE INDEX evaluations_by_score ON evaluations(dataset, epochs, accuracy) WHERE status = 'ok';
CREATE TABLE cache_hits (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    arch_id       TEXT NOT NULL REFERENCES architectures(id),
    evaluation_id INTEGER NOT NULL REFERENCES evaluations(id),
    run_id        TEXT,
    iteration     INTEGER,
    created       TEXT NOT NULL
);
CREATE INDEX cache_hits_by_run ON cache_hits(run_id, iteration);
"""

# version reached -> script that brings the previous version there
_MIGRATIONS: dict[int, str] = {
    1: _SCHEMA_V1,
    2: "ALTER TABLE evaluations ADD COLUMN diagnosis TEXT;",  # JSON of Outcome.diagnosis, NULL when none
    3: """
CREATE TABLE trainings (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    arch_id             TEXT NOT NULL REFERENCES architectures(id),
    dataset             TEXT NOT NULL,
    epochs              INTEGER NOT NULL,
    prm                 TEXT NOT NULL,          -- canonical JSON: the recipe, as evaluations key it
    status              TEXT NOT NULL,
    accuracy            REAL,
    proxy_accuracy      REAL,
    proxy_evaluation_id INTEGER REFERENCES evaluations(id),
    params              INTEGER,
    flops               INTEGER,
    latency             TEXT NOT NULL DEFAULT '{}',
    checkpoint          TEXT,
    error               TEXT NOT NULL DEFAULT '',
    detail              TEXT NOT NULL DEFAULT '{}',
    hardware            TEXT NOT NULL DEFAULT '{}',
    run_id              TEXT,
    created             TEXT NOT NULL,
    updated             TEXT NOT NULL,
    UNIQUE (arch_id, dataset, epochs, prm)
);
CREATE TABLE training_epochs (
    training_id    INTEGER NOT NULL REFERENCES trainings(id),
    epoch          INTEGER NOT NULL,            -- 0-based, as the harness counts
    accuracy       REAL,
    loss           REAL,
    train_accuracy REAL,
    seconds        REAL,
    PRIMARY KEY (training_id, epoch)
);
CREATE TABLE exports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    training_id  INTEGER NOT NULL REFERENCES trainings(id),
    format       TEXT NOT NULL,
    path         TEXT NOT NULL,
    max_abs_diff REAL,
    latency      TEXT NOT NULL DEFAULT '{}',
    detail       TEXT NOT NULL DEFAULT '{}',
    hardware     TEXT NOT NULL DEFAULT '{}',
    created      TEXT NOT NULL
);
""",
}

_EVAL_COLUMNS = ("id, arch_id, dataset, epochs, prm, status, stage, accuracy, params, flops, seconds, "
                 "error, detail, epoch_stats, hardware, created, run_id, iteration, diagnosis")
_TRAINING_COLUMNS = ("id, arch_id, dataset, epochs, prm, status, accuracy, proxy_accuracy, proxy_evaluation_id, params, "
                     "flops, latency, checkpoint, error, detail, hardware, run_id, created, updated")
_HEX = re.compile(r"^[0-9a-f]+$")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def canonical_prm(prm: dict) -> str:
    """The cache key form of a hyperparameter dict: JSON with sorted keys, no whitespace."""
    if not isinstance(prm, dict):
        raise StoreError(f"prm must be a dict, got {type(prm).__name__}")
    try:
        return json.dumps(prm, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"prm is not plain JSON (numbers, strings, lists, dicts): {e}") from None


def _to_json(value: object) -> str:
    # Details come from generated code's failures: never let an odd value lose the whole record.
    return json.dumps(value, sort_keys=True, default=str)


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.RLock()
        self._index = fp.NoveltyIndex()
        self._index_rowid = 0  # architectures.rowid already loaded into the index
        if self.path.is_dir():
            raise StoreError(f"store path {self.path} is a directory; give a file path such as {self.path / 'store.db'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the folder for store {self.path}: {e}") from None
        try:
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open store {self.path}: {e}") from None
        try:
            self._setup()
        except sqlite3.OperationalError as e:
            self._conn.close()
            if "locked" in str(e):
                raise StoreError(f"store {self.path} is locked by another process ({e}); try again") from None
            raise StoreError(f"cannot open store {self.path}: {e}") from None
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise StoreError(f"{self.path} is not a readable nasgraph store ({e}); "
                             "move it aside or point NASGRAPH_HOME / the store path elsewhere") from None
        except StoreError:
            self._conn.close()
            raise

    # ---------------------------------------------------------------- setup and transactions
    def _setup(self) -> None:
        c = self._conn
        c.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Reading the header first: a non-SQLite file fails here with "file is not a database".
        version = c.execute("PRAGMA user_version").fetchone()[0]
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and not tables:
            pass  # a new or empty file: becomes a store below
        elif app_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is an SQLite database but not a nasgraph store "
                             f"(tables: {', '.join(sorted(tables)) or 'none'})")
        elif version > SCHEMA_VERSION:
            raise StoreError(f"store {self.path} has schema version {version}, newer than this nasgraph "
                             f"understands ({SCHEMA_VERSION}); upgrade nasgraph")
        mode = c.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal":  # switching needs an exclusive lock: only ask when not yet WAL
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"store {self.path}: could not switch to WAL journal mode (got {mode})")
        c.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a process crash never loses a commit
        c.execute("PRAGMA foreign_keys = ON")
        self._migrate(version)

    def _migrate(self, version: int) -> None:
        if version >= SCHEMA_VERSION:
            self._check_fingerprint_version()
            return
        with self._write() as c:
            current = c.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for target in range(current + 1, SCHEMA_VERSION + 1):
                for stmt in _split_sql(_MIGRATIONS[target]):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {target}")
            if current == 0:
                c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                c.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                    ("fingerprint_version", str(fp.FINGERPRINT_VERSION)),
                    ("num_perm", str(fp.NUM_PERM)),
                    ("shingle_k", str(fp.SHINGLE_K)),
                    ("minhash_scheme", fp.MINHASH_SCHEME),
                    ("created", _now()),
                ])
        self._check_fingerprint_version()

    def _check_fingerprint_version(self) -> None:
        meta = dict(self._conn.execute("SELECT key, value FROM meta"))
        if meta.get("fingerprint_version") != str(fp.FINGERPRINT_VERSION) or meta.get("num_perm") != str(fp.NUM_PERM):
            raise StoreError(f"store {self.path} was fingerprinted with version {meta.get('fingerprint_version')} "
                             f"/ {meta.get('num_perm')} permutations, this nasgraph uses "
                             f"{fp.FINGERPRINT_VERSION} / {fp.NUM_PERM}; its ids are not comparable")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any exception, so no half records."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise StoreError(f"store {self.path} is locked by another writer ({e})") from None
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreError(f"store {self.path}: write failed and was rolled back: {e}") from e
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"store {self.path}: read failed: {e}") from e

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- architectures and novelty
    def _refresh_index(self) -> None:
        """Loads signatures committed since the last call (by this or any other process)."""
        try:
            rows = self._conn.execute("SELECT rowid, id, minhash FROM architectures WHERE rowid > ? ORDER BY rowid",
                                      (self._index_rowid,)).fetchall()
            for rowid, arch_id, blob in rows:
                self._index.add_minhash(arch_id, fp.minhash_from_bytes(blob))
                self._index_rowid = rowid
        except (sqlite3.Error, ValueError) as e:
            raise StoreError(f"store {self.path}: cannot load MinHash signatures: {e}") from e

    def novelty(self, cand: Candidate, exclude: Collection[str] = ()) -> tuple[float, str | None]:
        """(1 - max Jaccard estimate against every stored architecture but `exclude`, nearest id);
        (1.0, None) if there is none."""
        with self._lock:
            self._refresh_index()
            return self._index.novelty_of(cand.minhash, exclude)

    def _insert_architecture(self, c: sqlite3.Connection, cand: Candidate, origin: str) -> bool:
        """Inside a write transaction: inserts the architecture unless present. Returns is_new."""
        if c.execute("SELECT 1 FROM architectures WHERE id = ?", (cand.arch_id,)).fetchone():
            return False
        if not isinstance(origin, str) or not origin:
            raise StoreError("origin must be a non-empty string such as 'reference' or 'llm:<model>'")
        self._refresh_index()  # under the write lock, so the novelty sees every committed design
        novelty, nearest = self._index.novelty_of(cand.minhash)
        c.execute("INSERT INTO architectures(id, code, origin, created, minhash, novelty, nearest_id) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (cand.arch_id, cand.code, origin, _now(), cand.signature_bytes, novelty, nearest))
        return True

    def add_architecture(self, cand: Candidate, origin: str) -> tuple[str, bool]:
        with self._write() as c:
            is_new = self._insert_architecture(c, cand, origin)
        return cand.arch_id, is_new

    def _resolve(self, arch_id_or_prefix: str) -> str:
        key = (arch_id_or_prefix or "").strip().lower()
        if not key or not _HEX.match(key):
            raise StoreError(f"'{arch_id_or_prefix}' is not an architecture id (hex digits expected)")
        rows = self._read("SELECT id FROM architectures WHERE id GLOB ? ORDER BY id LIMIT 6", (key + "*",))
        if not rows:
            raise StoreError(f"no architecture with id or prefix '{key}'")
        if len(rows) > 1 and rows[0][0] != key:
            shown = ", ".join(r[0] for r in rows[:5])
            raise StoreError(f"prefix '{key}' is ambiguous: matches {shown}{', …' if len(rows) > 5 else ''}; "
                             "give more characters")
        return rows[0][0]

    def architecture(self, arch_id_or_prefix: str) -> ArchitectureDetail:
        arch_id = self._resolve(arch_id_or_prefix)
        row = self._read("SELECT id, code, origin, created, novelty, nearest_id FROM architectures WHERE id = ?",
                         (arch_id,))[0]
        evals = [self._record(r) for r in self._read(
            f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE arch_id = ? ORDER BY id", (arch_id,))]
        hits = self._read("SELECT COUNT(*) FROM cache_hits WHERE arch_id = ?", (arch_id,))[0][0]
        return ArchitectureDetail(*row, evaluations=evals, cache_hits=hits)

    def architectures(self, limit: int | None = None, order: Literal["created", "accuracy"] = "created",
                      dataset: str | None = None) -> list[ArchitectureSummary]:
        """Newest first ("created") or best first ("accuracy", unevaluated last), with eval counts."""
        if order not in ("created", "accuracy"):
            raise StoreError(f"order must be 'created' or 'accuracy', got {order!r}")
        order_sql = "a.rowid DESC" if order == "created" else "best IS NULL, best DESC, a.rowid DESC"
        dataset = dataset_key(dataset) if dataset else None
        ds_filter = "AND e.dataset = ?" if dataset else ""
        sql = f"""
            SELECT a.id, a.origin, a.created, a.novelty, a.nearest_id,
                   COUNT(e.id),
                   MAX(CASE WHEN e.status = 'ok' THEN e.accuracy END) AS best,
                   (SELECT status FROM evaluations WHERE arch_id = a.id ORDER BY id DESC LIMIT 1)
            FROM architectures a LEFT JOIN evaluations e ON e.arch_id = a.id {ds_filter}
            GROUP BY a.id ORDER BY {order_sql}"""
        args: tuple = (dataset,) if dataset else ()
        if limit is not None:
            sql += " LIMIT ?"
            args += (int(limit),)
        return [ArchitectureSummary(*r) for r in self._read(sql, args)]

    # ---------------------------------------------------------------- evaluations
    @staticmethod
    def _record(r: tuple) -> EvaluationRecord:
        (eid, arch_id, dataset, epochs, prm, status, stage, acc, params, flops, seconds,
         error, detail, epoch_stats, hardware, created, run_id, iteration, diagnosis) = r
        return EvaluationRecord(eid, arch_id, dataset, epochs, json.loads(prm), status, stage, acc, params,
                                flops, json.loads(seconds), error, json.loads(detail), json.loads(epoch_stats),
                                json.loads(hardware), created, run_id, iteration,
                                json.loads(diagnosis) if diagnosis else None)

    def lookup(self, arch_id: str, dataset: str, epochs: int, prm: dict) -> EvaluationRecord | None:
        """Most recent cacheable evaluation for these keys, or None."""
        dataset = dataset_key(dataset)
        skip = ",".join("?" * len(UNCACHEABLE))
        rows = self._read(f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE arch_id = ? AND dataset = ? AND epochs = ? "
                          f"AND prm = ? AND status NOT IN ({skip}) ORDER BY id DESC LIMIT 1",
                          (arch_id, dataset, int(epochs), canonical_prm(prm), *sorted(UNCACHEABLE)))
        return self._record(rows[0]) if rows else None

    def _insert_evaluation(self, c: sqlite3.Connection, arch_id: str, outcome: Outcome, dataset: str,
                           epochs: int, prm: dict, hardware: dict, run_id: str | None,
                           iteration: int | None) -> int:
        if outcome.status == "duplicate":
            raise StoreError("a 'duplicate' outcome is a cache hit, not an evaluation: use record_cache_hit")
        if not c.execute("SELECT 1 FROM architectures WHERE id = ?", (arch_id,)).fetchone():
            raise StoreError(f"unknown architecture '{arch_id}': add it with add_architecture first")
        dataset = dataset_key(dataset)
        cur = c.execute(
            "INSERT INTO evaluations(arch_id, dataset, epochs, prm, status, stage, accuracy, params, flops, "
            "seconds, error, detail, epoch_stats, hardware, created, run_id, iteration, diagnosis) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (arch_id, dataset, int(epochs), canonical_prm(prm), outcome.status, outcome.stage, outcome.accuracy,
             outcome.params, outcome.flops, _to_json(outcome.seconds), outcome.error, _to_json(outcome.detail),
             _to_json(outcome.epochs), _to_json(hardware or {}), _now(), run_id, iteration,
             outcome.diagnosis.model_dump_json(exclude_defaults=True) if outcome.diagnosis else None))
        return int(cur.lastrowid)

    def record_evaluation(self, arch_id: str, outcome: Outcome, *, dataset: str, epochs: int, prm: dict,
                          hardware: dict, run_id: str | None = None, iteration: int | None = None) -> int:
        with self._write() as c:
            return self._insert_evaluation(c, arch_id, outcome, dataset, epochs, prm, hardware, run_id, iteration)

    def _insert_cache_hit(self, c: sqlite3.Connection, arch_id: str, evaluation_id: int,
                          run_id: str | None, iteration: int | None) -> int:
        row = c.execute("SELECT arch_id FROM evaluations WHERE id = ?", (evaluation_id,)).fetchone()
        if row is None:
            raise StoreError(f"unknown evaluation {evaluation_id}")
        if row[0] != arch_id:
            raise StoreError(f"evaluation {evaluation_id} belongs to architecture {row[0]}, not {arch_id}")
        cur = c.execute("INSERT INTO cache_hits(arch_id, evaluation_id, run_id, iteration, created) "
                        "VALUES (?, ?, ?, ?, ?)", (arch_id, evaluation_id, run_id, iteration, _now()))
        return int(cur.lastrowid)

    def record_cache_hit(self, arch_id: str, evaluation_id: int, *, run_id: str | None = None,
                         iteration: int | None = None) -> int:
        with self._write() as c:
            return self._insert_cache_hit(c, arch_id, evaluation_id, run_id, iteration)

    def cached(self, cand: Candidate, dataset: str, epochs: int, prm: dict, *, run_id: str | None = None,
               iteration: int | None = None) -> EvaluationRecord | None:
        """The lookup half of cache-or-evaluate: the stored evaluation of an equal architecture under
        the same dataset, epochs and training recipe, recorded as a cache hit; None if there is none."""
        canonical_prm(prm)  # fail on a bad prm before the caller spends an evaluation on it
        hit = self.lookup(cand.arch_id, dataset, epochs, prm)
        if hit is not None:
            self.record_cache_hit(cand.arch_id, hit.id, run_id=run_id, iteration=iteration)
        return hit

    def record_new(self, cand: Candidate, origin: str, outcome: Outcome, *, dataset: str, epochs: int, prm: dict,
                   hardware: dict, run_id: str | None = None, iteration: int | None = None) -> int:
        """The recording half: the architecture (when new, with its MinHash and novelty) and its
        evaluation in one transaction. Returns the evaluation id."""
        with self._write() as c:
            self._insert_architecture(c, cand, origin)
            return self._insert_evaluation(c, cand.arch_id, outcome, dataset, epochs, prm, hardware, run_id, iteration)

    def evaluate_cached(self, cand: Candidate, dataset: str, epochs: int, prm: dict,
                        evaluate: Callable[[], Outcome], *, origin: str, hardware: dict, run_id: str | None = None,
                        iteration: int | None = None) -> tuple[Outcome, bool]:
        """Cache-or-evaluate: `cached`, else evaluate() once and `record_new`. The loop runs the same
        two halves as separate graph nodes (its check and novelty sit between them).

        Returns (outcome, cache_hit). The outcome's detail carries 'cache_hit' and 'evaluation_id'.
        evaluate() runs outside any transaction (it takes minutes).
        """
        hit = self.cached(cand, dataset, epochs, prm, run_id=run_id, iteration=iteration)
        if hit is not None:
            out = hit.to_outcome()
            out.detail = {**out.detail, "cache_hit": True, "evaluation_id": hit.id}
            return out, True
        outcome = evaluate()
        if not isinstance(outcome, Outcome):
            raise StoreError(f"evaluate() must return an Outcome, got {type(outcome).__name__}")
        eval_id = self.record_new(cand, origin, outcome, dataset=dataset, epochs=epochs, prm=prm,
                                  hardware=hardware, run_id=run_id, iteration=iteration)
        outcome.detail = {**outcome.detail, "cache_hit": False, "evaluation_id": eval_id}
        return outcome, False

    def run_evaluation(self, run_id: str, iteration: int, arch_id: str | None = None) -> EvaluationRecord | None:
        """The evaluation already recorded for this run's iteration (and architecture), if any.

        Lets a resumed loop skip re-training an attempt that was stored just before a crash.
        """
        sql = f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE run_id = ? AND iteration = ?"
        args: tuple = (run_id, int(iteration))
        if arch_id is not None:
            sql += " AND arch_id = ?"
            args += (arch_id,)
        rows = self._read(sql + " ORDER BY id DESC LIMIT 1", args)
        return self._record(rows[0]) if rows else None

    def best(self, dataset: str, epochs: int | None = None, k: int = 1) -> list[EvaluationRecord]:
        """The k best 'ok' evaluations on ``dataset`` (one per architecture), best first."""
        ep_filter = "AND epochs = ?" if epochs is not None else ""
        args: tuple = (dataset_key(dataset),) + ((int(epochs),) if epochs is not None else ()) + (int(k),)
        rows = self._read(f"""
            SELECT {_EVAL_COLUMNS} FROM (
                SELECT *, ROW_NUMBER() OVER (PARTITION BY arch_id ORDER BY accuracy DESC, id) AS rank
                FROM evaluations
                WHERE status = 'ok' AND accuracy IS NOT NULL AND dataset = ? {ep_filter})
            WHERE rank = 1 ORDER BY accuracy DESC, id LIMIT ?""", args)
        return [self._record(r) for r in rows]

    def evaluations_for_run(self, run_id: str) -> list[EvaluationRecord]:
        rows = self._read(f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE run_id = ? ORDER BY iteration, id",
                          (run_id,))
        return [self._record(r) for r in rows]

    def same_size(self, run_id: str, iteration: int, params: int, flops: int) -> int | None:
        """The earliest iteration of the run before `iteration` with a valid design of exactly these
        parameter and FLOP counts (almost always the same network written differently), or None."""
        row = self._read("SELECT MIN(iteration) FROM evaluations WHERE run_id = ? AND iteration < ? "
                         "AND status = 'ok' AND params = ? AND flops = ?", (run_id, iteration, params, flops))
        return row[0][0] if row and row[0][0] is not None else None

    def evaluations(self, *, dataset: str | None = None, status: str | None = None) -> list[EvaluationRecord]:
        """All evaluations, oldest first, optionally filtered (used by export and reports)."""
        where, args = [], []
        if dataset is not None:
            where.append("dataset = ?")
            args.append(dataset_key(dataset))
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = f"SELECT {_EVAL_COLUMNS} FROM evaluations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._record(r) for r in self._read(sql + " ORDER BY id", tuple(args))]

    def code(self, arch_id: str) -> str:
        rows = self._read("SELECT code FROM architectures WHERE id = ?", (arch_id,))
        if not rows:
            raise StoreError(f"unknown architecture '{arch_id}'")
        return rows[0][0]

    def stats(self) -> dict:
        one = lambda sql: self._read(sql)[0][0]  # noqa: E731
        return {
            "path": str(self.path),
            "schema_version": SCHEMA_VERSION,
            "architectures": one("SELECT COUNT(*) FROM architectures"),
            "evaluations": one("SELECT COUNT(*) FROM evaluations"),
            "cache_hits": one("SELECT COUNT(*) FROM cache_hits"),
            "by_status": dict(self._read("SELECT status, COUNT(*) FROM evaluations GROUP BY status ORDER BY status")),
            "by_origin": dict(self._read("SELECT origin, COUNT(*) FROM architectures GROUP BY origin ORDER BY origin")),
            "best_accuracy": dict(self._read("SELECT dataset, MAX(accuracy) FROM evaluations WHERE status = 'ok' "
                                             "GROUP BY dataset ORDER BY dataset")),
            "mean_novelty": one("SELECT AVG(novelty) FROM architectures WHERE nearest_id IS NOT NULL"),
        }

    def run_candidates(self, run_id: str) -> list[EvaluationRecord]:
        """Every evaluation a run produced or reused (a cache hit counts for the run that hit it)."""
        rows = self._read(f"""
            SELECT {_EVAL_COLUMNS} FROM evaluations WHERE run_id = ?
                OR id IN (SELECT evaluation_id FROM cache_hits WHERE run_id = ?) ORDER BY id""", (run_id, run_id))
        return [self._record(r) for r in rows]

    def has_run(self, run_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM evaluations WHERE run_id = ? UNION ALL "
                               "SELECT 1 FROM cache_hits WHERE run_id = ? LIMIT 1", (run_id, run_id)))

    # ---------------------------------------------------------------- final trainings
    def _training(self, r: tuple) -> TrainingRecord:
        (tid, arch_id, dataset, epochs, prm, status, acc, proxy, proxy_id, params, flops, latency, ckpt, error,
         detail, hardware, run_id, created, updated) = r
        curve = [dict(zip(("epoch", "accuracy", "loss", "train_accuracy", "seconds"), row)) for row in self._read(
            "SELECT epoch, accuracy, loss, train_accuracy, seconds FROM training_epochs WHERE training_id = ? "
            "ORDER BY epoch", (tid,))]
        return TrainingRecord(tid, arch_id, dataset, epochs, json.loads(prm), status, acc, proxy, proxy_id, params,
                              flops, json.loads(latency), ckpt, error, json.loads(detail), json.loads(hardware),
                              run_id, created, updated, curve)

    def start_training(self, arch_id: str, dataset: str, epochs: int, prm: dict, *, checkpoint: str,
                       proxy: EvaluationRecord | None = None, run_id: str | None = None) -> TrainingRecord:
        """The training of these keys: a new row, or the existing one (a resume) marked running again."""
        key = (arch_id, dataset_key(dataset), int(epochs), canonical_prm(prm))
        with self._write() as c:
            if not c.execute("SELECT 1 FROM architectures WHERE id = ?", (arch_id,)).fetchone():
                raise StoreError(f"unknown architecture '{arch_id}'")
            now = _now()
            c.execute("INSERT INTO trainings(arch_id, dataset, epochs, prm, status, proxy_accuracy, proxy_evaluation_id, "
                      "params, flops, checkpoint, run_id, created, updated) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, "
                      "?, ?, ?, ?) ON CONFLICT(arch_id, dataset, epochs, prm) DO UPDATE SET status = 'running', "
                      "error = '', updated = excluded.updated",
                      (*key, proxy.accuracy if proxy else None, proxy.id if proxy else None,
                       proxy.params if proxy else None, proxy.flops if proxy else None, checkpoint, run_id, now, now))
        found = self.find_training(arch_id, dataset, epochs, prm)
        assert found is not None  # just written
        return found

    def find_training(self, arch_id: str, dataset: str, epochs: int, prm: dict) -> TrainingRecord | None:
        rows = self._read(f"SELECT {_TRAINING_COLUMNS} FROM trainings WHERE arch_id = ? AND dataset = ? AND epochs = ? "
                          "AND prm = ?", (arch_id, dataset_key(dataset), int(epochs), canonical_prm(prm)))
        return self._training(rows[0]) if rows else None

    def record_training_epoch(self, training_id: int, stats: dict) -> None:
        """One finished epoch of the curve (written again, unchanged, when a resumed training reports it)."""
        def num(k: str) -> float | None:
            v = stats.get(k)
            return float(v) if isinstance(v, (int, float)) else None
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO training_epochs(training_id, epoch, accuracy, loss, train_accuracy, "
                      "seconds) VALUES (?, ?, ?, ?, ?, ?)", (training_id, int(stats["epoch"]), num("accuracy"),
                                                             num("loss"), num("train_accuracy"), num("seconds")))
            c.execute("UPDATE trainings SET accuracy = ?, updated = ? WHERE id = ? AND "
                      "? >= (SELECT MAX(epoch) FROM training_epochs WHERE training_id = ?)",
                      (num("accuracy"), _now(), training_id, int(stats["epoch"]), training_id))

    def finish_training(self, training_id: int, outcome: Outcome, *, hardware: dict) -> TrainingRecord:
        """How the training ended: its status, final accuracy, full curve, size and latency."""
        for stats in outcome.epochs:
            if isinstance(stats, dict) and isinstance(stats.get("epoch"), int):
                self.record_training_epoch(training_id, stats)
        with self._write() as c:
            c.execute("UPDATE trainings SET status = ?, accuracy = COALESCE(?, accuracy), params = COALESCE(?, params), "
                      "flops = COALESCE(?, flops), latency = ?, error = ?, detail = ?, hardware = ?, updated = ? "
                      "WHERE id = ?",
                      (outcome.status, outcome.accuracy, outcome.params, outcome.flops,
                       _to_json(outcome.detail.get("latency_ms", {})), outcome.error, _to_json(outcome.detail),
                       _to_json(hardware), _now(), training_id))
        return self.training_by_id(training_id)

    def training_by_id(self, training_id: int) -> TrainingRecord:
        rows = self._read(f"SELECT {_TRAINING_COLUMNS} FROM trainings WHERE id = ?", (int(training_id),))
        if not rows:
            raise StoreError(f"no final training with id {training_id}")
        return self._training(rows[0])

    def trainings(self, *, arch_ids: Collection[str] | None = None, dataset: str | None = None) -> list[TrainingRecord]:
        """Final trainings, best final accuracy first (unfinished ones by their last epoch)."""
        where, args = [], []
        if arch_ids is not None:
            ids = sorted(set(arch_ids))
            if not ids:
                return []
            where.append(f"arch_id IN ({','.join('?' * len(ids))})")
            args += ids
        if dataset is not None:
            where.append("dataset = ?")
            args.append(dataset_key(dataset))
        sql = f"SELECT {_TRAINING_COLUMNS} FROM trainings" + (" WHERE " + " AND ".join(where) if where else "")
        return [self._training(r) for r in self._read(sql + " ORDER BY accuracy IS NULL, accuracy DESC, id",
                                                        tuple(args))]

    def record_export(self, training_id: int, fmt: str, path: str, *, max_abs_diff: float | None, latency: dict,
                      detail: dict, hardware: dict) -> int:
        with self._write() as c:
            cur = c.execute("INSERT INTO exports(training_id, format, path, max_abs_diff, latency, detail, hardware, "
                            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (training_id, fmt, path, max_abs_diff, _to_json(latency), _to_json(detail),
                             _to_json(hardware), _now()))
            return int(cur.lastrowid)

    def exports(self, training_id: int) -> list[ExportRecord]:
        rows = self._read("SELECT id, training_id, format, path, max_abs_diff, latency, detail, hardware, created "
                          "FROM exports WHERE training_id = ? ORDER BY id", (int(training_id),))
        return [ExportRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), json.loads(r[7]), r[8])
                for r in rows]

    def integrity_check(self) -> str:
        return self._read("PRAGMA integrity_check")[0][0]


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (they contain no ';' inside literals), run one by one
    because executescript() would COMMIT the surrounding transaction."""
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
