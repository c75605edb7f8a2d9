"""Synthetic ASSERT-like cohorts with a known truth: the data-generating model (DGM).

The model, per patient i, VU v, MRI week t (all draws from one numpy Generator, in
a fixed order, so the same seed gives the same cohort on any machine):

1. **Arm**: exactly ``round(n_patients * p_infliximab)`` patients get infliximab
   (a random permutation); the others placebo until ``crossover_week``, then
   infliximab (ASSERT's design). A patient is *treated* at MRI week t if on
   infliximab since before t (infliximab arm: t > 0; placebo arm: t > crossover).
2. **Patient random effects**: syndesmophyte propensity
   ``u_i ~ N(0, sd_syndesmophyte²)`` (logit scale) and inflammation propensity
   ``v_i ~ N(0, sd_inflammation²)`` (latent probit scale), with correlation
   ``propensity_correlation`` (ρ, default 0: independent). With standard normal
   draws ``a_i``, ``b_i`` (in that order): ``u = sd_u·a``, ``v = sd_v·(ρ·a + √(1−ρ²)·b)``,
   so ρ = 0 gives exactly the draws of a cohort without the field.
3. **Inflammation** (ASspiMRI-a, 0–6): a latent
   ``Z_ivt = m(treated_it) + v_i + √r·w_iv + √(1−r)·ε_ivt`` with ``w``, ``ε`` standard
   normal; ``r = inflammation_persistence`` is the correlation of a VU's latent
   inflammation between two weeks (given the patient). The score is the number of
   cut-points ``0 = c1 < … < c6`` below Z, so score ≥ 1 ⇔ Z > 0 and the marginal
   prevalence is ``Φ(m / √(1 + sd_inflammation²))``: ``m`` is solved in closed form
   from ``inflammation_prevalence`` (untreated) and
   ``inflammation_prevalence_treated``.
4. **Baseline syndesmophytes**: a VU has one with probability
   ``expit(a_syn + u_i)``; its extent is one corner 2, both corners 2, or a bridge
   (both corners 3) with probabilities ``baseline_extent``. Other corners score 1
   with probability ``corner1_prevalence``, else 0.
5. **Exposure** ``x_iv``: the derived exposure ``spec.exposure`` (``derive``) of the
   true MRI scores at ``spec.threshold``.
6. **New syndesmophyte** (VUs without one at baseline):
   ``logit p = a_new + log(odds_ratio_new)·x + log(odds_ratio_arm_new)·infliximab
   + log(odds_ratio_lumbar_new)·lumbar + log(odds_ratio_corner1_new)·[corner 1 at
   baseline] + u_i``; its extent follows ``new_extent``.
   **Growth** (VUs with a syndesmophyte, not bridged):
   ``logit p = a_growth + log(odds_ratio_growth)·x + log(odds_ratio_arm_growth)·
   infliximab + u_i``; a one-corner VU then gains the second corner (2) or bridges
   (both 3, probability ``growth_bridge_share``); a two-corner VU bridges.
   Other corners at 0 become 1 with probability ``corner1_incidence``. A change
   appears at x-ray weeks after a uniform time in (0, last x-ray week].
7. **Readers** (``n_readers = 2``): each reader's score of a VU at a week is the
   true score moved up or down by one (clipped to the scale) with probability
   ``reader_mri_error`` (MRI) / ``reader_corner_error`` (each corner). The outcome
   depends on the *true* scores, so analyses of readers' scores estimate an OR
   attenuated by measurement error. With one reader the scores are the truth.
8. **Missing data**, completely at random: a patient's MRI at a week is missing
   with probability ``mri_missing_rate``; an x-ray with ``xray_missing_rate``.
9. **Patient covariates**, each through a documented path only (``_COVARIATES``):
   CRP and BASDAI depend on the inflammation propensity ``v``; age, sex, symptom
   duration and HLA-B27 on the syndesmophyte propensity ``u``; baseline mSASSS is
   the sum of the baseline corner scores over the scored corners (the mean of
   readers' sums with two readers).

Why this matters for the analysis layer: at ρ = 0 ``u`` (which drives new bone) is
independent of ``v``, ``w``, ``ε`` and the arm (which drive the exposure), and no
covariate is a common cause of both. So, at the defaults (arm, region and
corner-1 ORs 1), a GLMM with a patient random intercept estimates the true
conditional ``log(odds_ratio_new)`` with or without arm and the patient
covariates (ladder steps b, c, d). One caveat, as in real data: the VUs at risk
are selected by baseline damage, which depends on ``u``, so the random-intercept
distribution among the VUs analysed is not exactly normal (this mainly affects
the intercept and SD, not the within-patient exposure OR). Checked once with R's
``glmer`` (Laplace) on four 3000-patient cohorts at the defaults: the exposure
log-OR averaged 0.689 (truth log 2 = 0.693, SE 0.057 each) with no covariates,
with arm, and with arm + all patient covariates + region + baseline_corner alike;
the random-intercept SD came out about 1.36 against ``sd_syndesmophyte`` = 1.5.

With ρ ≠ 0 the patient propensity for new bone goes with the patient's share of
inflamed VUs — both follow disease activity — and a random-intercept GLMM, which
assumes the random intercept independent of the exposure, mixes the within-patient
OR with that between-patient association (biased away from the truth for ρ > 0).
The within-patient estimators (conditional logistic regression, the within–between
GLMM of ``syndesmo.derive.within``) are not biased by it. Sensitivity, measured by
``benchmarks/within_patient.py`` (``docs/within_patient.md``): the plain GLMM's bias
grows with ρ while clogit and the hybrid GLMM stay at the truth. The marginal
calibrations below do not depend on ρ (they average over ``u`` alone), but the risk
among *unexposed* VUs does: with ρ > 0 unexposed VUs belong more often to patients
with a low ``u``, so their observed risk is below ``risk_new``.

Intercepts are calibrated so that the spec's risks are *marginal* (averaged over
patients) risks at the reference levels (exposure 0, placebo, cervical, no
corner 1), by 1-D Gauss–Hermite quadrature over ``u`` (see ``calibrate``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import special

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from syndesmo import checks
from syndesmo.derive.frame import REGIONS, exposure_values, needed_weeks
from syndesmo.errors import DeriveError, SpecError
from syndesmo.panel.spine import MSASSS_VUS, VU_LABELS, VU_REGION

if TYPE_CHECKING:  # the panel classes load when a panel is made, not on the power path
    from syndesmo.panel.tables import VUPanel

#: ASSERT randomised 279 patients 3:8 to placebo (78) or infliximab 5 mg/kg (201)
#: (van der Heijde et al., Arthritis Rheum 2005;52:582-91).
ASSERT_N_PLACEBO, ASSERT_N_INFLIXIMAB = 78, 201

#: Patient covariates: (mean or share, SD, loading on the standardised propensity).
#: Means/SDs of age, symptom duration, sex, BASDAI and CRP are the baseline values of
#: the 22 anti-TNF-treated AS patients in Baraliakos et al., J Rheumatol
#: 2013;40:1891-6 (age 38 ± 7.3 y, symptom duration 13.9 ± 8.4 y, 77.3% male, BASDAI
#: 6.4 ± 1.3, CRP 24.7 ± 25.8 mg/L — a log-normal with median 15 mg/L and log-SD 1
#: has that mean). HLA-B27 85% positive is illustrative (typical of AS trials). The
#: loadings are illustrative: they only make the covariates informative proxies of
#: the propensities (age, symptom duration, male sex, HLA-B27 of ``u``; CRP and
#: BASDAI of ``v``) without opening any other path to the outcome.
_COVARIATES: dict[str, tuple[float, float, float]] = {
    "age": (38.0, 7.3, 0.3),  # years; loading = correlation with u
    "sex": (0.773, 0.0, 0.5),  # share male; loading = log-odds per SD of u
    "symptom_duration": (13.9, 8.4, 0.4),  # years; correlation with u
    "hla_b27": (0.85, 0.0, 0.3),  # share positive; log-odds per SD of u
    "crp": (math.log(15.0), 1.0, 0.6),  # mg/L, log scale: median, log-SD, corr with v
    "basdai": (6.4, 1.3, 0.4),  # 0-10; correlation with v
}

#: One line per spec field: meaning and the source of its default (to_toml writes it).
FIELD_DOCS: dict[str, str] = {
    "n_patients": "patients; 187 is illustrative, within the 150-250 of DOMAIN.md (the "
    "reference analysis used an 80% random sample of ASSERT; van der Heijde et al. Ann "
    "Rheum Dis 2012;71:369-73)",
    "p_infliximab": "share randomised to infliximab: 201/279 in ASSERT "
    "(van der Heijde et al. Arthritis Rheum 2005;52:582-91)",
    "crossover_week": "placebo patients start infliximab after this week (ASSERT: 24)",
    "mri_weeks": "MRI weeks (ASSERT: 0, 24, 102; van der Heijde 2012)",
    "xray_weeks": "x-ray weeks (ASSERT: 0, 102; van der Heijde 2012)",
    "vus": "VUs simulated; default the 12 mSASSS VUs (thoracic VUs get MRI only)",
    "exposure": "derived exposure that carries the conditional ORs (syndesmo.derive.frame)",
    "threshold": "ASspiMRI-a score from which a VU counts as inflamed (DOMAIN.md: >= 1)",
    "odds_ratio_new": "conditional OR of the exposure for a new syndesmophyte; "
    "van der Heijde 2012 found 1.51-2.26",
    "odds_ratio_growth": "conditional OR of the exposure for growth; 1: van der Heijde 2012 "
    "found no association",
    "odds_ratio_arm_new": "direct OR of infliximab on new syndesmophytes; 1: infliximab did "
    "not inhibit radiographic progression (van der Heijde et al. Arthritis Rheum "
    "2008;58:3063-70)",
    "odds_ratio_arm_growth": "direct OR of infliximab on growth; 1 as above (van der Heijde 2008)",
    "odds_ratio_lumbar_new": "OR lumbar vs cervical VU for a new syndesmophyte; "
    "illustrative 1 (no regional difference)",
    "odds_ratio_corner1_new": "OR of a baseline corner score 1 for a new syndesmophyte; "
    "illustrative 1, so baseline_corner is no confounder",
    "risk_new": "2-year risk of a new syndesmophyte in unexposed syndesmophyte-free VUs "
    "(placebo, cervical, no corner 1), averaged over patients; 'a few percent' "
    "(DOMAIN.md), cf. 5.1% of non-inflamed corners (Maksymowych et al. Arthritis Rheum "
    "2009;60:93-102)",
    "risk_growth": "2-year risk of growth of an existing syndesmophyte in unexposed VUs "
    "(placebo arm), averaged over patients; illustrative",
    "syndesmophyte_prevalence": "share of VUs with a syndesmophyte at baseline, averaged "
    "over patients; illustrative, gives a mean baseline mSASSS of about 11 (0-72)",
    "sd_syndesmophyte": "SD of the patient syndesmophyte propensity (logit scale); "
    "illustrative 1.5 (latent ICC 0.41: strong clustering, DOMAIN.md)",
    "propensity_correlation": "correlation of the patient inflammation and syndesmophyte "
    "propensities (v, u); 0: independent, so the patient random intercept is unrelated "
    "to the exposure; > 0 confounds the between-patient association (both follow disease "
    "activity, DOMAIN.md) - illustrative, see docs/within_patient.md for its effect",
    "sd_inflammation": "SD of the patient inflammation propensity (probit scale); 0.8 "
    "chosen so that, at 33.7% of all 23 VUs, ~93% of patients have an inflamed VU at "
    "baseline and ~67% after 2 years of anti-TNF (Baraliakos 2013: 100% and 64% of 22 "
    "patients); over the 12 mSASSS VUs at 15.8% that is ~64% at baseline and ~34% after 2 years",
    "inflammation_prevalence": "share of the 12 mSASSS VUs (cervical and lumbar) inflamed "
    "when untreated: 15.8%, the cervical vertebral bodies (C2-C7) with bone marrow edema "
    "in Baraliakos et al. J Rheumatol 2016;43:2131-5 (38 of 240, in 34 RA and 6 AS "
    "patients with neck pain: the only regional count at hand). The 33.7% of Baraliakos "
    "et al. J Rheumatol 2013;40:1891-6 is over all 23 VUs, the 11 thoracic ones (not "
    "scored by the mSASSS) included: 15.8% here implies ~53% there. An OR of 2 with 33.7% "
    "would put "
    "only about half of the new syndesmophytes in non-inflamed VUs, against 'the large "
    "majority' of van der Heijde et al. Ann Rheum Dis 2012;71:369-73; thoracic VUs, if "
    "simulated, get the same share",
    "inflammation_prevalence_treated": "share of the 12 mSASSS VUs inflamed on anti-TNF: "
    "5.63%, the 2-year fall of Baraliakos 2013 (33.7% -> 12.0%, to 35.6%) applied to 15.8%",
    "inflammation_persistence": "correlation of a VU's latent inflammation between two "
    "weeks given the patient; illustrative 0.5",
    "erosive_share": "share of inflamed VUs scoring 4-6 (inflammation with erosion) when "
    "untreated: 26.4% (Baraliakos 2013, Table 1); sets the MRI cut-points",
    "corner1_prevalence": "chance a corner without syndesmophyte scores 1 at baseline; "
    "illustrative",
    "corner1_incidence": "chance a corner at 0 becomes 1 by the last x-ray; illustrative",
    "baseline_extent": "baseline syndesmophyte VU: P(one corner 2, both corners 2, bridge "
    "3/3); illustrative",
    "new_extent": "new syndesmophyte: P(one corner 2, both corners 2, bridge 3/3); illustrative",
    "growth_bridge_share": "growth of a one-corner VU: chance it bridges (else the other "
    "corner forms); illustrative",
    "n_readers": "readers per image (1 = scores are the truth; 2 = reader noise)",
    "reader_mri_error": "chance a reader's MRI score is off by one; illustrative",
    "reader_corner_error": "chance a reader's corner score is off by one; illustrative",
    "mri_missing_rate": "chance a patient's MRI at a week is missing (completely at random)",
    "xray_missing_rate": "chance a patient's x-ray at a week is missing (completely at random)",
    "seed": "seed that regenerates a shipped cohort (simulate_cohort's default)",
}


@dataclass(frozen=True)
class CohortSpec:
    """Parameters of the data-generating model (module docstring).

    Every default and its source is in ``FIELD_DOCS`` (and in ``to_toml()``'s
    comments). Invalid values raise ``SpecError`` naming the field.
    """

    n_patients: int = 187
    p_infliximab: float = ASSERT_N_INFLIXIMAB / (ASSERT_N_PLACEBO + ASSERT_N_INFLIXIMAB)
    crossover_week: int = 24
    mri_weeks: tuple[int, ...] = (0, 24, 102)
    xray_weeks: tuple[int, ...] = (0, 102)
    vus: tuple[str, ...] = MSASSS_VUS
    exposure: str = "w0"
    threshold: float = 1
    odds_ratio_new: float = 2.0
    odds_ratio_growth: float = 1.0
    odds_ratio_arm_new: float = 1.0
    odds_ratio_arm_growth: float = 1.0
    odds_ratio_lumbar_new: float = 1.0
    odds_ratio_corner1_new: float = 1.0
    risk_new: float = 0.05
    risk_growth: float = 0.15
    syndesmophyte_prevalence: float = 0.2
    sd_syndesmophyte: float = 1.5
    sd_inflammation: float = 0.8
    propensity_correlation: float = 0.0
    inflammation_prevalence: float = 0.158
    inflammation_prevalence_treated: float = 0.0563
    inflammation_persistence: float = 0.5
    erosive_share: float = 0.264
    corner1_prevalence: float = 0.10
    corner1_incidence: float = 0.03
    baseline_extent: tuple[float, float, float] = (0.5, 0.2, 0.3)
    new_extent: tuple[float, float, float] = (0.8, 0.1, 0.1)
    growth_bridge_share: float = 0.5
    n_readers: int = 1
    reader_mri_error: float = 0.05
    reader_corner_error: float = 0.05
    mri_missing_rate: float = 0.0
    xray_missing_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        _validate(self)

    # ------------------------------------------------------------------ TOML
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "cohort spec") -> CohortSpec:
        """A spec from a mapping; unknown keys or bad values raise ``SpecError``."""
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                raise SpecError(f"{source}: unknown key {key!r}; allowed keys: {', '.join(names)}")
        try:
            return cls(**dict(data))
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> CohortSpec:
        """Read a spec from a TOML file of ``key = value`` lines (keys = field names)."""
        path = Path(path)
        try:
            # utf-8-sig: a byte-order mark (Windows editors write one) is accepted
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SpecError(f"{path}: not valid TOML: {exc}") from None
        for key, value in data.items():
            if isinstance(value, dict):
                raise SpecError(
                    f"{path}: [{key}] is a table; the cohort spec is flat 'key = value' lines"
                )
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Field values as plain Python (tuples as lists), ``seed`` included."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }

    def to_toml(self, path: str | Path | None = None, header: str = "") -> str:
        """The spec as TOML, one commented line per field (``seed`` only if set).

        Floats are written with ``repr`` (shortest round-trip form), so reading the
        text back gives an identical spec. Writes to ``path`` if given.
        """
        lines = [f"# {line}".rstrip() for line in header.splitlines()]
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            lines.append(f"# {FIELD_DOCS[f.name]}")
            lines.append(f"{f.name} = {_toml_value(value)}")
        text = "\n".join(lines) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def replace(self, **changes: Any) -> CohortSpec:
        """A copy with some fields changed, validated again."""
        names = [f.name for f in fields(self)]
        for key in changes:
            if key not in names:
                raise SpecError(f"unknown key {key!r}; allowed keys: {', '.join(names)}")
        return dataclasses.replace(self, **changes)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


# --------------------------------------------------------------------------- validation


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number))


def _validate(spec: CohortSpec) -> None:
    """Raise ``SpecError`` naming the first invalid field and its value."""

    def bad(name: str, why: str) -> SpecError:
        return SpecError(f"{name} = {getattr(spec, name)!r}: {why}")

    def number(name: str) -> float:
        value = getattr(spec, name)
        if not _is_number(value) or not math.isfinite(float(value)):
            raise bad(name, "must be a finite number")
        return float(value)

    def integer(name: str, lo: int) -> None:
        value = getattr(spec, name)
        if not _is_number(value) or float(value) != int(value) or int(value) < lo:
            raise bad(name, f"must be a whole number >= {lo}")

    def prob(name: str, lo_open: bool = True, hi_open: bool = True) -> None:
        p = number(name)
        ok = (p > 0 if lo_open else p >= 0) and (p < 1 if hi_open else p <= 1)
        if not ok:
            lo, hi = ("(" if lo_open else "["), (")" if hi_open else "]")
            raise bad(name, f"must be a probability in {lo}0, 1{hi}")

    integer("n_patients", 2)
    prob("p_infliximab", lo_open=False, hi_open=False)
    integer("crossover_week", 0)
    for name, least in (("mri_weeks", 1), ("xray_weeks", 2)):
        weeks = getattr(spec, name)
        if (
            not isinstance(weeks, tuple)
            or len(weeks) < least
            or not all(_is_number(w) and float(w) == int(w) and w >= 0 for w in weeks)
        ):
            raise bad(name, f"must be a list of at least {least} whole weeks >= 0")
        if list(weeks) != sorted(set(weeks)) or weeks[0] != 0:
            raise bad(name, "must start at week 0 (baseline) and increase strictly")
    if not isinstance(spec.vus, tuple) or not spec.vus:
        raise bad("vus", "must be a non-empty list of VU labels")
    for vu in spec.vus:
        if vu not in VU_LABELS:
            raise bad("vus", f"unknown VU {vu!r}; expected labels C2/3 … L5/S1")
    if len(set(spec.vus)) != len(spec.vus):
        raise bad("vus", "lists a VU twice")
    if not any(vu in MSASSS_VUS for vu in spec.vus):
        raise bad("vus", "needs at least one VU scored by the mSASSS (cervical or lumbar)")
    if not isinstance(spec.exposure, str):
        raise bad("exposure", "must be an exposure name")
    try:
        needed_weeks(spec.exposure, spec.mri_weeks)
    except DeriveError as exc:
        raise bad("exposure", str(exc)) from None
    t = number("threshold")
    if not 0 < t <= 6:
        raise bad("threshold", "must be an ASspiMRI-a score in (0, 6]")
    for name in (
        "odds_ratio_new",
        "odds_ratio_growth",
        "odds_ratio_arm_new",
        "odds_ratio_arm_growth",
        "odds_ratio_lumbar_new",
        "odds_ratio_corner1_new",
    ):
        if number(name) <= 0:
            raise bad(name, "an odds ratio must be > 0")
    for name in (
        "risk_new",
        "risk_growth",
        "syndesmophyte_prevalence",
        "inflammation_prevalence",
        "inflammation_prevalence_treated",
        "erosive_share",
    ):
        prob(name)
    for name in (
        "inflammation_persistence",
        "corner1_prevalence",
        "corner1_incidence",
        "growth_bridge_share",
        "reader_mri_error",
        "reader_corner_error",
        "mri_missing_rate",
        "xray_missing_rate",
    ):
        prob(name, lo_open=False, hi_open=name != "growth_bridge_share")
    for name in ("sd_syndesmophyte", "sd_inflammation"):
        if number(name) < 0:
            raise bad(name, "a standard deviation must be >= 0")
    if not -1 < number("propensity_correlation") < 1:
        raise bad("propensity_correlation", "a correlation must be in (-1, 1)")
    for name in ("baseline_extent", "new_extent"):
        ext = getattr(spec, name)
        if (
            not isinstance(ext, tuple)
            or len(ext) != 3
            or not all(_is_number(p) and p >= 0 for p in ext)
            or abs(sum(ext) - 1.0) > 1e-9
        ):
            raise bad(
                name, "must be three probabilities (one corner, both corners, bridge) that sum to 1"
            )
    integer("n_readers", 1)
    if spec.n_readers > 2:
        raise bad("n_readers", "must be 1 or 2")
    if spec.seed is not None:
        integer("seed", 0)


# --------------------------------------------------------------------------- calibration

#: Gauss–Hermite nodes and weights for E[f(Z)], Z ~ N(0, 1) (probabilists' Hermite).
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def _solve(target: float, mean_of: Any) -> float:
    """The intercept ``a`` with ``mean_of(a) == target`` (``mean_of`` increasing in a)."""
    from scipy import optimize  # imported when first needed: a power run's cold start

    return float(optimize.brentq(lambda a: mean_of(a) - target, -40.0, 40.0, xtol=1e-13))


@functools.lru_cache(maxsize=256)
def _calibrate_cached(key: tuple) -> dict[str, Any]:
    (sd_u, sd_v, prev_syn, risk_new, risk_growth, p_inf0, p_inf1, erosive) = key
    u = sd_u * _GH_NODES
    a_syn = _solve(prev_syn, lambda a: _GH_WEIGHTS @ special.expit(a + u))
    pi0 = special.expit(a_syn + u)
    w_new = _GH_WEIGHTS * (1.0 - pi0)
    w_new = w_new / w_new.sum()
    a_new = _solve(risk_new, lambda a: w_new @ special.expit(a + u))
    w_gr = _GH_WEIGHTS * pi0
    w_gr = w_gr / w_gr.sum()
    a_growth = _solve(risk_growth, lambda a: w_gr @ special.expit(a + u))
    scale = math.sqrt(1.0 + sd_v**2)
    m0 = float(special.ndtri(p_inf0)) * scale
    m1 = float(special.ndtri(p_inf1)) * scale
    # cut-point of score 4 so that P(score >= 4) = erosive_share * P(score >= 1) when
    # untreated; the others evenly spaced from 0 (illustrative spacing)
    c4 = m0 + scale * float(-special.ndtri(erosive * p_inf0))
    cut = tuple(float(k * c4 / 3.0) for k in range(6))
    return {
        "intercept_baseline_syndesmophyte": a_syn,
        "intercept_new": a_new,
        "intercept_growth": a_growth,
        "inflammation_mean_untreated": m0,
        "inflammation_mean_treated": m1,
        "mri_cutpoints": cut,
    }


def calibrate(spec: CohortSpec) -> dict[str, Any]:
    """Intercepts and latent means that make the spec's marginal rates hold.

    * ``intercept_baseline_syndesmophyte``: E_u[expit(a + u)] = syndesmophyte_prevalence;
    * ``intercept_new``: risk in unexposed at-risk VUs, averaged over u weighted by the
      chance a VU of that patient is syndesmophyte-free, equals ``risk_new``;
    * ``intercept_growth``: the same for growth, weighted by the chance of a
      syndesmophyte (the bridged share does not depend on u), equals ``risk_growth``;
    * latent MRI means ``Φ⁻¹(prevalence)·√(1+sd_inflammation²)`` and the cut-points.

    Expectations over u ~ N(0, sd²) use 80-node Gauss–Hermite quadrature (exact to
    far below Monte Carlo error). Cached, so power simulations pay for it once.
    """
    key = (
        float(spec.sd_syndesmophyte),
        float(spec.sd_inflammation),
        float(spec.syndesmophyte_prevalence),
        float(spec.risk_new),
        float(spec.risk_growth),
        float(spec.inflammation_prevalence),
        float(spec.inflammation_prevalence_treated),
        float(spec.erosive_share),
    )
    return dict(_calibrate_cached(key))


def true_parameters(spec: CohortSpec) -> dict[str, Any]:
    """The true parameters of the DGM for ``spec`` (what ``panel.truth`` holds, less the
    seed and the patients' random effects)."""
    cal = calibrate(spec)
    log = math.log
    return {
        "exposure": spec.exposure,
        "threshold": float(spec.threshold),
        "log_or_new": log(spec.odds_ratio_new),
        "or_new": float(spec.odds_ratio_new),
        "log_or_growth": log(spec.odds_ratio_growth),
        "or_growth": float(spec.odds_ratio_growth),
        "log_or_arm_new": log(spec.odds_ratio_arm_new),
        "or_arm_new": float(spec.odds_ratio_arm_new),
        "log_or_arm_growth": log(spec.odds_ratio_arm_growth),
        "or_arm_growth": float(spec.odds_ratio_arm_growth),
        "log_or_lumbar_new": log(spec.odds_ratio_lumbar_new),
        "log_or_corner1_new": log(spec.odds_ratio_corner1_new),
        "intercept_new": cal["intercept_new"],
        "intercept_growth": cal["intercept_growth"],
        "intercept_baseline_syndesmophyte": cal["intercept_baseline_syndesmophyte"],
        "sigma_syndesmophyte": float(spec.sd_syndesmophyte),
        "sigma_inflammation": float(spec.sd_inflammation),
        "propensity_correlation": float(spec.propensity_correlation),
        "inflammation_mean_untreated": cal["inflammation_mean_untreated"],
        "inflammation_mean_treated": cal["inflammation_mean_treated"],
        "inflammation_treatment_shift": cal["inflammation_mean_treated"]
        - cal["inflammation_mean_untreated"],
        "inflammation_persistence": float(spec.inflammation_persistence),
        "mri_cutpoints": list(cal["mri_cutpoints"]),
        "n_readers": int(spec.n_readers),
        "scale": {
            "new/growth/baseline syndesmophyte": "logit, conditional on u",
            "inflammation": "probit latent, conditional on v",
        },
    }


# --------------------------------------------------------------------------- the DGM


def as_generator(seed: int | np.random.SeedSequence | np.random.Generator) -> np.random.Generator:
    """A numpy ``Generator`` from an int, a ``SeedSequence`` or a ``Generator``
    (``syndesmo.checks.as_generator``; a bad seed is a ``SpecError``)."""
    return checks.as_generator(seed, error=SpecError)


def _shifted(true: np.ndarray, off: np.ndarray, up: np.ndarray, top: int) -> np.ndarray:
    return np.clip(true + off * np.where(up, 1, -1), 0, top)


def simulate_arrays(
    spec: CohortSpec, rng: int | np.random.SeedSequence | np.random.Generator
) -> dict[str, np.ndarray]:
    """One cohort as numpy arrays (fast path for power simulations; no pandas).

    Rows are patient × VU × reader in that order. Returns:

    * row arrays: ``patient`` (int code), ``vu`` (index into ``spec.vus``),
      ``reader`` (0…n_readers−1), ``region`` (code into ``derive.REGIONS``), ``arm``
      (1 = infliximab), ``mri`` (rows × MRI weeks, observed, NaN = missing),
      ``corners`` (rows × 2 × x-ray weeks, observed (upper, lower); NaN on thoracic
      VUs or missing x-rays), ``exposure_true`` (the DGM's exposure from the true
      scores);
    * ``mri_weeks``, ``xray_weeks``;
    * patient arrays (length n_patients): ``patient_arm``, ``patient_u``,
      ``patient_v`` (the random effects) and ``patient_<covariate>`` for age, male
      (1 = male), symptom_duration, hla_b27, crp, basdai, msasss_baseline.

    ``syndesmo.derive.frame.derive_arrays(arrays, outcome, exposure, threshold)`` turns
    them into outcome, exposure and eligibility.
    """
    return simulate_many(spec, [rng])[0]


def simulate_many(
    spec: CohortSpec, rngs: Sequence[int | np.random.SeedSequence | np.random.Generator]
) -> list[dict[str, np.ndarray]]:
    """``[simulate_arrays(spec, r) for r in rngs]``, computed for all cohorts at once.

    Every cohort takes its draws from its own generator, in the order
    ``simulate_arrays`` documents (the sizes of the draws do not depend on the data),
    so each result equals ``simulate_arrays(spec, r)`` array for array; only the
    arithmetic after the draws runs once over the stack of cohorts, which is what
    makes a power simulation's chunk of replicates cheap. The arrays that are the
    same for every cohort (``patient``, ``vu``, ``reader``, ``region``,
    ``mri_weeks``, ``xray_weeks``) are shared between the dicts and read-only when
    there is more than one cohort.
    """
    gens = [as_generator(r) for r in rngs]
    if not gens:
        return []
    cal = calibrate(spec)
    P, V, R = int(spec.n_patients), len(spec.vus), int(spec.n_readers)
    mri_weeks = np.asarray(spec.mri_weeks, dtype=np.int64)
    xray_weeks = np.asarray(spec.xray_weeks, dtype=np.int64)
    W, X = len(mri_weeks), len(xray_weeks)
    d = _draws(spec, gens, P, V, W, X, R)
    B = len(gens)
    region = np.array([REGIONS.index(VU_REGION[v]) for v in spec.vus], dtype=np.int8)
    scored = region != REGIONS.index("thoracic")
    lumbar = (region == REGIONS.index("lumbar")).astype(float)

    # 1. arm: exactly round(P * p) patients on infliximab
    arm = np.zeros((B, P), dtype=np.int8)
    np.put_along_axis(arm, d["order"][:, : round(P * spec.p_infliximab)], 1, axis=1)
    # 2. patient random effects
    a, b = d["a"], d["b"]
    u = spec.sd_syndesmophyte * a
    rho = float(spec.propensity_correlation)
    v = spec.sd_inflammation * (b if rho == 0 else rho * a + math.sqrt(1.0 - rho**2) * b)
    # 3. inflammation: latent Z (P, V, W) → ASspiMRI-a score 0-6
    treated = np.where(
        arm[:, :, None] == 1, mri_weeks > 0, mri_weeks > spec.crossover_week
    )  # B, P, W
    m = np.where(treated, cal["inflammation_mean_treated"], cal["inflammation_mean_untreated"])
    r = spec.inflammation_persistence
    z = m[:, :, None, :] + v[:, :, None, None] + math.sqrt(r) * d["persistent"][..., None]
    transient = d["transient"]  # this call's own draws, read once: scaled in place
    z += np.multiply(transient, math.sqrt(1.0 - r), out=transient)
    # the number of cut-points below Z (np.searchsorted(cuts, z, side="left")), counted
    mri_true = np.zeros(z.shape, dtype=np.int8)
    above = np.empty(z.shape, dtype=bool)
    for cut in cal["mri_cutpoints"]:
        mri_true += np.greater(z, cut, out=above)

    # 4. baseline syndesmophytes: state 0 none, 1 one corner, 2 both corners, 3 bridge
    has_syn = d["has_syn"] < special.expit(cal["intercept_baseline_syndesmophyte"] + u)[..., None]
    cum = np.cumsum(spec.baseline_extent)
    state = np.where(has_syn, _extent(d["extent"], cum), 0)
    side_upper = d["side"] < 0.5
    corner1 = d["corner1"] < spec.corner1_prevalence
    base = _corners_of_state(state, side_upper, corner1.astype(np.int8))

    # 5. exposure from the true MRI scores
    x = exposure_values(
        mri_true.reshape(B * P * V, W), mri_weeks, spec.exposure, spec.threshold
    ).reshape(B, P, V)
    # 6. new syndesmophytes and growth
    eta_new = (
        cal["intercept_new"]
        + math.log(spec.odds_ratio_new) * x
        + math.log(spec.odds_ratio_arm_new) * arm[..., None]
        + math.log(spec.odds_ratio_lumbar_new) * lumbar
        + math.log(spec.odds_ratio_corner1_new) * (np.maximum(base[..., 0], base[..., 1]) == 1)
        + u[..., None]
    )
    new = (state == 0) & (d["new"] < special.expit(eta_new))
    new_cum = np.cumsum(spec.new_extent)
    new_state = _extent(d["new_extent"], new_cum)
    new_side_upper = d["new_side"] < 0.5
    eta_gr = (
        cal["intercept_growth"]
        + math.log(spec.odds_ratio_growth) * x
        + math.log(spec.odds_ratio_arm_growth) * arm[..., None]
        + u[..., None]
    )
    can_grow = (state == 1) | (state == 2)
    grow = can_grow & (d["grow"] < special.expit(eta_gr))
    bridge = (state == 2) | (d["bridge"] < spec.growth_bridge_share)
    final_state = np.where(new, new_state, state)
    final_state = np.where(grow, np.where(bridge, 3, 2), final_state)
    final_side = np.where(new, new_side_upper, side_upper)
    gained1 = d["gained1"] < spec.corner1_incidence
    last = _corners_of_state(
        final_state, final_side, np.maximum(base == 1, gained1).astype(np.int8)
    )
    last = np.maximum(last, base)  # no regression in the DGM
    when = d["when"] * xray_weeks[-1]  # time of the change
    # a change shows at x-ray weeks after it (week 0 is baseline): B, P, V, 2, X
    corners_true = np.empty((*base.shape, X), dtype=np.int8)
    for k, week in enumerate(xray_weeks):
        corners_true[..., k] = base
        if week > 0:
            np.copyto(corners_true[..., k], last, where=(week >= when)[..., None])

    # 9. patient covariates (drawn before readers and missingness)
    cov = _covariates(spec, u, v, d)

    # 7. readers
    if R == 1:
        mri_obs = mri_true[:, :, :, None, :].astype(float)
        reader_corners = corners_true[:, :, :, None, :, :]
    else:
        mri_obs = np.stack(
            [_shifted(mri_true, d[f"mri_off{k}"], d[f"mri_up{k}"], 6) for k in range(R)],
            axis=3,
        ).astype(float)
        reader_corners = np.stack(
            [_shifted(corners_true, d[f"c_off{k}"], d[f"c_up{k}"], 3) for k in range(R)],
            axis=3,
        )
    corners_obs = reader_corners.astype(float)
    # 8. missing images, per patient and week
    mri_miss = d["mri_miss"] < spec.mri_missing_rate
    xray_miss = d["xray_miss"] < spec.xray_missing_rate
    # (masks applied only where they mask something: the same arrays, less work)
    if mri_miss.any():
        mri_obs[np.broadcast_to(mri_miss[:, :, None, None, :], mri_obs.shape)] = np.nan
    if xray_miss.any() or not scored.all():
        xmask = xray_miss[:, :, None, None, None, :] | ~scored[:, None, None, None]
        corners_obs[np.broadcast_to(xmask, corners_obs.shape)] = np.nan

    # (the sums of whole scores before the missing x-rays are masked: a patient whose
    # baseline x-ray is missing gets NaN below, as nansum of all-NaN rows did)
    first_xray = reader_corners[..., 0]  # B, P, V, R, corner
    vu_total = first_xray[..., 0] + first_xray[..., 1]  # at most 6: int8 holds it
    totals = vu_total[:, :, scored].sum(axis=2, dtype=np.int64)  # B, P, R
    msasss = totals.astype(float).mean(axis=2)
    msasss[xray_miss[..., 0]] = np.nan

    n = P * V * R
    shared = {
        "patient": np.repeat(np.arange(P, dtype=np.int64), V * R),
        "vu": np.tile(np.repeat(np.arange(V, dtype=np.int64), R), P),
        "reader": np.tile(np.arange(R, dtype=np.int64), P * V),
        "region": np.tile(np.repeat(region, R), P),
        "mri_weeks": mri_weeks,
        "xray_weeks": xray_weeks,
    }
    if B > 1:
        for arr in shared.values():
            arr.flags.writeable = False
    each = {
        "arm": np.repeat(arm, V * R, axis=1),
        "mri": mri_obs.reshape(B, n, W),
        "corners": corners_obs.reshape(B, n, 2, X),
        "exposure_true": np.repeat(x.reshape(B, P * V), R, axis=1),
        "patient_arm": arm,
        "patient_u": u,
        "patient_v": v,
        "patient_msasss_baseline": msasss,
    }
    each.update({f"patient_{k}": val for k, val in cov.items()})
    # keys in the order simulate_arrays has always returned them
    rows = ("arm", "mri", "corners", "exposure_true")
    keys = [*_ROW_KEYS, *rows, *_WEEK_KEYS, *(k for k in each if k not in rows)]
    per = [each.get(k) for k in keys]
    return [
        {k: shared[k] if a is None else a[i] for k, a in zip(keys, per, strict=True)}
        for i in range(B)
    ]


_ROW_KEYS = ("patient", "vu", "reader", "region")
_WEEK_KEYS = ("mri_weeks", "xray_weeks")


def _draws(
    spec: CohortSpec, gens: Sequence[np.random.Generator], P: int, V: int, W: int, X: int, R: int
) -> dict[str, np.ndarray]:
    """All random numbers of the cohorts, ``(len(gens), ...)`` arrays: each cohort's
    from its own generator, in the order the DGM has always drawn them (consecutive
    draws of one kind are taken in one call and split: the same numbers). Drawn
    straight into the stacked arrays."""
    B, pv = len(gens), P * V
    order = np.empty((B, P), dtype=np.int64)
    normal1 = np.empty((B, 2 * P))  # a, b
    normal2 = np.empty((B, pv * (1 + W)))  # persistent, transient
    uniform1 = np.empty((B, 5 * pv))
    uniform2 = np.empty((B, 8 * pv))
    covs = np.empty((len(_COVARIATE_DRAWS), B, P))
    mri_miss = np.empty((B, P, W))
    xray_miss = np.empty((B, P, X))
    if R > 1:
        readers = np.empty((B, R, 2, P, V, W))
        corners = np.empty((B, R, 2, P, V, 2, X))
    for i, rng in enumerate(gens):
        order[i] = rng.permutation(P)
        rng.standard_normal(out=normal1[i])
        rng.standard_normal(out=normal2[i])
        rng.random(out=uniform1[i])
        rng.random(out=uniform2[i])
        for k, (_, kind) in enumerate(_COVARIATE_DRAWS):
            if kind == "normal":
                rng.standard_normal(out=covs[k, i])
            else:
                rng.random(out=covs[k, i])
        if R > 1:
            for k in range(R):  # per reader: which MRI scores move, and up or down
                rng.random(out=readers[i, k, 0])
                rng.random(out=readers[i, k, 1])
            for k in range(R):  # the same for corner scores
                rng.random(out=corners[i, k, 0])
                rng.random(out=corners[i, k, 1])
        rng.random(out=mri_miss[i])
        rng.random(out=xray_miss[i])

    def part(a: np.ndarray, k: int, *shape: int) -> np.ndarray:
        return a[:, k * pv : k * pv + int(np.prod(shape))].reshape(B, *shape)

    d = {
        "order": order,
        "a": normal1[:, :P],
        "b": normal1[:, P:],
        "persistent": normal2[:, :pv].reshape(B, P, V),
        "transient": normal2[:, pv:].reshape(B, P, V, W),
        "has_syn": part(uniform1, 0, P, V),
        "extent": part(uniform1, 1, P, V),
        "side": part(uniform1, 2, P, V),
        "corner1": part(uniform1, 3, P, V, 2),
        "gained1": part(uniform2, 5, P, V, 2),
        "when": part(uniform2, 7, P, V),
        "mri_miss": mri_miss,
        "xray_miss": xray_miss,
    }
    for k, name in enumerate(("new", "new_extent", "new_side", "grow", "bridge")):
        d[name] = part(uniform2, k, P, V)
    for k, (name, _) in enumerate(_COVARIATE_DRAWS):
        d[f"cov_{name}"] = covs[k]
    for k in range(R if R > 1 else 0):
        d[f"mri_off{k}"] = readers[:, k, 0] < spec.reader_mri_error
        d[f"mri_up{k}"] = readers[:, k, 1] < 0.5
        d[f"c_off{k}"] = corners[:, k, 0] < spec.reader_corner_error
        d[f"c_up{k}"] = corners[:, k, 1] < 0.5
    return d


def _extent(draw: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """1, 2 or 3: how many of the first two cumulative probabilities ``draw`` reaches, + 1."""
    return 1 + (draw >= cum[0]).astype(np.int8) + (draw >= cum[1])


def _corners_of_state(state: np.ndarray, side_upper: np.ndarray, ones: np.ndarray) -> np.ndarray:
    """(…, 2) corner scores (upper, lower) of VU states: 0 none (corners 0/1 from
    ``ones``), 1 one corner 2 (``side_upper`` says which), 2 both 2, 3 bridge (3, 3)."""
    out = np.empty((*state.shape, 2), dtype=np.int8)
    out[...] = ones
    one, both = state == 1, state == 2
    np.copyto(out[..., 0], 2, where=both | (one & side_upper))
    np.copyto(out[..., 1], 2, where=both | (one & ~side_upper))
    out[state == 3] = 3
    return out


#: The covariates' draws, in the order they are drawn.
_COVARIATE_DRAWS = (
    ("age", "normal"),
    ("sex", "binary"),
    ("symptom_duration", "normal"),
    ("hla_b27", "binary"),
    ("crp", "normal"),
    ("basdai", "normal"),
)


def _covariates(
    spec: CohortSpec, u: np.ndarray, v: np.ndarray, d: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Patient covariates, each a proxy of one propensity (see ``_COVARIATES``)."""
    su = u / spec.sd_syndesmophyte if spec.sd_syndesmophyte > 0 else np.zeros_like(u)
    sv = v / spec.sd_inflammation if spec.sd_inflammation > 0 else np.zeros_like(v)

    def normal(name: str, prop: np.ndarray) -> np.ndarray:
        mean, sd, rho = _COVARIATES[name]
        return mean + sd * (rho * prop + math.sqrt(1.0 - rho**2) * d[f"cov_{name}"])

    def binary(name: str, prop: np.ndarray) -> np.ndarray:
        share, _, beta = _COVARIATES[name]
        return (d[f"cov_{name}"] < special.expit(special.logit(share) + beta * prop)).astype(
            np.int8
        )

    age = np.clip(normal("age", su), 18.0, 80.0)
    male = binary("sex", su)
    duration = np.clip(normal("symptom_duration", su), 0.5, None)
    b27 = binary("hla_b27", su)
    crp = np.exp(normal("crp", sv))
    basdai = np.clip(normal("basdai", sv), 0.0, 10.0)
    return {
        "age": age,
        "male": male,
        "symptom_duration": duration,
        "hla_b27": b27,
        "crp": crp,
        "basdai": basdai,
    }


# --------------------------------------------------------------------------- panel


def _patient_ids(n: int) -> list[str]:
    width = max(3, len(str(n)))
    return [f"P{i + 1:0{width}d}" for i in range(n)]


def simulate_cohort(
    spec: CohortSpec,
    seed: int | np.random.SeedSequence | np.random.Generator | None = None,
) -> VUPanel:
    """Simulate a cohort of the data-generating model as a ``VUPanel``.

    The draws are those of ``simulate_arrays`` (the module docstring gives the
    model), from one Generator made from ``seed``, so the same spec and seed give
    the same cohort. Columns are described in ``data/synthetic/DATA_DICTIONARY.md``.

    Parameters
    ----------
    spec : CohortSpec
        The parameters of the data-generating model.
    seed : int, numpy.random.SeedSequence or numpy.random.Generator, optional
        The seed of the draws; defaults to ``spec.seed``.

    Returns
    -------
    VUPanel
        VU table, one row per patient × VU (× reader) in that order: ``patient``
        (``P001``, …), ``vu``, [``reader`` 1, 2, only with ``spec.n_readers`` = 2],
        ``mri_w{week}`` for each of ``spec.mri_weeks``, ``msasss_upper_w{week}`` and
        ``msasss_lower_w{week}`` for each of ``spec.xray_weeks`` (NaN where a score
        is missing or, for the corners, on thoracic VUs). Patient table:
        ``patient``, ``arm`` (placebo/infliximab), ``age``, ``sex`` (male/female),
        ``symptom_duration``, ``hla_b27`` (0/1), ``crp``, ``basdai`` (``age``,
        ``symptom_duration``, ``crp`` and ``basdai`` rounded to 1 decimal) and
        ``msasss_baseline``. ``truth`` holds the true parameters
        (``true_parameters``) and ``seed`` (the int seed; None for a
        ``SeedSequence`` or ``Generator``), ``spec`` (``spec.to_dict()``) and
        ``random_effects`` (each patient's syndesmophyte and inflammation
        propensities, ``u`` and ``v``). ``source`` is
        ``"simulate_cohort(seed=<seed>)"`` for an int seed, else ``"simulate_cohort"``.

    Raises
    ------
    SpecError
        If there is no seed (``seed`` None and ``spec.seed`` None) or the seed is
        not a non-negative int, a ``SeedSequence`` or a ``Generator``.

    See Also
    --------
    simulate_arrays : The same cohort as numpy arrays.
    write_cohort : Writes the two tables as CSV.
    """
    if seed is None:
        seed = spec.seed
    if seed is None:
        raise SpecError("no seed: pass seed=… or set 'seed' in the spec")
    arrays = simulate_arrays(spec, as_generator(seed))
    ids = _patient_ids(spec.n_patients)
    pid = np.array(ids, dtype=object)
    vu = pd.DataFrame(
        {
            "patient": pid[arrays["patient"]],
            "vu": np.array(spec.vus, dtype=object)[arrays["vu"]],
        }
    )
    if spec.n_readers > 1:
        vu["reader"] = arrays["reader"] + 1
    for j, w in enumerate(spec.mri_weeks):
        vu[f"mri_w{w}"] = arrays["mri"][:, j]
    for c, corner in enumerate(("upper", "lower")):
        for j, w in enumerate(spec.xray_weeks):
            vu[f"msasss_{corner}_w{w}"] = arrays["corners"][:, c, j]

    def r1(a: np.ndarray) -> np.ndarray:
        return np.round(a, 1)

    patients = pd.DataFrame(
        {
            "patient": ids,
            "arm": np.where(arrays["patient_arm"] == 1, "infliximab", "placebo"),
            "age": r1(arrays["patient_age"]),
            "sex": np.where(arrays["patient_male"] == 1, "male", "female"),
            "symptom_duration": r1(arrays["patient_symptom_duration"]),
            "hla_b27": arrays["patient_hla_b27"].astype(np.int64),
            "crp": r1(arrays["patient_crp"]),
            "basdai": r1(arrays["patient_basdai"]),
            "msasss_baseline": arrays["patient_msasss_baseline"],
        }
    )
    truth = true_parameters(spec)
    truth["seed"] = int(seed) if isinstance(seed, (int, np.integer)) else None
    truth["spec"] = spec.to_dict()
    truth["random_effects"] = {
        "patient": ids,
        "syndesmophyte": arrays["patient_u"].tolist(),
        "inflammation": arrays["patient_v"].tolist(),
    }
    source = f"simulate_cohort(seed={seed})" if truth["seed"] is not None else "simulate_cohort"
    from syndesmo.panel.tables import VUPanel

    return VUPanel(vu, patients, truth=truth, source=source)


#: File names ``write_cohort`` writes.
VU_FILE, PATIENTS_FILE = "vu.csv", "patients.csv"


def write_cohort(panel: VUPanel, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``vu.csv`` and ``patients.csv`` to ``out_dir`` (created if needed).

    The one place a simulated cohort is formatted: ``VUPanel.save`` writes whole
    scores as integers, empty cells for missing values, ``\\n`` line ends and other
    floats in Python's shortest round-trip form (the covariates were rounded to
    one decimal by ``simulate_cohort``), so the same spec and seed give the same
    bytes on any machine.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vu_path, patients_path = out / VU_FILE, out / PATIENTS_FILE
    panel.save(vu_path, patients_path)
    return vu_path, patients_path
