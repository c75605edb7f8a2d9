"""Plain logistic regression that ignores clustering (statsmodels).

The crude model a biostatistician fits first to show why clustering matters: VUs of
one patient are treated as independent, so standard errors are too small. A bar term
in the formula is ignored with a note in ``FitResult.warnings``.

Binary outcomes use ``statsmodels.Logit`` (Newton–Raphson); binomial counts use
``statsmodels.GLM`` with the Binomial family and a (successes, failures) response.
Both log-likelihoods equal R's ``logLik(glm(..., family = binomial))``, including the
log binomial coefficients for counts.

The result keeps a :class:`LogitModel` as ``fit.model``: the binomial log-likelihood
of the design and its maximum with coefficients held fixed (by refitting the GLM
with ``x_j·b`` as an offset), which is what profile intervals need.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.special import gammaln
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from syndesmo.errors import ModelError
from syndesmo.fitting.design import Design, resolve_offset
from syndesmo.fitting.diagnostics import check_rank, separated_terms
from syndesmo.fitting.profile import Maximum
from syndesmo.fitting.registry import check_call, name_for
from syndesmo.fitting.results import Convergence, FitResult

GLM_TOL = 1e-12  # maximise(): statsmodels' IRLS tolerance of the constrained refits
GLM_MAXITER = 200


class LogitModel:
    """The binomial-logit likelihood of one design, ignoring any grouping factor.

    Parameters
    ----------
    design : Design
        Model matrices; ``design.trials`` gives binomial counts (1 for 0/1 rows).
    offset : numpy.ndarray, optional
        The fit's known term of the linear predictor, one number per row.

    Notes
    -----
    The parameters are the fixed effects in ``design.names`` order; the
    log-likelihood includes the log binomial coefficients, as R's ``logLik(glm)``.
    """

    def __init__(self, design: Design, offset: np.ndarray | None = None) -> None:
        self.X = np.asarray(design.X, dtype=float)
        self.base = np.zeros(self.X.shape[0]) if offset is None else np.asarray(offset, float)
        self.y = np.asarray(design.y, dtype=float)
        self.n = np.asarray(design.trials, dtype=float)
        self.endog = self.y if np.all(self.n == 1) else np.column_stack([self.y, self.n - self.y])
        self._names = tuple(design.names)
        self._logc = float(
            np.sum(gammaln(self.n + 1.0) - gammaln(self.y + 1.0) - gammaln(self.n - self.y + 1.0))
        )

    @property
    def param_names(self) -> tuple[str, ...]:
        """The fixed effects' names."""
        return self._names

    @property
    def lower_bounds(self) -> tuple[float, ...]:
        """``-inf`` for every coefficient."""
        return (-math.inf,) * len(self._names)

    def _params(self, params: Sequence[float] | np.ndarray) -> np.ndarray:
        beta = np.asarray(params, dtype=float).reshape(-1)
        if beta.size != len(self._names):
            raise ModelError(
                f"parameters must be {len(self._names)} numbers ({', '.join(self._names)}), "
                f"got {beta.size}"
            )
        return beta

    def loglik(self, params: Sequence[float] | np.ndarray) -> float:
        """Binomial log-likelihood at the coefficients ``params``.

        Parameters
        ----------
        params : array-like
            One coefficient per column of the design.

        Returns
        -------
        float
            The log-likelihood, including the log binomial coefficients.
        """
        eta = self.base + self.X @ self._params(params)
        return float(np.sum(self.y * eta - self.n * np.logaddexp(0.0, eta)) + self._logc)

    def maximise(
        self,
        fixed: Mapping[int, float] | None = None,
        start: Sequence[float] | np.ndarray | None = None,
        *,
        warm: Maximum | None = None,
    ) -> Maximum:
        """Maximise over the coefficients not in ``fixed`` by statsmodels' GLM (IRLS).

        The held coefficients enter as an offset ``Σ x_j·b_j``.

        Parameters
        ----------
        fixed : mapping of int to float, optional
            Coefficient index → value held fixed.
        start : array-like, optional
            Starting values of all coefficients (statsmodels' default if omitted).
        warm : Maximum, optional
            Not used (IRLS needs no state beyond ``start``).

        Returns
        -------
        Maximum
            All coefficients and the log-likelihood (no Hessian).
        """
        p = len(self._names)
        beta = np.zeros(p) if start is None else self._params(start).copy()
        free = np.ones(p, dtype=bool)
        for k, value in (fixed or {}).items():
            if not 0 <= int(k) < p:
                raise ModelError(f"fixed parameter index {k} is outside 0..{p - 1}")
            beta[int(k)] = float(value)
            free[int(k)] = False
        offset = self.base + self.X[:, ~free] @ beta[~free]
        if not free.any():  # nothing left to fit: the log-likelihood at the offset
            return Maximum(beta, self.loglik(beta))
        model = sm.GLM(self.endog, self.X[:, free], family=sm.families.Binomial(), offset=offset)
        res = model.fit(
            start_params=None if start is None else beta[free], tol=GLM_TOL, maxiter=GLM_MAXITER
        )
        beta[free] = np.asarray(res.params)
        # statsmodels' llf includes the log binomial coefficients for counts, as loglik
        return Maximum(beta, float(res.llf))


#: This engine's name, as the registry lists it.
ENGINE = name_for(f"{__name__}:fit_logit")


def fit_logit(
    design: Design, *, nagq: int | None = None, offset: np.ndarray | None = None, maxiter: int = 100
) -> FitResult:
    """Fit ``design`` by maximum likelihood, ignoring any grouping factor.

    Parameters
    ----------
    design : Design
        The model matrices (``syndesmo.fitting.design.build_design``).
    nagq : None
        Part of the engine contract: this engine has no quadrature (``nagq`` 1 or
        ``None``).
    offset : numpy.ndarray, optional
        A known term of the linear predictor, one number per row (default
        ``design.offset``), as R's ``glm(..., offset = )``.
    maxiter : int
        Newton (0/1 outcome) or IRLS (binomial counts) iterations at most.

    Returns
    -------
    FitResult
        With ``loglik`` as R's ``logLik(glm(..., family = binomial))``.
        No variance components; ``model`` is a :class:`LogitModel` (profile
        intervals); ``convergence`` holds the iterations, max |score| and any
        separated terms.

    Raises
    ------
    ModelError
        For ``nagq`` above 1 or rank-deficient columns.
    """
    check_call(ENGINE, nagq, offset)
    X, y, n = design.X, design.y, design.trials
    offset = resolve_offset(design, offset)
    check_rank(X, design.names)
    binary = bool(np.all(n == 1))
    notes: list[str] = []
    if design.group is not None:
        notes.append(f"clustering by {design.group} ignored: rows are treated as independent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if binary:
            res = sm.Logit(y, X, offset=offset).fit(method="newton", maxiter=maxiter, disp=False)
            converged = bool(res.mle_retvals.get("converged", False))
            iterations = res.mle_retvals.get("iterations")
        else:
            endog = np.column_stack([y, n - y])
            res = sm.GLM(endog, X, family=sm.families.Binomial(), offset=offset).fit(
                maxiter=maxiter
            )
            converged = bool(res.converged)
            iterations = res.fit_history.get("iteration")
    message = "" if converged else f"optimiser stopped after {iterations} iterations"
    for w in caught:
        if issubclass(w.category, ConvergenceWarning) and not converged:
            message = f"{message}; {w.message}"
        elif not issubclass(w.category, ConvergenceWarning | DeprecationWarning):
            if str(w.message) not in notes:  # statsmodels repeats one per Newton step
                notes.append(str(w.message))

    sep = separated_terms(X, y, n, design.names)
    if sep:
        notes.append(
            "separation: the outcome is perfectly predicted along "
            + ", ".join(sep)
            + "; those estimates are not finite (the optimiser stopped at a large value)"
        )

    names = design.names
    params = pd.Series(np.asarray(res.params), index=names, name="estimate")
    vcov = pd.DataFrame(np.asarray(res.cov_params()), index=names, columns=names)
    score = np.asarray(res.model.score(np.asarray(res.params)), dtype=float)
    return FitResult(
        engine=ENGINE,
        formula=design.formula,
        params=params,
        vcov=vcov,
        n_obs=design.n_obs,
        loglik=float(res.llf),
        convergence=Convergence(
            converged=converged,
            message=message.strip("; "),
            iterations=None if iterations is None else int(iterations),
            max_abs_gradient=float(np.max(np.abs(score))) if score.size else math.nan,
            separated_terms=tuple(sep),
        ),
        ledger=design.ledger.copy(),
        warnings=tuple(notes),
        n_events=round(float(y.sum())),
        model=LogitModel(design, offset),
    )
