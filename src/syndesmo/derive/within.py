"""Split an exposure into its within-patient and between-patient parts.

``within_between(frame, ["mri"], group="patient")`` adds, for each column ``c``,

* ``c_between``: the mean of ``c`` over the group's rows (the patient's mean), and
* ``c_within``: ``c − c_between`` (the row's deviation from its patient's mean).

Both enter one GLMM, ``y ~ mri_within + mri_between + (1|patient)`` — the
within–between or *hybrid* model (Neuhaus & Kalbfleisch, Biometrics 1998;54:638–45;
Mundlak, Econometrica 1978;46:69–85): the coefficient of ``mri_within`` compares VUs
of the same patient, as conditional logistic regression does, and is not biased by a
patient propensity for the outcome that goes with the patient's mean exposure; the
coefficient of ``mri_between`` carries the between-patient association.

The means are taken over the rows of the frame as given, so call it on the rows
that are analysed (an analysis frame after its eligibility rules and complete cases);
a row with a missing value in ``c`` gets missing ``c_within`` and does not count in
its patient's mean. Linear time in rows (one ``groupby().transform``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import pandas as pd

from syndesmo.derive.aframe import AnalysisFrame
from syndesmo.errors import DeriveError

#: Suffixes of the two columns ``within_between`` adds.
WITHIN_SUFFIX, BETWEEN_SUFFIX = "_within", "_between"
#: The key of ``AnalysisFrame.settings`` that records the split columns.
SETTINGS_KEY = "within_between"


@overload
def within_between(
    frame: AnalysisFrame, columns: Sequence[str] | str, group: str = ...
) -> AnalysisFrame: ...


@overload
def within_between(
    frame: pd.DataFrame, columns: Sequence[str] | str, group: str = ...
) -> pd.DataFrame: ...


def within_between(
    frame: AnalysisFrame | pd.DataFrame, columns: Sequence[str] | str, group: str = "patient"
) -> AnalysisFrame | pd.DataFrame:
    """Add ``<col>_within`` (deviation from the group mean) and ``<col>_between``.

    Parameters
    ----------
    frame : AnalysisFrame or pandas.DataFrame
        The rows analysed. An ``AnalysisFrame`` keeps its ledger, and its settings
        record the split under ``"within_between"`` (column → the two new names and
        the group); a DataFrame comes back as a DataFrame.
    columns : str or sequence of str
        Numeric columns to split (e.g. ``["mri"]``).
    group : str
        The grouping column (default ``"patient"``).

    Returns
    -------
    AnalysisFrame or pandas.DataFrame
        The same rows in the same order with two more columns per column.

    Raises
    ------
    DeriveError
        For ``frame`` neither an ``AnalysisFrame`` nor a DataFrame; an empty
        ``columns``; a missing or non-numeric column, or a column that is the
        ``group`` column itself; a missing group column or a missing group value;
        or a new column name the frame already has.
    """
    data = frame.data if isinstance(frame, AnalysisFrame) else frame
    if not isinstance(data, pd.DataFrame):
        raise DeriveError(
            f"within_between needs an AnalysisFrame or a DataFrame, got {type(frame).__name__}"
        )
    columns = [columns] if isinstance(columns, str) else list(columns)
    if not columns:
        raise DeriveError("within_between: name at least one column to split, e.g. ['mri']")
    if group not in data.columns:
        raise DeriveError(
            f"within_between: no group column {group!r}; columns are {list(data.columns)}"
        )
    keys = data[group]
    if keys.isna().any():
        row = int(keys.isna().to_numpy().nonzero()[0][0])
        raise DeriveError(f"within_between: group column {group!r} is missing in row {row + 1}")
    added: dict[str, pd.Series] = {}
    record: dict[str, dict[str, str]] = {}
    for col in columns:
        if col not in data.columns:
            raise DeriveError(
                f"within_between: no column {col!r}; columns are {list(data.columns)}"
            )
        if col == group:
            raise DeriveError(f"within_between: {col!r} is the group column itself")
        values = data[col]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            raise DeriveError(
                f"within_between: column {col!r} is not numeric (dtype {values.dtype})"
            )
        within, between = f"{col}{WITHIN_SUFFIX}", f"{col}{BETWEEN_SUFFIX}"
        for name in (within, between):
            if name in data.columns or name in added:
                raise DeriveError(
                    f"within_between: the frame already has a column {name!r}; drop it first"
                )
        x = values.astype(float)
        mean = x.groupby(keys.to_numpy(), sort=False).transform("mean")
        mean.index = data.index
        added[within] = x - mean
        added[between] = mean
        record[col] = {"within": within, "between": between, "group": group}
    if isinstance(frame, AnalysisFrame):
        out = frame.assign(**added)
        settings = dict(frame.settings)
        settings[SETTINGS_KEY] = {**dict(settings.get(SETTINGS_KEY) or {}), **record}
        return AnalysisFrame(out.data, out.ledger, settings)
    return data.assign(**added)
