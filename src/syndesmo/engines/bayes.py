"""Bayesian random-intercept logistic GLMM, sampled by NUTS (PyMC), checked with ArviZ.

The model is the one the ML engines fit, on the same ``Design`` (same columns, same
term names, same ledger)::

    y_i ~ Binomial(n_i, logit⁻¹(x_i·β + u_g[i])),   u_g = σ·z_g,   z_g ~ Normal(0, 1)

written non-centred (``u = σ·z``) because small cohorts put σ near zero, where the
centred form has a funnel. Why Bayesian at all: in small MRI substudies (tens of
patients) the ML estimate of σ often sits at its boundary and Wald intervals are too
narrow; the posterior carries the uncertainty in σ into the intervals of β.

Default priors (weakly informative, on the log-odds scale), after Gelman, Jakulin,
Pittau & Su (2008, Ann Appl Stat 2:1360, "A weakly informative default prior
distribution for logistic and other regression models") with a normal rather than a
Cauchy family, as rstanarm (Goodrich et al., vignette "Prior distributions for
rstanarm models"):

* a 0/1 column (an exposure, a dummy of a categorical, their interactions):
  β_j ~ Normal(0, 2.5), i.e. 95% of the prior odds ratios between 1/134 and 134,
  whatever the prevalence of the exposure;
* any other column: β_j ~ Normal(0, 2.5 / (2·sd(x_j))), sd over the rows used
  (ddof = 1, as R's ``sd``): a change of two SDs gets the prior of a 0/1 contrast
  (Gelman et al. scale continuous inputs to SD 0.5);
* intercept ~ Normal(0, 2.5) *with the other columns centred at their means* (as
  rstanarm; the intercept reported is on the user's scale,
  Intercept = α_c − Σ_j mean(x_j)·β_j); without an intercept in the formula every
  column gets the prior above;
* random-intercept SD σ ~ HalfNormal(2.5): 95% prior mass below σ = 4.9.

``priors=`` overrides them per key: a term name (``"mri"``, ``"Intercept"``) or
``"sigma"``; a value is a positive number (the scale of the default family above) or
a mapping ``{"dist": "StudentT", "nu": 3, "mu": 0, "sigma": 2.5}`` naming a PyMC
distribution and its parameters (``{"dist": "Flat"}`` for an improper flat prior).

Reported in the ``FitResult`` (a :class:`BayesFitResult`):

* ``params`` / ``bse`` / ``vcov``: posterior mean, SD and covariance of β;
* ``conf_int(level, method)``: credible intervals, the methods this result declares
  in ``INTERVAL_METHODS``: ``"eti"`` (equal-tailed; the default) or ``"hdi"``
  (highest density; the default with ``hdi=True``); ``"wald"`` and ``"profile"`` are
  refused; ``sigma_conf_int`` likewise from the draws of σ;
* ``odds_ratios()``: OR = posterior median of exp(β) (= exp of the median of β),
  interval = exp of the credible interval of β, ``p`` NaN;
* ``pvalues``: NaN — a posterior gives no p-value, and nothing downstream counts it
  as one; the posterior tail probability 2·min(P(β>0), P(β<0)) (resolution
  1/(chains·draws)) is ``tail_probability``, shown as ``P(tail)`` in ``summary()``;
* ``sigma`` / ``varcorr``: posterior median of σ; ``loglik`` NaN (a posterior is not a
  maximised likelihood, so AIC/BIC are NaN too; use LOO/WAIC from ``idata``);
* ``convergence``: the verdict below, with the largest R-hat, the smallest ESS and
  the divergences among its diagnostics; ``details``: a :class:`BayesDetails`
  (priors, sampler settings, the R-hat/ESS table);
* ``idata``: the ArviZ ``InferenceData``: posterior ``beta`` (by ``term``, the user's
  scale), ``sigma``, ``u`` (patient effects, by group), the sampler's ``b``, ``z``,
  ``Intercept_centred``; ``observed_data`` holds the merged binomial cells (below);
  with ``log_likelihood=True`` the pointwise log-likelihood of every *row* of the
  design, named after the response (for ``arviz.loo``).

Convergence (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, Bayesian Analysis
16:667, "Rank-normalization, folding, and localization"): rank-normalised split R-hat
≤ 1.01 and bulk and tail ESS ≥ 400 for every β_j and σ, and no divergent transition
after tuning. A failure gives ``converged=False``, the reason in
``convergence_message`` and a :class:`syndesmo.errors.ConvergenceWarning`.

Speed: rows with the same patient and the same covariate values are merged into one
binomial row before sampling (exact: the posterior is unchanged), which makes the
log-density ~6× cheaper for panels with 0/1 exposures.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import gammaln

from syndesmo.checks import as_int_seed, check_choice, check_int, check_probability
from syndesmo.errors import ConvergenceWarning, EngineUnavailableError, ModelError, warn_user
from syndesmo.fitting.design import Design, resolve_offset
from syndesmo.fitting.diagnostics import check_rank, separated_terms
from syndesmo.fitting.registry import check_call, name_for
from syndesmo.fitting.results import Convergence, EngineDetails, FitResult, random_intercept

#: This engine's name, as the registry lists it.
ENGINE = name_for(f"{__name__}:fit_bayes")

DEFAULT_SLOPE_SCALE = 2.5  # Gelman et al. (2008): per 0/1 contrast or per 2 SD
DEFAULT_INTERCEPT_SCALE = 2.5  # rstanarm: normal(0, 2.5) on the centred intercept
DEFAULT_SIGMA_SCALE = 2.5  # HalfNormal(2.5) on the random-intercept SD
RHAT_MAX = 1.01  # Vehtari et al. (2021)
ESS_MIN = 400  # Vehtari et al. (2021): 100 per chain for 4 chains
SAMPLERS = ("pymc", "nutpie", "numpyro", "blackjax")
SIGMA_KEY = "sigma"
# Families with support on [0, ∞) accepted for σ.
POSITIVE_DISTS = frozenset(
    {
        "HalfNormal",
        "HalfStudentT",
        "HalfCauchy",
        "HalfFlat",
        "Exponential",
        "Gamma",
        "InverseGamma",
        "LogNormal",
        "Weibull",
    }
)
OBSERVED = "events"  # the observed variable: successes of the merged binomial cells
# Names of the model's variables and dimensions, which a group dimension must avoid.
_RESERVED_DIMS = frozenset(
    {"term", "slope", "chain", "draw", "obs", "b", "z", "u", "beta", SIGMA_KEY, OBSERVED}
)


@dataclass(frozen=True)
class Prior:
    """A prior: the name of a PyMC distribution and its keyword parameters."""

    dist: str
    params: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        """Readable form such as ``Normal(mu=0, sigma=5.41)``."""
        inner = ", ".join(
            f"{k}={np.round(v, 4)}" if np.ndim(v) else f"{k}={v:.4g}" for k, v in self.params
        )
        return f"{self.dist}({inner})"


# ---------------------------------------------------------------------------
# The result object
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BayesDetails(EngineDetails):
    """What a posterior knows beyond the shared result.

    Parameters
    ----------
    idata : arviz.InferenceData
        The draws (see the module docstring).
    interval : str
        The credible interval chosen at fit time: ``"eti"`` or ``"hdi"``.
    priors : dict of str to str
        The priors used, by parameter, as text.
    rhat_ess : pandas.DataFrame
        R-hat and bulk/tail ESS of every β_j and σ, indexed by term.
    divergences : int
        Divergent transitions after tuning.
    draws, tune, chains : int
        The sampler's settings.
    seed : int or str
        The seed (its ``repr`` when not an integer).
    target_accept : float
        NUTS' target acceptance rate.
    sampler : str
        The NUTS implementation.
    """

    idata: Any
    interval: str
    priors: dict[str, str]
    rhat_ess: pd.DataFrame
    divergences: int
    draws: int
    tune: int
    chains: int
    seed: int | str
    target_accept: float
    sampler: str

    def ranef_frame(self, group: str | None) -> pd.DataFrame:
        """Posterior means and SDs of the patient effects ``u``, in lme4's ranef layout
        (``condval`` the posterior mean, ``condsd`` the posterior SD)."""
        if "u" not in self.idata.posterior:
            raise ModelError("this Bayesian fit has no random effects")
        u = self.idata.posterior["u"]
        dim = next(d for d in u.dims if d not in ("chain", "draw"))
        flat = u.stack(sample=("chain", "draw")).transpose(dim, "sample").to_numpy()
        return pd.DataFrame(
            {
                "grpvar": group,
                "term": "(Intercept)",
                "grp": np.asarray(u.coords[dim].values, dtype=object),
                "condval": flat.mean(axis=1),
                "condsd": flat.std(axis=1, ddof=1),
            }
        )


class BayesFitResult(FitResult):
    """A ``FitResult`` whose estimates and intervals come from posterior draws.

    It keeps the base contract: every table, plot and ladder works on it, and what a
    name means does not change. Its interval methods are declared in
    ``INTERVAL_METHODS`` — equal-tailed (``"eti"``) and highest-density (``"hdi"``)
    credible intervals — and ``conf_int`` refuses any other (a posterior has no Wald
    or profile interval). ``pvalues`` are NaN: a posterior gives no p-value, and its
    tail probability 2·min(P(β>0), P(β<0)) is reported under its own name,
    :attr:`tail_probability`, never as ``p``.
    """

    INTERVAL_METHODS: ClassVar[tuple[str, ...]] = ("eti", "hdi")

    details: BayesDetails

    @property
    def default_interval(self) -> str:
        """The credible interval chosen at fit time (``hdi=``)."""
        return self.details.interval

    @property
    def idata(self) -> Any:
        """The ArviZ ``InferenceData`` (``details.idata``)."""
        return self.details.idata

    def beta_draws(self) -> pd.DataFrame:
        """Posterior draws of the fixed effects: one row per draw (chains stacked)."""
        beta = self.idata.posterior["beta"]
        values = beta.to_numpy().reshape(-1, beta.shape[-1])
        return pd.DataFrame(values, columns=list(self.params.index))

    def sigma_draws(self) -> np.ndarray:
        """Posterior draws of the random-intercept SD (chains stacked)."""
        return self.idata.posterior[SIGMA_KEY].to_numpy().reshape(-1)

    @property
    def pvalues(self) -> pd.Series:
        """NaN for every term: a posterior gives no p-value (see :attr:`tail_probability`)."""
        return pd.Series(math.nan, index=self.params.index, dtype=float)

    @property
    def tail_probability(self) -> pd.Series:
        """Posterior tail probability 2·min(P(β>0), P(β<0)) per term (not a p-value);
        NaN when the sampler's diagnostics failed (``converged=False``)."""
        if not self.converged:
            return pd.Series(np.nan, index=self.params.index)
        draws = self.beta_draws().to_numpy()
        above = (draws > 0).mean(axis=0)
        below = (draws < 0).mean(axis=0)
        return pd.Series(2.0 * np.minimum(above, below), index=self.params.index)

    def _interval(self, level: float, method: str) -> pd.DataFrame:
        if not self.converged:  # no numbers from draws that failed the diagnostics
            return pd.DataFrame({"lower": np.nan, "upper": np.nan}, index=self.params.index)
        draws = self.beta_draws()
        lower, upper = _credible(draws.to_numpy(), level, method)
        return pd.DataFrame({"lower": lower, "upper": upper}, index=self.params.index)

    def _sigma_interval(self, level: float, method: str) -> pd.DataFrame:
        if not self.converged:
            return pd.DataFrame({"lower": [math.nan], "upper": [math.nan]}, index=["sigma"])
        if math.isnan(self.sigma):
            raise ModelError(f"engine {self.engine!r} has no random-intercept SD")
        lower, upper = _credible(self.sigma_draws()[:, None], level, method)
        return pd.DataFrame({"lower": lower, "upper": upper}, index=["sigma"])

    def odds_ratios(self, level: float = 0.95, method: str | None = None) -> pd.DataFrame:
        """Posterior median OR and the exp of the credible interval.

        Parameters
        ----------
        level : float
            Coverage of the credible interval.
        method : str, optional
            ``"eti"`` or ``"hdi"`` (default: the one chosen at fit time).

        Returns
        -------
        pandas.DataFrame
            Columns ``OR`` (posterior median of exp(β)), ``lower``, ``upper`` and ``p``
            (NaN: see :attr:`tail_probability`).
        """
        ci = self.conf_int(level, method)
        median = self.beta_draws().median().to_numpy() if self.converged else np.nan
        with np.errstate(over="ignore"):  # a runaway posterior (flat prior) gives inf
            return pd.DataFrame(
                {
                    "OR": np.exp(median),
                    "lower": np.exp(ci["lower"]),
                    "upper": np.exp(ci["upper"]),
                    "p": self.pvalues,
                },
                index=self.params.index,
            )

    def summary(self) -> str:
        """Posterior summary: priors, sampler settings, estimates and diagnostics.

        Returns
        -------
        str
            Sampler settings, priors, variance components, the posterior table
            (mean, SD, credible interval, median OR, tail probability, R-hat, ESS),
            the convergence record, warnings and the rows left out.
        """
        d = self.details
        method = d.interval.upper()
        lines = self._header()
        lines[0] = (
            f"syndesmo fit: engine=bayes (NUTS via {d.sampler}: {d.chains} chains × "
            f"{d.draws} draws after {d.tune} tuning, seed {d.seed}, "
            f"target_accept {d.target_accept})"
        )
        lines.append(
            "Priors (log-odds scale; the intercept's applies with the other columns centred):"
        )
        lines += [f"  {k} ~ {v}" for k, v in d.priors.items()]
        if not math.isnan(self.sigma):
            lines += self._varcorr_lines()
            s = self.sigma_draws()
            lo, hi = np.quantile(s, [0.025, 0.975])
            lines.append(
                f"Random intercept SD ({self.group}): posterior median {self.sigma:.4f} "
                f"(95% ETI {lo:.4f} to {hi:.4f})   ICC at the median: {self.icc:.3f}"
            )
        ci = self.conf_int()
        ors = self.odds_ratios()
        diag = d.rhat_ess
        table = pd.DataFrame(
            {
                "Mean": self.params,
                "SD": self.bse,
                f"[2.5% {method}": ci["lower"],
                f"97.5%] {method}": ci["upper"],
                "OR(median)": ors["OR"],
                "P(tail)": self.tail_probability,
            }
        )
        if not diag.empty:
            table = table.join(diag.drop(index=SIGMA_KEY, errors="ignore"))
        lines.append(table.to_string(float_format=lambda v: f"{v:.4f}"))
        if not diag.empty and SIGMA_KEY in diag.index:
            r = diag.loc[SIGMA_KEY]
            lines.append(
                f"sigma: R-hat {r['R-hat']:.4f}, ESS bulk {r['ESS bulk']:.0f}, "
                f"ESS tail {r['ESS tail']:.0f}"
            )
        lines.append(
            f"Divergent transitions after tuning: {d.divergences}; "
            "P(tail) = 2·min(P(β>0), P(β<0)), a posterior probability, not a p-value "
            "(pvalues are not reported for a posterior); "
            "logLik/AIC/BIC are not reported for a posterior"
        )
        lines += self.convergence.describe()
        lines += self._tail_lines()
        return "\n".join(lines)


def _credible(draws: np.ndarray, level: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of a credible interval per column of ``draws``."""
    if method == "eti":
        tail = (1.0 - level) / 2.0
        frame = pd.DataFrame(draws)
        return frame.quantile(tail).to_numpy(), frame.quantile(1.0 - tail).to_numpy()
    bounds = np.array([_hdi(draws[:, j], level) for j in range(draws.shape[1])])
    return bounds[:, 0], bounds[:, 1]


def _hdi(x: np.ndarray, level: float) -> tuple[float, float]:
    """Narrowest interval holding ``level`` of the draws (unimodal HDI, as ArviZ's)."""
    x = np.sort(x)
    n = x.size
    k = math.floor(level * n)
    if k < 1 or k >= n:
        return float(x[0]), float(x[-1])
    widths = x[k:] - x[: n - k]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + k])


# ---------------------------------------------------------------------------
# Inputs: options, priors, seeds, aggregated data
# ---------------------------------------------------------------------------


def _check_options(
    draws: Any, tune: Any, chains: Any, cores: Any, target_accept: Any, sampler: Any
) -> None:
    check_int(draws, "draws", low=1)
    check_int(tune, "tune", low=0)
    check_int(chains, "chains", low=1)
    check_int(cores, "cores", low=1)
    check_probability(target_accept, "target_accept")
    check_choice(sampler, SAMPLERS, "nuts_sampler")


def _sampler_seed(seed: Any) -> int:
    """One integer seed for ``pymc.sample`` from an int, a SeedSequence or a Generator
    (``syndesmo.checks.as_int_seed``).

    PyMC derives the per-chain seeds from it, so the same seed gives the same draws.
    """
    return as_int_seed(seed)


def _intercept_index(X: np.ndarray, names: list[str]) -> int | None:
    for j, name in enumerate(names):
        if name == "Intercept" and np.all(X[:, j] == 1.0):
            return j
    return None


def default_priors(design: Design) -> dict[str, Prior]:
    """The default priors of ``design``'s parameters (module docstring), by key."""
    X = np.asarray(design.X, dtype=float)
    names = list(design.names)
    icpt = _intercept_index(X, names)
    out: dict[str, Prior] = {}
    for j, name in enumerate(names):
        if j == icpt:
            out[name] = Prior("Normal", (("mu", 0.0), ("sigma", DEFAULT_INTERCEPT_SCALE)))
            continue
        column = X[:, j]
        if np.all((column == 0.0) | (column == 1.0)):
            scale = DEFAULT_SLOPE_SCALE
        else:
            scale = DEFAULT_SLOPE_SCALE / (2.0 * float(np.std(column, ddof=1)))
        out[name] = Prior("Normal", (("mu", 0.0), ("sigma", scale)))
    if design.group is not None:
        out[SIGMA_KEY] = Prior("HalfNormal", (("sigma", DEFAULT_SIGMA_SCALE),))
    return out


def resolve_priors(design: Design, priors: Mapping[str, Any] | None) -> dict[str, Prior]:
    """Default priors with the user's overrides; ModelError naming any bad key or value."""
    out = default_priors(design)
    if priors is None:
        return out
    if not isinstance(priors, Mapping):
        raise ModelError(f"priors must be a dict keyed by term name or 'sigma', got {priors!r}")
    for key, value in priors.items():
        if key not in out:
            raise ModelError(
                f"priors: unknown key {key!r}; the model's parameters are: {', '.join(out)}"
            )
        out[key] = _prior_from_user(key, value, out[key])
    return out


def _prior_from_user(key: str, value: Any, default: Prior) -> Prior:
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        if not (math.isfinite(value) and value > 0):
            raise ModelError(f"priors[{key!r}]: a scale must be a positive number, got {value!r}")
        scale_name = "sigma"
        params = tuple((k, float(value) if k == scale_name else v) for k, v in default.params)
        return Prior(default.dist, params)
    if isinstance(value, Mapping) and isinstance(value.get("dist"), str):
        dist = value["dist"]
        params = tuple((str(k), v) for k, v in value.items() if k != "dist")
        for k, v in params:
            if isinstance(v, bool) or not isinstance(v, int | float | np.number):
                raise ModelError(f"priors[{key!r}]: parameter {k!r} must be a number, got {v!r}")
        if key == SIGMA_KEY and dist not in POSITIVE_DISTS:
            raise ModelError(
                f"priors['sigma']: {dist!r} is not a distribution on [0, ∞); use one of "
                + ", ".join(sorted(POSITIVE_DISTS))
            )
        return Prior(dist, tuple((k, float(v)) for k, v in params))
    raise ModelError(
        f"priors[{key!r}] must be a positive scale or a mapping like "
        f"{{'dist': 'StudentT', 'nu': 3, 'mu': 0, 'sigma': 2.5}}, got {value!r}"
    )


@dataclass
class _Cells:
    """Rows merged by (group, covariate pattern): binomial counts per cell."""

    X: np.ndarray
    y: np.ndarray
    n: np.ndarray
    groups: np.ndarray | None
    offset: np.ndarray | None = None


def _aggregate(
    X: np.ndarray,
    y: np.ndarray,
    n: np.ndarray,
    groups: np.ndarray | None,
    offset: np.ndarray | None = None,
) -> _Cells:
    """Merge rows that share group, covariates and offset; the binomial posterior is
    unchanged."""
    key = X if offset is None else np.column_stack([X, offset])
    key = key if groups is None else np.column_stack([groups.astype(float), key])
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    ys = np.bincount(inverse, weights=y).round().astype(np.int64)
    ns = np.bincount(inverse, weights=n).round().astype(np.int64)
    first = 0 if groups is None else 1
    p = X.shape[1]
    cell_x = uniq[:, first : first + p]
    cell_offset = None if offset is None else uniq[:, first + p]
    cell_groups = None if groups is None else uniq[:, 0].astype(np.int64)
    return _Cells(cell_x, ys, ns, cell_groups, cell_offset)


def _validate(design: Design) -> tuple[np.ndarray, ...]:
    X = np.asarray(design.X, dtype=float)
    y = np.asarray(design.y, dtype=float).reshape(-1)
    n = np.asarray(design.trials, dtype=float).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.size or y.size != n.size or X.shape[1] != len(design.names):
        raise ModelError(
            f"design arrays disagree: X {X.shape}, y {y.size}, trials {n.size}, "
            f"{len(design.names)} names"
        )
    if design.data is not None and len(design.data) != X.shape[0]:
        raise ModelError(
            f"design.data has {len(design.data)} rows but the design has {X.shape[0]}; it "
            "must hold the rows build_design kept"
        )
    if design.groups is not None and np.asarray(design.groups).size != y.size:
        raise ModelError(f"group codes of '{design.group}' do not match the rows of the design")
    if not np.all(np.isfinite(X)):
        j = int(np.argwhere(~np.isfinite(X))[0, 1])
        raise ModelError(f"term '{design.names[j]}' has non-finite values")
    if X.shape[1] == 0:
        raise ModelError("the model has no fixed effects (not even an intercept)")
    icpt = _intercept_index(X, list(design.names))
    for j, name in enumerate(design.names):
        if j != icpt and X.shape[0] > 0 and np.ptp(X[:, j]) == 0:
            raise ModelError(
                f"term '{name}' is constant in the rows used ({X[0, j]:g}), so it cannot be "
                "told apart from the intercept; drop it from the formula"
            )
    if np.linalg.matrix_rank(X) < X.shape[1]:
        check_rank(X, list(design.names))
    return X, y, n


# ---------------------------------------------------------------------------
# The PyMC model and its sampling
# ---------------------------------------------------------------------------


def _backend():
    """Import PyMC and ArviZ, quietly; EngineUnavailableError if not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.2x's refactor notice
            import arviz as az
            import pymc as pm
            import pytensor.tensor as pt
    except ImportError as exc:
        raise EngineUnavailableError(
            f"engine {ENGINE!r} needs PyMC and ArviZ: pip install 'syndesmo[bayes]' ({exc})"
        ) from exc
    return pm, pt, az


def _distribution(pm, name: str, prior: Prior, **kwargs):
    cls = getattr(pm, prior.dist, None)
    if not (isinstance(cls, type) and issubclass(cls, pm.Continuous)):
        raise ModelError(
            f"prior for {name!r}: {prior.dist!r} is not a continuous PyMC distribution"
        )
    try:
        return cls(name, **dict(prior.params), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"prior for {name!r}: {prior.describe()} is invalid: {exc}") from exc


def _slope_vector(pm, pt, slopes: list[str], priors: dict[str, Prior]):
    """The slopes as one vector: a single vector RV when all priors share a family
    (the default; fewer graph nodes, a faster gradient), else one RV per term."""
    first = priors[slopes[0]]
    keys = [k for k, _ in first.params]
    if all(
        priors[s].dist == first.dist and [k for k, _ in priors[s].params] == keys for s in slopes
    ):
        stacked = Prior(
            first.dist,
            tuple((k, np.array([dict(priors[s].params)[k] for s in slopes])) for k in keys),
        )
        return _distribution(pm, "b", stacked, dims="slope")
    return pt.stack([_distribution(pm, f"b[{s}]", priors[s]) for s in slopes])


def _group_dim(group: str) -> str:
    return "group" if group in _RESERVED_DIMS else group


def _build_model(pm, pt, design: Design, X: np.ndarray, cells: _Cells, priors: dict[str, Prior]):
    names = list(design.names)
    icpt = _intercept_index(X, names)
    slope_idx = [j for j in range(len(names)) if j != icpt]
    slopes = [names[j] for j in slope_idx]
    center = X[:, slope_idx].mean(axis=0) if icpt is not None else np.zeros(len(slope_idx))
    Xc = cells.X[:, slope_idx] - center
    coords: dict[str, Any] = {"term": names, "slope": slopes}
    if design.group is not None:
        labels = design.group_labels
        levels = (
            [str(v) for v in labels]
            if labels is not None
            else [str(g) for g in range(design.n_groups or 0)]
        )
        coords[_group_dim(design.group)] = levels

    with pm.Model(coords=coords) as model:
        eta = 0.0
        parts = []
        if slopes:
            b = _slope_vector(pm, pt, slopes, priors)
            eta = eta + (pt.as_tensor_variable(Xc) * b[None, :]).sum(axis=1)
        if icpt is not None:
            alpha_c = _distribution(pm, f"{names[icpt]}_centred", priors[names[icpt]])
            eta = eta + alpha_c
        for j, name in enumerate(names):
            if j == icpt:
                shift = pt.dot(center, b) if slopes else 0.0
                parts.append(alpha_c - shift)
            else:
                parts.append(b[slopes.index(name)])
        pm.Deterministic("beta", pt.stack(parts), dims="term")
        if design.group is not None:
            dim = _group_dim(design.group)
            sigma = _distribution(pm, SIGMA_KEY, priors[SIGMA_KEY])
            z = pm.Normal("z", 0.0, 1.0, dims=dim)
            u = pm.Deterministic("u", sigma * z, dims=dim)
            eta = eta + u[cells.groups]
        if cells.offset is not None:
            eta = eta + cells.offset
        pm.Binomial(OBSERVED, n=cells.n, logit_p=eta, observed=cells.y)
    return model


@contextmanager
def _quiet_sampling():
    """Silence PyMC's and ArviZ's log lines and PyTensor's BLAS notice; the
    engine's own diagnostics report instead."""
    loggers = [logging.getLogger(name) for name in ("pymc", "arviz")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*could not link to a BLAS.*")
            warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _diagnostics(az, idata, names: list[str], has_sigma: bool) -> pd.DataFrame:
    """R-hat and bulk/tail ESS of every β_j (and σ), indexed by term."""
    var_names = ["beta", SIGMA_KEY] if has_sigma else ["beta"]
    rhat = az.rhat(idata, var_names=var_names)
    bulk = az.ess(idata, var_names=var_names, method="bulk")
    tail = az.ess(idata, var_names=var_names, method="tail")
    rows = {}
    for j, name in enumerate(names):
        rows[name] = [
            float(rhat["beta"].values[j]),
            float(bulk["beta"].values[j]),
            float(tail["beta"].values[j]),
        ]
    if has_sigma:
        rows[SIGMA_KEY] = [float(rhat[SIGMA_KEY]), float(bulk[SIGMA_KEY]), float(tail[SIGMA_KEY])]
    return pd.DataFrame.from_dict(rows, orient="index", columns=["R-hat", "ESS bulk", "ESS tail"])


def _problems(
    diag: pd.DataFrame, divergences: int, chains: int, rhat_max: float, ess_min: float
) -> list[str]:
    out = []
    if chains < 2:
        out.append("R-hat needs at least 2 chains (got 1), so convergence cannot be checked")
    for name, row in diag.iterrows():
        r = row["R-hat"]
        if chains >= 2 and not (r <= rhat_max):
            out.append(f"R-hat {r:.3f} > {rhat_max} for '{name}'")
        for col in ("ESS bulk", "ESS tail"):
            e = row[col]
            if not (e >= ess_min):
                out.append(f"{col.replace('ESS ', '')} ESS {e:.0f} < {ess_min:g} for '{name}'")
    if divergences > 0:
        out.append(
            f"{divergences} divergent transition(s) after tuning (raise target_accept, "
            "or the posterior is ill-posed: check priors and separation)"
        )
    return out


def _pointwise_loglik(X, y, n, groups, beta, u, offset=None) -> np.ndarray:
    """log p(y_i | β, u) for every draw and row: shape (chain, draw, row)."""
    eta = np.einsum("cdk,ik->cdi", beta, X)
    if offset is not None:
        eta = eta + offset
    if groups is not None:
        eta = eta + u[:, :, groups]
    logc = gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
    return y * eta - n * np.logaddexp(0.0, eta) + logc


def fit_bayes(
    design: Design,
    *,
    nagq: int | None = None,
    offset: np.ndarray | None = None,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int = 1,
    seed: int | np.random.SeedSequence | np.random.Generator = 0,
    target_accept: float = 0.95,
    priors: Mapping[str, Any] | None = None,
    hdi: bool = False,
    progress: bool = False,
    log_likelihood: bool = False,
    rhat_max: float = RHAT_MAX,
    ess_min: float = ESS_MIN,
    nuts_sampler: str = "pymc",
) -> BayesFitResult:
    """Fit the binomial-logit random-intercept model of ``design`` by NUTS.

    ``draws``/``tune``/``chains``/``cores``/``target_accept`` go to ``pymc.sample``;
    the same ``seed`` (int, SeedSequence or Generator) gives identical draws.
    ``target_accept`` defaults to 0.95 rather than PyMC's 0.8: random-intercept
    posteriors of small cohorts (many patients without events) have a long tail
    towards large SDs, and at 0.9 two of twelve simulated 22-patient cohorts still
    showed a divergence, none at 0.95.
    ``priors`` overrides the default priors (module docstring) by term name or
    ``"sigma"``. ``hdi=True`` makes ``conf_int`` report highest-density intervals
    instead of equal-tailed ones. ``log_likelihood=True`` stores the pointwise
    log-likelihood per row in ``idata`` (for ``arviz.loo``; chains·draws·rows floats).
    ``rhat_max`` and ``ess_min`` are the convergence thresholds. ``nuts_sampler``
    picks PyMC's own NUTS or an installed external one (nutpie, numpyro, blackjax).
    ``design.data`` (the rows ``build_design`` kept), when present, is only checked
    against the design. ``offset`` (one number per row; default ``design.offset``) is a
    known term of the linear predictor; ``nagq`` is part of the engine contract and
    must be left unset (the random intercepts are sampled).
    """
    _check_options(draws, tune, chains, cores, target_accept, nuts_sampler)
    if not isinstance(hdi, bool):
        raise ModelError(f"hdi must be True or False, got {hdi!r}")
    check_call(ENGINE, nagq, offset)
    X, y, n = _validate(design)
    resolved = resolve_priors(design, priors)
    sampler_seed = _sampler_seed(seed)
    groups = None if design.groups is None else np.asarray(design.groups, dtype=np.int64)
    offset = resolve_offset(design, offset)
    cells = _aggregate(X, y, n, groups, offset)
    pm, pt, az = _backend()

    with _quiet_sampling():
        model = _build_model(pm, pt, design, X, cells, resolved)
        try:
            idata = pm.sample(
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores,
                random_seed=sampler_seed,
                progressbar=progress,
                nuts_sampler=nuts_sampler,
                nuts={"target_accept": float(target_accept)},
                compute_convergence_checks=False,
                idata_kwargs={"log_likelihood": False},
                model=model,
            )
        except ImportError as exc:
            raise EngineUnavailableError(
                f"nuts_sampler={nuts_sampler!r} is not installed ({exc})"
            ) from exc

    names = list(design.names)
    has_sigma = design.group is not None
    beta = idata.posterior["beta"].to_numpy()  # (chain, draw, term)
    flat = beta.reshape(-1, beta.shape[-1])
    params = pd.Series(flat.mean(axis=0), index=names, name="posterior mean")
    cov = np.atleast_2d(np.cov(flat, rowvar=False))
    vcov = pd.DataFrame(cov, index=names, columns=names)
    sigma = float(np.median(idata.posterior[SIGMA_KEY].to_numpy())) if has_sigma else math.nan

    if log_likelihood:
        u = idata.posterior["u"].to_numpy() if has_sigma else None
        ll = _pointwise_loglik(X, y, n, groups, beta, u, offset)
        idata.add_groups(
            log_likelihood={design.response or "y": ll},
            dims={design.response or "y": ["obs"]},
        )

    with _quiet_sampling():
        diag = _diagnostics(az, idata, names, has_sigma)
    divergences = int(idata.sample_stats["diverging"].sum())
    problems = _problems(diag, divergences, chains, rhat_max, ess_min)
    fit_warnings = []
    if problems:
        message = "; ".join(problems)
        fit_warnings.append(f"MCMC diagnostics fail: {message}")
        warn_user(f"engine {ENGINE!r}: MCMC diagnostics fail: {message}", ConvergenceWarning)
    else:
        message = ""
    separated = _separated(cells.X, cells.y, cells.n, names)
    if separated:
        fit_warnings.append(
            "complete or quasi-complete separation along "
            + ", ".join(f"'{t}'" for t in separated)
            + ": the likelihood does not bound these terms, so their posterior is set by the prior"
        )

    return BayesFitResult(
        engine=ENGINE,
        formula=design.formula,
        params=params,
        vcov=vcov,
        n_obs=int(X.shape[0]),
        loglik=math.nan,
        n_groups=design.n_groups,
        group=design.group,
        varcomps=random_intercept(design.group, sigma),
        nagq=None,
        convergence=Convergence(
            converged=not problems,
            message=message,
            separated_terms=tuple(separated),
            diagnostics={
                "max_rhat": float(diag["R-hat"].max()),
                "min_ess_bulk": float(diag["ESS bulk"].min()),
                "min_ess_tail": float(diag["ESS tail"].min()),
                "divergences": divergences,
            },
        ),
        ledger=design.ledger.copy(),
        warnings=tuple(fit_warnings),
        n_events=round(float(y.sum())),
        details=BayesDetails(
            idata=idata,
            interval="hdi" if hdi else "eti",
            priors={k: v.describe() for k, v in resolved.items()},
            rhat_ess=diag,
            divergences=divergences,
            draws=draws,
            tune=tune,
            chains=chains,
            seed=seed if isinstance(seed, int | np.integer) else repr(seed),
            target_accept=float(target_accept),
            sampler=nuts_sampler,
        ),
    )


def _separated(X: np.ndarray, y: np.ndarray, n: np.ndarray, names: list[str]) -> list[str]:

    return separated_terms(X, y, n, names)
