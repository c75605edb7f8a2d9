"""Descriptive counts of a VU panel, as tidy tables for a manuscript.

* :func:`inflammation_prevalence`: VUs (and patients) with MRI inflammation at each
  MRI week, by arm;
* :func:`events_by_inflammation`: the 2×2 table of new syndesmophytes (or growth)
  in VUs with vs without inflammation at each week, with the risks;
* :func:`share_in_uninflamed`: the share of all new syndesmophytes that arose in
  VUs not inflamed at each week, and in VUs never inflamed.

Inflamed means ASspiMRI-a ≥ ``threshold``. With two readers the MRI scores are the
readers' mean (``readers="mean"`` or ``"agree"``), or each reader's own
(``"per_reader"``, which adds a ``reader`` column). The event tables use
``syndesmo.derive.frame.analysis_frame``, so their VUs are exactly those a model would
use. Each function returns the table; the ``*_table`` functions return it as a
:class:`CountTable` with its title and the ledgers (why VUs were left out), and
:func:`report_tables` gives all three. Percentages are not rounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.derive.frame import (
    COUNT_EXPOSURES,
    analysis_frame,
    check_readers,
    check_threshold,
    combine_readers,
    inflamed,
    panel_arrays,
)
from syndesmo.errors import DeriveError
from syndesmo.ledger import Ledger
from syndesmo.vocabulary import reference_first, week_words

#: Label of the rows that pool both arms.
ALL_ARMS = "all"


@dataclass(frozen=True)
class CountTable:
    """A descriptive table with its title, the ledgers of what was left out and,
    where a report asks for one, a sentence with its numbers.

    ``ledgers`` maps exposure → ``Ledger`` of the VUs left out (empty for tables
    that count every scored VU).
    """

    title: str
    table: pd.DataFrame
    ledgers: dict[str, Ledger] = field(default_factory=dict)
    text: str = ""


def inflammation_prevalence(
    panel: Any, threshold: float = 1, readers: str = "mean"
) -> pd.DataFrame:
    """VUs and patients with MRI inflammation at each MRI week, by arm and overall.

    The table of :func:`prevalence_table` (see there for the columns).
    """
    return prevalence_table(panel, threshold, readers).table


def prevalence_table(panel: Any, threshold: float = 1, readers: str = "mean") -> CountTable:
    """VUs and patients with MRI inflammation at each MRI week, by arm and overall.

    All VUs with an MRI score at that week count (thoracic ones too). Columns:
    ``week``, ``arm`` (each arm, then ``"all"``), [``reader``], ``n_patients``
    (with an MRI that week), ``n_vus`` (with a score), ``n_vus_inflamed``,
    ``pct_vus_inflamed``, ``n_patients_inflamed`` (≥ 1 inflamed VU),
    ``pct_patients_inflamed``.
    """
    threshold = check_threshold(threshold)
    rule = check_readers(readers)
    units = combine_readers(panel_arrays(panel), rule)
    ids = panel.patients["patient"].to_numpy()
    arm_of = panel.patients["arm"].to_numpy()
    base = pd.DataFrame({"patient": ids[units["patient"]], "arm": arm_of[units["patient"]]})
    by_reader = "reader" in units and rule == "per_reader"
    if by_reader:
        base["reader"] = np.asarray(panel.readers, dtype=object)[units["reader"]]
    arms = reference_first(panel.patients["arm"].dropna())
    rows = []
    for j, week in enumerate(panel.mri_weeks):
        df = base.copy()
        df["scored"] = ~np.isnan(units["mri"][:, j])
        df["inflamed"] = inflamed(units["mri"][:, j], threshold) == 1.0
        df = df[df["scored"]]
        readers_here = sorted(df["reader"].unique(), key=str) if by_reader else [None]
        for reader in readers_here:
            dr = df if reader is None else df[df["reader"] == reader]
            for arm in [*arms, ALL_ARMS]:
                da = dr if arm == ALL_ARMS else dr[dr["arm"] == arm]
                per_patient = da.groupby("patient", sort=False)["inflamed"].any()
                row = {"week": int(week), "arm": arm}
                if by_reader:
                    row["reader"] = reader
                row.update(
                    n_patients=len(per_patient),
                    n_vus=len(da),
                    n_vus_inflamed=int(da["inflamed"].sum()),
                    n_patients_inflamed=int(per_patient.sum()),
                )
                rows.append(row)
    out = pd.DataFrame(rows)
    out["pct_vus_inflamed"] = _pct(out["n_vus_inflamed"], out["n_vus"])
    out["pct_patients_inflamed"] = _pct(out["n_patients_inflamed"], out["n_patients"])
    keys = ["week", "arm", *(["reader"] if by_reader else [])]
    out = out[
        [
            *keys,
            "n_patients",
            "n_vus",
            "n_vus_inflamed",
            "pct_vus_inflamed",
            "n_patients_inflamed",
            "pct_patients_inflamed",
        ]
    ]
    title = f"VUs and patients with MRI inflammation (ASspiMRI-a ≥ {threshold:g}) by week and arm"
    return CountTable(title, out)


def _pct(num: pd.Series, den: pd.Series) -> pd.Series:
    den = den.astype(float)
    return 100.0 * num.astype(float) / den.where(den > 0)


def _week_exposures(panel: Any, exposures: Sequence[str] | None) -> list[str]:
    chosen = [f"w{w}" for w in panel.mri_weeks] if exposures is None else list(exposures)
    counts = [e for e in chosen if e in COUNT_EXPOSURES]
    if counts:
        raise DeriveError(
            f"exposure(s) {counts} are counts or scores; these tables need 0/1 exposures"
        )
    return chosen


def events_by_inflammation(
    panel: Any,
    threshold: float = 1,
    readers: str = "mean",
    outcome: str = "new_syndesmophyte",
    exposures: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The 2×2 counts of ``outcome`` in VUs with vs without inflammation.

    The table of :func:`events_table` (see there for the columns).
    """
    return events_table(panel, threshold, readers, outcome, exposures).table


def events_table(
    panel: Any,
    threshold: float = 1,
    readers: str = "mean",
    outcome: str = "new_syndesmophyte",
    exposures: Sequence[str] | None = None,
) -> CountTable:
    """The 2×2 counts of ``outcome`` in VUs with vs without inflammation.

    One pair of rows per exposure (default: inflamed at each MRI week, ``w0``,
    ``w24``, …). Columns: ``outcome``, ``exposure``, ``mri`` (``"inflamed"`` /
    ``"not inflamed"``; for ``never`` the exposed rows are the never-inflamed VUs),
    ``n_vus`` (eligible VUs), ``n_events``, ``n_no_event``, ``pct_events`` (risk in
    %), and per exposure ``risk_ratio`` and ``odds_ratio`` (crude, exposed vs
    unexposed; NaN where undefined); ``ledgers`` maps exposure → Ledger.
    """
    rows, ledgers = [], {}
    for exposure in _week_exposures(panel, exposures):
        aframe = analysis_frame(panel, outcome, exposure, threshold, readers=readers)
        ledgers[exposure] = aframe.ledger
        frame = aframe.data
        cells = {}
        for value, label in ((1, "inflamed"), (0, "not inflamed")):
            if exposure == "never":
                label = "never inflamed" if value == 1 else "inflamed at some week"
            y = frame.loc[frame["mri"] == value, outcome]
            cells[value] = (len(y), int(y.sum()))
            rows.append(
                {
                    "outcome": outcome,
                    "exposure": exposure,
                    "mri": label,
                    "n_vus": len(y),
                    "n_events": int(y.sum()),
                    "n_no_event": int(len(y) - y.sum()),
                }
            )
        (n1, e1), (n0, e0) = cells[1], cells[0]
        rr = (e1 / n1) / (e0 / n0) if n1 and n0 and e0 else np.nan
        odds_den = e0 * (n1 - e1)
        orr = (e1 * (n0 - e0)) / odds_den if odds_den else np.nan
        for row in rows[-2:]:
            row["risk_ratio"], row["odds_ratio"] = rr, orr
    out = pd.DataFrame(rows)
    out.insert(6, "pct_events", _pct(out["n_events"], out["n_vus"]))
    title = (
        f"{outcome.replace('_', ' ').capitalize()} in VUs with vs without MRI inflammation "
        f"(ASspiMRI-a ≥ {threshold:g})"
    )
    return CountTable(title, out, ledgers)


def share_in_uninflamed(
    panel: Any,
    threshold: float = 1,
    readers: str = "mean",
    outcome: str = "new_syndesmophyte",
) -> pd.DataFrame:
    """Of all events (new syndesmophytes), how many arose in VUs without inflammation.

    The table of :func:`share_table` (see there for the columns).
    """
    return share_table(panel, threshold, readers, outcome).table


def share_table(
    panel: Any,
    threshold: float = 1,
    readers: str = "mean",
    outcome: str = "new_syndesmophyte",
) -> CountTable:
    """Of all events (new syndesmophytes), how many arose in VUs without inflammation.

    One row per MRI week (VUs not inflamed at that week) and one for VUs never
    inflamed at any MRI week. Denominator: the events among the VUs eligible for
    that exposure (those with the MRI needed). Columns: ``outcome``, ``vus``
    (which VUs), ``exposure``, ``n_events``, ``n_events_uninflamed``,
    ``pct_events_uninflamed``; ``ledgers`` maps exposure → Ledger.
    """
    rows, ledgers = [], {}
    specs = [(f"w{w}", 0, f"not inflamed at {week_words(w)}") for w in panel.mri_weeks]
    specs.append(("never", 1, "never inflamed (all MRI weeks)"))
    for exposure, value, label in specs:
        aframe = analysis_frame(panel, outcome, exposure, threshold, readers=readers)
        ledgers[exposure] = aframe.ledger
        frame = aframe.data
        events = frame[outcome] == 1
        rows.append(
            {
                "outcome": outcome,
                "vus": label,
                "exposure": exposure,
                "n_events": int(events.sum()),
                "n_events_uninflamed": int((events & (frame["mri"] == value)).sum()),
            }
        )
    out = pd.DataFrame(rows)
    out["pct_events_uninflamed"] = _pct(out["n_events_uninflamed"], out["n_events"])
    title = (
        f"Share of all {outcome.replace('_', ' ')} events in VUs without MRI inflammation "
        f"(ASspiMRI-a ≥ {threshold:g})"
    )
    return CountTable(title, out, ledgers)


def report_tables(
    panel: Any,
    exposures: Sequence[str] | None = None,
    threshold: float = 1,
    readers: str = "mean",
) -> dict[str, CountTable]:
    """The three descriptive tables for new syndesmophytes, each a :class:`CountTable`
    with its title: ``inflammation`` (:func:`prevalence_table`), ``events``
    (:func:`events_table` for the 0/1 ones among ``exposures``; default each MRI
    week) and ``share_uninflamed`` (:func:`share_table`). This is what ``syndesmo
    describe`` prints and the reproduction report shows.
    """
    binary = None if exposures is None else [e for e in exposures if e not in COUNT_EXPOSURES]
    return {
        "inflammation": prevalence_table(panel, threshold, readers),
        "events": events_table(panel, threshold, readers, exposures=binary or None),
        "share_uninflamed": share_table(panel, threshold, readers),
    }
