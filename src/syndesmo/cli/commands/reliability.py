"""``syndesmo reliability``: the readers' agreement on a VU panel, as manuscript tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from syndesmo.cli.commands._input import add_panel_options, add_threshold_option, load

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
(--patients): CSV, Parquet, Stata, SAS, SPSS or Excel; or one VU file that
carries the patient columns, if --patients is left out. A panel with one
reader, or no 'reader' column, is an error.

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
    add_panel_options(parser, required=True, vu_needs="a 'reader' column")
    add_threshold_option(parser, " for kappa")
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
def _file_label(reader: object) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(reader))


def run(args: argparse.Namespace) -> int:
    from syndesmo.analysis.reliability import reliability
    from syndesmo.output.reliability_plots import bland_altman_figure
    from syndesmo.output.reliability_text import display_tables, render, table_markdown
    from syndesmo.output.report import atomic_output_dir, check_destination

    if args.out is not None:
        check_destination(args.out)  # before any work, so a bad --out fails first
    panel = load(args, args.vu, args.patients)
    rel = reliability(panel, threshold=args.threshold, level=args.level)
    files = f"{args.vu}" + (f" + {args.patients}" if args.patients else "")
    header = (
        f"Inter-reader reliability of {files}: {panel.n_patients} patients, readers "
        f"{', '.join(map(str, rel.readers))}, MRI weeks {panel.mri_weeks}, x-ray weeks "
        f"{panel.xray_weeks}"
    )
    text = render(rel, header, TABLES)
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
