"""Covariates of a simulated cohort as model columns: one definition for all.

The power simulation (``syndesmo.powersim``) and the simulation checks
(``syndesmo.simulate.check``) fit models to the arrays of ``simulate_arrays``
without building a panel. Both take their covariate columns from
:func:`covariate_values`, which reads the names and scales of
``syndesmo.vocabulary.COVARIATES``: every covariate enters as recorded in the
simulated patient table (``crp`` in mg/L, ``sex`` as male = 1, ``arm`` as
infliximab = 1, ``region`` as lumbar = 1), just as ``analysis_frame`` gives it to a
model of the same cohort written to disk.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from syndesmo.derive.frame import REGIONS
from syndesmo.vocabulary import covariate


def covariate_values(
    name: str, arrays: Mapping[str, np.ndarray], derived: Mapping[str, np.ndarray]
) -> np.ndarray:
    """One covariate on the rows of ``derive_arrays`` output, as floats.

    Parameters
    ----------
    name : str
        A name (or alias: ``lumbar``, ``male``) of ``syndesmo.vocabulary.COVARIATES``.
    arrays : mapping
        The arrays of ``simulate_arrays`` (patient covariates as ``patient_*``).
    derived : mapping
        The output of ``derive_arrays`` on them (``patient``, ``region``,
        ``baseline_corner`` per row).

    Returns
    -------
    numpy.ndarray
        One value per row of ``derived``; NaN where the value is missing.

    Raises
    ------
    DeriveError
        For an unknown covariate.
    """
    cov = covariate(name)
    if cov.name == "region":
        return (np.asarray(derived["region"]) == REGIONS.index("lumbar")).astype(float)
    if cov.name == "baseline_corner":
        return np.asarray(derived["baseline_corner"], dtype=float)
    return np.asarray(arrays[cov.simulated], dtype=float)[np.asarray(derived["patient"])]
