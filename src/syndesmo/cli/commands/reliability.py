"""``syndesmo reliability``: the readers' agreement on a VU panel, as manuscript tables."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

NAME = "reliability"
HELP = "inter-reader reliability: ICC, limits of agreement, smallest detectable change, kappa"
DESCRIPTION = """\
Inter-reader reliability of a VU panel read by two or more readers (a 'reader'
column in the VU table), as Markdown tables for a manuscript:

  icc        ICC(2,1) (two-way random effects, absolute agreement, single
             reader) and ICC(3,1) (two-way mixed effects, consistency, single
             reader) of the patient totals of the ASspiMRI-a and the mSASSS:
             status at each visit and change (last minus first visit); for all
             readers and, with more than two, for each reader pair
             (Shrout & Fleiss 1979; 95% CIs, F test)
  agreement  Bland-Altman mean difference, SD of the differences and 95% limits
             of agreement per reader pair; for change scores the smallest
             detectable change SDC = z x SD_diff / (sqrt(2) x sqrt(k)), z = 1.96
             (95%) or 1.28 (80%), for one reader (k = 1) and for the mean of the
             k readers (Bruynesteyn et al., Ann Rheum Dis 2005)
  kappa      Cohen's kappa per reader pair (Fleiss' kappa for all readers when
             there are more than two) of the status of each VU: inflamed
             (ASspiMRI-a >= --threshold) at each MRI week, syndesmophyte present
             (a corner >= 2) at each x-ray week
  ledger     patients and VUs left out of each comparison, and why

Readers are compared on the same units: a patient whose readers did not all
score the same VUs (corners) is left out of that measure and counted in the
ledger. Kappa intervals treat VUs as independent and are too narrow for VUs
clustered in patients.

Input: a VU table (--vu) with a 'reader' column and a patient table
(--patients), CSV or Parquet; or one VU file that carries the patient columns,
if --patients is left out. A panel with one reader, or no 'reader' column, is
an error.

With --out DIR the tables are also written as DIR/<table>.csv (full precision)
and DIR/<table>.md, plus DIR/reliability.md with all of them,
DIR/differences.csv (the points of the Bland-Altman plots) and, per reader
pair, DIR/bland_altman_<a>_vs_<b>.png and .pdf; DIR is replaced only if it is
empty or was written by syndesmo, and all files appear together or not at all.

example:
  syndesmo simulate --spec data/synthetic/assert_like.toml --seed 1 --out cohort/
  syndesmo reliability --vu cohort/vu.csv --patients cohort/patients.csv
  syndesmo reliability --vu cohort/vu.csv --patients cohort/patients.csv \\
      --threshold 2 --out cohort/reliability/
"""

#: Tables in the order printed; names are also the file names with --out.
TABLES = ("icc", "agreement", "kappa", "ledger")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--vu", required=True, metavar="FILE", help="VU table with a 'reader' column"
    )
    parser.add_argument(
        "--patients",
        default=None,
        metavar="FILE",
        help="patient table (.csv or .parquet); default: patient columns in the VU file",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=1.0,
        metavar="T",
        help="ASspiMRI-a score that counts as inflamed for kappa (score >= T; default: 1)",
    )
    parser.add_argument(
        "--level",
        type=float,
        default=0.95,
        metavar="L",
        help="confidence level of the ICC and kappa intervals (default: 0.95)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="also write the tables (CSV, Markdown) and Bland-Altman plots (PNG, PDF) into DIR",
    )


#: Column headings of the two ICC types: the type in words, as a manuscript prints it.
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
    from syndesmo.numbers import fmt_p

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
    from syndesmo.output.report import markdown_table

    if not len(df):
        return f"## {title}\n\n(none)\n"
    lines = markdown_table(df).split("\n")
    # numbers shown as text stay right-aligned like the other numbers
    lines[1] = "|" + "|".join(":---" if c in _TEXT_COLUMNS else "---:" for c in df.columns) + "|"
    body = "\n".join(lines)
    return f"## {title}\n\n{body}\n"


def render(rel, header: str) -> str:
    """All tables as one Markdown document, with the notes on methods."""
    shown = display_tables(rel)
    body = "\n".join(table_markdown(shown[name], rel.TITLES[name]) for name in TABLES)
    notes = "\n".join(f"- {note}" for note in rel.notes)
    return f"# {header}\n\n{body}\n## Notes\n\n{notes}\n"


def _file_label(reader: object) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(reader))


def run(args: argparse.Namespace) -> int:
    from syndesmo.analysis.reliability import reliability
    from syndesmo.output.reliability_plots import bland_altman_figure
    from syndesmo.output.report import atomic_output_dir, check_destination
    from syndesmo.panel.tables import load_panel

    if args.out is not None:
        check_destination(args.out)  # before any work, so a bad --out fails first
    panel = load_panel(args.vu, args.patients)
    rel = reliability(panel, threshold=args.threshold, level=args.level)
    files = f"{args.vu}" + (f" + {args.patients}" if args.patients else "")
    header = (
        f"Inter-reader reliability of {files}: {panel.n_patients} patients, readers "
        f"{', '.join(map(str, rel.readers))}, MRI weeks {panel.mri_weeks}, x-ray weeks "
        f"{panel.xray_weeks}"
    )
    text = render(rel, header)
    print(text, end="")
    if args.out is not None:
        shown = display_tables(rel)
        written = 0
        with atomic_output_dir(args.out) as tmp:
            for name, table in rel.tables().items():
                table.to_csv(tmp / f"{name}.csv", index=False, lineterminator="\n")
                (tmp / f"{name}.md").write_text(
                    table_markdown(shown[name], rel.TITLES[name]), encoding="utf-8"
                )
                written += 2
            rel.differences.to_csv(tmp / "differences.csv", index=False, lineterminator="\n")
            (tmp / "reliability.md").write_text(text, encoding="utf-8")
            written += 2
            for a, b in rel.pairs:
                fig = bland_altman_figure(rel.differences, rel.agreement, readers=f"{a} vs {b}")
                stem = f"bland_altman_{_file_label(a)}_vs_{_file_label(b)}"
                fig.savefig(tmp / f"{stem}.png", dpi=200)
                fig.savefig(tmp / f"{stem}.pdf")
                written += 2
        print(f"wrote {written} files to {Path(args.out)}")
    return 0
