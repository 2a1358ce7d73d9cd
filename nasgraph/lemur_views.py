"""Rich views of the LEMUR corpus: `nasgraph lemur pull | ls | show | stats` (data from nasgraph.tools.lemur)."""
from __future__ import annotations

import json

from rich.console import RenderableType
from rich.syntax import Syntax
from rich.table import Table

from nasgraph.tools.lemur import CorpusStats, ModelDetail, ModelListing, PullResult


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def fmt_value(metric: str, value: float | None) -> str:
    """Accuracy as a percentage; other metrics (bleu, iou, ppl, ...) as the number LEMUR records."""
    if value is None:
        return "–"
    return f"{100 * value:.2f}%" if metric == "acc" else f"{value:.4f}"


def _opt(value: object) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def pull_lines(r: PullResult) -> list[str]:
    if r.already_current:
        return [f"LEMUR index is current: {r.index} ({_mb(r.disk_bytes)} on disk; --force rebuilds it)"]
    lines = [f"LEMUR ready: {r.index}"]
    fetched = f"downloaded in {r.download_s:.1f} s" if r.download_s is not None else f"from {r.wheel_origin}"
    lines.append(f"wheel {_mb(r.wheel_bytes)}, {fetched}")
    if r.counts is not None:
        c = r.counts
        lines.append(f"extracted and indexed in {r.index_s:.1f} s: {c.models:,} model files, {c.stat_files:,} stat "
                     f"files, {c.records:,} records ({c.skipped_files} files and {c.skipped_rows} runs skipped)")
    lines.append(f"disk used: {_mb(r.disk_bytes)} in {r.root}")
    return lines


def listing_table(rows: list[ModelListing], title: str) -> Table:
    t = Table(title=title)
    # Names are what `lemur show` takes: folded over lines in a narrow terminal, never cut short. Family
    # and length are left to `show` so that a row fits 80 columns.
    t.add_column("model", overflow="fold", min_width=20)
    for col in ("kind", "dataset", "best", "epoch", "runs", "torch only"):
        t.add_column(col)
    for r in rows:
        s = r.series
        best = "–" if s is None else fmt_value(s.metric, s.best) if s.metric == "acc" else f"{s.metric} {s.best:.4f}"
        t.add_row(r.name, r.kind, s.dataset if s else "–", best, str(s.best_epoch) if s else "–",
                  str(s.runs) if s else "0", _opt(r.torch_only))
    return t


def detail_views(d: ModelDetail) -> list[RenderableType]:
    facts = Table(show_header=False, title=f"[bold]{d.name}[/]", title_justify="left")
    facts.add_column(style="bold")
    facts.add_column()
    hp = ", ".join(d.hyperparameters) if d.hyperparameters is not None else f"({d.hp_source})"
    for key, value in (("family", d.family), ("kind", d.kind), ("file", str(d.path)),
                       ("lines", str(d.n_lines)), ("sha256", d.sha256), ("hyperparameters", hp),
                       ("imports", ", ".join(d.imports) or "–"), ("torch only", _opt(d.torch_only)),
                       ("layers", ", ".join(f"{k}×{v}" for k, v in d.layers.items()) or "–"),
                       ("params", _opt(d.params) if d.params is not None else "– (not computed at pull time)")):
        facts.add_row(key, value)
    if d.parse_error:
        facts.add_row("parse error", d.parse_error)
    views: list[RenderableType] = [facts, Syntax(d.code, "python", line_numbers=True, word_wrap=True)]
    if not d.series:
        views.append("no training records")
        return views
    best = Table(title="best per dataset")
    for col in ("task", "dataset", "metric", "best", "at epoch", "runs", "epochs"):
        best.add_column(col)
    for s in d.series:
        best.add_row(s.task, s.dataset, s.metric, fmt_value(s.metric, s.best), str(s.best_epoch), str(s.runs),
                     str(s.epochs))
    epochs = Table(title="per epoch: best run")
    for col in ("dataset", "epoch", "best", "runs", "batch", "lr", "momentum", "dropout", "transform", "other"):
        epochs.add_column(col)
    for e in d.epochs:
        b = e.best_run
        epochs.add_row(e.dataset, str(e.epoch), fmt_value(e.metric, e.best), str(e.runs), _opt(b.batch), _opt(b.lr),
                       _opt(b.momentum), _opt(b.dropout), b.transform or "–",
                       json.dumps(b.prm, sort_keys=True) if b.prm else "")
    return [*views, best, epochs]


def stats_views(s: CorpusStats) -> list[RenderableType]:
    totals = Table(show_header=False, title=f"LEMUR corpus ({s.wheel}, indexed {s.built_at} in {s.build_s:.1f} s)",
                   title_justify="left")
    totals.add_column(style="bold")
    totals.add_column(justify="right")
    for key, value in (
        ("model files", f"{s.model_files:,}"), ("… with training records", f"{s.models_with_records:,}"),
        ("… torch/torchvision/stdlib imports only", f"{s.torch_only_models:,}"),
        ("… literal supported_hyperparameters()", f"{s.literal_hyperparameters:,}"),
        ("… that do not parse", f"{s.parse_errors:,}"),
        ("stat files (model × epoch)", f"{s.stat_files:,}"), ("run records", f"{s.records:,}"),
        ("series without a model file", f"{s.records_without_model_file:,}"),
        ("skipped files / runs", f"{s.skipped_files:,} / {s.skipped_rows:,}"),
        ("index", _mb(s.index_bytes)), ("disk used", f"{_mb(s.disk_bytes)} in {s.root}"),
    ):
        totals.add_row(key, value)
    per = Table(title="per task and dataset")
    for col in ("task", "dataset", "metric", "models", "folders", "records", "stat files", "empty", "min", "median",
                "max"):
        per.add_column(col, justify="left" if col in ("task", "dataset", "metric") else "right")
    for d in s.datasets:
        per.add_row(d.task, d.dataset, d.metric, f"{d.models:,}", f"{d.model_folders:,}", f"{d.records:,}",
                    f"{d.stat_files:,}", f"{d.empty_files:,}", fmt_value(d.metric, d.acc_min),
                    fmt_value(d.metric, d.acc_median), fmt_value(d.metric, d.acc_max))
    kinds = Table("kind (torch.nn layers)", "models", title="model kinds")
    for k, n in s.kinds.items():
        kinds.add_row(k, f"{n:,}")
    fams = Table("family", "models", title="largest families")
    for k, n in s.top_families.items():
        fams.add_row(k, f"{n:,}")
    return [totals, per, kinds, fams]
