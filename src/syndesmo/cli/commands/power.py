"""``syndesmo power``: power by simulation over a grid of designs, with a table and a plot."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from syndesmo.checks import MAX_SIMS
from syndesmo.fitting import registry

NAME = "power"
HELP = "power of the VU-level and patient-level analyses by simulation, over a grid of designs"
DESCRIPTION = """\
Simulate many cohorts from a cohort spec (the data-generating model of
syndesmo.simulate.cohort) for every point of a grid of designs, fit the chosen analyses
to the same simulated cohorts, and report the power: the share of simulated
studies that reject H0: OR = 1 for the MRI exposure (two-sided Wald test at
--alpha), with a Monte Carlo 95% interval (Wilson). A fit that fails counts as a
non-rejection; failed and singular fits are reported beside the power.

analyses (--analysis, comma separated):
  vu       VU-level GLMM: new_syndesmophyte ~ mri + arm + (1|patient)
  gee      the same model by GEE (exchangeable within patient; slower)
  patient  patient-level logistic: any new syndesmophyte ~ any inflamed VU + arm
  logit    crude VU-level logistic ignoring clustering (anti-conservative when
           exposure and outcome both cluster within patients)

The grid is the cartesian product of --patients, --odds-ratio and any --grid
FIELD=V1,V2 (FIELD a key of the cohort spec). Replicate i of grid point g uses
SeedSequence(seed).spawn(n_points)[g].spawn(sims)[i], so the same --seed gives
the same numbers with any --workers, --scheduler or --batch-size.

Writes to --out: power.csv (one row per grid point x analysis), power.md (the
same as a Markdown table) and power.png (power against the number of patients,
one panel per true OR, one line per analysis, with Monte Carlo bands). The three
files appear together; files of these names are replaced only if syndesmo wrote
them. More than --max-sims studies in all (default 1,000,000) is refused before
anything runs. Ctrl-C stops the workers and exits.

examples:
  syndesmo power --patients 50,100,200 --odds-ratio 1.5,2 --sims 500 --analysis vu,patient
  syndesmo power --spec data/synthetic/assert_like.toml --patients 100,187 --workers 2 --out power/
  syndesmo power --patients 187 --odds-ratio 1 --analysis vu,logit --sims 1000   # type I error
  syndesmo power --patients 187 --scheduler tcp://10.0.0.5:8786 --sims 5000
"""

#: Files written in --out.
TABLE_CSV, TABLE_MD, FIGURE = "power.csv", "power.md", "power.png"
OUTPUTS = (TABLE_CSV, TABLE_MD, FIGURE)
#: Columns printed and written to Markdown.
SHOWN = [
    "analysis",
    "power",
    "power_lower",
    "power_upper",
    "mean_or",
    "median_or",
    "coverage",
    "failed_rate",
    "singular_rate",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spec",
        metavar="FILE.toml",
        help="base cohort spec (TOML; default: the CohortSpec defaults)",
    )
    parser.add_argument(
        "--patients",
        metavar="N1,N2,...",
        help="numbers of patients to try (default: the spec's n_patients)",
    )
    parser.add_argument(
        "--odds-ratio",
        metavar="OR1,OR2,...",
        help="true conditional ORs of the exposure for a new syndesmophyte (default: the spec's)",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="another spec field to vary, e.g. --grid inflammation_prevalence=0.2,0.337 "
        "(repeatable)",
    )
    parser.add_argument(
        "--sims",
        type=int,
        default=1000,
        metavar="N",
        help="simulated studies per grid point (default: 1000)",
    )
    parser.add_argument(
        "--max-sims",
        type=int,
        default=MAX_SIMS,
        metavar="N",
        help=f"ceiling on simulated studies in all (--sims x grid points; default: {MAX_SIMS:,})",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="two-sided significance level (default: 0.05)",
    )
    parser.add_argument(
        "--analysis",
        default="vu",
        metavar="A1,A2",
        help="analyses: vu, gee, patient, logit, comma separated (default: vu)",
    )
    parser.add_argument(
        "--engine",
        default=registry.DEFAULT_ENGINE,
        choices=registry.engine_names(scale=registry.CONDITIONAL, takes_nagq=True),
        help="engine of the vu GLMM (default: %(default)s; lme4 is one R fit per study)",
    )
    parser.add_argument(
        "--nagq",
        type=int,
        default=1,
        help="adaptive Gauss-Hermite points of the GLMM (1 = Laplace, default)",
    )
    parser.add_argument(
        "--adjust",
        default="arm",
        metavar="C1,C2",
        help="covariates beside the exposure (default: arm; '' for none)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="local worker processes (default: run in this process)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:port) to run the studies on a cluster",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="studies per task (default: up to 100); does not change the results",
    )
    parser.add_argument("--seed", type=int, default=0, help="root seed (default: 0)")
    parser.add_argument(
        "--out",
        default=".",
        metavar="DIR",
        help="directory for power.csv, power.md and power.png (default: .); files of "
        "these names are replaced only if syndesmo wrote them",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _numbers(text: str, what: str, kind: type) -> list[Any]:
    from syndesmo.errors import SpecError

    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = kind(item)
        except ValueError:
            noun = "whole number" if kind is int else "number"
            raise SpecError(f"{what}: {item!r} is not a {noun} (in {text!r})") from None
        values.append(value)
    if not values:
        raise SpecError(f"{what}: no values in {text!r}")
    return values


def _scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _grid(args: argparse.Namespace, spec) -> dict[str, list[Any]]:
    from syndesmo.errors import SpecError

    grid: dict[str, list[Any]] = {}
    if args.patients:
        grid["n_patients"] = _numbers(args.patients, "--patients", int)
    if args.odds_ratio:
        grid["odds_ratio_new"] = _numbers(args.odds_ratio, "--odds-ratio", float)
    for item in args.grid:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--grid {item!r}: expected FIELD=V1,V2")
        if key in grid:
            raise SpecError(f"--grid {key}: this field is already varied")
        if isinstance(getattr(spec, key, None), tuple):
            raise SpecError(
                f"--grid {key}: tuple-valued fields cannot be varied from the command line"
            )
        grid[key] = [_scalar(v.strip()) for v in values.split(",") if v.strip()]
        if not grid[key]:
            raise SpecError(f"--grid {key}: no values")
    if "n_patients" not in grid:
        grid["n_patients"] = [spec.n_patients]
    if "odds_ratio_new" not in grid:
        grid["odds_ratio_new"] = [spec.odds_ratio_new]
    return grid


def run(args: argparse.Namespace) -> int:
    from syndesmo.errors import SpecError
    from syndesmo.output.atomic import atomic_files, check_files
    from syndesmo.output.plots import power_curve_plot
    from syndesmo.output.report import markdown_table
    from syndesmo.powersim.api import power_curve
    from syndesmo.simulate.cohort import CohortSpec

    if args.spec:
        spec_path = Path(args.spec)
        if not spec_path.is_file():
            raise FileNotFoundError(2, "No such file", str(spec_path))
        spec = CohortSpec.from_toml(spec_path)
    else:
        spec = CohortSpec()
    if args.sims < 1:
        raise SpecError(f"--sims must be at least 1, got {args.sims}")
    out = Path(args.out)
    check_files(out, OUTPUTS)  # before simulating: a foreign power.csv fails at once
    grid = _grid(args, spec)
    n_points = math.prod(len(v) for v in grid.values())
    total = args.sims * n_points
    if total > args.max_sims:
        raise SpecError(
            f"--sims {args.sims} x {n_points} grid point(s) = {total:,} simulated studies, "
            f"more than the ceiling of {args.max_sims:,}; give --max-sims {total} if you "
            "mean it"
        )
    adjust = [c.strip() for c in args.adjust.split(",") if c.strip()]
    table = power_curve(
        spec,
        n_sims=args.sims,
        alpha=args.alpha,
        analysis=args.analysis,
        engine=args.engine,
        nagq=args.nagq,
        seed=args.seed,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        batch_size=args.batch_size,
        adjust=adjust,
        max_sims=args.max_sims,
        **grid,
    )
    columns = [*grid, *SHOWN]
    header = (
        f"Power by simulation: {args.sims} studies per point, alpha {args.alpha:g} "
        f"(two-sided Wald), seed {args.seed}. Monte Carlo 95% CI: Wilson. Failed fits "
        "count as non-rejections.\n\n"
    )
    fig = power_curve_plot(table, x="n_patients")
    with atomic_files(out, OUTPUTS) as tmp:
        table.to_csv(tmp / TABLE_CSV, index=False)
        (tmp / TABLE_MD).write_text(
            header + markdown_table(table[columns]) + "\n", encoding="utf-8"
        )
        fig.savefig(tmp / FIGURE, dpi=200)
    print(header.strip())
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out / TABLE_CSV}, {out / TABLE_MD}, {out / FIGURE}")
    return 0
