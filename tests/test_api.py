"""The public names of DESIGN.md resolve to what they promise."""

from __future__ import annotations

import importlib
import inspect

import syndesmo as sy


def test_every_public_name_resolves():
    for name in sy.__all__:
        assert getattr(sy, name) is not None, name


def test_power_stays_a_function_after_its_submodule_is_imported():
    importlib.import_module("syndesmo.powersim.api")
    assert callable(sy.power) and sy.power.__module__ == "syndesmo.powersim.api"
    assert callable(sy.power_curve)


def test_fit_and_panel_functions_are_the_documented_ones():
    from syndesmo.fitting.api import fit
    from syndesmo.panel.tables import load_panel

    assert sy.fit is fit
    assert sy.load_panel is load_panel


def test_single_observation_groups_are_a_note_in_the_summary_not_a_warning():
    import warnings

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {"y": rng.integers(0, 2, 61), "x": rng.normal(size=61), "g": [*range(30)] * 2 + [99]}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = sy.fit("y ~ x + (1|g)", df)
    # lme4 says nothing about a group of one row: a note in the summary, once, not a warning
    assert not [w for w in caught if "single observation" in str(w.message)]
    assert fit.summary().count("have a single observation") == 1


def test_import_and_the_command_line_help_load_no_numpy_or_pandas():
    """``import syndesmo`` and building every command's ``--help`` stay light (issue 9)."""
    import subprocess
    import sys

    code = (
        "import sys, syndesmo\n"
        "from syndesmo.cli.app import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = [m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_function_has_numpydoc_sections():
    """Every function of ``syndesmo.__all__`` documents its parameters and what it returns
    in numpydoc sections, and names every argument of its signature there."""
    missing = []
    for name in sy.__all__:
        obj = getattr(sy, name)
        if not inspect.isfunction(obj):
            continue
        doc = inspect.getdoc(obj) or ""
        params = [p for p in inspect.signature(obj).parameters if p not in ("self",)]
        if params and "Parameters\n----------" not in doc:
            missing.append(f"{name}: no Parameters section")
        if "Returns\n-------" not in doc:
            missing.append(f"{name}: no Returns section")
        for p in params:
            if p.lstrip("*") not in doc:
                missing.append(f"{name}: argument {p!r} not documented")
    assert not missing, "\n".join(missing)
