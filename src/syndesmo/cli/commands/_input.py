"""Options every command that reads a panel shares: ``--decimal`` and ``--missing-codes``."""

from __future__ import annotations

import argparse


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
