"""The spine as data, checked against the definitions in DOMAIN.md.

The ASspiMRI-a scores 23 VUs from C2/3 to L5/S1; the mSASSS scores the anterior
corners from the lower corner of C2 to the upper corner of T1 and from the lower
corner of T12 to the upper corner of S1 (Creemers et al., Ann Rheum Dis 2005):
24 corners, both corners of 12 VUs.
"""

from __future__ import annotations

import pytest

from syndesmo.panel import spine

EXPECTED_23 = (
    "C2/3 C3/4 C4/5 C5/6 C6/7 C7/T1 "
    "T1/2 T2/3 T3/4 T4/5 T5/6 T6/7 T7/8 T8/9 T9/10 T10/11 T11/12 "
    "T12/L1 L1/2 L2/3 L3/4 L4/5 L5/S1"
).split()


def test_23_labels_in_cranio_caudal_order():
    assert list(spine.VU_LABELS) == EXPECTED_23
    assert [spine.vu_index(v) for v in EXPECTED_23] == list(range(23))


def test_regions():
    regions = [spine.VU_REGION[v] for v in EXPECTED_23]
    assert regions == ["cervical"] * 6 + ["thoracic"] * 11 + ["lumbar"] * 6


def test_twelve_msasss_vus():
    assert spine.MSASSS_VUS == (
        "C2/3",
        "C3/4",
        "C4/5",
        "C5/6",
        "C6/7",
        "C7/T1",
        "T12/L1",
        "L1/2",
        "L2/3",
        "L3/4",
        "L4/5",
        "L5/S1",
    )
    assert [spine.is_msasss_vu(v) for v in EXPECTED_23].count(True) == 12
    assert not spine.is_msasss_vu("T11/12")


def test_corners_of_each_vu():
    assert spine.MSASSS_CORNERS["C2/3"] == ("C2 lower", "C3 upper")
    assert spine.MSASSS_CORNERS["C7/T1"] == ("C7 lower", "T1 upper")
    assert spine.MSASSS_CORNERS["T12/L1"] == ("T12 lower", "L1 upper")
    assert spine.MSASSS_CORNERS["L5/S1"] == ("L5 lower", "S1 upper")


def test_24_corners_from_lower_c2_to_upper_t1_and_lower_t12_to_upper_s1():
    corners = spine.CORNERS
    assert len(corners) == 24 == len(set(corners))
    assert corners[0] == "C2 lower" and corners[11] == "T1 upper"
    assert corners[12] == "T12 lower" and corners[-1] == "S1 upper"
    assert not any(c.startswith(("T2", "T5", "T11")) for c in corners)


def test_score_ranges():
    assert spine.ASSPIMRI_RANGE == (0, 6)
    assert spine.MSASSS_RANGE == (0, 3)


@pytest.mark.parametrize("bad", ["C1/2", "T12/13", "L5-S1", "c2/3", ""])
def test_unknown_label_is_named(bad):
    with pytest.raises(ValueError, match="unknown vertebral unit"):
        spine.check_vu(bad)
