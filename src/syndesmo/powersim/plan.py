"""What a power run will do: its validated arguments, its seeds and its chunks of replicates.

``power`` and ``power_curve`` turn their arguments into a ``Plan`` (one per grid
point), spawn the replicates' seeds from one root ``SeedSequence`` and cut them
into ``Chunk``s, the tasks ``power_exec`` sends to the workers. Plan and Chunk are
small frozen dataclasses so they pickle to local processes and Dask workers; all
checks of the arguments live here, so bad input fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from syndesmo.checks import (
    as_seed_sequence,
    check_choice,
    check_int,
    check_probability,
)
from syndesmo.derive.frame import OUTCOMES, check_threshold, needed_weeks
from syndesmo.errors import ModelError, SpecError
from syndesmo.fitting import registry
from syndesmo.powersim.designs import course_week
from syndesmo.vocabulary import COVARIATES
from syndesmo.vocabulary import PATIENT_COVARIATES as _PATIENT_NAMES
from syndesmo.vocabulary import VU_COVARIATES as _VU_NAMES

#: The VU-level analysis by GEE, the crude one and conditional logistic regression are
#: named after their engines.
GEE_ANALYSIS = registry.MARGINAL_ENGINE
CRUDE_ANALYSIS = registry.CRUDE_ENGINE
CLOGIT_ANALYSIS = registry.engine_names(scale=registry.WITHIN, family=registry.BINOMIAL)[0]
#: The within–between GLMM, the MRI course and the readings nested in VUs.
HYBRID_ANALYSIS, COURSE_ANALYSIS, READERS_ANALYSIS = "hybrid", "course", "readers"
#: The analyses ``power`` can run, with a short label for tables and plots.
ANALYSES: dict[str, str] = {
    "vu": "VU level, GLMM (1|patient); the readers' mean with 2+ readers",
    READERS_ANALYSIS: "VU level, every reading a row: GLMM (1|patient/vu) + reader",
    GEE_ANALYSIS: "VU level, GEE exchangeable",
    "patient": "patient level, logistic",
    CRUDE_ANALYSIS: "VU level, crude logistic",
    HYBRID_ANALYSIS: "VU level, within-between GLMM (1|patient), within-patient OR",
    CLOGIT_ANALYSIS: "VU level, conditional logistic within patient",
    COURSE_ANALYSIS: "MRI course: inflamed at week w ~ arm + inflamed at baseline + (1|patient)",
}
#: Analyses whose tested term is not the exposure: the arm's effect on inflammation.
NOT_EXPOSURE = (COURSE_ANALYSIS,)
#: Engines that fit the ``"vu"`` GLMM: random-intercept models by quadrature.
VU_ENGINES = registry.engine_names(scale=registry.CONDITIONAL, takes_nagq=True)
#: VU-level covariates an analysis may adjust for (besides patient covariates).
VU_COVARIATES = _VU_NAMES
#: Patient covariates: analysis name → key of ``simulate_arrays`` (``sex`` is 1 = male),
#: from ``syndesmo.vocabulary.COVARIATES``.
PATIENT_COVARIATES: dict[str, str] = {n: COVARIATES[n].simulated for n in _PATIENT_NAMES}
#: Name of the exposure term in every model (as in ``analysis_frame``).
TERM = "mri"
#: Default number of replicates per task (chunk): one fit block, so the tasks of a run
#: spread evenly over the workers (1000 replicates: 18 tasks after the first 100, 9 per
#: worker of 2; chunks of 100 left one worker 100 replicates behind the other).
DEFAULT_BATCH = 50
#: The native engine fits replicates in blocks of this many, aligned on the replicate
#: index. ``fit_many`` iterates the replicates of one call together, which moves the
#: last digits (~1e-12) of an estimate with the company it is fitted in; fixed,
#: aligned blocks make the results identical whatever the batch size or backend.
#: Batch sizes are therefore rounded up to a multiple of ``FIT_BLOCK``. 50 rather than
#: 10: ``fit_many``'s cost per replicate falls with the batch (its Python overhead is
#: per call) — about a third less CPU per replicate at 50 on the 187 × 12 design.
FIT_BLOCK = 50


@dataclass(frozen=True)
class Plan:
    """Everything a chunk needs besides its seeds (pickled to the workers)."""

    spec: Any
    analyses: tuple[str, ...]
    outcome: str
    exposure: str
    threshold: float
    adjust: tuple[str, ...]
    engine: str
    nagq: int
    #: Patients per block of a nested cohort (``syndesmo.powersim.nested``), or None for
    #: ``simulate_arrays``'s cohort of ``spec.n_patients``.
    nested: int | None = None


@dataclass(frozen=True)
class Chunk:
    """One task: the replicates ``start, start + 1, ...`` of grid point ``point``."""

    plan: Plan
    point: int  # grid point (0 for a single power run)
    start: int  # index of the first replicate of the chunk
    seeds: tuple[np.random.SeedSequence, ...]


def check_analyses(analysis: str | Sequence[str]) -> tuple[str, ...]:
    """The analyses asked for (a name, a comma list or a sequence), in order, once each."""
    items = [analysis] if isinstance(analysis, str) else list(analysis)
    items = [a.strip() for item in items for a in str(item).split(",") if a.strip()]
    if not items:
        raise ModelError(f"no analysis given; choose one of {', '.join(ANALYSES)}")
    for a in items:
        check_choice(a, ANALYSES, "analysis")
    return tuple(dict.fromkeys(items))


def make_plan(spec, analyses, outcome, exposure, threshold, adjust, engine, nagq) -> Plan:
    """Check the model arguments against ``spec`` and fill in its defaults."""

    check_choice(outcome, OUTCOMES, "outcome")
    if "patient" in analyses and outcome != "new_syndesmophyte":
        raise ModelError("the patient-level analysis is of any new syndesmophyte only")
    exposure = spec.exposure if exposure is None else exposure
    threshold = check_threshold(spec.threshold if threshold is None else threshold)
    needed_weeks(exposure, spec.mri_weeks)
    adjust = (adjust,) if isinstance(adjust, str) else tuple(adjust)
    allowed = (*PATIENT_COVARIATES, *VU_COVARIATES)
    for cov in adjust:
        check_choice(cov, allowed, "covariate in adjust")
        if cov in VU_COVARIATES and "patient" in analyses:
            raise ModelError(
                f"covariate {cov!r} is a VU-level covariate: the patient-level analysis "
                "can only adjust for patient covariates"
            )
    if engine not in VU_ENGINES:
        raise ModelError(
            f"engine {engine!r} cannot fit the 'vu' GLMM; choose {' or '.join(VU_ENGINES)} "
            f"(GEE and the crude logit are the analyses {GEE_ANALYSIS!r} and "
            f"{CRUDE_ANALYSIS!r})"
        )
    nagq = registry.check_nagq(engine, nagq)
    if COURSE_ANALYSIS in analyses:
        course_week(spec)  # raises when no MRI week compares the arms
    if READERS_ANALYSIS in analyses and int(spec.n_readers) < 2:
        raise ModelError(
            f"analysis {READERS_ANALYSIS!r} nests readings in VUs and needs a spec with "
            f"n_readers >= 2, got n_readers = {spec.n_readers}"
        )
    return Plan(spec, analyses, outcome, exposure, float(threshold), adjust, engine, int(nagq))


def root_seed(seed: int | np.random.SeedSequence | np.random.Generator) -> np.random.SeedSequence:
    """The ``SeedSequence`` the replicates are spawned from.

    An int ``s`` gives ``SeedSequence(s)``; a ``SeedSequence`` is used as it is; a
    ``Generator`` gives ``SeedSequence(g.integers(2**63))`` (it consumes one draw):
    ``syndesmo.checks.as_seed_sequence``.
    """
    return as_seed_sequence(seed)


def check_counts(n_sims: int, alpha: float, batch_size: int | None) -> None:
    """Raise ``ModelError`` for a bad ``n_sims``, ``alpha`` or ``batch_size``."""
    check_int(n_sims, "n_sims", low=1)
    check_probability(alpha, "alpha")
    if batch_size is not None:
        check_int(batch_size, "batch_size", low=1)


def chunk_size(n_sims: int, batch_size: int | None, workers: int | None) -> int:
    """Replicates per task: ``batch_size`` or a default giving each worker >= 2 tasks,
    rounded up to a multiple of ``FIT_BLOCK``."""
    if batch_size is None:
        lanes = workers if workers and workers > 1 else 1
        batch_size = min(DEFAULT_BATCH, math.ceil(n_sims / (2 * lanes)))
    return FIT_BLOCK * max(1, math.ceil(batch_size / FIT_BLOCK))


def make_chunks(
    plan: Plan, point: int, root: np.random.SeedSequence, n_sims: int, size: int
) -> list[Chunk]:
    """Spawn ``n_sims`` replicate seeds from ``root`` and cut them into chunks of ``size``."""
    return cut_chunks(plan, point, root.spawn(n_sims), size)


def cut_chunks(
    plan: Plan,
    point: int,
    seeds: Sequence[np.random.SeedSequence],
    size: int,
    first: int = 0,
    first_size: int | None = None,
) -> list[Chunk]:
    """Cut replicate seeds into chunks of ``size`` (multiples of ``FIT_BLOCK``).

    With ``first > 0`` the first ``first`` replicates (a multiple of ``FIT_BLOCK``)
    form chunks of their own, of ``first_size``, so they can run and be checked
    before the rest; chunk boundaries stay on ``FIT_BLOCK`` multiples, so the
    results do not change.
    """
    n = len(seeds)
    bounds = []
    lo = 0
    if first > 0:
        step = first_size or size
        while lo < min(first, n):
            bounds.append((lo, min(lo + step, first, n)))
            lo = bounds[-1][1]
    while lo < n:
        bounds.append((lo, min(lo + size, n)))
        lo = bounds[-1][1]
    return [Chunk(plan, point, a, tuple(seeds[a:b])) for a, b in bounds]


def grid_points(spec, grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``grid`` (spec field → values), in row-major order.

    Raises ``SpecError`` for a name that is not a ``CohortSpec`` field or an
    empty list of values.
    """
    names = [f.name for f in dataclasses.fields(spec)]
    axes = {}
    for key, values in grid.items():
        if key not in names:
            raise SpecError(f"{key!r} is not a CohortSpec field; fields: {', '.join(names)}")
        current = getattr(spec, key)
        if isinstance(current, tuple):
            values = [tuple(v) for v in values] if _is_seq_of_seqs(values) else [tuple(values)]
        elif isinstance(values, str) or not isinstance(values, Sequence | np.ndarray):
            values = [values]
        if len(values) == 0:
            raise SpecError(f"grid axis {key!r} has no values")
        axes[key] = list(values)
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _is_seq_of_seqs(values: Any) -> bool:
    return (
        isinstance(values, Sequence)
        and len(values) > 0
        and all(isinstance(v, Sequence) and not isinstance(v, str) for v in values)
    )
