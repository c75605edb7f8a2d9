"""Step (e) of the ladder: the within-patient VU effect, and what it says.

The VU-level question of van der Heijde et al. (Ann Rheum Dis 2012;71:369-73) is a
within-patient one: does a VU with MRI inflammation form new bone more often than the
*same patient's* other VUs? A random-intercept GLMM answers it only if a patient's
propensity for new bone is unrelated to how much of their spine is inflamed. Two
estimators answer it without that assumption (DOMAIN.md, "Within-patient versus
between-patient"):

* the **hybrid** (within–between) GLMM, ``y ~ mri_within + mri_between + … +
  (1|patient)`` (Neuhaus & Kalbfleisch, Biometrics 1998;54:638-45): the coefficient of
  ``mri_within`` is the within-patient log-OR, that of ``mri_between`` the
  between-patient one; and
* **conditional logistic regression** with patients as strata (``engine="clogit"``).

A Wald test of within = between (from the hybrid fit's covariance) says whether the
plain GLMM, which pools both comparisons, may be read as the VU-level effect.
``within_sentence`` puts that in one sentence for the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special

from syndesmo.derive.within import BETWEEN_SUFFIX, WITHIN_SUFFIX
from syndesmo.errors import ModelError
from syndesmo.fitting import registry
from syndesmo.fitting.results import FitResult
from syndesmo.numbers import fmt_p, fmt_ratio

#: The ladder's step of the within-patient estimators, and its label.
WITHIN_STEP, WITHIN_LABEL = "e", "within-patient"
#: The exposure column of the ladder and its two parts (``syndesmo.derive.within``).
EXPOSURE = "mri"
WITHIN_TERM, BETWEEN_TERM = f"{EXPOSURE}{WITHIN_SUFFIX}", f"{EXPOSURE}{BETWEEN_SUFFIX}"
#: Below this p-value the report calls the within and between ORs different.
DIFFER_P = 0.05


def within_engines() -> tuple[str, ...]:
    """Engines that fit within-patient comparisons only (the registry's ``within`` scale)."""
    return registry.engine_names(scale=registry.WITHIN, family=registry.BINOMIAL)


def within_formula(
    outcome: str,
    engine: str,
    terms: Sequence[str] = (),
    *,
    group: str = "patient",
) -> str:
    """The formula of step (e) for ``engine``.

    A within engine (``clogit``) gets ``outcome ~ mri + terms + (1|group)`` (patient-level
    terms are not identifiable there and are left out by the engine with a warning);
    any other engine the hybrid ``outcome ~ mri_within + mri_between + terms + (1|group)``.
    """
    exposure = [EXPOSURE] if engine in within_engines() else [WITHIN_TERM, BETWEEN_TERM]
    return f"{outcome} ~ {' + '.join([*exposure, *terms])} + (1|{group})"


def within_term(engine: str) -> str:
    """The term of a step-(e) fit that carries the within-patient log-OR."""
    return EXPOSURE if engine in within_engines() else WITHIN_TERM


def within_equals_between(
    fit: FitResult, within: str = WITHIN_TERM, between: str = BETWEEN_TERM
) -> dict[str, float]:
    """Wald test of within = between in a hybrid fit.

    Parameters
    ----------
    fit : FitResult
        A fit with both terms (e.g. ``y ~ mri_within + mri_between + (1|patient)``).
    within, between : str
        The two terms.

    Returns
    -------
    dict
        ``log_or_between`` and its ``se_between``, ``difference`` (within − between),
        its ``se`` from the fit's covariance (var_w + var_b − 2 cov), ``z`` and the
        two-sided ``p``; all NaN when the fit did not converge.
    """
    for term in (within, between):
        if term not in fit.params.index:
            raise ModelError(f"the fit has no term {term!r}; terms are {list(fit.params.index)}")
    nan = {k: math.nan for k in ("log_or_between", "se_between", "difference", "se", "z", "p")}
    if not fit.converged:
        return nan
    cov = fit.cov_params()
    diff = float(fit.params[within] - fit.params[between])
    var = float(cov.loc[within, within] + cov.loc[between, between] - 2 * cov.loc[within, between])
    se = math.sqrt(var) if var > 0 else math.nan
    z = diff / se if np.isfinite(se) else math.nan
    return {
        "log_or_between": float(fit.params[between]),
        "se_between": float(fit.bse[between]),
        "difference": diff,
        "se": se,
        "z": z,
        # the normal tail from scipy.special: scipy.stats takes ~0.9 s to import, and this
        # module is loaded by every command that writes a report
        "p": float(2 * special.ndtr(-abs(z))) if np.isfinite(z) else math.nan,
    }


#: A standard error above this marks an estimate running off to infinity (separation),
#: as the ladder's ``fit_row`` notes it; such estimates are left out of a range.
SEPARATION_SE = 10.0


def _ors(rows: pd.DataFrame) -> str:
    """One OR with its CI, or the range of several (finite ones, separation left out)."""
    est = pd.to_numeric(rows["OR"], errors="coerce")
    se = pd.to_numeric(rows["se"], errors="coerce")
    finite = rows[np.isfinite(est)]
    if len(finite) == 1:
        r = finite.iloc[0]
        return fmt_ratio(r["OR"], r["lower"], r["upper"])
    ok = rows[np.isfinite(est) & np.isfinite(se) & (se <= SEPARATION_SE)]
    ors = ok["OR"].astype(float)
    left = len(finite) - len(ok)
    text = f"{ors.min():.2f} to {ors.max():.2f}" if len(ok) else "not estimable"
    return text + (f", {left} with possible separation not counted" if left else "")


def within_sentence(rows: pd.DataFrame, glmm: str | None = None) -> str:
    """One sentence: which estimate answers the VU-level question, and why they differ.

    Parameters
    ----------
    rows : pandas.DataFrame
        Ladder rows (``syndesmo.analysis.ladder``) of one outcome, one or more
        exposures, with step (e): the hybrid GLMM rows (columns ``log_or_between``,
        ``p_within_between``) and the conditional-logit rows.
    glmm : str, optional
        The GLMM engine of the hybrid rows (default: any engine that is not a
        within engine).

    Returns
    -------
    str
        The sentence, or ``""`` when the rows have no step (e) estimate. It names the
        within-patient ORs (one with its CI, or their range over the exposures), and
        the exposures whose within and between ORs differ (Wald p < 0.05): there the
        plain GLMM, which pools both comparisons, over- or understates the VU-level
        effect; where none differ, the plain GLMM answers the question too.
    """
    e = rows[rows["step"].eq(WITHIN_STEP)]
    cl = e[e["engine"].isin(within_engines())]
    hybrid = e[~e["engine"].isin(within_engines())]
    if glmm is not None:
        hybrid = hybrid[hybrid["engine"].eq(glmm)]

    def has_or(r: pd.DataFrame) -> bool:
        return bool(np.isfinite(pd.to_numeric(r["OR"], errors="coerce")).any())

    ests = []
    if has_or(cl):
        ests.append(f"conditional logistic regression (OR {_ors(cl)})")
    if has_or(hybrid):
        ests.append(f"the hybrid GLMM's within-patient term (OR {_ors(hybrid)})")
    if not ests:
        return ""
    head = (
        f"Within patients (step e), {' and '.join(ests)} answer the VU-level question, "
        "whether an inflamed VU forms new bone more often than the same patient's other VUs"
    )
    p = pd.to_numeric(hybrid["p_within_between"], errors="coerce")
    tested = hybrid[p.notna()]
    if tested.empty:
        return head + "."
    differ = tested[tested["p_within_between"].astype(float) < DIFFER_P]
    if differ.empty:
        smallest = float(tested["p_within_between"].min())
        return (
            f"{head}; the between-patient association did not differ detectably from the "
            f"within-patient one (Wald test of within = between, smallest p "
            f"{_p_words(smallest)}), so the plain GLMM of steps b-d, which pools both "
            "comparisons, answers it too."
        )
    labels = ", ".join(str(x) for x in differ["exposure_label"])
    higher = (differ["log_or_between"].astype(float) > differ["log_or"].astype(float)).all()
    lower = (differ["log_or_between"].astype(float) < differ["log_or"].astype(float)).all()
    how = "overstates" if higher else "understates" if lower else "misstates"
    return (
        f"{head}; for VUs {labels} the between-patient association differed from the "
        f"within-patient one (Wald test of within = between, p < {DIFFER_P:g}): patients "
        "with more inflamed VUs differ in their risk of new bone beyond the VU's own "
        f"inflammation (for instance through disease activity), so there the plain GLMM, which "
        f"pools both comparisons, {how} the VU-level effect."
    )


def _p_words(p: float) -> str:
    s = fmt_p(p)
    return f"< {s[1:]}" if s.startswith("<") else f"= {s}"
