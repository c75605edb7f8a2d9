"""``syndesmo fit``: fit one analysis spec (TOML) to a panel and print the results."""

from __future__ import annotations

import argparse
import sys

from syndesmo.cli.commands._input import add_panel_options, load
from syndesmo.fitting import registry

NAME = "fit"
HELP = "fit one analysis spec (models/*.toml) to a VU panel and print the odds ratios"
DESCRIPTION = """\
Fit the model an analysis spec describes to a VU panel and print, for each
exposure of the spec, the fit summary (lme4/statsmodels style) and the table of
odds ratios with 95% confidence intervals.

A VU-level spec fits  <outcome> ~ mri + <covariates> + (1|patient)  with its
engine (native GLMM, lme4, gee, bayes, clogit; logit without the bar); a patient-level
spec fits the patient model (see models/assert/patient_*.toml). Keys of a spec:
name, title, level, outcome, exposure, threshold, covariates, engine, nagq,
readers, beside, summary (see syndesmo.analysis.specs).

With --out DIR the summaries and tables are also written there (CSV + Markdown),
all at once: nothing is left behind if a fit fails.

examples:
  syndesmo fit models/assert/new_syndesmophyte.toml --vu data/synthetic/vu.csv \\
      --patients data/synthetic/patients.csv --exposure w0
  syndesmo fit my_spec.toml --vu vu.csv --patients patients.csv --engine lme4 --nagq 10
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC.toml", help="analysis spec to fit")
    add_panel_options(parser, required=True)
    parser.add_argument(
        "--exposure",
        action="append",
        metavar="NAME",
        help="fit only this exposure of the spec (repeatable); default: all of them",
    )
    parser.add_argument(
        "--engine",
        choices=tuple(registry.REGISTRY),
        metavar="ENGINE",
        help="override the spec's engine: %(choices)s (see syndesmo.available_engines())",
    )
    parser.add_argument("--nagq", type=int, help="override the spec's quadrature points")
    parser.add_argument(
        "--reference-arm",
        metavar="ARM",
        help="the arm that arm terms compare against, matched case-insensitively "
        "(overrides the spec's reference_arm; default: the placebo-like arm)",
    )
    parser.add_argument("--out", metavar="DIR", help="also write summaries and tables here")


def run(args: argparse.Namespace) -> int:
    from syndesmo.analysis import ladder as analysis
    from syndesmo.analysis.specs import load_spec
    from syndesmo.errors import SpecError
    from syndesmo.output import report

    spec = load_spec(args.spec).with_options(
        engine=args.engine, nagq=args.nagq, reference_arm=args.reference_arm
    )
    if args.exposure:
        unknown = [e for e in args.exposure if e not in spec.exposures]
        if unknown:
            raise SpecError(
                f"--exposure {unknown} is not in {args.spec}; its exposures are "
                f"{', '.join(spec.exposures)}"
            )
        spec = spec.with_options(exposures=list(args.exposure))
    if args.out:
        report.check_destination(args.out)
    panel = load(args, args.vu, args.patients)
    results = analysis.fit_spec(panel, spec)
    for res in results:
        print(f"== {spec.name}: {res.title}")
        print(res.text)
        print()
    if args.out:
        with report.atomic_output_dir(args.out) as tmp:
            for res in results:
                stem = f"{spec.name}_{res.exposure}"
                (tmp / f"{stem}_summary.txt").write_text(res.text + "\n", encoding="utf-8")
                report.write_table(res.table, tmp, f"{stem}_odds_ratios")
                report.write_table(res.ledger.to_frame(), tmp, f"{stem}_excluded")
        print(f"written to {args.out}", file=sys.stderr)
    return 0
