"""Argument checks used across the package, with one wording for each kind of message.

Each check returns the value in its canonical type (``int``, ``float``, the chosen
word, a numpy ``Generator``/``SeedSequence``) or raises a ``SyndesmoError`` of the
caller's choosing (``error=``) whose message is one line naming the argument, what
is allowed and what was given; ``where=`` puts the file or spec in front
(``"spec.toml: nagq must be …"``).

Seeds: an int ≥ 0, a ``numpy.random.SeedSequence`` or a ``numpy.random.Generator``
everywhere. :func:`as_generator`, :func:`as_seed_sequence` and :func:`as_int_seed`
turn one into what a consumer needs, always the same way, so that the same seed
gives the same random stream in the simulator, the power simulation and the
Bayesian sampler. numpy is imported only when a seed is converted, so the command
line can use these checks and still start fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

from syndesmo.errors import ModelError, SyndesmoError

#: Most simulated studies one power run makes (replicates x grid points) unless the
#: caller raises it (``max_sims=``, ``--max-sims``): a mistyped count should fail at
#: once, not run for days and fill the memory.
MAX_SIMS = 1_000_000

if TYPE_CHECKING:
    import numpy as np

#: What a seed may be, in messages.
SEED_KINDS = "a non-negative int, a numpy SeedSequence or Generator"


def _raise(error: type[SyndesmoError], where: str, message: str) -> None:
    raise error(f"{where}: {message}" if where else message)


def _range_words(low: Any, high: Any, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        if not low_open and not high_open:
            return f"from {low:g} to {high:g}"
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def is_int(value: Any) -> bool:
    """True for Python and numpy integers, False for ``bool`` and everything else."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(
    value: Any,
    name: str,
    *,
    low: int | None = None,
    high: int | None = None,
    error: type[SyndesmoError] = ModelError,
    where: str = "",
) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (either bound may be open-ended).

    Parameters
    ----------
    value : Any
        The argument to check; ``bool`` and non-integers (``2.0`` too) are refused.
    name : str
        The argument's name, for the message.
    low, high : int, optional
        Inclusive bounds.
    error : type of SyndesmoError
        The exception raised (default ``ModelError``).
    where : str
        Prefix of the message, e.g. the spec file.

    Returns
    -------
    int

    Raises
    ------
    SyndesmoError
        ``error``: "``name`` must be a whole number from 1 to 25, got 30".
    """
    if (
        not is_int(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        words = _range_words(low, high)
        _raise(
            error, where, f"{name} must be a whole number {words}, got {value!r}".replace("  ", " ")
        )
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    error: type[SyndesmoError] = ModelError,
    where: str = "",
) -> float:
    """``value`` as a finite ``float`` within the bounds (open or closed).

    Parameters
    ----------
    value : Any
        The argument; ``bool``, strings and NaN are refused.
    name : str
        The argument's name, for the message.
    low, high : float, optional
        Bounds; ``low_open``/``high_open`` exclude them.
    error : type of SyndesmoError
        The exception raised (default ``ModelError``).
    where : str
        Prefix of the message.

    Returns
    -------
    float

    Raises
    ------
    SyndesmoError
        ``error``: "``name`` must be a number in (0, 6], got 7".
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and value == value
    if ok:
        v = float(value)
        ok = not (
            (low is not None and (v < low or (low_open and v == low)))
            or (high is not None and (v > high or (high_open and v == high)))
            or v in (float("inf"), float("-inf"))
        )
    if not ok:
        words = _range_words(low, high, low_open, high_open)
        _raise(error, where, f"{name} must be a number {words}, got {value!r}".replace("  ", " "))
    return float(value)


def check_probability(
    value: Any,
    name: str,
    *,
    closed: bool = False,
    error: type[SyndesmoError] = ModelError,
    where: str = "",
) -> float:
    """``value`` as a probability: in (0, 1), or in [0, 1] with ``closed=True``.

    Raises
    ------
    SyndesmoError
        ``error``: "``name`` must be a number in (0, 1), got 1.5".
    """
    return check_number(
        value,
        name,
        low=0.0,
        high=1.0,
        low_open=not closed,
        high_open=not closed,
        error=error,
        where=where,
    )


def check_level(
    level: Any, name: str = "level", *, error: type[SyndesmoError] = ModelError
) -> float:
    """A confidence level in (0, 1), e.g. 0.95.

    Raises
    ------
    SyndesmoError
        ``error``: "level must be a number in (0, 1) (a confidence level such as
        0.95), got 95".
    """
    try:
        return check_probability(level, name, error=error)
    except SyndesmoError as exc:
        raise error(f"{exc} (a confidence level such as 0.95)") from None


def check_choice(
    value: Any,
    choices: Iterable[str],
    name: str,
    *,
    aliases: Mapping[str, str] | None = None,
    error: type[SyndesmoError] = ModelError,
    where: str = "",
) -> str:
    """``value`` if it is one of ``choices`` (an alias gives its canonical word).

    Parameters
    ----------
    value : Any
        The word given.
    choices : iterable of str
        The words allowed, listed in this order in the message.
    name : str
        What the word names, e.g. ``"engine"``, ``"readers rule"``.
    aliases : mapping, optional
        Other spellings → the canonical word.
    error : type of SyndesmoError
        The exception raised (default ``ModelError``).
    where : str
        Prefix of the message.

    Returns
    -------
    str
        The canonical word.

    Raises
    ------
    SyndesmoError
        ``error``: "unknown ``name`` 'x'; choose one of a, b, c".
    """
    choices = list(choices)
    if isinstance(value, str) and aliases and value in aliases:
        value = aliases[value]
    if not isinstance(value, str) or value not in choices:
        _raise(error, where, f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
    return value


def check_nagq(
    value: Any,
    max_nagq: int,
    *,
    error: type[SyndesmoError] = ModelError,
    where: str = "",
) -> int:
    """The number of adaptive Gauss–Hermite points: an int from 1 (Laplace) to ``max_nagq``.

    Parameters
    ----------
    value : Any
        The ``nagq`` given.
    max_nagq : int
        The largest number the engine takes (lme4's ``nAGQ`` goes to 25).
    error : type of SyndesmoError
        The exception raised (default ``ModelError``).
    where : str
        Prefix of the message.

    Returns
    -------
    int

    Raises
    ------
    SyndesmoError
        ``error``: "nagq must be from 1 (Laplace) to 25 quadrature points, got 30".
    """
    if not is_int(value):
        _raise(
            error,
            where,
            f"nagq must be an integer from 1 (Laplace) to {max_nagq} quadrature points, "
            f"got {value!r}",
        )
    if not 1 <= value <= max_nagq:
        _raise(
            error,
            where,
            f"nagq must be from 1 (Laplace) to {max_nagq} quadrature points, got {value}",
        )
    return int(value)


# --------------------------------------------------------------------------- seeds


def check_seed(seed: Any, *, error: type[SyndesmoError] = ModelError) -> Any:
    """``seed`` unchanged if it is an int ≥ 0, a ``SeedSequence`` or a ``Generator``.

    Raises
    ------
    SyndesmoError
        ``error``: "seed must be a non-negative int, a numpy SeedSequence or
        Generator, got -3".
    """
    import numpy as np

    if isinstance(seed, np.random.Generator | np.random.SeedSequence):
        return seed
    if is_int(seed) and seed >= 0:
        return int(seed)
    raise error(f"seed must be {SEED_KINDS}, got {seed!r}")


def as_generator(seed: Any, *, error: type[SyndesmoError] = ModelError) -> np.random.Generator:
    """A numpy ``Generator``: a ``Generator`` itself, else ``default_rng(seed)``.

    Raises
    ------
    SyndesmoError
        ``error`` for a seed that is none of the three kinds.
    """
    import numpy as np

    seed = check_seed(seed, error=error)
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def as_seed_sequence(
    seed: Any, *, error: type[SyndesmoError] = ModelError
) -> np.random.SeedSequence:
    """A ``SeedSequence`` to spawn children from.

    An int ``s`` gives ``SeedSequence(s)``; a ``SeedSequence`` is used as it is; a
    ``Generator`` gives ``SeedSequence(g.integers(2**63))`` (it consumes one draw).

    Raises
    ------
    SyndesmoError
        ``error`` for a seed that is none of the three kinds.
    """
    import numpy as np

    seed = check_seed(seed, error=error)
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(int(seed.integers(2**63)))
    return np.random.SeedSequence(seed)


def as_int_seed(seed: Any, *, error: type[SyndesmoError] = ModelError) -> int:
    """One int seed in [0, 2**31 - 1) for libraries that take an int (PyMC).

    An int is used as it is; a ``Generator`` gives ``g.integers(0, 2**31 - 1)`` (one
    draw); a ``SeedSequence`` its first 32-bit state word modulo 2**31 - 1.

    Raises
    ------
    SyndesmoError
        ``error`` for a seed that is none of the three kinds.
    """
    import numpy as np

    seed = check_seed(seed, error=error)
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**31 - 1))
    if isinstance(seed, np.random.SeedSequence):
        return int(seed.generate_state(1, dtype=np.uint32)[0] % (2**31 - 1))
    return seed


def check_sim_total(n_sims: int, n_points: int, max_sims: int) -> None:
    """Refuse more than ``max_sims`` simulated studies in all (``n_sims`` per point).

    Parameters
    ----------
    n_sims : int
        Replicates per grid point.
    n_points : int
        Grid points.
    max_sims : int
        The ceiling the caller accepts.

    Raises
    ------
    ModelError
        Naming the total and how to raise the ceiling.
    """
    total = int(n_sims) * int(n_points)
    if total > max_sims:
        raise ModelError(
            f"n_sims {n_sims} x {n_points} grid point(s) = {total:,} simulated studies, more "
            f"than the ceiling of {max_sims:,}; pass max_sims={total} (CLI: --max-sims) if "
            "you mean it"
        )
