"""Conditional modes, predictions, fitted values and residuals of any fit (lme4's reflexes).

Everything here is built from two things every fit can describe in the same words:

* its **formula and design** (``fit.design``, kept by ``sy.fit``): the fixed-effect
  columns are rebuilt for new rows by the same checked grammar (``fitting/formula.py``)
  with the constants of ``scale()``/``center()`` of the data the model was fitted on
  (as R's ``makepredictcall`` keeps them) and the factor levels of those data;
* its **random-effect table** (:func:`ranef_table`), laid out as lme4's
  ``as.data.frame(ranef(m, condVar = TRUE))``: ``grpvar, term, grp, condval, condsd``.
  The bars of the formula, expanded as lme4 expands them
  (``fitting/random_effects.py``: ``(1|patient/vu)`` → ``patient`` and ``vu:patient``,
  ``(1 + x||patient)`` → ``(1|patient) + (0 + x|patient)``), say which rows of the
  table a new row takes: the group ``grpvar`` names the columns whose values, joined by
  ``:`` in that order, form the label ``grp`` (``vu:patient`` → ``3:P001``), and
  ``term`` names the column of the bar's model matrix (``(Intercept)``, ``x``) that
  multiplies ``condval``. A group the table does not hold gets a random effect of 0,
  as lme4's ``predict(..., allow.new.levels = TRUE)``.

So nested and slope models predict as soon as their engine's table follows lme4's
layout; nothing here knows an engine by name. Engines without random effects (GEE,
logistic, conditional logistic, the count models) predict from the fixed effects and
the offset only: GEE's are population-averaged (marginal) predictions, the logistic
and count models' ignore any clustering, and conditional logistic regression
estimates no stratum intercepts, so it has a linear predictor (``type="link"``) but
no probabilities.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import expit

from syndesmo.errors import ModelError
from syndesmo.fitting import registry
from syndesmo.fitting.design import Design, _design_matrices, _fixed_effects, _prepare_frame
from syndesmo.fitting.formula import Formula, _columns, parse_formula, prepare
from syndesmo.fitting.random_effects import BarTerm, parse_bars, term_matrix

if TYPE_CHECKING:
    from syndesmo.fitting.results import FitResult

#: Columns of ``fit.ranef()``, as lme4's ``as.data.frame(ranef(m, condVar = TRUE))``.
RANEF_COLUMNS = ("grpvar", "term", "grp", "condval", "condsd")
#: Scales of a prediction: probabilities (rates for counts) or the linear predictor.
PREDICT_TYPES = ("response", "link")
#: Residual types; the first is lme4's default for a GLMM (``residuals.merMod``).
RESIDUAL_TYPES = ("deviance", "pearson", "response")


# --- the random-effect table ------------------------------------------------------------


def ranef_table(fit: FitResult) -> pd.DataFrame:
    """The conditional modes and SDs of ``fit``'s random effects, in lme4's layout.

    The engine supplies them through its details (``details.ranef_frame(group)``: the
    lme4 engine's table from R, the Bayesian engine's posterior means and SDs of the
    patient effects) or its model object (``model.ranef(params)``: the native engine's
    modes at the estimates).

    Parameters
    ----------
    fit : FitResult
        A converged fit of an engine with random effects.

    Returns
    -------
    pandas.DataFrame
        Columns ``grpvar, term, grp, condval, condsd``, one row per group and term.

    Raises
    ------
    ModelError
        For an engine without random effects, a fit that did not converge, or a fit
        that keeps no conditional modes.
    """
    if not registry.get_engine(fit.engine).random_effects:
        with_re = [n for n, e in registry.REGISTRY.items() if e.random_effects]
        raise ModelError(
            f"engine {fit.engine!r} fits no random effects, so it has no conditional modes "
            f"(ranef); engines with random effects: {', '.join(with_re)}"
        )
    if not fit.converged:
        raise ModelError(
            "the fit did not converge, so its conditional modes would not be estimates: "
            + fit.convergence_message
        )
    source = getattr(fit.details, "ranef_frame", None)
    if callable(source):
        table = source(fit.group)
    else:
        modes = getattr(fit.model, "ranef", None)
        if modes is None:
            raise ModelError(
                f"this {fit.engine!r} fit keeps no conditional modes (ranef); fit it with "
                "sy.fit to have them"
            )
        table = modes(fit.model_params())
    missing = [c for c in RANEF_COLUMNS if c not in table.columns]
    if missing:  # an engine's table that does not follow lme4's layout
        raise ModelError(f"internal: the ranef table of {fit.engine!r} lacks {missing}")
    out = table.loc[:, list(RANEF_COLUMNS)].reset_index(drop=True)
    return out.astype({"grpvar": object, "term": object, "condval": float, "condsd": float})


def predict(
    fit: FitResult,
    data: pd.DataFrame | None = None,
    *,
    type: str = "response",
    conditional: bool = True,
    offset: str | np.ndarray | pd.Series | None = None,
) -> pd.Series:
    """Predictions of ``fit`` for its own rows or for new ones (lme4's ``predict``).

    Parameters
    ----------
    fit : FitResult
        A converged fit made by ``sy.fit`` (which keeps its design).
    data : pandas.DataFrame, optional
        New rows holding the columns the formula uses (the response is not needed);
        default: the rows the model was fitted on. Factor levels must be levels the
        model was fitted on; a group the model has not seen gets a random effect of 0
        (lme4's ``allow.new.levels = TRUE``).
    type : {"response", "link"}
        Probabilities (expected counts for a count model) or the linear predictor.
    conditional : bool
        Add the random effects (lme4's default ``re.form = NULL``); ``False`` gives
        the fixed part only (``re.form = NA``). Engines without random effects
        ignore it: their predictions are always the fixed part and the offset.
    offset : str or array, optional
        For new data: the values of a fit's ``offset=`` (a column of ``data`` or an
        array aligned with it); needed when the fit's ``offset=`` was an array. The
        formula's ``offset(...)`` terms are evaluated on ``data`` by themselves.

    Returns
    -------
    pandas.Series
        One prediction per row, indexed as ``data`` (as the fitted rows of the input
        for ``data=None``).

    Raises
    ------
    ModelError
        For a bad ``type``, a fit without a design or that did not converge, a missing
        value or an unknown factor level in ``data`` (naming column and row), or
        ``type="response"`` for conditional logistic regression.
    """
    eta, index = linear_predictor(fit, data, conditional=conditional, offset=offset)
    return pd.Series(_inverse_link(fit, eta, _check_type(type, PREDICT_TYPES, "type")), index=index)


def linear_predictor(
    fit: FitResult,
    data: pd.DataFrame | None = None,
    *,
    conditional: bool = True,
    offset: str | np.ndarray | pd.Series | None = None,
) -> tuple[np.ndarray, pd.Index]:
    """The linear predictor ``Xβ + offset (+ Zb)`` and the index of its rows.

    Parameters are those of :func:`predict`.

    Returns
    -------
    eta : numpy.ndarray
        One value per row.
    index : pandas.Index
        The rows' index.
    """
    design = _design_of(fit)
    beta = fit.params.to_numpy(dtype=float)
    if data is None:
        X, off, frame = design.X, design.offset, design.data
        index = design.data.index if design.data is not None else pd.RangeIndex(design.n_obs)
    else:
        if not isinstance(data, pd.DataFrame):
            raise ModelError(f"new data must be a pandas DataFrame, got {type(data).__name__}")
        if len(data) == 0:
            raise ModelError("new data has no rows")
        X, off = _new_fixed(design, data, offset)
        frame, index = data, data.index
    eta = X[:, _columns_of(fit, design)] @ beta
    if off is not None:
        eta = eta + off
    if conditional and registry.get_engine(fit.engine).random_effects:
        eta = eta + random_part(design.formula, ranef_table(fit), frame, design.data)
    return eta, index


def _columns_of(fit: FitResult, design: Design) -> list[int]:
    """Columns of the design the fit estimated, in its order (conditional logistic
    regression leaves out the intercept and terms constant within every stratum)."""
    where = {n: j for j, n in enumerate(design.names)}
    missing = [n for n in fit.params.index if n not in where]
    if missing:
        raise ModelError(f"internal: the fit's terms {missing} are not columns of its design")
    return [where[n] for n in fit.params.index]


def random_part(
    formula: str, table: pd.DataFrame, frame: pd.DataFrame, train: pd.DataFrame | None = None
) -> np.ndarray:
    """``Z b`` of every row of ``frame``: the bars of ``formula`` times the table's modes.

    Parameters
    ----------
    formula : str
        The model's lme4 formula; its bars say which rows of ``table`` apply.
    table : pandas.DataFrame
        The random effects in lme4's layout (``grpvar, term, grp, condval``).
    frame : pandas.DataFrame
        The rows to predict: the grouping columns and any slope columns.
    train : pandas.DataFrame, optional
        The rows the model was fitted on, for the levels of categorical slopes.

    Returns
    -------
    numpy.ndarray
        One value per row of ``frame``; 0 for a group the table does not hold.

    Raises
    ------
    ModelError
        When a grouping or slope column is missing or has missing values, or the
        table holds no row for a bar's group and term.
    """
    out = np.zeros(len(frame))
    grpvars = table["grpvar"].astype(str)
    for bar in parse_bars(formula):
        columns = _key_columns(bar)
        _check_present(frame, list(bar.factors), f"the random effects ({bar.lhs}|{bar.name})")
        Z, names = _bar_matrix(bar, frame, train)
        keys = _group_keys(frame, columns)
        of_group = table[
            (grpvars == bar.name) | grpvars.str.fullmatch(re.escape(bar.name) + r"\.\d+")
        ]
        for j, term in enumerate(names):
            rows = of_group[of_group["term"].astype(str) == term]
            if rows.empty:
                raise ModelError(
                    f"the random effects hold no term {term!r} of group {bar.name!r} "
                    f"(groups and terms: {sorted(set(zip(grpvars, table['term'], strict=False)))})"
                )
            lookup = pd.Series(
                rows["condval"].to_numpy(dtype=float),
                index=[_key_text(g, split=True) for g in rows["grp"]],
            )
            lookup = lookup[~lookup.index.duplicated()]
            if (train is None or frame is train) and not lookup.index.isin(keys).any():
                raise ModelError(  # the fitted rows must find their own groups
                    f"the labels of group {bar.name!r} in the random effects (e.g. "
                    f"{lookup.index[0]!r}) match none of the fitted rows (e.g. {keys[0]!r}); "
                    "lme4 joins the values of the columns of 'a:b' in that order"
                )
            b = lookup.reindex(keys).fillna(0.0).to_numpy()  # an unseen group: 0
            out += Z[:, j] * b
    return out


def _key_columns(bar: BarTerm) -> list[str]:
    """The columns whose values, joined by ``:``, form lme4's labels of ``bar.name``."""
    parts = bar.name.split(":")
    if sorted(parts) == sorted(bar.factors):
        return parts
    return list(bar.factors)


def _key_text(value: Any, split: bool = False) -> str:
    """A group label as text, whole numbers without ``.0`` (``3.0`` → ``3``, as R prints)."""
    if split:
        return ":".join(_key_text(p) for p in str(value).split(":"))
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    if np.isfinite(number) and number == round(number) and "e" not in text.lower():
        return str(int(number))
    return text


def _group_keys(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    values = [frame[c].map(_key_text).astype(str) for c in columns]
    keys = values[0]
    for v in values[1:]:
        keys = keys + ":" + v
    return list(keys)


def _bar_matrix(
    bar: BarTerm, frame: pd.DataFrame, train: pd.DataFrame | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The bar's model-matrix columns on ``frame``, coded with the training levels."""
    if bar.lhs.strip() == "1":
        return np.ones((len(frame), 1)), ("(Intercept)",)
    if train is None or frame is train:
        return term_matrix(bar.lhs, frame)
    _, trained = term_matrix(bar.lhs, train)
    cols = [c for c in train.columns if c in frame.columns]
    both = pd.concat([train[cols], frame[cols]], ignore_index=True)
    Z, names = term_matrix(bar.lhs, both)
    if names != trained:
        new = sorted(set(names) - set(trained))
        raise ModelError(
            f"new data: the random effects ({bar.lhs}|{bar.name}) would need the "
            f"column(s) {', '.join(new)}, a level the model was not fitted on"
        )
    return Z[len(train) :], names


# --- the fixed part of new rows -------------------------------------------------------


def _new_fixed(
    design: Design, data: pd.DataFrame, offset: str | np.ndarray | pd.Series | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` and the offset of new rows, coded as the design's rows were."""
    parsed = parse_formula(design.formula)
    train = design.data
    if train is None:
        raise ModelError("this fit keeps no data, so it cannot code new rows; refit with sy.fit")
    needed = [c for c in parsed.columns if c != parsed.response]
    if parsed.cbind is not None:
        needed = [c for c in needed if c not in parsed.cbind]
    needed = [c for c in needed if c in _fixed_columns(parsed)]
    _check_present(data, needed, "the model")
    new = data[needed].reset_index(drop=True).copy()
    for c in needed:  # a Categorical's levels, as fitted
        if isinstance(train[c].dtype, pd.CategoricalDtype):
            values = new[c]
            new[c] = values.astype(train[c].dtype)
            bad = new[c].isna() & values.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise ModelError(
                    f"new data: column {c!r} has level {values.iloc[i]!r} in row "
                    f"{data.index[i]}, which the model was not fitted on"
                )
    both = pd.concat([train[needed].reset_index(drop=True), new], ignore_index=True)
    prepared = prepare(parsed, both, state=design.transforms)
    frame = _prepare_frame(prepared.frame)
    dm = _design_matrices(prepared.formula, frame, design.formula)
    X, names = _fixed_effects(dm, len(both), prepared.labels)
    if names != list(design.names):
        extra = [n for n in names if n not in design.names]
        raise ModelError(
            "new data: "
            + (
                f"the column(s) {', '.join(extra)} come from level(s) the model was not fitted on"
                if extra
                else f"the fixed effects {names} do not match the model's {design.names}"
            )
        )
    X = X[len(train) :]
    n = len(data)
    off = None if prepared.offset is None else prepared.offset[len(train) :]
    keyword = _keyword_offset(design, data, offset)
    if keyword is not None:
        off = keyword if off is None else off + keyword
    if off is not None and not np.all(np.isfinite(off)):
        i = int(np.flatnonzero(~np.isfinite(off))[0])
        raise ModelError(f"new data: the offset is not finite in row {data.index[i]}")
    if not np.all(np.isfinite(X)):
        i, j = (int(v[0]) for v in np.nonzero(~np.isfinite(X)))
        raise ModelError(f"new data: term {names[j]!r} is not finite in row {data.index[i]}")
    assert X.shape[0] == n
    return X, off


def _fixed_columns(parsed: Formula) -> set[str]:
    """Columns of the fixed terms and offsets (not of the bars)."""
    cols: set[str] = set()
    for _, node in parsed.fixed:
        cols.update(_columns(node))
    for node in parsed.offsets:
        cols.update(_columns(node))
    return cols


def _keyword_offset(
    design: Design, data: pd.DataFrame, offset: str | np.ndarray | pd.Series | None
) -> np.ndarray | None:
    if offset is None:
        if design.offset_keyword is None:
            return None
        if design.offset_keyword == "<array>":
            raise ModelError(
                "the model was fitted with offset= as an array: give predict(..., offset=) "
                "for the new rows"
            )
        offset = design.offset_keyword
    if isinstance(offset, str):
        _check_present(data, [offset], "the offset")
        return pd.to_numeric(data[offset], errors="coerce").to_numpy(dtype=float)
    values = np.asarray(offset, dtype=float).reshape(-1)
    if values.size != len(data):
        raise ModelError(f"offset has {values.size} values but the new data have {len(data)} rows")
    return values


def _check_present(data: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ModelError(f"new data lack the column(s) {', '.join(map(repr, missing))} of {what}")
    for c in columns:
        na = data[c].isna().to_numpy()
        if na.any():
            i = int(np.flatnonzero(na)[0])
            raise ModelError(
                f"new data: column {c!r} of {what} has a missing value in row {data.index[i]}"
            )


# --- fitted values and residuals --------------------------------------------------------


def fitted(fit: FitResult, type: str = "response") -> pd.Series:
    """Fitted values of the rows the model was fitted on (lme4's ``fitted``).

    Conditional on the random effects for engines that have them (native, lme4: the
    conditional modes; Bayes: the posterior means of the patient effects plugged in);
    the fixed part and the offset for the others (GEE: population-averaged).

    Parameters
    ----------
    fit : FitResult
        A converged fit made by ``sy.fit``.
    type : {"response", "link"}
        Probabilities (expected counts) or the linear predictor.

    Returns
    -------
    pandas.Series
        Indexed by the fitted rows of the input.
    """
    return predict(fit, None, type=type, conditional=True)


def residuals(fit: FitResult, type: str = "deviance") -> pd.Series:
    """Residuals of the rows the model was fitted on, as lme4's ``residuals(m, type)``.

    With ``y`` the observed proportion (successes / trials, or the count), ``μ`` the
    fitted value (:func:`fitted`) and ``w`` the trials: ``"response"`` is ``y − μ``,
    ``"pearson"`` ``(y − μ) √w / √V(μ)`` and ``"deviance"`` the signed square root of
    each row's deviance (the variance function and unit deviance of statsmodels'
    family: binomial, Poisson, or negative binomial with the fitted dispersion).

    Parameters
    ----------
    fit : FitResult
        A converged fit made by ``sy.fit``.
    type : {"deviance", "pearson", "response"}
        The residual; lme4's default for a GLMM is ``"deviance"``.

    Returns
    -------
    pandas.Series
        Indexed by the fitted rows of the input.

    Raises
    ------
    ModelError
        For conditional logistic regression (no fitted probabilities) or a bad type.
    """
    import statsmodels.api as sm

    type = _check_type(type, RESIDUAL_TYPES, "residual type")
    mu = fitted(fit, "response")
    design = _design_of(fit)
    w = np.asarray(design.trials, dtype=float)
    y = np.asarray(design.y, dtype=float) / w
    family = _family(fit, design, sm)
    m = mu.to_numpy()
    if type == "response":
        r = y - m
    elif type == "pearson":
        r = (y - m) * np.sqrt(w) / np.sqrt(family.variance(m))
    else:
        r = family.resid_dev(y, m, var_weights=w)
    return pd.Series(r, index=mu.index)


def _family(fit: FitResult, design: Design, sm: Any) -> Any:
    if design.family == registry.BINOMIAL:
        return sm.families.Binomial()
    if design.family == registry.POISSON:
        return sm.families.Poisson()
    alpha = getattr(fit.details, "alpha", None)
    if alpha is None or not np.isfinite(alpha):
        raise ModelError(f"the {fit.engine!r} fit keeps no dispersion, so no residuals")
    return sm.families.NegativeBinomial(alpha=float(alpha))


# --- helpers ------------------------------------------------------------------------------


def _design_of(fit: FitResult) -> Design:
    design = getattr(fit, "design", None)
    if design is None:
        raise ModelError(
            f"this {fit.engine!r} fit keeps no design (it was not made by sy.fit), so it "
            "cannot predict; fit it with sy.fit"
        )
    if not fit.converged:
        raise ModelError(
            "the fit did not converge, so its predictions would not be estimates: "
            + fit.convergence_message
        )
    return design


def _inverse_link(fit: FitResult, eta: np.ndarray, type: str) -> np.ndarray:
    if type == "link":
        return eta
    engine = registry.get_engine(fit.engine)
    if engine.scale == registry.WITHIN:
        raise ModelError(
            f"engine {fit.engine!r} estimates no intercept of its strata, so it gives no "
            "probabilities: use type='link' (the linear predictor within a stratum)"
        )
    if engine.family == registry.BINOMIAL:
        return expit(eta)
    return np.exp(eta)


def _check_type(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ModelError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return value
