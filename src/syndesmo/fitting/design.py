"""From a formula and a data frame to model matrices: the first step of every fit.

lme4's design is followed: parse the formula → build the model matrices → (engine)
make a deviance function → optimise → wrap the results. This module does the first
two steps and nothing else, so each engine starts from the same ``Design``.

Formulas are lme4-style (``y ~ mri * region + arm + (1|patient)``) and are parsed by
the maintained library `formulae <https://bambinos.github.io/formulae/>`_.
Column names of the fixed-effects matrix follow statsmodels/patsy:

- ``Intercept`` for the intercept;
- a numeric (or boolean, coded 0/1) column keeps its name: ``mri``;
- a categorical column (strings, or a pandas ``Categorical``) is treatment coded with
  its first level as reference — the first of the sorted values for strings, the
  first category for a ``Categorical`` — giving ``arm[T.infliximab]``;
  where a term needs full-rank coding (``0 + arm`` or an interaction without its
  main effect) the columns are ``arm[placebo]``, ``arm[infliximab]``;
- interactions join their parts with ``:``: ``mri:region[T.lumbar]``;
- anything written as a call keeps formulae's name, e.g. ``np.log(crp)``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from syndesmo.errors import ModelError
from syndesmo.fitting.registry import BINOMIAL, FAMILIES
from syndesmo.ledger import Ledger

STEP = "design"


@dataclass
class Design:
    """Model matrices for a model with at most one grouping bar.

    ``y`` holds successes and ``trials`` the number of trials per row (all ones for a
    binary response); for a count family (``family`` other than binomial) ``y`` is the
    count and ``trials`` all ones. ``groups`` are integer codes 0..G-1 of the grouping
    factor named by the bar term ``(1|group)``, or ``None`` for a formula without one.
    ``ledger`` counts the rows of the input that were left out and why. ``rows``
    holds the 0-based positions (``iloc``) of the input rows that were used and
    ``data`` those rows of the input frame (for engines that hand the data on).
    """

    formula: str
    response: str
    y: np.ndarray
    trials: np.ndarray
    X: np.ndarray
    names: list[str]
    group: str | None = None
    groups: np.ndarray | None = None
    group_labels: np.ndarray | None = None
    ledger: Ledger = field(default_factory=Ledger)
    fixed_formula: str = ""
    rows: np.ndarray | None = None
    family: str = BINOMIAL
    data: pd.DataFrame | None = None

    @property
    def n_obs(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_groups(self) -> int | None:
        return None if self.groups is None else int(self.groups.max()) + 1


def build_design(
    formula: str,
    data: pd.DataFrame,
    *,
    trials: str | np.ndarray | None = None,
    family: str = BINOMIAL,
) -> Design:
    """Parse ``formula`` against ``data`` and build the model matrices.

    ``trials`` gives binomial counts: the name of a column, or an array aligned with
    the rows of ``data``; lme4's ``cbind(successes, failures) ~ ...`` is accepted too.
    At most one random-intercept bar ``(1|group)`` is allowed. Rows with a missing
    value in any column the formula uses are left out and counted in the ledger,
    which starts from ``data.attrs["ledger"]`` when the frame carries one.

    ``family`` is the response family of the engine (``syndesmo.fitting.registry``):
    for ``binomial`` the response must be 0/1 or a count 0..trials with events and
    non-events; for a count family it must be numeric, and the engine checks the rest.

    Raises ``ModelError`` naming the term, column, row or value that is wrong.
    """
    if not isinstance(formula, str) or "~" not in formula:
        raise ModelError(f"formula must be a string like 'y ~ x + (1|patient)', got {formula!r}")
    if not isinstance(data, pd.DataFrame):
        raise ModelError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if len(data) == 0:
        raise ModelError("data has no rows")
    if family not in FAMILIES:
        raise ModelError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")

    desc = _parse(formula)
    lhs, rhs = formula.split("~", 1)
    cbind = _parse_cbind(lhs)
    if cbind is not None and trials is not None:
        raise ModelError("give binomial counts either as cbind(successes, failures) or as trials=")
    if family != BINOMIAL and (cbind is not None or trials is not None):
        raise ModelError(
            f"binomial trials (cbind() or trials=) do not apply to the {family} family; "
            "give the count as the response"
        )

    group_vars = _group_vars(desc)
    used_cols = sorted(v for v in desc.var_names if v)
    _check_columns(used_cols, data, formula)
    trials_values, trials_name = _trials_input(trials, data)

    ledger = _start_ledger(data)
    keep = _complete_rows(data, used_cols, trials_values, trials_name, group_vars, ledger)
    rows = np.flatnonzero(keep)
    frame = _prepare_frame(data.iloc[rows][used_cols])

    formulae_formula = formula
    if cbind is not None:
        # formulae has no cbind(); the successes column is the response for it.
        formulae_formula = f"{cbind[0]} ~ {rhs}"
    dm = _design_matrices(formulae_formula, frame)

    response = cbind[0] if cbind is not None else dm.response.name
    if family == BINOMIAL:
        y, n = _response(dm, frame, cbind, trials_values, rows, response, data.index[rows])
    else:
        y = _count_response(dm, response, data.index[rows])
        n = np.ones_like(y)
    X, names = _fixed_effects(dm, len(rows))
    _check_finite(X, names, data.index[rows])

    groups = group_labels = None
    group = None
    if group_vars:
        group = ":".join(group_vars)
        labels = (
            frame[group_vars].astype(str).agg(":".join, axis=1)
            if len(group_vars) > 1
            else (frame[group_vars[0]])
        )
        codes, uniques = pd.factorize(labels, sort=True)
        groups = codes.astype(np.int64)
        group_labels = np.asarray(uniques)

    return Design(
        formula=formula,
        response=response,
        y=y,
        trials=n,
        X=X,
        names=names,
        group=group,
        groups=groups,
        group_labels=group_labels,
        ledger=ledger,
        fixed_formula=fixed_formula(formula),
        rows=rows,
        family=family,
        data=data.iloc[rows],
    )


def fixed_formula(formula: str) -> str:
    """``formula`` without its random-effect bar terms: ``y ~ x + (1|g)`` → ``y ~ x``."""
    lhs, rhs = formula.split("~", 1)
    out = []
    depth = 0
    start = None
    spans = []
    for i, ch in enumerate(rhs):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and start is not None and "|" in rhs[start : i + 1]:
                spans.append((start, i + 1))
    last = 0
    for a, b in spans:
        out.append(rhs[last:a])
        last = b
    out.append(rhs[last:])
    kept = "".join(out)
    kept = re.sub(r"\+\s*\+", "+", kept)
    kept = re.sub(r"^\s*\+|\+\s*$", "", kept.strip()).strip()
    kept = re.sub(r"\s+", " ", kept)
    return f"{lhs.strip()} ~ {kept or '1'}"


# --- parsing -------------------------------------------------------------------------


def _parse(formula: str):
    from formulae.model_description import model_description

    try:
        desc = model_description(formula)
    except Exception as exc:  # formulae raises several parse/scan error types
        raise ModelError(f"cannot parse formula {formula!r}: {exc}") from exc
    if desc.response is None:
        raise ModelError(f"formula {formula!r} has no response on the left of '~'")
    return desc


_CBIND = re.compile(r"^\s*cbind\s*\((?P<args>.*)\)\s*$")


def _parse_cbind(lhs: str) -> tuple[str, str] | None:
    """The two column names of lme4's ``cbind(successes, failures)``, or ``None``."""
    m = _CBIND.match(lhs)
    if m is None:
        return None
    args = [a.strip() for a in m.group("args").split(",")]
    if len(args) != 2 or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", a) for a in args):
        raise ModelError(
            f"cbind() in the response must name two columns, cbind(successes, failures); "
            f"got {lhs.strip()!r}. For other forms pass the number of trials as trials="
        )
    return args[0], args[1]


def _bar_text(term) -> str:
    expr = "1" if type(term.expr).__name__ == "Intercept" else str(term.expr.name)
    factor = ":".join(str(c.name) for c in term.factor.components)
    return f"({expr}|{factor})"


def _group_vars(desc) -> list[str]:
    """The variables of the single random-intercept bar; [] without one."""
    terms = list(desc.group_terms)
    if not terms:
        return []
    bars = [_bar_text(t) for t in terms]
    slopes = [b for t, b in zip(terms, bars, strict=True) if type(t.expr).__name__ != "Intercept"]
    if slopes:
        raise ModelError(
            f"random slopes are not supported: {', '.join(slopes)}; "
            "use a single random intercept (1|group)"
        )
    if len(terms) > 1:
        raise ModelError(
            "only one random-intercept term (1|group) is supported; the formula has "
            + ", ".join(bars)
        )
    term = terms[0]
    comps = term.factor.components
    if not all(type(c).__name__ == "Variable" for c in comps):
        raise ModelError(f"the grouping factor of {bars[0]} must be a column (or a:b of columns)")
    return [str(c.name) for c in comps]


def _check_columns(used: list[str], data: pd.DataFrame, formula: str) -> None:
    missing = [c for c in used if c not in data.columns]
    if missing:
        raise ModelError(
            f"column(s) {', '.join(map(repr, missing))} named in the formula {formula!r} "
            f"are not in the data; available columns: {', '.join(map(str, data.columns))}"
        )


def _trials_input(
    trials: str | np.ndarray | None, data: pd.DataFrame
) -> tuple[np.ndarray | None, str]:
    """Trials as a float array aligned with ``data`` (NaN where missing), and its name."""
    if trials is None:
        return None, ""
    if isinstance(trials, str):
        if trials not in data.columns:
            raise ModelError(
                f"trials column {trials!r} is not in the data; "
                f"available columns: {', '.join(map(str, data.columns))}"
            )
        values = pd.to_numeric(data[trials], errors="coerce").to_numpy(dtype=float)
        bad = data[trials].notna().to_numpy() & np.isnan(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ModelError(
                f"trials column {trials!r} must be numeric; row {data.index[i]} "
                f"has {data[trials].iloc[i]!r}"
            )
        return values, trials
    values = np.asarray(trials, dtype=float).ravel()
    if values.shape[0] != len(data):
        raise ModelError(f"trials has {values.shape[0]} values but data has {len(data)} rows")
    return values, "trials"


def _start_ledger(data: pd.DataFrame) -> Ledger:
    prior = data.attrs.get("ledger")
    if prior is None:
        return Ledger()
    if isinstance(prior, Ledger):
        return prior.copy()
    if isinstance(prior, pd.DataFrame):
        return Ledger(prior.to_dict("records"))
    return Ledger([dict(e) for e in prior])


def _complete_rows(
    data: pd.DataFrame,
    used: list[str],
    trials: np.ndarray | None,
    trials_name: str,
    group_vars: list[str],
    ledger: Ledger,
) -> np.ndarray:
    """Mask of rows with no missing value; the others are counted in ``ledger``."""
    na = data[used].isna()
    if trials is not None:
        already = na[trials_name].to_numpy() if trials_name in na else False
        na[trials_name] = already | np.isnan(trials)
    incomplete = na.any(axis=1).to_numpy()
    n_out = int(incomplete.sum())
    if n_out == 0:
        return ~incomplete
    counts = na.sum(axis=0)
    counts = counts[counts > 0]
    what = ", ".join(f"{c} ({n} row{'s' if n != 1 else ''})" for c, n in counts.items())
    n_groups = None
    if group_vars:  # patients with a known label among the rows left out
        n_groups = len(data.loc[incomplete, group_vars].dropna().drop_duplicates())
    ledger.add(STEP, f"missing value in {what}", n_out, n_groups)
    if n_out == len(data):
        raise ModelError(f"no complete rows: every row has a missing value in {what}")
    return ~incomplete


def _prepare_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep a Categorical's own level order (formulae sorts unordered ones) and drop
    levels that no row uses, so no all-zero columns appear."""
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.cat.remove_unused_categories()
            out[col] = s.cat.as_ordered()
    return out


def _design_matrices(formula: str, frame: pd.DataFrame):
    import formulae

    try:
        return formulae.design_matrices(
            formula, frame, na_action="error", extra_namespace={"np": np}
        )
    except Exception as exc:  # formulae raises plain ValueError/TypeError/NameError
        raise ModelError(f"cannot build the model matrices for {formula!r}: {exc}") from exc


# --- response ------------------------------------------------------------------------


def _response(
    dm,
    frame: pd.DataFrame,
    cbind: tuple[str, str] | None,
    trials: np.ndarray | None,
    rows: np.ndarray,
    name: str,
    index: pd.Index,
) -> tuple[np.ndarray, np.ndarray]:
    """Successes and trials as float arrays, checked to be counts 0..trials."""
    if cbind is not None:
        y = _numeric(frame[cbind[0]], cbind[0], index)
        fail = _numeric(frame[cbind[1]], cbind[1], index)
        _check_counts(fail, np.full_like(fail, np.inf), cbind[1], index, what="failures")
        n = y + fail
    else:
        values = np.asarray(dm.response.design_matrix)
        kind = dm.response.kind
        if kind == "proportion" and values.ndim == 2 and values.shape[1] == 2:
            y, n = values[:, 0].astype(float), values[:, 1].astype(float)
        elif kind == "numeric" and (values.ndim == 1 or values.shape[1] == 1):
            y = _numeric(pd.Series(values.ravel()), name, index)
            n = np.ones_like(y) if trials is None else trials[rows].astype(float)
        else:
            raise ModelError(
                f"outcome {name!r} must be 0/1 (or a count 0..trials); it is {kind} "
                f"with values like {values.ravel()[:3].tolist()}"
            )
    _check_counts(n, np.full_like(n, np.inf), "trials", index, what="trials", positive=True)
    _check_counts(y, n, name, index)
    n_events = float(y.sum())
    if n_events == 0:
        raise ModelError(f"outcome {name!r} has no events among {len(y)} rows")
    if n_events == float(n.sum()):
        raise ModelError(
            f"outcome {name!r} has no non-events (every trial is an event) among {len(y)} rows"
        )
    return y, n


def _count_response(dm, name: str, index: pd.Index) -> np.ndarray:
    """The response of a count family as floats; whole and >= 0 is the engine's check."""
    values = np.asarray(dm.response.design_matrix)
    if dm.response.kind != "numeric" or not (values.ndim == 1 or values.shape[1] == 1):
        raise ModelError(
            f"outcome {name!r} must be a count (a number per row); it is "
            f"{dm.response.kind} with values like {values.ravel()[:3].tolist()}"
        )
    return _numeric(pd.Series(values.ravel()), name, index, need="a count")


def _numeric(
    s: pd.Series, name: str, index: pd.Index, need: str = "0/1 (or a count 0..trials)"
) -> np.ndarray:
    if s.dtype == bool:
        return s.to_numpy(dtype=float)
    values = pd.to_numeric(pd.Series(np.asarray(s)), errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(
            f"outcome {name!r} must be {need}; row {index[i]} has {np.asarray(s)[i]!r}"
        )
    return values


def _check_counts(
    y: np.ndarray,
    upper: np.ndarray,
    name: str,
    index: pd.Index,
    *,
    what: str = "outcome",
    positive: bool = False,
) -> None:
    lower = 1.0 if positive else 0.0
    bad = ~np.isfinite(y) | (y != np.round(y)) | (y < lower) | (y > upper)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if what == "outcome":
            need = "0/1" if np.all(upper == 1) else "a whole number between 0 and trials"
        elif positive:
            need = "a whole number >= 1"
        else:
            need = "a whole number >= 0"
        bound = "" if not np.isfinite(upper[i]) or np.all(upper == 1) else f" (trials {upper[i]:g})"
        raise ModelError(
            f"{what} {name!r} must be {need}; row {index[i]} has {y[i]:g}{bound} "
            f"({int(bad.sum())} bad row{'s' if bad.sum() != 1 else ''})"
        )


# --- fixed effects -------------------------------------------------------------------


def _component_names(component) -> list[str]:
    """Column names for one factor of a term, in formulae's column order."""
    is_variable = type(component).__name__ == "Variable"
    if is_variable and component.kind == "categoric" and component.contrast_matrix is not None:
        prefix = "" if component.spans_intercept else "T."
        return [f"{component.name}[{prefix}{lvl}]" for lvl in component.contrast_matrix.labels]
    return list(component.labels)


def _term_names(term) -> list[str]:
    if term.kind == "intercept":
        return ["Intercept"]
    parts = [_component_names(c) for c in term.components]
    names = [":".join(p) for p in itertools.product(*parts)]
    if len(names) != len(term.labels):  # formulae changed its labelling: keep its names
        return list(term.labels)
    return names


def _fixed_effects(dm, n_rows: int) -> tuple[np.ndarray, list[str]]:
    if dm.common is None:
        return np.empty((n_rows, 0)), []
    X = np.asarray(dm.common.design_matrix, dtype=float)
    names: list[str] = []
    for term in dm.common.terms.values():
        names.extend(_term_names(term))
    if len(names) != X.shape[1]:
        raise ModelError(
            f"internal: {X.shape[1]} fixed-effect columns but {len(names)} names were built"
        )
    return X, names


def _check_finite(X: np.ndarray, names: list[str], index: pd.Index) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = (int(v[0]) for v in np.nonzero(bad))
        raise ModelError(
            f"fixed-effect column {names[j]!r} is not finite in row {index[i]} ({X[i, j]}); "
            f"{int(bad.any(axis=1).sum())} rows affected"
        )
