"""What every command that reads a panel shares: ``--vu``, ``--patients``,
``--threshold``, ``--decimal``, ``--missing-codes`` and the shipped cohort used when no
file is given."""

from __future__ import annotations

import argparse
from pathlib import Path

#: The file types ``load_panel`` reads, as the help of ``--vu`` lists them.
FILE_TYPES = "CSV, Parquet, Stata, SAS, SPSS, Excel"


def add_panel_options(
    parser: argparse.ArgumentParser, *, required: bool = False, vu_needs: str = ""
) -> None:
    """Add ``--vu`` and ``--patients`` (the panel's two tables), then the input options.

    ``required``: no default cohort, ``--vu`` must be given; ``vu_needs``: what the VU
    table must hold beyond the usual columns (for the help), e.g. ``"a 'reader'
    column"``.
    """
    where = "" if required else "; default: the shipped cohort"
    needs = f", with {vu_needs}" if vu_needs else ""
    parser.add_argument(
        "--vu",
        required=required,
        metavar="FILE",
        help=f"VU table{needs} ({FILE_TYPES}){where}",
    )
    parser.add_argument(
        "--patients",
        default=None,
        metavar="FILE",
        help="patient table (same file types); omit if the VU file carries the patient columns",
    )
    add_input_options(parser)


def add_threshold_option(parser: argparse.ArgumentParser, purpose: str = "") -> None:
    """Add ``--threshold``: the ASspiMRI-a score from which a VU counts as inflamed."""
    parser.add_argument(
        "--threshold",
        type=float,
        default=1.0,
        metavar="T",
        help=f"ASspiMRI-a score that counts as inflamed{purpose} (score >= T; default: 1)",
    )


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--decimal`` and ``--missing-codes`` (see ``syndesmo.panel.tables.load_panel``)."""
    parser.add_argument(
        "--decimal",
        choices=(".", ","),
        default=".",
        help="decimal mark of numbers in CSV input (default: '.'); with ',' fields may be "
        "separated by ';' (a European export)",
    )
    parser.add_argument(
        "--missing-codes",
        default="",
        metavar="CODES",
        help="values to read as missing, comma separated, e.g. --missing-codes=-99,. ; "
        "'common' for -99,-9,999,. (default: none, and such values are refused where a "
        "range says they cannot be real)",
    )


def missing_codes(args: argparse.Namespace) -> list[str] | bool:
    """The ``missing_codes`` argument of ``load_panel`` from ``--missing-codes``."""
    text = (getattr(args, "missing_codes", "") or "").strip()
    if text == "common":
        return True
    return [c.strip() for c in text.split(",") if c.strip()]


def load(args: argparse.Namespace, vu, patients):
    """``load_panel`` with the input options of ``args``."""
    from syndesmo.panel.tables import load_panel

    return load_panel(
        vu, patients, decimal=getattr(args, "decimal", "."), missing_codes=missing_codes(args)
    )


def default_cohort() -> tuple[Path, Path]:
    """The shipped synthetic cohort: ``data/synthetic`` of the source tree, else the
    copy in the package data (``syndesmo/_data/synthetic``)."""
    from syndesmo.errors import PanelError
    from syndesmo.resources import shipped_cohort_candidates

    candidates = shipped_cohort_candidates()
    for c in candidates:
        if (c / "vu.csv").is_file() and (c / "patients.csv").is_file():
            return c / "vu.csv", c / "patients.csv"
    raise PanelError(
        "cannot find the shipped cohort (data/synthetic/vu.csv, patients.csv); "
        f"pass --vu/--patients (looked in {', '.join(str(c) for c in candidates)})"
    )
