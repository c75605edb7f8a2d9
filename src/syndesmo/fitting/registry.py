"""The engines: each way of fitting a model described once, in one table.

Every engine is a function ``fit_xxx(design, *, nagq=None, offset=None, **options)``
that takes a ``Design`` (``syndesmo.fitting.design``) and returns a ``FitResult``.
This module says, for each engine, what ``sy.fit`` must check before calling it and
what tables, plots and reports may say about its estimates: the scale of its
coefficients, whether the formula needs a grouping bar and what that bar means to
it, whether it takes quadrature points or an offset, whether its log-likelihood is a
maximised likelihood (AIC, likelihood-ratio tests, profile intervals), the effect
measure (odds ratio or rate ratio), the response family, and where its fit function
lives (imported lazily, so this layer never imports ``syndesmo.engines``).

Every list of engines in the package — the CLI's choices, spec validation, the
ladder, plot styles, report wording — is derived from ``REGISTRY`` by capability,
so a new engine is one module with its fit function and one ``Engine(...)`` line
here. ``sy.available_engines()`` returns the table.

This module imports only the standard library (the command line reads it to build
its ``--engine`` choices without loading numpy).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syndesmo import checks
from syndesmo.errors import EngineUnavailableError, ModelError

if TYPE_CHECKING:
    import pandas as pd

# --- the vocabulary of capabilities --------------------------------------------------

#: Coefficients conditional on the patient's random effect (subject-specific).
CONDITIONAL = "conditional"
#: Population-averaged coefficients for clustered rows (GEE).
MARGINAL = "marginal"
#: Rows treated as independent: any clustering is ignored.
UNCLUSTERED = "unclustered"
#: Comparisons within the levels of the grouping factor only (conditional likelihood).
WITHIN = "within"
SCALES: tuple[str, ...] = (CONDITIONAL, MARGINAL, UNCLUSTERED, WITHIN)
#: Words for each scale in tables, legends and reports.
SCALE_WORDS: dict[str, str] = {
    CONDITIONAL: "subject-specific",
    MARGINAL: "population-averaged",
    UNCLUSTERED: "clustering ignored",
    WITHIN: "within-cluster",
}

BINOMIAL = "binomial"
POISSON = "poisson"
NEGATIVE_BINOMIAL = "negative binomial"
FAMILIES: tuple[str, ...] = (BINOMIAL, POISSON, NEGATIVE_BINOMIAL)

ODDS_RATIO = "OR"
RATE_RATIO = "RR"
#: Words for each effect measure.
MEASURE_WORDS: dict[str, str] = {ODDS_RATIO: "odds ratio", RATE_RATIO: "rate ratio"}

MAXIMUM_LIKELIHOOD = "maximum likelihood"
CONDITIONAL_LIKELIHOOD = "conditional maximum likelihood"
ESTIMATING_EQUATIONS = "estimating equations"
POSTERIOR = "posterior sampling"


#: Kinds of random-effect structure an engine can fit (``ReStructure.kinds``).
SCALAR_INTERCEPT = "scalar intercept"
NESTED_INTERCEPTS = "nested intercepts"
RANDOM_SLOPES = "random slopes"
CROSSED_INTERCEPTS = "crossed intercepts"
#: Every kind, in the order tables show them.
STRUCTURE_KINDS = (SCALAR_INTERCEPT, NESTED_INTERCEPTS, RANDOM_SLOPES, CROSSED_INTERCEPTS)

#: lme4's documented upper bound of nAGQ for one scalar random intercept.
LME4_MAX_NAGQ = 25


@dataclass(frozen=True)
class Engine:
    """What the package knows about one engine (one row of ``available_engines()``).

    Attributes
    ----------
    name : str
        What users pass as ``engine=``.
    label : str
        Short words for the model in tables and reports (``"GLMM"``, ``"GEE"``).
    short : str
        Column heading in compact tables (the headline table of a reproduction).
    description : str
        One sentence: the model and how it is fitted.
    scale : str
        One of ``SCALES``: what the coefficients mean.
    needs_group : bool
        The formula must have a bar ``(1|group)``; without one ``sy.fit`` refuses.
    group_role : str
        What the bar's grouping factor is to the engine (``"random intercept"``,
        ``"cluster"``, ``"stratification factor"``); ``""`` where a bar is ignored
        with a note.
    nagq_max : int or None
        Largest number of adaptive Gauss–Hermite points; ``None``: no quadrature.
    likelihood : bool
        ``loglik`` is a maximised log-likelihood (AIC, likelihood-ratio tests).
    profile : bool
        ``conf_int(method="profile")`` is available.
    random_effects : tuple of str
        Random-effect structures the engine fits (empty: none).
    measure : str
        ``"OR"`` (odds ratio) or ``"RR"`` (rate ratio): what ``exp(coef)`` is.
    family : str
        Response family, one of ``FAMILIES`` (sets the outcome checks of the design).
    estimation : str
        How the estimates are obtained (maximum likelihood, estimating equations, …).
    offset : bool
        Takes ``offset=`` (a known term added to the linear predictor).
    entry : str
        ``"module:function"`` of the fit function, imported when first used.
    batch_entry : str or None
        ``"module:function"`` fitting many replicates of one design at once.
    extra : str or None
        The pip extra the engine needs (``pip install 'syndesmo[extra]'``).
    requires : tuple of str
        Top-level modules the extra installs (to tell whether the engine can load).
    """

    name: str
    label: str
    short: str
    description: str
    scale: str
    needs_group: bool
    group_role: str
    nagq_max: int | None
    likelihood: bool
    profile: bool
    random_effects: tuple[str, ...]
    measure: str
    family: str
    estimation: str
    offset: bool
    entry: str
    batch_entry: str | None = None
    extra: str | None = None
    requires: tuple[str, ...] = ()

    @property
    def takes_nagq(self) -> bool:
        """The engine integrates a random effect by quadrature (``nagq`` from 1 up)."""
        return self.nagq_max is not None

    @property
    def words(self) -> str:
        """Label and scale, e.g. ``"GEE, population-averaged"`` (legends, reports)."""
        return f"{self.label}, {SCALE_WORDS[self.scale]}"


#: Every engine, in the order users see them. Tests may add an engine temporarily
#: (``monkeypatch.setitem(REGISTRY, name, Engine(...))``).
REGISTRY: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            name="native",
            label="GLMM",
            short="GLMM",
            description="GLMM (random intercepts, nested or crossed, random slopes) by Laplace or "
            "(multilevel) adaptive Gauss–Hermite "
            "quadrature (numpy/scipy; the numbers of lme4's glmer)",
            scale=CONDITIONAL,
            needs_group=True,
            group_role="random intercept",
            nagq_max=LME4_MAX_NAGQ,
            likelihood=True,
            profile=True,
            random_effects=STRUCTURE_KINDS,
            measure=ODDS_RATIO,
            family=BINOMIAL,
            estimation=MAXIMUM_LIKELIHOOD,
            offset=True,
            entry="syndesmo.engines.native.engine:fit_native",
            batch_entry="syndesmo.engines.native.engine:fit_many",
        ),
        Engine(
            name="lme4",
            label="GLMM (lme4)",
            short="GLMM",
            description="R's lme4::glmer through rpy2 (Laplace or adaptive Gauss–Hermite)",
            scale=CONDITIONAL,
            needs_group=True,
            group_role="random intercept",
            nagq_max=LME4_MAX_NAGQ,
            likelihood=True,
            profile=False,
            random_effects=STRUCTURE_KINDS,
            measure=ODDS_RATIO,
            family=BINOMIAL,
            estimation=MAXIMUM_LIKELIHOOD,
            offset=True,
            entry="syndesmo.engines.lme4:fit_lme4",
            extra="lme4",
            requires=("rpy2",),
        ),
        Engine(
            name="gee",
            label="GEE",
            short="GEE",
            description="statsmodels GEE, exchangeable working correlation within the "
            "bar's group, robust standard errors",
            scale=MARGINAL,
            needs_group=True,
            group_role="cluster",
            nagq_max=None,
            likelihood=False,
            profile=False,
            random_effects=(),
            measure=ODDS_RATIO,
            family=BINOMIAL,
            estimation=ESTIMATING_EQUATIONS,
            offset=True,
            entry="syndesmo.engines.gee:fit_gee",
        ),
        Engine(
            name="logit",
            label="logistic",
            short="logistic",
            description="logistic regression by maximum likelihood (statsmodels); a bar "
            "is ignored with a note",
            scale=UNCLUSTERED,
            needs_group=False,
            group_role="",
            nagq_max=None,
            likelihood=True,
            profile=True,
            random_effects=(),
            measure=ODDS_RATIO,
            family=BINOMIAL,
            estimation=MAXIMUM_LIKELIHOOD,
            offset=True,
            entry="syndesmo.engines.logit:fit_logit",
        ),
        Engine(
            name="bayes",
            label="Bayesian GLMM",
            short="Bayes",
            description="Bayesian random-intercept GLMM by NUTS (PyMC)",
            scale=CONDITIONAL,
            needs_group=True,
            group_role="random intercept",
            nagq_max=None,
            likelihood=False,
            profile=False,
            random_effects=(SCALAR_INTERCEPT,),
            measure=ODDS_RATIO,
            family=BINOMIAL,
            estimation=POSTERIOR,
            offset=True,
            entry="syndesmo.engines.bayes:fit_bayes",
            extra="bayes",
            requires=("pymc", "arviz"),
        ),
        Engine(
            name="clogit",
            label="conditional logistic",
            short="CLR",
            description="conditional logistic regression with the bar's levels as strata "
            "(statsmodels ConditionalLogit; R's survival::clogit, method exact)",
            scale=WITHIN,
            needs_group=True,
            group_role="stratification factor",
            nagq_max=None,
            likelihood=True,
            profile=False,
            random_effects=(),
            measure=ODDS_RATIO,
            family=BINOMIAL,
            estimation=CONDITIONAL_LIKELIHOOD,
            offset=True,
            entry="syndesmo.engines.clogit:fit_clogit",
        ),
        Engine(
            name="poisson",
            label="Poisson",
            short="Poisson",
            description="Poisson regression, log link (statsmodels GLM); a bar is ignored "
            "with a note",
            scale=UNCLUSTERED,
            needs_group=False,
            group_role="",
            nagq_max=None,
            likelihood=True,
            profile=False,
            random_effects=(),
            measure=RATE_RATIO,
            family=POISSON,
            estimation=MAXIMUM_LIKELIHOOD,
            offset=True,
            entry="syndesmo.engines.counts:fit_poisson",
        ),
        Engine(
            name="negbin",
            label="negative binomial",
            short="NB",
            description="negative binomial (NB2) regression, log link, dispersion by "
            "maximum likelihood (statsmodels); a bar is ignored with a note",
            scale=UNCLUSTERED,
            needs_group=False,
            group_role="",
            nagq_max=None,
            likelihood=True,
            profile=False,
            random_effects=(),
            measure=RATE_RATIO,
            family=NEGATIVE_BINOMIAL,
            estimation=MAXIMUM_LIKELIHOOD,
            offset=True,
            entry="syndesmo.engines.counts:fit_negbin",
        ),
    )
}

#: The default engine of ``sy.fit`` and of VU-level analyses: the native GLMM.
DEFAULT_ENGINE = "native"
#: The reference engine every other likelihood engine is checked against (R's glmer).
REFERENCE_ENGINE = "lme4"
#: The crude model (step a of the ladder; patient-level 0/1 outcomes).
CRUDE_ENGINE = "logit"
#: The population-averaged model fitted beside the GLMM by default.
MARGINAL_ENGINE = "gee"
#: The default model of a count outcome (over-dispersion allowed).
COUNT_ENGINE = "negbin"


# --- lookups -------------------------------------------------------------------------


def engine_names(**capabilities: Any) -> tuple[str, ...]:
    """Names of the engines whose fields equal the given values, in registry order.

    Parameters
    ----------
    **capabilities
        Field names of ``Engine`` with the value wanted, e.g. ``family=BINOMIAL``,
        ``needs_group=True``; a tuple value matches any of its items (except for the
        tuple field ``random_effects``). A property such as ``takes_nagq`` works too.

    Returns
    -------
    tuple of str
        The matching engine names (all engines without arguments).

    Raises
    ------
    ModelError
        If a capability is not a field of ``Engine``.
    """
    known = {f.name for f in dataclasses.fields(Engine)} | {"takes_nagq", "words"}
    unknown = [k for k in capabilities if k not in known]
    if unknown:
        raise ModelError(
            f"unknown engine capability {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )

    def match(engine: Engine) -> bool:
        for key, want in capabilities.items():
            have = getattr(engine, key)
            if isinstance(want, tuple) and key != "random_effects":
                if have not in want:
                    return False
            elif have != want:
                return False
        return True

    return tuple(name for name, e in REGISTRY.items() if match(e))


def get_engine(name: str) -> Engine:
    """The registry entry of engine ``name``.

    Parameters
    ----------
    name : str
        An engine name (``sy.available_engines()`` lists them).

    Returns
    -------
    Engine
        Its capabilities.

    Raises
    ------
    ModelError
        If there is no engine of that name; the message lists the engines.
    """
    engine = REGISTRY.get(name) if isinstance(name, str) else None
    if engine is None:
        raise ModelError(f"unknown engine {name!r}; choose one of: {', '.join(REGISTRY)}")
    return engine


def _import(entry: str, name: str, extra: str | None) -> Callable[..., Any]:
    module_name, _, function_name = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is not None and exc.name != module_name:
            raise EngineUnavailableError(
                f"engine {name!r} needs the optional dependency {exc.name!r}: "
                f"pip install 'syndesmo[{extra}]'"
            ) from exc
        if exc.name != module_name:
            raise
        raise EngineUnavailableError(
            f"engine {name!r} is not part of this installation ({module_name} is missing)"
        ) from exc
    try:
        return getattr(module, function_name)
    except AttributeError as exc:
        raise EngineUnavailableError(
            f"engine {name!r}: {module_name} has no function {function_name!r}"
        ) from exc


def load_engine(name: str) -> Callable[..., Any]:
    """The fit function of engine ``name``, imported on first use.

    Parameters
    ----------
    name : str
        An engine name.

    Returns
    -------
    callable
        ``fit(design, *, nagq=None, offset=None, **options) -> FitResult``.

    Raises
    ------
    ModelError
        If the engine is unknown.
    EngineUnavailableError
        If its module, or an optional dependency (named with its pip extra), is missing.
    """
    engine = get_engine(name)
    return _import(engine.entry, engine.name, engine.extra)


def load_batch_engine(name: str) -> Callable[..., Any]:
    """The function fitting many replicates of one design with engine ``name``.

    Parameters
    ----------
    name : str
        An engine name whose entry has a ``batch_entry``.

    Returns
    -------
    callable
        The batched fit function (see ``syndesmo.engines.native.engine.fit_many``).

    Raises
    ------
    ModelError
        If the engine is unknown or fits one model at a time.
    EngineUnavailableError
        If its module or an optional dependency is missing.
    """
    engine = get_engine(name)
    if engine.batch_entry is None:
        batched = ", ".join(e.name for e in REGISTRY.values() if e.batch_entry is not None)
        raise ModelError(
            f"engine {name!r} fits one model at a time; batched fits: {batched or 'none'}"
        )
    return _import(engine.batch_entry, engine.name, engine.extra)


def name_for(entry: str) -> str:
    """The engine name registered for a fit function ``"module:function"``.

    Engine modules name their results with it, so the name is written only here.

    Parameters
    ----------
    entry : str
        ``"module:function"`` as in ``Engine.entry``.

    Returns
    -------
    str
        The engine's name.

    Raises
    ------
    ModelError
        If no engine has that entry.
    """
    for engine in REGISTRY.values():
        if engine.entry == entry:
            return engine.name
    raise ModelError(f"no engine is registered with the fit function {entry!r}")


def check_nagq(name: str, nagq: Any) -> int | None:
    """Check ``nagq`` against what engine ``name`` can do; the one ``nagq`` check.

    Parameters
    ----------
    name : str
        An engine name.
    nagq : int or None
        Quadrature points: 1 is the Laplace approximation; ``None`` the engine's
        default (1 for quadrature engines).

    Returns
    -------
    int or None
        The number of points for an engine with quadrature, ``None`` otherwise.

    Raises
    ------
    ModelError
        If ``nagq`` is not a whole number, is outside ``1..nagq_max``, or is above 1
        for an engine without quadrature.
    """
    engine = get_engine(name)
    if nagq is None:
        return 1 if engine.takes_nagq else None
    nagq = checks.check_nagq(nagq, engine.nagq_max or max_nagq())
    if engine.nagq_max is not None:
        return nagq
    if nagq != 1:
        raise ModelError(
            f"nagq applies only to the engines {', '.join(engine_names(takes_nagq=True))}; "
            f"engine {name!r} got nagq={nagq}"
        )
    return None


def check_call(name: str, nagq: Any = None, offset: Any = None) -> int | None:
    """Check the contract arguments ``nagq`` and ``offset`` of a call to engine ``name``.

    ``sy.fit`` checks them before building the design; engines called directly check
    them again with this function, so both refuse the same things in the same words.

    Parameters
    ----------
    name : str
        An engine name.
    nagq : int or None
        See ``check_nagq``.
    offset : object or None
        The offset passed, if any.

    Returns
    -------
    int or None
        ``nagq`` as ``check_nagq`` returns it.

    Raises
    ------
    ModelError
        If ``nagq`` is invalid for the engine, or an offset is given to an engine that
        takes none.
    """
    nagq = check_nagq(name, nagq)
    if offset is not None and not get_engine(name).offset:
        takes = ", ".join(engine_names(offset=True))
        raise ModelError(f"engine {name!r} takes no offset; engines that do: {takes}")
    return nagq


def max_nagq() -> int:
    """The largest ``nagq`` any engine takes (25, as lme4's ``nAGQ``)."""
    return max((e.nagq_max for e in REGISTRY.values() if e.nagq_max is not None), default=1)


def check_group(name: str, formula: str, has_group: bool) -> None:
    """Refuse a formula without a bar for an engine that needs one.

    Parameters
    ----------
    name : str
        An engine name.
    formula : str
        The formula, quoted in the message.
    has_group : bool
        Whether the formula has a bar term ``(1|group)``.

    Raises
    ------
    ModelError
        If the engine needs a grouping bar and the formula has none.
    """
    engine = get_engine(name)
    if engine.needs_group and not has_group:
        alternative = ", ".join(engine_names(family=engine.family, needs_group=False))
        hint = f", or use engine {alternative!r} to ignore the clustering" if alternative else ""
        raise ModelError(
            f"engine {name!r} needs a {engine.group_role}: the formula {formula!r} has no "
            f"bar term; add one such as (1|patient){hint}"
        )


def check_random(name: str, formula: str, kinds: tuple[str, ...]) -> None:
    """Refuse random effects an engine cannot fit, naming the engines that can.

    Parameters
    ----------
    name : str
        An engine name.
    formula : str
        The formula, quoted in the message.
    kinds : tuple of str
        The kinds of the formula's random-effect structure
        (``ReStructure.kinds``; empty for none).

    Raises
    ------
    ModelError
        If the engine uses the bars (its ``group_role`` is not empty) and one of
        ``kinds`` is not among its ``random_effects``.
    """
    engine = get_engine(name)
    if not kinds or not engine.group_role:
        return
    missing = [k for k in kinds if k not in engine.random_effects]
    if missing:
        able = [e.name for e in REGISTRY.values() if all(k in e.random_effects for k in kinds)]
        raise ModelError(
            f"engine {name!r} takes one bar (1|group) as its {engine.group_role}; the formula "
            f"{formula!r} has {' and '.join(missing)}"
            + (f"; engines that fit them: {', '.join(able)}" if able else "")
        )


def available_engines() -> pd.DataFrame:
    """The engines and what each can do, one row per engine.

    Returns
    -------
    pandas.DataFrame
        Indexed by engine name, with the columns of ``Engine`` (label, scale,
        needs_group, group_role, nagq_max, likelihood, profile, random_effects,
        measure, family, …) and ``installed``: whether the engine's optional
        dependencies import (core engines are always installed).

    Examples
    --------
    >>> import syndesmo as sy
    >>> sy.available_engines().loc["clogit", "scale"]
    'within'
    """
    import pandas as pd

    rows = []
    for engine in REGISTRY.values():
        row = dataclasses.asdict(engine)
        row["random_effects"] = ", ".join(engine.random_effects)
        row["requires"] = ", ".join(engine.requires)
        row["installed"] = _installed(engine)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("name")
    table["nagq_max"] = table["nagq_max"].astype("Int64")
    return table


def _installed(engine: Engine) -> bool:
    """Whether the optional packages of the engine's extra can be found (not imported)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in engine.requires)
