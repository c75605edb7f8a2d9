"""From a formula and a data frame to model matrices: the first step of every fit.

lme4's design is followed: parse the formula → build the model matrices → (engine)
make a deviance function → optimise → wrap the results. This module does the first
two steps and nothing else, so each engine starts from the same ``Design``.

Formulas are lme4-style (``y ~ mri * region + arm + log(crp) + offset(z) + (1|patient)``).
A formula is data, not code: ``syndesmo.fitting.formula`` parses and checks it against
a closed grammar and a closed set of transforms, evaluates the transforms itself and
hands the maintained library `formulae <https://bambinos.github.io/formulae/>`_ only
neutral column names and operators, from which it builds the model matrices.
``offset(...)`` terms are summed into ``Design.offset`` (not a column of X).
Column names of the fixed-effects matrix follow statsmodels/patsy:

- ``Intercept`` for the intercept;
- a numeric (or boolean, coded 0/1) column keeps its name: ``mri``;
- a categorical column (strings, or a pandas ``Categorical``) is treatment coded with
  its first level as reference — the first of the sorted values for strings, the
  first category for a ``Categorical`` — giving ``arm[T.infliximab]``;
  where a term needs full-rank coding (``0 + arm`` or an interaction without its
  main effect) the columns are ``arm[placebo]``, ``arm[infliximab]``;
- interactions join their parts with ``:``: ``mri:region[T.lumbar]``;
- a transform is named as written, tidied: ``log(crp)``, ``np.log(crp)``,
  ``scale(age)``, ``I(age^2)``, ``C(reader)[T.2]``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from syndesmo.derive.aframe import AnalysisFrame, split_frame
from syndesmo.errors import DeriveError, ModelError
from syndesmo.fitting.formula import (
    BinOp,
    Column,
    Formula,
    Paren,
    bar_label,
    label,
    parse_formula,
    prepare,
)
from syndesmo.fitting.random_effects import BarTerm, ReStructure, build_structure, parse_bars
from syndesmo.fitting.registry import BINOMIAL, FAMILIES
from syndesmo.ledger import Ledger

STEP = "design"


@dataclass
class Design:
    """Model matrices and random-effect structure of a model.

    ``y`` holds successes and ``trials`` the number of trials per row (all ones for a
    binary response); for a count family (``family`` other than binomial) ``y`` is the
    count and ``trials`` all ones. ``groups`` are integer codes 0..G-1 of the grouping
    factor named by the bar term ``(1|group)``, or ``None`` for a formula without one
    or with any other random-effect terms; those (nested ``(1|patient/vu)``, slopes
    ``(1 + x|patient)``, several bars) are in ``random``, a
    :class:`~syndesmo.fitting.random_effects.ReStructure` on the rows used (``None``
    for no bar or a single ``(1|group)``).
    ``ledger`` counts the rows of the input that were left out and why. ``rows``
    holds the 0-based positions (``iloc``) of the input rows that were used and
    ``data`` those rows of the input frame (for engines that hand the data on).
    ``offset`` is the known part of the linear predictor, one number per row: the sum
    of the formula's ``offset(...)`` terms and of ``offset=``; ``None`` without any.
    ``transforms`` holds the constants of the formula's ``scale()``/``center()``
    terms and ``offset_keyword`` the column given as ``offset=`` (``"<array>"`` for
    an array, ``None`` without one): what predictions on new data need
    (``syndesmo.fitting.predict``).
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
    offset: np.ndarray | None = None
    family: str = BINOMIAL
    data: pd.DataFrame | None = None
    random: ReStructure | None = None
    transforms: dict[str, tuple[float, float]] = field(default_factory=dict)
    offset_keyword: str | None = None

    @property
    def has_random(self) -> bool:
        """The formula has random effects: one ``(1|group)`` or a structure."""
        return self.groups is not None or self.random is not None

    @property
    def n_obs(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_groups(self) -> int | None:
        return None if self.groups is None else int(self.groups.max()) + 1


def build_design(
    formula: str,
    data: pd.DataFrame | AnalysisFrame,
    *,
    trials: str | np.ndarray | None = None,
    ledger: Ledger | None = None,
    offset: str | np.ndarray | None = None,
    family: str = BINOMIAL,
) -> Design:
    """Parse ``formula`` against ``data`` and build the model matrices.

    Parameters
    ----------
    formula : str
        lme4-style formula; only column names, the formula operators, bar terms and
        the transforms of ``syndesmo.fitting.formula.FUNCTIONS`` are accepted, and the
        formula is checked before anything is evaluated. lme4's
        ``cbind(successes, failures) ~ ...`` is accepted too.
    data : pandas.DataFrame or AnalysisFrame
        The rows to model. An ``AnalysisFrame`` brings the ledger of the rows left
        out before it.
    trials : str or numpy.ndarray, optional
        Binomial counts: the name of a column, or an array aligned with the rows.
    offset : str or numpy.ndarray, optional
        A known term of the linear predictor (a column name, or an array aligned with
        the rows of ``data``), as R's ``offset=``; it is added to any ``offset(...)``
        terms of the formula, as R sums them.
    ledger : Ledger, optional
        The rows left out before ``data`` (with a plain DataFrame, e.g.
        ``frame.ledger`` after merging covariates into ``frame.data``).

    family : str
        The response family of the engine (``syndesmo.fitting.registry``): for
        ``binomial`` the response must be 0/1 or a count 0..trials with events and
        non-events; for a count family it must be numeric, and the engine checks the
        rest.

    Returns
    -------
    Design
        Its ``ledger`` starts from the one given (or the frame's) and adds the rows
        with a missing value in any column the formula uses, which are left out.

    Raises
    ------
    ModelError
        Naming the term, column, row or value that is wrong; also when an
        AnalysisFrame and ``ledger`` are both given.
    """
    if not isinstance(formula, str) or "~" not in formula:
        raise ModelError(f"formula must be a string like 'y ~ x + (1|patient)', got {formula!r}")
    try:
        data, ledger = split_frame(data, ledger)
    except DeriveError as exc:
        raise ModelError(str(exc)) from None
    if not isinstance(data, pd.DataFrame):
        raise ModelError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if len(data) == 0:
        raise ModelError("data has no rows")
    if family not in FAMILIES:
        raise ModelError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")

    parsed = parse_formula(formula)  # refuses anything outside the grammar, evaluates nothing
    cbind = parsed.cbind
    if cbind is not None and trials is not None:
        raise ModelError("give binomial counts either as cbind(successes, failures) or as trials=")
    if family != BINOMIAL and (cbind is not None or trials is not None):
        raise ModelError(
            f"binomial trials (cbind() or trials=) do not apply to the {family} family; "
            "give the count as the response"
        )

    bars = parse_bars(formula) if parsed.bars else []
    single = _single_intercept(bars)
    if single or not bars:
        group_vars = _group_vars(parsed)
    else:  # for the ledger's count of patients: the coarsest bar as written
        group_vars = list(min(bars, key=lambda b: len(b.factors)).factors)
    used_cols = list(parsed.columns)
    _check_columns(used_cols, data, formula)
    trials_values, trials_name = _trials_input(trials, data)
    offset_values, offset_name = _offset_input(offset, data)

    ledger = Ledger() if ledger is None else ledger.copy()
    extra = [(trials_values, trials_name), (offset_values, offset_name)]
    keep = _complete_rows(data, used_cols, extra, group_vars, ledger)
    rows = np.flatnonzero(keep)
    index = data.index[rows]

    prepared = prepare(parsed, data)
    frame = _prepare_frame(prepared.frame.iloc[rows])
    _check_transforms(frame, prepared.computed, prepared.labels, index)
    dm = _design_matrices(prepared.formula, frame, formula)

    response = parsed.response
    if family == BINOMIAL:
        y, n = _response(data.iloc[rows], cbind, trials_values, rows, response, index)
    else:
        y = _count_response(data.iloc[rows], response, index)
        n = np.ones_like(y)
    X, names = _fixed_effects(dm, len(rows), prepared.labels)
    _check_finite(X, names, index)
    total_offset = _total_offset(prepared.offset, offset_values, rows, index, parsed)

    groups = group_labels = None
    group = None
    random = None
    if bars and not single:
        random = build_structure(bars, data.iloc[rows])
    elif group_vars:
        group = ":".join(group_vars)
        kept = data.iloc[rows]
        labels = (
            kept[group_vars].astype(str).agg(":".join, axis=1)
            if len(group_vars) > 1
            else kept[group_vars[0]]
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
        offset=total_offset,
        family=family,
        data=data.iloc[rows],
        random=random,
        transforms=dict(prepared.state),
        offset_keyword=None
        if offset is None
        else (offset if isinstance(offset, str) else "<array>"),
    )


def multilevel_design(
    formula: str, data: pd.DataFrame | AnalysisFrame, *, trials=None
) -> tuple[Design, ReStructure]:
    """The ``Design`` of ``formula`` and its random-effect structure, for any bars.

    As :func:`build_design`, with the structure built for a single ``(1|group)`` too
    (where ``build_design`` keeps the plain grouping codes).

    Parameters
    ----------
    formula : str
        lme4-style formula with at least one bar term.
    data : pandas.DataFrame or AnalysisFrame
        The rows to model.
    trials : str or numpy.ndarray, optional
        Binomial counts, as in :func:`build_design`.

    Returns
    -------
    (Design, ReStructure)

    Raises
    ------
    ModelError
        As :func:`build_design`, or when the formula has no bar.
    """
    design = build_design(formula, data, trials=trials)
    if design.random is not None:
        return design, design.random
    bars = parse_bars(formula)
    if not bars:
        raise ModelError(f"formula {formula!r} has no random-effect term such as (1|patient)")
    return design, build_structure(bars, design.data)


def model_matrix(formula: str, data: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The fixed-effects matrix of ``formula`` on complete ``data``, for other families.

    The same checked grammar, transforms and column names as ``build_design``, for
    models that are not binomial (patient-level Poisson and negative binomial). The
    response and any bar terms are not used; offsets are refused (pass them to the
    model). ``data`` must have no missing value in the columns the formula uses.

    Parameters
    ----------
    formula : str
        ``response ~ terms``.
    data : pandas.DataFrame
        The rows to model.

    Returns
    -------
    X : numpy.ndarray
        Rows × columns of the fixed effects.
    names : list of str
        Column names, as ``Design.names``.

    Raises
    ------
    ModelError
        For a formula outside the grammar, a missing column or a missing value.
    """
    parsed = parse_formula(formula)
    if parsed.offsets:
        raise ModelError(f"model_matrix: give the offset to the model, not in {formula!r}")
    used = [c for c in parsed.columns if c != parsed.response]
    _check_columns(used, data, formula)
    missing = [c for c in used if data[c].isna().any()]
    if missing:
        raise ModelError(f"model_matrix: missing values in {', '.join(map(repr, missing))}")
    prepared = prepare(parsed, data)
    dm = _design_matrices(prepared.formula, _prepare_frame(prepared.frame), formula)
    X, names = _fixed_effects(dm, len(data), prepared.labels)
    _check_finite(X, names, data.index)
    return X, names


def resolve_offset(design: Design, offset: np.ndarray | None = None) -> np.ndarray | None:
    """The offset an engine uses: ``offset`` if given, else ``design.offset``.

    Parameters
    ----------
    design : Design
        The design being fitted.
    offset : numpy.ndarray, optional
        One number per row of the design; replaces ``design.offset`` when given.

    Returns
    -------
    numpy.ndarray or None
        A float array of the design's length, or ``None`` when there is no offset.

    Raises
    ------
    ModelError
        When the length is wrong or a value is not finite.
    """
    if offset is None:
        offset = design.offset
    if offset is None:
        return None
    arr = np.asarray(offset, dtype=float).reshape(-1)
    if arr.size != design.n_obs:
        raise ModelError(f"offset has {arr.size} values but the design has {design.n_obs} rows")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ModelError(f"offset is not finite in row {i} ({arr[i]})")
    return arr


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


def _single_intercept(bars: list[BarTerm]) -> bool:
    """The random effects are one scalar intercept ``(1|g)`` (or ``(1|a:b)``)."""
    return len(bars) == 1 and bars[0].lhs.replace(" ", "") == "1"


def _group_vars(parsed: Formula) -> list[str]:
    """The variables of the single random-intercept bar; [] without one."""
    bars = parsed.bars
    if not bars:
        return []
    shown = [bar_label(b) for b in bars]

    def parts(node) -> list[str] | None:
        if isinstance(node, Column):
            return [node.name]
        if isinstance(node, Paren):
            return parts(node.inner)
        if isinstance(node, BinOp) and node.op == ":":
            left, right = parts(node.left), parts(node.right)
            return None if left is None or right is None else left + right
        return None

    names = parts(bars[0].group)
    if names is None:
        raise ModelError(
            f"the grouping factor of {shown[0]} must be a column (or a:b of columns); "
            f"nested groups {label(bars[0].group)} are not supported"
        )
    return names


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


def _offset_input(
    offset: str | np.ndarray | None, data: pd.DataFrame
) -> tuple[np.ndarray | None, str]:
    """``offset=`` as a float array aligned with ``data`` (NaN where missing), and its name."""
    if offset is None:
        return None, ""
    if isinstance(offset, str):
        if offset not in data.columns:
            raise ModelError(
                f"offset column {offset!r} is not in the data; "
                f"available columns: {', '.join(map(str, data.columns))}"
            )
        s = data[offset]
        if not (pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)):
            raise ModelError(f"offset column {offset!r} must be numeric, it is {s.dtype}")
        return s.to_numpy(dtype=float, na_value=np.nan), offset
    try:
        values = np.asarray(offset, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise ModelError(f"offset must be numbers, one per row of data: {exc}") from exc
    if values.shape[0] != len(data):
        raise ModelError(f"offset has {values.shape[0]} values but data has {len(data)} rows")
    return values, "offset"


def _total_offset(
    from_formula: np.ndarray | None,
    from_keyword: np.ndarray | None,
    rows: np.ndarray,
    index: pd.Index,
    parsed: Formula,
) -> np.ndarray | None:
    """The offset terms of the formula plus ``offset=`` on the rows kept; finite or error."""
    if from_formula is None and from_keyword is None:
        return None
    total = np.zeros(len(rows))
    if from_formula is not None:
        total = total + from_formula[rows]
    if from_keyword is not None:
        total = total + from_keyword[rows]
    bad = ~np.isfinite(total)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        terms = [f"offset({label(n)})" for n in parsed.offsets]
        if from_keyword is not None:
            terms.append("offset=")
        raise ModelError(
            f"the offset ({' + '.join(terms)}) is not finite in row {index[i]} ({total[i]}); "
            f"{int(bad.sum())} row{'s' if bad.sum() != 1 else ''} affected"
        )
    return total


def _complete_rows(
    data: pd.DataFrame,
    used: list[str],
    extra: list[tuple[np.ndarray | None, str]],
    group_vars: list[str],
    ledger: Ledger,
) -> np.ndarray:
    """Mask of rows with no missing value; the others are counted in ``ledger``.

    ``extra`` holds arrays aligned with ``data`` (trials, offset) and their names.
    """
    na = data[used].isna()
    for values, name in extra:
        if values is None:
            continue
        already = na[name].to_numpy() if name in na else False
        na[name] = already | np.isnan(values)
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


def _design_matrices(formula: str, frame: pd.DataFrame, shown: str):
    """formulae's model matrices for a formula of neutral names (``sy0 + sy1:sy2``).

    The formula holds no calls (``syndesmo.fitting.formula`` evaluated the transforms)
    and formulae gets an empty environment, so it has nothing of the caller's to reach.
    """
    import formulae
    from formulae.environment import Environment

    data = frame if frame.shape[1] else frame.assign(sy=0.0)  # formulae needs a column
    try:
        return formulae.design_matrices(
            formula, data, na_action="error", env=Environment([{}]), extra_namespace={}
        )
    except Exception as exc:  # formulae raises plain ValueError/TypeError/NameError
        raise ModelError(f"cannot build the model matrices for {shown!r}: {exc}") from exc


# --- response ------------------------------------------------------------------------


def _response(
    kept: pd.DataFrame,
    cbind: tuple[str, str] | None,
    trials: np.ndarray | None,
    rows: np.ndarray,
    name: str,
    index: pd.Index,
) -> tuple[np.ndarray, np.ndarray]:
    """Successes and trials as float arrays, checked to be counts 0..trials."""
    if cbind is not None:
        y = _numeric(kept[cbind[0]], cbind[0], index)
        fail = _numeric(kept[cbind[1]], cbind[1], index)
        _check_counts(fail, np.full_like(fail, np.inf), cbind[1], index, what="failures")
        n = y + fail
    else:
        y = _numeric(kept[name], name, index)
        n = np.ones_like(y) if trials is None else trials[rows].astype(float)
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


def _count_response(kept: pd.DataFrame, name: str, index: pd.Index) -> np.ndarray:
    """The response of a count family as floats; whole and >= 0 is the engine's check."""
    return _numeric(kept[name], name, index, need="a count")


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


def _component_names(component, labels: dict[str, str]) -> list[str]:
    """Column names for one factor of a term, in formulae's column order."""
    shown = labels.get(str(component.name), str(component.name))
    is_variable = type(component).__name__ == "Variable"
    if is_variable and component.kind == "categoric" and component.contrast_matrix is not None:
        prefix = "" if component.spans_intercept else "T."
        return [f"{shown}[{prefix}{lvl}]" for lvl in component.contrast_matrix.labels]
    return [labels.get(str(lab), str(lab)) for lab in component.labels]


def _term_names(term, labels: dict[str, str]) -> list[str]:
    if term.kind == "intercept":
        return ["Intercept"]
    parts = [_component_names(c, labels) for c in term.components]
    names = [":".join(p) for p in itertools.product(*parts)]
    if len(names) != len(term.labels):  # formulae changed its labelling
        raise ModelError(f"internal: cannot name the columns of the term {term.labels}")
    return names


def _fixed_effects(dm, n_rows: int, labels: dict[str, str]) -> tuple[np.ndarray, list[str]]:
    if dm.common is None:
        return np.empty((n_rows, 0)), []
    X = np.asarray(dm.common.design_matrix, dtype=float)
    names: list[str] = []
    for term in dm.common.terms.values():
        names.extend(_term_names(term, labels))
    if len(names) != X.shape[1]:
        raise ModelError(
            f"internal: {X.shape[1]} fixed-effect columns but {len(names)} names were built"
        )
    return X, names


def _check_transforms(
    frame: pd.DataFrame, computed: list[str], labels: dict[str, str], index: pd.Index
) -> None:
    """A transform that is not finite on a row used (``log(0)``, ``sqrt(-1)``) is an
    error naming the term and the row, never a row dropped in silence."""
    for name in computed:
        values = frame[name].to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ModelError(
                f"formula term {labels[name]!r} is not finite in row {index[i]} "
                f"({values[i]}); {int(bad.sum())} row{'s' if bad.sum() != 1 else ''} affected"
            )


def _check_finite(X: np.ndarray, names: list[str], index: pd.Index) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = (int(v[0]) for v in np.nonzero(bad))
        raise ModelError(
            f"fixed-effect column {names[j]!r} is not finite in row {index[i]} ({X[i, j]}); "
            f"{int(bad.any(axis=1).sum())} rows affected"
        )
