"""The MRI course as a figure: prevalence by week and arm with CIs (matplotlib, no pyplot).

Built as in ``syndesmo.output.plots``: a ``matplotlib.figure.Figure`` without
``pyplot`` state, 7.2 inches wide with 7–8 pt text; save it with
``fig.savefig(path, dpi=200)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: Colours of the arms in order (the reference arm first), then the pooled arms.
ARM_COLOURS = ("#7f7f7f", "#1f4e9c", "#d9731a", "#2a9d3a", "#b5367a")
POOLED_COLOUR = "#222222"
MARKERS = ("o", "s", "D", "^", "v")
_FONT = 7.5
#: (table, measure, panel title)
_PANELS = (
    ("vu", "inflammation", "VUs inflamed"),
    ("vu", "active erosion", "VUs with an active erosion"),
    ("patient", "inflammation", "patients with inflammation"),
    ("patient", "active erosion", "patients with an active erosion"),
)


def course_figure(
    vu_prevalence: pd.DataFrame,
    patient_prevalence: pd.DataFrame,
    *,
    threshold: float = 1,
    level: float = 0.95,
    pooled: bool = False,
    title: str | None = None,
) -> Figure:
    """Prevalence of inflammation and active erosions by MRI week and arm, with CIs.

    Parameters
    ----------
    vu_prevalence, patient_prevalence : pandas.DataFrame
        The tables of ``syndesmo.analysis.course.mri_course`` (columns ``measure,
        arm, week, prevalence, ci_low, ci_high``).
    threshold : float
        The inflammation threshold, for the caption.
    level : float
        The confidence level of the intervals, for the caption.
    pooled : bool
        Also draw the rows that pool all arms (``arm == "all"``).
    title : str, optional
        A title above the panels.

    Returns
    -------
    matplotlib.figure.Figure
        Four panels: VU level (top) and patient level (bottom), inflammation (left)
        and active erosions (right); one line per arm, points offset a little so
        the intervals do not overlap, weeks on a linear axis.
    """
    if vu_prevalence.empty:
        raise ValueError("course_figure: the prevalence table is empty")
    tables = {"vu": vu_prevalence, "patient": patient_prevalence}
    arms = [a for a in pd.unique(vu_prevalence["arm"]) if a != "all"]
    if pooled and (vu_prevalence["arm"] == "all").any():
        arms.append("all")
    weeks = np.sort(pd.unique(vu_prevalence["week"]).astype(float))
    span = float(weeks[-1] - weeks[0]) if len(weeks) > 1 else 1.0
    step = 0.012 * span
    fig = Figure(figsize=(7.2, 5.0), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    for ax, (which, measure, words) in zip(axes.ravel(), _PANELS, strict=True):
        table = tables[which]
        sub = table[table["measure"].eq(measure)]
        for i, arm in enumerate(arms):
            rows = sub[sub["arm"].eq(arm)].sort_values("week")
            if rows.empty:
                continue
            colour = POOLED_COLOUR if arm == "all" else ARM_COLOURS[i % len(ARM_COLOURS)]
            x = rows["week"].to_numpy(dtype=float) + (i - (len(arms) - 1) / 2) * step
            y = 100 * rows["prevalence"].to_numpy(dtype=float)
            lo = 100 * rows["ci_low"].to_numpy(dtype=float)
            hi = 100 * rows["ci_high"].to_numpy(dtype=float)
            ax.errorbar(
                x,
                y,
                yerr=np.vstack([y - lo, hi - y]),
                color=colour,
                marker=MARKERS[i % len(MARKERS)],
                ms=4,
                lw=1.3,
                capsize=2,
                elinewidth=0.9,
                ls="--" if arm == "all" else "-",
                label="all arms" if arm == "all" else str(arm),
            )
        ax.set_title(words, fontsize=_FONT + 0.5)
        ax.set_ylim(0, max(5.0, float(np.nanmax(100 * sub["ci_high"].to_numpy(float))) * 1.08))
        ax.set_xticks(weeks)
        ax.set_xticklabels([f"{w:g}" for w in weeks])
        ax.tick_params(labelsize=_FONT)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#e6e6e6", lw=0.6)
    for ax in axes[:, 0]:
        ax.set_ylabel("prevalence (%)", fontsize=_FONT)
    for ax in axes[1, :]:
        ax.set_xlabel("MRI week", fontsize=_FONT)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    pct = f"{round(level * 100)}%"
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=len(labels),
        fontsize=_FONT,
        frameon=False,
        title=(
            f"inflamed: ASspiMRI-a ≥ {threshold:g}; active erosion: ASspiMRI-a 4–6. "
            f"{pct} CIs: VUs cluster-robust (GEE, patients as clusters), patients Wilson"
        ),
        title_fontsize=_FONT - 0.5,
    )
    if title:
        fig.suptitle(title, fontsize=_FONT + 2)
    return fig
