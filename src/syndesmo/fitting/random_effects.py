"""Random-effect structures from lme4's bar syntax, without dense rows × groups matrices.

A bar term ``(lhs | g)`` says: for every level of the grouping factor ``g`` draw a vector
``b`` of ``q`` random effects, one per column of the model matrix of ``lhs``, with
covariance ``Σ = Λ Λᵀ``; row ``i`` of level ``g`` gets ``z_iᵀ b_g`` added to its linear
predictor. As in lme4, ``Λ`` is lower triangular and parameterised by its ``q(q+1)/2``
elements ``θ`` in column-major order, the diagonal bounded below by 0; the spherical
random effects are ``u = Λ⁻¹ b ~ N(0, I)``.

What is stored per term is its grouping codes (``pandas.factorize``), its ``(n, q)``
model-matrix columns and its name: never a rows × groups matrix.

Syntax (lme4's, expanded as lme4's ``findbars`` does):

* ``(1|patient/vu)`` → ``(1|patient) + (1|vu:patient)``; ``(1|a/b/c)`` → ``a``,
  ``b:a``, ``c:b:a`` — the group names lme4 gives them;
* ``(1|patient:vu)`` → one term whose factor is the interaction of the two columns;
* ``(1 + x|patient)`` (or ``(x|patient)``): correlated intercept and slope;
* ``(1 + x||patient)`` → ``(1|patient) + (0 + x|patient)``, uncorrelated, named
  ``patient`` and ``patient.1`` as lme4 names them;
* crossed factors: ``(1|patient) + (1|reader)``.

Terms are ordered as lme4 orders them (by decreasing number of levels when the
numbers differ), which is also the order of ``θ`` and of :func:`varcorr` records.

The structure then classifies the grouping factors: a **chain** of factors, each nested
in the one before it (each level of the finer factor lies in one level of the coarser
one), plus optionally a few **crossed** factors with few levels (e.g. readers) that the
likelihood keeps in one dense block. Nested designs give block-structured Hessians
whose cost is linear in the number of rows.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from syndesmo.errors import ModelError
from syndesmo.fitting.registry import (
    CROSSED_INTERCEPTS,
    NESTED_INTERCEPTS,
    RANDOM_SLOPES,
    SCALAR_INTERCEPT,
)

# crossed factors with more random effects than this are not kept in one dense block
DENSE_BLOCK_MAX = 64
_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarTerm:
    """One random-effect term after expansion of ``/`` and ``||``.

    ``lhs`` is the model formula of the term's columns (``"1"``, ``"1 + x"``,
    ``"0 + x"``); ``factors`` the data columns whose interaction is the grouping factor;
    ``name`` lme4's name of the group (``"vu:patient"``), made unique later.
    """

    lhs: str
    factors: tuple[str, ...]
    name: str


def bar_spans(rhs: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every top-level parenthesised group of ``rhs`` holding ``|``."""
    spans = []
    depth = 0
    start = None
    for i, ch in enumerate(rhs):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ModelError(f"unbalanced parentheses in {rhs!r}")
            if depth == 0 and start is not None and "|" in rhs[start : i + 1]:
                spans.append((start, i + 1))
    if depth != 0:
        raise ModelError(f"unbalanced parentheses in {rhs!r}")
    return spans


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside parentheses."""
    parts, depth, last = [], 0, 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[last:i])
            i += len(sep)
            last = i
            continue
        i += 1
    parts.append(text[last:])
    return parts


def _lhs_terms(lhs: str) -> tuple[bool, list[str]]:
    """Whether ``lhs`` keeps the intercept, and its other terms (R's rules)."""
    text = lhs.strip()
    intercept = True
    terms = []
    # '-' only as intercept removal ('-1' / '- 1'); split at '+' otherwise
    text = re.sub(r"-\s*1(?![0-9.])", "+0", text)
    if "-" in re.sub(r"\([^()]*\)", "", text):
        raise ModelError(f"'-' is only supported as '-1' in a random-effect term: ({lhs}|...)")
    for part in _split_top(text, "+"):
        t = part.strip()
        if not t:
            continue
        if t == "1":
            intercept = True
        elif t == "0":
            intercept = False
        else:
            terms.append(t)
    return intercept, terms


def _group_terms(expr: str) -> list[tuple[tuple[str, ...], str]]:
    """Expand a grouping expression: ``a/b`` → ``a``, ``b:a`` (lme4's names)."""
    text = re.sub(r"\s+", "", expr)
    if not text:
        raise ModelError("a random-effect term needs a grouping factor after '|'")
    out: list[tuple[tuple[str, ...], str]] = []
    parts = text.split("/")
    prev_vars: tuple[str, ...] = ()
    prev_name = ""
    for part in parts:
        names = part.split(":")
        if not part or not all(re.fullmatch(_NAME, n) for n in names):
            raise ModelError(
                f"grouping factor {expr.strip()!r} must name columns joined by ':' or '/' "
                "(e.g. patient, patient:vu, patient/vu)"
            )
        here = tuple(names)
        vars_ = prev_vars + here
        name = part if not prev_name else f"{part}:{prev_name}"
        out.append((vars_, name))
        prev_vars, prev_name = vars_, name
    return out


def parse_bars(formula: str) -> list[BarTerm]:
    """The random-effect terms of an lme4 formula, expanded, in the order written."""
    if "~" not in formula:
        raise ModelError(f"formula must be a string like 'y ~ x + (1|patient)', got {formula!r}")
    rhs = formula.split("~", 1)[1]
    out: list[BarTerm] = []
    for a, b in bar_spans(rhs):
        inner = rhs[a + 1 : b - 1]
        double = "||" in inner
        pieces = inner.split("||" if double else "|")
        if len(pieces) != 2:
            raise ModelError(f"cannot read the random-effect term ({inner.strip()})")
        lhs, gexpr = pieces
        if not lhs.strip():
            raise ModelError(f"random-effect term ({inner.strip()}) has nothing before '|'")
        groups = _group_terms(gexpr)
        _lhs_terms(lhs)  # raises on what lme4 would not read either
        if double:
            intercept, terms = _lhs_terms(lhs)
            lhss = (["1"] if intercept else []) + [f"0 + {t}" for t in terms]
        else:
            lhss = [lhs.strip()]
        for vars_, name in groups:
            for one in lhss:
                out.append(BarTerm(one, vars_, name))
    return out


def bar_columns(bars: list[BarTerm]) -> list[str]:
    """Data columns named by the grouping factors and plain names in the bars' lhs."""
    cols: list[str] = []
    for bar in bars:
        cols.extend(bar.factors)
        _, terms = _lhs_terms(bar.lhs)
        for t in terms:
            cols.extend(re.findall(_NAME, t))
    seen = []
    for c in cols:
        if c not in seen:
            seen.append(c)
    return seen


# --------------------------------------------------------------------------------------
# Model matrices of the bars and grouping codes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReTerm:
    """One random-effect term: ``q`` columns for every level of its grouping factor.

    ``Z`` holds the term's model-matrix columns per row (``(n, q)``), ``codes`` the
    level of every row (``0..n_levels-1``); ``columns`` are lme4's names of the columns
    (``"(Intercept)"``, ``"x"``, ``"armb"``).
    """

    name: str
    factors: tuple[str, ...]
    columns: tuple[str, ...]
    Z: np.ndarray
    codes: np.ndarray
    levels: np.ndarray

    @property
    def q(self) -> int:
        return len(self.columns)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_theta(self) -> int:
        return self.q * (self.q + 1) // 2


def _lme4_column_name(label: str) -> str:
    """formulae's column label → R's: ``Intercept`` → ``(Intercept)``, ``f[T.b]`` → ``fb``."""
    if label == "Intercept":
        return "(Intercept)"
    return re.sub(r"\[(?:T\.)?([^\]]*)\]", r"\1", label)


def term_matrix(lhs: str, frame: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    """Model matrix ``(n, q)`` and lme4 column names of a bar's left-hand side."""
    intercept, terms = _lhs_terms(lhs)
    n = len(frame)
    if not terms:
        if not intercept:
            raise ModelError(f"random-effect term ({lhs}|...) has no columns")
        return np.ones((n, 1)), ("(Intercept)",)
    import formulae
    from formulae.environment import Environment

    # a formula is data: slopes are columns (categorical ones as C(x)), never code
    for term in terms:
        name = term[2:-1] if term.startswith("C(") and term.endswith(")") else term
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) or name not in frame.columns:
            raise ModelError(
                f"random-effect term ({lhs}|...): {term!r} must be a column of the data "
                "(or C(column)); transforms are not taken in random-effect terms"
            )
    text = ("1 + " if intercept else "0 + ") + " + ".join(terms)
    try:
        dm = formulae.design_matrices(
            text, frame, na_action="error", env=Environment([{}]), extra_namespace={}
        )
    except Exception as exc:  # formulae raises several exception types
        raise ModelError(f"cannot build the random-effect columns of ({lhs}|...): {exc}") from exc
    Z = np.asarray(dm.common.design_matrix, dtype=float)
    names: list[str] = []
    for term in dm.common.terms.values():
        names.extend(_lme4_column_name(str(lab)) for lab in term.labels)
    if len(names) != Z.shape[1]:
        raise ModelError(
            f"internal: {Z.shape[1]} random-effect columns but {len(names)} names in ({lhs}|...)"
        )
    if not np.all(np.isfinite(Z)):
        raise ModelError(f"random-effect columns of ({lhs}|...) are not finite in some rows")
    return Z, tuple(names)


def grouping_codes(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes ``0..G-1`` (sorted levels) and labels of the interaction of columns."""
    if len(factors) == 1:
        codes, uniques = pd.factorize(frame[factors[0]], sort=True)
        return codes.astype(np.int64), np.asarray(uniques)
    parts = [pd.factorize(frame[f], sort=True) for f in factors]
    key = np.zeros(len(frame), dtype=np.int64)
    for c, u in parts:
        key = key * max(1, len(u)) + c
    codes, ukey = pd.factorize(key, sort=True)
    labels = []
    for k in np.asarray(ukey):
        idx = []
        for _, u in reversed(parts):
            idx.append(k % max(1, len(u)))
            k //= max(1, len(u))
        idx.reverse()
        labels.append(":".join(str(u[i]) for (_, u), i in zip(parts, idx, strict=True)))
    return codes.astype(np.int64), np.asarray(labels, dtype=object)


def _lme4_order(terms: list[ReTerm]) -> list[ReTerm]:
    """lme4's order: if the numbers of levels are not non-increasing, ``rev(order(nl))``."""
    nl = np.array([t.n_levels for t in terms])
    if nl.size > 1 and np.any(np.diff(nl) > 0):
        order = np.argsort(nl, kind="stable")[::-1]
        return [terms[i] for i in order]
    return terms


def _unique_names(names: list[str]) -> list[str]:
    """R's ``make.unique``: a repeated name gets ``.1``, ``.2``, … in order."""
    seen: dict[str, int] = {}
    out = []
    taken = set(names)
    for n in names:
        if n not in seen:
            seen[n] = 0
            out.append(n)
            continue
        k = seen[n]
        while True:
            k += 1
            cand = f"{n}.{k}"
            if cand not in taken:
                break
        seen[n] = k
        taken.add(cand)
        out.append(cand)
    return out


# --------------------------------------------------------------------------------------
# The structure
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    """A distinct partition of the rows, with the terms grouped by it."""

    codes: np.ndarray  # (n,)
    n_levels: int
    terms: tuple[int, ...]  # indices into ReStructure.terms

    @property
    def label(self) -> str:
        return f"factor with {self.n_levels} levels"


def nested_in(fine: np.ndarray, n_fine: int, coarse: np.ndarray, n_coarse: int) -> bool:
    """Whether every level of ``fine`` lies within one level of ``coarse``."""
    pairs = np.unique(fine.astype(np.int64) * n_coarse + coarse)
    return pairs.size == n_fine


def parent_codes(fine: np.ndarray, n_fine: int, coarse: np.ndarray) -> np.ndarray:
    """For a factor nested in ``coarse``: the coarse level of every fine level."""
    out = np.empty(n_fine, dtype=np.int64)
    out[fine] = coarse
    return out


@dataclass(frozen=True)
class ReStructure:
    """All random-effect terms of a model and how their grouping factors relate.

    ``chain`` lists factors (indices into ``factors``) from the coarsest to the finest,
    each nested in the one before; ``crossed`` the factors outside the chain, whose
    random effects (at most ``DENSE_BLOCK_MAX`` of them) form one dense block.
    ``theta`` is laid out term by term, each term's lower-triangular factor in
    column-major order (lme4's ``getME(m, "theta")``).
    """

    terms: tuple[ReTerm, ...]
    factors: tuple[Factor, ...]
    chain: tuple[int, ...]
    crossed: tuple[int, ...]
    n_rows: int
    theta_index: tuple[tuple[int, int, int], ...] = field(default=())  # (term, row, col)

    # --- θ -------------------------------------------------------------------------

    @property
    def n_theta(self) -> int:
        return sum(t.n_theta for t in self.terms)

    @property
    def nested(self) -> bool:
        """Every factor is in the nesting chain (no crossed factors)."""
        return not self.crossed

    @property
    def scalar(self) -> bool:
        """Every term is a scalar random intercept-like term (``q = 1``)."""
        return all(t.q == 1 for t in self.terms)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of random effects in the structure (``STRUCTURE_KINDS``)."""
        out = []
        if len(self.terms) == 1 and self.terms[0].columns == ("(Intercept)",):
            out.append(SCALAR_INTERCEPT)
        if len(self.chain) > 1:
            out.append(NESTED_INTERCEPTS)
        if any(t.columns != ("(Intercept)",) for t in self.terms):
            out.append(RANDOM_SLOPES)
        if self.crossed:
            out.append(CROSSED_INTERCEPTS)
        return tuple(out)

    def theta_names(self) -> list[str]:
        """lme4's names of θ: ``grp.(Intercept)``, ``grp.x.(Intercept)``, ``grp.x``."""
        out = []
        for k, r, c in self.theta_index:
            t = self.terms[k]
            out.append(
                f"{t.name}.{t.columns[r]}" if r == c else f"{t.name}.{t.columns[r]}.{t.columns[c]}"
            )
        return out

    def theta_start(self) -> np.ndarray:
        """lme4's start: 1 on the diagonals, 0 below."""
        return np.array([1.0 if r == c else 0.0 for _, r, c in self.theta_index])

    def theta_lower(self) -> np.ndarray:
        """Lower bounds: 0 for diagonal elements, −∞ for the others."""
        return np.array([0.0 if r == c else -np.inf for _, r, c in self.theta_index])

    def column_signs(self, theta: np.ndarray) -> np.ndarray:
        """±1 per θ element: flipping the columns of ``Λ`` whose diagonal is negative
        (which leaves ``ΛΛᵀ`` unchanged) puts ``signs * theta`` in lme4's form."""
        sign = np.ones(len(self.theta_index))
        col = {}
        for j, (k, r, c) in enumerate(self.theta_index):
            if r == c:
                col[(k, c)] = -1.0 if theta[j] < 0 else 1.0
        for j, (k, _, c) in enumerate(self.theta_index):
            sign[j] = col[(k, c)]
        return sign

    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        """Relative covariance factors ``Λ_k`` of the terms; ``theta`` is ``(n_theta,)``
        or ``(B, n_theta)`` (then each ``Λ_k`` is ``(B, q, q)``)."""
        theta = np.asarray(theta, dtype=float)
        batch = theta.shape[:-1]
        out = [np.zeros((*batch, t.q, t.q)) for t in self.terms]
        for j, (k, r, c) in enumerate(self.theta_index):
            out[k][..., r, c] = theta[..., j]
        return out

    def varcorr(self, theta: np.ndarray) -> list[tuple[str, str, str | None, float, float]]:
        """lme4's ``as.data.frame(VarCorr(m))`` rows: (grp, var1, var2, vcov, sdcor).

        Per term: the variances (``var2 = None``, ``sdcor`` the SD), then the
        covariances in lme4's order ((1,2), (1,3), …, (2,3), …; ``sdcor`` the correlation).
        """
        rows = []
        for t, lam in zip(self.terms, self.lambdas(theta), strict=True):
            cov = lam @ lam.T
            sd = np.sqrt(np.diag(cov))
            for a in range(t.q):
                rows.append((t.name, t.columns[a], None, float(cov[a, a]), float(sd[a])))
            for a, b in itertools.combinations(range(t.q), 2):
                den = sd[a] * sd[b]
                corr = float(cov[a, b] / den) if den > 0 else float("nan")
                rows.append((t.name, t.columns[a], t.columns[b], float(cov[a, b]), corr))
        return rows

    def varcorr_frame(self, theta: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(self.varcorr(theta), columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def take(self, rows: np.ndarray) -> ReStructure:
        """The same structure on a subset of the rows (every level must keep a row)."""
        terms = tuple(
            ReTerm(t.name, t.factors, t.columns, t.Z[rows], t.codes[rows], t.levels)
            for t in self.terms
        )
        factors = tuple(Factor(f.codes[rows], f.n_levels, f.terms) for f in self.factors)
        return ReStructure(terms, factors, self.chain, self.crossed, len(rows), self.theta_index)

    def n_groups(self) -> dict[str, int]:
        """Number of levels of every term's grouping factor, by term name."""
        return {t.name: t.n_levels for t in self.terms}

    def describe(self) -> str:
        """One line per factor: its terms and whether it is nested or crossed."""
        lines = []
        for pos, f in enumerate(self.chain):
            fac = self.factors[f]
            names = ", ".join(self.terms[k].name for k in fac.terms)
            where = "top" if pos == 0 else "nested in the factor above"
            lines.append(f"{names}: {fac.n_levels} levels ({where})")
        for f in self.crossed:
            fac = self.factors[f]
            names = ", ".join(self.terms[k].name for k in fac.terms)
            lines.append(f"{names}: {fac.n_levels} levels (crossed)")
        return "\n".join(lines)


def _classify(
    factors: list[Factor], terms: list[ReTerm]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The nesting chain and the crossed factors (see :class:`ReStructure`).

    Among all subsets of factors that form a chain under nesting, the one whose
    complement (the crossed factors) has the fewest random effects; ties go to the
    longer chain. Raises ModelError when the crossed factors would need more than
    ``DENSE_BLOCK_MAX`` random effects in their dense block.
    """
    m = len(factors)
    nest = np.zeros((m, m), dtype=bool)  # nest[a, b]: a nested in b
    for a, b in itertools.permutations(range(m), 2):
        fa, fb = factors[a], factors[b]
        nest[a, b] = nested_in(fa.codes, fa.n_levels, fb.codes, fb.n_levels)

    def dim(f: int) -> int:
        return factors[f].n_levels * sum(terms[k].q for k in factors[f].terms)

    best = None
    for size in range(m, 0, -1):
        for subset in itertools.combinations(range(m), size):
            order = sorted(subset, key=lambda f: factors[f].n_levels)
            if not all(nest[order[i + 1], order[i]] for i in range(len(order) - 1)):
                continue
            rest = tuple(f for f in range(m) if f not in subset)
            cost = sum(dim(f) for f in rest)
            key = (cost, -size)
            if best is None or key < best[0]:
                best = (key, tuple(order), rest)
    assert best is not None  # a single factor is always a chain
    (cost, _), chain, rest = best
    if cost > DENSE_BLOCK_MAX:
        names = [", ".join(terms[k].name for k in factors[f].terms) for f in rest]
        raise ModelError(
            "crossed random effects with many levels are not supported yet: "
            f"{'; '.join(names)} would need {cost} random effects in one dense block "
            f"(at most {DENSE_BLOCK_MAX}); nested factors and crossed factors with few "
            "levels (such as readers) are"
        )
    return chain, rest


def build_structure(bars: list[BarTerm], frame: pd.DataFrame) -> ReStructure:
    """Grouping codes, columns and nesting of ``bars`` evaluated on ``frame``.

    ``frame`` must hold exactly the rows of the model (no missing values in the
    columns the bars use).
    """
    if not bars:
        raise ModelError("the formula has no random-effect term such as (1|patient)")
    n = len(frame)
    terms: list[ReTerm] = []
    for bar in bars:
        missing = [c for c in bar.factors if c not in frame.columns]
        if missing:
            raise ModelError(
                f"grouping column(s) {', '.join(map(repr, missing))} of ({bar.lhs}|{bar.name}) "
                "are not in the data"
            )
        codes, levels = grouping_codes(frame, bar.factors)
        Z, columns = term_matrix(bar.lhs, frame)
        terms.append(ReTerm(bar.name, bar.factors, columns, Z, codes, levels))
    terms = _lme4_order(terms)
    names = _unique_names([t.name for t in terms])
    terms = [
        ReTerm(nm, t.factors, t.columns, t.Z, t.codes, t.levels)
        for nm, t in zip(names, terms, strict=True)
    ]
    for t in terms:
        if t.n_levels < 2:
            raise ModelError(
                f"the grouping factor of '{t.name}' has a single level: a random effect "
                "needs at least two groups (lme4 refuses this too)"
            )
        if t.n_levels == n and t.q > 1:
            raise ModelError(
                f"'{t.name}' has one level per row: a vector of {t.q} random effects per row "
                "is not identifiable"
            )

    # distinct partitions of the rows
    factors: list[Factor] = []
    members: list[list[int]] = []
    for k, t in enumerate(terms):
        for j, f in enumerate(factors):
            if f.n_levels == t.n_levels and nested_in(t.codes, t.n_levels, f.codes, f.n_levels):
                members[j].append(k)
                break
        else:
            factors.append(Factor(t.codes, t.n_levels, ()))
            members.append([k])
    factors = [
        Factor(f.codes, f.n_levels, tuple(mm)) for f, mm in zip(factors, members, strict=True)
    ]
    chain, crossed = _classify(factors, terms)
    theta_index = tuple(
        (k, r, c) for k, t in enumerate(terms) for c in range(t.q) for r in range(c, t.q)
    )
    return ReStructure(tuple(terms), tuple(factors), chain, crossed, n, theta_index)


def structure_from_formula(formula: str, frame: pd.DataFrame) -> ReStructure:
    """Parse the bars of ``formula`` and build their structure on ``frame``."""
    return build_structure(parse_bars(formula), frame)


# --------------------------------------------------------------------------------------
# lme4's names of grouping factors and levels (ranef tables)
# --------------------------------------------------------------------------------------


def lme4_grpvar(name: str, names: list[str]) -> str:
    """lme4's grouping-factor name of a term: ``patient.1`` (from ``||``) → ``patient``.

    Parameters
    ----------
    name : str
        The term's name in the structure.
    names : list of str
        Every term's name.

    Returns
    -------
    str
    """
    base = re.sub(r"\.\d+$", "", name)
    return base if base != name and base in names else name


def lme4_level_labels(term: ReTerm) -> np.ndarray:
    """Level labels as lme4 writes them: a level of ``vu:patient`` as ``3:P01``.

    Parameters
    ----------
    term : ReTerm
        A term of a structure.

    Returns
    -------
    numpy.ndarray
        One label (str) per level, in the term's level order.
    """
    levels = np.asarray(term.levels, dtype=object)
    parts = term.name.split(":")
    if len(term.factors) < 2 or sorted(parts) != sorted(term.factors):
        return levels.astype(str)
    order = [term.factors.index(p) for p in parts]
    split = [str(lv).split(":") for lv in levels]
    if any(len(s) != len(term.factors) for s in split):
        return levels.astype(str)
    return np.array([":".join(s[i] for i in order) for s in split], dtype=object)
