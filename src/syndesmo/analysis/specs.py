"""Analysis specs as TOML: one file per analysis, validated before anything is fitted.

A spec says what to model, not how the numbers come out::

    name = "new_syndesmophyte"           # optional; default: the file name
    title = "New syndesmophytes, VU level"
    level = "vu"                          # "vu" (GLMM / GEE ladder) or "patient"
    outcome = "new_syndesmophyte"         # vu: new_syndesmophyte | growth
    exposure = ["w0", "w24", "any"]       # one name or a list (the exposure grammar)
    threshold = 1                         # ASspiMRI-a score that counts as inflamed
    covariates = ["arm", "baseline_corner", "region"]   # or log(crp), scale(age), ...
    engine = "native"                     # vu: native | lme4 | gee | logit | bayes | clogit
    nagq = 1                              # 1 = Laplace; > 1 adaptive Gauss-Hermite
    readers = "mean"                      # how two x-ray readers are combined
    beside = ["gee"]                      # engines fitted beside the GLMM in the ladder
    reference_arm = "placebo"             # optional; default: the placebo-like arm

Exposures follow the grammar of ``syndesmo.vocabulary`` (``w12``, ``w0_and_w24``,
``w12_or_w52``, ``any``, ``never``, ``resolved``, ``new``, ``n_timepoints``,
``max_score``, …); the weeks are checked against the panel's MRI weeks when the
spec is run. ``reference_arm`` is the arm ``arm`` compares against; without it the
placebo-like arm (``placebo``, ``PBO``, ``control``, any case) is the reference.

Patient-level specs (``level = "patient"``) take ``outcome`` = ``any_new`` |
``n_new`` | ``msasss_progression``, ``summary`` = ``any`` | ``count`` | ``total``
(how VU exposures are summed up per patient) and ``engine`` = ``logit`` |
``poisson`` | ``negbin``. The engines allowed at each level come from the registry
(``sy.available_engines()``): at the VU level those of the binomial family, at the
patient level those that ignore clustering.

``load_spec`` raises ``SpecError`` naming the file, the key and the allowed keys or
values. Each covariate becomes formula text, so it must be a column name or an
allowed transform of one column (``log(crp)``, ``scale(age)``, ``C(reader)``; a name
that is not a plain word in backticks), checked as the formula is
(``syndesmo.fitting.formula``): anything else is refused before any data is read.
The columns themselves are checked later, against the panel.
The files in ``models/assert/`` make up the reproduction run by
``syndesmo reproduce``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from syndesmo.checks import check_choice, check_nagq, check_number
from syndesmo.errors import DeriveError, ModelError, SpecError
from syndesmo.fitting import registry
from syndesmo.fitting.formula import check_term
from syndesmo.resources import shipped_specs_candidates
from syndesmo.vocabulary import (
    PATIENT_OUTCOMES,
    READER_ALIASES,
    READER_RULES,
    RESERVED_NAMES,
    SUMMARIES,
    VU_OUTCOMES,
    parse_exposure,
)

LEVELS = ("vu", "patient")
#: Largest ``nagq`` of any engine.
MAX_NAGQ = registry.max_nagq()


def vu_engines() -> tuple[str, ...]:
    """Engines of a VU-level spec: those for a 0/1 outcome (binomial family)."""
    return registry.engine_names(family=registry.BINOMIAL)


def beside_engines() -> tuple[str, ...]:
    """Engines that may go beside the GLMM in a ladder: binomial, with a grouping bar."""
    return registry.engine_names(family=registry.BINOMIAL, needs_group=True)


def patient_engines() -> tuple[str, ...]:
    """Engines of a patient-level spec (one row per patient): those ignoring clustering."""
    return registry.engine_names(scale=registry.UNCLUSTERED)


def quadrature_engines() -> tuple[str, ...]:
    """Engines that integrate a random intercept and so take ``nagq``."""
    return registry.engine_names(takes_nagq=True)


READERS = (*READER_RULES, *READER_ALIASES)
#: Words that cannot be covariates because the analysis frame uses them itself.
RESERVED = RESERVED_NAMES

KEYS: dict[str, str] = {
    "name": "short name used for output files",
    "title": "one-line description for tables and the report",
    "level": f"one of {list(LEVELS)}",
    "outcome": "vu: new_syndesmophyte | growth; patient: any_new | n_new | msasss_progression",
    "exposure": "an exposure name or a list of them",
    "threshold": "ASspiMRI-a score (0-6) from which a VU counts as inflamed",
    "covariates": "list of column names adjusted for (the full model), or transforms of "
    "one column such as log(crp) or scale(age)",
    "engine": "how the model is fitted",
    "nagq": "quadrature points (1 = Laplace)",
    "readers": f"one of {list(READERS)}",
    "beside": "engines fitted beside the GLMM in the ladder (vu level)",
    "summary": f"patient level: one of {list(SUMMARIES)}",
    "reference_arm": "the arm that arm terms compare against (default: the placebo-like arm)",
}


@dataclass(frozen=True)
class ModelSpec:
    """A validated analysis spec (see the module docstring for the keys)."""

    name: str
    level: str = "vu"
    outcome: str = "new_syndesmophyte"
    exposures: tuple[str, ...] = ("w0",)
    threshold: float = 1
    covariates: tuple[str, ...] = ("arm",)
    engine: str = registry.DEFAULT_ENGINE
    nagq: int = 1
    readers: str = "mean"
    beside: tuple[str, ...] = (registry.MARGINAL_ENGINE,)
    summary: str = "any"
    title: str = ""
    reference_arm: str | None = None
    source: str = field(default="", compare=False)

    @property
    def confounders(self) -> list[str]:
        """The covariates other than the treatment arm (step d of the ladder)."""
        return [c for c in self.covariates if c != "arm"]

    def with_options(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed and validated again (e.g. engine, nagq)."""
        data = {k: v for k, v in changes.items() if v is not None}
        return validate(
            {**_as_toml(self), **_as_toml_changes(data)}, source=self.source or self.name
        )


def _as_toml(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "title": spec.title,
        "level": spec.level,
        "outcome": spec.outcome,
        "exposure": list(spec.exposures),
        "threshold": spec.threshold,
        "covariates": list(spec.covariates),
        "engine": spec.engine,
        "nagq": spec.nagq,
        "readers": spec.readers,
        **({"beside": list(spec.beside)} if spec.level == "vu" else {"summary": spec.summary}),
        **({} if spec.reference_arm is None else {"reference_arm": spec.reference_arm}),
    }


def _as_toml_changes(changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    if "exposures" in out:
        out["exposure"] = list(out.pop("exposures"))
    return out


def _choice(source: str, key: str, value: Any, allowed: tuple[str, ...]) -> str:
    return check_choice(value, allowed, key, error=SpecError, where=source)


def _str_list(source: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{source}: {key} must be a string or a list of strings, got {value!r}")
    dup = sorted({v for v in value if value.count(v) > 1})
    if dup:
        raise SpecError(f"{source}: {key} repeats {dup}")
    return tuple(value)


def validate(data: dict[str, Any], source: str = "spec", default_name: str = "") -> ModelSpec:
    """Check a parsed spec dictionary and return the ``ModelSpec``; ``SpecError`` if bad."""
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise SpecError(f"{source}: unknown key(s) {unknown}; allowed keys are {', '.join(KEYS)}")
    name = data.get("name", default_name or "analysis")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise SpecError(f"{source}: name = {name!r} must be a non-empty word (no spaces or '/')")
    title = data.get("title", "")
    if not isinstance(title, str):
        raise SpecError(f"{source}: title must be a string, got {title!r}")
    level = _choice(source, "level", data.get("level", "vu"), LEVELS)
    if "outcome" not in data:
        raise SpecError(f"{source}: the key 'outcome' is required")
    if "exposure" not in data:
        raise SpecError(f"{source}: the key 'exposure' is required")
    outcomes = VU_OUTCOMES if level == "vu" else PATIENT_OUTCOMES
    outcome = _choice(f"{source} (level {level!r})", "outcome", data["outcome"], outcomes)
    exposures = _str_list(source, "exposure", data["exposure"])
    if not exposures:
        raise SpecError(
            f"{source}: exposure = [] names no exposure; give one or more, e.g. "
            'exposure = ["w0", "any"]'
        )
    parsed = []
    for e in exposures:
        try:
            parsed.append(parse_exposure(e))
        except DeriveError as exc:
            raise SpecError(f"{source}: {exc}") from None
    threshold = data.get("threshold", 1)
    check_number(
        threshold,
        "threshold (an ASspiMRI-a score)",
        low=0,
        high=6,
        low_open=True,
        error=SpecError,
        where=source,
    )
    covariates = _str_list(source, "covariates", data.get("covariates", ["arm"]))
    read: list[str] = []
    for c in covariates:  # each becomes formula text: a column or a transform of one
        try:
            read.extend(check_term(c, "covariate"))
        except ModelError as exc:
            raise SpecError(f"{source}: covariates: {exc}") from None
    reserved = [c for c in dict.fromkeys([*covariates, *read]) if c in RESERVED]
    if reserved:
        raise SpecError(
            f"{source}: covariates {reserved} are reserved names of the analysis frame "
            f"({', '.join(RESERVED)})"
        )
    engines = vu_engines() if level == "vu" else patient_engines()
    default_engine = registry.DEFAULT_ENGINE if level == "vu" else registry.CRUDE_ENGINE
    engine = _choice(
        f"{source} (level {level!r})", "engine", data.get("engine", default_engine), engines
    )
    nagq = check_nagq(data.get("nagq", 1), MAX_NAGQ, error=SpecError, where=source)
    if nagq > 1 and engine not in quadrature_engines():
        raise SpecError(
            f"{source}: nagq = {nagq} needs a GLMM engine ({', '.join(quadrature_engines())}); "
            f"engine {engine!r} has no random-effect integral"
        )
    readers = _choice(source, "readers rule", data.get("readers", "mean"), READERS)
    default_beside = [registry.MARGINAL_ENGINE] if level == "vu" else []
    beside = _str_list(source, "beside", data.get("beside", default_beside))
    if level == "patient" and beside:
        raise SpecError(f"{source}: beside is for VU-level specs only")
    for e in beside:
        _choice(source, "beside", e, beside_engines())
    summary = _choice(source, "summary", data.get("summary", "any"), SUMMARIES)
    if level == "vu" and "summary" in data:
        raise SpecError(f"{source}: summary is for patient-level specs only")
    if summary == "total":
        bad = [e.name for e in parsed if not e.single_week]
        if bad:
            raise SpecError(
                f"{source}: summary = 'total' sums the ASspiMRI-a at one week; exposure(s) "
                f"{bad} are not single weeks (use w<week>, e.g. w0)"
            )
    reference_arm = data.get("reference_arm")
    if reference_arm is not None and (not isinstance(reference_arm, str) or not reference_arm):
        raise SpecError(
            f"{source}: reference_arm must be the name of an arm, got {reference_arm!r}"
        )
    return ModelSpec(
        name=name,
        level=level,
        outcome=outcome,
        exposures=exposures,
        threshold=threshold,
        covariates=covariates,
        engine=engine,
        nagq=nagq,
        readers=readers,
        beside=beside,
        summary=summary,
        title=title,
        reference_arm=reference_arm,
        source=source,
    )


def load_spec(path: str | os.PathLike) -> ModelSpec:
    """Read and validate one TOML spec; ``SpecError`` names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no such spec file: {path}")
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not TOML's concern
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    return validate(data, source=str(path), default_name=path.stem)


def load_specs(directory: str | os.PathLike) -> list[ModelSpec]:
    """All ``*.toml`` specs of a directory, in file-name order; ``SpecError`` if none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SpecError(f"no such spec directory: {directory}")
    specs = [load_spec(p) for p in sorted(directory.glob("*.toml"))]
    if not specs:
        raise SpecError(f"{directory}: no *.toml analysis specs found")
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"{directory}: several specs share the name(s) {dup}")
    return specs


def default_spec_dir() -> Path:
    """``models/assert``: the specs of the reproduction.

    Found beside the source tree (editable install / checkout) or, in an installed
    wheel, in the package data ``syndesmo/_models/assert``.
    """
    candidates = shipped_specs_candidates()
    for c in candidates:
        if c.is_dir():
            return c
    raise SpecError(
        "cannot find the reproduction specs (models/assert); pass --specs DIR "
        f"(looked in {', '.join(str(c) for c in candidates)})"
    )
