"""Rich views of the accuracy predictor: `nasgraph predict` (data from nasgraph.tools.predictor)."""
from __future__ import annotations

from rich.console import RenderableType
from rich.table import Table

from nasgraph.tools.predictor import VARIANTS, Evaluation, Prediction

# What NNGPT reports for its code-aware accuracy prediction (a fine-tuned LLM), for comparison.
NNGPT_RMSE, NNGPT_PEARSON = 0.14, 0.78
VARIANT_LABELS = {"mean": "dataset x epoch mean", "hp": "hyperparameters only", "code": "code + hyperparameters"}


def prediction_lines(file: str, p: Prediction) -> list[str]:
    s = p.settings
    lines = [f"{file}: predicted accuracy [bold]{100 * p.accuracy:.1f}%[/] on {s.dataset} after epoch {s.epoch}"]
    run = ", ".join(f"{k} {'–' if v is None else (f'{v:.4g}' if isinstance(v, float) else v)}"
                    for k, v in (("lr", s.lr), ("momentum", s.momentum), ("dropout", s.dropout), ("batch", s.batch),
                                 ("transform", s.transform)))
    lines.append(f"[dim]run: {run}" + (f" (LEMUR's typical {', '.join(p.defaults)})" if p.defaults else "") + "[/]")
    if p.parse_error:
        lines.append(f"[yellow]the file does not parse ({p.parse_error}): only the run's settings informed this[/]")
    return lines


def evaluation_views(e: Evaluation) -> list[RenderableType]:
    views: list[RenderableType] = []
    for report in e.splits:
        t = Table(title=f"held out by {report.split}: {report.folds} folds over {report.groups:,} "
                        f"{'models' if report.split == 'model' else 'families'}, {e.rows:,} runs")
        for col in ("predictor", "RMSE", "MAE", "Pearson r", "Spearman", "RMSE per model", "seconds"):
            t.add_column(col, justify="left" if col == "predictor" else "right")
        for v in VARIANTS:
            if v in report.scores:
                s = report.scores[v]
                t.add_row(VARIANT_LABELS[v], f"{s.rmse:.4f}", f"{s.mae:.4f}", f"{s.pearson:.3f}", f"{s.spearman:.3f}",
                          f"{s.model_rmse:.4f}", f"{report.seconds[v]:.0f}")
        t.add_row("[dim]NNGPT (reported)[/]", f"[dim]{NNGPT_RMSE:.2f}[/]", "", f"[dim]{NNGPT_PEARSON:.2f}[/]", "", "", "")
        t.caption = "RMSE per model: each held-out model's runs weigh alike"
        views.append(t)
    return views
