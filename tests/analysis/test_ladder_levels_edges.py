"""Edge cases of the ladder, the patient level and compare_levels: fits that did not
converge, exposures without an eligible VU, arguments checked up front.

A fit that did not converge is made by wrapping ``sy.fit`` so that it returns the real
fit marked as not converged (engines rarely fail to converge on simulated cohorts);
what is tested is what the analysis layer reports from such a fit.
"""

from __future__ import annotations

import dataclasses

import pytest

from syndesmo.analysis import ladder as an
from syndesmo.panel.spine import VU_LABELS
from syndesmo.panel.tables import VUPanel
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort

#: Columns of a ladder row that are estimates from the fit.
ESTIMATES = ["log_or", "se", "OR", "lower", "upper", "p", "sigma", "icc", "log_or_marginal"]


@pytest.fixture(scope="module")
def panel() -> VUPanel:
    spec = CohortSpec(n_patients=60, vus=VU_LABELS, odds_ratio_new=2.5)
    return simulate_cohort(spec, seed=7)


FORCED = "iteration limit reached (forced by the test)"


def not_converged(real_fit, engines, message=FORCED):
    """``real_fit`` wrapped: fits of ``engines`` come back marked as not converged, as
    an engine returns them (``FitResult`` then keeps the estimates in ``last_iterate``)."""

    def wrapped(formula, frame, engine="native", **kwargs):
        result = real_fit(formula, frame, engine=engine, **kwargs)
        if engine not in engines:
            return result
        conv = dataclasses.replace(result.convergence, converged=False, message=message)
        return dataclasses.replace(result, convergence=conv)

    return wrapped


# ---------------------------------------------------------------------------
# 1. ladder: no number from a GLMM that did not converge, and a note that says so


def test_ladder_reports_no_estimate_of_a_glmm_that_did_not_converge(panel, monkeypatch):
    """No estimate, and the note names non-convergence only: the NaN standard error of
    a fit that did not converge is no sign of separation."""
    converged = an.ladder(panel, "new_syndesmophyte", ["w0"])
    native = converged[converged["engine"].eq("native")]
    # the converged GLMM fills every estimate: the NaN below come from the flag
    assert native[["log_or", "sigma", "icc"]].notna().all().all()
    assert native.loc[native["step"].ne("e"), "log_or_marginal"].notna().all()

    monkeypatch.setattr(an, "fit", not_converged(an.fit, {"native"}))
    table = an.ladder(panel, "new_syndesmophyte", ["w0"])
    native = table[table["engine"].eq("native")]
    assert native["step"].tolist() == ["b", "c", "e"]
    assert native[ESTIMATES].isna().all().all()
    assert native[["log_or_between", "p_within_between"]].isna().all().all()
    assert not native["converged"].any()
    assert native["note"].eq(f"not converged: {FORCED}").all()
    # the counts are the analysed VUs, still reported
    assert (native["n_vus"] == converged.loc[converged["engine"].eq("native"), "n_vus"]).all()
    # the engines that converged keep their numbers
    others = table[~table["engine"].eq("native")]
    assert others[["log_or", "OR", "p"]].notna().all().all()


def test_ladder_says_not_converged_without_an_optimiser_message(panel, monkeypatch):
    monkeypatch.setattr(an, "fit", not_converged(an.fit, {"native"}, message=""))
    table = an.ladder(panel, "new_syndesmophyte", ["w0"], engines_beside=(), within=False)
    native = table[table["engine"].eq("native")]
    assert native["note"].eq("not converged").all()
    assert native["OR"].isna().all()
