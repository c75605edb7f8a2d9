"""``sy.within_between``: the within-patient and between-patient parts of a column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import syndesmo as sy
from syndesmo.errors import DeriveError


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient": ["a", "a", "a", "b", "b", "c"],
            "mri": [1, 0, 0, 2, 4, 1],
            "score": [0.5, np.nan, 1.5, 1.0, 1.0, 2.0],
            "y": [1, 0, 0, 1, 0, 0],
        }
    )


def test_plain_dataframe(df):
    out = sy.within_between(df, ["mri", "score"])
    assert isinstance(out, pd.DataFrame) and list(out.columns[:4]) == list(df.columns)
    pd.testing.assert_frame_equal(out[df.columns], df)  # the input columns untouched
    by_hand = df.groupby("patient")["mri"].transform("mean")
    np.testing.assert_allclose(out["mri_between"], by_hand)
    np.testing.assert_allclose(out["mri_within"], df["mri"] - by_hand)
    np.testing.assert_allclose(out["mri_within"].groupby(df["patient"]).sum(), 0.0, atol=1e-15)
    # a missing value: no within part, and not counted in its patient's mean
    assert np.isnan(out.loc[1, "score_within"]) and out.loc[0, "score_between"] == 1.0
    assert out.loc[5, "mri_within"] == 0.0  # a patient with one row
    assert "within_between" not in df.columns


def test_analysis_frame_keeps_ledger_and_records_settings():
    panel = sy.simulate_cohort(sy.CohortSpec(n_patients=40), seed=5)
    frame = sy.analysis_frame(panel, exposure="any", covariates=["arm"])
    out = sy.within_between(frame, "mri")
    assert isinstance(out, sy.AnalysisFrame)
    assert out.ledger == frame.ledger and len(out) == len(frame)
    assert out.settings["exposure"] == "any"
    assert out.settings["within_between"] == {
        "mri": {"within": "mri_within", "between": "mri_between", "group": "patient"}
    }
    assert "within_between" not in frame.settings  # the input frame is a value
    means = frame.data.groupby("patient")["mri"].transform("mean")
    np.testing.assert_allclose(out["mri_between"], means)
    # a second split adds to the record
    twice = sy.within_between(out.assign(crp2=out["mri"] * 2), ["crp2"])
    assert set(twice.settings["within_between"]) == {"mri", "crp2"}


def test_other_group_column(df):
    df = df.assign(site=["s1", "s1", "s2", "s2", "s2", "s2"])
    out = sy.within_between(df, ["mri"], group="site")
    assert out.loc[0, "mri_between"] == 0.5 and out.loc[3, "mri_between"] == 1.75


def test_refusals(df):
    with pytest.raises(DeriveError, match="no column 'nope'"):
        sy.within_between(df, ["nope"])
    with pytest.raises(DeriveError, match="no group column 'vu'"):
        sy.within_between(df, ["mri"], group="vu")
    with pytest.raises(DeriveError, match="'patient' is the group column itself"):
        sy.within_between(df, ["patient"])
    with pytest.raises(DeriveError, match="not numeric"):
        sy.within_between(df.assign(arm="x"), ["arm"])
    with pytest.raises(DeriveError, match="already has a column 'mri_within'"):
        sy.within_between(df.assign(mri_within=0.0), ["mri"])
    with pytest.raises(DeriveError, match="missing in row 2"):
        sy.within_between(df.assign(patient=["a", None, "a", "b", "b", "c"]), ["mri"])
    with pytest.raises(DeriveError, match="at least one column"):
        sy.within_between(df, [])
    with pytest.raises(DeriveError, match="AnalysisFrame or a DataFrame"):
        sy.within_between([1, 2], ["mri"])


def test_docstring_names_every_refusal():
    """The Raises section lists each case ``test_refusals`` provokes."""
    raises = sy.within_between.__doc__.split("Raises\n    ------\n")[1]
    words = " ".join(raises.split())
    for case in (
        "neither an ``AnalysisFrame`` nor a DataFrame",
        "an empty ``columns``",
        "the ``group`` column itself",
        "a missing or non-numeric column",
        "a missing group column or a missing group value",
        "a new column name the frame already has",
    ):
        assert case in words, case
