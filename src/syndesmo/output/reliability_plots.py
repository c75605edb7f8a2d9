"""Bland–Altman plots of two readers' patient totals (matplotlib, no global state).

The figure is built from the tables of ``syndesmo.analysis.reliability``: the points
from ``ReliabilityResult.differences`` and the lines from ``.agreement``, so the plot
shows exactly the numbers of the tables. Built without ``pyplot`` (headless and in
notebooks alike); save it with ``fig.savefig(path, dpi=200)`` as PNG or PDF.

Bland JM, Altman DG. Statistical methods for assessing agreement between two
methods of clinical measurement. Lancet 1986;1:307–310.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from syndesmo.errors import SyndesmoError

_FONT = 7.5
_POINT = "#1f4e9c"
_BIAS = "#222222"
_LIMIT = "#c0392b"
_POINTS_LABEL = "patients (marker area ∝ number)"


def _num(value: float) -> str:
    """Two decimals with a typographic minus sign."""
    return f"{value:.2f}".replace("-", "\u2212")


def _default_measures(measures: Sequence[str]) -> list[str]:
    """The first and last status and the change (or all, when there are fewer)."""
    status = [m for m in measures if m.startswith("status")]
    change = [m for m in measures if m.startswith("change")]
    chosen = status[:1] + status[-1:] if len(status) > 1 else status
    return chosen + change


def _panel(ax, pts: pd.DataFrame, row: pd.Series, title: str, a, b) -> None:
    """One Bland–Altman panel: points (area ∝ patients), mean difference, limits."""
    counts = pts.groupby(["mean", "difference"]).size().reset_index(name="n")
    n = counts["n"].to_numpy()
    per_patient = min(8.0, 160.0 / max(int(n.max()), 1)) if n.size else 8.0
    ax.scatter(
        counts["mean"],
        counts["difference"],
        s=per_patient * n,
        color=_POINT,
        alpha=0.55,
        edgecolors="none",
        zorder=3,
    )
    ax.axhline(0.0, color="#9a9a9a", lw=0.6, ls=":", zorder=1)
    bias, lo, hi = row["mean_difference"], row["loa_low"], row["loa_high"]
    xmin = float(counts["mean"].min()) if len(counts) else 0.0
    xmax = float(counts["mean"].max()) if len(counts) else 1.0
    span = xmax - xmin if xmax > xmin else 1.0
    ax.set_xlim(xmin - 0.05 * span, xmax + 0.32 * span)
    ymax = max(
        np.nanmax(np.abs(counts["difference"].to_numpy())) if len(counts) else 1.0,
        abs(lo) if np.isfinite(lo) else 0.0,
        abs(hi) if np.isfinite(hi) else 0.0,
    )
    ymax = max(ymax * 1.25, 1.0)
    ax.set_ylim(-ymax, ymax)
    x_text = xmax + 0.30 * span
    for value, label, style, colour in (
        (hi, "+1.96 SD", "--", _LIMIT),
        (bias, "mean", "-", _BIAS),
        (lo, "−1.96 SD", "--", _LIMIT),
    ):
        if not np.isfinite(value):
            continue
        ax.axhline(value, color=colour, lw=1.0, ls=style, zorder=2)
        ax.text(
            x_text,
            value,
            f"{label}\n{_num(value)}",
            ha="right",
            va="center",
            fontsize=_FONT - 1.5,
            color=colour,
            linespacing=0.95,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85},
            zorder=4,
        )
    sdc = row.get("sdc_95_one_reader", np.nan)
    if np.isfinite(sdc):
        ax.text(
            0.02,
            0.03,
            f"SDC 95%: one reader {_num(sdc)}, mean of 2 {_num(row['sdc_95_mean_of_readers'])}",
            transform=ax.transAxes,
            fontsize=_FONT - 1.5,
            va="bottom",
            ha="left",
            color="#333333",
        )
    ax.set_title(f"{title} (n = {len(pts)})", fontsize=_FONT, loc="left", linespacing=1.1)
    ax.set_xlabel(f"mean of readers {a} and {b}", fontsize=_FONT - 0.5)
    ax.set_ylabel(f"reader {a} − reader {b}", fontsize=_FONT - 0.5)
    ax.tick_params(labelsize=_FONT - 1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def bland_altman_figure(
    differences: pd.DataFrame,
    agreement: pd.DataFrame,
    readers: str | None = None,
    measures: Sequence[str] | None = None,
) -> Figure:
    """Bland–Altman plots of one reader pair: one row per score, one panel per measure.

    Each panel plots, per patient, the difference of the two readers' totals
    (reader a − reader b) against their mean; the marker area grows with the
    number of patients at the same point (totals are whole numbers and coincide).
    The mean difference (solid) and the 95% limits of agreement, mean ± 1.96 SD
    of the differences (dashed), are drawn and labelled with their values; panels
    of change scores also give the smallest detectable change (95%).

    Parameters
    ----------
    differences : pandas.DataFrame
        ``ReliabilityResult.differences``: per patient and reader pair, ``mean`` and
        ``difference``.
    agreement : pandas.DataFrame
        ``ReliabilityResult.agreement``: the limits of agreement per measure.
    readers : str, optional
        The pair's label, e.g. ``"1 vs 2"``; default the first pair.
    measures : sequence of str, optional
        Measures to show (e.g. ``"status, week 0"``); default for each score the
        first and last status and the change.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, 7.2 inches wide.

    Raises
    ------
    SyndesmoError
        No points for that reader pair.
    """
    if readers is None:
        if not len(differences):
            raise SyndesmoError("no reader pair with patients to plot")
        readers = str(differences["readers"].iloc[0])
    pts_all = differences[differences["readers"].astype(str).eq(readers)]
    if not len(pts_all):
        pairs = sorted(differences["readers"].astype(str).unique())
        raise SyndesmoError(f"no Bland–Altman points for readers {readers!r}; pairs: {pairs}")
    a, b = pts_all["reader_a"].iloc[0], pts_all["reader_b"].iloc[0]
    scores = list(pd.unique(pts_all["score"]))
    layout: list[tuple[str, list[str]]] = []
    for score in scores:
        have = list(pd.unique(pts_all.loc[pts_all["score"].eq(score), "measure"]))
        chosen = [m for m in measures if m in have] if measures is not None else None
        layout.append((score, chosen if chosen is not None else _default_measures(have)))
    layout = [(s, m) for s, m in layout if m]
    if not layout:
        raise SyndesmoError(f"none of the measures {list(measures or [])} is in the table")
    n_cols = max(len(m) for _, m in layout)
    fig = Figure(figsize=(7.2, 2.45 * len(layout) + 0.45), layout="constrained")
    axes = fig.subplots(len(layout), n_cols, squeeze=False)
    agree = agreement[agreement["readers"].astype(str).eq(readers)]
    for i, (score, chosen) in enumerate(layout):
        for j in range(n_cols):
            ax = axes[i][j]
            if j >= len(chosen):
                ax.set_visible(False)
                continue
            measure = chosen[j]
            pts = pts_all[pts_all["score"].eq(score) & pts_all["measure"].eq(measure)]
            row = agree[agree["score"].eq(score) & agree["measure"].eq(measure)].iloc[0]
            _panel(ax, pts, row, f"{score}\n{measure}", a, b)
    handles = [
        Line2D([], [], color=_BIAS, lw=1.0, label="mean difference"),
        Line2D([], [], color=_LIMIT, lw=1.0, ls="--", label="95% limits of agreement"),
        Line2D([], [], color=_POINT, marker="o", ls="", alpha=0.55, label=_POINTS_LABEL),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=_FONT, frameon=False)
    fig.suptitle(
        f"Bland–Altman plots of the patient totals: reader {a} − reader {b}", fontsize=_FONT + 1
    )
    return fig
