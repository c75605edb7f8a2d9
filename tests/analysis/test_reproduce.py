"""``syndesmo reproduce`` and ``syndesmo fit`` end to end, and their failures.

The shipped cohort goes through the whole reproduction; bad input (missing files,
a spec naming an unknown exposure, an exposure without variation, a foreign output
directory) ends in one line on stderr with exit status 2, and never leaves a
half-written output directory behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from syndesmo.analysis import reproduction
from syndesmo.analysis.specs import load_specs
from syndesmo.cli.app import main
from syndesmo.output import plots, report
from syndesmo.panel.tables import load_panel
from syndesmo.simulate.cohort import CohortSpec, simulate_cohort, write_cohort

REPO = Path(__file__).resolve().parents[2]

SMALL_SPEC = """\
level = "vu"
outcome = "new_syndesmophyte"
exposure = {exposure}
covariates = ["arm", "region"]
beside = ["gee"]
"""


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("cohort")
    panel = simulate_cohort(CohortSpec(n_patients=40), seed=3)
    return write_cohort(panel, out)


@pytest.fixture(scope="module")
def flat_w102_cohort(tmp_path_factory, small_cohort) -> tuple[Path, Path]:
    """The small cohort with no MRI activity at week 102 anywhere."""
    out = tmp_path_factory.mktemp("flat")
    vu = pd.read_csv(small_cohort[0])
    vu["mri_w102"] = 0
    vu.to_csv(out / "vu.csv", index=False)
    pd.read_csv(small_cohort[1]).to_csv(out / "patients.csv", index=False)
    return out / "vu.csv", out / "patients.csv"


def spec_dir(tmp_path: Path, exposure: str, name: str = "specs") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "new.toml").write_text(SMALL_SPEC.format(exposure=exposure), encoding="utf-8")
    return d


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"syndesmo {command}: error: "), err
    return err


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if re.search(r"\.tmp-|\.old-", p.name)]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# ---------------------------------------------------------------------------
# the shipped cohort, end to end


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory) -> tuple[Path, str]:
    """``syndesmo reproduce`` on the shipped cohort once for the module: (out, stdout)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("shipped") / "rep"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["reproduce", "--out", str(out), "--quiet"]) == 0
    return out, buf.getvalue()


def test_reproduce_shipped_cohort(shipped_run):
    out, printed = shipped_run
    tmp_path = out.parent
    assert "| outcome | exposure |" in printed and "(b) GLMM" in printed
    names = {p.name for p in out.iterdir()}
    tables = [
        "headline",
        "ladder",
        "gee_vs_glmm",
        "patient_level",
        "vu_vs_patient",
        "spine_profile",
        "excluded",
    ]
    for t in tables:
        assert {f"{t}.csv", f"{t}.md"} <= names, t
    assert any(n.startswith("descriptive_") and n.endswith(".csv") for n in names)
    assert {"report.md", "forest_plot.png", "spine_map.png", report.MARKER} <= names
    assert {"forest_plot.pdf", "spine_map.pdf", "table1_baseline.csv"} <= names
    assert leftovers(tmp_path) == []

    for png in ("forest_plot.png", "spine_map.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        h, w = image.imread(out / png).shape[:2]
        assert w >= 1440 and h > 600  # 7.2 in (spine map), 10.5 in (forest plot) at 200 dpi
    for pdf in ("forest_plot.pdf", "spine_map.pdf"):
        assert (out / pdf).read_bytes()[:5] == b"%PDF-"

    ladder = pd.read_csv(out / "ladder.csv")
    assert set(ladder["outcome"]) == {"new_syndesmophyte", "growth"}
    assert set(ladder["engine"]) == {"logit", "native", "gee", "clogit"}
    assert set(ladder["step"]) == {"a", "b", "c", "d", "e"}
    e = ladder[ladder["step"].eq("e")]
    assert set(e["engine"]) == {"native", "clogit"} and e["p_within_between"].notna().any()
    new_b = ladder[ladder["outcome"].eq("new_syndesmophyte") & ladder["step"].eq("b")]
    assert new_b["OR"].notna().all()

    text = (out / "report.md").read_text(encoding="utf-8")
    for heading in (
        "## New syndesmophytes at the VU level",
        "## Growth of existing syndesmophytes",
        "## GEE beside GLMM",
        "## Patient level",
        "## VUs and patients left out",
    ):
        assert heading in text
    assert "Zeger, Liang & Albert, Biometrics 1988;44:1049–60" in text
    assert "1/√(1 + 0.346 σ²)" in text
    assert "![Forest plot](forest_plot.png)" in text
    assert text.count("Within patients (step e), conditional logistic regression") == 2
    # no missing number printed as NaN (as a word: a temporary path may hold "nan")
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)
    # the numbers in the text are those of the tables
    first = new_b[new_b["engine"].eq("native")].iloc[0]
    assert f"{first['OR']:.2f}" in text


# ---------------------------------------------------------------------------
# bad input: one line, exit 2, nothing half-written


def test_reproduce_missing_file(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["reproduce", "--vu", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert code == 2
    assert "nope.csv" in one_line_error(capsys, "reproduce")
    assert not out.exists() and leftovers(tmp_path) == []


def test_reproduce_spec_with_unknown_exposure(tmp_path, capsys, small_cohort):
    specs = spec_dir(tmp_path, '["w0", "w0_then_w24"]')
    out = tmp_path / "rep"
    vu, pat = small_cohort
    args = ["reproduce", "--vu", str(vu), "--patients", str(pat), "--specs", str(specs)]
    assert main([*args, "--out", str(out)]) == 2
    err = one_line_error(capsys, "reproduce")
    assert "w0_then_w24" in err and "new.toml" in err
    assert not out.exists()


def test_reproduce_no_variation_keeps_previous_output(
    tmp_path, capsys, small_cohort, flat_w102_cohort
):
    out = tmp_path / "rep"
    vu, pat = small_cohort
    good = spec_dir(tmp_path, '["w0"]', "good")
    args = ["reproduce", "--specs", str(good), "--out", str(out), "--quiet"]
    assert main([*args, "--vu", str(vu), "--patients", str(pat)]) == 0
    before = snapshot(out)
    capsys.readouterr()

    bad = spec_dir(tmp_path, '["w0", "w102"]', "bad")
    fvu, fpat = flat_w102_cohort
    args = ["reproduce", "--specs", str(bad), "--out", str(out), "--quiet"]
    assert main([*args, "--vu", str(fvu), "--patients", str(fpat)]) == 2
    err = one_line_error(capsys, "reproduce")
    assert "'w102'" in err and "does not vary" in err
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, small_cohort):
    panel = load_panel(*small_cohort)
    specs = load_specs(spec_dir(tmp_path, '["w0"]'))
    rep = reproduction.run_reproduction(panel, specs)
    out = tmp_path / "rep"

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots, "spine_map_by_arm", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_reproduction(rep, out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_reproduce_refuses_a_foreign_directory(tmp_path, capsys, small_cohort):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    vu, pat = small_cohort
    code = main(["reproduce", "--vu", str(vu), "--patients", str(pat), "--out", str(out)])
    assert code == 2
    assert "not written by syndesmo" in one_line_error(capsys, "reproduce")
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"


# ---------------------------------------------------------------------------
# syndesmo fit


def test_fit_prints_summary_and_odds_ratios(tmp_path, capsys, small_cohort):
    vu, pat = small_cohort
    spec = REPO / "models" / "assert" / "new_syndesmophyte.toml"
    out = tmp_path / "fit"
    args = ["fit", str(spec), "--vu", str(vu), "--patients", str(pat), "--exposure", "w0"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "engine=native" in printed and "Random intercept SD" in printed
    assert "Odds ratios (95% CI)" in printed and re.search(r"^\s*mri\s", printed, re.M)
    names = {p.name for p in out.iterdir()}
    stem = "new_syndesmophyte_w0"
    assert {f"{stem}_summary.txt", f"{stem}_odds_ratios.csv", f"{stem}_excluded.csv"} <= names
    ors = pd.read_csv(out / f"{stem}_odds_ratios.csv").set_index("term")
    assert np.isfinite(ors.loc["mri", "OR"])


@pytest.mark.parametrize("case", ["unknown_exposure", "not_in_spec", "missing_file", "flat"])
def test_fit_bad_input(tmp_path, capsys, small_cohort, flat_w102_cohort, case):
    vu, pat = flat_w102_cohort if case == "flat" else small_cohort
    exposure = '["w0", "w0_then_w24"]' if case == "unknown_exposure" else '["w0", "w102"]'
    spec = spec_dir(tmp_path, exposure) / "new.toml"
    if case == "missing_file":
        vu = tmp_path / "absent.csv"
    out = tmp_path / "fit"
    args = ["fit", str(spec), "--vu", str(vu), "--patients", str(pat), "--out", str(out)]
    if case == "not_in_spec":
        args += ["--exposure", "any"]
    assert main(args) == 2
    err = one_line_error(capsys, "fit")
    expected = {
        "unknown_exposure": "w0_then_w24",
        "not_in_spec": "'any'",
        "missing_file": "absent.csv",
        "flat": "'w102'",
    }[case]
    assert expected in err
    assert not out.exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# the manuscript parts of report.md on the shipped cohort


def test_shipped_cohort_shows_the_findings_of_the_2012_abstract(shipped_run):
    """The four qualitative findings of van der Heijde et al. (Ann Rheum Dis
    2012;71:369-73), for inflammation at baseline; ``assert_like.toml`` chose its seed
    as the first from 2012 that shows them, so this pins that choice."""
    out, _ = shipped_run
    ladder = pd.read_csv(out / "ladder.csv")
    w0 = ladder[ladder["exposure"].eq("w0") & ladder["engine"].eq("native")]
    new = w0[w0["outcome"].eq("new_syndesmophyte")].set_index("step")
    growth = w0[w0["outcome"].eq("growth")].set_index("step")
    for step in ("c", "d"):  # after treatment, and after the confounders
        # 1. a significant VU-level OR inside the abstract's 1.51-2.26
        assert new.loc[step, "lower"] > 1 and 1.51 <= new.loc[step, "OR"] <= 2.26
        # 2. growth not associated
        assert growth.loc[step, "lower"] < 1 < growth.loc[step, "upper"]
    # 3. at the patient level no more than a trend
    patient = pd.read_csv(out / "patient_level.csv")
    any_new = patient[patient["outcome"].eq("any_new") & patient["exposure"].eq("w0")]
    assert len(any_new) == 1 and any_new.iloc[0]["p"] >= 0.05
    # 4. the large majority of new syndesmophytes in VUs without inflammation
    share = pd.read_csv(out / "descriptive_share_uninflamed.csv").set_index("exposure")
    assert share.loc["w0", "pct_events_uninflamed"] > 200 / 3
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "the large majority of new syndesmophytes developed in vertebral units" in text


def test_reproduce_report_has_the_course_section(shipped_run):
    out, _ = shipped_run
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## The MRI course" in text and "![MRI course](course_prevalence.png)" in text
    assert text.index("## The MRI course") < text.index("## VUs and patients left out")
    names = {p.name for p in out.iterdir()}
    assert {"course_prevalence.png", "course_vu_prevalence.csv", "course_mcnemar.md"} <= names
    vp = pd.read_csv(out / "course_vu_prevalence.csv")
    row = vp.query("measure == 'inflammation' and arm == 'all' and week == 0").iloc[0]
    assert f"{100 * row['prevalence']:.1f}%" in text


def test_report_states_synthetic_data_and_true_ors(shipped_run):
    out, _ = shipped_run
    text = (out / "report.md").read_text(encoding="utf-8")
    spec = CohortSpec.from_toml(REPO / "data" / "synthetic" / "assert_like.toml")
    assert "**These are synthetic data: the shipped synthetic cohort**" in text
    assert f"conditional OR {spec.odds_ratio_new:g} for a new syndesmophyte" in text
    assert f"OR {spec.odds_ratio_growth:g} for growth" in text
    # the 2012 abstract's range beside the ladder, cited
    assert report.PUBLISHED_COLUMN in text and "| 1.51–2.26 |" in text
    assert "van der Heijde et al., Ann Rheum Dis 2012;71:369–373" in text
    row = next(line for line in text.splitlines() if line.startswith("| inflamed at baseline |"))
    assert row.rstrip(" |").endswith(f"| {spec.odds_ratio_new:g} | 1.51–2.26")


def test_report_opens_with_table1_counted_like_pandas(shipped_run):
    out, _ = shipped_run
    text = (out / "report.md").read_text(encoding="utf-8")
    assert text.index("## Table 1. Baseline characteristics by arm") < text.index(
        "## Patients and vertebral units"
    )
    table = pd.read_csv(out / "table1_baseline.csv", dtype=str).set_index("characteristic")
    pat = pd.read_csv(REPO / "data" / "synthetic" / "patients.csv")
    for arm, sub in pat.groupby("arm"):
        assert table.loc["Patients", arm] == str(len(sub))
        n_b27 = int((sub["hla_b27"] == 1).sum())
        assert table.loc["HLA-B27 positive", arm] == f"{n_b27} ({100 * n_b27 / len(sub):.1f}%)"
        n_male = int((sub["sex"] == "male").sum())
        assert table.loc["Sex: male", arm].startswith(f"{n_male} (")
        q1, med, q3 = sub["age"].quantile([0.25, 0.5, 0.75])
        assert table.loc["Age, years", arm] == f"{med:.1f} [{q1:.1f}–{q3:.1f}]"
        assert table.loc["mSASSS at baseline (0–72): missing", arm] == str(
            int(sub["msasss_baseline"].isna().sum())
        )
    # ASspiMRI-a at baseline: sum over the 12 VUs per patient, by pandas directly
    vu = pd.read_csv(REPO / "data" / "synthetic" / "vu.csv")
    total = vu.groupby("patient")["mri_w0"].sum(min_count=1)
    pat["mri"] = pat["patient"].map(total)
    label = "ASspiMRI-a at baseline, sum over 12 VUs (0–72)"
    q1, med, q3 = pat["mri"].dropna().quantile([0.25, 0.5, 0.75])
    assert table.loc[label, "all"] == f"{med:.1f} [{q1:.1f}–{q3:.1f}]"


def test_report_ends_with_versions_and_command(shipped_run):
    import numpy
    import scipy
    import statsmodels

    out, _ = shipped_run
    text = (out / "report.md").read_text(encoding="utf-8").rstrip()
    software = text[text.index("## Software") :]
    for name, module in (("numpy", numpy), ("scipy", scipy), ("statsmodels", statsmodels)):
        assert f"{name} {module.__version__}" in software
    assert "Software: syndesmo " in software and "Python 3." in software
    assert "lme4" not in software  # the lme4 engine was not used
    assert text.splitlines()[-1] == f"Made by: `syndesmo reproduce --out {out} --quiet`"


def test_failed_fits_named_and_forest_data_marks_them(shipped_run):
    out, _ = shipped_run
    text = (out / "report.md").read_text(encoding="utf-8")
    shipped = pd.read_csv(out / "ladder.csv")
    section = text[text.index("## Singular fits and fits that could not be made") :]
    assert section.count("not estimable:") == shipped["OR"].isna().sum()
    forest = pd.read_csv(out / "forest_plot_data.csv")
    ok = forest[forest["estimable"]].iloc[0]
    assert ok["text"] == f"{ok['OR']:.2f} ({ok['lower']:.2f}–{ok['upper']:.2f})"
    assert forest["n"].gt(0).all() and forest["events"].notna().all()
    # every row of the ladder is in the plot's data, estimable or not
    assert len(forest[forest["engine"].ne("patient")]) == len(shipped)

    # a fit without an estimate (as GEE gives when it does not converge) is named in
    # the report and marked in the plot's data, never drawn as a number
    ladder = shipped.copy()
    gone = ladder.index[ladder["engine"].eq("gee") & ladder["outcome"].eq("growth")][:2]
    ladder.loc[gone, ["OR", "lower", "upper"]] = np.nan
    ladder.loc[gone, "note"] = "did not converge: standard error huge or undefined"
    lines = report.fits_text(ladder)
    named = [line for line in lines if "not estimable: did not converge" in line]
    assert len(named) == 2 and all("(gee)" in line for line in named)
    data = plots.forest_table(ladder)
    missing = data[~data["estimable"]]
    assert len(missing) == 2 and set(missing["text"]) == {plots.NOT_ESTIMABLE}
    assert missing["OR"].isna().all() and len(data) == len(ladder)


def test_singular_fit_is_named_not_shown_as_zero(shipped_run):
    out, _ = shipped_run
    ladder = pd.read_csv(out / "ladder.csv")
    pick = ladder["engine"].eq("native") & ladder["step"].eq("b")
    pick &= ladder["outcome"].eq("growth") & ladder["exposure"].eq("w0")
    ladder.loc[pick, ["sigma", "icc", "singular"]] = [0.0, 0.0, True]
    notes = report.fits_to_note(ladder)
    row = notes[notes["problem"].eq("singular") & notes["step"].eq("b")]
    assert len(row) == 1 and row.iloc[0]["reason"] == "the random-intercept SD is estimated at 0"
    assert row.iloc[0]["exposure"] == ladder.loc[pick, "exposure_label"].iloc[0]
    text = "\n".join(report.fits_text(ladder))
    assert "step b (native): singular: the random-intercept SD is estimated at 0" in text
    words = report._sigma_words(ladder[pick])
    assert words == "estimated at 0 in every fit (singular)" and "0.00" not in words


def test_forest_ticks_span_every_interval(shipped_run):
    out, _ = shipped_run
    ladder = pd.read_csv(out / "ladder.csv")
    fig = plots.forest_plot(ladder)
    data = plots.forest_table(ladder)
    for ax, outcome in zip(fig.axes[0::2], pd.unique(ladder["outcome"]), strict=False):
        ok = data[data["outcome"].eq(outcome) & data["estimable"]]
        ticks = ax.get_xticks()
        assert ticks.min() <= ok["lower"].min() and ticks.max() >= ok["upper"].max()


def test_figure_formats_checked():
    assert report.check_formats("png,svg") == ("png", "svg")
    with pytest.raises(ValueError, match="tiff"):
        report.check_formats("png,tiff")


def test_spine_map_by_arm_draws_the_12_scored_vus(shipped_run):
    from syndesmo.panel.spine import MSASSS_VUS

    out, _ = shipped_run
    panel = load_panel(
        REPO / "data" / "synthetic" / "vu.csv", REPO / "data" / "synthetic" / "patients.csv"
    )
    profiles = reproduction.spine_by_arm(panel, threshold=1, readers="mean")
    assert list(pd.unique(profiles["arm"])) == ["placebo", "infliximab"]
    # per arm, the new syndesmophytes at risk add up to the pooled profile's
    pooled = pd.read_csv(out / "spine_profile.csv").set_index("vu")
    summed = profiles.groupby("vu")[["new", "at_risk"]].sum()
    assert (
        (summed.loc[list(MSASSS_VUS)] == pooled.loc[list(MSASSS_VUS), ["new", "at_risk"]])
        .all()
        .all()
    )
    fig = plots.spine_map_by_arm(profiles)
    assert len(fig.axes) == 4  # inflammation and new bone, one column per arm
    for ax in fig.axes[2:]:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(MSASSS_VUS)
    assert [ax.get_title() for ax in fig.axes[:2]] == [
        "placebo (52 patients)",
        "infliximab (135 patients)",
    ]


def test_reproduce_writes_the_formats_asked_for(tmp_path, small_cohort):
    out = tmp_path / "rep"
    specs = spec_dir(tmp_path, '["w0"]')
    argv = ["reproduce", "--vu", str(small_cohort[0]), "--patients", str(small_cohort[1])]
    argv += ["--specs", str(specs), "--out", str(out), "--format", "svg", "--quiet"]
    assert main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert {"forest_plot.svg", "spine_map.svg"} <= names
    assert not any(n.endswith((".png", ".pdf")) for n in names)
    assert (out / "forest_plot.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "synthetic data" not in text  # nothing says these files were simulated
    assert "- `forest_plot.svg`" in text


def test_reproduce_refuses_an_unknown_format(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--format", "png,tiff"]) == 2
    err = one_line_error(capsys, "reproduce")
    assert "tiff" in err and not (tmp_path / "r").exists()


def test_a_real_singular_fit_is_named_in_the_report(tmp_path):
    # almost no between-patient variation: glmer-like ML puts the patient SD at 0
    panel = simulate_cohort(CohortSpec(n_patients=60, sd_syndesmophyte=0.05), seed=1)
    vu, patients = write_cohort(panel, tmp_path / "cohort")
    out = tmp_path / "rep"
    argv = ["reproduce", "--vu", str(vu), "--patients", str(patients), "--quiet"]
    argv += ["--specs", str(spec_dir(tmp_path, '["w0"]')), "--out", str(out)]
    assert main(argv) == 0
    ladder = pd.read_csv(out / "ladder.csv")
    glmm = ladder[ladder["engine"].eq("native")]
    assert glmm["singular"].any() and (glmm.loc[glmm["singular"], "sigma"] < 1e-6).all()
    text = (out / "report.md").read_text(encoding="utf-8")
    for r in glmm[glmm["singular"]].itertuples():
        line = f"VUs inflamed at baseline, step {r.step} (native): singular: the random-intercept"
        assert line in text
    assert "random-intercept SD 0.00" not in text and "σ = 0.00" not in text
    assert "latent ICC 0.00" not in text
    assert "SD estimated at 0 in every fit (singular)" in text
    notes = pd.read_csv(out / "fits_to_note.csv")
    assert (notes["problem"] == "singular").sum() == int(glmm["singular"].sum())


def test_lme4_engine_puts_r_and_lme4_in_the_versions_line(tmp_path, r_lme4):
    panel = simulate_cohort(CohortSpec(n_patients=60, sd_syndesmophyte=0.05), seed=1)
    vu, patients = write_cohort(panel, tmp_path / "cohort")
    out = tmp_path / "rep"
    argv = ["reproduce", "--vu", str(vu), "--patients", str(patients), "--quiet"]
    argv += ["--specs", str(spec_dir(tmp_path, '["w0"]')), "--engine", "lme4", "--out", str(out)]
    assert main(argv) == 0
    text = (out / "report.md").read_text(encoding="utf-8")
    software = next(line for line in text.splitlines() if line.startswith("Software: "))
    assert ", R 4." in software and ", lme4 1." in software
    # glmer finds the same boundary: its singular fits are named too
    assert "step b (lme4): singular: the random-intercept SD is estimated at 0" in text
