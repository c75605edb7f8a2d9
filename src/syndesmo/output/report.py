"""Writing results: tables as CSV and Markdown, figures, ``report.md`` — all or nothing.

Output goes to a temporary directory beside the destination and is renamed into
place only when everything was written, so a failure never leaves a half-written
result (``atomic_output_dir``). An existing destination is replaced only if it is
empty or holds only files syndesmo wrote, unchanged since (listed in the marker file
``MARKER``); anything else is refused, so a mistyped ``--out`` cannot delete someone's
files. The mechanics are in ``syndesmo.output.atomic``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from syndesmo.analysis.provenance import CITATION_2012, PUBLISHED_2012, SHIPPED
from syndesmo.analysis.within import WITHIN_STEP, within_sentence
from syndesmo.fitting import registry
from syndesmo.numbers import fmt_p, fmt_ratio
from syndesmo.output import plots

# all-or-nothing output (re-exported: commands import them from here)
from syndesmo.output.atomic import (  # noqa: F401
    MARKER,
    OutputError,
    atomic_files,
    atomic_output_dir,
    check_destination,
    check_files,
)
from syndesmo.output.software import software_versions, versions_line
from syndesmo.vocabulary import exposure_label, outcome_label


def _cell(v, digits: int) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        if float(v).is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.{digits}g}" if abs(v) >= 10**digits else f"{v:.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    df: pd.DataFrame,
    digits: int = 3,
    index: bool = False,
    numeric: Sequence[bool] | None = None,
) -> str:
    """A GitHub-flavoured Markdown table of ``df``: the package's one Markdown writer.

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    digits : int
        Decimals of numbers (percentages — columns named ``pct…`` — get one).
    index : bool
        Write the index as the first column(s).
    numeric : sequence of bool, optional
        Which columns are right-aligned as numbers; default the numeric (not
        boolean) columns. Give it when numbers were already turned into text.

    Returns
    -------
    str
        The table, one line per row, without a final newline.
    """
    if index:
        df = df.reset_index()
    header = [str(c) for c in df.columns]
    if numeric is None:
        numeric = [
            pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
            for c in df.columns
        ]
    lines = [
        "| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
        "|" + "|".join("---:" if n else ":---" for n in numeric) + "|",
    ]
    pct = [str(c).startswith("pct") for c in df.columns]
    for row in df.itertuples(index=False):
        cells = [
            f"{v:.1f}"
            if p and isinstance(v, (float, np.floating)) and np.isfinite(v)
            else _cell(v, digits)
            for v, p in zip(row, pct, strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(
    df: pd.DataFrame, directory: str | os.PathLike, name: str, digits: int = 3
) -> list[Path]:
    """Write ``df`` as ``name.csv`` (full precision) and ``name.md``; returns the paths."""
    directory = Path(directory)
    csv = directory / f"{name}.csv"
    md = directory / f"{name}.md"
    df.to_csv(csv, index=False, lineterminator="\n")
    md.write_text(markdown_table(df, digits) + "\n", encoding="utf-8")
    return [csv, md]


# ---------------------------------------------------------------------------
# the reproduction on disk

#: Tables written by ``write_reproduction``: file name → (attribute or descriptive key, title).
FIGURES = {"forest": "forest_plot", "spine": "spine_map"}
#: Figure formats ``write_reproduction`` writes unless told otherwise.
DEFAULT_FORMATS = ("png", "pdf")
#: Formats a figure can be written in (matplotlib's back ends for them).
FIGURE_FORMATS = ("png", "pdf", "svg")


def write_reproduction(
    rep, out: str | os.PathLike, *, dpi: int = 200, formats: Sequence[str] = DEFAULT_FORMATS
) -> list[Path]:
    """Write every table (CSV + Markdown), the figures and ``report.md`` into ``out``.

    All-or-nothing: files go to a temporary directory renamed into place at the end
    (``atomic_output_dir``). Each figure is written in every format of ``formats``
    (``FIGURE_FORMATS``). Returns the paths written, relative to ``out``.
    """
    formats = check_formats(formats)
    rep.settings["formats"] = list(formats)

    tables = reproduction_tables(rep)
    written: list[Path] = []
    out = Path(out)
    with atomic_output_dir(out) as tmp:
        for name, (_title, df) in tables.items():
            written += write_table(df, tmp, name)
        written += _write_figures(rep, tmp, dpi, formats)
        if getattr(rep, "course", None) is not None:  # the MRI course: its own module
            written += _course_text().write_course(
                rep.course, tmp, prefix="course_", dpi=dpi, formats=formats
            )
        (tmp / "report.md").write_text(render_report(rep, tables), encoding="utf-8")
        written.append(tmp / "report.md")
    return [out / p.name for p in written]


def check_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    """Figure formats from ``"png,pdf"`` or a sequence; an unknown one raises ``ValueError``."""
    if isinstance(formats, str):
        formats = formats.split(",")
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    bad = [f for f in out if f not in FIGURE_FORMATS]
    if bad or not out:
        raise ValueError(
            f"figure format(s) {', '.join(bad) or '(none)'} not known; "
            f"choose from {', '.join(FIGURE_FORMATS)}"
        )
    return out


def _write_figures(rep, tmp: Path, dpi: int, formats: Sequence[str]) -> list[Path]:
    """The forest plot and the spine map (by arm when known) in every format."""
    forest = plots.forest_plot(rep.ladder, rep.patient if not rep.patient.empty else None)
    by_arm = getattr(rep, "spine_by_arm", None)
    threshold = rep.settings.get("threshold", 1)
    spine = (
        plots.spine_map_by_arm(by_arm, threshold=threshold)
        if by_arm is not None and not by_arm.empty
        else plots.spine_map(rep.spine, threshold=threshold)
    )
    written = []
    for key, fig in (("forest", forest), ("spine", spine)):
        for ext in formats:
            path = tmp / f"{FIGURES[key]}.{ext}"
            fig.savefig(path, dpi=dpi, format=ext)
            written.append(path)
    return written


def reproduction_tables(rep) -> dict[str, tuple[str, pd.DataFrame]]:
    """File stem → (title, table) for everything a reproduction writes."""
    tables: dict[str, tuple[str, pd.DataFrame]] = {}
    baseline = getattr(rep, "baseline", None)
    if baseline is not None and not baseline.empty:
        tables["table1_baseline"] = ("Table 1: baseline characteristics by arm", baseline)
    for key, counts in rep.descriptives.items():
        tables[f"descriptive_{key}"] = (counts.title or key.replace("_", " "), counts.table)
    tables["headline"] = ("Odds ratios (95% CI) at each step of the ladder", rep.headline)
    tables["ladder"] = ("The model ladder, every fit (tidy)", rep.ladder)
    tables["gee_vs_glmm"] = ("GEE beside GLMM: predicted and observed attenuation", rep.attenuation)
    tables["patient_level"] = ("Patient-level models", rep.patient)
    tables["vu_vs_patient"] = ("VU level beside patient level", rep.levels)
    tables["spine_profile"] = ("Inflammation and new syndesmophytes per VU", rep.spine)
    tables["excluded"] = ("VUs and patients left out, by analysis and reason", rep.ledger)
    tables["fits_to_note"] = (
        "Singular fits and fits that could not be made, with the reason",
        fits_to_note(rep.ladder) if len(rep.ladder) else pd.DataFrame(),
    )
    tables["forest_plot_data"] = (
        "The forest plot's rows: OR (95% CI) text, N and events, estimable or not",
        plots.forest_table(rep.ladder, rep.patient if not rep.patient.empty else None)
        if len(rep.ladder)
        else pd.DataFrame(),
    )
    return tables


# ---------------------------------------------------------------------------
# report.md: a results section with the numbers filled in


def _range(values: pd.Series, digits: int = 2) -> str:
    """``1.05 to 2.24`` (or the one value when they agree to ``digits``)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "—"
    lo, hi = v.min(), v.max()
    if abs(hi - lo) < 10**-digits:
        return f"{lo:.{digits}f}"
    return f"{lo:.{digits}f} to {hi:.{digits}f}"


def _ors(values: pd.Series, kind: str = "") -> str:
    """``the GLMM OR was 2.21`` for one value, ``GLMM ORs ranged from 1.05 to 2.24``."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if len(v) <= 1:
        return f"the {kind}OR was {_range(v)}"
    return f"{kind}ORs ranged from {_range(v)}"


def _n_sig(sub: pd.DataFrame) -> str:
    """``2 of 3 with p < 0.05``, counting only reported p-values (a posterior has none)."""
    p = pd.to_numeric(sub["p"], errors="coerce")
    if not p.notna().any():
        return "no p-values reported"
    return f"{int((p < 0.05).sum())} of {int(p.notna().sum())} with p < 0.05"


def _short_reason(note: object) -> str:
    """First clause of a fit's note, without its parenthesised numbers."""
    first = str(note).split(";")[0]
    return re.sub(r"\s*\([^)]*\)", "", first).strip()


def _steps_text(sub: pd.DataFrame, glmm: str, confounders: list[str]) -> str:
    a = sub[sub["step"].eq("a")]
    parts = [
        f"Ignoring the clustering of VUs within patients (step a, logistic regression), "
        f"{_ors(a['OR'])} ({_n_sig(a)})."
    ]
    g = sub[sub["engine"].eq(glmm) & sub["step"].ne(WITHIN_STEP)]
    b, c, d = (g[g["step"].eq(s)] for s in ("b", "c", "d"))
    if len(b):
        parts.append(
            f"With a patient random intercept (step b; random-intercept SD "
            f"{_sigma_words(b)}{_icc_words(b)}) "
            f"{_ors(b['OR'], 'GLMM ')} ({_n_sig(b)})"
        )
    if len(c):
        parts.append(f"after adjustment for treatment (c) {_ors(c['OR'])} ({_n_sig(c)})")
    if len(d):
        parts.append(
            f"and after further adjustment for {', '.join(confounders)} (d) "
            f"{_ors(d['OR'])} ({_n_sig(d)})."
        )
    text = parts[0] + " " + "; ".join(parts[1:])
    if not text.endswith("."):
        text += "."
    best = g[g["step"].eq(g["step"].max())]
    best = best.loc[pd.to_numeric(best["OR"], errors="coerce").dropna().index]
    if len(best):
        top = best.loc[best["OR"].astype(float).idxmax()]
        p_part = f", p {_p_words(top['p'])}" if np.isfinite(float(top["p"])) else ""
        text += (
            f" The largest fully adjusted OR was for VUs {top['exposure_label']}: "
            f"{fmt_ratio(top['OR'], top['lower'], top['upper'])}{p_part}."
        )
    notes = sub[sub["note"].fillna("").astype(str).str.len() > 0]
    failed = sub[pd.to_numeric(sub["OR"], errors="coerce").isna()]
    if len(failed):
        which = "; ".join(
            f"{r.engine} step {r.step}, VUs {r.exposure_label}: {_short_reason(r.note)}"
            for r in failed.itertuples(index=False)
        )
        text += (
            f" {len(failed)} fit(s) gave no estimate, shown as — in the table ({which}; "
            "full messages in the `note` column of ladder.csv)."
        )
    elif len(notes):
        text += f" {len(notes)} fit(s) carry a warning in the `note` column of ladder.csv."
    return text


def _sigma_words(rows: pd.DataFrame) -> str:
    """The random-intercept SDs of GLMM fits; singular fits are named, not shown as 0.00."""
    singular = np.array([is_singular(r) for r in rows.itertuples(index=False)], dtype=bool)
    if singular.all():
        return "estimated at 0 in every fit (singular)"
    text = _range(rows.loc[~singular, "sigma"])
    if singular.any():
        text += f"; estimated at 0 in {int(singular.sum())} more fit(s) (singular)"
    return text


def _icc_words(rows: pd.DataFrame) -> str:
    """``, latent ICC 0.29 to 0.34`` over the fits that are not singular (none if all are)."""
    keep = [not is_singular(r) for r in rows.itertuples(index=False)]
    return f", latent ICC {_range(rows.loc[keep, 'icc'])}" if any(keep) else ""


#: How the report describes a model, by the scale of its engine's coefficients
#: (``syndesmo.fitting.registry``), so every engine, new ones too, has words.
MODEL_WORDS: dict[str, str] = {
    registry.CONDITIONAL: "{label} with a patient random intercept, engine `{name}` ({how})",
    registry.MARGINAL: "{label} with an exchangeable working correlation within patients "
    "and robust standard errors",
    registry.WITHIN: "{label} regression with patients as strata (within-patient "
    "comparisons only), engine `{name}`",
    registry.UNCLUSTERED: "{label} regression ignoring the clustering",
}


def model_words(engine: str, method: str = "") -> str:
    """The report's words for a model fitted by ``engine``.

    Parameters
    ----------
    engine : str
        An engine name.
    method : str
        How the random effect is integrated (``"Laplace approximation"``), added for
        engines with quadrature.

    Returns
    -------
    str
        E.g. ``"GLMM with a patient random intercept, engine `native` (maximum
        likelihood, Laplace approximation)"``; the name itself for an unknown engine.
    """
    info = registry.REGISTRY.get(engine)
    if info is None:
        return f"engine `{engine}`"
    how = info.estimation + (f", {method}" if method and info.takes_nagq else "")
    return MODEL_WORDS[info.scale].format(label=info.label, name=info.name, how=how)


def _models_text(rep, engine: str, method: str) -> str:
    """The models of a reproduction: the GLMM, the engines beside it, the crude step."""
    engines = list(dict.fromkeys([engine, *rep.ladder.get("engine", pd.Series()).tolist()]))
    parts = [
        model_words(e, method)
        for e in engines
        if e != registry.CRUDE_ENGINE and (e == engine or e in registry.REGISTRY)
    ]
    return "; ".join([*parts, f"{model_words(registry.CRUDE_ENGINE)} as the crude step"])


def _p_words(p: float) -> str:
    s = fmt_p(p)
    if s.startswith("<"):
        return f"< {s[1:]}"
    return s if s == "—" else f"= {s}"


def _attenuation_text(rep) -> str:
    att = rep.attenuation
    lines = [
        "The GLMM and GEE answer different questions, so their odds ratios differ by design. "
        "The GLMM gives a *subject-specific* (conditional) OR: it compares two VUs of the same "
        "patient, i.e. with the same random intercept. GEE gives a *population-averaged* "
        "(marginal) OR: it compares inflamed with non-inflamed VUs across the whole population, "
        "averaged over patients. With a logit link, averaging the patient-specific logistic "
        "curves over a normal random intercept with SD σ flattens them, so the marginal log-OR "
        "is smaller than the conditional one, by approximately the factor "
        "1/√(1 + 0.346 σ²), where 0.346 = (16√3/(15π))² "
        "(Zeger, Liang & Albert, Biometrics 1988;44:1049–60). The approximation is best for "
        "common outcomes; for a rare outcome such as a new syndesmophyte in a VU the exact "
        "attenuation is weaker, so syndesmo also integrates the fitted GLMM numerically over "
        "its random-intercept distribution (column `OR_implied_marginal`). Both models are "
        "correct estimates of their own parameter; GEE ORs closer to 1 are expected, not a "
        "sign of a problem."
    ]
    if att is None or att.empty:
        return lines[0]
    new = att[att["outcome"].eq("new_syndesmophyte") & att["step"].eq("b")]
    new = new[np.isfinite(new["OR_glmm"]) & np.isfinite(new["OR_gee"])]
    if len(new):
        r = new.iloc[0]
        lines.append(
            f"Here the random-intercept SD for new syndesmophytes was {_sigma_value(r['sigma'])} "
            f"(step b, VUs {r['exposure_label']}), so the approximate factor is "
            f"{r['factor_predicted']:.2f}: the GLMM OR of {r['OR_glmm']:.2f} corresponds to a "
            f"population-averaged OR of about {r['OR_predicted_marginal']:.2f} by the "
            f"approximation and {r['OR_implied_marginal']:.2f} by exact integration; GEE gave "
            f"{r['OR_gee']:.2f}."
        )
    glmm_rows = rep.ladder[rep.ladder["scale"].eq("conditional")]
    strong = att.merge(
        glmm_rows[["outcome", "exposure", "step", "p"]], on=["outcome", "exposure", "step"]
    )
    reported = strong.empty or strong["p"].notna().any()  # a posterior reports none
    strong = strong[strong["p"] < 0.05]
    if len(strong):
        marginal = registry.engine_names(scale=registry.MARGINAL)
        gee_se = rep.ladder[rep.ladder["engine"].isin(marginal)][
            ["outcome", "exposure", "step", "se"]
        ]
        strong = strong.merge(gee_se, on=["outcome", "exposure", "step"], how="left")
        gap = np.log(strong["OR_gee"]) - np.log(strong["OR_implied_marginal"])
        lines.append(
            f"Over the {len(strong)} GLMM estimates with p < 0.05, the GEE log-OR minus the "
            f"log-OR implied by the GLMM was between {gap.min():+.3f} and {gap.max():+.3f} "
            f"(table `gee_vs_glmm`), against GEE standard errors of {_range(strong['se'])}. "
            "The two are estimated "
            "from the same data by different estimating equations, and GEE's exchangeable "
            "working correlation weights the patients differently, so exact agreement is not "
            "expected."
        )
    elif reported:
        lines.append(
            "No GLMM estimate reached p < 0.05 here; with ORs near 1 the attenuation is "
            "hard to see, since both log-ORs are close to 0."
        )
    else:
        lines.append(
            "The GLMM estimates here come with no p-values (a posterior), so none is "
            "singled out; the table `gee_vs_glmm` compares them all."
        )
    return " ".join(lines)


def _sigma_value(sigma: float) -> str:
    """``σ = 1.24``; a singular fit's SD is named, not shown as 0.00."""
    if np.isfinite(sigma) and sigma < 1e-4:
        return "σ = 0 (singular: the random-intercept SD is estimated at 0)"
    return f"σ = {sigma:.2f}"


def _patient_text(rep) -> str:
    if rep.patient is None or rep.patient.empty:
        return "No patient-level analysis was specified."
    out = []
    for r in rep.patient.itertuples(index=False):
        est = fmt_ratio(r.estimate, r.lower, r.upper)
        note = f" ({r.note})" if isinstance(r.note, str) and r.note else ""
        out.append(
            f"{r.exposure_label} against {r.outcome_label}: {r.measure} {est}, "
            f"p {_p_words(r.p)} ({r.n_patients} patients, {r.events} with the outcome){note}"
        )
    text = (
        "At the patient level (one row per patient; logistic or count regression adjusted "
        "for treatment): " + "; ".join(out) + "."
    )
    lv = rep.levels
    if lv is not None and not lv.empty:
        vu = lv[lv["level"].eq("VU")]
        if len(vu):
            text += (
                " For comparison, the VU-level ORs adjusted for treatment for the same "
                "exposures were "
                + "; ".join(
                    f"{r.model.split(',')[0]} {fmt_ratio(r.estimate, r.lower, r.upper)} "
                    f"({r.exposure_label})"
                    for r in vu.itertuples(index=False)
                )
                + ". A patient-level analysis throws away where in the spine the "
                "inflammation and the new bone are, so it has far less power for a "
                "VU-level effect."
            )
    return text


def _ledger_text(rep) -> str:
    led = rep.ledger
    if led is None or led.empty:
        return "No VU or patient was left out of any analysis."
    totals = led.groupby(["analysis", "exposure"], sort=False)["n_rows"].sum()
    first = led.groupby("analysis", sort=False).first()
    parts = []
    for name in pd.unique(led["analysis"]):
        sub = led[led["analysis"].eq(name) & led["exposure"].eq(first.loc[name, "exposure"])]
        reasons = "; ".join(
            f"{r.reason}: {r.n_rows}"
            + (f" ({int(r.n_patients)} patients)" if pd.notna(r.n_patients) else "")
            for r in sub.itertuples(index=False)
        )
        parts.append(f"- **{name}** ({sub['exposure'].iloc[0]}): {reasons}")
    del totals
    return (
        "Every VU or patient left out is counted, with the reason (table `excluded`, one "
        "block per analysis and exposure). For the first exposure of each analysis:\n\n"
        + "\n".join(parts)
    )


def render_report(rep, tables: dict[str, tuple[str, pd.DataFrame]] | None = None) -> str:
    """``report.md``: the reproduction as a results section, numbers filled in."""
    tables = tables or reproduction_tables(rep)
    ps, st = rep.panel_summary, rep.settings
    arms = ", ".join(f"{n} {arm}" for arm, n in ps["arms"].items())
    nagq = int(st.get("nagq") or 1)
    method = "Laplace approximation" if nagq == 1 else f"adaptive Gauss–Hermite, {nagq} points"
    readers = (
        f"{len(ps['readers'])} readers ({st.get('readers')})"
        if ps.get("readers")
        else "one reading"
    )
    md = [
        "# Reproduction: MRI activity and new bone at the vertebral-unit level",
        "",
        f"Data: `{ps['source']}`: {ps['n_patients']} patients ({arms}); {ps['n_vu_rows']} VU "
        f"rows ({ps['n_vus']} VUs); MRI (ASspiMRI-a) at weeks "
        f"{', '.join(map(str, ps['mri_weeks']))}; x-rays (mSASSS) at weeks "
        f"{', '.join(map(str, ps['xray_weeks']))}; {readers}. A VU counts as inflamed when "
        f"its ASspiMRI-a is ≥ {st.get('threshold', 1):g}.",
        "",
        f"Models: {_models_text(rep, str(st.get('engine')), method)}. Wald 95% confidence "
        f"intervals. Run time {rep.seconds:.1f} s.",
        "",
    ]
    md += _manuscript_opening(rep)
    md += ["## Patients and vertebral units", ""]
    for key, counts in rep.descriptives.items():
        title = counts.title or key.replace("_", " ")
        md += [f"**{title}**", ""]
        if counts.text:
            md += [counts.text, ""]
        md += [markdown_table(counts.table), ""]
    md += ["![Spine map by arm](spine_map.png)", ""]
    for outcome, title in (
        ("new_syndesmophyte", "New syndesmophytes at the VU level"),
        ("growth", "Growth of existing syndesmophytes at the VU level"),
    ):
        sub = rep.ladder[rep.ladder["outcome"].eq(outcome)]
        if sub.empty:
            continue
        spec = next((s for s in rep.specs if s.level == "vu" and s.outcome == outcome), None)
        conf = spec.confounders if spec else []
        glmm = spec.engine if spec else registry.DEFAULT_ENGINE
        first = sub.iloc[0]
        counts = sub.groupby("exposure", sort=False)[["n_vus", "events"]].first()
        events = (
            f"{first['events']} events among {first['n_vus']} VUs at risk in "
            f"{first['n_patients']} patients (exposure: {first['exposure_label']}"
            + (
                "; the counts of the other exposures differ with the MRI they need: table below"
                if counts["n_vus"].nunique() > 1
                else ""
            )
            + ")"
        )
        md += [f"## {title}", "", f"{events}. " + _steps_text(sub, glmm, conf), ""]
        within = within_sentence(sub, glmm)
        md += [within, ""] if within else []
        md += [markdown_table(comparison_table(rep, outcome)), ""]
    md += _manuscript_results(rep)
    md += ["## GEE beside GLMM", "", _attenuation_text(rep), ""]
    if rep.attenuation is not None and not rep.attenuation.empty:
        att = rep.attenuation[rep.attenuation["step"].eq("b")][
            [
                "outcome",
                "exposure",
                "OR_glmm",
                "sigma",
                "OR_predicted_marginal",
                "OR_implied_marginal",
                "OR_gee",
            ]
        ]
        md += [
            "Step b (patient random intercept, no covariates); all steps are in `gee_vs_glmm.csv`.",
            "",
            markdown_table(att, digits=2),
            "",
        ]
    md += ["## Patient level", "", _patient_text(rep), ""]
    if rep.levels is not None and not rep.levels.empty:
        lv = rep.levels.assign(
            estimate=[fmt_ratio(r.estimate, r.lower, r.upper) for r in rep.levels.itertuples()],
            p=[fmt_p(p) for p in rep.levels["p"]],
        )[
            [
                "level",
                "exposure_label",
                "outcome_label",
                "model",
                "measure",
                "estimate",
                "p",
                "n_units",
                "events",
            ]
        ]
        md += [markdown_table(lv), ""]
    if getattr(rep, "course", None) is not None:
        md += _course_text().report_section(rep.course, prefix="course_")
    md += ["## VUs and patients left out", "", _ledger_text(rep), ""]
    read = [*ps.get("input_left_out", []), *ps.get("input_notes", [])]
    if read:
        md += ["While reading the input files:", "", *(f"- {n}" for n in read), ""]
    md += ["## Files", ""]
    md += [f"- `{name}.csv` / `{name}.md`: {title}" for name, (title, _df) in tables.items()]
    formats = rep.settings.get("formats") or DEFAULT_FORMATS
    md += [f"- `{stem}.{ext}`" for stem in FIGURES.values() for ext in formats]
    md += ["", "Specs: " + ", ".join(f"`{s.name}`" for s in rep.specs), ""]
    adapted = rep.settings.get("spec_notes") or []
    if adapted:
        md += ["The shipped specs were adapted to this panel:", ""]
        md += [*(f"- {n}" for n in adapted), ""]
    md += ["## Software", "", *software_text(rep), ""]
    return "\n".join(md)


def _course_text():
    """``syndesmo.output.course_text``, imported on use: it imports ``markdown_table`` from here."""
    from syndesmo.output import course_text

    return course_text


def _manuscript_opening(rep) -> list[str]:
    """The data statement (synthetic data and their truth) and Table 1."""
    md = []
    statement = data_statement(rep)
    if statement:
        md += [statement, ""]
    baseline = getattr(rep, "baseline", None)
    if baseline is not None and not baseline.empty:
        md += [
            "## Table 1. Baseline characteristics by arm",
            "",
            "Binary and categorical characteristics as n (%) of the patients with the value "
            "recorded; continuous ones as median [interquartile range] (column `statistic`). "
            "Also in `table1_baseline.csv` / `.md`.",
            "",
            markdown_table(baseline, numeric=[False] * baseline.shape[1]),
            "",
        ]
    return md


def _manuscript_results(rep) -> list[str]:
    """After the ladders: what the 2012 column means, the forest plot, fits to note."""
    outcomes = [o for o in PUBLISHED_2012 if rep.ladder["outcome"].eq(o).any()]
    md = [published_note(outcomes), ""] if outcomes else []
    md += ["![Forest plot](forest_plot.png)", ""]
    md += ["## Singular fits and fits that could not be made", "", *fits_text(rep.ladder), ""]
    return md


def analysis_label(outcome: str) -> str:
    """Words for an outcome, as in the headline table."""

    return outcome_label(outcome)


# --------------------------------------------------------------------------- power tables

#: Columns of a power table shown in Markdown and on screen (after the grid columns):
#: the power with its Monte Carlo CI, then the fit health of every point.
POWER_COLUMNS = [
    "analysis",
    "power",
    "power_lower",
    "power_upper",
    "mean_or",
    "median_or",
    "coverage",
    "failed_rate",
    "not_fitted_rate",
    "nonconverged_rate",
    "error_rate",
    "singular_rate",
    "separation_rate",
    "stop_reason",
]
#: Columns of a sample-size / detectable-effect answer in Markdown and on screen.
SEARCH_COLUMNS = [
    "analysis",
    "value",
    "power",
    "power_lower",
    "power_upper",
    "below",
    "power_below",
    "reached",
    "failed_rate",
    "not_fitted_rate",
    "nonconverged_rate",
    "singular_rate",
    "separation_rate",
    "note",
]


def power_table_columns(table: pd.DataFrame, grid: Sequence[str]) -> list[str]:
    """The grid columns, then ``POWER_COLUMNS`` present in ``table`` (``stop_reason``
    only when some point stopped early)."""
    cols = [*grid, *(c for c in POWER_COLUMNS if c in table.columns)]
    if "stop_reason" in cols and not table["stop_reason"].astype(bool).any():
        cols.remove("stop_reason")
    return cols


def power_markdown(table: pd.DataFrame, grid: Sequence[str], header: str) -> str:
    """A power table (``power_curve`` or a search's points) as Markdown with its header
    (which should state the failure rule) and a line per point that stopped early."""
    text = header.rstrip() + "\n\n" + markdown_table(table[power_table_columns(table, grid)])
    if "stopped_early" in table.columns and table["stopped_early"].any():
        text += "\n\nStopped early:\n" + "\n".join(
            f"- {', '.join(f'{g} {r[g]}' for g in grid)}, {r['analysis']}: {r['stop_reason']}"
            for _, r in table[table["stopped_early"]].iterrows()
        )
    return text + "\n"


def search_markdown(result) -> str:
    """A ``SearchResult`` (``syndesmo.powersim.search``) as Markdown: what was searched,
    how, and the answer per analysis."""
    words = "number of patients" if result.over == "n_patients" else "conditional OR"
    head = (
        f"Smallest {words} reaching power {result.target:g} (alpha {result.alpha:g}, "
        f"two-sided Wald), {result.n_sims} simulated studies per point with the same seeds "
        f"at every point (common random numbers); bracketing then bisection, resolution "
        f"{result.step:g}. 'below' is the value one step less and its power. Monte Carlo "
        f"95% CI: Wilson. Fit health: {result.table['failure_rule'].iloc[0]}.\n\n"
    )
    cols = [c for c in SEARCH_COLUMNS if c in result.table.columns]
    return head + markdown_table(result.table[cols]) + "\n"


# ---------------------------------------------------------------------------
# the manuscript: data provenance, the published ORs, fits to note, software

#: Column of the comparison tables with the 2012 abstract's ORs.
PUBLISHED_COLUMN = "2012 published (abstract)"
#: Column with the data-generating model's true conditional OR (synthetic data).
TRUTH_COLUMN = "true OR (simulation)"


def data_statement(rep) -> str:
    """A sentence on where the data came from; for synthetic data, its true values."""
    prov = getattr(rep, "provenance", None)
    if prov is None or not prov.synthetic:
        return ""
    t = prov.truth
    what = (
        "**These are synthetic data: the shipped synthetic cohort** (no real patient; "
        if prov.kind == SHIPPED
        else "**These are synthetic data, simulated by syndesmo** ("
    )
    what += f"{prov.evidence}"
    if t.get("spec_file"):
        what += f"; spec `{Path(t['spec_file']).name}`"
    if t.get("seed") is not None:
        what += f", seed {t['seed']}"
    what += ")."
    if "or_new" not in t:
        return what
    exposure = exposure_label(t["exposure"]) if t.get("exposure") else "the exposure"
    words = (
        f" The data-generating model's true values: conditional OR {t['or_new']:g} for a new "
        f"syndesmophyte in VUs {exposure} (ASspiMRI-a ≥ {t.get('threshold', 1):g}), "
        f"OR {t['or_growth']:g} for growth"
    )
    if "or_arm_new" in t:
        words += (
            f", direct OR of infliximab {t['or_arm_new']:g} (new) and "
            f"{t['or_arm_growth']:g} (growth)"
        )
    if "sd_patient" in t:
        words += f", patient random-intercept SD {t['sd_patient']:g} (logit scale)"
    words += (
        ". Other exposures have no effect of their own in the model; their ORs reflect "
        "how they go with the true exposure. The ORs estimated here are set beside these "
        "true values and beside the published ones of the analysis this cohort imitates "
        f"({CITATION_2012})."
    )
    return what + words


def comparison_table(rep, outcome: str) -> pd.DataFrame:
    """The headline rows of ``outcome`` with the true OR (synthetic data) and the 2012
    abstract's published ORs beside them (``PUBLISHED_2012``)."""
    head = rep.headline[rep.headline["outcome"].eq(analysis_label(outcome))]
    head = head.drop(columns=["outcome"]).reset_index(drop=True)
    prov = getattr(rep, "provenance", None)
    if prov is not None and prov.synthetic and "or_new" in prov.truth:
        t = prov.truth
        true_or = t["or_new"] if outcome == "new_syndesmophyte" else t.get("or_growth")
        label = exposure_label(t["exposure"]) if t.get("exposure") else ""
        head[TRUTH_COLUMN] = [
            f"{true_or:g}" if true_or is not None and e == label else "no own effect"
            for e in head["exposure"]
        ]
    lo, hi, words = PUBLISHED_2012.get(outcome, (None, None, "not reported"))
    head[PUBLISHED_COLUMN] = f"{lo:.2f}–{hi:.2f}" if lo is not None else words
    return head


def published_note(outcomes) -> str:
    """What the 2012 column means, once, under the tables."""
    parts = [f"{outcome_label(o)}: {PUBLISHED_2012[o][2]}" for o in outcomes if o in PUBLISHED_2012]
    return (
        f"The column *{PUBLISHED_COLUMN}* gives what the abstract of {CITATION_2012} reports "
        "for the ASSERT trial (" + "; ".join(parts) + "); the abstract gives a range, not one "
        "OR per exposure, so the same range stands beside every exposure."
    )


def is_singular(row) -> bool:
    """A GLMM fit whose random-intercept SD is estimated at 0 (on the boundary)."""
    singular = getattr(row, "singular", False)
    sigma = pd.to_numeric(pd.Series([getattr(row, "sigma", np.nan)]), errors="coerce").iloc[0]
    return bool(singular is True or (singular is not None and singular == 1)) or (
        getattr(row, "scale", "") == registry.CONDITIONAL and np.isfinite(sigma) and sigma < 1e-4
    )


def fits_to_note(ladder: pd.DataFrame) -> pd.DataFrame:
    """The fits a reader must know about: singular fits and fits that gave no estimate.

    Returns one row per such fit: ``outcome``, ``exposure``, ``step``, ``engine``,
    ``problem`` (``singular`` or ``not estimable``) and ``reason``.
    """
    rows = []
    for r in ladder.itertuples(index=False):
        estimate = pd.to_numeric(pd.Series([r.OR, r.lower, r.upper]), errors="coerce")
        if not np.isfinite(estimate.iloc[0]):
            problem, reason = "not estimable", _short_reason(r.note) or "no estimate"
        elif not plots.estimable(*estimate):
            problem = "not estimable"
            reason = "estimate or interval not finite or beyond 1/1000–1000: the data do not "
            reason += "bound it (e.g. no events or no non-events where the information is)"
        elif is_singular(r):
            problem = "singular"
            reason = "the random-intercept SD is estimated at 0"
        else:
            continue
        rows.append(
            {
                "outcome": outcome_label(r.outcome),
                "exposure": r.exposure_label,
                "step": r.step,
                "engine": r.engine,
                "problem": problem,
                "reason": reason,
            }
        )
    cols = ["outcome", "exposure", "step", "engine", "problem", "reason"]
    return pd.DataFrame(rows, columns=cols)


def fits_text(ladder: pd.DataFrame) -> list[str]:
    """The report's lines on singular fits and fits that could not be made."""
    notes = fits_to_note(ladder)
    if notes.empty:
        return ["Every fit gave an estimate, and no GLMM fit was singular."]
    lines = []
    for r in notes.itertuples(index=False):
        head = (
            "singular: the random-intercept SD is estimated at 0"
            if r.problem == "singular"
            else f"not estimable: {r.reason}"
        )
        lines.append(f"- {r.outcome}, VUs {r.exposure}, step {r.step} ({r.engine}): {head}")
    return [
        "Fits named here are marked in the tables (— for no estimate) and in the forest plot "
        "(“not estimable”); a singular fit's OR equals the logistic regression's without "
        "the random intercept.",
        "",
        *lines,
    ]


def software_text(rep) -> list[str]:
    """The report's last lines: software versions and the command that made it."""
    engines = list(rep.ladder.get("engine", pd.Series(dtype=str)).dropna().unique())
    if rep.patient is not None and not rep.patient.empty and "engine" in rep.patient:
        engines += list(rep.patient["engine"].dropna().unique())
    command = rep.settings.get("command") or (
        "Python: syndesmo.analysis.reproduction.run_reproduction, then "
        "syndesmo.output.report.write_reproduction"
    )
    return [
        f"Software: {versions_line(software_versions(engines))}.",
        "",
        f"Made by: `{command}`",
    ]
