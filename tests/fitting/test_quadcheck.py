"""``fit.check_quadrature()``: refits at more points, as Stata's ``quadchk``."""

from __future__ import annotations

import numpy as np
import pytest
from multilevel_cases import simulate_vu_readers

import syndesmo as sy
from syndesmo.errors import ModelError
from syndesmo.fitting.quadcheck import RELATIVE_CHANGE_TOL, default_points

NESTED = "y ~ mri + arm + reader + (1|patient/vu)"


@pytest.fixture(scope="module")
def readers():
    return simulate_vu_readers(n_patients=80, seed=5)


def test_default_points_are_more_than_the_fits():
    assert default_points(1, 25) == (7, 15)
    assert default_points(7, 25) == (15, 25)
    assert default_points(25, 25) == ()


def test_laplace_is_not_enough_for_two_readings_per_vu(readers):
    fit = sy.fit(NESTED, readers)
    table = fit.check_quadrature(points=[7])
    assert list(table.columns) == ["nagq=1", "nagq=7", "max_rel_change", "enough"]
    assert list(table.index[:4]) == list(fit.params.index)
    assert table.index[4:].tolist() == [
        "sd vu:patient (Intercept)",
        "sd patient (Intercept)",
        "logLik",
    ]
    # the refit is the fit at 7 points (same design, same maximum)
    direct = sy.fit(NESTED, readers, nagq=7)
    np.testing.assert_allclose(table["nagq=7"].iloc[:4], direct.params, atol=1e-6)
    np.testing.assert_allclose(table["nagq=7"].iloc[4:6], direct.varcorr["sdcor"], atol=1e-6)
    assert table.loc["logLik", "nagq=7"] == pytest.approx(direct.loglik, abs=1e-6)
    assert table.loc["logLik", "nagq=1"] == pytest.approx(fit.loglik, abs=1e-9)
    change = table.loc["sd vu:patient (Intercept)", "max_rel_change"]
    assert change > RELATIVE_CHANGE_TOL and not table.loc["sd vu:patient (Intercept)", "enough"]


def test_twelve_vus_per_patient_need_fewer_points(readers):
    # one reading per VU, twelve VUs per patient: Laplace is enough for the fixed
    # effects; the SD still moves (2.5% on these 80 patients), far less than above
    one = readers[readers["reader"] == 0]
    table = sy.fit("y ~ mri + arm + (1|patient)", one).check_quadrature(points=[15])
    assert table["enough"].iloc[:3].all(), table
    assert table["max_rel_change"].iloc[3] < 0.1


def test_refused_where_there_is_no_quadrature_to_check(readers):
    crossed = readers.assign(site=readers["patient"] % 3, rdr=readers["reader"])
    fit = sy.fit("y ~ mri + (1|patient) + (1|rdr)", crossed)
    with pytest.raises(ModelError, match=r"nested random effects.*crossed"):
        fit.check_quadrature(points=[3])
    gee = sy.fit("y ~ mri + (1|patient)", readers, engine="gee")
    with pytest.raises(ModelError, match="does not integrate by quadrature"):
        gee.check_quadrature()
