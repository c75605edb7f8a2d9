"""Inter-reader reliability of imaging scores: ICC, limits of agreement, SDC, kappa.

Spinal MRI and radiographs are usually read by two (or more) blinded readers, and a
report gives the readers' agreement before any model (see ``DOMAIN.md``, "Reader
reliability"). Two entry points:

* :func:`icc`: the six intraclass correlation coefficients of Shrout & Fleiss
  (1979) from a long table of ratings (target × rater), with their F tests and
  confidence intervals; named as R's ``psych::ICC`` and pingouin name them;
* :func:`reliability`: for a ``VUPanel`` with a ``reader`` column, the readers'
  agreement on the patient totals of the ASspiMRI-a and the mSASSS (status at each
  visit, and change from the first to the last visit) — ICC(2,1) and ICC(3,1),
  Bland–Altman limits of agreement and the smallest detectable change — and on
  the binary status of each VU (inflamed; syndesmophyte present) by Cohen's and
  Fleiss' kappa.

References
----------
* Shrout PE, Fleiss JL. Intraclass correlations: uses in assessing rater
  reliability. Psychol Bull 1979;86:420–428.
* McGraw KO, Wong SP. Forming inferences about some intraclass correlation
  coefficients. Psychol Methods 1996;1:30–46 (the confidence limits of ICC(A,1)
  and ICC(A,k), with Satterthwaite's degrees of freedom).
* Bland JM, Altman DG. Statistical methods for assessing agreement between two
  methods of clinical measurement. Lancet 1986;1:307–310.
* Bruynesteyn K, Boers M, Kostense P, van der Linden S, van der Heijde D. Deciding
  on progression of joint damage in paired films of individual patients: smallest
  detectable difference or change. Ann Rheum Dis 2005;64:179–182.
* Cohen J. A coefficient of agreement for nominal scales. Educ Psychol Meas
  1960;20:37–46; Fleiss JL, Cohen J, Everitt BS. Large sample standard errors of
  kappa and weighted kappa. Psychol Bull 1969;72:323–327.
* Fleiss JL. Measuring nominal scale agreement among many raters. Psychol Bull
  1971;76:378–382.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from syndesmo.errors import DeriveError
from syndesmo.ledger import Ledger

# ---------------------------------------------------------------------------
# ICC from the two-way ANOVA

#: The six ICC types in the order of psych::ICC and pingouin.
ICC_TYPES: tuple[str, ...] = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")

#: Each type in words (Shrout & Fleiss 1979 notation, McGraw & Wong 1996 model and
#: definition), for tables a reader of a manuscript understands without the code.
ICC_DESCRIPTIONS: dict[str, str] = {
    "ICC1": "ICC(1,1): one-way random effects, absolute agreement, single reader",
    "ICC2": "ICC(2,1): two-way random effects, absolute agreement, single reader",
    "ICC3": "ICC(3,1): two-way mixed effects, consistency, single reader",
    "ICC1k": "ICC(1,k): one-way random effects, absolute agreement, mean of k readers",
    "ICC2k": "ICC(2,k): two-way random effects, absolute agreement, mean of k readers",
    "ICC3k": "ICC(3,k): two-way mixed effects, consistency, mean of k readers",
}

ICC_COLUMNS: tuple[str, ...] = (
    "type",
    "description",
    "icc",
    "F",
    "df1",
    "df2",
    "p",
    "ci_low",
    "ci_high",
)


@dataclass(frozen=True)
class MeanSquares:
    """Mean squares of the two-way ANOVA of an n targets × k raters table."""

    n: int
    k: int
    msr: float  # between targets (rows), df n - 1
    msc: float  # between raters (columns), df k - 1
    mse: float  # residual, df (n - 1)(k - 1)
    msw: float  # within targets (raters + residual pooled), df n(k - 1)


def mean_squares(y: np.ndarray) -> MeanSquares:
    """The two-way ANOVA mean squares of a complete n × k table of ratings.

    Parameters
    ----------
    y : numpy.ndarray
        Ratings, one row per target and one column per rater, no missing values.

    Returns
    -------
    MeanSquares
        ``msr`` (targets), ``msc`` (raters), ``mse`` (residual) and ``msw`` (within
        targets: the raters' and the residual sums of squares pooled, as in the
        one-way model of ICC(1)).
    """
    y = np.asarray(y, dtype=float)
    n, k = y.shape
    grand = y.mean()
    row = y.mean(axis=1)
    col = y.mean(axis=0)
    ssr = k * float(np.sum((row - grand) ** 2))
    ssc = n * float(np.sum((col - grand) ** 2))
    # residuals directly (not SST − SSR − SSC), to keep precision when they are small
    sse = float(np.sum((y - row[:, None] - col[None, :] + grand) ** 2))
    return MeanSquares(
        n=n,
        k=k,
        msr=ssr / (n - 1),
        msc=ssc / (k - 1),
        mse=sse / ((n - 1) * (k - 1)),
        msw=(ssc + sse) / (n * (k - 1)),
    )


def _ratio(num: float, den: float) -> float:
    """``num / den`` with ±inf for a zero denominator and NaN for 0/0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(num) / np.float64(den))


def icc_table(ms: MeanSquares, level: float = 0.95) -> pd.DataFrame:
    """The six Shrout–Fleiss ICCs with F tests and confidence limits from mean squares.

    Point estimates are those of Shrout & Fleiss (1979), Table 1 (ICC(1,1), ICC(2,1),
    ICC(3,1)) and their "mean of k" forms (ICC(1,k), ICC(2,k), ICC(3,k)). The F test
    of ICC(1) is MSR/MSW on (n − 1, n(k − 1)) degrees of freedom, that of ICC(2) and
    ICC(3) MSR/MSE on (n − 1, (n − 1)(k − 1)). Confidence limits of ICC(1) and ICC(3)
    are the exact F-based limits of Shrout & Fleiss (1979); those of ICC(2) (McGraw &
    Wong's ICC(A,1)) use Satterthwaite's approximate degrees of freedom as in McGraw &
    Wong (1996), Table 7, and ICC(2,k)'s are the Spearman–Brown step-up of ICC(2,1)'s
    (algebraically McGraw & Wong's limits of ICC(A,k)).

    Parameters
    ----------
    ms : MeanSquares
        From :func:`mean_squares`.
    level : float
        Confidence level of the intervals, in (0, 1).

    Returns
    -------
    pandas.DataFrame
        One row per type (``ICC_TYPES``) with columns ``ICC_COLUMNS``.
    """
    n, k = ms.n, ms.k
    msr, msc, mse, msw = ms.msr, ms.msc, ms.mse, ms.msw
    alpha = 1.0 - level
    q = 1.0 - alpha / 2.0
    df_r = n - 1
    df_w = n * (k - 1)
    df_e = (n - 1) * (k - 1)

    with np.errstate(divide="ignore", invalid="ignore"):
        icc1 = _ratio(msr - msw, msr + (k - 1) * msw)
        icc2 = _ratio(msr - mse, msr + (k - 1) * mse + k * (msc - mse) / n)
        icc3 = _ratio(msr - mse, msr + (k - 1) * mse)
        icc1k = _ratio(msr - msw, msr)
        icc2k = _ratio(msr - mse, msr + (msc - mse) / n)
        icc3k = _ratio(msr - mse, msr)

        f1 = _ratio(msr, msw)
        f3 = _ratio(msr, mse)
        p1 = float(stats.f.sf(f1, df_r, df_w))
        p3 = float(stats.f.sf(f3, df_r, df_e))

        # ICC(1) and ICC(3): exact limits from the F distribution (Shrout & Fleiss 1979)
        f1_lo = f1 / stats.f.ppf(q, df_r, df_w)
        f1_hi = f1 * stats.f.ppf(q, df_w, df_r)
        f3_lo = f3 / stats.f.ppf(q, df_r, df_e)
        f3_hi = f3 * stats.f.ppf(q, df_e, df_r)

        # an infinite F (no residual variation: readers agree up to a constant) has
        # the limiting value 1 for its interval bounds
        def single(f: float) -> float:
            return 1.0 if f == np.inf else float((f - 1.0) / (f + k - 1.0))

        def average(f: float) -> float:
            return 1.0 if f == np.inf else float(1.0 - 1.0 / f)

        # ICC(2) = McGraw & Wong's ICC(A,1): Satterthwaite degrees of freedom of
        # a·MSC + b·MSE, with a, b at the point estimate (McGraw & Wong 1996, Table 7)
        a = np.float64(k * icc2) / np.float64(n * (1.0 - icc2))
        b = 1.0 + np.float64(k * icc2 * (n - 1)) / np.float64(n * (1.0 - icc2))
        v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / df_e)
        if icc2 == 1.0:  # perfect absolute agreement (MSE = MSC = 0)
            l2 = u2 = 1.0
        elif np.isfinite(v) and v > 0:
            fs_hi = stats.f.ppf(q, df_r, v)
            fs_lo = stats.f.ppf(q, v, df_r)
            denom = k * msc + (k * n - k - n) * mse
            l2 = float(n * (msr - fs_hi * mse) / (fs_hi * denom + n * msr))
            u2 = float(n * (fs_lo * msr - mse) / (denom + n * fs_lo * msr))
        else:
            l2 = u2 = float("nan")

        def step_up(r: float) -> float:
            return float(r * k / (1.0 + r * (k - 1)))

        rows = [
            ("ICC1", icc1, f1, df_r, df_w, p1, single(f1_lo), single(f1_hi)),
            ("ICC2", icc2, f3, df_r, df_e, p3, l2, u2),
            ("ICC3", icc3, f3, df_r, df_e, p3, single(f3_lo), single(f3_hi)),
            ("ICC1k", icc1k, f1, df_r, df_w, p1, average(f1_lo), average(f1_hi)),
            ("ICC2k", icc2k, f3, df_r, df_e, p3, step_up(l2), step_up(u2)),
            ("ICC3k", icc3k, f3, df_r, df_e, p3, average(f3_lo), average(f3_hi)),
        ]
    out = pd.DataFrame(
        [
            {
                "type": t,
                "description": ICC_DESCRIPTIONS[t],
                "icc": est,
                "F": f,
                "df1": int(d1),
                "df2": int(d2),
                "p": p,
                "ci_low": lo,
                "ci_high": hi,
            }
            for t, est, f, d1, d2, p, lo, hi in rows
        ],
        columns=list(ICC_COLUMNS),
    )
    return out


def _check_level(level: Any) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.number)):
        raise DeriveError(f"level must be a number in (0, 1), got {level!r}")
    if not 0.0 < float(level) < 1.0:
        raise DeriveError(f"level must be a confidence level in (0, 1), got {level!r}")
    return float(level)


def rating_matrix(
    data: pd.DataFrame, target: str, rater: str, rating: str
) -> tuple[pd.DataFrame, list, list]:
    """Ratings of a long table as a targets × raters table, and who is incomplete.

    Parameters
    ----------
    data : pandas.DataFrame
        One row per target × rater.
    target, rater, rating : str
        Column names.

    Returns
    -------
    wide : pandas.DataFrame
        Targets (rows, in order of first appearance) × raters (columns, sorted),
        ``NaN`` where a rater has no rating of a target.
    complete : list
        Targets rated by every rater.
    incomplete : list
        Targets that lack a rating from at least one rater.

    Raises
    ------
    DeriveError
        A column is missing, a rating is not numeric, or a target has two ratings by
        the same rater.
    """
    if not isinstance(data, pd.DataFrame):
        raise DeriveError(f"icc needs a pandas DataFrame of ratings, got {type(data).__name__}")
    missing = [c for c in (target, rater, rating) if c not in data.columns]
    if missing:
        raise DeriveError(
            f"icc: column(s) {missing} not in the data; columns are {list(map(str, data.columns))}"
        )
    if not pd.api.types.is_numeric_dtype(data[rating]) or pd.api.types.is_bool_dtype(data[rating]):
        raise DeriveError(f"icc: ratings in column {rating!r} must be numbers")
    keys = data[[target, rater]]
    if keys.isna().any().any():
        raise DeriveError(f"icc: missing values in the {target!r} or {rater!r} column")
    dup = keys.duplicated(keep=False)
    if dup.any():
        first = data.loc[dup, [target, rater]].iloc[0].tolist()
        raise DeriveError(
            f"icc: {int(dup.sum())} rows repeat a {target} × {rater} pair "
            f"(e.g. {target} {first[0]!r}, {rater} {first[1]!r}); give one rating per pair"
        )
    wide = data.pivot(index=target, columns=rater, values=rating)
    order = pd.unique(data[target])
    wide = wide.reindex(order)
    try:
        wide = wide[sorted(wide.columns)]
    except TypeError:
        wide = wide[sorted(wide.columns, key=str)]
    wide = wide.astype(float)
    has_all = wide.notna().all(axis=1).to_numpy()
    complete = wide.index[has_all].tolist()
    incomplete = wide.index[~has_all].tolist()
    return wide, complete, incomplete


@dataclass(frozen=True)
class ICCResult:
    """The intraclass correlations of :func:`icc` with what they were computed on.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per ICC type: ``type, description, icc, F, df1, df2, p, ci_low, ci_high``.
    n_targets : int
        Targets rated by every rater, the ones the ICCs use.
    raters : list
        The raters, in order.
    excluded_targets : list
        Targets left out because a rating was missing (listwise deletion).
    ledger : Ledger
        The same exclusions as a ledger entry.
    level : float
        Confidence level of the intervals.
    mean_squares : MeanSquares
        The two-way ANOVA the ICCs come from.
    """

    table: pd.DataFrame
    n_targets: int
    raters: list
    excluded_targets: list
    ledger: Ledger
    level: float
    mean_squares: MeanSquares

    @property
    def n_raters(self) -> int:
        """Number of raters."""
        return len(self.raters)

    def __repr__(self) -> str:
        left = f"; {len(self.excluded_targets)} targets left out" if self.excluded_targets else ""
        return (
            f"ICC of {self.n_targets} targets × {self.n_raters} raters{left}\n"
            + self.table.to_string(index=False)
        )


def icc(
    data: pd.DataFrame,
    target: str = "patient",
    rater: str = "reader",
    rating: str = "score",
    level: float = 0.95,
) -> ICCResult:
    """The six Shrout–Fleiss intraclass correlations with F tests and confidence limits.

    Computed from the mean squares of the two-way ANOVA of targets × raters (numpy;
    formulas of Shrout & Fleiss 1979 and McGraw & Wong 1996, see
    :func:`icc_table`). Types are named as R's ``psych::ICC`` and pingouin name them:

    ============  =================================================================
    ``ICC1``      ICC(1,1): one-way random effects, absolute agreement, single reader
    ``ICC2``      ICC(2,1): two-way random, absolute agreement, single reader
                  (McGraw & Wong's ICC(A,1))
    ``ICC3``      ICC(3,1): two-way mixed, consistency, single reader (ICC(C,1))
    ``ICC1k``     ICC(1,k): as ICC1, for the mean of the k readers
    ``ICC2k``     ICC(2,k): as ICC2, for the mean of the k readers (ICC(A,k))
    ``ICC3k``     ICC(3,k): as ICC3, for the mean of the k readers (ICC(C,k))
    ============  =================================================================

    **Unbalanced data.** The ANOVA estimators need every target rated by every
    rater. A target that lacks a rating (a missing row or a ``NaN`` rating) is left
    out entirely — listwise deletion, the same as ``psych::ICC(na.omit(x),
    lmer = FALSE)``, which is what psych asks for when it finds missing data
    without ``lmer``; pingouin refuses unbalanced data. The targets left out are
    listed in ``result.excluded_targets`` and counted in ``result.ledger``.
    Note that psych's *default*
    (``lmer = TRUE``) instead fits REML variance components to all available
    ratings, which gives different numbers on unbalanced data; on balanced data
    with no variance component at zero the two agree.

    Parameters
    ----------
    data : pandas.DataFrame
        Long table: one row per target × rater.
    target : str
        Column naming what is rated (e.g. the patient).
    rater : str
        Column naming who rated it (e.g. the reader).
    rating : str
        Column holding the numeric rating; ``NaN`` means not rated.
    level : float
        Confidence level of the intervals (default 0.95).

    Returns
    -------
    ICCResult
        ``table``: six rows (``ICC1``, ``ICC2``, ``ICC3``, ``ICC1k``, ``ICC2k``,
        ``ICC3k``) with columns ``type, description, icc, F, df1, df2, p, ci_low,
        ci_high`` (psych's ``$results``); beside it ``n_targets`` (used), ``raters``,
        ``excluded_targets``, ``ledger``, ``level`` and the ANOVA ``mean_squares``.

    Raises
    ------
    DeriveError
        A column is missing, ratings are not numeric, a target × rater pair repeats,
        fewer than two raters, or fewer than two targets rated by every rater.

    Examples
    --------
    >>> import pandas as pd, syndesmo as sy
    >>> long = pd.DataFrame({"patient": [1, 1, 2, 2, 3, 3], "reader": [1, 2] * 3,
    ...                      "score": [4.0, 5.0, 10.0, 9.0, 1.0, 2.0]})
    >>> round(float(sy.icc(long).table.set_index("type").loc["ICC2", "icc"]), 3)
    0.97
    """
    level = _check_level(level)
    wide, complete, incomplete = rating_matrix(data, target, rater, rating)
    raters = wide.columns.tolist()
    if len(raters) < 2:
        raise DeriveError(
            f"icc needs ratings by two or more raters in column {rater!r}; found {raters}"
        )
    if len(complete) < 2:
        raise DeriveError(
            f"icc needs two or more targets rated by every rater ({len(raters)} raters); "
            f"{len(complete)} of {len(wide)} targets are complete"
        )
    ms = mean_squares(wide.loc[complete].to_numpy())
    out = icc_table(ms, level)
    ledger = Ledger()
    ledger.add(
        "icc",
        f"{target} not rated by every {rater} (listwise deletion)",
        len(incomplete),
        len(incomplete),
    )
    return ICCResult(
        table=out,
        n_targets=len(complete),
        raters=raters,
        excluded_targets=incomplete,
        ledger=ledger,
        level=level,
        mean_squares=ms,
    )


# ---------------------------------------------------------------------------
# agreement of readers on a VU panel

#: Names of the two scores in the tables.
MRI_TOTAL = "ASspiMRI-a total"
MSASSS_TOTAL = "mSASSS total"
#: The ICC types ``reliability`` reports (the ones imaging papers report).
RELIABILITY_TYPES: tuple[str, ...] = ("ICC2", "ICC3")
#: Confidence levels of the smallest detectable change.
SDC_LEVELS: tuple[float, ...] = (0.95, 0.80)

ICC_TABLE_COLUMNS: tuple[str, ...] = (
    "score",
    "measure",
    "readers",
    "n_readers",
    "n_patients",
    "type",
    "description",
    "icc",
    "ci_low",
    "ci_high",
    "F",
    "df1",
    "df2",
    "p",
)
AGREEMENT_COLUMNS: tuple[str, ...] = (
    "score",
    "measure",
    "readers",
    "n_readers",
    "n_patients",
    "mean_difference",
    "sd_difference",
    "loa_low",
    "loa_high",
    "sdc_95_one_reader",
    "sdc_95_mean_of_readers",
    "sdc_80_one_reader",
    "sdc_80_mean_of_readers",
)
KAPPA_COLUMNS: tuple[str, ...] = (
    "status",
    "week",
    "readers",
    "n_readers",
    "method",
    "n_vus",
    "n_patients",
    "pct_positive",
    "pct_agreement",
    "kappa",
    "se",
    "ci_low",
    "ci_high",
)
DIFFERENCE_COLUMNS: tuple[str, ...] = (
    "score",
    "measure",
    "readers",
    "reader_a",
    "reader_b",
    "patient",
    "score_a",
    "score_b",
    "mean",
    "difference",
)


@dataclass
class ReliabilityResult:
    """The readers' agreement on a VU panel, as tables for a manuscript.

    Attributes
    ----------
    icc : pandas.DataFrame
        ICC(2,1) (absolute agreement) and ICC(3,1) (consistency) of the patient
        totals, per score, measure (status at a visit, change) and reader set;
        columns ``ICC_TABLE_COLUMNS``.
    agreement : pandas.DataFrame
        Bland–Altman mean difference, SD of the differences, 95% limits of
        agreement and the smallest detectable change (change measures);
        columns ``AGREEMENT_COLUMNS``.
    kappa : pandas.DataFrame
        Cohen's kappa per reader pair (and Fleiss' kappa for all readers when
        there are more than two) for the binary status of each VU;
        columns ``KAPPA_COLUMNS``.
    differences : pandas.DataFrame
        Per patient and reader pair, the two totals, their mean and difference
        (reader a − reader b): the points of a Bland–Altman plot.
    ledger : Ledger
        Patients and VUs left out of each comparison, and why.
    readers : list
        The readers of the panel.
    threshold : float
        ASspiMRI-a score that counts as inflamed.
    level : float
        Confidence level of the ICC and kappa intervals.
    """

    icc: pd.DataFrame
    agreement: pd.DataFrame
    kappa: pd.DataFrame
    differences: pd.DataFrame
    ledger: Ledger
    readers: list
    threshold: float
    level: float
    notes: list[str] = field(default_factory=list)

    #: Titles of the tables of :meth:`tables`, by name.
    TITLES: ClassVar[dict[str, str]] = {
        "icc": "Inter-reader ICC of the patient totals: ICC(2,1) absolute agreement and "
        "ICC(3,1) consistency",
        "agreement": "Bland–Altman agreement of the patient totals and the smallest "
        "detectable change",
        "kappa": "Inter-reader kappa of the status of each VU",
        "ledger": "Patients and VUs left out of the comparisons, and why",
    }

    def tables(self) -> dict[str, pd.DataFrame]:
        """The result tables by name: ``icc``, ``agreement``, ``kappa``, ``ledger``."""
        return {
            "icc": self.icc,
            "agreement": self.agreement,
            "kappa": self.kappa,
            "ledger": self.ledger.to_frame(),
        }

    @property
    def pairs(self) -> list[tuple[Hashable, Hashable]]:
        """The reader pairs, in order (1, 2), (1, 3), (2, 3), …"""
        return list(combinations(self.readers, 2))

    def __repr__(self) -> str:
        return (
            f"<ReliabilityResult readers {self.readers}: {len(self.icc)} ICC rows, "
            f"{len(self.agreement)} agreement rows, {len(self.kappa)} kappa rows; "
            f"{self.ledger.n_excluded} rows left out>"
        )


def pair_label(a: Hashable, b: Hashable) -> str:
    """``"1 vs 2"``: the label of a reader pair in the tables."""
    return f"{a} vs {b}"


def readers_label(readers: Sequence[Hashable]) -> str:
    """The label of a reader set: ``"1 vs 2"`` for two, ``"all 3 (1, 2, 3)"`` for more."""
    readers = list(readers)
    if len(readers) == 2:
        return pair_label(*readers)
    return f"all {len(readers)} ({', '.join(map(str, readers))})"


def _reader_sets(readers: list) -> list[list]:
    """All readers (first) and, with more than two, every pair."""
    sets = [list(readers)]
    if len(readers) > 2:
        sets += [list(p) for p in combinations(readers, 2)]
    return sets


def check_panel_readers(panel: Any) -> list:
    """The panel's readers; ``DeriveError`` unless it has a ``reader`` column with ≥ 2.

    Parameters
    ----------
    panel : VUPanel
        The panel.

    Returns
    -------
    list
        The readers, sorted.

    Raises
    ------
    DeriveError
        No ``reader`` column, or fewer than two readers.
    """
    readers = getattr(panel, "readers", None)
    if readers is None:
        raise DeriveError(
            "reader reliability needs two or more readers per image, but the VU table has no "
            "'reader' column (one row per patient × VU × reader)"
        )
    if len(readers) < 2:
        raise DeriveError(
            "reader reliability needs two or more readers per image, but the VU table's "
            f"'reader' column holds one reader ({readers[0]!r})"
        )
    return list(readers)


def _units(panel: Any) -> dict[str, dict[int, pd.DataFrame]]:
    """Each score's units × readers tables by week.

    MRI: one unit per patient × VU, the ASspiMRI-a score. mSASSS: one unit per
    patient × VU × corner of the VUs with x-ray scores. Index levels ``patient``,
    ``vu`` (and ``corner``); columns the readers (``NaN`` where a reader has no
    score, including a reader with no row for that VU).
    """
    readers = panel.readers
    idx = panel.vu.set_index(["patient", "vu", "reader"])
    out: dict[str, dict[int, pd.DataFrame]] = {MRI_TOTAL: {}, MSASSS_TOTAL: {}}
    for week in panel.mri_weeks:
        wide = idx[f"mri_w{week}"].unstack("reader")
        out[MRI_TOTAL][week] = wide.reindex(columns=readers)
    for week in panel.xray_weeks:
        corners = []
        for corner in ("upper", "lower"):
            col = f"msasss_{corner}_w{week}"
            wide = idx[col].unstack("reader")
            wide = wide.reindex(columns=readers)
            wide["corner"] = corner
            corners.append(wide.set_index("corner", append=True))
        both = pd.concat(corners).sort_index(level=["patient", "vu"], sort_remaining=False)
        out[MSASSS_TOTAL][week] = both
    return out


def _totals(
    units: pd.DataFrame, readers: list, ledger: Ledger, step: str, unit_name: str
) -> pd.DataFrame:
    """Patients × readers totals over the units scored by any of ``readers``.

    A reader's total is the sum of their scores over the patient's units that at
    least one of ``readers`` scored. A patient is left out (recorded in ``ledger``)
    when no reader scored any unit, when a reader did not read the patient at all
    (a second reader often reads only a sample), or when a reader lacks a score of
    a unit another reader scored — so the readers' totals always cover the same
    units.
    """
    sub = units[readers]
    scored = sub.notna().any(axis=1)
    patients_all = pd.unique(units.index.get_level_values("patient"))
    sub = sub[scored]
    patient = sub.index.get_level_values("patient")
    totals = sub.groupby(patient, sort=False).sum()
    missing = sub.isna().groupby(patient, sort=False)
    unread = missing.all().any(axis=1)  # a reader with no score of this patient at all
    gaps = missing.any().any(axis=1) & ~unread
    n_none = int(len(patients_all) - totals.shape[0])
    ledger.add(step, "no reader scored this patient at this visit", n_none, n_none)
    n_unread = int(unread.sum())
    ledger.add(step, "not read by every reader (patient left out)", n_unread, n_unread)
    n_gaps = int(gaps.sum())
    ledger.add(
        step,
        f"a reader lacks a score of a {unit_name} another reader scored (patient left out)",
        n_gaps,
        n_gaps,
    )
    keep = ~(unread | gaps).reindex(totals.index).to_numpy()
    return totals[keep]


def _measures(panel: Any) -> list[tuple[str, str, pd.DataFrame, bool, str]]:
    """(score, measure, units × readers table, is_change, unit name) for every measure."""
    units = _units(panel)
    out = []
    for score, unit_name, weeks in (
        (MRI_TOTAL, "VU", panel.mri_weeks),
        (MSASSS_TOTAL, "corner", panel.xray_weeks),
    ):
        for week in weeks:
            out.append((score, f"status, week {week}", units[score][week], False, unit_name))
        if len(weeks) >= 2:
            first, last = units[score][weeks[0]], units[score][weeks[-1]]
            idx = first.index.union(last.index, sort=False)
            change = last.reindex(idx) - first.reindex(idx)
            measure = f"change, week {weeks[0]} to {weeks[-1]}"
            out.append((score, measure, change, True, unit_name))
    return out


def _z(level: float) -> float:
    return float(stats.norm.ppf(0.5 + level / 2.0))


def smallest_detectable_change(sd_difference: float, k: int = 1, level: float = 0.95) -> float:
    """The smallest detectable change (SDC) from the SD of two readers' differences.

    SDC = z × SD_Δ / (√2 × √k), with z the two-sided standard-normal quantile of
    ``level`` (1.96 for 95%, 1.28 for 80%), SD_Δ the SD of the differences between
    two readers' change scores (the Bland–Altman limits of agreement are
    mean ± 1.96 SD_Δ) and k the number of readers whose scores are averaged
    (Bruynesteyn et al., Ann Rheum Dis 2005;64:179–182; Bland & Altman, Lancet
    1986). SD_Δ / √2 is the SD of one reader's measurement error of a change, so a
    change larger than the SDC exceeds the readers' measurement error with the
    given confidence.

    Parameters
    ----------
    sd_difference : float
        SD of the differences between two readers' change scores.
    k : int
        Readers averaged (1: one reader's change; 2: the mean of two readers).
    level : float
        Confidence level, e.g. 0.95 or 0.80.

    Returns
    -------
    float
        The SDC, in the units of the score.
    """
    return _z(level) * float(sd_difference) / (np.sqrt(2.0) * np.sqrt(int(k)))


def _agreement_row(
    score: str, measure: str, readers: list, wide: pd.DataFrame, is_change: bool
) -> dict:
    """Bland–Altman summary (pairs) or the pooled SD of differences (more readers)."""
    row: dict[str, Any] = {
        "score": score,
        "measure": measure,
        "readers": readers_label(readers),
        "n_readers": len(readers),
        "n_patients": len(wide),
    }
    k = len(readers)
    if len(wide) < 2:
        sd = bias = float("nan")
    elif k == 2:
        d = wide[readers[0]].to_numpy() - wide[readers[1]].to_numpy()
        bias = float(d.mean())
        sd = float(d.std(ddof=1))
    else:
        # SD of the difference of two readers, pooled over readers: √(2·MSE) of the
        # two-way ANOVA (with two readers this is exactly the SD of their differences)
        bias = float("nan")
        sd = float(np.sqrt(2.0 * mean_squares(wide.to_numpy()).mse))
    z95 = _z(0.95)
    row["mean_difference"] = bias
    row["sd_difference"] = sd
    row["loa_low"] = bias - z95 * sd
    row["loa_high"] = bias + z95 * sd
    for level in SDC_LEVELS:
        tag = f"{round(level * 100)}"
        one = smallest_detectable_change(sd, 1, level) if is_change else float("nan")
        mean = smallest_detectable_change(sd, k, level) if is_change else float("nan")
        row[f"sdc_{tag}_one_reader"] = one
        row[f"sdc_{tag}_mean_of_readers"] = mean
    return row


def _kappa_units(panel: Any, threshold: float) -> list[tuple[str, int, pd.DataFrame]]:
    """(status, week, VUs × readers 0/1 table) for each MRI and x-ray week."""
    readers = panel.readers
    idx = panel.vu.set_index(["patient", "vu", "reader"])
    out = []
    for week in panel.mri_weeks:
        wide = idx[f"mri_w{week}"].unstack("reader").reindex(columns=readers)
        status = (wide >= threshold).astype(float).where(wide.notna())
        out.append((f"inflamed (ASspiMRI-a ≥ {threshold:g})", week, status))
    for week in panel.xray_weeks:
        up = idx[f"msasss_upper_w{week}"].unstack("reader").reindex(columns=readers)
        lo = idx[f"msasss_lower_w{week}"].unstack("reader").reindex(columns=readers)
        # thoracic VUs (no x-ray score by any reader) are not scored by the mSASSS
        scored = (up.notna() | lo.notna()).any(axis=1)
        up, lo = up[scored], lo[scored]
        present = ((up >= 2) | (lo >= 2)).astype(float)
        status = present.where(up.notna() & lo.notna())
        out.append(("syndesmophyte (a corner ≥ 2)", week, status))
    return out


def _cohen(a: np.ndarray, b: np.ndarray, level: float) -> dict:
    """Cohen's kappa of two 0/1 vectors with statsmodels, and its large-sample CI."""
    from statsmodels.stats.inter_rater import cohens_kappa

    table = np.bincount((2 * a + b).astype(int), minlength=4).reshape(2, 2).astype(float)
    n = table.sum()
    rows, cols = table.sum(axis=1) / n, table.sum(axis=0) / n
    if float(rows @ cols) >= 1.0 - 1e-12:
        # both readers gave every VU the same status: kappa is 0/0, not defined
        return {"kappa": np.nan, "se": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    res = cohens_kappa(table, return_results=True)
    kappa = float(res["kappa"])
    se = float(res["std_kappa"])
    z = _z(level)
    return {"kappa": kappa, "se": se, "ci_low": kappa - z * se, "ci_high": kappa + z * se}


def _fleiss(status: np.ndarray) -> float:
    """Fleiss' kappa of a VUs × readers 0/1 table, with statsmodels."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    counts, _ = aggregate_raters(status.astype(int), n_cat=2)
    p = counts.sum(axis=0) / counts.sum()
    if float(np.sum(p**2)) >= 1.0 - 1e-12:
        return float("nan")
    return float(fleiss_kappa(counts, method="fleiss"))


def _kappa_rows(
    status_name: str, week: int, status: pd.DataFrame, readers: list, level: float, ledger: Ledger
) -> list[dict]:
    rows = []
    step = f"kappa, {status_name}, week {week}"
    for reader_set in _reader_sets(readers):
        sub = status[reader_set]
        complete = sub.notna().all(axis=1)
        some = sub.notna().any(axis=1)
        left = int((some & ~complete).sum())
        if reader_set == readers:
            patients_left = sub.index[some & ~complete].get_level_values("patient").nunique()
            ledger.add(step, "VU not scored by every reader", left, patients_left)
        sub = sub[complete]
        values = sub.to_numpy()
        base = {
            "status": status_name,
            "week": int(week),
            "readers": readers_label(reader_set),
            "n_readers": len(reader_set),
            "n_vus": len(sub),
            "n_patients": sub.index.get_level_values("patient").nunique(),
            "pct_positive": 100.0 * float(values.mean()) if values.size else np.nan,
            "pct_agreement": (
                100.0 * float((values.min(axis=1) == values.max(axis=1)).mean())
                if values.size
                else np.nan
            ),
        }
        if len(reader_set) == 2:
            base["method"] = "Cohen's kappa"
            if len(sub) >= 2:
                base.update(_cohen(values[:, 0], values[:, 1], level))
            else:
                base.update(kappa=np.nan, se=np.nan, ci_low=np.nan, ci_high=np.nan)
        else:
            base["method"] = "Fleiss' kappa"
            base.update(
                kappa=_fleiss(values) if len(sub) >= 2 else np.nan,
                se=np.nan,
                ci_low=np.nan,
                ci_high=np.nan,
            )
        rows.append(base)
    return rows


def reliability(panel: Any, threshold: float = 1, level: float = 0.95) -> ReliabilityResult:
    """The readers' agreement on a VU panel: ICC, limits of agreement, SDC and kappa.

    **Scores.** Per patient, visit and reader: the ASspiMRI-a total (the sum of the
    reader's VU scores at that MRI week, over the VUs the panel carries — all 23 or
    fewer) and the mSASSS total (the sum of the reader's corner scores, 0–3, over
    the corners of the VUs with x-ray scores). A patient's readers are compared on
    the same units: a patient is left out of a measure when a reader lacks a score
    of a VU (corner) another reader scored, and the ledger says so. Measures:
    *status* at each visit and *change*, last minus first visit (summed over the
    units scored at both). The ledger counts what the comparison of all readers
    leaves out (rows are patients for the totals, VUs for kappa); a reader pair
    keeps every patient both of its readers scored, so its ``n_patients`` can be
    larger.

    **ICC.** For every score, measure and reader set (all readers; with more than
    two, also each pair): ICC(2,1), two-way random effects, absolute agreement,
    single reader, and ICC(3,1), two-way mixed effects, consistency, single
    reader (Shrout & Fleiss 1979; computed by :func:`icc`), each with its type in
    words in the ``description`` column.

    **Agreement and SDC.** Per reader pair, the Bland–Altman mean difference (reader
    a − reader b), the SD of the differences SD_Δ and the 95% limits of agreement
    mean ± 1.96 SD_Δ (Bland & Altman, Lancet 1986). For change measures, the
    smallest detectable change SDC = z × SD_Δ / (√2 × √k) (Bruynesteyn et al., Ann
    Rheum Dis 2005;64:179–182), z = 1.96 (95%) or 1.28 (80%), for one reader's
    change (k = 1) and for the mean of the k readers of the row. With more than two
    readers the row for all readers uses the SD of a two-reader difference pooled
    over readers, √(2·MSE) of the two-way ANOVA (for two readers exactly SD_Δ); it
    has no mean difference or limits of agreement.

    **Kappa.** For the binary status of each VU — inflamed (ASspiMRI-a ≥
    ``threshold``) at each MRI week; syndesmophyte present (a corner ≥ 2, both
    corners scored) at each x-ray week — Cohen's kappa per reader pair with its
    large-sample SE (Fleiss, Cohen & Everitt 1969) from statsmodels
    (``stats.inter_rater.cohens_kappa``), and with more than two readers Fleiss'
    kappa (Fleiss 1971; ``fleiss_kappa``, no interval). VUs of a patient are
    correlated, so these intervals, which treat VUs as independent (as psych and
    statsmodels do), are too narrow. Kappa is undefined (NaN) when the readers
    gave every VU the same status.

    Parameters
    ----------
    panel : VUPanel
        A panel whose VU table has a ``reader`` column with two or more readers.
    threshold : float
        ASspiMRI-a score that counts as inflamed (score ≥ threshold), in (0, 6].
    level : float
        Confidence level of the ICC and kappa intervals (default 0.95).

    Returns
    -------
    ReliabilityResult
        Tables ``icc``, ``agreement``, ``kappa``, the Bland–Altman points
        (``differences``) and the ``ledger`` of what was left out.

    Raises
    ------
    DeriveError
        The panel has no ``reader`` column or one reader; a bad threshold or level.
    """
    from syndesmo.derive.frame import check_threshold

    readers = check_panel_readers(panel)
    threshold = check_threshold(threshold)
    level = _check_level(level)
    ledger = Ledger()

    icc_rows: list[pd.DataFrame] = []
    agreement_rows: list[dict] = []
    difference_parts: list[pd.DataFrame] = []
    for score, measure, units, is_change, unit_name in _measures(panel):
        step = f"{score}, {measure}"
        for reader_set in _reader_sets(readers):
            # the ledger counts the comparison of all readers; pairs keep more patients
            target = ledger if reader_set == readers else Ledger()
            wide = _totals(units, reader_set, target, step, unit_name)
            label = readers_label(reader_set)
            if len(wide) >= 2:
                long = pd.DataFrame(
                    {
                        "patient": np.repeat(np.arange(len(wide)), len(reader_set)),
                        "reader": np.tile(np.arange(len(reader_set)), len(wide)),
                        "score": wide[reader_set].to_numpy().ravel(),
                    }
                )
                table = icc(long, "patient", "reader", "score", level=level).table
                table = table[table["type"].isin(RELIABILITY_TYPES)].copy()
            else:
                table = pd.DataFrame(
                    {"type": list(RELIABILITY_TYPES)},
                    columns=list(ICC_COLUMNS),
                )
                table["description"] = table["type"].map(ICC_DESCRIPTIONS)
            table.insert(0, "score", score)
            table.insert(1, "measure", measure)
            table.insert(2, "readers", label)
            table.insert(3, "n_readers", len(reader_set))
            table.insert(4, "n_patients", len(wide))
            icc_rows.append(table)
            agreement_rows.append(_agreement_row(score, measure, reader_set, wide, is_change))
            if len(reader_set) == 2:
                a, b = reader_set
                difference_parts.append(
                    pd.DataFrame(
                        {
                            "score": score,
                            "measure": measure,
                            "readers": label,
                            "reader_a": a,
                            "reader_b": b,
                            "patient": wide.index.to_numpy(),
                            "score_a": wide[a].to_numpy(),
                            "score_b": wide[b].to_numpy(),
                            "mean": (wide[a].to_numpy() + wide[b].to_numpy()) / 2.0,
                            "difference": wide[a].to_numpy() - wide[b].to_numpy(),
                        }
                    )
                )
    icc_table_ = pd.concat(icc_rows, ignore_index=True)[list(ICC_TABLE_COLUMNS)]
    icc_table_["df1"] = icc_table_["df1"].astype("Int64")
    icc_table_["df2"] = icc_table_["df2"].astype("Int64")
    agreement = pd.DataFrame(agreement_rows, columns=list(AGREEMENT_COLUMNS))
    differences = (
        pd.concat(difference_parts, ignore_index=True)
        if difference_parts
        else pd.DataFrame(columns=list(DIFFERENCE_COLUMNS))
    )

    kappa_rows: list[dict] = []
    for status_name, week, status in _kappa_units(panel, threshold):
        kappa_rows += _kappa_rows(status_name, week, status, readers, level, ledger)
    kappa = pd.DataFrame(kappa_rows, columns=list(KAPPA_COLUMNS))

    notes = [
        "ICC(2,1): two-way random effects, absolute agreement, single reader; ICC(3,1): "
        "two-way mixed effects, consistency, single reader (Shrout & Fleiss 1979).",
        "Limits of agreement: mean difference ± 1.96 SD of the differences (Bland & Altman "
        "1986); differences are reader a − reader b of the pair.",
        "SDC = z × SD of the differences / (√2 × √k), z = 1.96 (95%) or 1.28 (80%), k readers "
        "averaged (Bruynesteyn et al., Ann Rheum Dis 2005); given for change scores.",
        "Kappa intervals treat VUs as independent; VUs of one patient are correlated, so "
        "they are too narrow.",
        "Readers are compared on the same VUs (corners): a patient a reader did not score "
        "completely is left out of that measure. The ledger counts what the comparison of "
        "all readers leaves out (patients for totals, VUs for kappa); a reader pair keeps "
        "every patient both of its readers scored.",
    ]
    return ReliabilityResult(
        icc=icc_table_,
        agreement=agreement,
        kappa=kappa,
        differences=differences,
        ledger=ledger,
        readers=readers,
        threshold=threshold,
        level=level,
        notes=notes,
    )
