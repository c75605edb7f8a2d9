"""``syndesmo course``: the course of MRI inflammation and erosions over the MRI weeks."""

from __future__ import annotations

import argparse
from pathlib import Path

from syndesmo.cli.commands._input import add_panel_options, add_threshold_option, load

NAME = "course"
HELP = "the MRI course: inflammation and active erosions by week and arm, paired tests, GLMM"
DESCRIPTION = """\
The course of spinal MRI inflammation over the MRI weeks of a VU panel, as
Baraliakos et al. report it for two years of TNF blockade (J Rheumatol
2013;40:1891-6: 33.7% -> 12.0% of all 23 VUs inflamed, 100% -> 64% of patients):

  vu_prevalence       VUs inflamed (ASspiMRI-a >= --threshold) and VUs with an
                      active erosion (ASspiMRI-a 4-6) at each MRI week, by arm
                      and for all arms, with cluster-robust CIs (logistic GEE,
                      independence working correlation, patients as clusters)
                      and the relative change from baseline
  patient_prevalence  patients with any inflamed VU / any active erosion, Wilson
                      CIs
  mcnemar             each later week against the first: the proportion of
                      patients, McNemar's test (exact below 25 discordant pairs)
  wilcoxon            each later week against the first: the patient's
                      ASspiMRI-a total over the VUs scored at both weeks,
                      Wilcoxon signed-rank test
  model_fits, model   the multilevel model inflamed ~ C(week) * arm +
                      (1|patient/vu) by the native engine (Laplace and --nagq
                      point adaptive quadrature) and lme4 (Laplace,
                      tolPwrss = 1e-12) beside it when R is installed
  odds_ratios         ORs of each week against baseline within each arm, and of
                      each arm against the reference arm (placebo) at each week
  ledger              VU x week rows left out (no score) and patients left out of
                      the paired tests, and why

Without --vu the shipped synthetic cohort (data/synthetic) is analysed. With two
or more readers, --readers mean takes each VU's mean score, --readers agree
counts a VU inflamed only when every reader does.

Writes into --out (default course_out/): every table as <table>.csv (full
precision) and <table>.md, prevalence.png and prevalence.pdf (prevalence by week and
arm with CIs) and
course.md (all tables), all at once: the directory appears only when everything
succeeded, and it is replaced only if it is empty or was written by syndesmo.
Prints course.md.

examples:
  syndesmo course
  syndesmo course --vu cohort/vu.csv --patients cohort/patients.csv --out course/
  syndesmo course --threshold 2 --nagq 10 --no-lme4
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_panel_options(parser)
    add_threshold_option(parser)
    parser.add_argument(
        "--readers",
        choices=("mean", "agree"),
        default="mean",
        help="how two or more readers are combined (default: mean)",
    )
    parser.add_argument(
        "--nagq",
        type=int,
        default=7,
        metavar="N",
        help="points of the native engine's adaptive quadrature fit, besides Laplace "
        "(default: 7; 1 = Laplace only)",
    )
    lme4 = parser.add_mutually_exclusive_group()
    lme4.add_argument(
        "--no-lme4",
        dest="fit_lme4",
        action="store_const",
        const=False,
        default=None,
        help="do not fit lme4 beside the native engine (default: fit it when R is installed; "
        "about 30 s on the shipped cohort)",
    )
    lme4.add_argument(
        "--lme4",
        dest="fit_lme4",
        action="store_const",
        const=True,
        help="fit lme4 beside the native engine, an error without R and lme4",
    )
    parser.add_argument(
        "--level",
        type=float,
        default=0.95,
        metavar="L",
        help="confidence level of every interval (default: 0.95)",
    )
    parser.add_argument(
        "--out",
        default="course_out",
        metavar="DIR",
        help="output directory (default: course_out)",
    )


def run(args: argparse.Namespace) -> int:
    from syndesmo.analysis.course import mri_course
    from syndesmo.cli.app import UsageError
    from syndesmo.cli.commands.reproduce import default_cohort
    from syndesmo.output.course_text import render, write_course
    from syndesmo.output.report import atomic_output_dir, check_destination

    if args.patients and not args.vu:
        raise UsageError(NAME, "--patients needs --vu")
    out = check_destination(args.out)  # before any work, so a bad --out fails first
    vu_path, patients_path = (args.vu, args.patients) if args.vu else default_cohort()
    panel = load(args, vu_path, patients_path)
    course = mri_course(
        panel,
        threshold=args.threshold,
        readers=args.readers,
        nagq=args.nagq,
        lme4=args.fit_lme4,
        level=args.level,
    )
    files = f"{vu_path}" + (f" + {patients_path}" if patients_path else "")
    header = (
        f"Data: `{files}`: {panel.n_patients} patients, arms {', '.join(map(str, course.arms))}; "
        f"MRI weeks {', '.join(map(str, course.weeks))}."
    )
    text = render(course, header)
    print(text, end="")
    with atomic_output_dir(out) as tmp:
        written = write_course(course, tmp, formats=("png", "pdf"))
        (tmp / "course.md").write_text(text, encoding="utf-8")
        written.append(tmp / "course.md")
    print(f"wrote {len(written)} files to {Path(out)}")
    return 0
