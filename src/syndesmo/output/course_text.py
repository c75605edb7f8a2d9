"""The MRI course as text and files: Markdown tables, a report section, CSV + PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from syndesmo.numbers import fmt_p, fmt_ratio
from syndesmo.output.course_plots import course_figure
from syndesmo.output.report import markdown_table

#: File name of the figure.
FIGURE = "prevalence.png"
_MEASURE_WORDS = {"inflammation": "inflamed", "active erosion": "active erosion"}


def _pct(p: float, lo: float, hi: float) -> str:
    if not np.isfinite(p):
        return "—"
    return f"{100 * p:.1f}% ({100 * lo:.1f}–{100 * hi:.1f})"


def _prevalence_text(table: pd.DataFrame, unit: str) -> pd.DataFrame:
    """Measure × arm rows, one column per week: ``k/n, 12.3% (9.9–15.1)``."""
    rows = []
    for (measure, arm), sub in table.groupby(["measure", "arm"], sort=False):
        row = {"measure": measure, "arm": str(arm)}
        for r in sub.itertuples():
            n = r.n_vus if unit == "vu" else r.n_patients
            row[f"week {r.week}"] = f"{r.n_positive}/{n}, {_pct(r.prevalence, r.ci_low, r.ci_high)}"
        if unit == "vu":
            last = sub.sort_values("week").iloc[-1]
            change = last["relative_change"]
            row["change to last week"] = (
                f"{100 * change:+.1f}%".replace("-", "−") if np.isfinite(change) else "—"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def display_tables(course) -> dict[str, pd.DataFrame]:
    """The result tables of a ``CourseResult`` as text a manuscript takes."""
    mc = course.mcnemar
    mcnemar = pd.DataFrame(
        {
            "measure": mc["measure"],
            "arm": mc["arm"].astype(str),
            "weeks": [f"{a} → {b}" for a, b in zip(mc["baseline_week"], mc["week"], strict=True)],
            "patients": mc["n_patients"],
            "positive before": [
                f"{k} ({100 * k / n:.0f}%)"
                for k, n in zip(mc["positive_baseline"], mc["n_patients"], strict=True)
            ],
            "positive after": [
                f"{k} ({100 * k / n:.0f}%)"
                for k, n in zip(mc["positive_week"], mc["n_patients"], strict=True)
            ],
            "+→−": mc["pos_to_neg"],
            "−→+": mc["neg_to_pos"],
            "p": [fmt_p(p) for p in mc["p"]],
            "test": mc["test"],
        }
    )
    wx = course.wilcoxon
    wilcoxon = pd.DataFrame(
        {
            "arm": wx["arm"].astype(str),
            "weeks": [f"{a} → {b}" for a, b in zip(wx["baseline_week"], wx["week"], strict=True)],
            "patients": wx["n_patients"],
            "mean before": wx["mean_baseline"].round(2),
            "mean after": wx["mean_week"].round(2),
            "mean change": wx["mean_change"].round(2),
            "median before → after": [
                f"{a:g} → {b:g}"
                for a, b in zip(wx["median_baseline"], wx["median_week"], strict=True)
            ],
            "p": [fmt_p(p) for p in wx["p"]],
        }
    )
    ors = course.odds_ratios
    odds = pd.DataFrame(
        {
            "fit": ors["fit"],
            "contrast": [
                f"week {w} vs {v}" if c == "week vs baseline" else f"{a} vs {v} at week {w}"
                for c, a, w, v in zip(
                    ors["contrast"], ors["arm"], ors["week"], ors["versus"], strict=True
                )
            ],
            "arm": ors["arm"].astype(str),
            "OR (95% CI)": [
                fmt_ratio(e, lo, hi)
                for e, lo, hi in zip(ors["odds_ratio"], ors["ci_low"], ors["ci_high"], strict=True)
            ],
            "p": [fmt_p(p) for p in ors["p"]],
        }
    )
    fits = course.fits_table[
        ["fit", "converged", "loglik", "sd_patient", "sd_vu_in_patient", "n_obs", "seconds", "note"]
    ]
    return {
        "vu_prevalence": _prevalence_text(course.vu_prevalence, "vu"),
        "patient_prevalence": _prevalence_text(course.patient_prevalence, "patient"),
        "mcnemar": mcnemar,
        "wilcoxon": wilcoxon,
        "model_fits": fits,
        "model": course.model,
        "odds_ratios": odds,
        "ledger": course.ledger.to_frame(),
    }


def summary_sentence(course) -> str:
    """One sentence of the seed's shape: VU inflammation at the first and last week by arm."""
    vp = course.vu_prevalence
    first, last = course.weeks[0], course.weeks[-1]
    parts = []
    for arm in course.arms:
        sub = vp[vp["measure"].eq("inflammation") & vp["arm"].eq(arm)].set_index("week")
        if first not in sub.index or last not in sub.index:
            continue
        a, b = sub.loc[first, "prevalence"], sub.loc[last, "prevalence"]
        change = sub.loc[last, "relative_change"]
        fall = f"a fall by {-100 * change:.1f}%" if change < 0 else f"a rise by {100 * change:.1f}%"
        parts.append(f"{arm} {100 * a:.1f}% → {100 * b:.1f}% ({fall})")
    return (
        f"VUs inflamed (ASspiMRI-a ≥ {course.threshold:g}) from week {first} to week {last}: "
        + "; ".join(parts)
        + " (Baraliakos et al., J Rheumatol 2013;40:1891–6, under two years of TNF blockade: "
        "33.7% → 12.0% of all 23 VUs, thoracic ones included, a fall by 64.5%)."
    )


def render(course, header: str = "", level: int = 1) -> str:
    """All tables of a ``CourseResult`` as Markdown, with a heading at ``level``."""
    h = "#" * level
    shown = display_tables(course)
    md = [f"{h} The MRI course", ""]
    if header:
        md += [header, ""]
    md += [summary_sentence(course), ""]
    for name, title in course.TITLES.items():
        table = shown[name]
        if table.empty:
            continue
        md += [f"{h}# {title}", "", markdown_table(table), ""]
    md += [f"![MRI course]({FIGURE})", ""]
    md += ["Notes:", "", *(f"- {n}" for n in course.notes), ""]
    return "\n".join(md)


def report_section(course, prefix: str = "course_") -> list[str]:
    """Lines of the MRI course section of ``report.md`` (level-2 heading, key tables)."""
    shown = display_tables(course)
    md = ["## The MRI course", "", summary_sentence(course), ""]
    for name in ("vu_prevalence", "patient_prevalence", "mcnemar", "odds_ratios"):
        md += [f"**{course.TITLES[name]}**", "", markdown_table(shown[name]), ""]
    md += [f"![MRI course]({prefix}{FIGURE})", ""]
    md += [*(f"- {n}" for n in course.notes), ""]
    md += [f"All tables: `{prefix}<table>.csv` / `.md` ({', '.join(course.TITLES)}).", ""]
    return md


def write_course(
    course,
    directory: str | Path,
    prefix: str = "",
    dpi: int = 200,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Every table as ``<prefix><name>.csv`` (full precision) and ``.md``, and the figure
    in each of ``formats`` (``png``, ``pdf``, ``svg``).

    ``directory`` is a directory the caller is writing atomically (e.g. inside
    ``atomic_output_dir``); returns the paths written.
    """
    directory = Path(directory)
    shown = display_tables(course)
    written: list[Path] = []
    for name, table in course.tables().items():
        csv = directory / f"{prefix}{name}.csv"
        table.to_csv(csv, index=False, lineterminator="\n")
        md = directory / f"{prefix}{name}.md"
        md.write_text(
            f"**{course.TITLES[name]}**\n\n" + markdown_table(shown[name]) + "\n", encoding="utf-8"
        )
        written += [csv, md]
    fig = course_figure(
        course.vu_prevalence,
        course.patient_prevalence,
        threshold=course.threshold,
        level=course.level,
    )
    stem = Path(FIGURE).stem
    for ext in formats:
        path = directory / f"{prefix}{stem}.{ext}"
        fig.savefig(path, dpi=dpi, format=ext)
        written.append(path)
    return written
