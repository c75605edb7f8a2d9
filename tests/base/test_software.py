"""The versions line and command of a report (``syndesmo.output.software``)."""

from __future__ import annotations

import subprocess
from importlib import metadata

import numpy

from syndesmo.output.software import command_line, software_versions, versions_line


def test_versions_name_the_python_packages():
    versions = dict(software_versions(["native", "gee"]))
    assert versions["numpy"] == numpy.__version__
    assert versions["statsmodels"] == metadata.version("statsmodels")
    assert "R" not in versions and "lme4" not in versions
    assert versions_line(list(versions.items())).startswith("syndesmo ")


def test_versions_name_r_and_lme4_when_the_lme4_engine_ran(r_lme4):
    # R asked apart from rpy2: Rscript in a process of its own
    def rscript(expr: str) -> str:
        return subprocess.run(
            ["Rscript", "-e", f"cat({expr})"], capture_output=True, text=True, check=True
        ).stdout.strip()

    versions = dict(software_versions(["lme4"]))
    assert versions["lme4"] == rscript("as.character(packageVersion('lme4'))")
    assert versions["R"] == rscript("paste(R.version$major, R.version$minor, sep='.')")


def test_command_line_is_quoted_for_a_shell():
    assert command_line(["/usr/bin/syndesmo", "reproduce", "--out", "my results"]) == (
        "syndesmo reproduce --out 'my results'"
    )
