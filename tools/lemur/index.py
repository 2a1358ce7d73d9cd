"""Build the LEMUR index from the wheel in one pass over the zip.

Only the model files are written out (`nn/<model>.py`, so they can be evaluated like any other file);
the ~105k per-epoch JSON files are read straight from the zip into SQLite. The index is built in a
work folder beside the old one and swapped in at the end, so a reader sees the old index, none, or the
whole new one, and a killed build leaves nothing that a later pull would mistake for a finished one.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nasgraph.tools.lemur.layout import MODELS_DIR, LemurError, index_path
from nasgraph.tools.lemur.parse import analyse, family

Progress = Callable[[str], None]

# Bump when the tables, or what goes into them, change: a pull rebuilds an index of another schema.
SCHEMA = 1
NN_PREFIX = "ab/nn/nn/"
STAT_PREFIX = "ab/nn/stat/train/"
# Keys of a run record that have their own column; the rest of its hyperparameters go to `prm` (JSON).
_COLUMNS = ("accuracy", "batch", "duration", "lr", "momentum", "dropout", "transform", "uid")
_BATCH_ROWS = 20_000

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    family TEXT NOT NULL,          -- the name without generated suffixes (parse.family)
    kind TEXT NOT NULL,            -- main torch.nn block types: conv, conv+attention, mlp, ... (parse._kind)
    path TEXT NOT NULL,            -- relative to the lemur folder
    sha256 TEXT NOT NULL,
    n_lines INTEGER NOT NULL,
    n_bytes INTEGER NOT NULL,
    hyperparameters TEXT,          -- JSON list; NULL unless supported_hyperparameters() returns a literal
    hp_source TEXT NOT NULL,       -- literal | computed | absent
    imports TEXT NOT NULL,         -- JSON list of top-level modules
    torch_only INTEGER,            -- 1: nothing beyond torch, torchvision and the standard library
    layers TEXT NOT NULL,          -- JSON {torch.nn layer type: constructor calls}
    parse_error TEXT,
    -- Counting parameters means instantiating the model, i.e. running corpus code; a pull does that
    -- outside the sandbox, so it never does. A later, sandboxed step may fill this column.
    params INTEGER
);
CREATE TABLE series (              -- one model trained on one task/dataset/metric
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL, task TEXT NOT NULL, dataset TEXT NOT NULL, metric TEXT NOT NULL,
    best REAL NOT NULL, best_epoch INTEGER NOT NULL, runs INTEGER NOT NULL, epochs INTEGER NOT NULL,
    UNIQUE (model, task, dataset, metric)
);
-- One row per training run and epoch. Its series is a number, not the four names: repeated over
-- ~580k rows those names were 40% of the index.
CREATE TABLE runs (
    series INTEGER NOT NULL REFERENCES series (id),
    epoch INTEGER NOT NULL,
    accuracy REAL NOT NULL,        -- the value of the series' metric (LEMUR calls every metric "accuracy")
    batch INTEGER, duration_s REAL, lr REAL, momentum REAL, dropout REAL, transform TEXT, uid TEXT,
    prm TEXT                       -- JSON of the run's other keys, NULL when none
);
CREATE VIEW records AS
    SELECT s.model, s.task, s.dataset, s.metric, r.epoch, r.accuracy, r.batch, r.duration_s, r.lr,
           r.momentum, r.dropout, r.transform, r.uid, r.prm
    FROM runs r JOIN series s ON s.id = r.series;
CREATE TABLE datasets (
    task TEXT NOT NULL, dataset TEXT NOT NULL, metric TEXT NOT NULL,
    models INTEGER NOT NULL,       -- models with at least one run
    model_folders INTEGER NOT NULL,  -- models with a stat folder, some of which hold only empty lists
    records INTEGER NOT NULL, stat_files INTEGER NOT NULL, empty_files INTEGER NOT NULL,
    acc_min REAL NOT NULL, acc_median REAL NOT NULL, acc_max REAL NOT NULL,
    PRIMARY KEY (task, dataset, metric)
);
CREATE TABLE skipped (member TEXT NOT NULL, reason TEXT NOT NULL);
"""
_INDEXES = """
CREATE INDEX runs_series ON runs (series);
CREATE INDEX series_dataset ON series (dataset, best);
CREATE INDEX models_family ON models (family);
"""


@dataclass(frozen=True)
class BuildCounts:
    models: int
    stat_files: int
    records: int
    skipped_files: int
    skipped_rows: int
    seconds: float


@dataclass
class _Series:
    id: int
    best: float
    best_epoch: int
    runs: int = 0
    epochs: int = 0


@dataclass
class _Dataset:
    models: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)
    files: int = 0
    empty: int = 0
    values: list[float] = field(default_factory=list)


def build(wheel: Path, root: Path, *, wheel_name: str, wheel_sha256: str,
          progress: Progress | None = None) -> BuildCounts:
    """Index `wheel` (already verified; `wheel_name` is its name on PyPI) into `root`, replacing what is
    there only once it is complete."""
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        counts = _fill(wheel, work, wheel_name, wheel_sha256, progress)
        index_path(root).unlink(missing_ok=True)  # from here until the last rename: "not pulled"
        old = root / MODELS_DIR
        if old.exists():
            os.replace(old, work / "old-nn")
        os.replace(work / MODELS_DIR, old)
        os.replace(work / "index.sqlite", index_path(root))
        return counts
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fill(wheel: Path, work: Path, wheel_name: str, wheel_sha256: str, progress: Progress | None) -> BuildCounts:
    start = time.perf_counter()
    nn_dir = work / MODELS_DIR
    nn_dir.mkdir()
    db_file = work / "index.sqlite"
    db = sqlite3.connect(db_file)
    # The file is thrown away if the build dies, so durability during the build buys nothing.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.executescript(_DDL)
    series: dict[tuple[str, str, str, str], _Series] = {}
    per_dataset: dict[tuple[str, str, str], _Dataset] = {}
    skipped: list[tuple[str, str]] = []
    model_rows: list[tuple] = []
    record_rows: list[tuple] = []
    n_records = n_stat_files = skipped_rows = 0
    next_report = 20_000
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = zf.infolist()
            n_models = sum(1 for m in members if _model_name(m.filename))
            if progress:
                progress(f"extracting {n_models:,} model files and indexing their training records")
            for info in members:
                if name := _model_name(info.filename):
                    source = zf.read(info)
                    (nn_dir / f"{name}.py").write_bytes(source)
                    model_rows.append(_model_row(name, source))
                    if progress and len(model_rows) % 2000 == 0:
                        progress(f"  {len(model_rows):,} model files")
                elif info.filename.startswith(STAT_PREFIX) and not info.is_dir():
                    key = _stat_key(info.filename)
                    if isinstance(key, str):
                        skipped.append((info.filename, key))
                        continue
                    rows, bad, reason = _runs(zf.read(info), key[4])
                    if reason:
                        skipped.append((info.filename, reason))
                        continue
                    n_stat_files += 1
                    skipped_rows += bad
                    if (series_id := _summarise(rows, key, series, per_dataset)) is not None:
                        record_rows.extend((series_id, *row) for row in rows)
                    if len(record_rows) >= _BATCH_ROWS:
                        n_records += _insert_records(db, record_rows)
                        if progress and n_stat_files >= next_report:
                            progress(f"  {n_stat_files:,} stat files, {n_records:,} records")
                            next_report += 20_000
        n_records += _insert_records(db, record_rows)
        db.executemany("INSERT INTO models VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)", model_rows)
        db.executemany("INSERT INTO series VALUES (?,?,?,?,?,?,?,?,?)",
                       [(s.id, *k, s.best, s.best_epoch, s.runs, s.epochs) for k, s in series.items()])
        db.executemany("INSERT INTO datasets VALUES (?,?,?,?,?,?,?,?,?,?,?)", [
            (*k, len(d.models), len(d.folders), len(d.values), d.files, d.empty,
             min(d.values), statistics.median(d.values), max(d.values))
            for k, d in per_dataset.items() if d.values])
        db.executemany("INSERT INTO skipped VALUES (?,?)", skipped)
        db.executescript(_INDEXES)
        seconds = time.perf_counter() - start
        meta = {"schema": SCHEMA, "wheel": wheel_name, "wheel_sha256": wheel_sha256,
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"), "build_s": round(seconds, 2),
                "models": len(model_rows), "records": n_records, "stat_files": n_stat_files,
                "skipped_files": len(skipped), "skipped_rows": skipped_rows}
        db.executemany("INSERT INTO meta VALUES (?,?)", [(k, json.dumps(v)) for k, v in meta.items()])
        db.commit()
    except zipfile.BadZipFile as exc:
        raise LemurError(f"{wheel} is not a readable wheel: {exc}") from exc
    finally:
        db.close()
    with db_file.open("rb") as f:
        os.fsync(f.fileno())  # the rename that follows must not publish a half-written file
    return BuildCounts(len(model_rows), n_stat_files, n_records, len(skipped), skipped_rows, seconds)


def _model_name(member: str) -> str | None:
    """`ab/nn/nn/<name>.py` -> name; None for anything else (sub-folders, the package's __init__)."""
    if not member.startswith(NN_PREFIX) or not member.endswith(".py"):
        return None
    name = member[len(NN_PREFIX):-3]
    return name if name and "/" not in name and "\\" not in name and name != "__init__" else None


def _model_row(name: str, source: bytes) -> tuple:
    facts = analyse(source)
    return (name, family(name) or facts.kind, facts.kind, f"{MODELS_DIR}/{name}.py", facts.sha256, facts.n_lines,
            len(source), None if facts.hyperparameters is None else json.dumps(list(facts.hyperparameters)),
            facts.hp_source, json.dumps(list(facts.imports)),
            None if facts.torch_only is None else int(facts.torch_only), json.dumps(facts.layers), facts.parse_error)


def _stat_key(member: str) -> tuple[str, str, str, str, int] | str:
    """(task, dataset, metric, model, epoch) from `<task>_<dataset>_<metric>_<model>/<epoch>.json`, or why not."""
    parts = member[len(STAT_PREFIX):].split("/")
    if len(parts) != 2 or not parts[1].endswith(".json"):
        return "not <task>_<dataset>_<metric>_<model>/<epoch>.json"
    fields = parts[0].split("_")  # LEMUR's own reader splits the folder name on '_' the same way
    if len(fields) != 4 or not all(fields):
        return "folder name is not <task>_<dataset>_<metric>_<model>"
    try:
        epoch = int(parts[1][:-5])
    except ValueError:
        return "file name is not <epoch>.json"
    task, dataset, metric, model = fields
    return task, dataset, metric, model, epoch


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _runs(raw: bytes, epoch: int) -> tuple[list[tuple], int, str | None]:
    """Rows of one epoch file (without their series), the runs left out, and why the whole file was, if it was."""
    try:
        runs = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        return [], 0, f"malformed JSON: {exc}"
    if not isinstance(runs, list):
        return [], 0, f"expected a list of runs, found {type(runs).__name__}"
    rows, bad = [], 0
    for run in runs:
        accuracy = _number(run.get("accuracy")) if isinstance(run, dict) else None
        if accuracy is None:
            bad += 1
            continue
        duration = _number(run.get("duration"))
        batch = _number(run.get("batch"))
        extra = {k: v for k, v in run.items() if k not in _COLUMNS}
        transform, uid = run.get("transform"), run.get("uid")
        rows.append((
            epoch, accuracy,
            None if batch is None else int(batch),
            None if duration is None else duration / 1e9,  # LEMUR records nanoseconds
            _number(run.get("lr")), _number(run.get("momentum")), _number(run.get("dropout")),
            transform if isinstance(transform, str) else None, uid if isinstance(uid, str) else None,
            json.dumps(extra, sort_keys=True) if extra else None,
        ))
    return rows, bad, None


def _summarise(rows: list[tuple], key: tuple[str, str, str, str, int],
               series: dict[tuple[str, str, str, str], _Series],
               per_dataset: dict[tuple[str, str, str], _Dataset]) -> int | None:
    """Fold one epoch file into the summaries; the id of its series, None when it held no run."""
    task, dataset, metric, model, epoch = key
    d = per_dataset.setdefault((task, dataset, metric), _Dataset())
    d.files += 1
    d.folders.add(model)
    if not rows:
        d.empty += 1
        return None
    d.models.add(model)
    values = [r[1] for r in rows]
    d.values.extend(values)
    # Every LEMUR metric rises as a model gets better: even its perplexity is stored as a score in
    # [0, 1], 1 for a perfect model (ab/nn/metric/ppl.py in the wheel).
    best = max(values)
    s = series.get((model, task, dataset, metric))
    if s is None:
        s = series[(model, task, dataset, metric)] = _Series(len(series) + 1, best, epoch)
    elif best > s.best:
        s.best, s.best_epoch = best, epoch
    s.runs += len(rows)
    s.epochs = max(s.epochs, epoch)
    return s.id


def _insert_records(db: sqlite3.Connection, rows: list[tuple]) -> int:
    db.executemany("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    n = len(rows)
    rows.clear()
    return n


def read_meta(db_file: Path) -> dict | None:
    """The finished index's meta table, or None when there is no readable index."""
    if not Path(db_file).is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
        try:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        finally:
            db.close()
    except (sqlite3.Error, ValueError):
        return None
