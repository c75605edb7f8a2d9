"""The MRI course model on the shipped cohort: native Laplace and multilevel AGQ beside lme4.

Not a test: ``python benchmarks/course_agq.py [--points 1 3 7] [--no-lme4]``. Fits
``inflamed ~ C(week) * arm + (1|patient/vu)`` (``syndesmo.analysis.course``) to the
long VU × week frame of ``data/synthetic`` by the native engine at each number of
quadrature points and by lme4's Laplace (lme4 1.1-31 integrates nested random effects
only by Laplace), and prints a Markdown table of the log-likelihood, the random-effect
SDs, the fixed effects (SE) and the time of each fit.

Native: ``sy.fit`` from the data frame, wall time. lme4: ``glmer`` run by ``Rscript``
on the same rows written to a CSV file, timed inside R (``system.time``), at
``tolPwrss = 1e-12`` and at lme4's default (1e-7); its estimates are printed even when
lme4's convergence check warns (``sy.fit(engine="lme4")`` withholds them then), with
the warning in the row ``lme4 message``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd

import syndesmo as sy
from syndesmo.analysis.course import COURSE_FORMULA, course_frame

ROOT = Path(__file__).resolve().parents[1]

R_SCRIPT = r"""
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
d$patient <- factor(d$patient); d$vu <- factor(d$vu)
d$week <- factor(d$week, levels = sort(unique(d$week)))
d$arm <- relevel(factor(d$arm), ref = "placebo")
out <- list()
for (tol in c(1e-12, 1e-7)) {
  t <- system.time(m <- glmer(inflamed ~ week * arm + (1 | patient/vu), data = d,
                              family = binomial, control = glmerControl(tolPwrss = tol)))
  vc <- as.data.frame(VarCorr(m))
  out[[length(out) + 1]] <- list(tol = tol, coef = unname(fixef(m)),
    se = unname(sqrt(diag(as.matrix(vcov(m))))), loglik = as.numeric(logLik(m)),
    sd_patient = vc$sdcor[vc$grp == "patient"], sd_vu = vc$sdcor[vc$grp == "vu:patient"],
    seconds = t[["elapsed"]], messages = paste(m@optinfo$conv$lme4$messages, collapse = "; "))
}
cat(toJSON(out, auto_unbox = TRUE, digits = I(15)))
"""


def lme4_columns(data: pd.DataFrame, terms: list[str]) -> dict[str, dict[str, str]]:
    """glmer at tolPwrss 1e-12 and 1e-7 by Rscript on ``data``; columns of the table."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "course.csv"
        data.assign(inflamed=data["inflamed"].astype(int), arm=data["arm"].astype(str)).to_csv(
            csv, index=False
        )
        script = Path(tmp) / "fit.R"
        script.write_text(R_SCRIPT)
        text = subprocess.run(
            ["Rscript", str(script), str(csv)], check=True, capture_output=True, text=True
        ).stdout
    columns = {}
    for fit in json.loads(text):
        col = {"converged": "warning" if fit["messages"] else "True"}
        col["logLik"] = f"{fit['loglik']:.4f}"
        col["SD patient"] = f"{fit['sd_patient']:.4f}"
        col["SD vu:patient"] = f"{fit['sd_vu']:.4f}"
        for term, b, se in zip(terms, fit["coef"], fit["se"], strict=True):
            col[term] = f"{b:.4f} ({se:.4f})"
        col["seconds"] = f"{fit['seconds']:.1f}"
        col["lme4 message"] = fit["messages"] or "—"
        columns[f"lme4 Laplace, tolPwrss {fit['tol']:g}"] = col
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[1, 3, 7])
    parser.add_argument("--no-lme4", action="store_true")
    args = parser.parse_args()
    panel = sy.load_panel(ROOT / "data/synthetic/vu.csv", ROOT / "data/synthetic/patients.csv")
    long, _ = course_frame(panel)
    data = long[["patient", "vu", "arm", "week", "inflamed"]]
    columns = {}
    terms: list[str] = []
    for k in args.points:
        start = time.perf_counter()
        fit = sy.fit(COURSE_FORMULA, data, engine="native", nagq=k)
        seconds = time.perf_counter() - start
        sd = fit.varcorr.set_index("grp")["sdcor"]
        col = {"converged": str(fit.converged), "logLik": f"{fit.loglik:.4f}"}
        col["SD patient"] = f"{sd['patient']:.4f}"
        col["SD vu:patient"] = f"{sd['vu:patient']:.4f}"
        for term, value in fit.params.items():
            col[term] = f"{value:.4f} ({fit.bse[term]:.4f})"
        col["seconds"] = f"{seconds:.1f}"
        col["lme4 message"] = ""
        columns[f"native nagq={k}"] = col
        terms = list(fit.params.index)
    if not args.no_lme4:
        columns.update(lme4_columns(data, terms))
    table = pd.DataFrame(columns).fillna("")
    print(f"{len(data)} VU × week rows, {data['patient'].nunique()} patients\n")
    print("| | " + " | ".join(table.columns) + " |")
    print("|---" * (len(table.columns) + 1) + "|")
    for name, row in table.iterrows():
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
