"""An MRI read once with radiographs read by two readers (issue 12 part 2): the reading
is carried to each reader's row, never invented where the MRI was read twice."""

from __future__ import annotations

import numpy as np
import pytest
from panel_tables import make_tables  # tests/panel_tables.py

from syndesmo.derive.frame import analysis_frame, carry_single_mri
from syndesmo.panel.tables import VUPanel


def test_carry_fills_the_other_readers_rows():
    patient = np.array([0, 0, 0, 0, 1, 1])
    vu = np.array([0, 0, 1, 1, 0, 0])
    mri = np.array(
        [[2.0, 1.0], [np.nan, np.nan], [np.nan, 0.0], [3.0, np.nan], [1, 1], [np.nan, np.nan]]
    )
    out, n = carry_single_mri(mri, patient, vu)
    expected = np.array([[2, 1], [2, 1], [3, 0], [3, 0], [1, 1], [1, 1]], dtype=float)
    np.testing.assert_array_equal(out, expected)
    assert n == 6


def test_no_carry_when_the_mri_is_read_twice():
    """One VU with two MRI readings: the MRI is read by both readers, so a reading
    missing elsewhere stays missing."""
    patient = np.array([0, 0, 1, 1])
    vu = np.array([0, 0, 0, 0])
    mri = np.array([[2.0], [1.0], [3.0], [np.nan]])
    out, n = carry_single_mri(mri, patient, vu)
    assert n == 0 and np.isnan(out[3, 0])


@pytest.mark.parametrize("readers", ["mean", "agree", "per_reader"])
def test_second_readers_rows_are_not_lost_as_mri_missing(readers):
    vu, pat = make_tables(readers=("A", "B"), seed=2)
    single = vu.copy()
    for col in [c for c in vu.columns if c.startswith("mri_w")]:
        single.loc[single["reader"] == "B", col] = np.nan  # the MRI read once, by A
    both = vu.copy()
    for col in [c for c in vu.columns if c.startswith("mri_w")]:
        a = both.loc[both["reader"] == "A", col].to_numpy()
        both.loc[both["reader"] == "B", col] = a  # A's reading on B's rows too
    f_single = analysis_frame(VUPanel(single, pat), exposure="w24", readers=readers)
    f_both = analysis_frame(VUPanel(both, pat), exposure="w24", readers=readers)
    assert f_single.data.equals(f_both.data)
    assert not any(e["reason"].startswith("MRI missing") for e in f_single.ledger)
    assert any("MRI read once" in n for n in f_single.ledger.notes)
    assert f_both.ledger.notes == []  # nothing was carried
