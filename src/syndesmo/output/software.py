"""The software behind a result: versions and the command that made it, for a report's end."""

from __future__ import annotations

import platform
import shlex
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata

from syndesmo.fitting import registry

#: Python packages every reproduction runs on, in the order the report names them.
PACKAGES = ("syndesmo", "numpy", "scipy", "pandas", "statsmodels", "matplotlib")
#: Engines that run in R and the R packages named in the versions line (the reference
#: engine runs R's package of the same name).
R_ENGINES = {registry.REFERENCE_ENGINE: (registry.REFERENCE_ENGINE,)}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(package)
        return str(getattr(module, "__version__", "not installed"))


def r_versions(packages: Sequence[str]) -> list[tuple[str, str]]:
    """R's version and those of ``packages``, through rpy2 (an optional back end).

    Returns ``[("R", "4.3.3"), ("lme4", "1.1.35")]``, or ``("R", "unavailable: …")``
    when R cannot be reached.
    """
    try:
        from rpy2 import robjects
    except ImportError as exc:  # pragma: no cover - rpy2 is an extra
        return [("R", f"unavailable: {exc}")]
    out = [("R", str(robjects.r("paste(R.version$major, R.version$minor, sep='.')")[0]))]
    for name in packages:
        try:
            version = str(robjects.r(f"as.character(packageVersion('{name}'))")[0])
        except Exception as exc:
            version = f"unavailable: {str(exc).strip().splitlines()[0]}"
        out.append((name, version))
    return out


def software_versions(engines: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(name, version) of Python, the packages in ``PACKAGES`` and, when an engine in
    ``engines`` runs in R, of R and its packages."""
    out = [("Python", platform.python_version())]
    out += [(p, _version(p)) for p in PACKAGES]
    r_packages = [p for e in dict.fromkeys(engines) for p in R_ENGINES.get(e, ())]
    if r_packages:
        out += r_versions(list(dict.fromkeys(r_packages)))
    return out


def versions_line(versions: Sequence[tuple[str, str]]) -> str:
    """``syndesmo 0.1.0, Python 3.12.3, numpy 2.0.1, …`` (syndesmo first)."""
    ordered = sorted(versions, key=lambda nv: nv[0] != "syndesmo")
    return ", ".join(f"{n} {v}" for n, v in ordered)


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed, quoted for a shell: ``syndesmo reproduce --out results``."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(("__main__.py", "/syndesmo", "syndesmo")):
        argv[0] = "syndesmo"
    return shlex.join(argv)
