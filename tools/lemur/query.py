"""Read the LEMUR index: ranked listings, one model in full, and corpus totals, as typed data."""
from __future__ import annotations

import difflib
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nasgraph.tools.lemur.fetch import disk_usage
from nasgraph.tools.lemur.index import SCHEMA, read_meta
from nasgraph.tools.lemur.layout import LemurError, index_path

_PULL_FIRST = "run `nasgraph lemur pull` first"


class LemurNotPulled(LemurError):
    """There is no finished index to read."""


class UnknownLemurName(LemurError, KeyError):
    """A model, dataset or family name the index does not hold; the message lists close ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class SeriesSummary:
    """One model trained on one task/dataset/metric: its best value over all epochs and runs."""
    task: str
    dataset: str
    metric: str
    best: float
    best_epoch: int
    runs: int  # run records over all epochs
    epochs: int  # the last epoch with a run


@dataclass(frozen=True)
class ModelListing:
    name: str
    family: str
    kind: str
    n_lines: int
    torch_only: bool | None
    series: SeriesSummary | None  # None: the model file has no training record


@dataclass(frozen=True)
class Run:
    accuracy: float
    batch: int | None
    lr: float | None
    momentum: float | None
    dropout: float | None
    transform: str | None
    duration_s: float | None
    uid: str | None
    prm: dict  # the run's other hyperparameters


@dataclass(frozen=True)
class EpochSummary:
    task: str
    dataset: str
    metric: str
    epoch: int
    best: float
    runs: int
    best_run: Run


@dataclass(frozen=True)
class ModelDetail:
    name: str
    family: str
    kind: str
    path: Path
    sha256: str
    n_lines: int
    hyperparameters: list[str] | None  # None: supported_hyperparameters() is absent or not a literal
    hp_source: str
    imports: list[str]
    torch_only: bool | None
    layers: dict[str, int]
    parse_error: str | None
    params: int | None  # not known at pull time (see the models table)
    code: str
    series: list[SeriesSummary]
    epochs: list[EpochSummary]


@dataclass(frozen=True)
class DatasetStats:
    task: str
    dataset: str
    metric: str
    models: int  # with at least one run
    model_folders: int  # with a stat folder, whether or not it holds a run
    records: int
    stat_files: int  # <epoch>.json files, one per model and epoch
    empty_files: int  # epoch files holding an empty list
    acc_min: float
    acc_median: float
    acc_max: float


@dataclass(frozen=True)
class CorpusStats:
    root: Path
    wheel: str
    built_at: str
    build_s: float
    model_files: int
    stat_files: int
    records: int
    models_with_records: int
    records_without_model_file: int  # series whose model has no .py in the wheel
    torch_only_models: int
    literal_hyperparameters: int
    parse_errors: int
    skipped_files: int
    skipped_rows: int
    kinds: dict[str, int]
    top_families: dict[str, int]
    datasets: list[DatasetStats]
    index_bytes: int
    disk_bytes: int


@contextmanager
def _open(root: Path) -> Iterator[sqlite3.Connection]:
    db_file = index_path(root)
    meta = read_meta(db_file)
    if meta is None:
        raise LemurNotPulled(f"no LEMUR index in {root}; {_PULL_FIRST}")
    if meta.get("schema") != SCHEMA:
        raise LemurNotPulled(f"the LEMUR index in {root} was built by another nasgraph version; "
                             "run `nasgraph lemur pull` again")
    db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def dataset_key(text: str) -> str:
    """`CIFAR10`, `cifar_10` and `cifar-10` name one dataset."""
    return re.sub(r"[-_\s]", "", text.lower())


def _close(word: str, names: list[str]) -> str:
    hits = difflib.get_close_matches(word, names, n=5, cutoff=0.6)
    if not hits:
        lowered = {n.lower(): n for n in names}
        hits = [lowered[h] for h in difflib.get_close_matches(word.lower(), list(lowered), n=5, cutoff=0.6)]
    return f"; close: {', '.join(hits)}" if hits else ""


def _resolve_dataset(db: sqlite3.Connection, dataset: str) -> str:
    known = sorted({d for (d,) in db.execute("SELECT DISTINCT dataset FROM datasets")})
    for d in known:
        if dataset_key(d) == dataset_key(dataset):
            return d
    raise UnknownLemurName(f"no dataset {dataset!r} in LEMUR: one of {', '.join(known)}")


def _resolve_family(db: sqlite3.Connection, fam: str) -> str:
    known = [f for (f,) in db.execute("SELECT DISTINCT family FROM models ORDER BY family")]
    for f in known:
        if f.lower() == fam.lower():
            return f
    raise UnknownLemurName(f"no family {fam!r} in LEMUR{_close(fam, known)}")


def _series(row: tuple) -> SeriesSummary | None:
    return None if row[0] is None else SeriesSummary(*row)


def _bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def list_models(root: Path, *, dataset: str | None = None, family: str | None = None, name: str | None = None,
                limit: int | None = 20) -> list[ModelListing]:
    """Models with their best result per task/dataset/metric, best first (one row per model and dataset).

    `dataset` and `family` must name one the index holds (dataset spelling is forgiving); `name` is a
    case-insensitive substring. Models without records come last, and only when no dataset is asked for.
    """
    where: list[str] = []
    args: list[object] = []
    with _open(root) as db:
        if dataset:
            where.append("s.dataset = ?")
            args.append(_resolve_dataset(db, dataset))
        if family:
            where.append("m.family = ?")
            args.append(_resolve_family(db, family))
        if name:
            where.append("instr(lower(m.name), lower(?)) > 0")
            args.append(name)
        sql = (
            "SELECT m.name, m.family, m.kind, m.n_lines, m.torch_only, "
            "s.task, s.dataset, s.metric, s.best, s.best_epoch, s.runs, s.epochs "
            "FROM models m LEFT JOIN series s ON s.model = m.name "
            + (f"WHERE {' AND '.join(where)} " if where else "")
            # Every LEMUR metric rises as a model gets better (see index._summarise).
            + "ORDER BY s.best IS NULL, s.best DESC, m.name"
            + (" LIMIT ?" if limit and limit > 0 else "")
        )
        rows = db.execute(sql, [*args, *([limit] if limit and limit > 0 else [])]).fetchall()
    return [ModelListing(r[0], r[1], r[2], r[3], _bool(r[4]), _series(r[5:])) for r in rows]


def _find_name(db: sqlite3.Connection, name: str) -> str:
    if db.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone():
        return name
    names = [n for (n,) in db.execute("SELECT name FROM models")]
    same = [n for n in names if n.lower() == name.lower()]
    if len(same) == 1:
        return same[0]
    raise UnknownLemurName(f"no model {name!r} in LEMUR{_close(name, names)}")


def show(root: Path, name: str) -> ModelDetail:
    """One model: its code and static facts, and its records per dataset and epoch (best run of each)."""
    root = Path(root)
    with _open(root) as db:
        name = _find_name(db, name)
        m = db.execute(
            "SELECT family, kind, path, sha256, n_lines, hyperparameters, hp_source, imports, torch_only, "
            "layers, parse_error, params FROM models WHERE name = ?", (name,)).fetchone()
        series = [SeriesSummary(*r) for r in db.execute(
            "SELECT task, dataset, metric, best, best_epoch, runs, epochs FROM series WHERE model = ? "
            "ORDER BY task, dataset, metric", (name,))]
        runs = db.execute(
            "SELECT s.task, s.dataset, s.metric, r.epoch, r.accuracy, r.batch, r.lr, r.momentum, r.dropout, "
            "r.transform, r.duration_s, r.uid, r.prm FROM runs r JOIN series s ON s.id = r.series "
            "WHERE s.model = ? ORDER BY s.task, s.dataset, s.metric, r.epoch", (name,)).fetchall()
    path = root / m[2]
    try:
        code = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LemurError(f"{path} is missing ({exc.strerror}); run `nasgraph lemur pull --force`") from exc
    return ModelDetail(
        name=name, family=m[0], kind=m[1], path=path, sha256=m[3], n_lines=m[4],
        hyperparameters=None if m[5] is None else json.loads(m[5]), hp_source=m[6], imports=json.loads(m[7]),
        torch_only=_bool(m[8]), layers=json.loads(m[9]), parse_error=m[10], params=m[11], code=code,
        series=series, epochs=_per_epoch(runs),
    )


def _per_epoch(rows: list[tuple]) -> list[EpochSummary]:
    groups: dict[tuple, list[tuple]] = {}
    for r in rows:
        groups.setdefault(r[:4], []).append(r)
    out = []
    for (task, dataset, metric, epoch), runs in groups.items():
        b = max(runs, key=lambda r: r[4])
        best_run = Run(accuracy=b[4], batch=b[5], lr=b[6], momentum=b[7], dropout=b[8], transform=b[9],
                       duration_s=b[10], uid=b[11], prm=json.loads(b[12]) if b[12] else {})
        out.append(EpochSummary(task, dataset, metric, epoch, b[4], len(runs), best_run))
    return out


def stats(root: Path) -> CorpusStats:
    root = Path(root)
    with _open(root) as db:
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}

        def one(sql: str) -> int:
            return db.execute(sql).fetchone()[0]

        datasets = [DatasetStats(*r) for r in db.execute(
            "SELECT task, dataset, metric, models, model_folders, records, stat_files, empty_files, "
            "acc_min, acc_median, acc_max "
            "FROM datasets ORDER BY task, records DESC")]
        kinds = dict(db.execute("SELECT kind, COUNT(*) FROM models GROUP BY kind ORDER BY 2 DESC"))
        families = dict(db.execute("SELECT family, COUNT(*) FROM models GROUP BY family ORDER BY 2 DESC LIMIT 12"))
        return CorpusStats(
            root=root, wheel=meta["wheel"], built_at=meta["built_at"], build_s=meta["build_s"],
            model_files=meta["models"], stat_files=meta["stat_files"], records=meta["records"],
            models_with_records=one("SELECT COUNT(DISTINCT model) FROM series WHERE model IN (SELECT name FROM models)"),
            records_without_model_file=one("SELECT COUNT(*) FROM series WHERE model NOT IN (SELECT name FROM models)"),
            torch_only_models=one("SELECT COUNT(*) FROM models WHERE torch_only = 1"),
            literal_hyperparameters=one("SELECT COUNT(*) FROM models WHERE hp_source = 'literal'"),
            parse_errors=one("SELECT COUNT(*) FROM models WHERE parse_error IS NOT NULL"),
            skipped_files=meta["skipped_files"], skipped_rows=meta["skipped_rows"],
            kinds=kinds, top_families=families, datasets=datasets,
            index_bytes=index_path(root).stat().st_size, disk_bytes=disk_usage(root),
        )
