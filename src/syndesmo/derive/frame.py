"""Outcomes and exposures derived from the scores of a VU panel.

Two layers, one set of rules:

* **array core** (numpy only, no pandas): :func:`inflamed`, :func:`exposure_values`,
  :func:`corner_outcome`, :func:`combine_readers` and :func:`derive_arrays`. The
  simulator and the power simulation call these for thousands of replicates;
* **frame layer**: :func:`analysis_frame` turns a ``VUPanel`` into one row per
  eligible VU for a model, and counts every VU left out in a ``Ledger``.

This module knows nothing of models.

Outcomes (baseline = first x-ray week, follow-up = last x-ray week; a corner "has
a syndesmophyte" when its score is ≥ 2 and "is bridged" when it is ≥ 3; with the
``"mean"`` reader rule the scores are the readers' mean, so these are comparisons
of a mean, e.g. a syndesmophyte when the mean corner score is ≥ 2):

* ``new_syndesmophyte``: at risk = a VU with no corner ≥ 2 at baseline; event = a
  corner ≥ 2 at follow-up.
* ``growth``: at risk = a VU with a corner ≥ 2 at baseline that can still grow,
  i.e. not both corners bridged (≥ 3). A VU with one bridged corner (3) and the
  other below 3 is at risk (the other corner can still form or bridge); a VU
  whose both corners are 3 cannot grow and is "not at risk". Event = a corner
  that was a non-bridging syndesmophyte (≥ 2 and < 3) becomes bridging (≥ 3), or a
  corner without a syndesmophyte (< 2) gains one (≥ 2).

Exposures (inflamed = ASspiMRI-a score ≥ ``threshold``; baseline = first MRI week)
follow the grammar of ``syndesmo.vocabulary``, read against the panel's own MRI
weeks: ``w{week}`` for each MRI week; ``w{a}_and_w{b}`` / ``w{a}_or_w{b}`` for two
(or more) MRI weeks a < b (e.g. ``w0_and_w24`` persistent, ``w12_or_w52``); ``any``,
``all``, ``never`` (over all MRI weeks); ``resolved`` (inflamed at baseline, at no
later week); ``new`` (not at baseline, at some later week); ``n_timepoints``
(number of weeks inflamed, 0…n_weeks); ``max_score`` (the highest score over the
weeks, 0–6; the threshold is not used). An exposure needs every MRI week it refers
to: if one of them is missing the exposure is undefined (NaN), never 0. ``any`` and
the other all-week exposures therefore need all MRI weeks.

Two or more readers (a ``reader`` column), rule ``readers=``:

* ``"mean"``: per corner and week, the mean of the readers' scores (NaN if a reader
  present for that VU has no score); the outcome rules above are then applied to
  the mean scores. MRI scores are averaged the same way before the threshold.
* ``"agree"``: each reader's outcome is derived from their own scores; a VU is at
  risk only if every reader finds it at risk, and has the event only if every
  reader scores the event (a disagreement counts as no event). MRI and
  ``baseline_corner`` use the readers' mean, as for ``"mean"``.
* ``"per_reader"`` (alias ``"reader"``): one row per VU × reader with that
  reader's own scores; ``reader`` stays a column for a model term.

Readers are combined over the reader rows present for a VU. An MRI read once (no
VU with two MRI readings at a week) with radiographs read by several readers is
carried to each reader's row of its VU (``carry_single_mri``), and the frame's
ledger notes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.checks import check_choice, check_number
from syndesmo.derive.aframe import AnalysisFrame
from syndesmo.errors import DeriveError, NoEligibleError
from syndesmo.ledger import Ledger
from syndesmo.panel.spine import VU_LABELS, VU_REGION
from syndesmo.vocabulary import ARM, parse_exposure, reader_rule, reference_first

# Re-exported: the words of syndesmo.vocabulary the frame layer is known by.
from syndesmo.vocabulary import COUNT_EXPOSURES as COUNT_EXPOSURES
from syndesmo.vocabulary import READER_RULES as READER_RULES
from syndesmo.vocabulary import VU_COVARIATES as VU_COVARIATES
from syndesmo.vocabulary import VU_OUTCOMES as OUTCOMES
from syndesmo.vocabulary import available_exposures as available_exposures

#: Region codes used by the array layer (index into this tuple).
REGIONS: tuple[str, ...] = ("cervical", "lumbar", "thoracic")
_REGION_CODE = {r: i for i, r in enumerate(REGIONS)}

#: Corner-score cut-offs (mSASSS): syndesmophyte ≥ 2, bridging ≥ 3.
SYNDESMOPHYTE = 2.0
BRIDGE = 3.0

#: Why a VU is not in the analysis; codes of ``derive_arrays(...)["reason"]`` in the
#: order the ledger reports them. 0 means eligible.
ELIGIBLE, THORACIC, NOT_AT_RISK, XRAY_MISSING, MRI_MISSING = 0, 1, 2, 3, 4
REASON_CODES: tuple[int, ...] = (THORACIC, NOT_AT_RISK, XRAY_MISSING, MRI_MISSING)

#: Columns the analysis frame makes itself (so never taken from the patient table).
FRAME_COLUMNS: tuple[str, ...] = (
    "patient",
    "vu",
    "reader",
    "region",
    "mri",
    "baseline_corner",
    *OUTCOMES,
)

# --------------------------------------------------------------------------- exposures


def needed_weeks(exposure: str, mri_weeks: Sequence[int]) -> list[int]:
    """The MRI weeks ``exposure`` refers to (the grammar of ``syndesmo.vocabulary``).

    Raises
    ------
    DeriveError
        For a name the MRI weeks cannot give; the message lists the exposures
        available for these weeks.
    """
    weeks = sorted(int(w) for w in mri_weeks)
    return parse_exposure(exposure, weeks).needed_weeks(weeks)


def check_threshold(threshold: Any) -> float:
    """``threshold`` as a float in (0, 6] (an ASspiMRI-a score), else ``DeriveError``."""
    return check_number(
        threshold, "threshold (ASspiMRI-a score)", low=0, high=6, low_open=True, error=DeriveError
    )


def inflamed(mri: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """1.0 where ``mri ≥ threshold``, 0.0 below it, NaN where the score is missing."""
    mri = np.asarray(mri, dtype=float)
    with np.errstate(invalid="ignore"):
        out = (mri >= threshold).astype(float)
    out[np.isnan(mri)] = np.nan
    return out


def exposure_values(
    mri: np.ndarray, mri_weeks: Sequence[int], exposure: str, threshold: float = 1.0
) -> np.ndarray:
    """The exposure of each row of ``mri`` (shape n × n_weeks, columns in ``mri_weeks``
    order), as floats: 0/1 for binary exposures, a count for ``n_timepoints``, a
    score for ``max_score``; NaN where a needed week is missing.
    """
    weeks = [int(w) for w in mri_weeks]
    if weeks != sorted(weeks):
        raise DeriveError(f"MRI weeks must be in increasing order, got {weeks}")
    parsed = parse_exposure(exposure, weeks)
    need = parsed.needed_weeks(weeks)
    mri = np.asarray(mri)
    if mri.ndim != 2 or mri.shape[1] != len(weeks):
        raise DeriveError(
            f"MRI scores must have one column per MRI week {weeks}, got shape {mri.shape}"
        )
    cols = [weeks.index(w) for w in need]
    kind = parsed.kind
    if kind == "week":  # one column: the others need not be read (nor converted)
        return inflamed(mri[:, cols[0]], threshold)
    mri = mri.astype(float, copy=False)
    missing = _any_column(np.isnan(mri[:, cols]))
    if kind == "max_score":
        out = mri.max(axis=1)
    else:
        inf = inflamed(mri, threshold)
        inf[np.isnan(inf)] = 0.0  # rows with a needed week missing are set to NaN below
        if kind == "week":
            out = inf[:, cols[0]]
        elif kind == "and":
            out = inf[:, cols].min(axis=1)
        elif kind == "or":
            out = inf[:, cols].max(axis=1)
        elif kind == "any":
            out = inf.max(axis=1)
        elif kind == "all":
            out = inf.min(axis=1)
        elif kind == "never":
            out = 1.0 - inf.max(axis=1)
        elif kind == "resolved":
            out = inf[:, 0] * (1.0 - inf[:, 1:].max(axis=1))
        elif kind == "new":
            out = (1.0 - inf[:, 0]) * inf[:, 1:].max(axis=1)
        else:  # n_timepoints
            out = inf.sum(axis=1)
    out = np.array(out, dtype=float)
    out[missing] = np.nan
    return out


# --------------------------------------------------------------------------- outcomes


def corner_outcome(
    baseline: np.ndarray, followup: np.ndarray, outcome: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """At-risk and event status of VUs from their two corner scores.

    ``baseline`` and ``followup`` have shape (n, 2): the (upper, lower) corner scores
    at the first and last x-ray week (means of readers allowed). Returns boolean
    arrays ``(baseline_known, at_risk, followup_known, event)``; ``at_risk`` is only
    meaningful where ``baseline_known`` and ``event`` where all three hold.
    """
    check_choice(outcome, OUTCOMES, "outcome", error=DeriveError)
    b = np.asarray(baseline, dtype=float)
    f = np.asarray(followup, dtype=float)
    b_known = ~_any_column(np.isnan(b))
    f_known = ~_any_column(np.isnan(f))
    with np.errstate(invalid="ignore"):
        s_b, br_b = b >= SYNDESMOPHYTE, b >= BRIDGE
        s_f, br_f = f >= SYNDESMOPHYTE, f >= BRIDGE
    if outcome == "new_syndesmophyte":
        at_risk = ~_any_column(s_b)
        event = _any_column(s_f)
    else:
        at_risk = s_b.any(axis=1) & ~br_b.all(axis=1)
        event = ((s_b & ~br_b & br_f) | (~s_b & s_f)).any(axis=1)
    return b_known, at_risk & b_known, f_known, event & b_known & f_known


def _any_column(flags: np.ndarray) -> np.ndarray:
    """``flags.any(axis=1)`` for the few columns of a score table, column by column
    (numpy's reduction over a short last axis is several times slower)."""
    if flags.shape[1] == 0:
        return np.zeros(flags.shape[0], dtype=bool)
    out = flags[:, 0].copy()
    for j in range(1, flags.shape[1]):
        out |= flags[:, j]
    return out


# --------------------------------------------------------------------------- readers


def check_readers(readers: str) -> str:
    """The canonical name of a readers rule (``"reader"`` → ``"per_reader"``), else
    ``DeriveError`` listing the rules (``syndesmo.vocabulary.reader_rule``)."""
    return reader_rule(readers)


def per_reader_rows(panel: Any, readers: str) -> bool:
    """Whether ``analysis_frame(panel, ..., readers=readers)`` has one row per reading
    (a ``reader`` column): the rule ``"per_reader"`` on a panel with readers."""
    return check_readers(readers) == "per_reader" and "reader" in panel.vu.columns


def _units(patient: np.ndarray, vu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group rows by (patient, vu): (first row of each unit in row order, unit of each row)."""
    key = np.asarray(patient, dtype=np.int64) * (int(np.max(vu)) + 1) + np.asarray(vu)
    if np.all(key[1:] >= key[:-1]):  # rows in (patient, vu) order: units are runs
        new = np.r_[True, key[1:] != key[:-1]]
        return np.flatnonzero(new), np.cumsum(new) - 1
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.ravel()]


def _unit_mean(values: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """Mean of ``values`` (rows × …) within units; NaN if any row of the unit is NaN."""
    flat = values.reshape(len(values), -1)
    size = len(flat) // n_units if n_units else 0
    if size and size * n_units == len(flat) and np.array_equal(unit, np.arange(len(flat)) // size):
        # every unit is a run of ``size`` rows (a simulated cohort's readers): the sums
        # bincount makes, in its order (0 + first row + second row …), by strides
        total = 0.0 + flat[0::size]
        for i in range(1, size):
            total = total + flat[i::size]
        return (total / float(size)).reshape((n_units, *values.shape[1:]))
    total = np.empty((n_units, flat.shape[1]))
    for c in range(flat.shape[1]):  # bincount adds in row order, as np.add.at (faster)
        total[:, c] = np.bincount(unit, weights=flat[:, c], minlength=n_units)
    count = np.bincount(unit, minlength=n_units).astype(float)
    return (total / count[:, None]).reshape((n_units, *values.shape[1:]))


def _unit_all(flags: np.ndarray, unit: np.ndarray, n_units: int) -> np.ndarray:
    """True where ``flags`` holds for every row of the unit."""
    bad = np.bincount(unit, weights=(~flags).astype(float), minlength=n_units)
    return bad == 0


def combine_readers(arrays: Mapping[str, np.ndarray], readers: str = "mean") -> dict:
    """Scores per VU (``"mean"``/``"agree"``) or per VU × reader (``"per_reader"``).

    Returns a dict with ``patient``, ``vu``, ``region``, ``row`` (the first input row
    of each unit), ``unit`` (the unit of each input row), ``mri`` and ``corners``
    (readers' means for the combined rules). Without a ``reader`` array, or with
    ``"per_reader"``, rows are returned as they are.
    """
    rule = check_readers(readers)
    n = len(arrays["patient"])
    reader = arrays.get("reader")
    single = reader is None or len(reader) == 0 or np.min(reader) == np.max(reader)
    if rule == "per_reader" or single:
        rows = np.arange(n)
        out = {k: np.asarray(arrays[k]) for k in ("patient", "vu", "region", "mri", "corners")}
        out.update(row=rows, unit=rows)
        if reader is not None:
            out["reader"] = np.asarray(reader)
        return out
    first, unit = _units(arrays["patient"], arrays["vu"])
    k = len(first)
    return {
        "patient": np.asarray(arrays["patient"])[first],
        "vu": np.asarray(arrays["vu"])[first],
        "region": np.asarray(arrays["region"])[first],
        "row": first,
        "unit": unit,
        "mri": _unit_mean(np.asarray(arrays["mri"], dtype=float), unit, k),
        "corners": _unit_mean(np.asarray(arrays["corners"], dtype=float), unit, k),
    }


# --------------------------------------------------------------------------- array core


def derive_arrays(
    arrays: Mapping[str, np.ndarray],
    outcome: str = "new_syndesmophyte",
    exposure: str = "w0",
    threshold: float = 1.0,
    readers: str = "mean",
) -> dict[str, np.ndarray]:
    """Outcome, exposure and eligibility of every VU, from arrays, without pandas.

    ``arrays`` holds (as ``simulate_arrays`` returns, or :func:`panel_arrays`):

    * ``patient`` (n,) int codes, ``vu`` (n,) int codes, ``region`` (n,) codes into
      :data:`REGIONS`, optionally ``reader`` (n,) int codes;
    * ``mri`` (n, n_mri_weeks) float scores, NaN = missing;
    * ``corners`` (n, 2, n_xray_weeks) float (upper, lower) corner scores;
    * ``mri_weeks`` and ``xray_weeks`` (int arrays, increasing).

    Returns a dict of arrays, one entry per VU (per VU × reader for
    ``"per_reader"``): ``patient``, ``vu``, ``region``, ``row`` (first input row),
    [``reader``], ``y`` (0/1 outcome, NaN where not eligible), ``x`` (exposure, NaN
    where undefined), ``baseline_corner`` (highest baseline corner score),
    ``eligible`` (bool) and ``reason`` (int: 0 eligible, else the first of
    :data:`REASON_CODES` that applies: thoracic, not at risk, x-ray missing, MRI
    missing). Fit ``y[eligible]`` on ``x[eligible]`` grouped by ``patient[eligible]``.
    """
    threshold = check_threshold(threshold)
    rule = check_readers(readers)
    mri_weeks = [int(w) for w in np.asarray(arrays["mri_weeks"]).ravel()]
    check_choice(outcome, OUTCOMES, "outcome", error=DeriveError)
    needed_weeks(exposure, mri_weeks)
    units = combine_readers(arrays, rule)

    corners = np.asarray(units["corners"], dtype=float)
    baseline, followup = corners[:, :, 0], corners[:, :, -1]
    b_known, at_risk, f_known, event = corner_outcome(baseline, followup, outcome)
    if rule == "agree":
        # every reader on their own scores, then all of a VU's readers must agree
        rc = np.asarray(arrays["corners"], dtype=float)
        rb_known, r_risk, rf_known, r_event = corner_outcome(rc[:, :, 0], rc[:, :, -1], outcome)
        k, unit = len(units["row"]), units["unit"]
        b_known = _unit_all(rb_known, unit, k)
        f_known = _unit_all(rf_known, unit, k)
        at_risk = _unit_all(r_risk, unit, k) & b_known
        event = _unit_all(r_event, unit, k) & at_risk & f_known

    x = exposure_values(units["mri"], mri_weeks, exposure, threshold)
    region = np.asarray(units["region"])
    reason = np.zeros(len(x), dtype=np.int8)
    todo = np.ones(len(x), dtype=bool)
    for code, hit in (
        (THORACIC, region == _REGION_CODE["thoracic"]),
        (NOT_AT_RISK, b_known & ~at_risk),
        (XRAY_MISSING, ~(b_known & f_known)),
        (MRI_MISSING, np.isnan(x)),
    ):
        mark = todo & hit
        reason[mark] = code
        todo &= ~mark
    eligible = reason == ELIGIBLE
    y = np.where(eligible, event.astype(float), np.nan)
    with np.errstate(invalid="ignore"):
        base_corner = np.maximum(baseline[:, 0], baseline[:, 1])  # NaN if either is
    out = {
        "patient": np.asarray(units["patient"]),
        "vu": np.asarray(units["vu"]),
        "region": region,
        "row": units["row"],
        "y": y,
        "x": x,
        "baseline_corner": base_corner,
        "eligible": eligible,
        "reason": reason,
    }
    if "reader" in units:
        out["reader"] = units["reader"]
    return out


def derive_many(
    many: Sequence[Mapping[str, np.ndarray]],
    outcome: str = "new_syndesmophyte",
    exposure: str = "w0",
    threshold: float = 1.0,
    readers: str = "mean",
) -> list[dict[str, np.ndarray]]:
    """``[derive_arrays(a, outcome, exposure, threshold, readers) for a in many]``.

    Cohorts with the same rows (the same ``patient``, ``vu``, ``region``,
    ``reader`` arrays and weeks, as the replicates of one spec from
    ``simulate_many``) are derived in one call on their stacked rows, each
    cohort's patients kept apart; the rules are row by row (or per VU across its
    readers), so every result equals that of ``derive_arrays`` on the cohort alone.
    Other lists are derived one cohort at a time.
    """
    many = list(many)
    if len(many) < 2 or not _same_rows(many):
        return [derive_arrays(a, outcome, exposure, threshold, readers) for a in many]
    first = many[0]
    B, n = len(many), len(first["patient"])
    patient = np.asarray(first["patient"], dtype=np.int64)
    shift = int(patient.max()) + 1 if n else 1
    stacked = {
        "patient": (patient + shift * np.arange(B)[:, None]).ravel(),
        "vu": np.tile(np.asarray(first["vu"]), B),
        "region": np.tile(np.asarray(first["region"]), B),
        "mri": np.concatenate([np.asarray(a["mri"], dtype=float) for a in many]),
        "corners": np.concatenate([np.asarray(a["corners"], dtype=float) for a in many]),
        "mri_weeks": first["mri_weeks"],
        "xray_weeks": first["xray_weeks"],
    }
    if first.get("reader") is not None:
        stacked["reader"] = np.tile(np.asarray(first["reader"]), B)
    both = derive_arrays(stacked, outcome, exposure, threshold, readers)
    k = len(both["patient"]) // B
    out = []
    for i in range(B):
        one = {key: val[i * k : (i + 1) * k] for key, val in both.items()}
        one["patient"] = one["patient"] - i * shift
        one["row"] = one["row"] - i * n
        out.append(one)
    return out


def _same_rows(many: Sequence[Mapping[str, np.ndarray]]) -> bool:
    """True if every cohort has the first one's row arrays and weeks."""
    first = many[0]
    keys = ("patient", "vu", "region", "reader", "mri_weeks", "xray_weeks")
    if any(k != "reader" and k not in first for k in keys):
        return False
    for a in many[1:]:
        for k in keys:
            x, y = first.get(k), a.get(k)
            if x is y:
                continue
            if x is None or y is None or not np.array_equal(x, y):
                return False
    return True


# --------------------------------------------------------------------------- panel → arrays


def carry_single_mri(
    mri: np.ndarray, patient: np.ndarray, vu: np.ndarray
) -> tuple[np.ndarray, int]:
    """The MRI read once, carried to every reader's row of its VU.

    When no VU has two MRI readings at any week (the usual export: the MRI read once,
    the radiographs by two readers, the MRI score on one reader's rows only), each
    reading fills the missing MRI of the VU's other reader rows at that week. When
    some VU has two readings, the MRI is read by several readers and nothing is
    filled (a missing reading stays missing). Returns the scores and the number of
    values filled.
    """
    mri = np.asarray(mri, dtype=float)
    if len(mri) == 0:
        return mri, 0
    _, unit = _units(patient, vu)
    k = int(unit.max()) + 1
    scored = ~np.isnan(mri)
    counts = np.stack(
        [np.bincount(unit, weights=scored[:, j], minlength=k) for j in range(mri.shape[1])],
        axis=1,
    )
    if counts.max() > 1:
        return mri, 0
    sums = np.stack(
        [
            np.bincount(unit, weights=np.where(scored[:, j], mri[:, j], 0.0), minlength=k)
            for j in range(mri.shape[1])
        ],
        axis=1,
    )
    fill = ~scored & (counts[unit] == 1)
    if not fill.any():
        return mri, 0
    out = mri.copy()
    out[fill] = sums[unit][fill]
    return out, int(fill.sum())


def mri_carried_note(panel: Any) -> str:
    """A sentence when the panel's MRI is read once and carried to each x-ray reader's
    rows (:func:`carry_single_mri`), else ``""``."""
    if getattr(panel, "readers", None) is None or len(panel.readers) < 2:
        return ""
    vu = panel.vu
    mri = vu[[f"mri_w{w}" for w in panel.mri_weeks]].to_numpy(dtype=float)
    pat_code = pd.Index(panel.patients["patient"]).get_indexer(vu["patient"])
    vu_code = pd.Index(VU_LABELS).get_indexer(vu["vu"])
    _, n = carry_single_mri(mri, pat_code, vu_code)
    if not n:
        return ""
    return (
        f"MRI read once (one reading per VU and week), x-rays by {len(panel.readers)} "
        f"readers: the MRI reading carried to each reader's row ({n} MRI scores filled)"
    )


def panel_arrays(panel: Any) -> dict[str, np.ndarray]:
    """A ``VUPanel`` as the arrays :func:`derive_arrays` takes (codes, not labels).

    ``patient`` codes index ``panel.patients`` rows; ``vu`` codes index
    ``syndesmo.panel.spine.VU_LABELS``; ``reader`` codes index ``panel.readers``.
    """
    vu = panel.vu
    pat_ids = panel.patients["patient"]
    pat_code = pd.Index(pat_ids).get_indexer(vu["patient"])
    vu_code = pd.Index(VU_LABELS).get_indexer(vu["vu"])
    mri_weeks = list(panel.mri_weeks)
    xray_weeks = list(panel.xray_weeks)
    mri = vu[[f"mri_w{w}" for w in mri_weeks]].to_numpy(dtype=float)
    corners = np.stack(
        [
            vu[[f"msasss_upper_w{w}" for w in xray_weeks]].to_numpy(dtype=float),
            vu[[f"msasss_lower_w{w}" for w in xray_weeks]].to_numpy(dtype=float),
        ],
        axis=1,
    )
    if "reader" in vu.columns:
        mri, _ = carry_single_mri(mri, pat_code, vu_code)
    out = {
        "patient": pat_code.astype(np.int64),
        "vu": vu_code.astype(np.int64),
        "region": np.array([_REGION_CODE[VU_REGION[v]] for v in vu["vu"]], dtype=np.int8),
        "mri": mri,
        "corners": corners,
        "mri_weeks": np.array(mri_weeks, dtype=np.int64),
        "xray_weeks": np.array(xray_weeks, dtype=np.int64),
    }
    if "reader" in vu.columns:
        out["reader"] = pd.Index(panel.readers).get_indexer(vu["reader"]).astype(np.int64)
    return out


# --------------------------------------------------------------------------- frame layer


def looks_like_frame_rows(data: pd.DataFrame) -> bool:
    """True when ``data`` has the columns every analysis frame has (patient, vu, region,
    mri, baseline_corner): rows most likely taken out of an ``AnalysisFrame``."""
    marks = [c for c in FRAME_COLUMNS if c not in ("reader", *OUTCOMES)]
    return all(c in data.columns for c in marks)


def available_covariates(panel: Any, readers: str = "mean") -> list[str]:
    """Covariates ``analysis_frame`` can add: patient-table columns and VU-level ones."""
    pcols = [c for c in panel.patients.columns if c not in FRAME_COLUMNS]
    extra = ["reader"] if per_reader_rows(panel, readers) else []
    return [*pcols, *VU_COVARIATES, *extra]


def _reason_text(code: int, outcome: str, exposure: str, weeks: list[int], xray: list[int]) -> str:
    if code == THORACIC:
        return "VU not covered by the mSASSS (thoracic)"
    if code == NOT_AT_RISK:
        why = (
            "a corner ≥ 2 at baseline"
            if outcome == "new_syndesmophyte"
            else "no corner ≥ 2 at baseline, or both corners bridged (3)"
        )
        return f"not at risk for {outcome} ({why})"
    if code == XRAY_MISSING:
        return f"x-ray missing at week {xray[0]} or {xray[-1]}"
    listed = ", ".join(str(w) for w in weeks)
    return f"MRI missing at a week needed for exposure {exposure} (week {listed})"


def arm_column(values: pd.Series, reference: object = None) -> pd.Series:
    """The treatment arm as an ordered categorical with the reference arm first.

    The reference is ``reference`` when given, else the placebo-like arm
    (``syndesmo.vocabulary.reference_first``), so that model terms compare the other
    arms against it. Numeric codes are returned as they are.

    Raises
    ------
    DeriveError
        When ``reference`` is not one of the arms.
    """
    text = values.dtype == object or isinstance(values.dtype, pd.StringDtype)
    categorical = isinstance(values.dtype, pd.CategoricalDtype)
    if text or (categorical and reference is not None):
        levels = reference_first(pd.unique(values.dropna()).tolist(), reference)
        return pd.Series(
            pd.Categorical(values, categories=levels, ordered=True), index=values.index
        )
    if reference is not None and not categorical:
        raise DeriveError(
            f"reference arm {reference!r}: the arm column holds numbers "
            f"({', '.join(map(str, sorted(pd.unique(values.dropna()))))}), not arm names"
        )
    return values


def analysis_frame(
    panel: Any,
    outcome: str = "new_syndesmophyte",
    exposure: str = "w0",
    threshold: float = 1,
    covariates: Sequence[str] | None = None,
    readers: str = "mean",
    *,
    reference_arm: str | None = None,
) -> AnalysisFrame:
    """One row per eligible VU (per VU × reader for ``readers="per_reader"``), with
    the ledger of the VUs left out.

    Parameters
    ----------
    panel : VUPanel
        The VU and patient tables.
    outcome : str
        ``"new_syndesmophyte"`` or ``"growth"``.
    exposure : str
        An exposure of the grammar in ``syndesmo.vocabulary`` (``w0``, ``w12``,
        ``w12_or_w52``, ``any``, …), read against the panel's MRI weeks.
    threshold : float
        ASspiMRI-a score from which a VU counts as inflamed, in (0, 6].
    covariates : list of str, optional
        Patient-table columns (and ``region``, ``baseline_corner``, ``reader``) to add.
    readers : str
        ``"mean"``, ``"agree"`` or ``"per_reader"`` (see the module docstring).
    reference_arm : str, optional
        The arm that ``arm`` terms compare against; default the placebo-like arm
        (``syndesmo.vocabulary.reference_first``).

    Returns
    -------
    AnalysisFrame
        ``frame.data`` has the columns ``patient``, ``vu``, [``reader``], ``region``
        (cervical/lumbar), the outcome (named as ``outcome``, 0/1 int), ``mri`` (the
        exposure: 0/1 int for binary exposures, int for ``n_timepoints``, float for
        ``max_score``), ``baseline_corner`` (highest baseline corner score of the VU,
        float), then the requested covariates (``arm`` as an ordered categorical,
        reference arm first). ``frame.ledger`` counts the VUs left out, one entry per
        reason in this order: not covered by the mSASSS (thoracic), not at risk,
        x-ray missing, MRI missing at a needed week, then one entry per covariate
        missing. ``frame.settings`` holds outcome, exposure, threshold, readers,
        covariates and reference_arm.

    Raises
    ------
    DeriveError
        For an unknown outcome, exposure, covariate, readers rule or reference arm;
        when no VU is eligible, its subclass ``NoEligibleError``, whose ``ledger``
        counts the VUs left out.
    """
    if not all(hasattr(panel, a) for a in ("vu", "patients", "mri_weeks", "xray_weeks")):
        hint = (
            ": build one first with VUPanel(vu, patients) or load_panel(path)"
            if isinstance(panel, pd.DataFrame)
            else ""
        )
        raise DeriveError(f"analysis_frame needs a VUPanel, got {type(panel).__name__}{hint}")
    rule = check_readers(readers)
    threshold = check_threshold(threshold)
    check_choice(outcome, OUTCOMES, "outcome", error=DeriveError)
    weeks = needed_weeks(exposure, panel.mri_weeks)
    covariates = [covariates] if isinstance(covariates, str) else list(covariates or [])
    avail = available_covariates(panel, rule)
    unknown = [c for c in covariates if c not in avail]
    if unknown:
        in_vu = [c for c in unknown if c in panel.vu.columns]
        why = (
            f"; {in_vu} vary between the rows of a patient, so they are VU-level columns "
            "of the VU table, not patient covariates"
            if in_vu
            else ""
        )
        raise DeriveError(
            f"unknown covariate(s) {unknown}; available covariates: {', '.join(avail)}{why}"
        )

    arrays = panel_arrays(panel)
    d = derive_arrays(arrays, outcome, exposure, threshold, rule)
    vu_rows = panel.vu.iloc[d["row"]]
    patient_labels = vu_rows["patient"].to_numpy()

    loaded = getattr(panel, "ledger", None)  # input rows left out while reading files
    ledger = loaded.copy() if isinstance(loaded, Ledger) else Ledger()
    carried = mri_carried_note(panel)
    if carried:
        ledger.note(carried)
    xray = list(panel.xray_weeks)
    for code in REASON_CODES:
        hit = d["reason"] == code
        if hit.any():
            ledger.add(
                "derive",
                _reason_text(code, outcome, exposure, weeks, xray),
                int(hit.sum()),
                len(pd.unique(patient_labels[hit])),
            )

    keep = d["eligible"]
    frame = pd.DataFrame({"patient": patient_labels[keep], "vu": vu_rows["vu"].to_numpy()[keep]})
    if per_reader_rows(panel, rule):
        frame["reader"] = vu_rows["reader"].to_numpy()[keep]
    frame["region"] = [REGIONS[r] for r in d["region"][keep]]
    frame[outcome] = d["y"][keep].astype(np.int64)
    x = d["x"][keep]
    frame["mri"] = x if exposure == "max_score" else x.astype(np.int64)
    frame["baseline_corner"] = d["baseline_corner"][keep].astype(float)

    pat = panel.patients.set_index("patient")
    for cov in covariates:
        if cov in frame.columns:
            continue
        values = pat[cov].reindex(frame["patient"]).reset_index(drop=True)
        frame[cov] = arm_column(values, reference_arm) if cov == ARM else values
    for cov in covariates:
        miss = frame[cov].isna().to_numpy()
        if miss.any():
            ledger.add(
                "derive",
                f"covariate missing: {cov}",
                int(miss.sum()),
                frame.loc[miss, "patient"].nunique(),
            )
            frame = frame.loc[~miss]
    frame = frame.reset_index(drop=True)
    if frame.empty:
        raise NoEligibleError(
            f"no eligible VU for outcome {outcome!r} with exposure {exposure!r} "
            f"(threshold {threshold:g}, readers {rule!r}); left out: "
            + "; ".join(f"{e['reason']}: {e['n_rows']} VU rows" for e in ledger),
            ledger,
        )
    settings = {
        "outcome": outcome,
        "exposure": exposure,
        "threshold": threshold,
        "readers": rule,
        "covariates": covariates,
        "reference_arm": reference_arm,
    }
    return AnalysisFrame(frame, ledger, settings)
