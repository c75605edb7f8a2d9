"""A VU panel from a long table: one row per patient × level × visit (× reader).

Trial exports are long: a row per patient, spinal level and visit, with the MRI
activity score and the two corner scores of that visit in three columns, and often a
reader column. ``from_long`` pivots such a table into the wide VU table of a
``VUPanel`` (``mri_w{week}``, ``msasss_upper_w{week}``, ``msasss_lower_w{week}``),
with the trial's own column names given as keywords.

What it does, each step said in ``panel.notes`` (and issued as a ``DataNote``):

* level labels are read as the spine's (``C2-C3``, ``c2/3``, ``C2-3``, ``L5-S1``,
  spaces, case → ``C2/3`` …; ``syndesmo.panel.spine.normalise_vu``), one note per
  distinct label changed; a label it cannot read is an error naming the row;
* weeks are whole numbers ≥ 0, or text holding one (``W12``, ``week 12``,
  ``baseline`` = 0); MRI weeks are the weeks with an MRI score, x-ray weeks those
  with a corner score;
* readers: a score kind (MRI, or the x-ray corners) is **read once** when no
  patient × level × week has readings of it from two readers; equal values from two
  readers count as one reading copied onto each reader's row when some reading of
  the kind has no reader, else as two readers who agree. A kind read once is carried
  to every reader's row of its level; a kind read by several readers keeps one row
  per reader, and a reading of it without a reader is an error. The usual export —
  the MRI read once, the radiographs by two readers — gives one row per level and
  x-ray reader, each with the one MRI reading;
* two different values for one patient × level × week (× reader) are an error
  naming the rows, never averaged silently.

The wide table and the patient table are then validated by ``VUPanel`` as any
panel is (score ranges, thoracic x-rays, ids).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.errors import DataNote, PanelError, warn_user
from syndesmo.ledger import Ledger
from syndesmo.panel.spine import ASSPIMRI_RANGE, MSASSS_RANGE, VU_LABELS, vu_label_changes
from syndesmo.panel.tables import (
    KEY_COLUMNS,
    VUPanel,
    mri_column,
    xray_columns,
)

_WEEK_TEXT = re.compile(r"^\s*(?:w|wk|week|visit|v)?[\s_.-]*(\d+)\s*$", re.IGNORECASE)
_BASELINE = frozenset({"baseline", "bl", "base", "screening"})
#: How many offending rows an error names before "and N more".
_SHOWN = 5


def from_long(
    long: pd.DataFrame,
    patients: pd.DataFrame | None = None,
    *,
    patient: str = "patient",
    vu: str = "vu",
    week: str = "week",
    mri: str | None = "mri",
    upper: str | None = "msasss_upper",
    lower: str | None = "msasss_lower",
    reader: str | None = None,
    arm: str = "arm",
    source: str | None = None,
    lines: Sequence[int] | None = None,
) -> VUPanel:
    """Build a validated ``VUPanel`` from a long table with the trial's column names.

    Parameters
    ----------
    long : pandas.DataFrame
        One row per patient × level × visit (× reader).
    patients : pandas.DataFrame, optional
        The patient table (one row per patient, the arm and covariates), with the
        patient id in the column named as in ``long`` (or ``patient``) and the arm in
        column ``arm``. Without it,
        the columns of ``long`` other than the mapped ones that hold one value per
        patient (``arm`` among them) make the patient table; others are left out
        with a note.
    patient, vu, week : str
        Columns of ``long`` holding the patient id, the level label and the visit week.
    mri, upper, lower : str or None
        Columns holding the ASspiMRI-a score and the mSASSS scores of the upper
        corner (the lower corner of the upper vertebra) and of the lower corner (the
        upper corner of the lower vertebra).
    reader : str, optional
        Column holding the reader, when images were read by several readers.
    arm : str
        Column of the patient table (or of ``long``) holding the treatment arm.
    source : str, optional
        A name for messages (e.g. the file name); default ``"long table"``.
    lines : sequence of int, optional
        The file line of each row of ``long``, so that messages name lines (as
        ``syndesmo import`` does); default: rows are named by 0-based position.

    Returns
    -------
    VUPanel
        With ``notes`` saying every label mapped, how readers were handled and what
        was left out; ``ledger`` counts long rows without any score.

    Raises
    ------
    PanelError
        Naming the column, the rows (0-based positions, or the file's lines through
        ``syndesmo import``) and the values at fault.
    """
    name = source or "long table"
    if not isinstance(long, pd.DataFrame):
        raise PanelError(f"from_long needs a pandas DataFrame, got {type(long).__name__}")
    mapping = {"patient": patient, "vu": vu, "week": week}
    scores = {"mri": mri, "upper": upper, "lower": lower}
    mapping.update({k: v for k, v in scores.items() if v is not None})
    if reader is not None:
        mapping["reader"] = reader
    _check_mapping(long, mapping, name)
    if mri is None:
        raise PanelError(f"{name}: give the MRI score column (mri=)")
    if upper is None or lower is None:
        raise PanelError(f"{name}: give both corner score columns (upper=, lower=)")
    notes: list[str] = []
    table = pd.DataFrame({key: long[col].to_numpy() for key, col in mapping.items()})
    if lines is not None and len(lines) != len(table):
        raise PanelError(f"{name}: {len(lines)} line numbers for {len(table)} rows")
    table["_where"] = (
        [f"line {int(n)}" for n in lines]
        if lines is not None
        else [f"row {i}" for i in range(len(table))]
    )
    for key in ("patient", "vu", "week"):
        _no_missing(table, key, mapping[key], name)
    where = table["_where"]
    table["vu"] = _levels(table["vu"], mapping["vu"], name, notes, where)
    table["week"] = _weeks(table["week"], mapping["week"], name, where)
    for key in ("mri", "upper", "lower"):
        table[key] = _numbers(table[key], mapping[key], name, where)
        _in_range(table, key, mapping[key], name)

    ledger = Ledger()
    has_mri = table["mri"].notna().to_numpy()
    has_xray = (table["upper"].notna() | table["lower"].notna()).to_numpy()
    blank = ~(has_mri | has_xray)
    if blank.any():
        ledger.add(
            "load",
            f"row of {name} without any score (no MRI, no x-ray at that visit)",
            int(blank.sum()),
            int(table.loc[blank, "patient"].nunique()),
        )
    keys = ["_where", "patient", "vu", "week", *_reader(table)]
    mri_rows = table.loc[has_mri, [*keys, "mri"]]
    xray_rows = table.loc[has_xray, [*keys, "upper", "lower"]]
    if mri_rows.empty:
        raise PanelError(f"{name}: column {mapping['mri']!r} (mri=) holds no score")
    if xray_rows.empty:
        raise PanelError(f"{name}: the corner columns (upper=, lower=) hold no score")
    kinds = {
        "MRI": (mri_rows, ["mri"], mapping),
        "x-ray": (xray_rows, ["upper", "lower"], mapping),
    }
    once = {k: _read_once(rows, cols) for k, (rows, cols, _) in kinds.items()}
    multi = [k for k in kinds if not once[k] and "reader" in table.columns]
    for kind in kinds:
        rows, cols, _ = kinds[kind]
        if "reader" not in table.columns or once[kind]:
            _check_unique(rows, ["patient", "vu", "week"], cols, kind, name, mapping, reader)
        else:
            _check_readers_given(rows, kind, name, mapping)
            _check_unique(rows, ["patient", "vu", "week", "reader"], cols, kind, name, mapping)

    pat_table = _patient_table(long, patients, mapping, patient, arm, name, notes)
    order = [*pat_table["patient"], *pd.unique(table["patient"])]  # patient table's order
    wide = _assemble(table, kinds, multi, notes, name, mapping, order)
    for note in notes:
        warn_user(note, DataNote)
    return VUPanel(
        wide,
        pat_table,
        source=name,
        patients_source=f"{name} (patients)" if patients is not None else name,
        ledger=ledger,
        notes=notes,
    )


# --------------------------------------------------------------------------- columns


def _check_mapping(long: pd.DataFrame, mapping: dict[str, str], name: str) -> None:
    cols = [str(c) for c in long.columns]
    missing = [f"{k}={c!r}" for k, c in mapping.items() if c not in cols]
    if missing:
        raise PanelError(
            f"{name}: column(s) not found: {', '.join(missing)}; the table has columns {cols}"
        )
    used = list(mapping.values())
    twice = sorted({c for c in used if used.count(c) > 1})
    if twice:
        raise PanelError(f"{name}: column(s) {twice} are given for two roles")


def _reader(table: pd.DataFrame) -> list[str]:
    return ["reader"] if "reader" in table.columns else []


def _rows_text(table: pd.DataFrame, mask: np.ndarray, col: str | None = None) -> str:
    pos = np.flatnonzero(mask)
    parts = []
    for i in pos[:_SHOWN]:
        ctx = ", ".join(
            f"{k} {table[k].iat[i]!r}"
            for k in ("patient", "vu", "week", "reader")
            if k in table.columns and k != col
        )
        value = f" = {table[col].iat[i]!r}" if col is not None else ""
        parts.append(f"{table['_where'].iat[i]} ({ctx}){value}")
    more = f"; and {len(pos) - _SHOWN} more" if len(pos) > _SHOWN else ""
    return "; ".join(parts) + more


def _no_missing(table: pd.DataFrame, key: str, col: str, name: str) -> None:
    bad = table[key].isna().to_numpy()
    if bad.any():
        raise PanelError(
            f"{name}: {int(bad.sum())} row(s) with a missing value in column {col!r} "
            f"({key}=): {_rows_text(table, bad)}"
        )


def _levels(
    values: pd.Series, col: str, name: str, notes: list[str], where: pd.Series
) -> pd.Series:
    """Level labels as the spine's; one note per distinct label changed."""
    text = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    counts = text[text.map(lambda v: isinstance(v, str))].value_counts(sort=False)
    changes, label_notes = vu_label_changes({str(k): int(n) for k, n in counts.items()}, name)
    notes.extend(n.replace("column 'vu'", f"column {col!r}") for n in label_notes)
    out = text.map(lambda v: changes.get(v, v))
    bad = ~out.isin(VU_LABELS).to_numpy()
    if bad.any():
        shown = pd.unique(values[bad])[:_SHOWN]
        raise PanelError(
            f"{name}: {int(bad.sum())} row(s) with a level in column {col!r} that is not a "
            f"vertebral unit: {', '.join(map(repr, shown))} (first at "
            f"{where.iat[int(np.flatnonzero(bad)[0])]}); expected labels such as C2/3, "
            "C2-C3, C7/T1, L5-S1"
        )
    return out


def _weeks(values: pd.Series, col: str, name: str, where: pd.Series) -> pd.Series:
    """Visit weeks as whole numbers ≥ 0 (text such as ``W12`` or ``baseline`` read)."""

    def week(v: Any) -> float:
        if isinstance(v, (bool, np.bool_)):
            return np.nan
        if isinstance(v, (int, float, np.integer, np.floating)):
            return float(v)
        if isinstance(v, str):
            if v.strip().casefold() in _BASELINE:
                return 0.0
            m = _WEEK_TEXT.match(v)
            if m:
                return float(m.group(1))
        return np.nan

    uniq = pd.unique(values)
    read = {u: week(u) for u in uniq}
    num = values.map(read).to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        bad = np.isnan(num) | (num < 0) | (num != np.round(num))
    if bad.any():
        shown = ", ".join(repr(v) for v in pd.unique(values[bad])[:_SHOWN])
        raise PanelError(
            f"{name}: {int(bad.sum())} row(s) with a visit in column {col!r} (week=) that is "
            f"not a whole number of weeks ≥ 0: {shown} (first at "
            f"{where.iat[int(np.flatnonzero(bad)[0])]}); write weeks as 0, 12, 52 "
            "(or W12, baseline)"
        )
    return pd.Series(num.astype(np.int64), index=values.index)


def _numbers(values: pd.Series, col: str, name: str, where: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        raise PanelError(f"{name}: column {col!r} holds true/false values, not scores")
    num = pd.to_numeric(values, errors="coerce")
    text = (num.isna() & values.notna()).to_numpy()
    if values.dtype == object and text.any():
        blank = values.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy()
        text = text & ~blank
    if text.any():
        shown = ", ".join(repr(v) for v in pd.unique(values[text])[:_SHOWN])
        raise PanelError(
            f"{name}: {int(text.sum())} row(s) with a non-numeric score in column {col!r}: "
            f"{shown} (first at {where.iat[int(np.flatnonzero(text)[0])]})"
        )
    return num.astype("float64")


def _in_range(table: pd.DataFrame, key: str, col: str, name: str) -> None:
    """Scores in their scale's range (and whole mSASSS scores), named by the long
    table's rows: the wide table's checks would name rows the user never saw."""
    lo, hi = ASSPIMRI_RANGE if key == "mri" else MSASSS_RANGE
    values = table[key].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        out = ~np.isnan(values) & ~((values >= lo) & (values <= hi))
    scale = "ASspiMRI-a" if key == "mri" else "mSASSS corner"
    if out.any():
        raise PanelError(
            f"{name}: {int(out.sum())} row(s) with a score outside the {scale} range "
            f"{lo}–{hi} in column {col!r}: {_rows_text(table, out, key)}"
        )
    if key != "mri":
        frac = ~np.isnan(values) & (values != np.round(values))
        if frac.any():
            raise PanelError(
                f"{name}: {int(frac.sum())} row(s) with a non-integer mSASSS corner score in "
                f"column {col!r}: {_rows_text(table, frac, key)}"
            )


# --------------------------------------------------------------------------- readers


def _distinct(rows: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """The readings of one score kind, with copies of one value counted once."""
    return rows.drop_duplicates(subset=["patient", "vu", "week", *cols])


def _read_once(rows: pd.DataFrame, cols: list[str]) -> bool:
    """True when a score kind is read once per patient × level × week.

    Two different values at one patient × level × week are two readings. Equal values
    from two readers are copies of one reading when some reading of the kind has no
    reader (the MRI written onto each x-ray reader's row at a shared visit), else two
    readers who agree, kept per reader.
    """
    keys = ["patient", "vu", "week"]
    if "reader" not in rows.columns:
        return True
    if _distinct(rows, cols).duplicated(subset=keys).any():
        return False
    by_reader = rows.dropna(subset=["reader"]).drop_duplicates(subset=[*keys, "reader"])
    if not by_reader.duplicated(subset=keys).any():
        return True
    return bool(rows["reader"].isna().any())


def _check_unique(
    rows: pd.DataFrame,
    keys: list[str],
    cols: list[str],
    kind: str,
    name: str,
    mapping: dict[str, str],
    reader: str | None = None,
) -> None:
    distinct = _distinct(rows, cols if "reader" not in keys else [*cols, "reader"])
    dup = distinct.duplicated(subset=keys, keep=False).to_numpy()
    if dup.any():
        shown = _rows_text(distinct.reset_index(drop=True), dup)
        hint = (
            "; give the reader column (reader=) if the images were read by several readers"
            if reader is None and "reader" not in rows.columns
            else ""
        )
        words = " × ".join(mapping.get(k, k) for k in keys)
        raise PanelError(
            f"{name}: {int(dup.sum())} {kind} readings share one {words} with different "
            f"scores: {shown}{hint}"
        )


def _check_readers_given(rows: pd.DataFrame, kind: str, name: str, mapping: dict[str, str]):
    bad = rows["reader"].isna().to_numpy()
    if bad.any():
        raise PanelError(
            f"{name}: the {kind} is read by several readers, but {int(bad.sum())} {kind} "
            f"reading(s) have no reader in column {mapping['reader']!r}: "
            f"{_rows_text(rows.reset_index(drop=True), bad)}"
        )


# --------------------------------------------------------------------------- pivot


def _pivot(rows: pd.DataFrame, keys: list[str], col: str, prefix: str) -> pd.DataFrame:
    distinct = rows.drop_duplicates(subset=[*keys, "week"])
    wide = distinct.pivot(index=keys, columns="week", values=col)
    wide.columns = [f"{prefix}{int(w)}" for w in wide.columns]
    return wide


def _assemble(
    table: pd.DataFrame,
    kinds: dict[str, tuple[pd.DataFrame, list[str], dict]],
    multi: list[str],
    notes: list[str],
    name: str,
    mapping: dict[str, str],
    patient_order: Sequence,
) -> pd.DataFrame:
    """The wide VU table: one row per patient × level (× reader of a kind read by
    several readers), the scores of a kind read once carried to each reader's row."""
    units = table[["patient", "vu"]].drop_duplicates()
    if multi:
        rows = pd.concat(
            [kinds[k][0][["patient", "vu", "reader"]] for k in multi], ignore_index=True
        ).drop_duplicates()
        readers = _sorted(pd.unique(rows["reader"]).tolist())
        bare = units.merge(rows[["patient", "vu"]].drop_duplicates(), how="left", indicator=True)
        bare = bare[bare["_merge"] == "left_only"].drop(columns="_merge")
        if len(bare):
            filled = bare.merge(pd.DataFrame({"reader": readers}), how="cross")
            rows = pd.concat([rows, filled], ignore_index=True)
        keys = ["patient", "vu", "reader"]
    else:
        rows, keys = units, ["patient", "vu"]
        if "reader" in table.columns and table["reader"].notna().any():
            notes.append(
                f"{name}: every score is read once per patient × level × week; the reader "
                f"column {mapping['reader']!r} is not needed and left out"
            )
    wide = rows.reset_index(drop=True)
    for kind, (kind_rows, cols, _) in kinds.items():
        by = keys if kind in multi else ["patient", "vu"]
        for col in cols:
            prefix = "mri_w" if col == "mri" else f"msasss_{col}_w"
            part = _pivot(kind_rows, by, col, prefix)
            wide = wide.merge(part, left_on=by, right_index=True, how="left")
        if multi and kind not in multi:
            n_readers = int(wide.groupby(["patient", "vu"], sort=False).size().max())
            words = "MRI" if kind == "MRI" else "x-rays"
            notes.append(
                f"{name}: the {words} read once (one reading per patient × level × week), "
                f"the {'x-rays' if kind == 'MRI' else 'MRI'} by {len(_readers(wide))} readers: "
                f"each {kind} reading carried to every reader's row of its level (up to "
                f"{n_readers} rows per level, {len(wide)} rows in all)"
            )
    # complete every week of each kind (a level without a week's scores gets NaN)
    mri_weeks = sorted(kinds["MRI"][0]["week"].unique())
    xray_weeks = sorted(kinds["x-ray"][0]["week"].unique())
    columns = [mri_column(w) for w in mri_weeks]
    for w in xray_weeks:
        columns.extend(xray_columns(w))
    for c in columns:
        if c not in wide.columns:
            wide[c] = np.nan
    order: dict = {}
    for p in patient_order:
        order.setdefault(p, len(order))
    spine = {v: i for i, v in enumerate(VU_LABELS)}
    sort_keys = [wide["patient"].map(order), wide["vu"].map(spine)]
    frame = pd.DataFrame({"_p": sort_keys[0], "_v": sort_keys[1]})
    if "reader" in keys:
        readers = _sorted(pd.unique(wide["reader"]).tolist())
        frame["_r"] = wide["reader"].map({r: i for i, r in enumerate(readers)})
    idx = frame.sort_values(list(frame.columns), kind="stable").index
    wide = wide.loc[idx].reset_index(drop=True)
    return wide[[k for k in KEY_COLUMNS if k in keys] + columns]


def _readers(wide: pd.DataFrame) -> list:
    return pd.unique(wide["reader"]).tolist() if "reader" in wide.columns else []


def _sorted(values: list) -> list:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


# --------------------------------------------------------------------------- patients


def _patient_table(
    long: pd.DataFrame,
    patients: pd.DataFrame | None,
    mapping: dict[str, str],
    patient: str,
    arm: str,
    name: str,
    notes: list[str],
) -> pd.DataFrame:
    if patients is not None:
        if not isinstance(patients, pd.DataFrame):
            raise PanelError(
                f"from_long: patients must be a pandas DataFrame, got {type(patients).__name__}"
            )
        if patient not in patients.columns and "patient" in patients.columns:
            patient = "patient"  # the patient table uses the canonical name
        missing = [c for c in (patient, arm) if c not in patients.columns]
        if missing:
            raise PanelError(
                f"{name} (patients): column(s) {missing} not found (patient=, arm=); the "
                f"patient table has columns {[str(c) for c in patients.columns]}"
            )
        return patients.rename(columns={patient: "patient", arm: "arm"})
    rest = [c for c in long.columns if c not in mapping.values()]
    if arm not in rest:
        raise PanelError(
            f"{name}: no patient table and no arm column {arm!r} in the long table; give "
            "patients= (a table with the patient id and the arm) or arm="
        )
    grouped = long.groupby(patient, sort=False, dropna=False)
    per_patient = grouped[rest].nunique(dropna=False).max()
    keep = [c for c in rest if per_patient[c] <= 1]
    if arm not in keep:
        raise PanelError(f"{name}: column {arm!r} (arm=) differs between rows of one patient")
    dropped = [c for c in rest if c not in keep]
    if dropped:
        notes.append(
            f"{name}: column(s) {dropped} vary within a patient and are not scores; left out"
        )
    first = ~long[patient].duplicated().to_numpy()
    out = long.loc[first, [patient, *keep]].reset_index(drop=True)
    return out.rename(columns={patient: "patient", arm: "arm"})
