"""The words of the package, each defined once: outcomes, exposures, reader rules,
the reference arm, covariates and their labels.

Everything that names an analysis — the frame layer, the specs, the ladder, the
patient level, the power simulation, the reports and the command line — reads its
words from here, so a name means and reads the same everywhere. Pure Python: no
numpy or pandas, so the command line can use it for its choices and still start fast.

**The exposure grammar** (inflamed = ASspiMRI-a ≥ threshold; weeks are the panel's
own MRI weeks, baseline = the first MRI week):

* ``w<week>`` — inflamed at that week, e.g. ``w0``, ``w12``, ``w102``;
* ``w<a>_and_w<b>`` / ``w<a>_or_w<b>`` — at both / at either of two or more weeks
  named in increasing order with one operator, e.g. ``w0_and_w24`` (persistent),
  ``w12_or_w52``, ``w0_and_w12_and_w52``;
* ``any``, ``all``, ``never`` — at some / every / no MRI week;
* ``resolved`` — inflamed at baseline, at no later week; ``new`` — not at baseline,
  at some later week (both need two MRI weeks or more);
* ``n_timepoints`` — the number of weeks inflamed; ``max_score`` — the highest
  score over the weeks (a score, the threshold is not used).

:func:`parse_exposure` reads a name (and, given the panel's MRI weeks, checks that
it can be derived); :func:`exposure_label` gives its words for tables and plots.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from syndesmo.errors import DeriveError

# --------------------------------------------------------------------------- outcomes

#: VU-level outcomes (``syndesmo.derive.frame``).
VU_OUTCOMES: tuple[str, ...] = ("new_syndesmophyte", "growth")
#: Patient-level outcomes (``syndesmo.analysis.patient``).
PATIENT_OUTCOMES: tuple[str, ...] = ("any_new", "n_new", "msasss_progression")
#: Words for the outcomes (tables, plots, report).
OUTCOME_LABELS: dict[str, str] = {
    "new_syndesmophyte": "new syndesmophyte",
    "growth": "growth of a syndesmophyte",
    "any_new": "any new syndesmophyte",
    "n_new": "number of new syndesmophytes",
    "msasss_progression": "mSASSS progression ≥ 2 units",
}


def outcome_label(outcome: str) -> str:
    """Words for an outcome, e.g. ``'new syndesmophyte'``; the name itself if unknown."""
    return OUTCOME_LABELS.get(outcome, outcome)


# --------------------------------------------------------------------------- exposures

#: Exposures over all MRI weeks, in the order they are listed.
ALL_WEEK_EXPOSURES: tuple[str, ...] = ("any", "all", "never")
#: Exposures comparing baseline with the later weeks (need two MRI weeks or more).
CHANGE_EXPOSURES: tuple[str, ...] = ("resolved", "new")
#: Exposures that hold a count or a score rather than 0/1.
COUNT_EXPOSURES: tuple[str, ...] = ("n_timepoints", "max_score")
#: The grammar in a few words, for messages.
EXPOSURE_GRAMMAR = (
    "w<week>, w<a>_and_w<b>, w<a>_or_w<b> (e.g. w0, w0_and_w24, w12_or_w52), "
    + ", ".join((*ALL_WEEK_EXPOSURES, *CHANGE_EXPOSURES, *COUNT_EXPOSURES))
)

_FIXED_LABELS: dict[str, str] = {
    "any": "inflamed at any time point",
    "all": "inflamed at every time point",
    "never": "never inflamed",
    "resolved": "inflamed at baseline, resolved later",
    "new": "not inflamed at baseline, inflamed later",
    "n_timepoints": "number of time points inflamed (per point)",
    "max_score": "maximum ASspiMRI-a score (per point)",
}
_WEEK = r"w(0|[1-9][0-9]*)"
_WEEK_RE = re.compile(rf"^{_WEEK}$")
_WEEKS_RE = re.compile(rf"^{_WEEK}((?:_(?:and|or)_{_WEEK})+)$")


@dataclass(frozen=True)
class Exposure:
    """A parsed exposure name.

    ``kind`` is ``"week"`` (one week), ``"and"``/``"or"`` (two or more weeks), or the
    name itself for the exposures over all weeks (``any``, ``all``, ``never``,
    ``resolved``, ``new``, ``n_timepoints``, ``max_score``); ``weeks`` holds the weeks
    the name spells out (empty for the all-week exposures).
    """

    name: str
    kind: str
    weeks: tuple[int, ...] = ()

    @property
    def binary(self) -> bool:
        """True for 0/1 exposures, False for ``n_timepoints`` and ``max_score``."""
        return self.kind not in COUNT_EXPOSURES

    @property
    def single_week(self) -> bool:
        """True for ``w<week>``."""
        return self.kind == "week"

    @property
    def label(self) -> str:
        """Words for tables and plots, e.g. ``'inflamed at week 12 or week 52'``."""
        if self.kind in _FIXED_LABELS:
            return _FIXED_LABELS[self.kind]
        words = [week_words(w) for w in self.weeks]
        if len(words) == 1:
            return f"inflamed at {words[0]}"
        return f"inflamed at {', '.join(words[:-1])} {self.kind} {words[-1]}"

    def needed_weeks(self, mri_weeks: Sequence[int]) -> list[int]:
        """The MRI weeks the exposure needs: the weeks it names, else all of them."""
        return list(self.weeks) if self.weeks else sorted(int(w) for w in mri_weeks)


def week_words(week: int) -> str:
    """``'baseline'`` for week 0, else ``'week 12'``."""
    return "baseline" if int(week) == 0 else f"week {int(week)}"


def available_exposures(mri_weeks: Sequence[int]) -> list[str]:
    """The exposure names listed for MRI at ``mri_weeks`` (every single week, every
    pair of weeks with ``and``/``or``, then the all-week ones).

    Combinations of three weeks or more (``w0_and_w12_and_w52``) are accepted too,
    but not listed.
    """
    weeks = sorted(int(w) for w in mri_weeks)
    names = [f"w{w}" for w in weeks]
    for i, a in enumerate(weeks):
        for b in weeks[i + 1 :]:
            names += [f"w{a}_and_w{b}", f"w{a}_or_w{b}"]
    names += list(ALL_WEEK_EXPOSURES)
    if len(weeks) >= 2:
        names += list(CHANGE_EXPOSURES)
    return [*names, *COUNT_EXPOSURES]


def parse_exposure(name: object, mri_weeks: Sequence[int] | None = None) -> Exposure:
    """Read an exposure name of the grammar (module docstring).

    Parameters
    ----------
    name : str
        The exposure, e.g. ``"w12"``, ``"w12_or_w52"``, ``"any"``.
    mri_weeks : sequence of int, optional
        The panel's MRI weeks. When given, the weeks the name spells out must be
        among them (and ``resolved``/``new`` need two weeks or more).

    Returns
    -------
    Exposure

    Raises
    ------
    DeriveError
        For a name outside the grammar, or one the MRI weeks cannot give; the
        message lists the exposures available.
    """
    exposure = _parse(name)
    if mri_weeks is None:
        if exposure is None:
            raise DeriveError(f"unknown exposure {name!r}; exposures are {EXPOSURE_GRAMMAR}")
        return exposure
    weeks = sorted(int(w) for w in mri_weeks)
    ok = exposure is not None and (
        set(exposure.weeks) <= set(weeks)
        and not (exposure.kind in CHANGE_EXPOSURES and len(weeks) < 2)
    )
    if not ok:
        raise DeriveError(
            f"unknown exposure {name!r} for MRI weeks {weeks}; available exposures: "
            + ", ".join(available_exposures(weeks))
        )
    return exposure


def _parse(name: object) -> Exposure | None:
    if not isinstance(name, str):
        return None
    if name in _FIXED_LABELS:
        return Exposure(name, name)
    m = _WEEK_RE.match(name)
    if m:
        return Exposure(name, "week", (int(m.group(1)),))
    m = _WEEKS_RE.match(name)
    if m is None:
        return None
    parts = re.split(r"_(and|or)_", name)
    weeks = tuple(int(p[1:]) for p in parts[0::2])
    operators = set(parts[1::2])
    if len(operators) != 1 or list(weeks) != sorted(set(weeks)):
        return None  # one operator; weeks distinct and in increasing order
    return Exposure(name, operators.pop(), weeks)


def exposure_label(name: str) -> str:
    """Words for an exposure (``'inflamed at week 12'``); the name itself if unknown."""
    exposure = _parse(name)
    return name if exposure is None else exposure.label


# --------------------------------------------------------------------------- readers

#: How two or more readers' scores are combined (``syndesmo.derive.frame``).
READER_RULES: tuple[str, ...] = ("mean", "agree", "per_reader")
#: Other spellings of a reader rule.
READER_ALIASES: dict[str, str] = {"reader": "per_reader"}


def reader_rule(readers: object) -> str:
    """The canonical reader rule (``"reader"`` → ``"per_reader"``).

    Raises
    ------
    DeriveError
        For an unknown rule, listing the rules.
    """
    rule = READER_ALIASES.get(readers, readers) if isinstance(readers, str) else readers
    if rule not in READER_RULES:
        raise DeriveError(
            f"unknown readers rule {readers!r}; choose one of {', '.join(READER_RULES)}"
        )
    return str(rule)


# --------------------------------------------------------------------------- patient level

#: How VU exposures are summed up per patient.
SUMMARIES: tuple[str, ...] = ("any", "count", "total")


# --------------------------------------------------------------------------- the reference arm

#: Column of the treatment arm.
ARM = "arm"
#: Arm names taken as the control (compared case-insensitively): the first of these
#: present is the reference arm unless one is chosen explicitly.
CONTROL_ARMS: tuple[str, ...] = ("placebo", "pbo", "control")


def reference_first(arms: Iterable[object], reference: object = None) -> list:
    """The distinct arms in model order: the reference arm first, the others sorted.

    Parameters
    ----------
    arms : iterable
        Arm values (repeats and missing values are ignored).
    reference : optional
        The reference arm, chosen explicitly; compared case-insensitively when no
        arm matches it exactly. Default: the first of :data:`CONTROL_ARMS` present
        (case-insensitive), else no arm moves (sorted order).

    Returns
    -------
    list
        The arms, reference first.

    Raises
    ------
    DeriveError
        When ``reference`` is not one of the arms.
    """
    levels = sorted({a for a in arms if not _missing(a)}, key=str)
    if reference is not None:
        exact = [a for a in levels if a == reference or str(a) == str(reference)]
        match = exact or [a for a in levels if _fold(a) == _fold(reference)]
        if len(match) != 1:
            raise DeriveError(
                f"reference arm {reference!r} is not an arm of the data; arms: "
                + ", ".join(map(str, levels))
            )
        chosen = match[0]
    else:
        folded = {_fold(a): a for a in reversed(levels)}
        chosen = next((folded[w] for w in CONTROL_ARMS if w in folded), None)
    if chosen is not None:
        levels.remove(chosen)
        levels.insert(0, chosen)
    return levels


def _fold(value: object) -> str:
    return " ".join(str(value).replace("_", " ").replace("-", " ").split()).casefold()


def _missing(value: object) -> bool:
    if value is None or type(value).__name__ == "NAType":
        return True
    return isinstance(value, float) and value != value


# --------------------------------------------------------------------------- covariates


@dataclass(frozen=True)
class Covariate:
    """A covariate the package knows by name.

    ``level`` is ``"patient"`` or ``"vu"``; ``simulated`` the key of
    ``syndesmo.simulate.cohort.simulate_arrays`` that holds it (``""`` for the VU
    covariates, which come from the derived arrays); ``scale`` says how it enters a
    model, the same in the analysis frame, the power simulation and the simulation
    checks.
    """

    name: str
    label: str
    level: str
    simulated: str
    scale: str


#: The covariates of the simulated cohorts and of the published analysis. Every one
#: enters a model as it is recorded (``crp`` in mg/L: write ``log(crp)`` in a formula
#: for the log scale).
COVARIATES: dict[str, Covariate] = {
    c.name: c
    for c in (
        Covariate("arm", "treatment arm", "patient", "patient_arm", "reference arm = 0, other = 1"),
        Covariate("age", "age", "patient", "patient_age", "years"),
        Covariate("sex", "sex", "patient", "patient_male", "male = 1, female = 0"),
        Covariate(
            "symptom_duration", "symptom duration", "patient", "patient_symptom_duration", "years"
        ),
        Covariate("hla_b27", "HLA-B27", "patient", "patient_hla_b27", "positive = 1"),
        Covariate("crp", "C-reactive protein", "patient", "patient_crp", "mg/L, as recorded"),
        Covariate("basdai", "BASDAI", "patient", "patient_basdai", "0-10"),
        Covariate(
            "msasss_baseline", "baseline mSASSS", "patient", "patient_msasss_baseline", "0-72"
        ),
        Covariate("region", "spinal region", "vu", "", "lumbar = 1, cervical = 0"),
        Covariate(
            "baseline_corner", "highest baseline corner score", "vu", "", "mSASSS corner score 0-3"
        ),
    )
}
#: Other names of covariates in the simulation checks: ``lumbar`` is ``region``
#: (lumbar = 1) and ``male`` is ``sex`` (male = 1).
COVARIATE_ALIASES: dict[str, str] = {"lumbar": "region", "male": "sex"}
#: VU-level covariates the analysis frame always carries.
VU_COVARIATES: tuple[str, ...] = tuple(c.name for c in COVARIATES.values() if c.level == "vu")
#: Patient covariates of the simulated cohorts.
PATIENT_COVARIATES: tuple[str, ...] = tuple(
    c.name for c in COVARIATES.values() if c.level == "patient"
)
#: Columns the analysis frame makes itself: never covariates of a spec.
RESERVED_NAMES: tuple[str, ...] = ("mri", "patient", "vu", *VU_OUTCOMES, *PATIENT_OUTCOMES)


def covariate(name: str) -> Covariate:
    """The :class:`Covariate` of a name or alias; ``DeriveError`` listing them if unknown."""
    key = COVARIATE_ALIASES.get(name, name)
    if key not in COVARIATES:
        names = [*COVARIATES, *COVARIATE_ALIASES]
        raise DeriveError(f"unknown covariate {name!r}; choose one of {', '.join(names)}")
    return COVARIATES[key]
