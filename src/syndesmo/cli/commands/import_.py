"""``syndesmo import``: a long trial export in, the canonical panel files out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from syndesmo.cli.commands._input import add_input_options, missing_codes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NAME = "import"
HELP = "read a long trial export (one row per patient x level x visit) into panel files"
#: Roles of the mapping: role -> (default column, words).
ROLES: dict[str, tuple[str | None, str]] = {
    "patient": ("patient", "patient id"),
    "vu": ("vu", "spinal level (C2-C3, c2/3, C2/3, L5-S1, ...)"),
    "week": ("week", "visit week (0, 12, 52, ...; W12 and baseline are read too)"),
    "mri": ("mri", "ASspiMRI-a score of the level at the visit (0-6)"),
    "upper": (
        "msasss_upper",
        "mSASSS score of the upper corner (lower corner of the upper vertebra)",
    ),
    "lower": (
        "msasss_lower",
        "mSASSS score of the lower corner (upper corner of the lower vertebra)",
    ),
    "reader": (None, "reader of the images (when read by several readers)"),
    "arm": ("arm", "treatment arm, in the patient table (or the long table)"),
}
DESCRIPTION = """\
Read a long export -- one row per patient x spinal level x visit (x reader),
with the trial's own column names -- and write the canonical panel files that
every other command reads: vu.csv (one row per patient x VU (x reader), columns
mri_w{week}, msasss_upper_w{week}, msasss_lower_w{week}) and patients.csv.

The columns are named by flags or by a TOML mapping file (--mapping); a flag
overrides the file. Roles and their default column names:

  patient  patient id                                   (default: patient)
  vu       spinal level: C2-C3, c2/3, C2/C3, C2-3, L5-S1 and spaces are read as
           the spine's labels (C2/3 ... L5/S1), each mapping reported once
  week     visit week: 0, 12, 52 (W12, week 12, baseline are read)   (week)
  mri      ASspiMRI-a score of the level at the visit               (mri)
  upper    mSASSS, lower corner of the upper vertebra       (msasss_upper)
  lower    mSASSS, upper corner of the lower vertebra       (msasss_lower)
  reader   reader of the images, if read by several readers   (none)
  arm      treatment arm, in --patients (or in the long file)       (arm)

MRI weeks are the weeks with an MRI score, x-ray weeks those with a corner
score. A score read once (no patient x level x week with readings from two
readers: the usual MRI read once, with no reader or on one reader's rows, and
radiographs read by two readers) is carried to each
reader's row of its level, and a note says so. Two different values for one
patient x level x week (x reader) are an error naming the lines.

A mapping file:

  patient = "subject_id"
  vu = "level"
  week = "visit_week"
  mri = "asspimri_a"
  upper = "msasss_up"
  lower = "msasss_lo"
  reader = "reader"
  arm = "treatment"

Input files: CSV (separator , ; tab or | found from the header), Parquet, Stata
.dta, SAS .sas7bdat/.xpt, SPSS .sav, Excel .xlsx (the last two need the extra
'formats': pip install 'syndesmo[formats]'). Without --patients the long file's
columns that hold one value per patient (the arm among them) make the patient
table. A patient of --patients without images is kept there and counted.

Writes OUT/vu.csv and OUT/patients.csv (or .parquet with --format parquet)
atomically; files of the same names not written by syndesmo are never
replaced. Prints what was read and every note.

examples:
  syndesmo import export.csv --patients demog.csv --mapping trial.toml --out panel/
  syndesmo import export.dta --patient subjid --vu level --week visit \\
      --mri asspimri --upper up --lower lo --reader rdr --out panel/
  syndesmo describe --vu panel/vu.csv --patients panel/patients.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("long", metavar="LONG", help="the long export (see the file types above)")
    parser.add_argument(
        "--patients",
        metavar="FILE",
        help="patient table (patient id, arm, covariates); default: the long file's "
        "patient-level columns",
    )
    parser.add_argument(
        "--mapping", metavar="TOML", help="column mapping file (keys: " + ", ".join(ROLES) + ")"
    )
    for role, (default, words) in ROLES.items():
        parser.add_argument(
            f"--{role}",
            metavar="COL",
            dest=f"col_{role}",
            help=f"column of the {words} (default: {default or 'none'})",
        )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="directory for vu.csv and patients.csv"
    )
    parser.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default="csv",
        help="file format of the two tables written (default: csv)",
    )
    add_input_options(parser)


def read_mapping(path: Path) -> dict[str, str]:
    """The TOML mapping file as role → column; ``PanelError`` for unknown keys or values."""
    from syndesmo.errors import PanelError

    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PanelError(f"{path}: not valid TOML: {exc}") from None
    unknown = [k for k in data if k not in ROLES]
    if unknown:
        raise PanelError(f"{path}: unknown key(s) {unknown}; the keys are {', '.join(ROLES)}")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v]
    if bad:
        raise PanelError(f"{path}: {bad} must name a column (a non-empty string)")
    return dict(data)


def mapping_of(args: argparse.Namespace) -> dict[str, str | None]:
    """Role → column: the defaults, then the mapping file, then the flags."""
    mapping: dict[str, str | None] = {role: default for role, (default, _) in ROLES.items()}
    if args.mapping:
        mapping.update(read_mapping(Path(args.mapping)))
    for role in ROLES:
        value = getattr(args, f"col_{role}", None)
        if value:
            mapping[role] = value
    return mapping


def run(args: argparse.Namespace) -> int:
    from syndesmo.errors import DataNote, warn_user
    from syndesmo.output.atomic import atomic_files, check_files
    from syndesmo.panel.longformat import from_long
    from syndesmo.panel.tables import read_table

    mapping = mapping_of(args)
    out = Path(args.out)
    suffix = ".csv" if args.format == "csv" else ".parquet"
    names = [f"vu{suffix}", f"patients{suffix}"]
    check_files(out, names)  # before reading: a foreign file fails at once
    codes = missing_codes(args)
    if codes is True:
        from syndesmo.panel.csvfile import COMMON_MISSING_CODES

        codes = list(COMMON_MISSING_CODES)
    long, lines, notes, empty = read_table(args.long, args.decimal, codes)
    patients = None
    if args.patients:
        patients, _, pat_notes, _ = read_table(args.patients, args.decimal, codes)
        notes = [*notes, *pat_notes]
    for note in notes:
        warn_user(note, DataNote)
    panel = from_long(
        long,
        patients,
        patient=mapping["patient"],
        vu=mapping["vu"],
        week=mapping["week"],
        mri=mapping["mri"],
        upper=mapping["upper"],
        lower=mapping["lower"],
        reader=mapping["reader"],
        arm=mapping["arm"],
        source=str(args.long),
        lines=lines,
    )
    with atomic_files(out, names) as tmp:
        panel.save(tmp / names[0], tmp / names[1])
    readers = f", readers {panel.readers}" if panel.readers else ""
    print(
        f"read {len(long)} rows of {args.long}"
        + (f" ({len(empty)} empty rows left out)" if empty else "")
        + f": {panel.n_patients} patients, {len(panel.vu)} VU rows, MRI weeks "
        f"{panel.mri_weeks}, x-ray weeks {panel.xray_weeks}{readers}"
    )
    for entry in panel.ledger:
        print(f"left out: {entry['reason']}: {entry['n_rows']}")
    print(f"wrote {out / names[0]}, {out / names[1]}")
    return 0
