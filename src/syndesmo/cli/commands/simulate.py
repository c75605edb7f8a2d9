"""``syndesmo simulate``: write a synthetic cohort with a known truth to files."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

NAME = "simulate"
HELP = "simulate a synthetic VU panel from a cohort spec (TOML) and write it to files"
DESCRIPTION = """\
Simulate a cohort of patients x vertebral units (VUs) from the data-generating
model of syndesmo.simulate.cohort, with the parameters of a cohort spec, and write it
as three files in --out:

  vu.csv        one row per patient x VU: patient, vu, mri_w{week},
                msasss_upper_w{week}, msasss_lower_w{week}
  patients.csv  one row per patient: patient, arm and covariates
  truth.json    the true parameters of the simulation (sorted keys)

(vu.parquet and patients.parquet with --format parquet.) The same spec and seed
give byte-for-byte the same files. Files of these names already in --out are
replaced only if syndesmo wrote them (listed in --out/.syndesmo-output, unchanged
since); a file of yours, e.g. your own vu.csv, is never overwritten. The three
files appear together or not at all. The seed comes from --seed, else from
'seed = N' in the spec; one of them is required.

example:
  syndesmo simulate --spec data/synthetic/assert_like.toml --seed 1 --out cohort/
  syndesmo describe --vu cohort/vu.csv --patients cohort/patients.csv
"""

#: File names written in the output directory (tables: + .csv or .parquet); the CSV
#: names are those of ``syndesmo.simulate.cohort.write_cohort``.
VU_FILE = "vu"
PATIENTS_FILE = "patients"
TRUTH_FILE = "truth.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec", required=True, metavar="FILE.toml", help="cohort spec (TOML) to simulate"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="integer seed of the random generator (default: 'seed' in the spec)",
    )
    parser.add_argument(
        "--out",
        default=".",
        metavar="DIR",
        help="directory to write into, created if needed (default: current directory); "
        "files of the same names are replaced only if syndesmo wrote them",
    )
    parser.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default="csv",
        help="file format of the two tables (default: csv)",
    )


def _jsonable(value: Any) -> Any:
    """Plain Python values for ``json``: numpy scalars/arrays, tuples, non-str keys."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays, pandas objects
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_truth(truth: dict | None, path: Path) -> None:
    """Write ``truth`` as JSON with sorted keys and full-precision floats."""
    text = json.dumps(_jsonable(truth or {}), indent=2, sort_keys=True, default=str)
    path.write_text(text + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    from syndesmo.errors import SpecError
    from syndesmo.output.atomic import atomic_files, check_files
    from syndesmo.simulate.cohort import CohortSpec, simulate_cohort, write_cohort

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise FileNotFoundError(2, "No such file", str(spec_path))
    spec = CohortSpec.from_toml(spec_path)
    if args.seed is None and spec.seed is None:
        raise SpecError(f"{spec_path}: no seed; give --seed N or put 'seed = N' in the spec")
    out = Path(args.out)
    suffix = ".csv" if args.format == "csv" else ".parquet"
    names = [f"{VU_FILE}{suffix}", f"{PATIENTS_FILE}{suffix}", TRUTH_FILE]
    check_files(out, names)  # before simulating: a foreign file fails at once
    panel = simulate_cohort(spec, seed=args.seed)  # None: the spec's seed

    with atomic_files(out, names) as tmp:
        if args.format == "csv":
            write_cohort(panel, tmp)
        else:
            panel.save(tmp / names[0], tmp / names[1])
        write_truth(panel.truth, tmp / TRUTH_FILE)
    vu_path, patients_path = out / names[0], out / names[1]
    seed = (panel.truth or {}).get("seed")
    print(
        f"simulated {panel.n_patients} patients, {len(panel.vu)} VU rows (seed {seed}): "
        f"wrote {vu_path}, {patients_path}, {out / TRUTH_FILE}"
    )
    return 0
