"""The native engine for any random-effect structure: ``sy.fit`` → ``FitResult``.

:class:`MultilevelModel` is the model object of a nested, random-slope or crossed fit
(``(1|patient/vu)``, ``(1 + x|patient)``, ``(1|patient) + (1|reader)``), as
``NativeModel`` is for one random intercept: the design checked and prepared once
(rows sorted along the nesting tree, identical rows merged), the log-likelihood at any
parameters, constrained maxima for profile intervals, conditional modes, and the fit
itself (:func:`syndesmo.engines.native.multilevel.fit.fit_multilevel`).

The parameters are the fixed effects then θ, lme4's ``getME(m, "theta")``: the
elements of each term's relative covariance factor ``Λ`` in column-major order. For
scalar terms (random intercepts, nested or crossed) θ is the term's SD, so profiling θ
profiles the SD, as lme4's ``.sig01, .sig02, …`` rows.

``loglik`` is the approximation of the log-likelihood itself, including the log
binomial coefficients, for every ``nagq``: fits at different ``nagq`` compare directly.
lme4 takes ``nAGQ > 1`` only for one scalar random intercept, so there is no lme4 scale
to follow here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from syndesmo.engines.native.core import constants
from syndesmo.engines.native.multilevel.fit import (
    MAX_NAGQ,
    SINGULAR_TOL,
    MultilevelFit,
    Objective,
    _check_inputs,
    _check_nagq,
    _ranef,
    fit_multilevel,
    maximise,
    prepare,
)
from syndesmo.engines.native.multilevel.laplace import evaluate
from syndesmo.errors import ModelError
from syndesmo.fitting.design import Design
from syndesmo.fitting.diagnostics import check_rank, separated_terms
from syndesmo.fitting.profile import Maximum, parameter_vector
from syndesmo.fitting.random_effects import lme4_grpvar, lme4_level_labels
from syndesmo.fitting.registry import name_for
from syndesmo.fitting.results import Convergence, EngineDetails, FitResult, VarComp

#: The engine's name, as the registry lists it (the native engine).
ENGINE = name_for("syndesmo.engines.native.engine:fit_native")
#: lme4's ``check.conv.grad`` tolerance on the scaled gradient ``H⁻¹g``.
SCALED_GRADIENT_TOL = 2e-3
SEPARATION_BETA = 10.0  # |β| beyond this (odds ratio e^10) triggers the separation check
SEPARATION_SE = 10.0


@dataclass(frozen=True)
class MultilevelDetails(EngineDetails):
    """What a native fit of a multilevel structure knows beyond the shared result.

    Parameters
    ----------
    theta : numpy.ndarray
        lme4's θ at the estimates (``getME(m, "theta")``), in lme4's form (diagonal
        elements ≥ 0).
    theta_names : tuple of str
        Their names (``patient.(Intercept)``, ``patient.x.(Intercept)``, …).
    theta_se : numpy.ndarray
        SEs of θ from the Hessian over (β, θ); NaN for elements at the bound 0.
    groups : mapping of str to int
        Number of levels of every term's grouping factor, by term name.
    structure : str
        The grouping factors, one line each: levels, nested or crossed.
    singular_terms : tuple of str
        Terms with a diagonal element of Λ below lme4's ``isSingular`` tolerance.
    hessian, gradient : numpy.ndarray
        Of the log-likelihood over (β, θ) at the estimates.
    n_eval : int
        Log-likelihood (or gradient) evaluations used.
    """

    theta: np.ndarray = field(default_factory=lambda: np.empty(0))
    theta_names: tuple[str, ...] = ()
    theta_se: np.ndarray = field(default_factory=lambda: np.empty(0))
    groups: Mapping[str, int] = field(default_factory=dict)
    structure: str = ""
    singular_terms: tuple[str, ...] = ()
    hessian: np.ndarray | None = None
    gradient: np.ndarray | None = None
    n_eval: int = 0


class MultilevelModel:
    """A binomial-logit GLMM with any random-effect structure, ready to evaluate and fit.

    Parameters
    ----------
    design : Design
        Model matrices with a random-effect structure (``design.random``).
    nagq : int
        1 for the Laplace approximation; ``k > 1`` for multilevel adaptive
        Gauss–Hermite quadrature with ``k`` points per level (nested factors with at
        most two random effects each).
    offset : array-like, optional
        A known term of the linear predictor, one number per row.

    Raises
    ------
    ModelError
        For an unusable design, ``nagq`` or offset, naming the problem.
    """

    def __init__(
        self, design: Design, nagq: int | None = 1, *, offset: np.ndarray | None = None
    ) -> None:
        structure = design.random
        if structure is None:
            raise ModelError("this model needs random effects such as (1|patient/vu)")
        nagq = 1 if nagq is None else nagq
        offset = design.offset if offset is None else offset
        X, y, m, offset, names = _check_inputs(
            design.X, design.y, design.trials, structure, offset, design.names
        )
        check_rank(X, names)
        self.nagq = _check_nagq(nagq, structure)
        self.design = design
        self.structure = structure
        self.offset = offset
        self._X, self._y, self._m = X, y, m
        self.data = prepare(X, y, m, structure, offset)
        self._logc, _ = constants(y, m)
        self.n_obs = int(X.shape[0])
        self.n_events = round(float(y.sum()))
        p = len(names)
        self._p = p
        self._diag = np.r_[np.zeros(p, dtype=bool), [r == c for _, r, c in structure.theta_index]]

    # -- the ProfileModel protocol -----------------------------------------------------

    @property
    def param_names(self) -> tuple[str, ...]:
        """The fixed effects' names, then θ's (lme4's ``getME(m, "theta")`` names)."""
        return (*self.design.names, *self.structure.theta_names())

    @property
    def lower_bounds(self) -> tuple[float, ...]:
        """``-inf`` for the fixed effects and off-diagonal θ, 0 for diagonal θ (SDs)."""
        return (-math.inf,) * self._p + tuple(float(b) for b in self.structure.theta_lower())

    def _params(self, params: Sequence[float] | np.ndarray) -> np.ndarray:
        return parameter_vector(params, self.param_names)

    def loglik(self, params: Sequence[float] | np.ndarray) -> float:
        """Log-likelihood at ``params`` (fixed effects then θ), with this ``nagq``.

        Parameters
        ----------
        params : array-like
            The fixed effects then θ.

        Returns
        -------
        float
            The log-likelihood, binomial coefficients included.

        Raises
        ------
        ModelError
            For the wrong number of parameters.
        """
        psi = self._params(params)
        value = Objective(self.data, self.nagq).values(psi[None])[0]
        return float(value + self._logc)

    def maximise(
        self,
        fixed: Mapping[int, float] | None = None,
        start: Sequence[float] | np.ndarray | None = None,
        *,
        warm: Maximum | None = None,
        tol: float = 1e-10,
        maxiter: int = 200,
    ) -> Maximum:
        """Maximise the log-likelihood over all parameters but the ``fixed`` ones.

        Parameters
        ----------
        fixed : mapping of int to float, optional
            Parameter index (in :attr:`param_names`) → value held fixed.
        start : array-like, optional
            Starting values of all parameters (default: logistic regression and
            lme4's θ); the fixed ones are replaced by their values.
        warm : Maximum, optional
            A nearby maximum whose conditional modes start the inner iterations.
        tol : float
            Bound on the Newton decrement.
        maxiter : int
            Most iterations.

        Returns
        -------
        Maximum
            Parameters, log-likelihood, Hessian over all parameters, conditional modes.

        Raises
        ------
        ModelError
            When the maximisation does not converge.
        """
        P = len(self.param_names)
        if start is None:
            psi = np.r_[_glm_start(self), self.structure.theta_start()]
        else:
            psi = self._params(start).copy()
        held = np.zeros(P, dtype=bool)
        for k, value in (fixed or {}).items():
            if not 0 <= int(k) < P:
                raise ModelError(f"fixed parameter index {k} is outside 0..{P - 1}")
            psi[int(k)] = float(value)
            held[int(k)] = True
        obj = Objective(self.data, self.nagq)
        if warm is not None and warm.state is not None:
            obj.u = warm.state
        out = maximise(obj, psi, self._diag, tol, maxiter, held=held)
        if not out["converged"]:
            raise ModelError(f"the constrained maximisation failed: {out['message']}")
        return Maximum(out["psi"], float(out["value"] + self._logc), out["hess"], obj.u)

    def sd_scale(self) -> SdScaleModel:
        """This model with the SDs and correlations as parameters (profiles of SDs)."""
        return SdScaleModel(self)

    # -- conditional modes ---------------------------------------------------------------

    def ranef(self, params: Sequence[float] | np.ndarray) -> pd.DataFrame:
        """Conditional modes and SDs of every random effect, as lme4 lays them out.

        Parameters
        ----------
        params : array-like
            The fixed effects then θ (the estimates of a fit).

        Returns
        -------
        pandas.DataFrame
            lme4's ``as.data.frame(ranef(m, condVar = TRUE))``: columns ``grpvar, term,
            grp, condval, condsd``; grouping factors in lme4's order, within each the
            columns (terms) then the levels. The conditional SDs are those of the
            Laplace approximation (the inverse of the penalised Hessian at the modes),
            as lme4 reports for any ``nAGQ``.
        """
        psi = self._params(params)
        theta = psi[self._p :]
        _, _, st = evaluate(self.data, psi[None], None, gradient=False)
        modes = _ranef(self.data, self.structure, theta, st)
        return _ranef_frame(self.structure, modes, self.design.data)

    # -- the fit -----------------------------------------------------------------------------

    def fit(
        self,
        *,
        start: np.ndarray | Sequence[float] | FitResult | None = None,
        tol: float = 1e-10,
        maxiter: int = 200,
    ) -> FitResult:
        """Fit the model by maximum likelihood.

        Parameters
        ----------
        start : array-like or FitResult, optional
            The fixed effects then θ (default: logistic regression, lme4's θ).
        tol : float
            Bound on the Newton decrement at convergence.
        maxiter : int
            Most quasi-Newton iterations (per stage: Laplace, then quadrature).

        Returns
        -------
        FitResult
            With ``details`` a :class:`MultilevelDetails` and ``model`` this object.
        """
        if isinstance(start, FitResult):
            if not isinstance(start.details, MultilevelDetails):
                raise ModelError("start must be a fit of the same random-effect structure")
            start = np.r_[start.params.to_numpy(dtype=float), start.details.theta]
        if start is not None:
            start = self._params(start)
        ml = fit_multilevel(
            self._X,
            self._y,
            self._m,
            self.structure,
            nagq=self.nagq,
            offset=self.offset,
            names=list(self.design.names),
            start=start,
            tol=tol,
            maxiter=maxiter,
            data=self.data,
        )
        return _result(self, ml)


class SdScaleModel:
    """A :class:`MultilevelModel` parameterised by its SDs and correlations.

    The parameters are the fixed effects, then the rows of ``varcorr`` in lme4's order
    (per term: the SDs, then the correlations (1,2), (1,3), …, (2,3), …), so the SD of a
    random slope can be held fixed and profiled, as lme4's ``profile`` does on its
    ``.sig``/``.cor`` scale. ``Λ = diag(sd) · chol(R)`` (R the correlation matrix) is
    lower triangular with ``ΛΛᵀ = Σ``, so θ follows from the SDs and correlations, an
    SD of 0 included. Constrained maxima are found by L-BFGS-B (SDs ≥ 0, correlations
    in (−1, 1)) on the exact Laplace gradient carried through the Jacobian of θ.
    Follows :class:`~syndesmo.fitting.profile.ProfileModel`.
    """

    CORR_BOUND = 1.0 - 1e-8

    def __init__(self, model: MultilevelModel) -> None:
        self.model = model
        self.structure = model.structure
        self._p = model._p
        self._rows = []  # per term: (kind, a, b) for each varcorr row
        for t in self.structure.terms:
            rows = [("sd", a, a) for a in range(t.q)]
            rows += [("cor", a, b) for a in range(t.q) for b in range(a + 1, t.q)]
            self._rows.append(rows)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Fixed effects, then ``sd <grp> <var>`` and ``cor <grp> <var1>:<var2>``."""
        names = list(self.model.design.names)
        for t, rows in zip(self.structure.terms, self._rows, strict=True):
            for kind, a, b in rows:
                if kind == "sd":
                    names.append(f"sd {t.name} {t.columns[a]}")
                else:
                    names.append(f"cor {t.name} {t.columns[a]}:{t.columns[b]}")
        return tuple(names)

    @property
    def lower_bounds(self) -> tuple[float, ...]:
        """``-inf`` for fixed effects, 0 for SDs, −1 for correlations."""
        out = [-math.inf] * self._p
        for rows in self._rows:
            out += [0.0 if kind == "sd" else -1.0 for kind, _, _ in rows]
        return tuple(out)

    def _bounds(self) -> list[tuple[float | None, float | None]]:
        out: list[tuple[float | None, float | None]] = [(None, None)] * self._p
        for rows in self._rows:
            out += [
                (0.0, None) if kind == "sd" else (-self.CORR_BOUND, self.CORR_BOUND)
                for kind, _, _ in rows
            ]
        return out

    def to_theta(self, phi: np.ndarray) -> np.ndarray:
        """θ (lme4's order) from the SDs and correlations of ``phi`` (after the β)."""
        phi = np.asarray(phi, dtype=float)
        pos = self._p
        lambdas = []
        for t, rows in zip(self.structure.terms, self._rows, strict=True):
            sd = np.zeros(t.q)
            corr = np.eye(t.q)
            for kind, a, b in rows:
                if kind == "sd":
                    sd[a] = phi[pos]
                else:
                    corr[a, b] = corr[b, a] = phi[pos]
                pos += 1
            lambdas.append(np.diag(sd) @ np.linalg.cholesky(corr))
        return np.array([lambdas[k][r, c] for k, r, c in self.structure.theta_index])

    def to_sd_scale(self, params: np.ndarray) -> np.ndarray:
        """The fixed effects then SDs and correlations, from β then θ."""
        params = np.asarray(params, dtype=float)
        out = list(params[: self._p])
        for lam, rows in zip(self.structure.lambdas(params[self._p :]), self._rows, strict=True):
            cov = lam @ lam.T
            sd = np.sqrt(np.diag(cov))
            for kind, a, b in rows:
                if kind == "sd":
                    out.append(sd[a])
                else:
                    den = sd[a] * sd[b]
                    out.append(float(cov[a, b] / den) if den > 0 else 0.0)
        return np.array(out)

    def _psi(self, phi: np.ndarray) -> np.ndarray:
        return np.r_[phi[: self._p], self.to_theta(phi)]

    def _jacobian(self, phi: np.ndarray) -> np.ndarray:
        """d θ / d (SDs, correlations) by central differences of the closed map."""
        k = phi.size - self._p
        jac = np.empty((self.structure.n_theta, k))
        for j in range(k):
            h = 1e-7 * max(1.0, abs(phi[self._p + j]))
            up, down = phi.copy(), phi.copy()
            up[self._p + j] += h
            down[self._p + j] -= h
            jac[:, j] = (self.to_theta(up) - self.to_theta(down)) / (2 * h)
        return jac

    def sd_standard_errors(self, params: np.ndarray, hessian: np.ndarray) -> np.ndarray:
        """SEs of the SDs by the delta method from the Hessian over (β, θ)."""
        p = self._p
        try:
            cov = np.linalg.inv(-np.asarray(hessian, dtype=float))
        except np.linalg.LinAlgError:
            return np.full(sum(k == "sd" for rows in self._rows for k, _, _ in rows), np.nan)
        theta = np.asarray(params, dtype=float)[p:]
        k = theta.size
        grads = np.empty((len(self.param_names) - p, k))
        for j in range(k):
            h = 1e-7 * max(1.0, abs(theta[j]))
            up, down = theta.copy(), theta.copy()
            up[j] += h
            down[j] -= h
            grads[:, j] = (
                self.to_sd_scale(np.r_[params[:p], up])[p:]
                - self.to_sd_scale(np.r_[params[:p], down])[p:]
            ) / (2 * h)
        var = np.einsum("ij,jk,ik->i", grads, cov[p:, p:], grads)
        is_sd = [kind == "sd" for rows in self._rows for kind, _, _ in rows]
        return np.sqrt(np.clip(var, 0.0, None))[is_sd]

    def loglik(self, params: Sequence[float] | np.ndarray) -> float:
        """Log-likelihood at the fixed effects, SDs and correlations ``params``."""
        return self.model.loglik(self._psi(np.asarray(params, dtype=float)))

    def maximise(
        self,
        fixed: Mapping[int, float] | None = None,
        start: Sequence[float] | np.ndarray | None = None,
        *,
        warm: Maximum | None = None,
    ) -> Maximum:
        """Maximise over all parameters but the ``fixed`` ones (L-BFGS-B, exact gradient).

        Raises
        ------
        ModelError
            When the optimiser does not converge.
        """
        from scipy import optimize

        phi = (
            self.to_sd_scale(np.r_[_glm_start(self.model), self.structure.theta_start()])
            if start is None
            else np.asarray(start, dtype=float).copy()
        )
        free = np.ones(phi.size, dtype=bool)
        for k, value in (fixed or {}).items():
            phi[int(k)] = float(value)
            free[int(k)] = False
        bounds = [b for b, f in zip(self._bounds(), free, strict=True) if f]
        lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
        hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
        phi[free] = np.clip(phi[free], lo, hi)
        obj = Objective(self.model.data, self.model.nagq)
        if warm is not None and warm.state is not None:
            obj.u = warm.state
        logc = self.model._logc
        p = self._p

        def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
            full = phi.copy()
            full[free] = x
            value, grad = obj.value_grad(self._psi(full))
            if not np.isfinite(value):
                return math.inf, np.zeros_like(x)
            g = np.r_[grad[:p], grad[p:] @ self._jacobian(full)]
            return -value, -g[free]

        res = optimize.minimize(
            negative,
            phi[free],
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 500, "ftol": 1e-14, "gtol": 1e-9},
        )
        if not (res.success or "ABNORMAL" in str(res.message)) or not np.isfinite(res.fun):
            raise ModelError(f"the constrained maximisation failed: {res.message}")
        phi[free] = res.x
        return Maximum(phi, float(-res.fun + logc), None, obj.u)


def fit_structured(
    design: Design,
    *,
    nagq: int | None = None,
    start: np.ndarray | Sequence[float] | FitResult | None = None,
    tol: float = 1e-10,
    maxiter: int = 200,
    offset: np.ndarray | None = None,
) -> FitResult:
    """Fit a GLMM with the random-effect structure of ``design.random``.

    Parameters
    ----------
    design : Design
        Model matrices with a random-effect structure.
    nagq : int, optional
        1 (Laplace, default) or more adaptive Gauss–Hermite points per level.
    start : array-like or FitResult, optional
        The fixed effects then θ.
    tol : float
        Bound on the Newton decrement at convergence.
    maxiter : int
        Most iterations per stage.
    offset : array-like, optional
        One number per row (default ``design.offset``).

    Returns
    -------
    FitResult
    """
    model = MultilevelModel(design, nagq, offset=offset)
    return model.fit(start=start, tol=tol, maxiter=maxiter)


# ---------------------------------------------------------------------------------------
# From the numerical fit to a FitResult
# ---------------------------------------------------------------------------------------


def _glm_start(model: MultilevelModel) -> np.ndarray:
    from syndesmo.engines.native.multilevel.fit import glm_start

    return glm_start(model._X, model._y, model._m, model.offset)


def _result(model: MultilevelModel, ml: MultilevelFit) -> FitResult:
    design = model.design
    structure = model.structure
    names = list(design.names)
    conv = ml.convergence
    scaled = conv.get("max_scaled_gradient", math.nan)
    min_eig = conv.get("min_eigen_information", math.nan)
    converged = ml.converged
    message = ml.message
    if converged and not min_eig > 0:
        converged = False
        message = (
            f"the Hessian over the free parameters is not negative definite (smallest "
            f"eigenvalue of the information {min_eig:.2g}): not a maximum"
        )
    elif converged and scaled > SCALED_GRADIENT_TOL:
        converged = False
        message = f"scaled gradient {scaled:.2g} above lme4's tolerance {SCALED_GRADIENT_TOL:g}"
    warnings: list[str] = []
    if ml.singular:
        warnings.append(
            "boundary (singular) fit: the random-effect SD of "
            + ", ".join(f"'{t}'" for t in ml.singular_terms)
            + f" is estimated below {SINGULAR_TOL:g} (lme4's isSingular tolerance on Λ)"
        )
    if not converged:
        warnings.append(f"model did not converge: {message}")
    bse = ml.bse
    sep: list[str] = []
    if (
        not converged
        or np.any(np.abs(ml.params) > SEPARATION_BETA)
        or np.any(~np.isfinite(bse) | (bse > SEPARATION_SE))
    ):
        sep = separated_terms(model._X, model._y, model._m, names)
        if sep:
            warnings.append(
                "complete or quasi-complete separation along "
                + ", ".join(f"'{t}'" for t in sep)
                + ": these estimates are not finite and their Wald tests are meaningless"
            )
    top = _top_term(structure)
    varcomps = tuple(VarComp(g, v1, v2, vc, sc) for g, v1, v2, vc, sc in ml.varcorr)
    return FitResult(
        engine=ENGINE,
        formula=design.formula,
        params=pd.Series(ml.params, index=names, name="estimate"),
        vcov=pd.DataFrame(ml.vcov, index=names, columns=names),
        n_obs=model.n_obs,
        loglik=ml.loglik,
        n_groups=structure.terms[top].n_levels,
        group=structure.terms[top].name,
        varcomps=varcomps,
        nagq=ml.nagq,
        convergence=Convergence(
            converged=bool(converged),
            message=message,
            iterations=ml.n_iter,
            max_abs_gradient=conv.get("max_abs_gradient", math.nan),
            singular=ml.singular,
            separated_terms=tuple(sep),
            diagnostics={
                "max_scaled_gradient": scaled,
                "min_eigen_information": min_eig,
                "newton_decrement": conv.get("newton_decrement", math.nan),
            },
        ),
        ledger=design.ledger.copy(),
        warnings=tuple(warnings),
        n_events=model.n_events,
        details=MultilevelDetails(
            theta=ml.theta.copy(),
            theta_names=tuple(ml.theta_names),
            theta_se=ml.theta_se.copy(),
            groups=dict(ml.n_groups),
            structure=structure.describe(),
            singular_terms=tuple(ml.singular_terms),
            hessian=ml.hessian,
            gradient=ml.gradient,
            n_eval=ml.n_eval,
        ),
        model=model,
    )


def _top_term(structure) -> int:
    """The term of the coarsest grouping factor (fewest levels in the nesting chain)."""
    factor = structure.factors[structure.chain[0]]
    return factor.terms[0]


def _ranef_frame(structure, modes: dict, data: pd.DataFrame | None) -> pd.DataFrame:
    names = [t.name for t in structure.terms]
    frames = []
    by_factor: dict[str, list] = {}
    for t in structure.terms:
        by_factor.setdefault(lme4_grpvar(t.name, names), []).append(t)
    for grpvar, terms in by_factor.items():
        for t in terms:
            _, vals, sds = modes[t.name]
            labels = lme4_level_labels(t)
            for j, column in enumerate(t.columns):
                frames.append(
                    pd.DataFrame(
                        {
                            "grpvar": grpvar,
                            "term": column,
                            "grp": labels,
                            "condval": vals[:, j],
                            "condsd": sds[:, j],
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


__all__ = [
    "MAX_NAGQ",
    "MultilevelDetails",
    "MultilevelModel",
    "SdScaleModel",
    "fit_structured",
]
