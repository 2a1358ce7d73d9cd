"""The winners of a run on the report page: their final training (proxy vs final accuracy and the rank
correlation), size, latency on this machine and code, plus a plot of their per-epoch curves.

Data from the store (tools/store.py's trainings and exports); `nasgraph train` writes them. A run known
only to the store (`nasgraph eval --run-id`) gets a report too: `digest_from_store` makes its rows.
"""
from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nasgraph.tools.final_training import Agreement, rank_agreement
from nasgraph.tools.store import Store, TrainingRecord
from nasgraph.trace_data import IterationRow, RunDigest
from nasgraph.views import fmt_acc, fmt_int


@dataclass
class Winners:
    epochs: int
    trainings: list[TrainingRecord]                  # best final accuracy first
    agreement: Agreement
    codes: dict[str, str] = field(default_factory=dict)
    onnx_ms: dict[int, dict] = field(default_factory=dict)   # training id -> {"1": ms, "64": ms} from the last export


def gather(store: Store, arch_ids: set[str], dataset: str | None) -> Winners | None:
    """The final trainings of these designs; where they were trained for several epoch counts, the
    count most of them share (ties: the longest)."""
    found = store.trainings(arch_ids=arch_ids, dataset=dataset)
    if not found:
        return None
    counts = Counter(t.epochs for t in found)
    epochs = max(counts, key=lambda e: (counts[e], e))
    chosen = [t for t in found if t.epochs == epochs]
    onnx = {}
    for t in chosen:
        exported = [e for e in store.exports(t.id) if e.format == "onnx"]
        if exported:
            onnx[t.id] = exported[-1].latency
    return Winners(epochs, chosen, rank_agreement(chosen), {t.arch_id: store.code(t.arch_id) for t in chosen}, onnx)


def digest_from_store(store: Store, run_id: str, root: Path) -> RunDigest:
    """A run the store knows but no run folder does (evaluated with `nasgraph eval --run-id`): one row
    per evaluation, in order, so the report's plots and tables work on it."""
    evals = store.run_candidates(run_id)
    rows = [IterationRow(i, e.status, e.status, e.accuracy, e.params, e.flops, e.arch_id, error=e.error,
                         code=store.code(e.arch_id), attempts=[e.status]) for i, e in enumerate(evals, 1)]
    datasets = Counter(e.dataset for e in evals)
    meta = {"config": {"loop": {"dataset": datasets.most_common(1)[0][0] if datasets else None}}, "store_only": True}
    return RunDigest(run_id, root, [], rows, meta)


def plot_curves(w: Winners, ax) -> None:
    for t in w.trainings:
        xs = [c["epoch"] + 1 for c in t.curve if c.get("accuracy") is not None]
        ys = [100 * c["accuracy"] for c in t.curve if c.get("accuracy") is not None]
        line, = ax.plot(xs, ys, marker=".", label=t.arch_id[:8])
        if t.proxy_accuracy is not None:  # the proxy that chose it, at epoch 1 of its own run
            ax.scatter([1], [100 * t.proxy_accuracy], marker="x", color=line.get_color())
    ax.set_xlabel("epoch of the final training (x: the run's 1-epoch proxy)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower right", fontsize="small")


def _ms(lat: dict | None) -> str:
    if not lat:
        return "–"
    return " / ".join(f"{lat[b]:.2f}" if isinstance(lat.get(b), (int, float)) else "–" for b in ("1", "64"))


def agreement_text(w: Winners) -> str:
    a = w.agreement
    if a.n == 0:
        return "No finished final training with a proxy accuracy yet."
    rho = "not defined (fewer than 3 designs, or no spread)" if a.spearman is None else f"{a.spearman:+.2f}"
    kept = "" if a.best_kept is None else (" The proxy's best design stayed the best." if a.best_kept
                                           else " The proxy's best design did not stay the best.")
    return (f"Rank correlation (Spearman) between the 1-epoch proxy and the {w.epochs}-epoch accuracy: "
            f"{rho} over {a.n} designs.{kept}")


def _rows(w: Winners) -> list[list[str]]:
    out = []
    for i, t in enumerate(w.trainings, 1):
        status = t.status if t.epochs_done == t.epochs else f"{t.status} ({t.epochs_done}/{t.epochs} epochs)"
        out.append([str(i), t.arch_id, fmt_acc(t.proxy_accuracy), fmt_acc(t.accuracy), fmt_int(t.params),
                    fmt_int(t.flops), _ms(t.latency.get("pytorch")), _ms(w.onnx_ms.get(t.id)), status])
    return out


HEADER = ["#", "architecture", "proxy (1 epoch)", "final", "params", "FLOPs", "PyTorch ms @1 / @64",
          "ONNX RT ms @1 / @64", "status"]


def markdown(w: Winners, image: Path | None) -> list[str]:
    out = [f"## Winners: final training for {w.epochs} epochs", ""]
    if image is not None:
        out += [f"![final training curves]({image.name})", ""]
    out += ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    out += ["| " + " | ".join(f"`{c}`" if j == 1 else c for j, c in enumerate(r)) + " |" for r in _rows(w)]
    out += ["", agreement_text(w), "", "Latency: median forward pass on this machine, batch of 1 / 64 "
            "(ONNX Runtime where the design was exported with `nasgraph export`)."]
    for i, t in enumerate(w.trainings, 1):
        out += ["", f"### Winner {i}. `{t.arch_id}` — {fmt_acc(t.accuracy)} after {t.epochs_done} epochs", "",
                "```python", w.codes.get(t.arch_id, "").strip(), "```"]
    return out + [""]


def html_parts(w: Winners, image: Path | None, code_html) -> list[str]:
    e = html.escape
    parts = [f"<h2>Winners: final training for {w.epochs} epochs</h2>"]
    if image is not None:
        parts.append(f"<img src='{e(image.name)}' alt='final training curves'>")
    parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADER) + "</tr>")
    for r in _rows(w):
        parts.append("<tr>" + "".join(f"<td>{'<code>' + e(c) + '</code>' if j == 1 else e(c)}</td>"
                                      for j, c in enumerate(r)) + "</tr>")
    parts += ["</table>", f"<p>{e(agreement_text(w))}</p>"]
    for i, t in enumerate(w.trainings, 1):
        parts.append(f"<h3>Winner {i}. <code>{e(t.arch_id)}</code> — {fmt_acc(t.accuracy)} after "
                     f"{t.epochs_done} epochs</h3>")
        parts.append(code_html(w.codes.get(t.arch_id, "").strip()))
    return parts
