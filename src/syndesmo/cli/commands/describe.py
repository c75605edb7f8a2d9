"""``syndesmo describe``: the descriptive counts of a VU panel as Markdown tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from syndesmo.cli.commands._input import (
    add_panel_options,
    add_threshold_option,
    default_cohort,
    load,
)
from syndesmo.vocabulary import READER_RULES

NAME = "describe"
HELP = "print the descriptive counts of a VU panel: inflamed VUs, new syndesmophytes"
DESCRIPTION = """\
Validate a VU panel and print the descriptive counts of the paper's first
results (van der Heijde et al., Ann Rheum Dis 2012), as Markdown tables:

  inflammation      VUs (and patients) with MRI inflammation at each MRI week,
                    by arm and overall
  events            new syndesmophytes in VUs with and without inflammation at
                    each MRI week, with the risks and crude risk/odds ratios
  share_uninflamed  the share of all new syndesmophytes that arose in VUs not
                    inflamed at each week, and in VUs never inflamed
  ledger            VUs left out of the event tables, and why

Inflamed means ASspiMRI-a >= --threshold. The event tables use exactly the VUs
a model would use (no corner >= 2 at the first x-ray, both x-rays and the MRI
present); everything left out is counted in the ledger.

Input: a VU table (--vu) and a patient table (--patients): CSV (separator , ;
tab or |), Parquet, Stata .dta, SAS .sas7bdat/.xpt, SPSS .sav or Excel .xlsx;
or one VU file that carries the patient columns (arm, covariates), if
--patients is left out. Without --vu the shipped synthetic cohort
(data/synthetic) is described. A long export is turned into these files by
`syndesmo import`. Errors name the file, line, column and value.

With --out DIR the tables are also written as DIR/<table>.csv (full precision)
and DIR/<table>.md, plus DIR/describe.md with all of them; DIR is replaced only
if it is empty or was written by syndesmo.

example:
  syndesmo describe
  syndesmo describe --vu cohort/vu.csv --patients cohort/patients.csv
  syndesmo describe --vu cohort/vu.csv --patients cohort/patients.csv \\
      --threshold 2 --readers agree --out cohort/describe/
"""

#: Tables in the order printed; names are also the file names with --out.
TABLES = ("inflammation", "events", "share_uninflamed", "ledger")  # also the file names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_panel_options(parser)
    add_threshold_option(parser)
    parser.add_argument(
        "--readers",
        choices=READER_RULES,
        default="mean",
        help="with two readers: mean of their scores, agreement of both, or each "
        "reader separately (default: mean)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="also write each table as CSV and Markdown into DIR",
    )


def run(args: argparse.Namespace) -> int:
    from syndesmo.analysis.describe import report_tables
    from syndesmo.output.describe_text import ledger_table, render, table_markdown
    from syndesmo.output.report import atomic_output_dir, check_destination

    if args.out is not None:
        check_destination(args.out)  # before any work, so a bad --out fails first
    if args.patients and not args.vu:
        from syndesmo.cli.app import UsageError

        raise UsageError(f"syndesmo {NAME}", "--patients needs --vu")
    vu_path, patients_path = (args.vu, args.patients) if args.vu else default_cohort()
    panel = load(args, vu_path, patients_path)
    tables = dict(report_tables(panel, threshold=args.threshold, readers=args.readers))
    tables["ledger"] = ledger_table(tables)
    files = f"{vu_path}" + (f" + {patients_path}" if patients_path else "")
    header = (
        f"Descriptive counts of {files}: {panel.n_patients} patients, {len(panel.vu)} VU rows, "
        f"MRI weeks {panel.mri_weeks}, x-ray weeks {panel.xray_weeks}"
    )
    text = render(tables, header, TABLES)
    print(text, end="")
    if args.out is not None:
        with atomic_output_dir(args.out) as tmp:
            for name in TABLES:
                tables[name].table.to_csv(tmp / f"{name}.csv", index=False, lineterminator="\n")
                (tmp / f"{name}.md").write_text(table_markdown(tables[name]), encoding="utf-8")
            (tmp / "describe.md").write_text(text, encoding="utf-8")
        print(f"wrote {len(TABLES) * 2 + 1} files to {Path(args.out)}")
    return 0
