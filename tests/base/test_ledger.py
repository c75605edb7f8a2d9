"""The ledger travels as a value: an ``AnalysisFrame`` keeps it through merges and new
columns, ``sy.fit`` reports it, and the counts balance (rows analysed + rows left
out = panel rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.analysis.ladder import build_frame
from syndesmo.errors import DeriveError, ModelError
from syndesmo.panel.spine import VU_LABELS

FORMULA = "new_syndesmophyte ~ mri + arm + esr + (1|patient)"


@pytest.fixture(scope="module")
def panel():
    """23 VUs per patient (thoracic ones are left out), some MRIs and x-rays missing."""
    spec = sy.CohortSpec(
        n_patients=90, vus=tuple(VU_LABELS), mri_missing_rate=0.05, xray_missing_rate=0.05
    )
    return sy.simulate_cohort(spec, seed=11)


@pytest.fixture(scope="module")
def labs(panel):
    """A laboratory value per patient, unknown for the first 12 patients."""
    ids = panel.patients["patient"]
    esr = pd.Series(np.linspace(5.0, 60.0, len(ids)))
    esr[:12] = np.nan
    return pd.DataFrame({"patient": ids, "esr": esr})


def test_merging_a_covariate_and_fitting_reports_every_row_left_out(panel, labs):
    frame = sy.analysis_frame(panel, covariates=["arm"])
    reasons = [e["reason"] for e in frame.ledger]
    assert any("thoracic" in r for r in reasons) and any("x-ray missing" in r for r in reasons)
    assert len(frame) + frame.ledger.n_excluded == len(panel.vu)

    merged = frame.merge(labs, on="patient")
    assert isinstance(merged, sy.AnalysisFrame)
    assert merged.ledger == frame.ledger and len(merged) == len(frame)
    assert merged.settings == frame.settings
    pd.testing.assert_frame_equal(merged.data.drop(columns="esr"), frame.data)
    no_esr = int(merged["esr"].isna().sum())
    assert no_esr > 0

    fit = sy.fit(FORMULA, merged)
    entries = list(fit.ledger)
    assert entries[: len(frame.ledger)] == list(frame.ledger)  # derive's exclusions
    assert entries[-1]["step"] == "design" and "esr" in entries[-1]["reason"]
    assert entries[-1]["n_rows"] == no_esr  # the design's missing values
    assert fit.n_obs + fit.ledger.n_excluded == len(panel.vu)
    assert "esr" in fit.summary() and "thoracic" in fit.summary()

    # the same by hand: pandas on frame.data, the ledger passed to the fit
    df = frame.data.merge(labs, on="patient", how="left")
    by_hand = sy.fit(FORMULA, df, ledger=frame.ledger)
    assert by_hand.ledger == fit.ledger
    pd.testing.assert_series_equal(by_hand.params, fit.params)
    # or wrapped again
    assert sy.fit(FORMULA, frame.with_data(df)).ledger == fit.ledger
    # a plain DataFrame knows nothing of derive: only the design's rows are counted,
    # and the fit says that the ledger was left behind
    with pytest.warns(UserWarning, match="bring no ledger"):
        assert sy.fit(FORMULA, df).ledger.n_excluded == no_esr


def test_inner_merge_and_dropped_rows_are_counted(panel, labs):
    frame = sy.analysis_frame(panel, covariates=["arm"])
    inner = frame.merge(labs.dropna(), on="patient", how="inner")
    last = list(inner.ledger)[-1]
    assert last["step"] == "merge" and "no matching row" in last["reason"]
    gone = frame["patient"].isin(labs["patient"][:12])
    assert last["n_rows"] == gone.sum()
    assert last["n_patients"] == frame.data.loc[gone, "patient"].nunique()
    assert len(inner) + inner.ledger.n_excluded == len(panel.vu)
    fit = sy.fit(FORMULA, inner)
    assert fit.n_obs + fit.ledger.n_excluded == len(panel.vu)

    dropped = frame.drop_rows(frame["region"].eq("lumbar").to_numpy(), "cervical spine only")
    assert list(dropped.ledger)[-1]["reason"] == "cervical spine only"
    assert len(dropped) + dropped.ledger.n_excluded == len(panel.vu)
    fewer = frame.data[frame["region"].eq("cervical")]
    with pytest.raises(DeriveError, match="say why with reason="):
        frame.with_data(fewer)
    again = frame.with_data(fewer, reason="cervical spine only", step="analysis")
    assert again.ledger == dropped.ledger  # rows and patients counted the same way


def test_an_analysis_frame_refuses_what_would_lose_rows_silently(panel, labs):
    frame = sy.analysis_frame(panel, covariates=["arm"])
    with pytest.raises(DeriveError, match="drop_rows"):
        frame[frame["mri"] == 1]
    with pytest.raises(DeriveError, match="drop_rows"):
        frame[:10]
    doubled = pd.concat([labs, labs])
    with pytest.raises(DeriveError, match=r"cannot merge.*many-to-one"):
        frame.merge(doubled, on="patient")
    with pytest.raises(DeriveError, match="more than the analysis frame"):
        frame.with_data(frame.data.merge(doubled, on="patient"))
    with pytest.raises(DeriveError, match=r"\['arm'\] are already in the analysis frame"):
        frame.merge(panel.patients[["patient", "arm"]], on="patient")
    with pytest.raises(DeriveError, match="unknown merge how 'outer'"):
        frame.merge(labs, on="patient", how="outer")
    with pytest.raises(ModelError, match="brings its own ledger"):
        sy.fit(FORMULA, frame.merge(labs, on="patient"), ledger=frame.ledger)
    assigned = frame.assign(log_crp=np.log(frame["mri"] + 1.0))
    assert assigned.ledger == frame.ledger and "log_crp" in assigned
    # the frame is a value: its ledger cannot be changed from outside
    frame.ledger.add("user", "changed from outside", 5)
    assert "changed from outside" not in str(frame.ledger)


def test_the_ladder_frame_adds_its_own_step(panel, labs):
    patients = panel.patients.merge(labs, on="patient")
    with_esr = sy.VUPanel(panel.vu, patients, source="with esr")
    frame = build_frame(with_esr, "new_syndesmophyte", "w0", covariates=["arm", "esr"])
    assert list(frame.ledger)[-1]["reason"] == "covariate missing: esr"  # derive counts it
    assert len(frame) + frame.ledger.n_excluded == len(panel.vu)
    table = sy.ladder(with_esr, exposures=["w0"], confounders=["esr"], engines_beside=())
    assert (table["n_vus"] == len(frame)).all()


def test_ledger_notes_count_no_row_and_travel():
    """Notes say what was done to rows that stayed; they are kept once each, copied,
    added and shown, and count no row."""
    from syndesmo.ledger import Ledger

    a = Ledger()
    a.add("derive", "x-ray missing", 3, 2)
    a.note("MRI read once: carried")
    a.note("MRI read once: carried")
    assert a.notes == ["MRI read once: carried"] and a.n_excluded == 3
    b = a.copy()
    b.note("another")
    assert a.notes == ["MRI read once: carried"]
    c = Ledger() + b
    assert c.notes == ["MRI read once: carried", "another"]
    assert "note: another" in repr(c)
    assert len(c.to_frame()) == 1
