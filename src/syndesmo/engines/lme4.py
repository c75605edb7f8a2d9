"""R's lme4 (``glmer``) as an engine: the reference every other engine is checked against.

The model is handed to R as the design's own matrices — the fixed-effect columns under
safe names ``x1, x2, …``, the response and the grouping codes — so R fits exactly the
columns the other engines see and the estimates map back to the design's names term
by term, whatever R's own coding of factors would have been. The call is

    glmer(y ~ 1 + x1 + … [+ offset(off)] + (1 | grp), family = binomial, nAGQ = nagq)

(``cbind(y, fail) ~ …`` for binomial counts), timed with ``system.time`` inside R;
R's warnings and messages are collected instead of being printed.

The glue is rpy2 talking to lme4 directly (the ``lme4`` extra). pymer4 0.8.2, the
release that runs with Debian's R, drives the same ``glmer`` call but its ``Lmer.fit``
cannot pass ``nAGQ`` or binomial counts, so it is not used here.
rpy2 is not thread-safe: call this engine from one thread at a time.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from syndesmo.errors import EngineUnavailableError, ModelError
from syndesmo.fitting.design import Design, resolve_offset
from syndesmo.fitting.diagnostics import check_rank, separated_terms
from syndesmo.fitting.random_effects import lme4_grpvar, lme4_level_labels
from syndesmo.fitting.registry import check_call, name_for
from syndesmo.fitting.results import Convergence, EngineDetails, FitResult, VarComp

#: This engine's name, as the registry lists it.
ENGINE = name_for(f"{__name__}:fit_lme4")

INSTALL_HINT = (
    "install R with lme4 (Debian: apt-get install r-base-core r-cran-lme4 "
    "r-cran-lmertest r-cran-emmeans) and the Python side with pip install 'syndesmo[lme4]'"
)

# lme4 messages that mean the optimum was not reached (the singular-fit message does not).
_NOT_CONVERGED = re.compile(
    r"failed to converge|unable to evaluate scaled gradient|Hessian is numerically singular|"
    r"very large eigenvalue|convergence code|degenerate",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Lme4Details(EngineDetails):
    """What an lme4 fit knows beyond the shared result.

    Parameters
    ----------
    r_seconds : float
        R's own elapsed time for ``glmer`` (``system.time``).
    ranef : pandas.DataFrame or None
        R's ``as.data.frame(ranef(fit, condVar = TRUE))``, group labels as the data's.
    """

    r_seconds: float
    ranef: pd.DataFrame | None = None

    def ranef_frame(self, group: str | None = None) -> pd.DataFrame:
        """lme4's conditional modes and SDs (``fit.ranef()`` reads them here)."""
        if self.ranef is None:
            raise ModelError("this lme4 fit keeps no conditional modes")
        return self.ranef.copy()


_R_FIT = """
function(df, formula, nAGQ, tolPwrss) {
  warns <- character(0); msgs <- character(0)
  collect <- function(expr) withCallingHandlers(expr,
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning")
    },
    message = function(m) {
      msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage")
    })
  for (nm in grep("^(grp|g[0-9]+)$", names(df), value = TRUE)) df[[nm]] <- factor(df[[nm]])
  control <- if (is.na(tolPwrss)) lme4::glmerControl() else
    lme4::glmerControl(tolPwrss = tolPwrss)
  timing <- system.time(
    fit <- collect(lme4::glmer(stats::as.formula(formula), data = df,
                               family = stats::binomial, nAGQ = nAGQ, control = control)))
  vcr <- as.data.frame(lme4::VarCorr(fit))
  vc <- collect(as.matrix(stats::vcov(fit)))
  conv <- fit@optinfo$conv
  re <- as.data.frame(lme4::ranef(fit, condVar = TRUE))
  list(
    re_grp = as.integer(as.character(re$grp)),
    re_grpvar = as.character(re$grpvar),
    re_term = as.character(re$term),
    re_condval = as.numeric(re$condval),
    re_condsd = as.numeric(re$condsd),
    beta = unname(lme4::fixef(fit)),
    names = as.character(names(lme4::fixef(fit))),
    vcov = unname(vc),
    loglik = as.numeric(stats::logLik(fit)),
    vc_grp = as.character(vcr$grp),
    vc_var1 = as.character(vcr$var1),
    vc_var2 = ifelse(is.na(vcr$var2), "", as.character(vcr$var2)),
    vc_vcov = as.numeric(vcr$vcov),
    vc_sdcor = as.numeric(vcr$sdcor),
    singular = lme4::isSingular(fit),
    optcode = if (is.null(conv$opt)) 0L else as.integer(conv$opt),
    feval = if (is.null(fit@optinfo$feval)) NA_real_ else as.numeric(fit@optinfo$feval),
    max_grad = if (is.null(fit@optinfo$derivs)) NA_real_ else
      max(abs(fit@optinfo$derivs$gradient)) / 2,
    lme4_messages = as.character(unlist(conv$lme4$messages)),
    opt_warnings = as.character(unlist(fit@optinfo$warnings)),
    warnings = warns,
    messages = msgs,
    elapsed = as.numeric(timing[["elapsed"]]),
    nobs = as.integer(stats::nobs(fit)),
    ngrps = as.integer(lme4::ngrps(fit)),
    ngrps_names = as.character(names(lme4::ngrps(fit)))
  )
}
"""

_r_fit_function: Any = None


def import_robjects():
    """Import ``rpy2.robjects`` (starting R) without leaking R's library path.

    Starting R through rpy2 prepends R's library directory to ``LD_LIBRARY_PATH`` in
    this process's environment; every process started afterwards (Dask workers, local
    power workers) then loads R's shared libraries before Python's own and can fail
    to start. R itself is already loaded, so the variable is restored at once.
    """
    saved = os.environ.get("LD_LIBRARY_PATH")
    try:
        import rpy2.robjects as ro
    finally:
        if saved is None:
            # R sets the variable at the C level, behind os.environ's back.
            os.environ.pop("LD_LIBRARY_PATH", None)
            os.unsetenv("LD_LIBRARY_PATH")
        else:
            os.environ["LD_LIBRARY_PATH"] = saved
    return ro


def _r_fit():
    """The R fitting function, compiled once; raises EngineUnavailableError without R."""
    global _r_fit_function
    if _r_fit_function is not None:
        return _r_fit_function
    try:
        ro = import_robjects()
    except Exception as exc:  # ImportError, or R itself failing to start
        raise EngineUnavailableError(
            f"the lme4 engine needs rpy2 and R, which could not be loaded ({exc}); {INSTALL_HINT}"
        ) from exc
    with _quiet_r():
        ok = ro.r(
            'isTRUE(suppressPackageStartupMessages(requireNamespace("lme4", quietly = TRUE)))'
        )
        if not bool(ok[0]):
            raise EngineUnavailableError(
                f"the lme4 engine needs the R package lme4, which R cannot load; {INSTALL_HINT}"
            )
        _r_fit_function = ro.r(_R_FIT)
    return _r_fit_function


@contextmanager
def _quiet_r() -> Iterator[list[str]]:
    """Collect what R writes to its console (start-up chatter, error text) instead of
    letting rpy2 print it."""
    from rpy2.rinterface_lib import callbacks

    chatter: list[str] = []
    saved = callbacks.consolewrite_warnerror, callbacks.consolewrite_print
    callbacks.consolewrite_warnerror = chatter.append
    callbacks.consolewrite_print = chatter.append
    try:
        yield chatter
    finally:
        callbacks.consolewrite_warnerror, callbacks.consolewrite_print = saved


def _r_frame(design: Design, use_intercept: bool, counts: bool, offset: np.ndarray | None):
    import rpy2.robjects as ro

    cols: dict[str, Any] = {"y": ro.FloatVector(design.y)}
    if offset is not None:
        cols["off"] = ro.FloatVector(offset)
    if counts:
        cols["fail"] = ro.FloatVector(design.trials - design.y)
    for j in range(design.X.shape[1]):
        if use_intercept and j == 0:
            continue
        cols[f"x{j}"] = ro.FloatVector(design.X[:, j])
    if design.random is None:
        cols["grp"] = ro.IntVector(design.groups)
    else:  # every term: its columns z<k>_<j> and its grouping codes g<k>
        for k, term in enumerate(design.random.terms):
            for j in range(term.q):
                cols[f"z{k}_{j}"] = ro.FloatVector(term.Z[:, j])
            cols[f"g{k}"] = ro.IntVector(term.codes)
    return ro.DataFrame(cols)


def _r_formula(design: Design, use_intercept: bool, counts: bool, offset: bool) -> str:
    lhs = "cbind(y, fail)" if counts else "y"
    terms = ["1" if use_intercept else "0"]
    terms += [f"x{j}" for j in range(design.X.shape[1]) if not (use_intercept and j == 0)]
    if offset:
        terms.append("offset(off)")
    if design.random is None:
        bars = ["(1 | grp)"]
    else:
        bars = [_r_bar(k, term) for k, term in enumerate(design.random.terms)]
    return f"{lhs} ~ {' + '.join(terms)} + {' + '.join(bars)}"


def _r_bar(k: int, term) -> str:
    """One term for glmer: its columns ``z<k>_<j>`` and codes ``g<k>``; an intercept
    column is written ``1``, as a user would, so lme4 sees the same model terms."""
    cols = ["1" if _is_intercept(term, j) else f"z{k}_{j}" for j in range(term.q)]
    if "1" not in cols:
        cols.insert(0, "0")
    return f"({' + '.join(cols)} | g{k})"


def _is_intercept(term, j: int) -> bool:
    return term.columns[j] == "(Intercept)" and bool(np.all(term.Z[:, j] == 1.0))


def _r_column(term, k: int, r_name: str) -> str:
    """A random-effect column's name in R (``(Intercept)``, ``z0_1``) → the term's."""
    if r_name == "(Intercept)":
        return "(Intercept)"
    return term.columns[int(r_name.split("_")[1])]


def _varcomps(design: Design, res: dict) -> tuple[VarComp, ...]:
    """lme4's ``as.data.frame(VarCorr(fit))`` under the design's names."""
    if design.random is None:
        grp_names = {"grp": design.group}
        col_names: dict[tuple[str, str], str] = {}
    else:
        grp_names = {f"g{k}": t.name for k, t in enumerate(design.random.terms)}
        col_names = {
            (f"g{k}", f"z{k}_{j}"): c
            for k, t in enumerate(design.random.terms)
            for j, c in enumerate(t.columns)
        }
    out = []
    for g, v1, v2, vc, sc in zip(
        res["vc_grp"],
        res["vc_var1"],
        res["vc_var2"],
        _floats(res["vc_vcov"]),
        _floats(res["vc_sdcor"]),
        strict=True,
    ):
        out.append(
            VarComp(
                grp_names.get(g, g),
                col_names.get((g, v1), v1),
                col_names.get((g, v2), v2) if v2 else None,
                float(vc),
                float(sc),
            )
        )
    return tuple(out)


def fit_lme4(
    design: Design,
    *,
    nagq: int | None = None,
    offset: np.ndarray | None = None,
    tol_pwrss: float | None = None,
) -> FitResult:
    """Fit ``design`` with R's ``lme4::glmer`` (Laplace for ``nagq=1``, else adaptive GHQ).

    R is given the design's own matrices so that names align with the other engines;
    ``design.data`` (the input rows the design kept), when present, is only checked
    against the design. ``offset`` (one number per row; default ``design.offset``)
    enters the R formula as ``offset(off)``.

    Parameters
    ----------
    design : Design
        Model matrices with random effects: one ``(1|group)``, or any structure
        (``design.random``: nested, slopes, crossed), each term handed to R as its
        own columns and grouping codes (``(0 + z0_0 + z0_1 | g0)``), which is the
        same model under neutral names.
    nagq : int, optional
        lme4's ``nAGQ``: 1 (Laplace, the default) to 25; lme4 takes ``nAGQ > 1`` only
        for a single scalar random intercept.
    offset : numpy.ndarray, optional
        A known term of the linear predictor; default ``design.offset``.
    tol_pwrss : float, optional
        ``glmerControl(tolPwrss = ...)``: lme4's default (1e-7) stops its inner
        iterations short; 1e-12 gives the maximum to about 1e-5.

    Returns
    -------
    FitResult
        The glmer fit, with lme4's warnings in ``warnings``.
        ``details`` is an :class:`Lme4Details` (R's own elapsed time for ``glmer``);
        ``convergence`` holds lme4's messages, the largest absolute gradient of the
        log-likelihood from ``optinfo$derivs`` (half that of the deviance), and the
        optimiser's code and function evaluations as diagnostics. No model object:
        lme4's lives in R, so profile intervals are not offered here.

    Raises
    ------
    ModelError
        For a design without a bar, a bad ``nagq``, or a fit R refuses.
    EngineUnavailableError
        If R, rpy2 or lme4 cannot be loaded.
    """
    nagq = check_call(ENGINE, nagq, offset)
    if not design.has_random:
        raise ModelError("the lme4 engine needs a random intercept: add (1|group) to the formula")
    if design.random is not None and nagq > 1:
        raise ModelError(
            f"lme4 takes nAGQ > 1 only for a single scalar random intercept; {design.formula!r} "
            "has more: use nagq=1 (Laplace), or engine='native' for adaptive quadrature of "
            "nested random effects"
        )
    if tol_pwrss is not None and not (isinstance(tol_pwrss, float | int) and 0 < tol_pwrss < 1):
        raise ModelError(f"tol_pwrss must be a number between 0 and 1, got {tol_pwrss!r}")
    if design.data is not None and len(design.data) != design.n_obs:
        raise ModelError(
            f"design.data has {len(design.data)} rows but the design has {design.n_obs}"
        )
    offset = resolve_offset(design, offset)
    # lme4 drops a constant or collinear column with a message and fits the rest; the
    # other engines refuse such a design, naming the term: one behaviour for all.
    check_rank(design.X, design.names)
    r_fit = _r_fit()
    use_intercept = bool(
        design.X.shape[1] > 0 and design.names[0] == "Intercept" and np.all(design.X[:, 0] == 1)
    )
    counts = not bool(np.all(design.trials == 1))
    formula = _r_formula(design, use_intercept, counts, offset is not None)
    from rpy2.rinterface_lib.embedded import RRuntimeError

    with _quiet_r() as chatter:
        try:
            out = r_fit(
                _r_frame(design, use_intercept, counts, offset),
                formula,
                int(nagq),
                math.nan if tol_pwrss is None else float(tol_pwrss),
            )
        except RRuntimeError as exc:
            detail = " ".join(("".join(chatter).strip() or str(exc)).split())
            sep = separated_terms(design.X, design.y, design.trials, design.names)
            why = (
                f"; the outcome is perfectly predicted along {', '.join(sep)} (separation)"
                if sep
                else ""
            )
            raise ModelError(
                f"lme4 could not fit {design.formula!r}: {_r_error(detail)}{why}"
            ) from None
    res = {k: out.rx2(k) for k in out.names}

    r_names = list(res["names"])
    names = [_design_name(design, n, use_intercept) for n in r_names]
    p = len(names)
    beta = _floats(res["beta"])
    vcov = _floats(res["vcov"]).reshape(p, p, order="F")

    lme4_msgs = list(res["lme4_messages"]) + list(res["opt_warnings"])
    r_warns = list(res["warnings"]) + list(res["messages"])
    optcode = int(res["optcode"][0])
    problems = [m for m in lme4_msgs + r_warns if _NOT_CONVERGED.search(m)]
    converged = optcode == 0 and not problems
    message = "; ".join(([f"optimiser code {optcode}"] if optcode != 0 else []) + _unique(problems))
    notes = _unique(r_warns + lme4_msgs)
    dropped = [n for n in design.names if n not in names]
    if dropped:  # lme4's own rank test is stricter than check_rank's: same answer, raised
        raise ModelError(
            "the fixed-effects model matrix is rank deficient: "
            + ", ".join(f"'{t}'" for t in dropped)
            + " is a linear combination of the other terms (constant or collinear column; "
            "lme4 would drop it)"
        )
    separated = separated_terms(design.X, design.y, design.trials, design.names)
    if separated:
        notes.append(
            "separation: the outcome is perfectly predicted along "
            + ", ".join(separated)
            + "; those estimates are not finite (the optimiser stopped at a large value)"
        )

    feval = float(res["feval"][0])
    max_grad = float(res["max_grad"][0])
    return FitResult(
        engine=ENGINE,
        formula=design.formula,
        params=pd.Series(beta, index=names, name="estimate"),
        vcov=pd.DataFrame(vcov, index=names, columns=names),
        n_obs=int(res["nobs"][0]),
        loglik=float(res["loglik"][0]),
        n_groups=int(min(res["ngrps"])),
        group=_top_group(design, res),
        varcomps=_varcomps(design, res),
        nagq=int(nagq),
        convergence=Convergence(
            converged=converged,
            message=message,
            max_abs_gradient=max_grad if math.isfinite(max_grad) else math.nan,
            singular=bool(res["singular"][0]),
            separated_terms=tuple(separated),
            diagnostics={
                "optimizer_code": optcode,
                "function_evaluations": int(feval) if math.isfinite(feval) else None,
            },
        ),
        ledger=design.ledger.copy(),
        warnings=tuple(notes),
        n_events=round(float(design.y.sum())),
        details=Lme4Details(r_seconds=float(res["elapsed"][0]), ranef=_ranef(design, res)),
    )


def _top_group(design: Design, res: dict) -> str | None:
    """The grouping factor with the fewest levels, under the design's name."""
    if design.random is None:
        return design.group
    k = int(np.argmin(list(res["ngrps"])))
    g = str(list(res["ngrps_names"])[k])
    names = {f"g{j}": t.name for j, t in enumerate(design.random.terms)}
    return names.get(g, g)


#: R errors of glmer and what they mean, for the one-line message of a failed fit.
_R_ERRORS = (
    (
        re.compile(r"pwrssUpdate|PIRLS|step-halvings", re.IGNORECASE),
        "the penalised iteratively reweighted least squares (PIRLS, pwrssUpdate) did not "
        "converge — usually separation (a term predicts the outcome perfectly), an "
        "extreme or unscaled covariate, or very few events per group",
    ),
    (
        re.compile(r"Downdated VtV is not positive definite", re.IGNORECASE),
        "the fixed-effect design became numerically singular (collinear or extreme "
        "columns; try scaling the covariates)",
    ),
)


def _r_error(detail: str) -> str:
    """R's error text with what it means in front, when it is a known glmer failure."""
    detail = re.sub(r"^Error in [^:]*:\s*", "", detail)
    detail = re.sub(r"\s*Timing stopped at:.*$", "", detail)  # system.time's own line
    for pattern, meaning in _R_ERRORS:
        if pattern.search(detail):
            return f"{meaning} (R: {detail})"
    return detail


def _ranef(design: Design, res: dict[str, Any]) -> pd.DataFrame | None:
    """R's ranef table with the grouping codes turned back into the data's labels.

    Other structures reach R as neutral names (``g0``, ``z0_0``): they are mapped back
    to the terms' names, columns and level labels as lme4 would write them.
    """
    codes = np.array(list(res["re_grp"]), dtype=np.int64)
    if design.random is not None:
        terms = design.random.terms
        names = [t.name for t in terms]
        grpvar, term_col, grp = [], [], []
        for g, z, c in zip(res["re_grpvar"], res["re_term"], codes, strict=True):
            k = int(g[1:])
            t = terms[k]
            grpvar.append(lme4_grpvar(t.name, names))
            term_col.append(_r_column(t, k, z))
            grp.append(lme4_level_labels(t)[c])
        return pd.DataFrame(
            {
                "grpvar": grpvar,
                "term": term_col,
                "grp": grp,
                "condval": _floats(res["re_condval"]),
                "condsd": _floats(res["re_condsd"]),
            }
        )
    labels = design.group_labels
    return pd.DataFrame(
        {
            "grpvar": design.group,
            "term": "(Intercept)",
            "grp": labels[codes] if labels is not None else codes,
            "condval": _floats(res["re_condval"]),
            "condsd": _floats(res["re_condsd"]),
        }
    )


def _design_name(design: Design, r_name: str, use_intercept: bool) -> str:
    if r_name == "(Intercept)":
        return design.names[0] if use_intercept else r_name
    m = re.fullmatch(r"x(\d+)", r_name)
    if m is None:  # cannot happen with the formula built above
        raise ModelError(f"internal: unexpected lme4 coefficient name {r_name!r}")
    return design.names[int(m.group(1))]


def _floats(r_vector) -> np.ndarray:
    """A copy of an R numeric vector: numpy views of R memory die with the R object."""
    return np.array(list(r_vector), dtype=float)


def _unique(items: list[str]) -> list[str]:
    return [str(m) for m in dict.fromkeys(str(i).strip() for i in items) if m]
