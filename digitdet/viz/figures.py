"""matplotlib figures of a run: training curves, per-digit precision-recall, digit confusions.

Every function returns a ``matplotlib.figure.Figure`` made by :func:`digitdet.viz.draw.new_figure`
(the Agg canvas, no pyplot state, no display needed); write it with
:func:`digitdet.viz.draw.save_figure_atomic`. Nothing here reads model outputs directly:
the numbers come from ``metrics.csv`` (:func:`read_metrics_csv`) and :mod:`digitdet.score.diagnostics`.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from digitdet.viz.draw import DIGIT_COLORS, new_figure

LOSS_COLUMNS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss")
SCORE_COLUMNS = ("map", "ap50", "ap75")


def read_metrics_csv(path) -> dict[str, np.ndarray]:
    """``metrics.csv`` of a run -> ``{column: float array, one value per row}``.

    Blank cells (epochs without validation) become NaN. Raises ValueError naming the file
    when it is missing, empty, has no ``epoch`` column or holds a non-number.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: metrics.csv not found (a run folder written by `digitdet train` has one)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise ValueError(f"{path}: expected a header with an 'epoch' column and at least one row")
    out = {}
    for col in rows[0]:
        values = []
        for n, row in enumerate(rows, start=2):
            cell = (row.get(col) or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                raise ValueError(f"{path}: line {n}, column {col!r}: not a number: {cell!r}") from None
        out[col] = np.asarray(values)
    return out


def _plot_defined(ax, x, y, label: str, **kw) -> None:
    """Plot y against x skipping NaN (markers show lone evaluated epochs)."""
    ok = ~np.isnan(y)
    if ok.any():
        ax.plot(x[ok], y[ok], marker="o", markersize=3, label=label, **kw)


def training_curves_figure(metrics: dict[str, np.ndarray], title: str = "") -> Figure:
    """2 x 2 panels per epoch: every loss term, learning rate, COCO mAP / AP50 / AP75, number accuracy.

    ``metrics``: columns as returned by :func:`read_metrics_csv`; absent columns are skipped.
    """
    if "epoch" not in metrics:
        raise ValueError(f"training_curves_figure: no 'epoch' column (got {sorted(metrics)})")
    x = metrics["epoch"]
    fig = new_figure(figsize=(11, 7.5))
    (ax_loss, ax_lr), (ax_map, ax_acc) = fig.subplots(2, 2)
    for col in LOSS_COLUMNS:
        if col in metrics:
            _plot_defined(ax_loss, x, metrics[col], col, linewidth=2.5 if col == "loss" else 1.2)
    ax_loss.set(title="training losses (mean per epoch)", xlabel="epoch", ylabel="loss")
    if "lr" in metrics:
        _plot_defined(ax_lr, x, metrics["lr"], "lr")
        if np.nanmin(metrics["lr"]) > 0:
            ax_lr.set_yscale("log")
    ax_lr.set(title="learning rate (end of epoch)", xlabel="epoch")
    for col in SCORE_COLUMNS:
        if col in metrics:
            _plot_defined(ax_map, x, metrics[col], {"map": "mAP@[.5:.95]", "ap50": "AP50", "ap75": "AP75"}[col])
    ax_map.set(title="validation COCO AP (Task 1)", xlabel="epoch", ylim=(0, 1))
    if "accuracy" in metrics:
        _plot_defined(ax_acc, x, metrics["accuracy"], "whole-number accuracy", color="black")
    ax_acc.set(title="validation number accuracy (Task 2)", xlabel="epoch", ylim=(0, 1))
    for ax in (ax_loss, ax_lr, ax_map, ax_acc):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def pr_curves_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], iou: float = 0.5) -> Figure:
    """One precision-recall curve per digit (``diagnostics.pr_curves``), AP in the legend."""
    fig = new_figure(figsize=(7, 6))
    ax = fig.subplots()
    for digit, (recall, precision) in sorted(curves.items()):
        if np.all(np.isnan(precision)):
            continue  # no GT box of this digit
        ap = float(np.nanmean(np.nan_to_num(precision, nan=0.0)))
        color = np.asarray(DIGIT_COLORS[int(digit)]) / 255
        ax.plot(recall, np.nan_to_num(precision, nan=0.0), color=color, label=f"{digit}  AP {ap:.3f}")
    ax.set(title=f"precision-recall per digit, IoU {iou:.2f} (COCO interpolation)", xlabel="recall",
           ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left")
    return fig


def confusion_figure(matrix, row_names: list[str], col_names: list[str], title: str = "") -> Figure:
    """Counts as a heat map with the numbers written in; rows true, columns predicted.

    Colours are row-normalised (the share of each true digit), so rare digits are as
    readable as common ones; the cells show raw counts.
    """
    m = np.asarray(matrix)
    if m.shape != (len(row_names), len(col_names)):
        raise ValueError(f"confusion_figure: matrix {m.shape} does not match {len(row_names)} rows "
                         f"x {len(col_names)} columns")
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig = new_figure(figsize=(8, 7))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            if m[r, c]:
                ax.text(c, r, str(int(m[r, c])), ha="center", va="center", fontsize=8,
                        color="white" if share[r, c] > 0.5 else "black")
    ax.set_xticks(range(len(col_names)), col_names)
    ax.set_yticks(range(len(row_names)), row_names)
    ax.set(xlabel="digit read", ylabel="true digit", title=title or "digit confusions (IoU >= 0.5)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the row")
    return fig
