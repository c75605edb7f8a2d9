"""Where the shipped synthetic cohort and the reproduction specs are on disk.

In a checkout (or an editable install) they are ``data/synthetic`` and
``models/assert`` at the top of the repository; an installed wheel carries copies
inside the package as ``syndesmo/_data/synthetic`` and ``syndesmo/_models/assert``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _candidates(top: str, inside: str, name: str) -> list[Path]:
    return [PACKAGE_DIR.parents[1] / top / name, PACKAGE_DIR / inside / name]


def shipped_cohort_candidates() -> list[Path]:
    """Directories that may hold the shipped cohort (``vu.csv``, ``patients.csv``)."""
    return _candidates("data", "_data", "synthetic")


def shipped_specs_candidates() -> list[Path]:
    """Directories that may hold the reproduction specs (``*.toml``)."""
    return _candidates("models", "_models", "assert")
