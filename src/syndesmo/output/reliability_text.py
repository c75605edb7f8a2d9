"""The reliability tables of ``syndesmo reliability`` as text a manuscript takes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from syndesmo.numbers import fmt_p
from syndesmo.output.report import markdown_table

_ICC_WORDS = {
    "ICC2": "ICC(2,1), absolute agreement",
    "ICC3": "ICC(3,1), consistency",
}
#: Text columns of the printed tables (left-aligned); all others hold numbers.
_TEXT_COLUMNS = {"score", "measure", "readers", "VU status", "method", "step", "reason"}


def _finite(value: object) -> bool:
    return value is not None and value is not pd.NA and bool(np.isfinite(float(value)))  # type: ignore[arg-type]


def _num(value: object, digits: int) -> str:
    """A number to ``digits`` decimals with a typographic minus; ``—`` when missing."""
    if not _finite(value):
        return "—"
    return f"{float(value):.{digits}f}".replace("-", "−")  # type: ignore[arg-type]


def _coefficient_digits(values: list, digits: int = 2) -> int:
    """Decimals for a coefficient in [−1, 1] and its limits: two, or as many more
    (up to four) as needed so that none below 1 prints as a perfect 1.00."""
    below_one = [abs(float(v)) for v in values if _finite(v) and abs(float(v)) < 1.0]
    while digits < 4 and any(round(v, digits) >= 1.0 for v in below_one):
        digits += 1
    return digits


def _interval(est: object, lo: object, hi: object) -> str:
    """A coefficient with its interval, ``0.89 (0.80 to 0.94)``; ``—`` when missing."""
    if not _finite(est):
        return "—"
    digits = _coefficient_digits([est, lo, hi])
    if not (_finite(lo) and _finite(hi)):
        return _num(est, digits)
    return f"{_num(est, digits)} ({_num(lo, digits)} to {_num(hi, digits)})"


def display_tables(rel) -> dict[str, pd.DataFrame]:
    """The result tables as text a person can paste into a manuscript."""

    level = f"{round(rel.level * 100)}%"
    icc = rel.icc
    keys = ["score", "measure", "readers"]
    parts = []
    for (score, measure, readers), sub in icc.groupby(keys, sort=False):
        by_type = sub.set_index("type")
        row = {"score": score, "measure": measure, "readers": readers}
        row["n"] = int(sub["n_patients"].iloc[0])
        for kind in ("ICC2", "ICC3"):
            r = by_type.loc[kind]
            row[f"{_ICC_WORDS[kind]} ({level} CI)"] = _interval(r["icc"], r["ci_low"], r["ci_high"])
        r = by_type.loc["ICC2"]
        row["F (df)"] = "—" if pd.isna(r["F"]) else f"{r['F']:.1f} ({r['df1']}, {r['df2']})"
        row["p"] = fmt_p(float(r["p"]))
        parts.append(row)
    icc_d = pd.DataFrame(parts)
    ag = rel.agreement
    ag_d = pd.DataFrame(
        {
            "score": ag["score"],
            "measure": ag["measure"],
            "readers": ag["readers"],
            "n": ag["n_patients"],
            "mean difference": [_num(v, 2) for v in ag["mean_difference"]],
            "SD of differences": [_num(v, 2) for v in ag["sd_difference"]],
            "95% limits of agreement": [
                "—" if not np.isfinite(lo) else f"{_num(lo, 2)} to {_num(hi, 2)}"
                for lo, hi in ag[["loa_low", "loa_high"]].to_numpy(dtype=float)
            ],
            "SDC 95%, one reader": [_num(v, 2) for v in ag["sdc_95_one_reader"]],
            "SDC 95%, mean of readers": [_num(v, 2) for v in ag["sdc_95_mean_of_readers"]],
            "SDC 80%, one reader": [_num(v, 2) for v in ag["sdc_80_one_reader"]],
            "SDC 80%, mean of readers": [_num(v, 2) for v in ag["sdc_80_mean_of_readers"]],
        }
    )
    ka = rel.kappa
    ka_d = pd.DataFrame(
        {
            "VU status": ka["status"],
            "week": ka["week"],
            "readers": ka["readers"],
            "method": ka["method"],
            "VUs": ka["n_vus"],
            "patients": ka["n_patients"],
            "% positive": [_num(v, 1) for v in ka["pct_positive"]],
            "% agreement": [_num(v, 1) for v in ka["pct_agreement"]],
            f"kappa ({level} CI)": [
                _interval(k, lo, hi)
                for k, lo, hi in ka[["kappa", "ci_low", "ci_high"]].to_numpy(dtype=float)
            ],
        }
    )
    ledger = rel.ledger.to_frame()
    return {"icc": icc_d, "agreement": ag_d, "kappa": ka_d, "ledger": ledger}


def table_markdown(df: pd.DataFrame, title: str) -> str:
    """One table as Markdown under its title."""
    if not len(df):
        return f"## {title}\n\n(none)\n"
    lines = markdown_table(df).split("\n")
    # numbers shown as text stay right-aligned like the other numbers
    lines[1] = "|" + "|".join(":---" if c in _TEXT_COLUMNS else "---:" for c in df.columns) + "|"
    body = "\n".join(lines)
    return f"## {title}\n\n{body}\n"


def render(rel, header: str, order: tuple[str, ...]) -> str:
    """All tables as one Markdown document, with the notes on methods."""
    shown = display_tables(rel)
    body = "\n".join(table_markdown(shown[name], rel.TITLES[name]) for name in order)
    notes = "\n".join(f"- {note}" for note in rel.notes)
    return f"# {header}\n\n{body}\n## Notes\n\n{notes}\n"
