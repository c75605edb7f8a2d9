"""Edge cases of the ladder, the patient level and compare_levels: fits that did not
converge, exposures without an eligible VU, arguments checked up front.

A fit that did not converge is made by wrapping ``sy.fit`` so that it returns the real
fit marked as not converged (engines rarely fail to converge on simulated cohorts);
what is tested is what the analysis layer reports from such a fit.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from syndesmo.analysis import ladder as an
from syndesmo.analysis import patient as patient_mod
from syndesmo.analysis.levels import compare_levels, compare_levels_result
from syndesmo.analysis.patient import patient_level
from syndesmo.errors import DeriveError, ModelError
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
# ladder: no number from a GLMM that did not converge, and a note that says so


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


# ---------------------------------------------------------------------------
# patient level: no number from a fit that did not converge


def test_patient_level_row_of_a_fit_that_did_not_converge(panel, monkeypatch):
    fine = patient_level(panel, "w0", "any_new", summary="count").to_frame().iloc[0]
    assert np.isfinite(fine["estimate"]) and fine["note"] == ""

    monkeypatch.setattr(patient_mod, "fit_model", not_converged(patient_mod.fit_model, {"logit"}))
    pl = patient_level(panel, "w0", "any_new", summary="count")
    assert pl.fit is not None and not pl.fit.converged
    row = pl.to_frame().iloc[0]
    assert row[["estimate", "lower", "upper", "p"]].isna().all()
    assert row["note"] == f"not converged: {FORCED}"
    assert row["n_patients"] == fine["n_patients"] and row["events"] == fine["events"]
    # compare_levels' patient rows say the same
    table = compare_levels(panel, "w0", beside=(), patient_models=[("any_new", "count")])
    prow = table[table["level"].eq("patient")].iloc[0]
    assert math.isnan(prow["estimate"]) and prow["note"] == f"not converged: {FORCED}"


# ---------------------------------------------------------------------------
# patient level: threshold checked as analysis_frame does; outcome first


@pytest.mark.parametrize("threshold", [0, -1, 10, 6.5])
def test_patient_level_refuses_a_threshold_outside_0_6(panel, threshold):
    with pytest.raises(DeriveError, match=rf"threshold.*{threshold:g}") as info:
        patient_level(panel, "w0", "any_new", threshold=threshold)
    with pytest.raises(DeriveError) as ref:
        an.build_frame(panel, "new_syndesmophyte", "w0", threshold=threshold)
    assert str(info.value) == str(ref.value)  # the same check, the same words


def test_patient_level_accepts_thresholds_up_to_6(panel):
    row = patient_level(panel, "w0", "any_new", summary="count", threshold=6).to_frame()
    assert row["n_patients"].iloc[0] > 0


def test_patient_level_names_an_unknown_outcome_before_the_engine(panel):
    for engine in ("poisson", "logit", None):
        with pytest.raises(ModelError, match=r"'foo'.*any_new") as info:
            patient_level(panel, "w0", "foo", engine=engine)
        assert "use engine" not in str(info.value)


# ---------------------------------------------------------------------------
# engines: checked up front, a single string is one engine


def test_compare_levels_refuses_an_unknown_engine_as_the_ladder_does(panel):
    with pytest.raises(ModelError, match=r"^compare_levels: unknown engine\(s\) \['foo'\]; "):
        compare_levels(panel, "w0", engine="foo")
    with pytest.raises(ModelError, match=r"^compare_levels: unknown engine\(s\) \['bar'\]; "):
        compare_levels(panel, "w0", beside=("gee", "bar"))
    with pytest.raises(ModelError, match=r"^ladder: unknown engine\(s\) \['foo'\]; "):
        an.ladder(panel, "new_syndesmophyte", ["w0"], engine="foo")
    # a count engine would give a rate ratio labelled OR: refused, as in the ladder
    with pytest.raises(ModelError, match=r"engine 'poisson' models a poisson outcome"):
        compare_levels(panel, "w0", engine="poisson")
    with pytest.raises(ModelError, match=r"engine 'negbin' models a"):
        compare_levels(panel, "w0", beside=["negbin"])


def test_compare_levels_refuses_logit_as_the_glmm_and_fits_it_beside(panel):
    with pytest.raises(ModelError, match=r"^compare_levels: engine 'logit' ignores the cluster"):
        compare_levels(panel, "w0", engine="logit")
    table = compare_levels(panel, "w0", beside=("logit",), patient_models=()).set_index("engine")
    assert table.loc["logit", "formula"] == "new_syndesmophyte ~ mri + arm"
    frame = an.build_frame(panel, "new_syndesmophyte", "w0", covariates=["arm"])
    refit = an.fit_row(an.safe_fit("new_syndesmophyte ~ mri + arm", frame, "logit", 1))
    assert table.loc["logit", "estimate"] == pytest.approx(refit["OR"], rel=1e-12)
    assert table.loc["native", "formula"] == "new_syndesmophyte ~ mri + arm + (1|patient)"


def test_compare_levels_counts_the_vus_of_a_failed_fit(panel):
    # 'arm01' duplicates the treatment: the design is rank deficient, every fit fails
    pat = panel.patients.copy()
    pat["arm01"] = (pat["arm"] == "infliximab").astype(int)
    bad = VUPanel(panel.vu.copy(), pat, source="modified")
    table = compare_levels(bad, "w0", adjust=("arm", "arm01"), patient_models=())
    frame = an.build_frame(bad, "new_syndesmophyte", "w0", covariates=["arm", "arm01"])
    assert table["engine"].tolist() == ["native", "gee"]
    assert table["estimate"].isna().all()
    assert table["note"].str.startswith("fit failed").all()
    assert (table["n_units"] == len(frame)).all()
    assert (table["n_patients"] == frame["patient"].nunique()).all()
    assert (table["events"] == int(frame["new_syndesmophyte"].sum())).all()


def test_a_single_engine_string_is_one_engine(panel):
    one = an.ladder(panel, "new_syndesmophyte", "w0", engines="gee", within=False)
    assert list(zip(one["step"], one["engine"], strict=True)) == [
        ("a", "logit"),
        ("b", "gee"),
        ("c", "gee"),
    ]
    listed = an.ladder(panel, "new_syndesmophyte", "w0", engines=["gee"], within=False)
    assert np.allclose(one["log_or"], listed["log_or"], rtol=0, atol=0)
    beside = an.ladder(panel, "new_syndesmophyte", "w0", engines_beside="gee", within=False)
    assert beside["engine"].tolist() == ["logit", "native", "gee", "native", "gee"]
    levels = compare_levels(panel, "w0", beside="gee", patient_models=())
    assert levels["engine"].tolist() == ["native", "gee"]


def test_a_single_covariate_string_is_one_covariate(panel):
    """``confounders="age"`` and ``adjust="arm"`` name one column, as a list of one does
    (they were read as letters: "unknown covariate(s) ['a', 'g', 'e']")."""
    kw = {"engines": ["gee"], "within": False}
    one = an.ladder(panel, "new_syndesmophyte", "w0", confounders="age", **kw)
    listed = an.ladder(panel, "new_syndesmophyte", "w0", confounders=["age"], **kw)
    assert "d" in set(one["step"])
    np.testing.assert_array_equal(one["log_or"], listed["log_or"])
    pl = patient_level(panel, "w0", adjust="arm").to_frame()
    pl_listed = patient_level(panel, "w0", adjust=["arm"]).to_frame()
    np.testing.assert_array_equal(pl["estimate"], pl_listed["estimate"])
    levels = compare_levels(panel, "w0", adjust="arm", beside=(), patient_models=())
    levels_listed = compare_levels(panel, "w0", adjust=["arm"], beside=(), patient_models=())
    np.testing.assert_array_equal(levels["estimate"], levels_listed["estimate"])


# ---------------------------------------------------------------------------
# compare_levels_result: one ledger per patient model


def test_each_patient_model_keeps_its_ledger(panel):
    # two models of one outcome: one ledger each, none written over
    models = [("any_new", "any"), ("any_new", "total"), ("n_new", "count")]
    res = compare_levels_result(panel, "w0", beside=(), patient_models=models)
    assert list(res.ledgers) == [
        "VU level",
        "patient level: any_new (any)",
        "patient level: any_new (total)",
        "patient level: n_new (count)",
    ]
    for outcome, summary in models:
        ref = patient_level(panel, "w0", outcome, summary=summary).ledger
        assert res.ledgers[f"patient level: {outcome} ({summary})"] == ref


def test_a_patient_model_listed_twice_is_refused(panel):
    with pytest.raises(ModelError, match=r"\('any_new', 'any'\).*more than once"):
        compare_levels(panel, "w0", patient_models=[("any_new", "any"), ("any_new", "any")])


# ---------------------------------------------------------------------------
# an exposure without an eligible VU: noted rows, not the end of the ladder


@pytest.fixture(scope="module")
def no_w102(panel) -> VUPanel:
    """The week-102 MRI never read: no VU is eligible for the exposure ``w102``."""
    vu = panel.vu.copy()
    vu["mri_w102"] = np.nan
    return VUPanel(vu, panel.patients.copy(), source="modified")


def test_ladder_goes_on_past_an_exposure_without_eligible_vus(panel, no_w102):
    with pytest.raises(DeriveError) as info:
        an.build_frame(no_w102, "new_syndesmophyte", "w102", covariates=["arm"])
    why = str(info.value)
    assert why.startswith("no eligible VU") and "MRI missing" in why

    res = an.ladder_result(no_w102, "new_syndesmophyte", ["w102", "w0"])
    table = res.table
    w102 = table[table["exposure"].eq("w102")]
    # the same rows (steps × engines) as an exposure that is modelled
    w0 = table[table["exposure"].eq("w0")]
    assert list(zip(w102["step"], w102["engine"], strict=True)) == list(
        zip(w0["step"], w0["engine"], strict=True)
    )
    assert w102[["log_or", "OR", "p", "sigma"]].isna().all().all()
    assert w102["note"].eq(why).all()
    assert (w102[["n_patients", "n_vus", "events"]] == 0).all().all()
    assert not w102["converged"].any()
    # the other exposure is fitted as on its own
    alone = an.ladder(no_w102, "new_syndesmophyte", ["w0"])
    assert np.allclose(w0["log_or"], alone["log_or"], equal_nan=True)
    assert w0["OR"].notna().all()
    # the ledger of w102 counts every VU left out, with the reasons
    led = res.ledgers["w102"].to_frame()
    assert led["n_rows"].sum() == len(no_w102.vu)
    assert led["reason"].str.contains("MRI missing at a week needed for exposure w102").any()
    with pytest.raises(DeriveError, match="no eligible VU"):
        an.ladder(no_w102, "new_syndesmophyte", ["w102", "w0"], strict=True)


def test_compare_levels_notes_no_eligible_vu_and_fits_the_patient_level(no_w102):
    res = compare_levels_result(no_w102, "w102", patient_models=[("any_new", "count")])
    vu = res.table[res.table["level"].eq("VU")]
    assert vu["engine"].tolist() == ["native", "gee"]
    assert vu["estimate"].isna().all() and vu["note"].str.startswith("no eligible VU").all()
    assert (vu[["n_patients", "n_units", "events"]] == 0).all().all()
    assert res.ledgers["VU level"].to_frame()["n_rows"].sum() == len(no_w102.vu)
    # the patient level is still reached: it names the missing MRI itself
    patient = res.table[res.table["level"].eq("patient")].iloc[0]
    assert patient["note"] == "no patient has both exposure and outcome"
