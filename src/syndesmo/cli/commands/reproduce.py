"""``syndesmo reproduce``: the ASSERT-style analysis end to end, tables + figures + report."""

from __future__ import annotations

import argparse
import sys

from syndesmo.cli.commands._input import add_panel_options, default_cohort, load
from syndesmo.fitting import registry

NAME = "reproduce"
HELP = "run the whole ASSERT-style analysis (ladders, GEE vs GLMM, patient level) into a report"
DESCRIPTION = """\
Redo the analysis of van der Heijde et al. (Ann Rheum Dis 2012;71:369-73) on a
VU panel: descriptive counts, the model ladder for new syndesmophytes and for
growth (crude logistic -> GLMM with a patient random intercept -> + treatment ->
+ confounders, with GEE beside the GLMM), the patient level beside the VU level,
and the VUs left out. The analyses are the TOML specs in models/assert/ (or
--specs DIR).

Without --vu the shipped synthetic cohort (data/synthetic) is analysed.
Without --specs the shipped specs are fitted to the panel: their MRI weeks
(0, 24, 102) are read at the panel's own MRI weeks by position (e.g. 0, 12, 52),
every MRI week of the panel gets its single-week exposure, and covariates the
panel lacks are left out; each change is printed as a note.

Writes into --out (default reproduce_out/): every table as CSV and Markdown,
the figures forest_plot and spine_map (by arm) in each --format (default PNG and
PDF) and report.md: Table 1 (baseline characteristics by arm), the results with
the numbers filled in beside the 2012 abstract's ORs (and the true ORs when the
data are the shipped or a simulated cohort), singular fits and fits that could not
be made named with the reason, and the software versions and this command at the
end. All at once: the directory appears only when everything succeeded, and an
existing directory is replaced only if syndesmo wrote every file in it (anything
else is refused). Prints the headline table.

examples:
  syndesmo reproduce
  syndesmo reproduce --vu vu.csv --patients patients.csv --out results/ --nagq 10
  syndesmo reproduce --engine lme4 --format png,svg --out results_lme4/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_panel_options(parser)
    parser.add_argument(
        "--specs", metavar="DIR", help="directory of analysis specs (default: models/assert)"
    )
    parser.add_argument(
        "--out",
        default="reproduce_out",
        metavar="DIR",
        help="output directory (default: reproduce_out)",
    )
    parser.add_argument(
        "--engine",
        choices=registry.engine_names(scale=registry.CONDITIONAL, family=registry.BINOMIAL),
        help="GLMM engine for the VU-level specs (default: the specs' engine)",
    )
    parser.add_argument(
        "--nagq", type=int, metavar="N", help="quadrature points, 1 = Laplace (default: specs')"
    )
    parser.add_argument(
        "--reference-arm",
        metavar="ARM",
        help="the arm that arm terms compare against in every spec, matched "
        "case-insensitively (default: each spec's reference_arm, else the placebo-like arm)",
    )
    parser.add_argument(
        "--format",
        default="png,pdf",
        metavar="FMT",
        help="figure formats, comma separated, from png, pdf, svg (default: png,pdf)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from syndesmo.analysis import reproduction
    from syndesmo.analysis.specs import default_spec_dir, load_specs
    from syndesmo.cli.app import UsageError
    from syndesmo.output import report

    if args.patients and not args.vu:
        raise UsageError(f"{NAME}", "--patients needs --vu")
    from syndesmo.output.software import command_line

    try:
        formats = report.check_formats(args.format)
    except ValueError as exc:
        raise UsageError(f"{NAME}", f"--format: {exc}") from None
    out = report.check_destination(args.out)
    specs = load_specs(args.specs or default_spec_dir())
    vu_path, patients_path = (args.vu, args.patients) if args.vu else default_cohort()
    panel = load(args, vu_path, patients_path)
    spec_notes: list[str] = []
    if not args.specs:  # the shipped specs, fitted to the panel's weeks and covariates
        specs, spec_notes = reproduction.adapt_specs(panel, specs)
        for note in spec_notes:
            print(f"syndesmo {NAME}: note: {note}", file=sys.stderr)
    specs = [
        s.with_options(engine=args.engine, nagq=args.nagq) if s.level == "vu" else s for s in specs
    ]
    if args.reference_arm:
        specs = [s.with_options(reference_arm=args.reference_arm) for s in specs]
    total = reproduction.n_fits(specs) + 1
    with tqdm(
        total=total, desc="reproduce", unit="fit", file=sys.stderr, disable=args.quiet
    ) as bar:

        def progress(message: str) -> None:
            bar.set_postfix_str(message, refresh=False)
            bar.update(1)

        rep = reproduction.run_reproduction(
            panel,
            specs,
            progress=progress,
            spec_notes=spec_notes,
            patients_path=str(patients_path) if patients_path else None,
        )
        rep.settings["command"] = command_line(getattr(args, "argv", None))
        bar.set_postfix_str("writing tables, figures and report.md", refresh=True)
        written = report.write_reproduction(rep, out, formats=formats)
        bar.update(1)
    print(report.markdown_table(rep.headline))
    print(
        f"\n{len(written)} files written to {out}/ (report.md, forest_plot and spine_map as "
        f"{', '.join(formats)}, tables) in {rep.seconds:.1f} s",
    )
    return 0
