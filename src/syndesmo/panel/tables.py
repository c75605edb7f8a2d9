"""The validated input: a vertebral-unit (VU) table and a patient table.

A ``VUPanel`` holds

* ``vu``: one row per patient × VU (× reader) with the columns ``patient``, ``vu``,
  optionally ``reader``, the MRI activity scores ``mri_w{week}`` (ASspiMRI-a, 0–6
  per VU) and the mSASSS corner scores ``msasss_upper_w{week}`` /
  ``msasss_lower_w{week}`` (0–3 per corner; see ``syndesmo.panel.spine`` for which corner
  is which), plus any other VU-level columns;
* ``patients``: one row per patient with ``patient``, ``arm`` and any covariates.

Conventions (the contract other modules rely on):

* Every score column is stored as ``float64``; ``NaN`` means "not scored / not
  available" (e.g. an x-ray that was not taken). Derivations count such rows in a
  ``Ledger``; the panel itself never drops a row.
* mSASSS corner scores must be whole numbers 0–3. MRI scores must lie in 0–6 but may
  be fractional, because published panels often carry the mean of two readers.
* Thoracic VUs (T1/2 … T11/12) are not covered by the mSASSS, so their x-ray scores
  must be ``NaN``.
* ``patient`` values are kept as read (strings or integers); ``vu`` values are the
  labels of ``syndesmo.panel.spine.VU_LABELS``. Row order is kept as given.

* Known patient covariates must lie in their plausible range (``PLAUSIBLE_RANGES``:
  age 0–120, CRP ≥ 0, BASDAI 0–10, mSASSS totals 0–72, durations ≥ 0, …), so that a
  missing-value code such as ``-99`` is never used as a value; ``load_panel`` can read
  such codes as missing instead (``missing_codes=``), with a note.

Files are read by ``load_panel``; CSV files field by field (``syndesmo.panel.csvfile``:
ragged lines, repeated column names and text in numeric columns are errors, names and
labels with surrounding spaces or differing only in case are tidied with a note). What
was changed is in ``VUPanel.notes``, rows left out (empty rows) in ``VUPanel.ledger``.

Every problem raises ``PanelError`` naming the table (file), the rows, the column
and the offending values: the first few offending rows and how many there are in
all. Rows of a CSV file are given as its line numbers, counting the header as
line 1 (blank lines are skipped as pandas skips them); rows of a Parquet file or of
an in-memory table as 0-based row positions.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.errors import DataNote, PanelError, warn_user
from syndesmo.ledger import Ledger
from syndesmo.panel.csvfile import COMMON_MISSING_CODES, read_csv_table
from syndesmo.panel.spine import (
    ASSPIMRI_RANGE,
    MSASSS_RANGE,
    MSASSS_VUS,
    VU_LABELS,
    vu_label_changes,
)

#: Columns that identify a row of the VU table.
KEY_COLUMNS = ("patient", "vu", "reader")

_MRI_RE = re.compile(r"^mri_w(\d+)$")
_XRAY_RE = re.compile(r"^msasss_(upper|lower)_w(\d+)$")
#: Column names that are near misses of a score column's name (e.g. ``mri_week24``,
#: ``msasss_w102``, ``msasss_upper_0``): an error rather than an extra column.
#: Covariates such as ``msasss_baseline`` or ``mri_total`` are not near misses.
_NEAR_MISS_RE = re.compile(r"^(mri_w|msasss_w|msasss_(upper|lower))", re.IGNORECASE)


#: Plausible ranges of known patient covariates (inclusive): a value outside is an error,
#: most often a missing-value code such as -99 read as a number. CRP in mg/L, symptom
#: and disease duration in years, BASDAI and BASFI on their 0-10 scales, ASDAS-CRP >= 0,
#: mSASSS totals over 24 corners scored 0-3.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "age": (0.0, 120.0),
    "crp": (0.0, np.inf),
    "basdai": (0.0, 10.0),
    "basfi": (0.0, 10.0),
    "asdas": (0.0, np.inf),
    "msasss_baseline": (0.0, 72.0),
    "msasss_total": (0.0, 72.0),
    "symptom_duration": (0.0, np.inf),
    "disease_duration": (0.0, np.inf),
}
#: Columns that describe a patient: in a one-file input they must not differ between a
#: patient's rows (a column that does is a VU-level column, unless it is one of these).
PATIENT_COLUMNS = ("arm", "sex", "hla_b27", *PLAUSIBLE_RANGES)


def _is_score_column(name: object) -> bool:
    return bool(_MRI_RE.match(str(name)) or _XRAY_RE.match(str(name)))


#: How many offending rows an error message lists before "and N more".
_SHOWN = 5


def mri_column(week: int) -> str:
    """Name of the MRI activity column at ``week``, e.g. ``mri_w24``."""
    return f"mri_w{int(week)}"


def xray_columns(week: int) -> tuple[str, str]:
    """Names of the (upper, lower) corner mSASSS columns at ``week``."""
    return f"msasss_upper_w{int(week)}", f"msasss_lower_w{int(week)}"


@dataclass(frozen=True)
class _Where:
    """Where the rows of a table came from, to name them in error messages.

    ``lines`` maps row position → file line number (CSV); ``None`` means rows are
    named by their 0-based position.
    """

    name: str
    lines: np.ndarray | None = None

    def row(self, pos: int) -> str:
        if self.lines is not None:
            return f"line {int(self.lines[pos])}"
        return f"row {int(pos)}"

    @property
    def label(self) -> str:
        """The table's name, saying how rows are counted when they are not file lines."""
        return self.name if self.lines is not None else f"{self.name} (rows counted from 0)"


def _fmt(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "missing"
    if isinstance(value, (np.generic,)):
        value = value.item()
    return repr(value)


def _rows_error(
    where: _Where,
    table: pd.DataFrame,
    mask: np.ndarray,
    what: str,
    column: str | None = None,
    values: pd.Series | np.ndarray | None = None,
    hint: str = "",
) -> PanelError:
    """An error listing the first few rows where ``mask`` holds, and how many in all."""
    positions = np.flatnonzero(mask)
    n = len(positions)
    col = f" in column {column!r}" if column else ""
    parts = []
    for pos in positions[:_SHOWN]:
        ctx = [f"{k} {_fmt(table[k].iat[pos])}" for k in KEY_COLUMNS if k in table.columns]
        desc = where.row(pos) + (f" ({', '.join(ctx)})" if ctx else "")
        if values is not None:
            v = values.iat[pos] if isinstance(values, pd.Series) else values[pos]
            desc += f" = {_fmt(v)}"
        parts.append(desc)
    more = f"; and {n - _SHOWN} more" if n > _SHOWN else ""
    rows = "row" if n == 1 else "rows"
    hint = f" ({hint})" if hint else ""
    return PanelError(f"{where.label}: {n} {rows} {what}{col}: {'; '.join(parts)}{more}{hint}")


def _code_hint(values: np.ndarray) -> str:
    """A hint when out-of-range values are common missing-value codes (-99, 999, ...)."""
    numeric = {float(c): c for c in COMMON_MISSING_CODES if c != "."}
    found = [numeric[v] for v in dict.fromkeys(np.asarray(values, dtype=float)) if v in numeric]
    if not found:
        return ""
    codes = ",".join(found)
    return (
        f"{found[0]} looks like a missing-value code: give missing_codes={found!r} "
        f"(--missing-codes={codes}) to read it as missing"
    )


class VUPanel:
    """A validated VU panel: the VU table, the patient table and (if simulated) the truth.

    Construction validates both tables and raises ``PanelError`` on the first kind of
    problem found; see the module docstring for the conventions. ``source`` names
    the VU table in messages (a file name, or e.g. ``"simulate_cohort(seed=1)"``);
    ``patients_source`` names the patient table (default: derived from ``source``).
    ``ledger`` holds the input rows left out while reading (e.g. empty rows of a file)
    and ``notes`` what was changed (e.g. labels merged); both come from ``load_panel``.
    """

    def __init__(
        self,
        vu: pd.DataFrame,
        patients: pd.DataFrame,
        truth: dict | None = None,
        source: str | None = None,
        *,
        patients_source: str | None = None,
        ledger: Ledger | None = None,
        notes: Sequence[str] = (),
        _vu_lines: np.ndarray | None = None,
        _patient_lines: np.ndarray | None = None,
    ) -> None:
        if not isinstance(vu, pd.DataFrame) or not isinstance(patients, pd.DataFrame):
            raise PanelError(
                "VUPanel needs two pandas DataFrames: the VU table and the patients, got "
                f"{type(vu).__name__} and {type(patients).__name__}"
            )
        vu_where = _Where(source or "VU table", _vu_lines)
        if patients_source is None:
            patients_source = f"{source} (patient table)" if source else "patient table"
        pat_where = _Where(patients_source, _patient_lines)

        vu = vu.reset_index(drop=True).copy()
        patients = patients.reset_index(drop=True).copy()
        self.mri_weeks, self.xray_weeks = _check_vu_columns(vu, vu_where)
        _check_keys(vu, vu_where)
        for col in self.score_columns_of(self.mri_weeks, self.xray_weeks):
            vu[col] = _check_scores(vu, col, vu_where)
        _check_thoracic_xray(vu, self.xray_weeks, vu_where)
        _check_duplicates(vu, vu_where)
        _check_patient_table(patients, pat_where)
        _check_plausible(vu, vu_where)
        _check_plausible(patients, pat_where)
        _check_shared_columns(vu, patients, vu_where, pat_where)
        unimaged = _check_same_patients(vu, patients, vu_where, pat_where)

        self.vu: pd.DataFrame = vu
        self.patients: pd.DataFrame = patients
        self.truth: dict | None = truth
        self.source: str | None = source
        #: Input rows left out while reading (e.g. empty rows), with the reason.
        self.ledger: Ledger = ledger.copy() if ledger is not None else Ledger()
        #: Patients of the patient table without VU rows (kept there, in no analysis).
        self.patients_without_vu: list = unimaged
        if unimaged:
            shown = ", ".join(_fmt(p) for p in unimaged[:_SHOWN])
            more = f", and {len(unimaged) - _SHOWN} more" if len(unimaged) > _SHOWN else ""
            self.ledger.add(
                "load",
                f"patient in {pat_where.name} without VU rows (no images; e.g. {shown}{more})",
                len(unimaged),
                len(unimaged),
            )
        #: What was changed while reading (names or labels stripped, merged, codes).
        self.notes: list[str] = list(notes)
        self.readers: list | None = (
            _sorted_labels(pd.unique(vu["reader"]).tolist()) if "reader" in vu.columns else None
        )
        self.patient_ids: list = patients["patient"].tolist()

    # ------------------------------------------------------------------ columns
    @staticmethod
    def score_columns_of(mri_weeks: Sequence[int], xray_weeks: Sequence[int]) -> list[str]:
        """Score column names for the given weeks: MRI first, then corner pairs."""
        cols = [mri_column(w) for w in mri_weeks]
        for w in xray_weeks:
            cols.extend(xray_columns(w))
        return cols

    @property
    def score_columns(self) -> list[str]:
        """All score columns of this panel (MRI, then upper/lower corners by week)."""
        return self.score_columns_of(self.mri_weeks, self.xray_weeks)

    @property
    def n_patients(self) -> int:
        return len(self.patients)

    def merged(self) -> pd.DataFrame:
        """The one-file form: the VU table with the patient columns merged in.

        Columns: keys (``patient``, ``vu``, ``reader``), patient columns, other VU
        columns, then score columns; rows in the order of ``vu``.
        """
        pat = self.patients
        out = self.vu.merge(pat, on="patient", how="left", sort=False, validate="many_to_one")
        keys = [k for k in KEY_COLUMNS if k in out.columns]
        pcols = [c for c in pat.columns if c != "patient"]
        scores = self.score_columns
        rest = [c for c in self.vu.columns if c not in keys and c not in scores]
        return out[keys + pcols + rest + scores]

    # ------------------------------------------------------------------- saving
    def save(
        self, vu_path: str | os.PathLike, patients_path: str | os.PathLike | None = None
    ) -> None:
        """Write the panel as CSV or Parquet (chosen by each path's suffix).

        With ``patients_path`` the VU table and the patient table go to two files;
        without it, one file holds the VU table with the patient columns merged in
        (``load_panel`` splits it again). The simulator's ``truth`` is not written.
        Output is deterministic: no timestamps, ``\\n`` line ends, whole-number score
        columns written as integers and other floats at full (round-trip) precision.
        """
        if patients_path is None:
            _write_table(self.merged(), Path(vu_path), self.score_columns)
        else:
            _write_table(self.vu, Path(vu_path), self.score_columns)
            _write_table(self.patients, Path(patients_path), [])

    def __repr__(self) -> str:
        readers = f", readers={self.readers}" if self.readers is not None else ""
        return (
            f"<VUPanel {self.n_patients} patients, {len(self.vu)} VU rows, "
            f"MRI weeks {self.mri_weeks}, x-ray weeks {self.xray_weeks}{readers}>"
        )


def _sorted_labels(values: list) -> list:
    """Sorted naturally (1, 2, 10) where the values compare, else as text."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


# ---------------------------------------------------------------------------
# validation steps, each raising PanelError


def _check_required_columns(table: pd.DataFrame, where: _Where, required: tuple) -> list[str]:
    """Column names of ``table``; raises on duplicated names or a missing required one."""
    cols = [str(c) for c in table.columns]
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise PanelError(f"{where.name}: duplicated column name(s) {dup}")
    missing = [c for c in required if c not in cols]
    if missing:
        raise PanelError(
            f"{where.name}: missing required column(s) {missing}; found columns {cols}"
        )
    return cols


def _check_vu_columns(vu: pd.DataFrame, where: _Where) -> tuple[list[int], list[int]]:
    """Required columns and the score-column names; returns (mri_weeks, xray_weeks)."""
    cols = _check_required_columns(vu, where, ("patient", "vu"))
    mri: dict[int, str] = {}
    xray: dict[str, dict[int, str]] = {"upper": {}, "lower": {}}
    for c in cols:
        m = _MRI_RE.match(c)
        x = _XRAY_RE.match(c)
        if m:
            week = int(m.group(1))
            if week in mri:
                raise PanelError(
                    f"{where.name}: columns {mri[week]!r} and {c!r} are both week {week}"
                )
            mri[week] = c
        elif x:
            corner, week = x.group(1), int(x.group(2))
            if week in xray[corner]:
                raise PanelError(
                    f"{where.name}: columns {xray[corner][week]!r} and {c!r} are both week {week}"
                )
            xray[corner][week] = c
        elif _NEAR_MISS_RE.match(c):
            raise PanelError(
                f"{where.name}: column {c!r} looks like a score column but is not named "
                "mri_w{week}, msasss_upper_w{week} or msasss_lower_w{week}; a long export "
                "(one row per patient × level × visit, with a week column) is read by "
                "'syndesmo import' or sy.from_long(...)"
            )
    if not mri:
        raise PanelError(
            f"{where.name}: no MRI score column; expected at least one column named "
            "mri_w{week}, e.g. 'mri_w0'"
        )
    upper, lower = set(xray["upper"]), set(xray["lower"])
    for have, lack, corner in ((upper, lower, "lower"), (lower, upper, "upper")):
        unpaired = sorted(have - lack)
        if unpaired:
            w = unpaired[0]
            other = "upper" if corner == "lower" else "lower"
            raise PanelError(
                f"{where.name}: x-ray week {w} has column 'msasss_{other}_w{w}' but no "
                f"'msasss_{corner}_w{w}'; each x-ray week needs both corner columns"
            )
    if len(upper) < 2:
        raise PanelError(
            f"{where.name}: need mSASSS scores at two or more x-ray weeks "
            f"(columns msasss_upper_w{{week}}/msasss_lower_w{{week}}); found weeks {sorted(upper)}"
        )
    return sorted(mri), sorted(upper)


def _check_keys(vu: pd.DataFrame, where: _Where) -> None:
    """No missing patient (or reader); every VU label one of the 23 of the spine."""
    for col in ("patient", "reader"):
        if col in vu.columns:
            bad = vu[col].isna().to_numpy()
            if bad.any():
                raise _rows_error(where, vu, bad, "with a missing value", col)
    labels = vu["vu"]
    bad = ~labels.isin(VU_LABELS).to_numpy()
    if bad.any():
        raise _rows_error(
            where,
            vu,
            bad,
            "with an unknown vertebral unit (expected C2/3 … L5/S1, e.g. 'C7/T1')",
            "vu",
            labels,
        )


def _check_scores(table: pd.DataFrame, col: str, where: _Where) -> pd.Series:
    """The column as float64 after checking it is numeric, in range and (mSASSS) integral."""
    raw = table[col]
    if pd.api.types.is_bool_dtype(raw):
        raise PanelError(f"{where.name}: column {col!r} holds true/false values, not scores")
    num = pd.to_numeric(raw, errors="coerce")
    not_numeric = (num.isna() & raw.notna()).to_numpy()
    if not_numeric.any():
        raise _rows_error(where, table, not_numeric, "with a non-numeric score", col, raw)
    values = num.astype("float64").to_numpy()
    lo, hi = ASSPIMRI_RANGE if col.startswith("mri_") else MSASSS_RANGE
    with np.errstate(invalid="ignore"):
        out = ~np.isnan(values) & ~((values >= lo) & (values <= hi))
    if out.any():
        scale = "ASspiMRI-a" if col.startswith("mri_") else "mSASSS corner"
        raise _rows_error(
            where,
            table,
            out,
            f"with a score outside {scale} range {lo}–{hi}",
            col,
            raw,
            hint=_code_hint(values[out]),
        )
    if col.startswith("msasss_"):
        frac = ~np.isnan(values) & (values != np.round(values))
        if frac.any():
            raise _rows_error(
                where, table, frac, "with a non-integer mSASSS corner score", col, raw
            )
    return pd.Series(values, index=table.index, name=col)


def _check_thoracic_xray(vu: pd.DataFrame, xray_weeks: list[int], where: _Where) -> None:
    thoracic = ~vu["vu"].isin(MSASSS_VUS).to_numpy()
    for week in xray_weeks:
        for col in xray_columns(week):
            bad = thoracic & vu[col].notna().to_numpy()
            if bad.any():
                raise _rows_error(
                    where,
                    vu,
                    bad,
                    "with an x-ray score on a thoracic VU, which the mSASSS does not "
                    "score (leave it empty)",
                    col,
                    vu[col],
                )


def _check_duplicates(vu: pd.DataFrame, where: _Where) -> None:
    keys = [k for k in KEY_COLUMNS if k in vu.columns]
    dup = vu.duplicated(subset=keys, keep=False).to_numpy()
    if dup.any():
        raise _rows_error(where, vu, dup, f"sharing the same {' × '.join(keys)}")


def _check_patient_table(patients: pd.DataFrame, where: _Where) -> None:
    _check_required_columns(patients, where, ("patient", "arm"))
    for col in ("patient", "arm"):
        bad = patients[col].isna().to_numpy()
        if bad.any():
            raise _rows_error(where, patients[["patient"]], bad, "with a missing value", col)
    dup_rows = patients.duplicated(subset=["patient"], keep=False).to_numpy()
    if dup_rows.any():
        raise _rows_error(where, patients[["patient"]], dup_rows, "repeating a patient")


def _check_plausible(table: pd.DataFrame, where: _Where) -> None:
    """Known covariates (``PLAUSIBLE_RANGES``) must be numbers inside their range."""
    for col, (lo, hi) in PLAUSIBLE_RANGES.items():
        if col not in table.columns:
            continue
        raw = table[col]
        if pd.api.types.is_bool_dtype(raw):
            raise PanelError(f"{where.name}: column {col!r} holds true/false values, not numbers")
        num = pd.to_numeric(raw, errors="coerce")
        text = (num.isna() & raw.notna()).to_numpy()
        if text.any():
            raise _rows_error(where, table, text, "with text where a number is needed", col, raw)
        values = num.to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            out = ~np.isnan(values) & ~((values >= lo) & (values <= hi))
        if out.any():
            span = f"{lo:g}–{hi:g}" if np.isfinite(hi) else f"≥ {lo:g}"
            raise _rows_error(
                where,
                table,
                out,
                f"with an implausible value (the range of {col} is {span})",
                col,
                raw,
                hint=_code_hint(values[out]),
            )


def _check_shared_columns(
    vu: pd.DataFrame, patients: pd.DataFrame, vu_where: _Where, pat_where: _Where
) -> None:
    both = [c for c in patients.columns if c != "patient" and c in vu.columns]
    if both:
        raise PanelError(
            f"column(s) {both} are in both {vu_where.name} and {pat_where.name}; "
            "keep each patient-level column in the patient table only"
        )


def _check_same_patients(
    vu: pd.DataFrame, patients: pd.DataFrame, vu_where: _Where, pat_where: _Where
) -> list:
    """Every VU row's patient must be in the patient table; returns the patients of the
    patient table without VU rows (randomised but never imaged: kept, and counted)."""
    in_pat = vu["patient"].isin(patients["patient"]).to_numpy()
    if not in_pat.all():
        hint = _type_hint(vu["patient"], patients["patient"], pat_where.name)
        raise _rows_error(
            vu_where, vu, ~in_pat, f"whose patient is not in {pat_where.name}{hint}", "patient"
        )
    in_vu = patients["patient"].isin(vu["patient"]).to_numpy()
    return patients.loc[~in_vu, "patient"].tolist()


def _type_hint(a: pd.Series, b: pd.Series, b_name: str = "the other table") -> str:
    """A hint when ids differ only in type (7 and '7') or format ('007' and 7)."""
    if a.astype(str).isin(b.astype(str)).all():
        return (
            " (a type mismatch: the ids match as text, but one table has numbers, the other text)"
        )

    def number(v: object) -> object:
        text = str(v).strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else text

    a_num, b_num = a.map(number), b.map(number)
    if a_num.isin(b_num).all():
        missing = a[~a.isin(b)].iloc[0]
        other = b[b_num == number(missing)].iloc[0]
        return (
            f" (a format mismatch: the ids are the same numbers written differently, "
            f"e.g. {_fmt(missing)} here and {_fmt(other)} in {b_name}; leading zeros?)"
        )
    return ""


# ---------------------------------------------------------------------------
# reading and writing files

_CSV = (".csv", ".tsv", ".txt")
_PARQUET = (".parquet", ".pq")
#: File types read through pandas, by suffix: (kind, words, the module pandas needs).
FILE_TYPES: dict[str, tuple[str, str, str | None]] = {
    ".parquet": ("parquet", "Parquet", "pyarrow"),
    ".pq": ("parquet", "Parquet", "pyarrow"),
    ".dta": ("stata", "Stata", None),
    ".sas7bdat": ("sas", "SAS", None),
    ".xpt": ("sas", "SAS transport (XPORT)", None),  # version 8 needs pyreadstat
    ".sav": ("spss", "SPSS", "pyreadstat"),
    ".zsav": ("spss", "SPSS", "pyreadstat"),
    ".xlsx": ("excel", "Excel", "openpyxl"),
    ".xlsm": ("excel", "Excel", "openpyxl"),
}
#: The optional extra that installs the readers of each module.
_EXTRA = {"pyarrow": "parquet", "pyreadstat": "formats", "openpyxl": "formats"}
_SUFFIXES = ", ".join((*_CSV, *FILE_TYPES))


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _CSV:
        return "csv"
    if suffix in FILE_TYPES:
        return FILE_TYPES[suffix][0]
    raise PanelError(f"{path}: unknown file type {suffix!r}; use one of {_SUFFIXES}")


@dataclass
class _Read:
    """A table as read from a file: the frame, CSV line numbers, notes, empty rows."""

    frame: pd.DataFrame
    lines: np.ndarray | None
    notes: list[str]
    empty_lines: list[int]


def _check_file(path: Path) -> None:
    """FileNotFoundError for a missing file; PanelError for a directory, FIFO, device."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "No such file", str(path)) from None
    if stat.S_ISDIR(mode):
        raise PanelError(f"{path}: is a directory, not a table file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
        raise PanelError(f"{path}: is {kind}; give a table file ({_SUFFIXES})")


def read_table(path: str | os.PathLike, decimal: str = ".", missing_codes: Sequence[str] = ()):
    """One table file as read for a panel: ``(frame, lines, notes, empty_lines)``.

    ``lines`` are the CSV file's line numbers of the rows (``None`` for typed files);
    ``notes`` say what was changed; ``empty_lines`` are rows left out (every field
    blank). The suffix chooses the reader (``.csv``/``.tsv``/``.txt``, ``.parquet``,
    ``.dta``, ``.sas7bdat``, ``.xpt``, ``.sav``, ``.xlsx``).
    """
    read = _read_table(Path(path), decimal, missing_codes)
    return read.frame, read.lines, read.notes, read.empty_lines


def _read_table(path: Path, decimal: str = ".", missing_codes: Sequence[str] = ()) -> _Read:
    """Read a CSV (``syndesmo.panel.csvfile``) or a typed table (Parquet, Stata, SAS,
    SPSS, Excel) through pandas."""
    kind = _kind(path)
    _check_file(path)
    if kind == "csv":
        table = read_csv_table(
            path,
            decimal=decimal,
            missing_codes=missing_codes,
            numeric_columns=tuple(PLAUSIBLE_RANGES),
        )
        return _Read(table.frame, table.lines, table.notes, table.empty_lines)
    frame = read_typed_file(path)
    notes: list[str] = []
    frame = _tidy_names(frame, str(path), notes)
    if frame.empty:
        raise PanelError(f"{path}: no data rows")
    frame = _tidy_typed(frame, str(path), notes)
    if missing_codes:
        frame = _parquet_codes(frame, str(path), list(missing_codes), notes)
    return _Read(frame, None, notes, [])


def read_typed_file(path: Path) -> pd.DataFrame:
    """A Parquet, Stata, SAS, SPSS or Excel file as pandas reads it (the first sheet of
    a workbook); ``PanelError`` for a file that is not of its type, naming the optional
    extra (``pip install syndesmo[formats]``) when the reader's module is missing."""
    _, words, module = FILE_TYPES[path.suffix.lower()]
    kind = _kind(path)
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "stata":
            return pd.read_stata(path, convert_categoricals=True)
        if kind == "sas":
            if path.suffix.lower() == ".xpt" and importlib.util.find_spec("pyreadstat"):
                import pyreadstat  # XPORT versions 5 and 8 (pandas reads version 5 only)

                return pyreadstat.read_xport(str(path))[0]
            return pd.read_sas(path, format="xport" if path.suffix.lower() == ".xpt" else None)
        if kind == "spss":
            return pd.read_spss(path, convert_categoricals=True)
        return pd.read_excel(path, sheet_name=0, engine="openpyxl")
    except ImportError as exc:
        if module is None:
            raise
        raise PanelError(
            f"{path}: reading {words} files needs the Python package {module!r}, which is not "
            f"installed; install the extra: pip install 'syndesmo[{_EXTRA[module]}]'"
        ) from exc
    except Exception as exc:
        if isinstance(exc, (PanelError, MemoryError, KeyboardInterrupt)):
            raise
        raise PanelError(f"{path}: cannot be read as {words}: {exc}") from exc


def _tidy_typed(frame: pd.DataFrame, name: str, notes: list[str]) -> pd.DataFrame:
    """A typed table as the CSV reader would give it: value labels (Stata, SPSS
    categoricals) and bytes (SAS) as text, whole-number ids as integers, ``vu``
    labels as the spine's (a note per label changed)."""
    for col in frame.columns:
        values = frame[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            cats = values.cat.categories
            if pd.api.types.is_numeric_dtype(cats):
                values = values.astype(cats.dtype if cats.dtype.kind != "i" else float)
            else:
                values = values.astype(object).where(values.notna(), np.nan)
        if values.dtype == object:
            values = values.map(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v)
            values = values.map(lambda v: v.strip() if isinstance(v, str) else v)
            values = values.map(lambda v: np.nan if v == "" else v)
        if col in ("patient", "reader") and values.dtype.kind == "f":
            whole = values.dropna()
            if len(whole) == len(values) and np.all(whole == np.round(whole)):
                values = values.astype(np.int64)
        frame[col] = values
    if "vu" in frame.columns:
        labels = frame["vu"]
        counts = labels[labels.map(lambda v: isinstance(v, str))].value_counts(sort=False)
        changes, vu_notes = vu_label_changes({str(k): int(v) for k, v in counts.items()}, name)
        notes.extend(vu_notes)
        if changes:
            frame["vu"] = labels.map(lambda v: changes.get(v, v))
    return frame


def _tidy_names(frame: pd.DataFrame, name: str, notes: list[str]) -> pd.DataFrame:
    """Column names stripped of spaces (a note); a repeated name is an error."""
    raw = [str(c) for c in frame.columns]
    names = [c.strip() for c in raw]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        shown = "; ".join(
            " and ".join(f"{r!r} (column {j + 1})" for j, r in enumerate(raw) if names[j] == n)
            for n in repeated
        )
        raise PanelError(f"{name}: column name(s) repeated: {shown}")
    for r, n in zip(raw, names, strict=True):
        if r != n:
            notes.append(f"{name}: column name {r!r} has spaces around it; read as {n!r}")
    frame.columns = names
    return frame


def _parquet_codes(
    frame: pd.DataFrame, name: str, codes: list[str], notes: list[str]
) -> pd.DataFrame:
    """Missing-value codes of a typed table read as missing (a note per column)."""
    numeric = [float(c) for c in codes if re.fullmatch(r"[+-]?\d+(\.\d*)?", c)]
    for col in frame.columns:
        if col in ("patient", "reader"):
            continue
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            hit = values.isin(numeric).to_numpy()
        else:
            hit = values.astype(str).str.strip().isin(codes).to_numpy() & values.notna().to_numpy()
        if hit.any():
            notes.append(
                f"{name}: column {col!r}: {int(hit.sum())} value(s) read as missing "
                "(missing-value codes)"
            )
            frame[col] = values.astype(float if values.dtype.kind in "iuf" else object).mask(hit)
    return frame


def _write_table(df: pd.DataFrame, path: Path, score_columns: list[str]) -> None:
    kind = _kind(path)
    if kind not in ("csv", "parquet"):
        raise PanelError(f"{path}: a panel is saved as .csv or .parquet, not {path.suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        df.to_parquet(path, index=False)
        return
    out = df.copy()
    for col in score_columns:
        values = out[col].to_numpy(dtype="float64")
        finite = values[~np.isnan(values)]
        if np.array_equal(finite, np.round(finite)):
            out[col] = out[col].astype("Int64")
    out.to_csv(path, index=False, lineterminator="\n")


def _split_one_file(
    table: pd.DataFrame, name: str, lines: np.ndarray | None
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None]:
    """Split a VU file that carries patient columns into (vu, patients, patient lines).

    Patient-level columns are those (other than keys and scores) constant within
    every patient; ``arm`` must be one of them.
    """
    where = _Where(name, lines)
    if "patient" not in table.columns:
        raise PanelError(f"{name}: missing required column 'patient'; found {list(table.columns)}")
    if "arm" not in table.columns:
        raise PanelError(
            f"{name}: no 'arm' column; give a patient table with 'patient' and 'arm' "
            "(--patients FILE on the command line) or add the patient columns to the VU file"
        )
    bad = table["patient"].isna().to_numpy()
    if bad.any():
        raise _rows_error(where, table, bad, "with a missing value", "patient")
    candidates = [c for c in table.columns if c not in KEY_COLUMNS and not _is_score_column(c)]
    grouped = table.groupby("patient", sort=False, dropna=False)
    n_distinct = grouped[candidates].nunique(dropna=False).max() if candidates else pd.Series()
    patient_cols = [c for c in candidates if n_distinct.get(c, 0) <= 1]
    for col in ("arm", *(c for c in PATIENT_COLUMNS if c != "arm")):
        if col in candidates and col not in patient_cols:
            varies = grouped[col].transform("nunique", dropna=False).to_numpy() > 1
            raise _rows_error(
                where,
                table,
                varies,
                f"of patients whose {col!r} is not the same on all rows (a patient "
                "covariate has one value per patient)",
                col,
                table[col],
            )
    first = ~table["patient"].duplicated().to_numpy()
    patients = table.loc[first, ["patient", *patient_cols]].reset_index(drop=True)
    vu = table.drop(columns=patient_cols)
    pat_lines = None if lines is None else lines[first]
    return vu, patients, pat_lines


def load_panel(
    vu_path: str | os.PathLike,
    patients_path: str | os.PathLike | None = None,
    *,
    decimal: str = ".",
    missing_codes: Iterable[str] | bool = (),
) -> VUPanel:
    """Read and validate a panel from table files (the type chosen by suffix).

    Two files: the VU table and the patient table. One file: the VU table carrying
    the patient columns (those constant within each patient, including ``arm``),
    which are split off into the patient table in order of first appearance.

    Parameters
    ----------
    vu_path, patients_path
        The files: CSV (``.csv``, ``.tsv``, ``.txt``; the separator ``,`` ``;`` tab or
        ``|`` found from the header), Parquet, Stata ``.dta``, SAS ``.sas7bdat`` /
        ``.xpt``, SPSS ``.sav`` or Excel ``.xlsx`` (the first sheet). SPSS, Excel and
        SAS XPORT version 8 need the extra ``formats`` (pyreadstat, openpyxl); a
        missing one is an error naming it. CSV files are read field by field (see
        ``syndesmo.panel.csvfile``): ragged lines, repeated column names and text in a
        numeric column are errors; header names and labels with spaces around them,
        and labels differing only in case, are tidied with a note. Level labels as
        trials write them (``C2-C3``, ``c2/3``, ``L5-S1``) are read as the spine's,
        one note per distinct label. A long export (one row per patient × level ×
        visit) is read by ``syndesmo.panel.longformat.from_long`` instead.
    decimal
        ``"."`` or ``","`` (a European export: then fields are separated by ``;``
        when the header holds one).
    missing_codes
        Values read as missing in every column other than the ids, e.g.
        ``["-99", "."]``; ``True`` for ``COMMON_MISSING_CODES`` (-99, -9, 999, ".").
        Without it such values stay in the data, and the range checks of the scores
        and of the known covariates (``PLAUSIBLE_RANGES``) refuse them.

    Returns
    -------
    VUPanel
        With ``ledger`` (rows left out while reading: empty rows; patients of the
        patient table without VU rows, who stay in ``patients``) and ``notes`` (what
        was changed); each note is also issued as a ``DataNote`` warning.

    Raises
    ------
    PanelError
        Naming file, line/row, column and value; also for a directory or FIFO given
        as a file and for a DataFrame given instead of a path.
    FileNotFoundError
        For a missing file.
    """
    for arg in (vu_path, patients_path):
        if isinstance(arg, pd.DataFrame):
            raise PanelError(
                "load_panel reads files (give paths); for tables in memory use "
                "VUPanel(vu, patients)"
            )
        if arg is not None and not isinstance(arg, (str, os.PathLike)):
            raise PanelError(f"load_panel needs file paths, got {type(arg).__name__}")
    if missing_codes is True:
        missing_codes = COMMON_MISSING_CODES
    elif missing_codes is False or missing_codes is None:
        missing_codes = ()
    elif isinstance(missing_codes, str):
        missing_codes = [missing_codes]
    codes = [str(c).strip() for c in missing_codes]
    vu_path = Path(vu_path)
    vu_read = _read_table(vu_path, decimal, codes)
    notes = list(vu_read.notes)
    ledger = Ledger()
    _ledger_empty(ledger, vu_path, vu_read.empty_lines)
    if patients_path is None:
        vu, patients, pat_lines = _split_one_file(vu_read.frame, str(vu_path), vu_read.lines)
        panel = VUPanel(
            vu,
            patients,
            source=str(vu_path),
            patients_source=str(vu_path),
            ledger=ledger,
            notes=notes,
            _vu_lines=vu_read.lines,
            _patient_lines=pat_lines,
        )
    else:
        patients_path = Path(patients_path)
        pat_read = _read_table(patients_path, decimal, codes)
        notes += pat_read.notes
        _ledger_empty(ledger, patients_path, pat_read.empty_lines)
        panel = VUPanel(
            vu_read.frame,
            pat_read.frame,
            source=str(vu_path),
            patients_source=str(patients_path),
            ledger=ledger,
            notes=notes,
            _vu_lines=vu_read.lines,
            _patient_lines=pat_read.lines,
        )
    for note in notes:
        warn_user(note, DataNote)
    return panel


def _ledger_empty(ledger: Ledger, path: Path, lines: list[int]) -> None:
    if lines:
        shown = ", ".join(str(n) for n in lines[:5]) + (", …" if len(lines) > 5 else "")
        ledger.add(
            "load", f"empty row in {path.name} (every field blank; line {shown})", len(lines)
        )
