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
--alpha), with a Monte Carlo 95% interval (Wilson).

Fit health is never silent: a fit that fails counts as a non-rejection, and every
row reports the share of fits that failed (not fitted: no events, no non-events or a
rank-deficient design; not converged; the engine raised), were singular (random-
intercept SD 0) or met separation. The first --check-first studies of each point
run first; if more than --max-failed of them failed for an analysis, that point
stops there and the reason is printed and written (stop_reason).

With --target P the command answers the planner's question instead: the smallest
number of patients (--solve n, the default) or the smallest conditional OR
(--solve or, at --patients) whose power reaches P, for each --analysis side by side.
The search uses the same studies (seeds) at every point (common random numbers;
over the number of patients, the cohort of n patients is the first n of a larger
one), brackets the answer by halving or doubling from the spec's value and bisects
down to --step. It reports the answer, its power with the Monte Carlo CI, the power
one step below, and every point evaluated.

analyses (--analysis, comma separated):
  vu       VU-level GLMM: new_syndesmophyte ~ mri + arm + (1|patient) (with 2 or more
           readers on the mean of the readers' scores, as reproduce fits it)
  readers  with 2 or more readers (n_readers in the spec): every reading a row, nested
           in its VU: ~ mri + arm + C(reader) + (1|patient/vu) (one nested fit per
           study). On the simulator's readings (one true state per VU, misread
           now and then) its Wald test is conservative and its power near 0:
           plan two-reader studies with vu (see the README)
  gee      the same model by GEE (exchangeable within patient; slower)
  patient  patient-level logistic: any new syndesmophyte ~ any inflamed VU + arm
  logit    crude VU-level logistic ignoring clustering (anti-conservative when
           exposure and outcome both cluster within patients)
  hybrid   within-between GLMM: ~ mri_within + mri_between + arm + (1|patient); the
           within-patient OR (mri_within), unbiased under propensity_correlation
  clogit   conditional logistic regression within patient (the within-patient OR;
           patients without both outcomes add nothing; slower)
  course   the MRI course: does treatment lower VU inflammation? inflamed at the
           last MRI week before the crossover ~ arm + inflamed at baseline +
           (1|patient); the arm's OR is tested (--odds-ratio does not change it)

With several readers the analyses other than readers use the mean of the
readers' scores. The true OR (for bias and coverage) is the spec's conditional OR for vu,
hybrid and clogit with one reader (the vu GLMM is biased when
propensity_correlation is not 0, and its coverage shows it); with several readers
and for the other analyses it is known only under the null. --solve or does not
take course (it tests the arm, not the exposure).

The grid is the cartesian product of --patients, --odds-ratio and any --grid
FIELD=V1,V2 (FIELD a key of the cohort spec). Replicate i of grid point g uses
SeedSequence(seed).spawn(n_points)[g].spawn(sims)[i], so the same --seed gives
the same numbers with any --workers, --scheduler or --batch-size.

Writes to --out: power.csv (one row per grid point x analysis, with the fit-health
rates), power.md (the same as a Markdown table) and power.png / power.pdf (power against the
number of patients, one panel per true OR, one line per analysis, with Monte Carlo
CIs; with --target the points evaluated, the target and the answers marked). With
--target also search.csv and search.md (the answer per analysis). The files appear
together; files of these names are replaced only if syndesmo wrote them. More than
--max-sims studies in all (default 1,000,000) is refused before anything runs.
Ctrl-C stops the workers and exits.

examples:
  syndesmo power --patients 50,100,200 --odds-ratio 1.5,2 --sims 500 --analysis vu,patient
  syndesmo power --spec data/synthetic/assert_like.toml --patients 100,187 --workers 2 --out power/
  syndesmo power --patients 187 --odds-ratio 1 --analysis vu,logit --sims 1000   # type I error
  syndesmo power --grid propensity_correlation=0,0.5 --analysis vu,hybrid,clogit --sims 200
  syndesmo power --grid n_readers=2 --analysis vu,readers --patients 100 --sims 100
  syndesmo power --grid mri_weeks=0/12/52 --analysis course,vu --sims 500
  syndesmo power --patients 187 --scheduler tcp://10.0.0.5:8786 --sims 5000
  syndesmo power --target 0.8 --analysis vu,patient --sims 500 --step 10   # sample size
  syndesmo power --target 0.8 --solve or --patients 120 --step 0.05        # detectable OR
"""

#: Files written in --out.
TABLE_CSV, TABLE_MD, FIGURE = "power.csv", "power.md", "power.png"
FIGURE_PDF = "power.pdf"
SEARCH_CSV, SEARCH_MD = "search.csv", "search.md"
OUTPUTS = (TABLE_CSV, TABLE_MD, FIGURE, FIGURE_PDF)
SEARCH_OUTPUTS = (*OUTPUTS, SEARCH_CSV, SEARCH_MD)
#: ``--workers``' default: ``syndesmo.powersim.executors.AUTO`` (not imported here, so
#: that ``--help`` stays fast).
AUTO_WORKERS = "auto"


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
        help="another spec field to vary, e.g. --grid inflammation_prevalence=0.2,0.337; "
        "a tuple field's items are joined by slashes, e.g. --grid mri_weeks=0/12/52,0/24/102 "
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
        help="analyses: vu, gee, patient, logit, hybrid, clogit, course, comma separated "
        "(default: vu)",
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
        type=_workers,
        default=AUTO_WORKERS,
        metavar="N",
        help="local worker processes; 'auto' (the default) forks one per CPU for runs of "
        "400 or more studies with the native engine, else runs in this process; 1 runs in "
        "this process",
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
    parser.add_argument(
        "--check-first",
        type=int,
        default=50,
        metavar="N",
        help="studies of each point run first to check fit health (default: 50)",
    )
    parser.add_argument(
        "--max-failed",
        type=float,
        default=0.5,
        metavar="SHARE",
        help="stop a point when more than this share of its first studies failed for an "
        "analysis (default: 0.5; 1 never stops)",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        metavar="POWER",
        help="find the smallest number of patients (or OR, --solve or) reaching this power",
    )
    parser.add_argument(
        "--solve",
        choices=("n", "or"),
        default="n",
        help="with --target: search the number of patients (n, default) or the smallest "
        "detectable conditional OR at --patients (or)",
    )
    parser.add_argument(
        "--step",
        type=float,
        default=None,
        metavar="STEP",
        help="with --target: resolution of the answer (default: 10 patients; OR 0.05)",
    )
    parser.add_argument(
        "--max-patients",
        type=int,
        default=2000,
        metavar="N",
        help="with --target: largest number of patients tried (default: 2000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="root seed (default: 0)")
    parser.add_argument(
        "--out",
        default=".",
        metavar="DIR",
        help="directory for power.csv, power.md, power.png and power.pdf (default: .); files of "
        "these names are replaced only if syndesmo wrote them",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _workers(text: str) -> int | str:
    """``--workers``: ``auto`` or a whole number of at least 1."""
    if text.strip().lower() == AUTO_WORKERS:
        return AUTO_WORKERS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number >= 1, got {text!r}")
    return value


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
            # a tuple field's values are written with slashes: mri_weeks=0/12/52,0/24/102
            grid[key] = [
                tuple(_scalar(p.strip()) for p in v.split("/") if p.strip())
                for v in values.split(",")
                if v.strip()
            ]
        else:
            grid[key] = [_scalar(v.strip()) for v in values.split(",") if v.strip()]
        if not grid[key]:
            raise SpecError(f"--grid {key}: no values")
    if "n_patients" not in grid:
        grid["n_patients"] = [spec.n_patients]
    if "odds_ratio_new" not in grid:
        grid["odds_ratio_new"] = [spec.odds_ratio_new]
    return grid


def _one(text: str | None, what: str, kind: type, default: Any) -> Any:
    from syndesmo.errors import SpecError

    if not text:
        return default
    values = _numbers(text, what, kind)
    if len(values) != 1:
        raise SpecError(f"{what}: give one value with --target, got {text!r}")
    return values[0]


def _search(args: argparse.Namespace, spec, adjust: list[str], out: Path) -> int:
    from syndesmo.errors import SpecError
    from syndesmo.output.atomic import atomic_files, check_files
    from syndesmo.output.plots import power_curve_plot
    from syndesmo.output.report import power_markdown, search_markdown
    from syndesmo.powersim.search import detectable_effect, sample_size

    check_files(out, SEARCH_OUTPUTS)
    if args.grid:
        raise SpecError("--grid cannot be combined with --target (the search sets the grid)")
    if args.sims > args.max_sims:
        raise SpecError(f"--sims {args.sims} is more than --max-sims {args.max_sims}")
    spec = spec.replace(
        odds_ratio_new=_one(args.odds_ratio, "--odds-ratio", float, spec.odds_ratio_new),
        n_patients=_one(args.patients, "--patients", int, spec.n_patients),
    )
    kw = {
        "target": args.target,
        "analysis": args.analysis,
        "n_sims": args.sims,
        "alpha": args.alpha,
        "engine": args.engine,
        "nagq": args.nagq,
        "seed": args.seed,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "progress": not args.no_progress,
        "batch_size": args.batch_size,
        "adjust": adjust,
        "max_sims": args.max_sims,
        "check_first": args.check_first,
        "max_failed": None if args.max_failed >= 1 else args.max_failed,
    }
    if args.solve == "n":
        step = 10 if args.step is None else args.step
        if step != int(step):
            raise SpecError(f"--step must be a whole number of patients, got {args.step}")
        res = sample_size(spec, step=int(step), max_patients=args.max_patients, **kw)
    else:
        res = detectable_effect(spec, step=0.05 if args.step is None else args.step, **kw)
    chosen = {r.analysis: r.value for r in res.table.itertuples() if r.reached}
    fig = power_curve_plot(res.evaluated, x=res.over, target=res.target, chosen=chosen)
    header = (
        f"Points the search evaluated: {res.n_sims} studies each, the same seeds at every "
        f"point, seed {args.seed}. Monte Carlo 95% CI: Wilson. Fit health: failed fits count "
        "as non-rejections."
    )
    with atomic_files(out, SEARCH_OUTPUTS) as tmp:
        res.evaluated.to_csv(tmp / TABLE_CSV, index=False)
        res.table.to_csv(tmp / SEARCH_CSV, index=False)
        (tmp / TABLE_MD).write_text(
            power_markdown(res.evaluated, [res.over], header), encoding="utf-8"
        )
        (tmp / SEARCH_MD).write_text(search_markdown(res), encoding="utf-8")
        fig.savefig(tmp / FIGURE, dpi=200)
        fig.savefig(tmp / FIGURE_PDF)
    print(res.summary())
    print(
        f"wrote {out / SEARCH_CSV}, {out / SEARCH_MD}, {out / TABLE_CSV}, {out / TABLE_MD}, "
        f"{out / FIGURE}, {out / FIGURE_PDF}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from syndesmo.errors import SpecError
    from syndesmo.output.atomic import atomic_files, check_files
    from syndesmo.output.plots import power_curve_plot
    from syndesmo.output.report import power_markdown, power_table_columns
    from syndesmo.powersim.api import FAILURE_RULE, power_curve
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
    adjust = [c.strip() for c in args.adjust.split(",") if c.strip()]
    if args.target is not None:
        return _search(args, spec, adjust, out)
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
        check_first=args.check_first,
        max_failed=None if args.max_failed >= 1 else args.max_failed,
        **grid,
    )
    columns = power_table_columns(table, list(grid))
    header = (
        f"Power by simulation: {args.sims} studies per point, alpha {args.alpha:g} "
        f"(two-sided Wald), seed {args.seed}. Monte Carlo 95% CI: Wilson. Fit health: "
        f"{FAILURE_RULE}.\n\n"
    )
    fig = power_curve_plot(table, x="n_patients")
    with atomic_files(out, OUTPUTS) as tmp:
        table.to_csv(tmp / TABLE_CSV, index=False)
        (tmp / TABLE_MD).write_text(power_markdown(table, list(grid), header), encoding="utf-8")
        fig.savefig(tmp / FIGURE, dpi=200)
        fig.savefig(tmp / FIGURE_PDF)
    print(header.strip())
    for _, r in table[table["stopped_early"]].iterrows():
        where = ", ".join(f"{g} {r[g]}" for g in grid)
        print(f"stopped early: {r['analysis']} at {where}: {r['stop_reason']}")
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out / TABLE_CSV}, {out / TABLE_MD}, {out / FIGURE}, {out / FIGURE_PDF}")
    return 0
