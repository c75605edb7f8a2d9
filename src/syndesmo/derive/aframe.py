"""The analysis frame: the rows of an analysis together with the ledger of rows left out.

``syndesmo.derive.frame.analysis_frame`` returns an :class:`AnalysisFrame`: the
DataFrame (``frame.data``), its :class:`~syndesmo.ledger.Ledger` (``frame.ledger``:
every VU left out, with the reason) and the settings it was made with
(``frame.settings``: outcome, exposure, threshold, readers, covariates, …).
``sy.fit`` and every analysis take it where they take a DataFrame, and the ledger
travels with it into ``fit.ledger`` and the report.

The ledger is a value held beside the data, not hidden in ``DataFrame.attrs``
(pandas drops ``attrs`` on most operations). Keeping it is easy:

* ``frame.merge(labs, on="patient")`` adds covariates and returns an
  ``AnalysisFrame`` with the same ledger (rows an inner merge drops are counted);
* ``frame.assign(log_crp=...)`` adds columns, ``frame.dropna([...])`` and
  ``frame.drop_rows(mask, reason)`` leave rows out and count them;
* after working on ``frame.data`` with pandas, ``frame.with_data(df, reason=...)``
  wraps the result again (fewer rows need a reason), or pass the ledger to the fit:
  ``sy.fit(formula, df, ledger=frame.ledger)``.

Indexing rows of an ``AnalysisFrame`` directly (``frame[mask]``) is refused, because
the rows would leave without a trace; ``frame["mri"]`` (a column) works as on a
DataFrame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.errors import DeriveError
from syndesmo.ledger import Ledger

#: Merges an analysis frame allows: its rows stay (``left``) or drop and are counted
#: (``inner``).
MERGE_HOW = ("left", "inner")


class AnalysisFrame:
    """The rows of an analysis, the ledger of rows left out, and the settings.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per unit analysed (e.g. per eligible VU).
    ledger : Ledger, optional
        The rows left out before ``data`` (default: none).
    settings : mapping, optional
        How the frame was made (outcome, exposure, threshold, readers, …).

    Notes
    -----
    The frame is a value: methods return new frames and never change this one;
    ``ledger`` and ``settings`` are copies. See the module docstring for the ways
    to add covariates without losing the ledger.
    """

    __slots__ = ("_data", "_ledger", "_settings")

    def __init__(
        self,
        data: pd.DataFrame,
        ledger: Ledger | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(data, pd.DataFrame):
            raise DeriveError(f"an analysis frame holds a DataFrame, got {type(data).__name__}")
        if ledger is not None and not isinstance(ledger, Ledger):
            raise DeriveError(f"ledger must be a syndesmo Ledger, got {type(ledger).__name__}")
        self._data = data
        self._ledger = Ledger() if ledger is None else ledger.copy()
        self._settings = dict(settings or {})

    # ------------------------------------------------------------------ the parts

    @property
    def data(self) -> pd.DataFrame:
        """The DataFrame of the rows analysed."""
        return self._data

    @property
    def ledger(self) -> Ledger:
        """A copy of the ledger: the rows left out before these, with the reasons."""
        return self._ledger.copy()

    @property
    def settings(self) -> Mapping[str, Any]:
        """How the frame was made (read-only): outcome, exposure, threshold, …"""
        return MappingProxyType(self._settings)

    # ------------------------------------------------------------------ read like a DataFrame

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, column: object) -> bool:
        return column in self._data.columns

    @property
    def columns(self) -> pd.Index:
        """The column names of ``data``."""
        return self._data.columns

    @property
    def shape(self) -> tuple[int, int]:
        """``data.shape``."""
        return self._data.shape

    def __getitem__(self, key: Any) -> pd.Series | pd.DataFrame:
        """A column (``frame["mri"]``) or a list of columns, as from ``data``.

        Raises
        ------
        DeriveError
            For a row selection (a boolean mask, a slice, a callable): rows leave
            only through :meth:`drop_rows`, so that the ledger counts them.
        """
        if _selects_rows(key):
            raise DeriveError(
                "select rows of an analysis frame with frame.drop_rows(mask, reason) so the "
                "ledger counts them, or work on frame.data and pass ledger=frame.ledger to "
                "the fit"
            )
        return self._data[key]

    def __repr__(self) -> str:
        what = ", ".join(f"{k}={v!r}" for k, v in self._settings.items() if v not in (None, []))
        left = f"{self._ledger.n_excluded} rows left out" if len(self._ledger) else "none left out"
        return f"AnalysisFrame({len(self._data)} rows; {left}; {what})\n{self._data!r}"

    def _repr_html_(self) -> str:
        head = self._data._repr_html_() or ""
        return f"<p>{self._summary_line()}</p>{head}{self._ledger.to_frame().to_html(index=False)}"

    def _summary_line(self) -> str:
        return (
            f"AnalysisFrame: {len(self._data)} rows analysed, "
            f"{self._ledger.n_excluded} rows left out (ledger below)"
        )

    # ------------------------------------------------------------------ new frames

    def copy(self) -> AnalysisFrame:
        """A copy with its own DataFrame, ledger and settings."""
        return AnalysisFrame(self._data.copy(), self._ledger, self._settings)

    def with_data(
        self, data: pd.DataFrame, *, reason: str | None = None, step: str = "user"
    ) -> AnalysisFrame:
        """This frame's ledger and settings around a DataFrame made from ``data``.

        Parameters
        ----------
        data : pandas.DataFrame
            The rows after your own pandas work (merges, new columns, filters).
        reason : str, optional
            Why rows were left out; required when ``data`` has fewer rows than the
            frame, and recorded in the ledger at ``step``.
        step : str
            The ledger's step for rows left out (default ``"user"``).

        Returns
        -------
        AnalysisFrame

        Raises
        ------
        DeriveError
            When ``data`` has more rows than the frame (a merge duplicated rows), or
            fewer and no ``reason`` says why.
        """
        if not isinstance(data, pd.DataFrame):
            raise DeriveError(f"with_data needs a DataFrame, got {type(data).__name__}")
        lost = len(self._data) - len(data)
        if lost < 0:
            raise DeriveError(
                f"the new data has {len(data)} rows, more than the analysis frame's "
                f"{len(self._data)}: did a merge duplicate rows? Merge on a key that is "
                "unique in the added table"
            )
        ledger = self._ledger.copy()
        if lost > 0:
            if not reason:
                raise DeriveError(
                    f"the new data has {lost} rows fewer than the analysis frame; say why "
                    "with reason= so the ledger counts them"
                )
            ledger.add(step, reason, lost, _patients_lost(self._data, data))
        return AnalysisFrame(data, ledger, self._settings)

    def assign(self, **columns: Any) -> AnalysisFrame:
        """New columns, as ``DataFrame.assign``; the rows and the ledger stay."""
        return AnalysisFrame(self._data.assign(**columns), self._ledger, self._settings)

    def merge(
        self,
        right: pd.DataFrame | pd.Series,
        on: str | Sequence[str] | None = None,
        *,
        how: str = "left",
        **kwargs: Any,
    ) -> AnalysisFrame:
        """Add the columns of ``right`` (e.g. laboratory values by patient).

        Parameters
        ----------
        right : pandas.DataFrame or named Series
            The table to add; each row of the frame may match at most one of its rows.
        on : str or list of str, optional
            Key column(s), as ``DataFrame.merge`` (or give ``left_on``/``right_on``).
        how : {"left", "inner"}
            ``"left"`` keeps every row (an unmatched row gets missing values, which
            the fit counts in its ledger); ``"inner"`` leaves unmatched rows out and
            counts them here.
        **kwargs
            Passed to ``DataFrame.merge`` (not ``how``, ``validate`` or ``indicator``).

        Returns
        -------
        AnalysisFrame
            The same rows in the same order (less those an inner merge drops), the
            same ledger and settings.

        Raises
        ------
        DeriveError
            For another ``how``, a key repeated in ``right``, or added columns whose
            names the frame already has.
        """
        if how not in MERGE_HOW:
            raise DeriveError(
                f"unknown merge how {how!r}; choose one of {', '.join(MERGE_HOW)} "
                "(an analysis frame keeps its rows or counts those it leaves out)"
            )
        reserved = {"validate", "indicator", "suffixes"} & set(kwargs)
        if reserved:
            raise DeriveError(
                f"merge sets {', '.join(sorted(reserved))} itself (many-to-one, no suffixes)"
            )
        right_frame = right.to_frame() if isinstance(right, pd.Series) else right
        keys = _merge_keys(on, kwargs, self._data, right_frame)
        clash = [c for c in right_frame.columns if c in self._data.columns and c not in keys]
        if clash:
            raise DeriveError(
                f"column(s) {clash} are already in the analysis frame; drop or rename them "
                "in the table you merge"
            )
        try:
            merged = self._data.merge(
                right_frame, on=on, how="left", validate="many_to_one", indicator=True, **kwargs
            )
        except pd.errors.MergeError as exc:
            raise DeriveError(f"cannot merge into the analysis frame: {exc}") from None
        matched = (merged.pop("_merge") == "both").to_numpy()
        merged.index = self._data.index
        ledger = self._ledger.copy()
        if how == "inner" and not matched.all():
            gone = ~matched
            ledger.add(
                "merge",
                f"no matching row in the merged table (on {', '.join(map(str, keys))})",
                int(gone.sum()),
                _n_patients(merged.loc[gone]),
            )
            merged = merged.loc[matched].reset_index(drop=True)
        return AnalysisFrame(merged, ledger, self._settings)

    def dropna(self, columns: Sequence[str], *, step: str = "analysis") -> AnalysisFrame:
        """Leave out rows with a missing value in ``columns``, counted in the ledger.

        The ledger entry reads "missing value in a, b" (the columns that had one).
        """
        columns = [c for c in columns if c in self._data.columns]
        na = self._data[columns].isna()
        incomplete = na.any(axis=1).to_numpy()
        if not incomplete.any():
            return AnalysisFrame(self._data, self._ledger, self._settings)
        which = [c for c in columns if na[c].any()]
        return self.drop_rows(incomplete, f"missing value in {', '.join(which)}", step=step)

    def drop_rows(self, mask: Any, reason: str, *, step: str = "analysis") -> AnalysisFrame:
        """Leave out the rows where ``mask`` is true and count them in the ledger.

        Parameters
        ----------
        mask : array-like of bool
            One value per row.
        reason : str
            Why, for the ledger.
        step : str
            The ledger's step (default ``"analysis"``).

        Returns
        -------
        AnalysisFrame
        """
        drop = np.asarray(mask, dtype=bool)
        if drop.shape != (len(self._data),):
            raise DeriveError(
                f"drop_rows needs one True/False per row ({len(self._data)}), "
                f"got shape {drop.shape}"
            )
        ledger = self._ledger.copy()
        if drop.any():
            ledger.add(step, reason, int(drop.sum()), _n_patients(self._data.loc[drop]))
        data = self._data.loc[~drop].reset_index(drop=True)
        return AnalysisFrame(data, ledger, self._settings)


def _selects_rows(key: Any) -> bool:
    """True for keys pandas reads as a row selection: masks, slices, callables."""
    if isinstance(key, slice) or callable(key):
        return True
    if isinstance(key, pd.Series | pd.Index | np.ndarray):
        return pd.api.types.is_bool_dtype(key.dtype)
    if isinstance(key, list):
        return any(isinstance(k, bool | np.bool_) for k in key)
    return False


def _merge_keys(
    on: Any, kwargs: Mapping[str, Any], data: pd.DataFrame, right: pd.DataFrame
) -> list:
    """The key columns of a merge: ``on``, else ``left_on``, else the shared columns."""
    if on is None:
        on = kwargs.get("left_on")
    if on is None:
        return [c for c in data.columns if c in right.columns]
    return [on] if isinstance(on, str) else list(on)


def _n_patients(rows: pd.DataFrame) -> int | None:
    return int(rows["patient"].nunique()) if "patient" in rows.columns else None


def _patients_lost(before: pd.DataFrame, after: pd.DataFrame) -> int | None:
    """Patients of the rows that left, when ``after`` kept ``before``'s index labels."""
    if "patient" not in before.columns or not after.index.isin(before.index).all():
        return None
    if before.index.has_duplicates:
        return None
    return _n_patients(before.loc[~before.index.isin(after.index)])


def split_frame(
    data: pd.DataFrame | AnalysisFrame, ledger: Ledger | None = None
) -> tuple[pd.DataFrame, Ledger | None]:
    """The DataFrame and the ledger of ``data`` (an AnalysisFrame or a DataFrame).

    A DataFrame brings no ledger of its own, so ``ledger`` is returned with it; an
    AnalysisFrame brings its own, and giving ``ledger`` too is refused.

    Raises
    ------
    DeriveError
        When both an AnalysisFrame and ``ledger`` are given.
    """
    if isinstance(data, AnalysisFrame):
        if ledger is not None:
            raise DeriveError(
                "the analysis frame brings its own ledger; give ledger= only with a "
                "plain DataFrame (e.g. frame.data after your own merges)"
            )
        return data.data, data.ledger
    if ledger is not None and not isinstance(ledger, Ledger):
        raise DeriveError(f"ledger must be a syndesmo Ledger, got {type(ledger).__name__}")
    return data, ledger
