"""Figures from the tidy tables of ``syndesmo.analysis.ladder`` (matplotlib, no global state).

Every function takes a table and returns a ``matplotlib.figure.Figure`` built without
``pyplot``, so it works headless and in notebooks alike; save it with
``fig.savefig(path, dpi=200)``. Sizes are for a manuscript page: 7.2 inches wide
(a two-column figure) with 7-8 pt text.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from syndesmo.fitting import registry
from syndesmo.numbers import fmt_ratio
from syndesmo.panel.spine import MSASSS_VUS
from syndesmo.vocabulary import VU_OUTCOMES, outcome_label

#: How an engine's estimates are drawn, by the scale of its coefficients
#: (``syndesmo.fitting.registry``): (colour, marker). Engines fitting the same kind of
#: model share a style (native and lme4 give the same numbers), and a new engine is
#: drawn without an entry here.
SCALE_STYLE: dict[str, tuple[str, str]] = {
    registry.CONDITIONAL: ("#1f4e9c", "o"),
    registry.MARGINAL: ("#d9731a", "s"),
    registry.UNCLUSTERED: ("#7f7f7f", "D"),
    registry.WITHIN: ("#b5367a", "v"),
}
#: Estimates by posterior sampling, drawn apart from likelihood fits of the same scale.
POSTERIOR_STYLE = ("#2a9d3a", "^")
#: Rows of a forest plot that are not engines: (label, colour, marker).
OTHER_STYLE: dict[str, tuple[str, str, str]] = {
    "patient": ("patient level, logistic", "#8e3a9c", "P"),
}
_UNKNOWN_STYLE = ("#444444", "X")
#: Power analyses that are not named after an engine (besides "vu" and "patient").
POWER_STYLE: dict[str, tuple[str, str]] = {
    "hybrid": ("#2a9d8f", "h"),
    "course": ("#c0392b", "*"),
}
WEEK_COLOURS = ("#c0392b", "#e8a33d", "#5d8aa8", "#6b6b6b")
_FONT = 7.5


def engine_style(engine: str) -> tuple[str, str, str]:
    """Legend label, colour and marker of an engine (or of ``"patient"``) in a figure.

    Parameters
    ----------
    engine : str
        An engine name of the registry, or ``"patient"`` for patient-level rows.

    Returns
    -------
    tuple of str
        ``(label, colour, marker)``; the label is the engine's label and scale, e.g.
        ``"GEE, population-averaged"``.
    """
    if engine in OTHER_STYLE:
        return OTHER_STYLE[engine]
    info = registry.REGISTRY.get(engine)
    if info is None:
        return (engine, *_UNKNOWN_STYLE)
    if info.estimation == registry.POSTERIOR:
        return (info.words, *POSTERIOR_STYLE)
    return (info.words, *SCALE_STYLE.get(info.scale, _UNKNOWN_STYLE))


def _x_limits(lower: np.ndarray, upper: np.ndarray, est: np.ndarray) -> tuple[float, float]:
    """Log-axis limits covering the estimates and CIs, clipped to [1/50, 50]."""
    vals = np.concatenate([lower, upper, est, [1.0]])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo = max(vals.min() / 1.15, 1 / 50) if vals.size else 0.25
    hi = min(vals.max() * 1.15, 50) if vals.size else 4
    return min(lo, 0.8), max(hi, 1.25)


def _draw_interval(ax, y: float, est: float, lo: float, hi: float, xlim, colour, marker):
    """One estimate with its CI; a CI running off the axis ends in an arrow head."""
    if not np.isfinite(est):
        return
    a, b = xlim
    left = max(lo, a) if np.isfinite(lo) else a
    right = min(hi, b) if np.isfinite(hi) else b
    ax.plot([left, right], [y, y], color=colour, lw=1.1, solid_capstyle="butt", zorder=2)
    if not np.isfinite(lo) or lo < a:
        ax.plot([left], [y], marker="<", color=colour, ms=4, zorder=2)
    if not np.isfinite(hi) or hi > b:
        ax.plot([right], [y], marker=">", color=colour, ms=4, zorder=2)
    if a <= est <= b:
        ax.plot([est], [y], marker=marker, color=colour, ms=4.5, mec="white", mew=0.5, zorder=3)


def _rows_for_exposures(
    ladder: pd.DataFrame, patient: pd.DataFrame | None, exposures: Sequence[str]
) -> list[tuple[str, str, str, str | None]]:
    """Row layout top to bottom: (kind, exposure, label, step or patient outcome)."""
    steps = sorted(set(ladder["step"]))
    labels = ladder.drop_duplicates("step").set_index("step")["step_label"].to_dict()
    rows: list[tuple[str, str, str, str | None]] = []
    for exp in exposures:
        sub = ladder[ladder["exposure"].eq(exp)]
        title = sub["exposure_label"].iloc[0] if len(sub) else exp
        rows.append(("header", exp, str(title), None))
        for s in steps:
            rows.append(("step", exp, f"({s}) {labels[s]}", s))
        if patient is not None:
            pts = patient[patient["exposure"].eq(exp) & patient["measure"].eq("OR")]
            for outcome, label in (
                pts[["outcome", "outcome_label"]].drop_duplicates().itertuples(index=False)
            ):
                rows.append(("patient", exp, f"patient level: {label}", outcome))
    return rows


#: An estimate or interval limit outside these bounds (or not finite) is "not estimable":
#: the data do not bound it (e.g. separation).
ESTIMABLE_RANGE = (1e-3, 1e3)
NOT_ESTIMABLE = "not estimable"


def estimable(est: float, lo: float, hi: float) -> bool:
    """Whether an OR and its interval are finite and inside ``ESTIMABLE_RANGE``."""
    vals = np.array([est, lo, hi], dtype=float)
    lo_ok, hi_ok = ESTIMABLE_RANGE
    return bool(np.isfinite(vals).all() and (vals > lo_ok).all() and (vals < hi_ok).all())


def _forest_setup(ladder, patient, outcomes, exposures):
    order = {o: i for i, o in enumerate(VU_OUTCOMES)}
    outcomes = list(
        outcomes or sorted(pd.unique(ladder["outcome"]), key=lambda o: order.get(o, len(order)))
    )
    exposures = list(exposures or pd.unique(ladder["exposure"]))
    if patient is not None:
        keep = patient["measure"].eq("OR")
        if "summary" in patient:
            keep &= patient["summary"].eq("any")
        patient = patient[keep]
    # the patient level goes beside the VU level of new syndesmophytes
    beside = "new_syndesmophyte" if "new_syndesmophyte" in outcomes else outcomes[0]
    return outcomes, exposures, patient, beside


def forest_table(
    ladder: pd.DataFrame,
    patient: pd.DataFrame | None = None,
    *,
    outcomes: Sequence[str] | None = None,
    exposures: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The rows a forest plot draws, top to bottom, one per outcome × row × engine.

    Parameters
    ----------
    ladder, patient, outcomes, exposures
        As for ``forest_plot``.

    Returns
    -------
    pandas.DataFrame
        Columns ``outcome``, ``row`` (position from the top), ``label``, ``exposure``,
        ``engine``, ``OR``, ``lower``, ``upper``, ``estimable`` (a finite estimate and
        interval inside ``ESTIMABLE_RANGE``), ``text`` (``OR (95% CI)`` or ``not
        estimable``), ``n`` (VUs at risk, or patients at the patient level) and
        ``events``.
    """
    outcomes, exposures, patient, beside = _forest_setup(ladder, patient, outcomes, exposures)
    rows = _rows_for_exposures(ladder, patient, exposures)
    out = []
    for outcome in outcomes:
        sub = ladder[ladder["outcome"].eq(outcome)]
        pts = patient if patient is not None and outcome == beside else None
        for i, (kind, exp, label, key) in enumerate(rows):
            if kind == "step":
                cell = sub[sub["exposure"].eq(exp) & sub["step"].eq(key)]
                draw = [
                    (r.engine, r.OR, r.lower, r.upper, r.n_vus, r.events)
                    for r in cell.itertuples(index=False)
                ]
            elif kind == "patient" and pts is not None:
                cell = pts[pts["exposure"].eq(exp) & pts["outcome"].eq(key)]
                draw = [
                    ("patient", r.estimate, r.lower, r.upper, r.n_patients, r.events)
                    for r in cell.itertuples(index=False)
                ]
            else:
                continue
            for engine, est, lo, hi, n_units, events in draw:
                est, lo, hi = (float(v) if v is not None else np.nan for v in (est, lo, hi))
                ok = estimable(est, lo, hi)
                out.append(
                    {
                        "outcome": outcome,
                        "row": i,
                        "label": label,
                        "exposure": exp,
                        "engine": engine,
                        "OR": est,
                        "lower": lo,
                        "upper": hi,
                        "estimable": ok,
                        "text": fmt_ratio(est, lo, hi) if ok else NOT_ESTIMABLE,
                        "n": n_units,
                        "events": events,
                    }
                )
    return pd.DataFrame(out)


def _spanning_limits(lower: np.ndarray, upper: np.ndarray) -> tuple[list[float], tuple]:
    """Ticks on a 1-2-5 log grid whose first is at or below every lower limit and whose
    last is at or above every upper limit (and 1 inside); the axis spans them."""
    vals = np.concatenate([lower, upper, [1.0]])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo, hi = min(vals.min(), 0.8), max(vals.max(), 1.25)
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    grid = [m * 10.0**e for e in decades for m in (1, 2, 5)]
    first = max(t for t in grid if t <= lo * (1 + 1e-9))
    last = min(t for t in grid if t >= hi * (1 - 1e-9))
    ticks = [t for t in grid if first <= t <= last]
    if len(ticks) > 9:  # thin to decades (keeping the ends and 1)
        ticks = [t for t in ticks if t in (first, last) or math.log10(t).is_integer()]
    return ticks, (first / 1.12, last * 1.12)


def forest_plot(
    ladder: pd.DataFrame,
    patient: pd.DataFrame | None = None,
    *,
    outcomes: Sequence[str] | None = None,
    exposures: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Odds ratios of a ladder table: exposures × steps, one panel per outcome.

    Within a step each engine is a marker (GLMM circle, GEE square, crude logistic
    diamond), slightly offset so they do not overlap. ``patient`` (rows of
    ``compare_levels``/``PatientLevel.to_frame`` with ``level == 'patient'``) adds
    the patient-level OR of each exposure beside the VU-level rows of the
    new-syndesmophyte panel. Log-scale OR axis with a line at 1, its ticks spanning
    every interval drawn. Right of each panel: the OR (95% CI) of every estimate (in
    its engine's colour) and N/events of the row (VUs at risk, or patients); an
    estimate that could not be made (``forest_table``'s ``estimable``) is marked
    "not estimable" in the panel and in the text column, never left out.
    """
    if ladder.empty:
        raise ValueError("forest_plot: the ladder table is empty")
    outcomes, exposures, patient, _ = _forest_setup(ladder, patient, outcomes, exposures)
    rows = _rows_for_exposures(ladder, patient, exposures)
    data = forest_table(ladder, patient, outcomes=outcomes, exposures=exposures)
    n = len(rows)
    fig = Figure(figsize=(10.5, 1.1 + 0.27 * n), layout="constrained")
    grid = fig.subplots(
        1, 2 * len(outcomes), sharey=True, squeeze=False, width_ratios=[3, 1.45] * len(outcomes)
    )[0]
    axes, text_axes = grid[0::2], grid[1::2]
    engines_seen: list[str] = []
    for ax, tax, outcome in zip(axes, text_axes, outcomes, strict=True):
        tax.set_xlim(0, 1)
        tax.axis("off")
        sub = data[data["outcome"].eq(outcome)]
        ok = sub[sub["estimable"]]
        ticks, xlim = _spanning_limits(
            ok["lower"].to_numpy(dtype=float), ok["upper"].to_numpy(dtype=float)
        )
        tax.text(0.02, n - 1, "OR (95% CI)", fontsize=_FONT, fontweight="bold", va="center")
        tax.text(0.70, n - 1, "N/events", fontsize=_FONT, fontweight="bold", va="center")
        for i, (kind, _exp, _label, _key) in enumerate(rows):
            y = n - 1 - i
            if kind == "header":
                ax.axhspan(y - 0.5, y + 0.5, color="#f0f0f0", zorder=0, lw=0)
                continue
            cell = sub[sub["row"].eq(i)]
            m = len(cell)
            for j, r in enumerate(cell.itertuples(index=False)):
                off = 0.0 if m == 1 else 0.5 * (j / (m - 1) - 0.5)
                _, colour, marker = engine_style(r.engine)
                if r.estimable:
                    _draw_interval(ax, y - off, r.OR, r.lower, r.upper, xlim, colour, marker)
                else:
                    ax.plot([xlim[0] * 1.08], [y - off], marker="x", color=colour, ms=4, zorder=3)
                    ax.text(
                        xlim[0] * 1.2,
                        y - off,
                        NOT_ESTIMABLE,
                        color=colour,
                        fontsize=_FONT - 1.5,
                        style="italic",
                        va="center",
                    )
                tax.text(0.02, y - off, r.text, fontsize=_FONT - 1.5, color=colour, va="center")
                if r.engine not in engines_seen:
                    engines_seen.append(r.engine)
            if m:
                counts = cell.iloc[0]
                tax.text(
                    0.70,
                    y,
                    f"{int(counts['n'])}/{int(counts['events'])}",
                    fontsize=_FONT - 1.5,
                    va="center",
                )
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ax.axvline(1.0, color="black", lw=0.8, zorder=1)
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_title(_outcome_title(outcome), fontsize=_FONT + 1, loc="left")
        ax.set_xlabel("odds ratio (95% CI), log scale", fontsize=_FONT)
        ax.tick_params(axis="both", labelsize=_FONT)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter("")
        ax.grid(axis="x", which="major", color="#dddddd", lw=0.5, zorder=0)
    axes[0].set_yticks(range(n - 1, -1, -1))
    axes[0].set_yticklabels([r[2] for r in rows], fontsize=_FONT)
    for tick, r in zip(axes[0].get_yticklabels(), rows, strict=True):
        if r[0] == "header":
            tick.set_fontweight("bold")
    for ax in grid[1:]:
        ax.tick_params(axis="y", length=0)
    handles = [
        Line2D([], [], color=colour, marker=marker, lw=1.1, ms=5, label=label)
        for label, colour, marker in map(engine_style, engines_seen)
    ]
    handles.append(Line2D([], [], color="#444444", marker="x", lw=0, ms=5, label=NOT_ESTIMABLE))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 3),
        fontsize=_FONT,
        frameon=False,
        title="N/events: VUs at risk (patients at the patient level) and events of the row",
        title_fontsize=_FONT - 0.5,
    )
    if title:
        fig.suptitle(title, fontsize=_FONT + 2)
    return fig


def _outcome_title(outcome: str) -> str:
    if outcome not in VU_OUTCOMES:
        return outcome
    label = outcome_label(outcome)
    return f"{label[0].upper()}{label[1:]} (VU level)"


def _log_ticks(ax, xlim: tuple[float, float]) -> None:
    """Readable ticks on a log OR axis (0.5, 1, 2 …), spaced for the range shown."""
    lo, hi = xlim
    span = math.log10(hi / lo)
    if span > 2.2:
        candidates = [0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]
    elif span > 1.1:
        candidates = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 10, 20]
    else:
        candidates = [0.25, 0.5, 0.67, 1, 1.5, 2, 3, 4]
    ticks = [t for t in candidates if lo <= t <= hi]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter("")


def spine_map(profile: pd.DataFrame, *, threshold: float = 1, title: str | None = None) -> Figure:
    """Inflammation and new bone along the spine, C2/3 … L5/S1.

    ``profile`` is ``syndesmo.derive.vu_tables.spine_profile``: one row per VU (23, in
    cranio-caudal order) with ``inflamed_w{week}`` (share of VUs with ASspiMRI-a >=
    ``threshold``), ``at_risk``, ``new`` and ``new_rate`` (new syndesmophytes among
    VUs at risk; NaN for the thoracic VUs, which the mSASSS does not score).
    Top: prevalence of inflammation at each MRI week; bottom: new-syndesmophyte rate
    at the 12 mSASSS VUs, thoracic VUs shaded as not scored.
    """
    vus = list(profile["vu"])
    x = np.arange(len(vus))
    weeks = [c for c in profile.columns if c.startswith("inflamed_w")]
    fig = Figure(figsize=(7.2, 4.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1.1, 1])
    width = 0.8 / max(len(weeks), 1)
    for k, col in enumerate(weeks):
        week = col.removeprefix("inflamed_w")
        label = "baseline" if week == "0" else f"week {week}"
        top.bar(
            x - 0.4 + width * (k + 0.5),
            100 * profile[col].to_numpy(dtype=float),
            width=width,
            color=WEEK_COLOURS[k % len(WEEK_COLOURS)],
            label=label,
        )
    top.set_ylabel(f"VUs inflamed (%)\nASspiMRI-a ≥ {threshold:g}", fontsize=_FONT)
    top.legend(fontsize=_FONT, frameon=False, ncol=len(weeks), loc="upper right")
    top.set_ylim(0, max(5.0, 100 * np.nanmax(profile[weeks].to_numpy(dtype=float)) * 1.25))

    scored = profile["new_rate"].notna().to_numpy()
    rate = 100 * profile["new_rate"].to_numpy(dtype=float)
    bottom.bar(x[scored], rate[scored], width=0.6, color="#1f4e9c")
    ymax = max(2.0, np.nanmax(rate) * 1.3) if scored.any() else 5.0
    bottom.set_ylim(0, ymax)
    for xi, r, new, risk in zip(
        x[scored], rate[scored], profile["new"][scored], profile["at_risk"][scored], strict=True
    ):
        bottom.text(
            xi,
            r + ymax * 0.02,
            f"{int(new)}/{int(risk)}",
            ha="center",
            va="bottom",
            fontsize=_FONT - 1.5,
            rotation=90,
        )
    bottom.set_ylabel("new syndesmophyte (%)\nof VUs at risk", fontsize=_FONT)
    thoracic = np.flatnonzero(profile["region"].eq("thoracic").to_numpy())
    for ax in (top, bottom):
        ax.tick_params(labelsize=_FONT)
        ax.spines[["top", "right"]].set_visible(False)
    n_mri = profile[[c for c in profile.columns if c.startswith("n_mri_w")]].sum(axis=1)
    if thoracic.size:
        mid, lo, hi = (thoracic.min() + thoracic.max()) / 2, thoracic.min(), thoracic.max()
        bottom.axvspan(lo - 0.5, hi + 0.5, color="#eeeeee", zorder=0, lw=0)
        bottom.text(
            mid,
            ymax * 0.5,
            "thoracic VUs:\nnot scored by the mSASSS",
            ha="center",
            va="center",
            fontsize=_FONT,
            color="#555555",
        )
        if (n_mri.iloc[thoracic] == 0).all():
            top.text(
                mid,
                top.get_ylim()[1] * 0.4,
                "thoracic VUs:\nno MRI in this panel",
                ha="center",
                va="center",
                fontsize=_FONT,
                color="#555555",
            )
    bottom.set_xticks(x)
    bottom.set_xticklabels(vus, rotation=90, fontsize=_FONT)
    bottom.set_xlim(-0.6, len(vus) - 0.4)
    bottom.set_xlabel("vertebral unit (cranial → caudal)", fontsize=_FONT)
    if title:
        fig.suptitle(title, fontsize=_FONT + 2)
    return fig


def spine_map_by_arm(
    profiles: pd.DataFrame, *, threshold: float = 1, title: str | None = None
) -> Figure:
    """Inflammation and new bone at the 12 scored VUs, one column of panels per arm.

    ``profiles`` is ``syndesmo.analysis.reproduction.spine_by_arm``: ``spine_profile``
    rows with an ``arm`` column (and ``arm_patients``, shown in the panel titles).
    Only the VUs the mSASSS scores (C2/3 … C7/T1, T12/L1 … L5/S1) are drawn, side by
    side with a gap and a line between the cervical and the lumbar spine (no empty
    thoracic slots). Top: VUs inflamed at each MRI week (%); bottom: new
    syndesmophytes among VUs at risk (%), each bar labelled new/at risk. Panels of a
    row share their vertical axis.
    """
    arms = list(pd.unique(profiles["arm"]))
    weeks = [c for c in profiles.columns if c.startswith("inflamed_w")]
    fig = Figure(figsize=(7.2, 4.4), layout="constrained")
    axes = fig.subplots(2, len(arms), sharey="row", squeeze=False, height_ratios=[1.1, 1])
    scored = profiles[profiles["vu"].isin(MSASSS_VUS)]
    top_max = 100 * np.nanmax(scored[weeks].to_numpy(dtype=float)) if weeks else 0.0
    rate_max = 100 * np.nanmax(scored["new_rate"].to_numpy(dtype=float))
    ymax = max(2.0, (rate_max if np.isfinite(rate_max) else 0) * 1.35)
    width = 0.8 / max(len(weeks), 1)
    for k, arm in enumerate(arms):
        prof = scored[scored["arm"].eq(arm)].set_index("vu").reindex(list(MSASSS_VUS))
        vus = list(prof.index)
        cervical = sum(v.startswith("C") for v in vus)
        x = np.arange(len(vus)) + (np.arange(len(vus)) >= cervical) * 0.6
        top, bottom = axes[0, k], axes[1, k]
        for w, col in enumerate(weeks):
            week = col.removeprefix("inflamed_w")
            top.bar(
                x - 0.4 + width * (w + 0.5),
                100 * prof[col].to_numpy(dtype=float),
                width=width,
                color=WEEK_COLOURS[w % len(WEEK_COLOURS)],
                label="baseline" if week == "0" else f"week {week}",
            )
        rate = 100 * prof["new_rate"].to_numpy(dtype=float)
        bottom.bar(x, np.nan_to_num(rate), width=0.6, color="#1f4e9c")
        for xi, r, new, risk in zip(x, rate, prof["new"], prof["at_risk"], strict=True):
            bottom.text(
                xi,
                (r if np.isfinite(r) else 0) + ymax * 0.02,
                f"{int(new)}/{int(risk)}",
                ha="center",
                va="bottom",
                fontsize=_FONT - 2,
                rotation=90,
            )
        known = prof["arm_patients"].dropna() if "arm_patients" in prof else pd.Series()
        n_patients = int(known.iloc[0]) if len(known) else None
        top.set_title(
            f"{arm}" + (f" ({n_patients} patients)" if n_patients else ""), fontsize=_FONT + 1
        )
        top.set_ylim(0, max(5.0, top_max * 1.3))
        bottom.set_ylim(0, ymax)
        for ax in (top, bottom):
            ax.axvline(cervical - 0.2, color="#999999", lw=0.6, ls=":")
            ax.tick_params(labelsize=_FONT)
            ax.spines[["top", "right"]].set_visible(False)
            ax.set_xticks(x)
            ax.set_xlim(x[0] - 0.6, x[-1] + 0.6)
        top.set_xticklabels([])
        bottom.set_xticklabels(vus, rotation=90, fontsize=_FONT)
        bottom.set_xlabel("VU (cervical | lumbar; thoracic not scored)", fontsize=_FONT)
    axes[0, 0].set_ylabel(f"VUs inflamed (%)\nASspiMRI-a ≥ {threshold:g}", fontsize=_FONT)
    axes[1, 0].set_ylabel("new syndesmophyte (%)\nof VUs at risk", fontsize=_FONT)
    axes[0, -1].legend(fontsize=_FONT, frameon=False, ncol=len(weeks), loc="upper right")
    if title:
        fig.suptitle(title, fontsize=_FONT + 2)
    return fig


def _worst_share(share: float) -> str:
    """The largest share of a fit-health rate over a curve's points, for its legend:
    ``0%``, or ``up to 0.5%`` (never rounded down to 0 when some fit was hit)."""
    if math.isnan(share):
        return "n/a"
    if share <= 0:
        return "0%"
    return f"up to {100 * share:.2g}%"


def power_curve_plot(
    table: pd.DataFrame,
    *,
    x: str | None = None,
    target: float | None = 0.8,
    title: str | None = None,
    chosen: dict[str, float] | None = None,
) -> Figure:
    """Power against a design variable, one line per analysis, Monte Carlo CIs.

    ``table`` is ``syndesmo.powersim.api.power_curve``'s tidy table (the grid columns,
    then ``analysis``, ``power``, ``power_lower``, ``power_upper``, ``alpha``) or a
    search's ``evaluated`` table (``syndesmo.powersim.search``). ``x`` is the grid
    column on the horizontal axis (default ``n_patients``, else the first grid
    column); one panel per combination of the other grid columns (e.g. one per true
    OR). Each point carries its Monte Carlo 95% CI as an error bar (and a band along
    the line). A dashed line marks the ``target`` power and a dotted one ``alpha``.
    ``chosen`` (analysis → value, e.g. a sample size found) marks each answer with a
    vertical line in the analysis' colour, labelled with the value. Fit health: the
    legend gives each analysis' largest failed and singular rates over its points,
    and a point where more than 1% of fits failed is labelled with its rate (an
    open marker where the run stopped early).
    """
    if table.empty:
        raise ValueError("power_curve_plot: the power table is empty")
    # power_curve puts the grid columns first, before the analysis column
    grid = list(table.columns[: table.columns.get_loc("analysis")]) if "analysis" in table else []
    if x is None:
        x = "n_patients" if "n_patients" in table.columns else (grid[0] if grid else None)
    if x is None or x not in table.columns:
        raise ValueError(f"power_curve_plot: no column {x!r} for the horizontal axis")
    facets = [c for c in (grid or ["odds_ratio_new"]) if c != x and c in table.columns]
    groups = list(table.groupby(facets, sort=True)) if facets else [((), table)]
    n = len(groups)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(7.2, 2.6 * nrows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    # the power analyses "gee" and the crude one are named after their engines
    colour_of = {"vu": registry.DEFAULT_ENGINE}
    within = registry.engine_names(scale=registry.WITHIN, family=registry.BINOMIAL)[0]
    labels = {
        "vu": "VU level, GLMM",
        registry.MARGINAL_ENGINE: "VU level, GEE",
        "patient": "patient level, logistic",
        registry.CRUDE_ENGINE: "VU level, crude logistic",
        "hybrid": "VU level, within-between GLMM",
        within: "VU level, conditional logistic",
        "course": "MRI course (arm on inflammation)",
    }
    handles: dict[str, Line2D] = {}
    for ax, (key, sub) in zip(axes, groups, strict=False):
        for analysis, lines in sub.groupby("analysis", sort=False):
            if analysis in POWER_STYLE:
                colour, marker = POWER_STYLE[analysis]
            else:
                _, colour, marker = engine_style(colour_of.get(analysis, analysis))
            lines = lines.sort_values(x)
            xs = lines[x].to_numpy(dtype=float)
            ax.fill_between(
                xs,
                lines["power_lower"].to_numpy(dtype=float),
                lines["power_upper"].to_numpy(dtype=float),
                color=colour,
                alpha=0.18,
                lw=0,
            )
            ps = lines["power"].to_numpy(dtype=float)
            ax.errorbar(
                xs,
                ps,
                yerr=[
                    ps - lines["power_lower"].to_numpy(dtype=float),
                    lines["power_upper"].to_numpy(dtype=float) - ps,
                ],
                fmt="none",
                ecolor=colour,
                elinewidth=0.8,
                capsize=2,
            )
            label = labels.get(analysis, analysis)
            health = []
            for col, word in (
                ("failed_rate", "failed"),
                ("singular_rate", "singular"),
                ("separation_rate", "separation"),
            ):
                if col in table.columns:
                    worst = float(table.loc[table["analysis"] == analysis, col].max())
                    health.append(f"{word} {_worst_share(worst)}")
            if health:
                label += f" ({', '.join(health)})"
            (line,) = ax.plot(xs, ps, color=colour, marker=marker, ms=4, lw=1.3, label=label)
            handles.setdefault(analysis, line)
            if "stopped_early" in lines.columns:
                stop = lines["stopped_early"].to_numpy(dtype=bool)
                ax.plot(xs[stop], ps[stop], ls="none", marker=marker, ms=7, mfc="white", mec=colour)
            if "failed_rate" in lines.columns:
                for xv, pv, fr in zip(xs, ps, lines["failed_rate"].to_numpy(float), strict=True):
                    if fr > 0.01:
                        ax.annotate(
                            f"{100 * fr:.0f}% failed",
                            (xv, pv),
                            xytext=(4, 5),
                            textcoords="offset points",
                            fontsize=_FONT - 2,
                            color=colour,
                        )
            if chosen and analysis in chosen and np.isfinite(chosen[analysis]):
                value = float(chosen[analysis])
                ax.axvline(value, color=colour, ls=(0, (1, 2)), lw=1.0)
                ax.annotate(
                    f"{'n' if x == 'n_patients' else x.replace('odds_ratio_new', 'OR')} = "
                    f"{value:g}",
                    (value, 0.02),
                    xytext=(3, 0),
                    textcoords="offset points",
                    fontsize=_FONT - 1,
                    color=colour,
                )
        if target is not None:
            ax.axhline(target, color="#555555", ls="--", lw=0.8)
        if "alpha" in sub.columns:
            ax.axhline(float(sub["alpha"].iloc[0]), color="#555555", ls=":", lw=0.8)
        key = key if isinstance(key, tuple) else (key,)
        words = {"odds_ratio_new": "true OR", "n_patients": "patients"}
        heading = ", ".join(
            f"{words.get(f, f)} {v:g}" if isinstance(v, (int, float)) else f"{f} {v}"
            for f, v in zip(facets, key, strict=True)
        )
        # several grid fields make long headings: wrap them to the panel's width
        ax.set_title(textwrap.fill(heading, 100 // ncols), fontsize=_FONT + 0.5)
        ax.set_ylim(0, 1.02)
        ticks = np.unique(sub[x].to_numpy(dtype=float))
        if len(ticks) <= 8:  # label the designs simulated, not round numbers between them
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.set_xlabel(words.get(x, x) if x != "n_patients" else "patients", fontsize=_FONT)
        ax.tick_params(labelsize=_FONT)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#e6e6e6", lw=0.6)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("power", fontsize=_FONT)
    first = table.iloc[0]
    n_sims = int(table["n_sims"].max())
    lines = [
        f"up to {n_sims} simulated studies per point; bars and bands: Monte Carlo 95% CI "
        f"({str(first.get('ci_method', 'wilson')).capitalize()})"
    ]
    marks = [f"dashed: {target:g} power", "dotted: alpha"] if target is not None else []
    if chosen:
        marks.append("vertical lines: the value found")
    if "stopped_early" in table.columns and table["stopped_early"].any():
        marks.append("open markers: stopped early (too many failed fits, see stop_reason)")
    if marks:
        lines.append("; ".join(marks))
    if "failure_rule" in table.columns:
        lines.append(f"fit health: {first['failure_rule']}")
    note = "\n".join(lines)
    fig.legend(
        handles=list(handles.values()),
        loc="outside lower center",
        ncol=1
        if max((len(h.get_label()) for h in handles.values()), default=0) > 40
        else len(handles),
        fontsize=_FONT,
        frameon=False,
        title=note,
        title_fontsize=_FONT - 0.5,
    )
    if title:
        fig.suptitle(title, fontsize=_FONT + 2)
    return fig
